package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/expect"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/sim/simtest"
)

// fwdVariants are the forward-path conditions of BenchmarkForwardPathCost,
// in the order they are measured (then backwards). Each takes Romana's
// ruleset for a host (1000 tenants, 1000 policies) and the host's one
// endpoint, and returns the table to load, or nil for no table at all.
// nofib and epset are measurements only: nofib loses the anti-spoofing
// check, epset writes it for this lab's single endpoint per host.
var fwdVariants = []struct {
	name string
	make func(rs hoststate.Ruleset, ep endpointLink) *hoststate.Ruleset
}{
	{"none", func(hoststate.Ruleset, endpointLink) *hoststate.Ruleset { return nil }},
	// A forward base chain with no rule: the hook's cost, no conntrack.
	{"hook", func(hoststate.Ruleset, endpointLink) *hoststate.Ruleset {
		return &hoststate.Ruleset{Chains: []hoststate.Chain{{Name: hoststate.ChainForward, Hook: "forward"}}}
	}},
	// One rule that needs conntrack: the kernel now tracks every packet.
	{"ct", func(hoststate.Ruleset, endpointLink) *hoststate.Ruleset {
		return &hoststate.Ruleset{Chains: []hoststate.Chain{{Name: hoststate.ChainForward, Hook: "forward",
			Rules: []hoststate.Rule{{Expr: "ct state established,related accept"}}}}}
	}},
	// Romana's table with the forward chain's fib rule left out.
	{"nofib", func(rs hoststate.Ruleset, _ endpointLink) *hoststate.Ruleset {
		return withForward(rs, func(rules []hoststate.Rule) []hoststate.Rule {
			return slices.DeleteFunc(rules, func(r hoststate.Rule) bool { return strings.Contains(r.Expr, " fib ") })
		})
	}},
	// Romana's table with the fib rule split by where a packet comes
	// from: from an endpoint link, its source and link must be one of the
	// host's (address . veth) pairs, a hash lookup; from any other link a
	// pool source still meets fib.
	{"epset", func(rs hoststate.Ruleset, ep endpointLink) *hoststate.Ruleset {
		return withForward(rs, func(rules []hoststate.Rule) []hoststate.Rule {
			var out []hoststate.Rule
			for _, r := range rules {
				if strings.Contains(r.Expr, " fib ") {
					out = append(out,
						hoststate.Rule{Expr: fmt.Sprintf(`iifname "rv-*" ip saddr . iifname != { %s . %q } counter drop`, ep.addr, ep.veth)},
						hoststate.Rule{Expr: `iifname != "rv-*" ` + r.Expr})
					continue
				}
				out = append(out, r)
			}
			return out
		})
	}},
	// Romana's table as it is.
	{"romana", func(rs hoststate.Ruleset, _ endpointLink) *hoststate.Ruleset { return &rs }},
}

// endpointLink is a host's one endpoint: its address and its veth.
type endpointLink struct {
	addr netip.Addr
	veth string
}

// withForward returns a copy of rs whose forward chain's rules are
// edit(copy of the rules).
func withForward(rs hoststate.Ruleset, edit func([]hoststate.Rule) []hoststate.Rule) *hoststate.Ruleset {
	out := rs
	out.Chains = slices.Clone(rs.Chains)
	for i := range out.Chains {
		if out.Chains[i].Name == hoststate.ChainForward {
			out.Chains[i].Rules = edit(slices.Clone(out.Chains[i].Rules))
		}
	}
	return &out
}

