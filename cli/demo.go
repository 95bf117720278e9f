package cli

import (
	"fmt"
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
on exit, also on failure or Ctrl-C, unless --keep, which prints how to point
romana at the running demo. "romana demo --down" removes a kept (or
hard-killed) demo: exactly the processes, namespaces and directory its state
file recorded, nothing else. A demo does not start over another with the same
--prefix. Needs root; the binaries romanad, romana-agent and romana-cni must
sit beside this one (make build).`,
		Example: `  make demo                      # build and run
  bin/romana demo --hosts 4
  bin/romana demo --json | jq .ok
  bin/romana demo --dual-stack                   # IPv4 and IPv6, one CNI ADD each endpoint
  bin/romana demo --fabric leafspine                 # racks, BIRD routers, BGP
  bin/romana demo --fabric leafspine --fabric-routes static
  bin/romana demo --fabric leafspine --dual-stack    # IPv4 and IPv6 underlay, BGP and endpoints
  bin/romana demo --scenario chain               # service chaining through a firewall
  bin/romana demo --keep && ip netns list && bin/romana demo --down`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDemoFlags(cmd, down, o.Hosts, scenario, fo); err != nil {
				return err
			}
			if down {
				msg, err := demo.Down(o.Prefix)
				if msg != "" {
					fmt.Fprintln(cmd.OutOrStdout(), msg)
				}
				return err
			}
			o.Out = cmd.OutOrStdout()
			o.CLI = os.Args[0]
			if verbose {
				o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			if scenario == "chain" { // demo/chain.go
				_, err := demo.RunChain(cmd.Context(), o)
				return err
			}
			// One --dual-stack for both demos.
			fo.DualStack = o.DualStack
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
	f.BoolVar(&o.Keep, "keep", false, "leave the datacenter running after the checks; prints how to point romana at it (tear down with --down)")
	f.BoolVar(&o.JSON, "json", false, "print the results as JSON for machines")
	f.BoolVar(&down, "down", false, "remove a demo left running by --keep or a hard kill, then exit")
	f.StringVar(&o.Prefix, "prefix", "romd", "prefix of the namespaces the demo creates")
	f.StringVar(&o.BinDir, "bin-dir", "", "directory holding romanad, romana-agent and romana-cni (default: beside this executable)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log lab operations to stderr")
	f.StringVar(&scenario, "scenario", "", `"chain": a segment's traffic to another tenant passes a firewall namespace, then the chain is removed (docs/chains.md)`)
	f.StringVar(&fo.Topology, "fabric", "", `routed fabric instead of one L2 segment: "leafspine" (2 racks x 2 hosts, a BIRD top-of-rack per rack, a BIRD spine)`)
	f.StringVar(&fo.Routes, "fabric-routes", demo.RoutesBGP, `with --fabric: "bgp" (agents announce over BGP) or "static" (romanad's generated static routes loaded into BIRD)`)
	f.BoolVar(&o.DualStack, "dual-stack", false, "IPv6 beside IPv4: every endpoint gets an address of each family (a /48 ULA, same tenant and segment) and the matrix is checked over both; with --fabric also the IPv6 underlay and BGP sessions or static routes")
	return cmd
}

// checkDemoFlags refuses combinations the demo would ignore, and bad values,
// as usage errors (exit 2).
func checkDemoFlags(cmd *cobra.Command, down bool, hosts int, scenario string, fo demo.FabricOptions) error {
	set := cmd.Flags().Changed
	if down {
		for _, f := range []string{"hosts", "keep", "json", "bin-dir", "scenario", "fabric", "fabric-routes", "dual-stack"} {
			if set(f) {
				return usagef("--down takes only --prefix (it removes the demo with that prefix): drop --%s", f)
			}
		}
		return nil
	}
	if hosts < 2 || hosts > 50 {
		return usagef("--hosts %d: use 2 to 50", hosts)
	}
	switch scenario {
	case "", "chain":
	default:
		return usagef("--scenario %q: the only scenario is \"chain\"", scenario)
	}
	if set("dual-stack") && scenario != "" {
		return usagef("--dual-stack runs the connectivity matrix, not --scenario %s", scenario)
	}
	switch fo.Topology {
	case "":
		if set("fabric-routes") {
			return usagef("--fabric-routes chooses how the fabric's routers learn routes: it needs --fabric %s", demo.TopologyLeafSpine)
		}
		return nil
	case demo.TopologyLeafSpine:
	default:
		return usagef("--fabric %q: the only topology is %q", fo.Topology, demo.TopologyLeafSpine)
	}
	if scenario != "" {
		return usagef("--scenario %s runs on the flat datacenter, not with --fabric", scenario)
	}
	if set("hosts") {
		return usagef("--fabric %s has a fixed 2 racks x 2 hosts: drop --hosts", demo.TopologyLeafSpine)
	}
	switch fo.Routes {
	case demo.RoutesBGP, demo.RoutesStatic:
	default:
		return usagef("--fabric-routes %q: use %q or %q", fo.Routes, demo.RoutesBGP, demo.RoutesStatic)
	}
	return nil
}
