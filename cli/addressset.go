package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func init() { register(newAddressSetCmd) }

func newAddressSetCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "addressset",
		Aliases: []string{"addresssets", "set", "sets"},
		Short:   "Manage address sets: named sets of endpoint addresses that policies select",
		Long: `An address set is a named, explicit set of endpoint addresses. A policy
selects it (appliedTo: [{set: NAME}], optionally narrowed by all or a tenant)
or names it as a peer (peers: [{set: NAME}]). Sets are for groupings the
address plan cannot express as a range, such as the pods a Kubernetes label
selector picks; the Kubernetes controller (romana-kube) keeps its sets up to
date. Agents hold each set as nftables sets and follow changes element by
element. A policy may name a set that does not exist (yet): it is taken as
empty. romanad stores addresses unmapped, sorted and distinct; a set holds
at most 65,536 addresses.`,
	}
	cmd.AddCommand(newAddressSetApplyCmd(g), newAddressSetListCmd(g), newAddressSetShowCmd(g),
		removeCmd(g, "address set", "Remove an address set", `  romana addressset remove web-pods`, (*client.Client).RemoveAddressSet))
	return cmd
}

// readAddressSets decodes one address set or a list of them, JSON or YAML.
func readAddressSets(name string, data []byte) ([]api.AddressSet, error) {
	if isList(data) {
		var ss []api.AddressSet
		if err := decodeStrict(name, data, &ss); err != nil {
			return nil, err
		}
		if len(ss) == 0 {
			return nil, fmt.Errorf("%s: empty list of address sets", name)
		}
		return ss, nil
	}
	var s api.AddressSet
	if err := decodeStrict(name, data, &s); err != nil {
		return nil, err
	}
	return []api.AddressSet{s}, nil
}

func newAddressSetApplyCmd(g *Globals) *cobra.Command {
	var file, description string
	cmd := &cobra.Command{
		Use:     "apply NAME [ADDRESS...] | apply -f FILE|-",
		Aliases: []string{"add", "put"},
		Short:   "Create or replace address sets, from arguments or a JSON or YAML file",
		Long: `Create an address set or replace the set of that name: NAME with its
addresses as arguments (none: an empty set), or one set or a list of sets
from a JSON or YAML file ("-f -" reads stdin). Unknown fields are rejected.
Sets are sent in file order; the first one romanad rejects stops the command.`,
		Example: `  romana addressset apply web-pods 10.1.0.5 10.1.0.9 --description "app=web"
  cat > sets.yaml <<EOF
  - name: web-pods
    addresses: [10.1.0.5, 10.1.0.9]
  - name: db-pods
    addresses: [10.1.1.3, fd00::1:3]
  EOF
  romana addressset apply -f sets.yaml
  romana addressset list -o yaml > all.yaml && romana addressset apply -f all.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var sets []api.AddressSet
			var data []byte
			switch {
			case file != "" && len(args) > 0:
				return usagef("give either NAME with addresses or -f FILE, not both")
			case file != "":
				if description != "" {
					return usagef("--description goes with NAME; in a file, set description there")
				}
				var err error
				if data, err = readInput(cmd, file); err != nil {
					return err
				}
				if sets, err = readAddressSets(file, data); err != nil {
					return err
				}
			case len(args) > 0:
				s := api.AddressSet{Name: args[0], Description: description, Addresses: []netip.Addr{}}
				for _, a := range args[1:] {
					ip, err := parseAddrFlag("", a)
					if err != nil {
						return err
					}
					s.Addresses = append(s.Addresses, ip)
				}
				sets = []api.AddressSet{s}
			default:
				return usagef("need NAME [ADDRESS...] or -f FILE (or -f - for stdin)")
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			var out []api.AddressSet
			for _, s := range sets {
				if s.Name == "" {
					return fmt.Errorf("%s: an address set has no name", file)
				}
				saved, err := c.PutAddressSet(ctx, s)
				if err != nil && len(sets) > 1 {
					return fmt.Errorf("address set %s (%d of %d; the ones before it were saved): %w", s.Name, len(out)+1, len(sets), err)
				}
				if err != nil {
					return err
				}
				out = append(out, saved)
			}
			var v any = out
			if len(out) == 1 && (data == nil || !isList(data)) {
				v = out[0]
			}
			return g.Emit(cmd, v, func(w io.Writer) { writeAddressSets(w, out) })
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "address set file, JSON or YAML, one set or a list (- for stdin)")
	cmd.Flags().StringVar(&description, "description", "", "what the set holds (with NAME)")
	return cmd
}

func newAddressSetListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List address sets with their sizes",
		Example: `  romana addressset list
  romana addressset list -o yaml`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ss, err := c.ListAddressSets(ctx)
			if err != nil {
				return err
			}
			return g.EmitList(cmd, ss, len(ss), "no address sets", func(w io.Writer) { writeAddressSets(w, ss) })
		}),
	}
}

func newAddressSetShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show an address set and its addresses",
		Example: `  romana addressset show web-pods`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			s, err := c.GetAddressSet(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, s, func(w io.Writer) { writeAddressSet(w, s) })
		}),
	}
}

func writeAddressSets(w io.Writer, ss []api.AddressSet) {
	row(w, "NAME", "ADDRESSES", "DESCRIPTION")
	for _, s := range ss {
		row(w, s.Name, len(s.Addresses), s.Description)
	}
}

func writeAddressSet(w io.Writer, s api.AddressSet) {
	row(w, "Name:", s.Name)
	row(w, "Description:", s.Description)
	row(w, "Addresses:", len(s.Addresses))
	var b strings.Builder
	for _, a := range s.Addresses {
		b.WriteString("  " + a.String() + "\n")
	}
	io.WriteString(w, b.String())
	if len(s.Pods) == 0 {
		return
	}
	// Pods: members by name; agents add the addresses romanad allocates
	// for them.
	row(w, "Pods:", len(s.Pods))
	b.Reset()
	for _, p := range s.Pods {
		b.WriteString("  " + p + "\n")
	}
	io.WriteString(w, b.String())
}
