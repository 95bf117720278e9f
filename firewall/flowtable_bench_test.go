package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"testing"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// BenchmarkFlowtableThroughput measures iperf3 TCP throughput between
// endpoints on two simulated hosts, with 1 and with 8 parallel streams
// (iperf3 -P 8), under three conditions alternated within one run
// (A-B-C-C-B-A per stream count and iteration): no table at all (the
// no-rule routed path); isolation for 1000 tenants and 1000 policies;
// the same with the software flowtable (hoststate.Options.Flowtable: the
// endpoint veth and the uplink eth0 as devices). It reports the medians
// and the ratios to the no-table path. On a kernel without flowtables
// (CONFIG_NF_FLOW_TABLE) the third condition is left out and logged as
// such. -benchtime 2x gives 4 runs of 3 s per condition and stream count.
func BenchmarkFlowtableThroughput(b *testing.B) {
	simtest.Require(b, "nft", "iperf3")
	ctx := context.Background()
	lab := simtest.New(b)
	snap, p := policyLab(b, 1000)
	snap.Policies = benchPolicies(1000, 1000, "")
	hosts, eps := t42Hosts(b, ctx, lab, p, &snap)
	unders := map[string]*hoststate.Underlay{}
	for _, h := range snap.Hosts {
		unders[h.Name] = &hoststate.Underlay{Links: []hoststate.Link{
			{Name: sim.HostIface, Kind: "veth", Addrs: []netip.Prefix{netip.PrefixFrom(h.IP, 24)}},
			{Name: "rv-e" + h.Name, Kind: "veth"},
		}}
	}
	fws := map[string]*Firewall{}
	rulesets := map[string]map[string]hoststate.Ruleset{"policies": {}, "flowtable": {}}
	supported := true
	for h, host := range hosts {
		st := compute(b, snap, h)
		rulesets["policies"][h] = st.Firewall
		ft, err := hoststate.Compute(snap, h, hoststate.Options{Underlay: unders[h], Flowtable: true})
		if err != nil || len(ft.Problems) > 0 {
			b.Fatal(err, ft.Problems)
		}
		rulesets["flowtable"][h] = ft.Firewall
		if err := host.Do(func() (err error) {
			if fws[h], err = programHost(ctx, st); err != nil {
				return err
			}
			if err := fws[h].FlowtableSupport(ctx); err != nil {
				b.Logf("%s: no flowtable condition: %v", h, err)
				supported = false
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	set := func(cond string) {
		for h, host := range hosts {
			if err := host.Do(func() error {
				if cond == "none" {
					return fws[h].Cleanup(ctx)
				}
				_, err := fws[h].Apply(ctx, rulesets[cond][h])
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	dst := eps["h2"]
	iperfServer(b, dst)
	set("policies")
	if out, err := eps["h1"].Command(ctx, "ping", "-c1", "-W1", dst.IP.String()).CombinedOutput(); err != nil {
		b.Fatalf("same-tenant ping with policies: %v\n%s", err, out)
	}
	conds := []string{"none", "policies", "policies", "none"}
	if supported {
		conds = []string{"none", "policies", "flowtable", "flowtable", "policies", "none"}
	}
	res := map[string][]float64{}
	for b.Loop() {
		for _, streams := range []int{1, 8} {
			for _, cond := range conds {
				set(cond)
				key := fmt.Sprintf("%s/P%d", cond, streams)
				res[key] = append(res[key], iperfStreams(b, ctx, eps["h1"], dst, streams))
			}
		}
	}
	b.Logf("Gbit/s: %v", res)
	b.ReportMetric(0, "ns/op")
	for _, streams := range []int{1, 8} {
		sfx := "-P" + strconv.Itoa(streams)
		none := median(res[fmt.Sprintf("none/P%d", streams)])
		pol := median(res[fmt.Sprintf("policies/P%d", streams)])
		b.ReportMetric(none, "Gbit/s-notable"+sfx)
		b.ReportMetric(pol, "Gbit/s-1000policies"+sfx)
		b.ReportMetric(pol/none, "ratio-policies"+sfx)
		if supported {
			ft := median(res[fmt.Sprintf("flowtable/P%d", streams)])
			b.ReportMetric(ft, "Gbit/s-flowtable"+sfx)
			b.ReportMetric(ft/none, "ratio-flowtable"+sfx)
		}
	}
}
