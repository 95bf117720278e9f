package plan

import (
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/romana/romana/expect"
)

// goldenPlans are rendered to testdata/<name>.golden: fields with bit
// positions, capacities, masks and the CIDRs of sample locations.
var goldenPlans = []struct {
	spec    Spec
	samples []sample
}{
	{Spec{Name: "example", CIDR: "10.0.0.0/8", Fields: fields("host", 8, "tenant", 8, "segment", 4)},
		[]sample{{Loc{Host: 1}, 1, 1, 11}, {Loc{Host: 0}, 0, 0, 1}, {Loc{Host: 255}, 255, 15, 14}}},
	{Spec{Name: "default-install", CIDR: "10.0.0.0/8", Fields: fields("host", 8, "tenant", 4, "segment", 4)},
		[]sample{{Loc{Host: 3}, 2, 1, 5}}},
	{Spec{Name: "racks", CIDR: "10.0.0.0/8", Fields: fields("rack", 4, "host", 6, "tenant", 6, "segment", 4)},
		[]sample{{Loc{Groups: []uint64{2}, Host: 3}, 5, 2, 7}, {Loc{Groups: []uint64{15}, Host: 63}, 63, 15, 14}}},
	{Spec{Name: "pods-racks", CIDR: "172.16.0.0/12", Fields: fields("pod", 2, "rack", 3, "host", 4, "tenant", 4, "segment", 3)},
		[]sample{{Loc{Groups: []uint64{1, 5}, Host: 9}, 3, 6, 13}}},
	{Spec{Name: "v6", CIDR: "fd00:1::/48", Fields: fields("host", 16, "tenant", 16, "segment", 16)},
		[]sample{{Loc{Host: 0xab}, 2, 3, 0x10005}}},
	{Spec{Name: "v6-racks", CIDR: "2001:db8::/32", Fields: fields("zone", 8, "rack", 8, "host", 16, "tenant", 16, "segment", 16)},
		[]sample{{Loc{Groups: []uint64{1, 2}, Host: 3}, 4, 5, 6}}},
	// The dual-stack plan: a /48 ULA with rack, host, tenant and segment
	// fields (rack, host, tenant, segment: 32 bits), 48 endpoint bits left.
	{Spec{Name: "ula48-racks", CIDR: "fd00:1234:5678::/48", Fields: fields("rack", 4, "host", 12, "tenant", 8, "segment", 8)},
		[]sample{{Loc{Groups: []uint64{3}, Host: 17}, 2, 1, 5}, {Loc{Groups: []uint64{15}, Host: 4095}, 255, 255, 1<<48 - 2}}},
	{Spec{Name: "wide-v6", CIDR: "fd00::/32", Fields: fields("host", 16, "tenant", 8, "segment", 8)},
		[]sample{{Loc{Host: 1}, 1, 1, 1}}},
}

type sample struct {
	loc                    Loc
	tenant, segment, endpt uint64
}

func TestGolden(t *testing.T) {
	for _, g := range goldenPlans {
		t.Run(g.spec.Name, func(t *testing.T) {
			p, err := Parse(g.spec)
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, p, g.samples)
			expect.Golden(t, g.spec.Name+".golden", got)
		})
	}
}

// render describes a plan for the golden files. Bit positions count from the
// most significant bit of the address, 0 first, as in RFC diagrams.
func render(t *testing.T, p *Plan, samples []sample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "network %s: %s\n", p.Name(), p)
	fmt.Fprintf(&b, "\nfields:\n")
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "  FIELD\tBITS\tPOSITION\n")
	pos := p.Prefix().Bits()
	fmt.Fprintf(w, "  prefix\t%d\t0-%d\n", pos, pos-1)
	for _, f := range p.Fields() {
		span := "-"
		if f.Bits > 0 {
			span = fmt.Sprintf("%d-%d", pos, pos+f.Bits-1)
		}
		fmt.Fprintf(w, "  %s\t%d\t%s\n", f.Name, f.Bits, span)
		pos += f.Bits
	}
	w.Flush()
	c := p.Capacity()
	fmt.Fprintf(&b, "\ncapacity:\n")
	w = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, l := range c.Levels {
		fmt.Fprintf(w, "  %s groups\t%d per parent, %d in all\n", l.Name, l.PerGroup, l.Total)
	}
	fmt.Fprintf(w, "  hosts per group\t%d\n", c.HostsPerGroup)
	fmt.Fprintf(w, "  hosts\t%d\n", c.Hosts)
	fmt.Fprintf(w, "  tenants\t%d\n", c.Tenants)
	fmt.Fprintf(w, "  segments per tenant\t%d\n", c.SegmentsPerTenant)
	first, last := p.EndpointRange()
	fmt.Fprintf(w, "  endpoints per segment per host\t%d (index %d to %d)\n", c.EndpointsPerSegment, first, last)
	fmt.Fprintf(w, "  endpoints\t%d\n", c.Endpoints)
	w.Flush()
	fmt.Fprintf(&b, "\nmasks:\n  tenant  %s\n  segment %s\n", p.TenantMask(), p.SegmentMask())
	for _, s := range samples {
		fmt.Fprintf(&b, "\nloc %s tenant %d segment %d endpoint %d:\n", s.loc, s.tenant, s.segment, s.endpt)
		w = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for i := 0; i <= len(s.loc.Groups); i++ {
			g, err := p.GroupCIDR(s.loc.Groups[:i])
			if err != nil {
				t.Fatal(err)
			}
			name := "pool"
			if i > 0 {
				name = p.Levels()[i-1].Name
			}
			fmt.Fprintf(w, "  %s\t%s\n", name, g)
		}
		h, err1 := p.HostCIDR(s.loc)
		tc, err2 := p.TenantCIDR(s.loc, s.tenant)
		sc, err3 := p.SegmentCIDR(s.loc, s.tenant, s.segment)
		a, err4 := p.Address(s.loc, s.tenant, s.segment, s.endpt)
		tm, err5 := p.TenantMatch(s.tenant)
		sm, err6 := p.SegmentMatch(s.tenant, s.segment)
		for _, err := range []error{err1, err2, err3, err4, err5, err6} {
			if err != nil {
				t.Fatal(err)
			}
		}
		d, err := p.Decode(a)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "  host\t%s\n", h)
		fmt.Fprintf(w, "  tenant\t%s\n", tc)
		fmt.Fprintf(w, "  segment\t%s\n", sc)
		fmt.Fprintf(w, "  address\t%s\n", a)
		fmt.Fprintf(w, "  decoded\tloc %s tenant %d segment %d endpoint %d\n", d.Loc, d.Tenant, d.Segment, d.Endpoint)
		fmt.Fprintf(w, "  tenant match\t%s\n", tm)
		fmt.Fprintf(w, "  segment match\t%s\n", sm)
		w.Flush()
	}
	return b.String()
}
