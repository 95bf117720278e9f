package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
)

func newPolicyTraceCmd(g *Globals) *cobra.Command {
	var from, to, proto string
	var port uint16
	var icmpType, icmpCode uint8
	cmd := &cobra.Command{
		Use:   "trace --from ADDR --to ADDR [--proto tcp|udp|sctp|icmp|icmpv6] [--port N] [--icmp-type T --icmp-code C]",
		Short: "Explain whether a new connection is allowed, and which policy rule or isolation default decides",
		Long: `Ask romanad whether a new connection from one address to another is allowed.
romanad compiles the policies for the source's and the destination's hosts
exactly as their agents do and evaluates the compiled rules in the order the
hosts' forward chains run them: the egress policies on the source's host, then
the ingress policies and tenant isolation on the destination's host. The answer
names the deciding policy and rule index (or the isolation default) and each
step on the way.`,
		Example: `  romana policy trace --from 10.1.16.3 --to 10.2.32.5 --proto tcp --port 80
  romana policy trace --from 10.1.16.3 --to 10.2.32.5 --proto icmp
  romana policy trace --from 10.1.16.3 --to 10.2.32.5 --port 53 --proto udp -o json
  # Kubernetes pods (romana-kube): names the NetworkPolicy or ClusterNetworkPolicy that decided
  romana policy trace --from shop/web-1 --to db/postgres-0 --port 5432`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			src, err := traceEnd(ctx, c, "--from", from, netip.Addr{})
			if err != nil {
				return err
			}
			dst, err := traceEnd(ctx, c, "--to", to, src)
			if err != nil {
				return err
			}
			req := api.TraceRequest{From: src, To: dst, Proto: proto, Port: port, ICMPType: icmpType, ICMPCode: icmpCode}
			switch proto {
			case api.ProtoTCP, api.ProtoUDP, api.ProtoSCTP:
				if port == 0 {
					return usagef("--port is required with --proto %s", proto)
				}
				for _, f := range []string{"icmp-type", "icmp-code"} {
					if cmd.Flags().Changed(f) {
						return usagef("--%s is for --proto icmp, not %s", f, proto)
					}
				}
			case api.ProtoICMP, "icmpv6": // policy.ProtoICMPv6
				if cmd.Flags().Changed("port") {
					return usagef("--port is for tcp, udp and sctp: ICMP has no ports (use --icmp-type and --icmp-code)")
				}
				if !cmd.Flags().Changed("icmp-type") {
					req.ICMPType = 8
					if src.Is6() {
						req.ICMPType = 128
					}
				}
			default:
				return usagef("--proto: %q is not one of tcp, udp, sctp, icmp, icmpv6", proto)
			}
			tr, err := c.PolicyTrace(ctx, req)
			if err != nil {
				return err
			}
			desc := map[string]string{}
			if tr.Decision.Policy != "" {
				if p, err := c.GetPolicy(ctx, tr.Decision.Policy); err == nil {
					desc[p.Name] = p.Description
				}
			}
			return g.Emit(cmd, tr, func(w io.Writer) { writeTrace(w, tr, desc) })
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "source address, or a Kubernetes pod as NAMESPACE/POD")
	cmd.Flags().StringVar(&to, "to", "", "destination address, or a Kubernetes pod as NAMESPACE/POD")
	cmd.Flags().StringVar(&proto, "proto", api.ProtoTCP, "protocol: tcp, udp, sctp, icmp (ICMPv6 between IPv6 addresses) or icmpv6")
	cmd.Flags().Uint16Var(&port, "port", 0, "destination port (tcp, udp, sctp)")
	cmd.Flags().Uint8Var(&icmpType, "icmp-type", 8, "ICMP type (icmp; default echo request: 8, or 128 between IPv6 addresses)")
	cmd.Flags().Uint8Var(&icmpCode, "icmp-code", 0, "ICMP code (icmp)")
	cmd.MarkFlagRequired("from")
	cmd.MarkFlagRequired("to")
	return cmd
}

