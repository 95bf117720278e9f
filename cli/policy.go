package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func newPolicyCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "policy",
		Aliases: []string{"policies"},
		Short:   "Manage policies: traffic allowed or denied beyond tenant isolation",
		Long: `A policy applies to endpoints (all, a tenant, a tenant's segment, or a host)
in one or both directions, with an ordered list of rules matching peers
(any, a CIDR, a tenant or segment, a host), protocol and ports. Policies are
evaluated by ascending priority (default 1000), then name; the first rule that
matches decides; unmatched traffic falls to the tenant's isolation.`,
	}
	cmd.AddCommand(newPolicyAddCmd(g), newPolicyListCmd(g), newPolicyShowCmd(g), newPolicyRemoveCmd(g),
		newPolicyTraceCmd(g), newPolicyStatsCmd(g)) // policy_trace.go
	return cmd
}

// readPolicies decodes one policy or a list of them, JSON or YAML.
func readPolicies(name string, data []byte) ([]api.Policy, error) {
	if isList(data) {
		var ps []api.Policy
		if err := decodeStrict(name, data, &ps); err != nil {
			return nil, err
		}
		if len(ps) == 0 {
			return nil, fmt.Errorf("%s: empty list of policies", name)
		}
		return ps, nil
	}
	var p api.Policy
	if err := decodeStrict(name, data, &p); err != nil {
		return nil, err
	}
	return []api.Policy{p}, nil
}

func newPolicyAddCmd(g *Globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:     "add -f FILE|-",
		Aliases: []string{"apply"},
		Short:   "Create or update policies from a JSON or YAML file",
		Long: `Create or update (by name) one policy or a list of policies from a JSON or
YAML file, or from stdin with "-f -". Unknown fields are rejected. Policies
are sent in file order; the first one romanad rejects stops the command.`,
		Example: `  cat > web.yaml <<EOF
  name: web-from-lb
  description: the load balancer reaches acme/web on 80 and 443
  direction: [ingress]
  appliedTo:
  - {tenant: acme, segment: web}
  rules:
  - peers: [{cidr: 192.168.0.0/24}]
    protocol: tcp
    ports: [80, 443]
  EOF
  romana policy add -f web.yaml

  romana policy list -o yaml > all.yaml && romana policy add -f all.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("need -f FILE (or -f - for stdin)")
			}
			data, err := readInput(cmd, file)
			if err != nil {
				return err
			}
			ps, err := readPolicies(file, data)
			if err != nil {
				return err
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			var out []api.Policy
			for _, p := range ps {
				if p.Name == "" {
					return fmt.Errorf("%s: a policy has no name", file)
				}
				saved, err := c.PutPolicy(ctx, p)
				if err != nil && len(ps) > 1 {
					return fmt.Errorf("policy %s (%d of %d; the ones before it were saved): %w", p.Name, len(out)+1, len(ps), err)
				}
				if err != nil {
					return err
				}
				out = append(out, saved)
			}
			var v any = out
			if len(out) == 1 && !isList(data) {
				v = out[0]
			}
			return g.Emit(cmd, v, func(w io.Writer) { writePolicies(w, out) })
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "policy file, JSON or YAML, one policy or a list (- for stdin)")
	return cmd
}

func newPolicyListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List policies in evaluation order (priority, then name)",
		Example: `  romana policy list
  romana policy list -o yaml`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ps, err := c.ListPolicies(ctx)
			if err != nil {
				return err
			}
			ps = sortPolicies(ps)
			return g.EmitList(cmd, ps, len(ps), "no policies", func(w io.Writer) { writePolicies(w, ps) })
		}),
	}
}

func newPolicyShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a policy (as YAML in table mode)",
		Example: `  romana policy show web-from-lb`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			p, err := c.GetPolicy(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, p, func(w io.Writer) {
				b, _ := yaml.Marshal(p)
				w.Write(b)
			})
		}),
	}
}

func newPolicyRemoveCmd(g *Globals) *cobra.Command {
	return removeCmd(g, "policy", "Remove a policy", `  romana policy remove web-from-lb`, (*client.Client).RemovePolicy)
}

func priority(p api.Policy) int {
	if p.Priority == 0 {
		return api.DefaultPriority
	}
	return p.Priority
}

func sortPolicies(ps []api.Policy) []api.Policy {
	ps = append([]api.Policy{}, ps...)
	slices.SortFunc(ps, func(a, b api.Policy) int {
		return cmp.Or(cmp.Compare(priority(a), priority(b)), cmp.Compare(a.Name, b.Name))
	})
	return ps
}

func selectorString(s api.Selector) string {
	switch {
	case s.All:
		return "all"
	case s.Host != "":
		return "host " + s.Host
	case s.Segment != "":
		return s.Tenant + "/" + s.Segment
	default:
		return s.Tenant
	}
}

func writePolicies(w io.Writer, ps []api.Policy) {
	row(w, "NAME", "PRIORITY", "DIRECTION", "APPLIED-TO", "RULES", "DESCRIPTION")
	for _, p := range ps {
		var to []string
		for _, s := range p.AppliedTo {
			to = append(to, selectorString(s))
		}
		row(w, p.Name, priority(p), strings.Join(p.Direction, ","), strings.Join(to, ","), len(p.Rules), p.Description)
	}
}
