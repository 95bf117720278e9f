package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/plan"
)

func newNetworkCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "network",
		Aliases: []string{"networks", "net"},
		Short:   "Manage networks: address pools and their layouts",
		Long: `A network is an address pool (CIDR) and an ordered layout of bit fields below
its prefix: zero or more topology levels (e.g. rack, matched to a host label of
the same name), then host, tenant and segment. The bits that remain are endpoint
bits. Networks may not overlap.`,
	}
	cmd.AddCommand(newNetworkAddCmd(g), newNetworkListCmd(g), newNetworkShowCmd(g), newNetworkRemoveCmd(g))
	return cmd
}

func newNetworkAddCmd(g *Globals) *cobra.Command {
	var (
		file, cidr string
		fieldFlags []string
		tenants    []string
	)
	cmd := &cobra.Command{
		Use:   "add NAME --cidr CIDR --field NAME=BITS... | add [NAME] -f FILE",
		Short: "Create a network",
		Long: `Create a network from flags or from a file (JSON or YAML with name, cidr,
fields and optionally tenants). NAME on the command line overrides the file's.
Creating a network identical to an existing one succeeds and changes nothing.`,
		Example: `  # The product page's layout: host 8 bits, tenant 8, segment 4, endpoint 4
  romana network add main --cidr 10.0.0.0/8 --field host=8 --field tenant=8 --field segment=4

  # With a rack level, restricted to two tenants
  romana network add dc1 --cidr 172.16.0.0/12 --field rack=4 --field host=6 \
      --field tenant=6 --field segment=2 --tenants acme,globex

  # From a file
  romana network add -f network.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n api.Network
			if file != "" {
				if cidr != "" || len(fieldFlags) > 0 {
					return usagef("give the layout with -f or with --cidr and --field, not both")
				}
				var err error
				if n, err = readNetworkFile(cmd, file); err != nil {
					return err
				}
			} else {
				if cidr == "" || len(fieldFlags) == 0 {
					return usagef("need --cidr and --field (or -f FILE)")
				}
				if _, err := parsePrefixFlag("--cidr", cidr); err != nil {
					return err
				}
				fs, err := parseFields(fieldFlags)
				if err != nil {
					return err
				}
				n = api.Network{CIDR: cidr, Fields: fs}
			}
			if len(args) == 1 {
				n.Name = args[0]
			}
			if n.Name == "" {
				return usagef("need a network NAME")
			}
			if len(tenants) > 0 {
				n.Tenants = tenants
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			out, err := c.AddNetwork(ctx, n)
			if err != nil {
				return err
			}
			return g.Emit(cmd, out, func(w io.Writer) { writeNetworks(w, []api.Network{out}) })
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "network file, JSON or YAML (- for stdin)")
	f.StringVar(&cidr, "cidr", "", "pool CIDR, e.g. 10.0.0.0/8 or fd00::/48")
	f.StringArrayVar(&fieldFlags, "field", nil, "field NAME=BITS, repeated in order: topology levels, then host, tenant, segment")
	f.StringSliceVar(&tenants, "tenants", nil, "only these tenants may allocate from the network (comma-separated)")
	return cmd
}

func newNetworkListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List networks",
		Example: `  romana network list
  romana network list -o yaml`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ns, err := c.ListNetworks(ctx)
			if err != nil {
				return err
			}
			ns = sortNetworks(ns)
			return g.EmitList(cmd, ns, len(ns), "no networks", func(w io.Writer) { writeNetworks(w, ns) })
		}),
	}
}

func newNetworkShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a network with its layout and capacities",
		Example: `  romana network show main
  romana network show main -o json`,
		Args: cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			n, err := c.GetNetwork(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, n, func(w io.Writer) { writeNetwork(w, n) })
		}),
	}
}

func newNetworkRemoveCmd(g *Globals) *cobra.Command {
	return removeCmd(g, "network", "Remove a network that has no addresses allocated", `  romana network remove main`, (*client.Client).RemoveNetwork)
}

func sortNetworks(ns []api.Network) []api.Network {
	ns = append([]api.Network{}, ns...)
	slices.SortFunc(ns, func(a, b api.Network) int { return strings.Compare(a.Name, b.Name) })
	return ns
}

// layout describes a network's fields, "host 8 | tenant 8 | segment 4 | endpoint 4".
func layout(n api.Network) string {
	if p, err := plan.Parse(n.Spec()); err == nil {
		_, l, _ := strings.Cut(p.String(), ": ")
		return l
	}
	parts := make([]string, len(n.Fields))
	for i, f := range n.Fields {
		parts[i] = fmt.Sprintf("%s %d", f.Name, f.Bits)
	}
	return strings.Join(parts, " | ")
}

func writeNetworks(w io.Writer, ns []api.Network) {
	row(w, "NAME", "CIDR", "LAYOUT", "TENANTS")
	for _, n := range ns {
		tenants := "(any)"
		if len(n.Tenants) > 0 {
			tenants = strings.Join(n.Tenants, ",")
		}
		row(w, n.Name, n.CIDR, layout(n), tenants)
	}
}

func writeNetwork(w io.Writer, n api.Network) {
	tenants := "(any)"
	if len(n.Tenants) > 0 {
		tenants = strings.Join(n.Tenants, ", ")
	}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		row(w, "Name:", n.Name)
		row(w, "CIDR:", n.CIDR)
		row(w, "Layout:", layout(n))
		row(w, "Tenants:", tenants)
		row(w, "Plan error:", err)
		return
	}
	r, _ := NewPlanReport(p, Example{})
	writePlanHeader(w, r)
	row(w, "Layout:", layout(n))
	row(w, "Tenants:", tenants)
	fmt.Fprintln(w)
	writePlanBody(w, r)
}
