package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim/simtest"
)

// BenchmarkApply measures, against the kernel in a simulated host, one
// atomic replacement of table inet romana ("replace") and one in-sync check
// that leaves it alone ("check": what every resync costs while nothing
// committed nftables changes, so the kernel's generation did not move), as
// tenants grow.
func BenchmarkApply(b *testing.B) {
	simtest.Require(b, "nft")
	ctx := context.Background()
	lab := simtest.New(b)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.91.1/24"))
	if err != nil {
		b.Fatal(err)
	}
	var fw *Firewall
	if err := h.Do(func() (err error) { fw, err = New(nil); return err }); err != nil {
		b.Fatal(err)
	}
	for _, tenants := range []int{10, 100, 1000} {
		n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 4}, {Name: "tenant", Bits: 10}, {Name: "segment", Bits: 2}}}
		snap := api.Snapshot{Networks: []api.Network{n}, Hosts: []api.Host{{Name: "h1", IP: netip.MustParseAddr("192.168.91.1"),
			Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: 1}, CIDR: netip.MustParsePrefix("10.16.0.0/12")}}}}}
		for t := 0; t < tenants; t++ {
			iso := api.IsolationTenant
			if t%3 == 0 {
				iso = api.IsolationSegment
			}
			name := fmt.Sprintf("t%d", t)
			snap.Tenants = append(snap.Tenants, api.Tenant{Name: name, ID: uint64(t), Isolation: iso})
			snap.Segments = append(snap.Segments, api.Segment{Tenant: name, Name: "s0", ID: 0}, api.Segment{Tenant: name, Name: "s1", ID: 1})
		}
		st, err := hoststate.Compute(snap, "h1", hoststate.Options{})
		if err != nil || len(st.Problems) > 0 {
			b.Fatal(err, st.Problems)
		}
		rs := st.Firewall
		b.Run(fmt.Sprintf("tenants=%d/replace", tenants), func(b *testing.B) {
			for b.Loop() {
				if err := h.Do(func() error {
					if err := fw.Cleanup(ctx); err != nil {
						return err
					}
					changed, err := fw.Apply(ctx, rs)
					if err == nil && !changed {
						err = fmt.Errorf("apply after cleanup changed nothing")
					}
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rs.RuleCount()), "nft-rules")
		})
		b.Run(fmt.Sprintf("tenants=%d/check", tenants), func(b *testing.B) {
			for b.Loop() {
				if err := h.Do(func() error {
					changed, err := fw.Apply(ctx, rs)
					if err == nil && changed {
						err = fmt.Errorf("in-sync apply changed the table")
					}
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
