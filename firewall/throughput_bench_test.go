package firewall

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// BenchmarkThroughput measures iperf3 TCP throughput from an endpoint on
// one simulated host to an endpoint on another, across the fabric bridge,
// with Romana's ruleset (100 tenants, the source and destination in the
// same tenant) loaded on both hosts, and with no nftables table at all
// (same routes), alternating A-B-B-A within one run. It reports both rates
// and their ratio (medians of 2 runs of 3 s per condition per iteration;
// -benchtime 3x gives 6 each).
func BenchmarkThroughput(b *testing.B) {
	simtest.Require(b, "nft", "iperf3")
	ctx := context.Background()
	lab := simtest.New(b)
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 4}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		b.Fatal(err)
	}
	snap := api.Snapshot{Networks: []api.Network{n}}
	hosts := addHosts(b, ctx, lab, p, 2, 90, &snap)
	for t := uint64(0); t < 100; t++ {
		iso := []string{api.IsolationTenant, api.IsolationSegment, api.IsolationNone}[t%3]
		name := fmt.Sprintf("t%d", t)
		snap.Tenants = append(snap.Tenants, api.Tenant{Name: name, ID: t, Isolation: iso})
		snap.Segments = append(snap.Segments, api.Segment{Tenant: name, Name: "s0", ID: 0}, api.Segment{Tenant: name, Name: "s1", ID: 1})
	}
	eps := map[string]*sim.Endpoint{}
	for i, h := range []string{"h1", "h2"} {
		ip, _ := p.Address(plan.Loc{Host: uint64(i + 1)}, 42, 0, 1) // tenant t42: tenant mode
		name := "e" + h
		if eps[h], err = lab.AddEndpoint(ctx, hosts[h], name, ip, "rv-"+name); err != nil {
			b.Fatal(err)
		}
		snap.Addresses = append(snap.Addresses, api.Address{Name: name, IP: ip, Network: "net1", Host: h, Tenant: "t42", Segment: "s0", Interface: "rv-" + name})
	}
	fws := map[string]*Firewall{}
	rulesets := map[string]hoststate.Ruleset{}
	for h, host := range hosts {
		st, err := hoststate.Compute(snap, h, hoststate.Options{})
		if err != nil || len(st.Problems) > 0 {
			b.Fatal(err, st.Problems)
		}
		rulesets[h] = st.Firewall
		if err := host.Do(func() (err error) {
			fws[h], err = programHost(ctx, st)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	setRules := func(on bool) {
		for h, host := range hosts {
			if err := host.Do(func() error {
				if on {
					_, err := fws[h].Apply(ctx, rulesets[h])
					return err
				}
				return fws[h].Cleanup(ctx)
			}); err != nil {
				b.Fatal(err)
			}
		}
	}

	dst := eps["h2"]
	iperfServer(b, dst)
	run := func() float64 { return iperf(b, ctx, eps["h1"], dst) }
	// The ruleset must really be in the path: a cross-tenant connect fails.
	setRules(true)
	if out, err := eps["h1"].Command(ctx, "ping", "-c1", "-W1", dst.IP.String()).CombinedOutput(); err != nil {
		b.Fatalf("same-tenant ping with rules: %v\n%s", err, out)
	}

	var with, without []float64
	for b.Loop() {
		for _, on := range []bool{true, false, false, true} {
			setRules(on)
			g := run()
			if on {
				with = append(with, g)
			} else {
				without = append(without, g)
			}
		}
	}
	b.Logf("Gbit/s with rules %.2f, without %.2f", with, without)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(with), "Gbit/s-rules")
	b.ReportMetric(median(without), "Gbit/s-norules")
	b.ReportMetric(median(with)/median(without), "ratio")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