// writeTrace prints the verdict line, then each step. desc holds the
// description of the deciding policy (for a policy romana-kube made, the
// Kubernetes object it comes from).
func writeTrace(w io.Writer, tr api.Trace, desc map[string]string) {
	d := tr.Decision
	by := d.Reason
	if d.Policy != "" && d.Rule != nil {
		by = fmt.Sprintf("policy %s rule %d", d.Policy, *d.Rule)
		if s := desc[d.Policy]; s != "" {
			by += ": " + s
		}
	}
	fmt.Fprintf(w, "%s: %s\n", strings.ToUpper(tr.Verdict), by)
	row(w, "HOST", "STAGE", "RESULT", "REASON")
	for _, s := range tr.Steps {
		row(w, s.Host, s.Stage, s.Result, s.Reason)
	}
	if d.RuleNFT != "" {
		fmt.Fprintf(w, "nft rule on %s: %s\n", d.Host, d.RuleNFT)
	}
}

func newPolicyStatsCmd(g *Globals) *cobra.Command {
	var only string
	cmd := &cobra.Command{
		Use:   "stats [--policy NAME]",
		Short: "Show packet and byte counters of policy rules, per policy and host",
		Long: `Show the counters of every compiled policy rule as the agents last reported
them (each agent reports every few seconds): packets and bytes that matched
the rule, per host, policy, rule index and stage (ingress or egress). Only
the first packet of a connection meets policy rules (the rest pass as
established), so the counters count connections' first packets and dropped
packets.`,
		Example: `  romana policy stats
  romana policy stats --policy web-from-lb -o json`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			st, err := c.PolicyStats(ctx)
			if err != nil {
				return err
			}
			if only != "" {
				for i := range st {
					st[i].Counters = slices.DeleteFunc(slices.Clone(st[i].Counters), func(c api.RuleCounter) bool { return c.Policy != only })
				}
			}
			return g.Emit(cmd, st, func(w io.Writer) { writeStats(w, st) })
		}),
	}
	cmd.Flags().StringVar(&only, "policy", "", "show only this policy")
	return cmd
}

func writeStats(w io.Writer, st []api.HostPolicyStats) {
	type line struct {
		api.RuleCounter
		host string
		age  time.Time
	}
	var lines []line
	for _, h := range st {
		for _, c := range h.Counters {
			lines = append(lines, line{c, h.Host, h.Time})
		}
	}
	slices.SortFunc(lines, func(a, b line) int {
		return cmp.Or(strings.Compare(a.Policy, b.Policy), cmp.Compare(a.Rule, b.Rule), strings.Compare(a.Stage, b.Stage), strings.Compare(a.host, b.host))
	})
	row(w, "POLICY", "RULE", "STAGE", "HOST", "PACKETS", "BYTES", "REPORTED")
	for _, l := range lines {
		row(w, l.Policy, l.Rule, l.Stage, l.host, l.Packets, l.Bytes, l.age.UTC().Format(time.RFC3339))
	}
}

// traceEnd resolves a trace endpoint: an address, or NAMESPACE/POD, the
// address romanad allocated to that Kubernetes pod (of like's family when
// like is valid and the pod has several).
func traceEnd(ctx context.Context, c *client.Client, flag, v string, like netip.Addr) (netip.Addr, error) {
	ns, pod, isPod := strings.Cut(strings.TrimSpace(v), "/")
	if !isPod {
		return parseAddrFlag(flag, v)
	}
	if ns == "" || pod == "" {
		return netip.Addr{}, usagef("%s %q: want an address or NAMESPACE/POD", flag, v)
	}
	addrs, err := c.ListAddresses(ctx, api.AddressFilter{})
	if err != nil {
		return netip.Addr{}, err
	}
	var found []netip.Addr
	for _, a := range addrs {
		if a.Attrs[api.AttrK8sNamespace] == ns && a.Attrs[api.AttrK8sPod] == pod {
			found = append(found, a.IP)
		}
	}
	slices.SortFunc(found, func(a, b netip.Addr) int { return a.Compare(b) })
	for _, a := range found {
		if !like.IsValid() || a.Is4() == like.Is4() {
			return a, nil
		}
	}
	if len(found) > 0 {
		return found[0], nil
	}
	return netip.Addr{}, api.Errorf(api.ReasonNotFound, "%s %s: no address allocated to pod %s in namespace %s (is it running, with romana-cni in Kubernetes mode?)", flag, v, pod, ns)
}
