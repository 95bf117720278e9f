package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func init() { register(newChainCmd) }

func newChainCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "chain",
		Aliases: []string{"chains"},
		Short:   "Manage service chains: steer a segment's traffic through service functions",
		Long: `A chain inserts service functions (a firewall, an IDS, ...) into the path of a
segment's traffic, transparently to the application: the agent on the source
endpoints' host marks matching new connections and policy-routes them to the
first function, then from each function to the next, then normally. Replies
return directly. Existing connections keep their path when a chain is added
or removed. See docs/chains.md.`,
	}
	cmd.AddCommand(newChainAddCmd(g), newChainListCmd(g), newChainShowCmd(g), newChainRemoveCmd(g))
	return cmd
}

func newChainAddCmd(g *Globals) *cobra.Command {
	var (
		from, to, proto, failure string
		port                     uint16
		via                      []string
	)
	cmd := &cobra.Command{
		Use:   "add NAME --from TENANT/SEGMENT --via ADDR[,ADDR...] [flags]",
		Short: "Add a chain",
		Example: `  romana chain add inspect-web --from acme/web --to beta --via 10.1.2.5
  romana chain add web80 --from acme/web --to 10.0.0.0/8 --proto tcp --port 80 \
      --via 10.1.2.5,10.1.2.6 --failure fail-closed`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, s, ok := strings.Cut(from, "/")
			if !ok || t == "" || s == "" {
				return usagef("--from %q: want TENANT/SEGMENT", from)
			}
			ch := api.Chain{Name: args[0], Tenant: t, Segment: s, Proto: proto, Port: port, Failure: failure}
			if err := api.ParseChainTo(&ch, to); err != nil {
				return usagef("--to: %v", err)
			}
			for _, v := range via {
				a, err := parseAddrFlag("--via", v)
				if err != nil {
					return err
				}
				ch.Via = append(ch.Via, a)
			}
			if len(ch.Via) == 0 {
				return usagef("need --via ADDR[,ADDR...]")
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			out, err := c.AddChain(ctx, ch)
			if err != nil {
				return err
			}
			return g.Emit(cmd, out, func(w io.Writer) { writeChains(w, []api.Chain{out}) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "source endpoints: TENANT/SEGMENT")
	f.StringVar(&to, "to", "", "destination: CIDR, TENANT or TENANT/SEGMENT (default any)")
	f.StringVar(&proto, "proto", "", "tcp, udp or icmp (default any)")
	f.Uint16Var(&port, "port", 0, "destination port (tcp or udp)")
	f.StringSliceVar(&via, "via", nil, "service function endpoint addresses, in order (comma-separated or repeated)")
	f.StringVar(&failure, "failure", api.FailOpen, "when a function is down: fail-open (bypass it) or fail-closed (drop)")
	return cmd
}

func newChainListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List chains",
		Example: `  romana chain list -o yaml`,
		Args:    cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			cs, err := c.ListChains(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(cs, func(a, b api.Chain) int { return strings.Compare(a.Name, b.Name) })
			return g.EmitList(cmd, cs, len(cs), "no chains", func(w io.Writer) { writeChains(w, cs) })
		}),
	}
}

func newChainShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a chain",
		Example: `  romana chain show inspect`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ch, err := c.GetChain(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, ch, func(w io.Writer) { writeChain(w, ch) })
		}),
	}
}

func newChainRemoveCmd(g *Globals) *cobra.Command {
	return removeCmd(g, "chain", "Remove a chain (established connections keep flowing, directly)", `  romana chain remove inspect`, (*client.Client).RemoveChain)
}

func chainMatch(c api.Chain) string {
	m := orDash(c.To())
	if c.Proto != "" {
		m += " " + c.Proto
	}
	if c.Port != 0 {
		m += fmt.Sprintf(":%d", c.Port)
	}
	return m
}

func viaString(vs []netip.Addr) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.String())
	}
	return strings.Join(s, ",")
}

func writeChains(w io.Writer, cs []api.Chain) {
	row(w, "NAME", "ID", "FROM", "TO", "VIA", "FAILURE")
	for _, c := range cs {
		row(w, c.Name, c.ID, c.From(), chainMatch(c), viaString(c.Via), c.Failure)
	}
}

func writeChain(w io.Writer, c api.Chain) {
	row(w, "Name:", c.Name)
	row(w, "ID:", c.ID)
	row(w, "From:", c.From())
	row(w, "To:", chainMatch(c))
	row(w, "Failure:", c.Failure)
	fmt.Fprintln(w)
	row(w, "HOP", "SERVICE FUNCTION")
	for i, v := range c.Via {
		row(w, i+1, v)
	}
}
