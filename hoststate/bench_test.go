package hoststate

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// benchSnapshot: network 10.0.0.0/8 with host 4 | tenant 10 | segment 2 |
// endpoint 8; 10 hosts; tenants each with 2 segments, every third one in
// segment mode; endpointsPerHost endpoints on every host spread over the
// tenants and segments.
func benchSnapshot(b *testing.B, tenants, endpointsPerHost int) api.Snapshot {
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 4}, {Name: "tenant", Bits: 10}, {Name: "segment", Bits: 2}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		b.Fatal(err)
	}
	snap := api.Snapshot{Networks: []api.Network{n}}
	for h := uint64(1); h <= 10; h++ {
		c, _ := p.HostCIDR(plan.Loc{Host: h})
		snap.Hosts = append(snap.Hosts, api.Host{Name: fmt.Sprintf("h%d", h), IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(h)}),
			Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: h}, CIDR: c}}})
	}
	for t := 0; t < tenants; t++ {
		iso := api.IsolationTenant
		if t%3 == 0 {
			iso = api.IsolationSegment
		}
		name := fmt.Sprintf("t%d", t)
		snap.Tenants = append(snap.Tenants, api.Tenant{Name: name, ID: uint64(t), Isolation: iso})
		snap.Segments = append(snap.Segments, api.Segment{Tenant: name, Name: "s0", ID: 0}, api.Segment{Tenant: name, Name: "s1", ID: 1})
	}
	for h := uint64(1); h <= 10; h++ {
		for i := 0; i < endpointsPerHost; i++ {
			t, s, ep := i%tenants, (i/tenants)%2, uint64(i/(2*tenants)+1)
			ip, err := p.Address(plan.Loc{Host: h}, uint64(t), uint64(s), ep)
			if err != nil {
				b.Fatal(err)
			}
			snap.Addresses = append(snap.Addresses, api.Address{Name: fmt.Sprintf("h%d-%d", h, i), IP: ip, Network: "net1",
				Host: fmt.Sprintf("h%d", h), Tenant: fmt.Sprintf("t%d", t), Segment: fmt.Sprintf("s%d", s), Interface: fmt.Sprintf("romana%09x", h<<20|uint64(i))})
		}
	}
	return snap
}

// BenchmarkCompute reports, per host, the nft rules and map elements and
// the routes as endpoints grow (10 tenants) and as tenants grow (100
// endpoints per host). rules/elements must not change with endpoints.
func BenchmarkCompute(b *testing.B) {
	for _, c := range []struct{ tenants, endpoints int }{{10, 100}, {10, 1000}, {100, 100}, {1000, 100}} {
		b.Run(fmt.Sprintf("tenants=%d/endpoints=%d", c.tenants, c.endpoints), func(b *testing.B) {
			snap := benchSnapshot(b, c.tenants, c.endpoints)
			var st State
			for b.Loop() {
				var err error
				st, err = Compute(snap, "h1", Options{Mode: ModeFlat})
				if err != nil {
					b.Fatal(err)
				}
			}
			if len(st.Problems) > 0 {
				b.Fatalf("problems: %v", st.Problems)
			}
			b.ReportMetric(float64(st.Firewall.RuleCount()), "nft-rules")
			b.ReportMetric(float64(st.Firewall.ElementCount()), "map-elements")
			b.ReportMetric(float64(len(st.Routes)), "routes")
		})
	}
}
