package cli

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/romana/romana/demo"
)

func init() { register(newDemoCmd) }

func newDemoCmd(g *Globals) *cobra.Command {
	var o demo.Options
	var fo demo.FabricOptions
	var down, verbose bool
	var scenario string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a simulated multi-host datacenter in network namespaces and prove routing and isolation",
		Long: `demo builds a simulated datacenter on this machine from network namespaces
(nothing is configured in the machine's own namespace), runs it the way a real
deployment runs, and proves routing and tenant isolation with real packets:

  - romanad on an embedded etcd in a temporary directory, on a controller
    namespace of the simulated underlay, serving mutual TLS to the agents
    (and its root-only unix socket to the demo itself);
  - N hosts (default 3) on one L2 segment, each running romana-agent in flat
    mode, joined with a single-use token as identity host:NAME; the CNI
    plugin uses the cni:NAME credential its agent keeps;
  - 2 tenants x 2 segments, endpoints attached through romana-cni via libcni
    exactly as a container runtime calls it; tenant "globex" isolates its
    segments (isolation mode "segment"), "acme" isolates the tenant;
  - it prints the address plan, each host's routes (one per remote host) and
    nftables rule counts, and a connectivity matrix of expected vs observed
    TCP connections and pings for every ordered pair of endpoints.

It exits 0 only if every observation matches. Everything it created is removed
on exit, also on failure or Ctrl-C, unless --keep; "romana demo --down" removes
a kept (or hard-killed) demo. Needs root; the binaries romanad, romana-agent and
romana-cni must sit beside this one (make build).`,
		Example: `  make demo                      # build and run
  bin/romana demo --hosts 4
  bin/romana demo --json | jq .ok
  bin/romana demo --fabric leafspine                 # racks, BIRD routers, BGP
  bin/romana demo --fabric leafspine --fabric-routes static
  bin/romana demo --scenario chain               # service chaining through a firewall
  bin/romana demo --keep && ip netns list && bin/romana demo --down`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if down {
				return demo.Down(o.Prefix)
			}
			o.Out = cmd.OutOrStdout()
			if verbose {
				o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			switch scenario { // demo/chain.go
			case "":
			case "chain":
				_, err := demo.RunChain(cmd.Context(), o)
				return err
			default:
				return usagef("--scenario %q: the only scenario is \"chain\"", scenario)
			}
			if fo.Topology != "" { // demo/leafspine.go
				_, err := demo.RunFabric(cmd.Context(), o, fo)
				return err
			}
			_, err := demo.Run(cmd.Context(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Hosts, "hosts", 3, "number of simulated hosts (2-50)")
	f.BoolVar(&o.Keep, "keep", false, "leave the datacenter running after the checks (tear down with --down)")
	f.BoolVar(&o.JSON, "json", false, "print the results as JSON for machines")
	f.BoolVar(&down, "down", false, "remove a demo left running by --keep or a hard kill, then exit")
	f.StringVar(&o.Prefix, "prefix", "romd", "prefix of the namespaces the demo creates")
	f.StringVar(&o.BinDir, "bin-dir", "", "directory holding romanad, romana-agent and romana-cni (default: beside this executable)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log lab operations to stderr")
	f.StringVar(&scenario, "scenario", "", `"chain": a segment's traffic to another tenant passes a firewall namespace, then the chain is removed (docs/chains.md)`)
	f.StringVar(&fo.Topology, "fabric", "", `routed fabric instead of one L2 segment: "leafspine" (2 racks x 2 hosts, a BIRD top-of-rack per rack, a BIRD spine)`)
	f.StringVar(&fo.Routes, "fabric-routes", demo.RoutesBGP, `with --fabric: "bgp" (agents announce over BGP) or "static" (romanad's generated static routes loaded into BIRD)`)
	return cmd
}