// BenchmarkForwardPathCost takes Romana's per-packet cost apart: iperf3
// (1 and 8 streams, 3 s) between endpoints of tenant t42 on two simulated
// hosts, the same endpoints and routes as BenchmarkPolicyThroughput, under
// the fwdVariants alternated forwards then backwards in every iteration.
// It reports each variant's median Gbit/s and its ratio to "none". With
// ROMANA_PERF_DIR set, each iperf3 client runs under `perf record -g`
// (cpu-clock, in the client's context: its sending and the softirq
// forwarding it drives through both hosts) into that directory, one file
// per run, named variant-streams-n.data; with ROMANA_PERF_ALL set too,
// perf records every CPU (`-a`) for the client's 3 s.
func BenchmarkForwardPathCost(b *testing.B) {
	simtest.Require(b, "nft", "iperf3")
	ctx := context.Background()
	lab := simtest.New(b)
	snap, p := policyLab(b, 1000)
	snap.Policies = benchPolicies(1000, 1000, "")
	hosts, eps := t42Hosts(b, ctx, lab, p, &snap)
	fws := map[string]*Firewall{}
	tables := map[string]map[string]*hoststate.Ruleset{}
	for h, host := range hosts {
		st := compute(b, snap, h)
		for _, v := range fwdVariants {
			if tables[v.name] == nil {
				tables[v.name] = map[string]*hoststate.Ruleset{}
			}
			tables[v.name][h] = v.make(st.Firewall, endpointLink{eps[h].IP, "rv-e" + h})
		}
		if err := host.Do(func() (err error) {
			fws[h], err = programHost(ctx, st)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	set := func(cond string) {
		for h, host := range hosts {
			if err := host.Do(func() error {
				if err := fws[h].Cleanup(ctx); err != nil {
					return err
				}
				if t := tables[cond][h]; t != nil {
					_, err := fws[h].Apply(ctx, *t)
					return err
				}
				return nil
			}); err != nil {
				b.Fatalf("%s on %s: %v", cond, h, err)
			}
		}
	}
	dst := eps["h2"]
	iperfServer(b, dst)
	perfDir := os.Getenv("ROMANA_PERF_DIR")
	runs := 0
	client := func(cond string, streams int) float64 {
		if perfDir == "" {
			return iperfStreams(b, ctx, eps["h1"], dst, streams)
		}
		runs++
		file := filepath.Join(perfDir, fmt.Sprintf("%s-%d-%d.data", cond, streams, runs))
		var out []byte
		err := expect.Poll(5*time.Second, func() (err error) {
			args := []string{"perf", "record", "-q", "-e", "cpu-clock", "-g", "-o", file}
			if os.Getenv("ROMANA_PERF_ALL") != "" {
				args = append(args, "-a")
			}
			args = append(args, "--", "iperf3", "-c", dst.IP.String(), "-t", "3", "-P", strconv.Itoa(streams), "-J")
			out, err = eps["h1"].Command(ctx, args...).Output()
			return err
		})
		if err != nil {
			b.Fatalf("perf record iperf3: %v\n%s", err, out)
		}
		return iperfGbits(b, out)
	}
	set("romana")
	if out, err := eps["h1"].Command(ctx, "ping", "-c1", "-W1", dst.IP.String()).CombinedOutput(); err != nil {
		b.Fatalf("same-tenant ping with Romana's table: %v\n%s", err, out)
	}
	order := []string{}
	for _, v := range fwdVariants {
		order = append(order, v.name)
	}
	for i := len(fwdVariants) - 1; i >= 0; i-- {
		order = append(order, fwdVariants[i].name)
	}
	res := map[string][]float64{}
	for b.Loop() {
		for _, streams := range []int{1, 8} {
			for _, cond := range order {
				set(cond)
				key := fmt.Sprintf("%s/P%d", cond, streams)
				res[key] = append(res[key], client(cond, streams))
			}
		}
	}
	b.Logf("Gbit/s in order of measurement within each variant: %v", res)
	b.ReportMetric(0, "ns/op")
	for _, streams := range []int{1, 8} {
		base := median(res[fmt.Sprintf("none/P%d", streams)])
		for _, v := range fwdVariants {
			m := median(res[fmt.Sprintf("%s/P%d", v.name, streams)])
			b.ReportMetric(m, fmt.Sprintf("Gbit/s-%s-P%d", v.name, streams))
			if v.name != "none" {
				b.ReportMetric(m/base, fmt.Sprintf("ratio-%s-P%d", v.name, streams))
			}
		}
	}
}
