package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/romana/romana/fabric"
)

func init() { register(newFabricCmd) }

func newFabricCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fabric",
		Short: "What the routers of a routed fabric need: static routes per device",
		Long: `Because an endpoint's address carries its host's topology position, a
top-of-rack router needs one route per host of its rack and a spine one per
rack, whatever the number of endpoints. See docs/fabric.md.`,
	}
	cmd.AddCommand(newFabricRoutesCmd(g))
	return cmd
}

func newFabricRoutesCmd(g *Globals) *cobra.Command {
	var device, format string
	cmd := &cobra.Command{
		Use:   "routes --device NAME [--format ip|bird|frr]",
		Short: "Print the static routes a fabric device needs, in ip route, BIRD 2 or FRR syntax",
		Long: `routes asks romanad (GET /v1/fabric/routes) for the routes of one device,
computed from the address plan, the hosts and the devices:

  a top-of-rack: "<host CIDR> via <host IP>" for each host it serves, and
                 "<pool> via <its spines>" for the rest of each network;
  a spine:       "<rack CIDR> via <the rack's top-of-rack>" for each rack
                 (per host CIDR when the plan has no level for the group).

Several next hops (two uplinks, a redundant top-of-rack pair) make one ECMP
route. -o json or -o yaml prints the table as data instead. Problems found in
the topology are printed on stderr as warnings.`,
		Example: `  romana fabric routes --device tor1
  romana fabric routes --device spine1 --format bird > /etc/bird/romana.conf
  romana fabric routes --device tor1 --format frr | vtysh -f /dev/stdin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if device == "" {
				return usagef("need --device NAME")
			}
			if !slices.Contains(fabric.Formats, format) {
				return usagef("--format %q: use one of %s", format, strings.Join(fabric.Formats, ", "))
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			w, err := c.FabricRoutes(ctx, device)
			if err != nil {
				return err
			}
			for _, p := range w.Problems {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", p)
			}
			if g.Output != OutputTable {
				return g.Emit(cmd, w, nil)
			}
			text, err := fabric.Render(fabric.FromWire(w), format)
			if err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), text)
			return err
		},
	}
	cmd.Flags().StringVar(&device, "device", "", "the device's name")
	cmd.Flags().StringVar(&format, "format", fabric.FormatIP, "syntax: ip (ip route commands), bird (BIRD 2 static protocol) or frr (FRR static routes)")
	return cmd
}
