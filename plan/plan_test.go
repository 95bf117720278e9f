package plan

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t testing.TB, name, cidr string, fields ...Field) *Plan {
	t.Helper()
	p, err := Parse(Spec{Name: name, CIDR: cidr, Fields: fields})
	if err != nil {
		t.Fatalf("Parse(%s %s %v): %v", name, cidr, fields, err)
	}
	return p
}

func fields(kv ...any) []Field {
	var f []Field
	for i := 0; i < len(kv); i += 2 {
		f = append(f, Field{Name: kv[i].(string), Bits: kv[i+1].(int)})
	}
	return f
}

// TestWorkedExample is the product page's example: pool 10.0.0.0/8 with
// host 8, tenant 8, segment 4 and (what remains) endpoint 4 bits.
func TestWorkedExample(t *testing.T) {
	p := mustParse(t, "example", "10.0.0.0/8", fields("host", 8, "tenant", 8, "segment", 4)...)
	host1 := Loc{Host: 1}

	if got, want := p.String(), "10.0.0.0/8: host 8 | tenant 8 | segment 4 | endpoint 4"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if p.EndpointBits() != 4 {
		t.Errorf("EndpointBits() = %d, want 4", p.EndpointBits())
	}
	checkPrefix(t, "HostCIDR(1)", "10.1.0.0/16")(p.HostCIDR(host1))
	checkPrefix(t, "TenantCIDR(1, 1)", "10.1.1.0/24")(p.TenantCIDR(host1, 1))
	checkPrefix(t, "SegmentCIDR(1, 1, 1)", "10.1.1.16/28")(p.SegmentCIDR(host1, 1, 1))
	a, err := p.Address(host1, 1, 1, 11)
	if err != nil || a != netip.MustParseAddr("10.1.1.27") {
		t.Fatalf("Address(1, 1, 1, 11) = %v, %v; want 10.1.1.27", a, err)
	}
	d, err := p.Decode(a)
	if err != nil {
		t.Fatalf("Decode(%v): %v", a, err)
	}
	want := Decoded{Network: "example", Loc: Loc{Host: 1}, Tenant: 1, Segment: 1, Endpoint: 11}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Decode(%v) = %+v, want %+v", a, d, want)
	}

	tm, _ := p.TenantMatch(1)
	if got := tm.String(); got != "10.0.1.0/255.0.255.0" {
		t.Errorf("TenantMatch(1) = %s, want 10.0.1.0/255.0.255.0", got)
	}
	sm, _ := p.SegmentMatch(1, 1)
	if got := sm.String(); got != "10.0.1.16/255.0.255.240" {
		t.Errorf("SegmentMatch(1, 1) = %s, want 10.0.1.16/255.0.255.240", got)
	}
	for _, tc := range []struct {
		ip               string
		tenant, segment1 bool
	}{
		{"10.1.1.27", true, true},
		{"10.200.1.17", true, true},  // same tenant and segment on host 200
		{"10.200.1.33", true, false}, // tenant 1, segment 2
		{"10.1.2.27", false, false},  // tenant 2
		{"11.1.1.27", false, false},  // outside the pool
		{"::ffff:10.1.1.27", false, false},
	} {
		ip := netip.MustParseAddr(tc.ip)
		if got := tm.Contains(ip); got != tc.tenant {
			t.Errorf("TenantMatch(1).Contains(%s) = %v, want %v", ip, got, tc.tenant)
		}
		if got := sm.Contains(ip); got != tc.segment1 {
			t.Errorf("SegmentMatch(1, 1).Contains(%s) = %v, want %v", ip, got, tc.segment1)
		}
	}

	first, last := p.EndpointRange()
	if first != 1 || last != 14 {
		t.Errorf("EndpointRange() = %d, %d; want 1, 14", first, last)
	}
	wantCap := Capacity{HostsPerGroup: 256, Hosts: 256, Tenants: 256, SegmentsPerTenant: 16,
		EndpointsPerSegment: 14, Endpoints: 256 * 256 * 16 * 14}
	if c := p.Capacity(); !reflect.DeepEqual(c, wantCap) {
		t.Errorf("Capacity() = %+v, want %+v", c, wantCap)
	}
}

func checkPrefix(t *testing.T, what, want string) func(netip.Prefix, error) {
	t.Helper()
	return func(got netip.Prefix, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		if got.String() != want {
			t.Errorf("%s = %s, want %s", what, got, want)
		}
	}
}

func TestIPv6Plan(t *testing.T) {
	p := mustParse(t, "v6", "fd00:1::/48", fields("host", 16, "tenant", 16, "segment", 16)...)
	if p.Is4() || p.EndpointBits() != 32 {
		t.Fatalf("Is4() = %v, EndpointBits() = %d; want false, 32", p.Is4(), p.EndpointBits())
	}
	l := Loc{Host: 0xab}
	checkPrefix(t, "HostCIDR", "fd00:1:0:ab::/64")(p.HostCIDR(l))
	checkPrefix(t, "TenantCIDR", "fd00:1:0:ab:2::/80")(p.TenantCIDR(l, 2))
	checkPrefix(t, "SegmentCIDR", "fd00:1:0:ab:2:3::/96")(p.SegmentCIDR(l, 2, 3))
	a, err := p.Address(l, 2, 3, 0x10005)
	if err != nil || a != netip.MustParseAddr("fd00:1:0:ab:2:3:1:5") {
		t.Fatalf("Address = %v, %v; want fd00:1:0:ab:2:3:1:5", a, err)
	}
	d, err := p.Decode(a)
	want := Decoded{Network: "v6", Loc: l, Tenant: 2, Segment: 3, Endpoint: 0x10005}
	if err != nil || !reflect.DeepEqual(d, want) {
		t.Errorf("Decode(%v) = %+v, %v; want %+v", a, d, err, want)
	}
	tm, _ := p.TenantMatch(2)
	if got, want := tm.String(), "fd00:1:0:0:2::/ffff:ffff:ffff:0:ffff::"; got != want {
		t.Errorf("TenantMatch(2) = %s, want %s", got, want)
	}
	sm, _ := p.SegmentMatch(2, 3)
	if got, want := sm.String(), "fd00:1::2:3:0:0/ffff:ffff:ffff:0:ffff:ffff::"; got != want {
		t.Errorf("SegmentMatch(2, 3) = %s, want %s", got, want)
	}
	if !tm.Contains(netip.MustParseAddr("fd00:1:0:ffff:2:9:1:1")) {
		t.Error("TenantMatch(2) misses tenant 2 on host 0xffff")
	}
	if tm.Contains(netip.MustParseAddr("10.0.0.2")) || tm.Contains(netip.MustParseAddr("fd00:2:0:ab:2:3:1:5")) {
		t.Error("TenantMatch(2) matches an address outside the pool")
	}
	if _, err := p.Decode(netip.MustParseAddr("10.1.1.1")); err == nil {
		t.Error("Decode of an IPv4 address in an IPv6 plan succeeded")
	}
	c := p.Capacity()
	if c.Hosts != 1<<16 || c.Tenants != 1<<16 || c.SegmentsPerTenant != 1<<16 || c.EndpointsPerSegment != 1<<32-2 {
		t.Errorf("Capacity() = %+v", c)
	}
	if c.Endpoints != ^uint64(0) {
		t.Errorf("Capacity().Endpoints = %d, want saturated %d", c.Endpoints, ^uint64(0))
	}
}

// TestRackPlan: a topology level above the host. 10.0.0.0/8, rack 4, host 6,
// tenant 6, segment 4, endpoint 4.
func TestRackPlan(t *testing.T) {
	p := mustParse(t, "dc", "10.0.0.0/8", fields("rack", 4, "host", 6, "tenant", 6, "segment", 4)...)
	if got := p.Levels(); !reflect.DeepEqual(got, fields("rack", 4)) {
		t.Errorf("Levels() = %v", got)
	}
	checkPrefix(t, "GroupCIDR()", "10.0.0.0/8")(p.GroupCIDR(nil))
	checkPrefix(t, "GroupCIDR(2)", "10.32.0.0/12")(p.GroupCIDR([]uint64{2}))
	checkPrefix(t, "GroupCIDR(15)", "10.240.0.0/12")(p.GroupCIDR([]uint64{15}))
	l := Loc{Groups: []uint64{2}, Host: 3}
	checkPrefix(t, "HostCIDR(2.3)", "10.32.192.0/18")(p.HostCIDR(l))
	checkPrefix(t, "HostCIDR(2.0)", "10.32.0.0/18")(p.HostCIDR(Loc{Groups: []uint64{2}}))
	checkPrefix(t, "TenantCIDR(2.3, 5)", "10.32.197.0/24")(p.TenantCIDR(l, 5))
	checkPrefix(t, "SegmentCIDR(2.3, 5, 2)", "10.32.197.32/28")(p.SegmentCIDR(l, 5, 2))
	a, err := p.Address(l, 5, 2, 7)
	if err != nil || a.String() != "10.32.197.39" {
		t.Fatalf("Address(2.3, 5, 2, 7) = %v, %v; want 10.32.197.39", a, err)
	}
	d, _ := p.Decode(a)
	if want := (Decoded{Network: "dc", Loc: l, Tenant: 5, Segment: 2, Endpoint: 7}); !reflect.DeepEqual(d, want) {
		t.Errorf("Decode(%v) = %+v, want %+v", a, d, want)
	}
	if got := l.String(); got != "2.3" {
		t.Errorf("Loc.String() = %q, want 2.3", got)
	}

	tm, _ := p.TenantMatch(5)
	if got, want := tm.String(), "10.0.5.0/255.0.63.0"; got != want {
		t.Errorf("TenantMatch(5) = %s, want %s", got, want)
	}
	sm, _ := p.SegmentMatch(5, 2)
	if got, want := sm.String(), "10.0.5.32/255.0.63.240"; got != want {
		t.Errorf("SegmentMatch(5, 2) = %s, want %s", got, want)
	}
	if p.TenantMask() != tm.Mask || p.SegmentMask() != sm.Mask {
		t.Errorf("TenantMask/SegmentMask disagree with the matches")
	}
	// Exhaustively: the tenant match holds for tenant 5 on every rack and
	// host, and for no other tenant; likewise the segment match.
	for rack := uint64(0); rack < 16; rack++ {
		for host := uint64(0); host < 64; host++ {
			loc := Loc{Groups: []uint64{rack}, Host: host}
			for tenant := uint64(0); tenant < 64; tenant++ {
				for _, seg := range []uint64{0, 2, 15} {
					for _, ep := range []uint64{0, 7, 15} {
						a, err := p.Address(loc, tenant, seg, ep)
						if err != nil {
							t.Fatal(err)
						}
						if got := tm.Contains(a); got != (tenant == 5) {
							t.Fatalf("TenantMatch(5).Contains(%s) [loc %s tenant %d] = %v", a, loc, tenant, got)
						}
						if got := sm.Contains(a); got != (tenant == 5 && seg == 2) {
							t.Fatalf("SegmentMatch(5, 2).Contains(%s) [loc %s tenant %d segment %d] = %v", a, loc, tenant, seg, got)
						}
					}
				}
			}
		}
	}

	want := Capacity{
		Levels:        []LevelCapacity{{Name: "rack", PerGroup: 16, Total: 16}},
		HostsPerGroup: 64, Hosts: 1024, Tenants: 64, SegmentsPerTenant: 16,
		EndpointsPerSegment: 14, Endpoints: 1024 * 64 * 16 * 14,
	}
	if c := p.Capacity(); !reflect.DeepEqual(c, want) {
		t.Errorf("Capacity() = %+v, want %+v", c, want)
	}
}

func TestTwoLevels(t *testing.T) {
	p := mustParse(t, "dc", "10.0.0.0/8", fields("pod", 2, "rack", 3, "host", 5, "tenant", 4, "segment", 4)...)
	checkPrefix(t, "GroupCIDR(1)", "10.64.0.0/10")(p.GroupCIDR([]uint64{1}))
	checkPrefix(t, "GroupCIDR(1, 7)", "10.120.0.0/13")(p.GroupCIDR([]uint64{1, 7}))
	l := Loc{Groups: []uint64{1, 7}, Host: 31}
	checkPrefix(t, "HostCIDR(1.7.31)", "10.127.192.0/18")(p.HostCIDR(l))
	c := p.Capacity()
	wantLevels := []LevelCapacity{{"pod", 4, 4}, {"rack", 8, 32}}
	if !reflect.DeepEqual(c.Levels, wantLevels) || c.HostsPerGroup != 32 || c.Hosts != 1024 {
		t.Errorf("Capacity() = %+v", c)
	}
}

func TestLocErrors(t *testing.T) {
	p := mustParse(t, "dc", "10.0.0.0/8", fields("rack", 4, "host", 6, "tenant", 6, "segment", 4)...)
	for _, tc := range []struct {
		name  string
		err   func() error
		want  string
		isLoc bool
	}{
		{"no groups", func() error { _, err := p.HostCIDR(Loc{Host: 1}); return err },
			"location does not fit the plan: 0 group ids for 1 topology levels", true},
		{"too many groups", func() error { _, err := p.GroupCIDR([]uint64{1, 2}); return err },
			"location does not fit the plan: 2 group ids for 1 topology levels", true},
		{"rack too big", func() error { _, err := p.HostCIDR(Loc{Groups: []uint64{16}}); return err },
			"location does not fit the plan: rack 16 does not fit in 4 bits (max 15)", true},
		{"host too big", func() error { _, err := p.HostCIDR(Loc{Groups: []uint64{0}, Host: 64}); return err },
			"location does not fit the plan: host 64 does not fit in 6 bits (max 63)", true},
		{"tenant too big", func() error { _, err := p.TenantCIDR(Loc{Groups: []uint64{0}}, 64); return err },
			"tenant 64 does not fit in 6 bits (max 63)", false},
		{"segment too big", func() error { _, err := p.SegmentCIDR(Loc{Groups: []uint64{0}}, 1, 16); return err },
			"segment 16 does not fit in 4 bits (max 15)", false},
		{"endpoint too big", func() error { _, err := p.Address(Loc{Groups: []uint64{0}}, 1, 1, 16); return err },
			"endpoint 16 does not fit in 4 bits (max 15)", false},
		{"tenant match", func() error { _, err := p.TenantMatch(64); return err },
			"tenant 64 does not fit in 6 bits (max 63)", false},
		{"segment match", func() error { _, err := p.SegmentMatch(1, 16); return err },
			"segment 16 does not fit in 4 bits (max 15)", false},
		{"decode outside", func() error { _, err := p.Decode(netip.MustParseAddr("11.0.0.1")); return err },
			`address 11.0.0.1 is not in network "dc" (10.0.0.0/8)`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if got := errors.Is(err, ErrLoc); got != tc.isLoc {
				t.Errorf("errors.Is(err, ErrLoc) = %v, want %v", got, tc.isLoc)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	std := fields("host", 8, "tenant", 8, "segment", 4)
	for _, tc := range []struct {
		name   string
		cidr   string
		fields []Field
		want   string
	}{
		{"fields do not fit", "10.0.0.0/8", fields("host", 16, "tenant", 8, "segment", 8),
			`network "n": fields need 32 bits but 10.0.0.0/8 leaves only 24`},
		{"no endpoint bits", "10.0.0.0/8", fields("host", 8, "tenant", 8, "segment", 8),
			`network "n": fields need 24 bits but 10.0.0.0/8 leaves 24: no bits remain for endpoints`},
		{"no endpoint bits v6", "fd00::/104", fields("host", 8, "tenant", 8, "segment", 8),
			`network "n": fields need 24 bits but fd00::/104 leaves 24: no bits remain for endpoints`},
		{"too many endpoint bits", "fd00::/16", fields("host", 16, "tenant", 16, "segment", 8),
			`network "n": 72 endpoint bits remain; at most 64 are supported (widen the other fields or lengthen the prefix)`},
		{"wrong order", "10.0.0.0/8", fields("tenant", 8, "host", 8, "segment", 4),
			`network "n": field 0 is "tenant", expected "host": the layout ends with host, tenant, segment`},
		{"segment not last", "10.0.0.0/8", fields("host", 8, "segment", 4, "tenant", 8),
			`network "n": field 1 is "segment", expected "tenant": the layout ends with host, tenant, segment`},
		{"level after host", "10.0.0.0/8", fields("host", 8, "rack", 2, "tenant", 8, "segment", 4),
			`network "n": field "host" must come after the topology levels, in the order host, tenant, segment`},
		{"duplicate field", "10.0.0.0/8", fields("rack", 2, "rack", 2, "host", 4, "tenant", 8, "segment", 4),
			`network "n": field "rack" appears twice`},
		{"non-canonical cidr", "10.1.0.0/8", std,
			`network "n": cidr 10.1.0.0/8 has bits set below the prefix length; did you mean 10.0.0.0/8?`},
		{"non-canonical v6", "fd00::1/64", fields("host", 8, "tenant", 8, "segment", 8),
			`network "n": cidr fd00::1/64 has bits set below the prefix length; did you mean fd00::/64?`},
		{"bad cidr", "10.0.0.0/33", std,
			`network "n": cidr "10.0.0.0/33": prefix length "33": want a whole number from 0 to 32 for IPv4`},
		{"empty cidr", "", std, `network "n": cidr "": want ADDRESS/LENGTH, for example 10.0.0.0/8`},
		{"bad address", "10.0.0.256/8", std, `network "n": cidr "10.0.0.256/8": "10.0.0.256" is not an IP address (IPv4 field has value >255)`},
		{"zone", "fe80::1%eth0/64", std, `network "n": cidr "fe80::1%eth0/64": IPv6 zones cannot be present in a prefix`},
		{"mapped v4", "::ffff:10.0.0.0/104", fields("host", 4, "tenant", 8, "segment", 4),
			`network "n": cidr ::ffff:10.0.0.0/104: use a plain IPv4 or IPv6 prefix`},
		{"too few fields", "10.0.0.0/8", fields("host", 8, "tenant", 8),
			`network "n": layout needs at least the fields host, tenant, segment (in that order), got 2 field(s)`},
		{"no fields", "10.0.0.0/8", nil,
			`network "n": layout needs at least the fields host, tenant, segment (in that order), got 0 field(s)`},
		{"field too wide", "fd00::/32", fields("host", 33, "tenant", 8, "segment", 8),
			`network "n": field "host" has 33 bits; each field takes 0 to 32 bits`},
		{"negative bits", "10.0.0.0/8", fields("host", -1, "tenant", 8, "segment", 4),
			`network "n": field "host" has -1 bits; each field takes 0 to 32 bits`},
		{"bad field name", "10.0.0.0/8", fields("Rack", 2, "host", 6, "tenant", 8, "segment", 4),
			`network "n": field 0: invalid name "Rack" (lowercase letters, digits and '-', starting with a letter)`},
		{"empty level", "10.0.0.0/8", fields("rack", 0, "host", 8, "tenant", 8, "segment", 4),
			`network "n": topology level "rack" has 0 bits; a level needs at least 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(Spec{Name: "n", CIDR: tc.cidr, Fields: tc.fields})
			if err == nil {
				t.Fatalf("Parse accepted %s %v as %s; want error %q", tc.cidr, tc.fields, p, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
		})
	}
	if _, err := New("n", netip.Prefix{}, std); err == nil || err.Error() != `network "n": invalid cidr` {
		t.Errorf("New with zero prefix: %v", err)
	}
}

func TestEdgeWidths(t *testing.T) {
	for _, tc := range []struct {
		cidr        string
		fields      []Field
		first, last uint64
		perSegment  uint64
	}{
		{"10.0.0.0/8", fields("host", 8, "tenant", 8, "segment", 7), 0, 1, 2}, // 1 endpoint bit: nothing reserved
		{"10.0.0.0/8", fields("host", 8, "tenant", 8, "segment", 6), 1, 2, 2}, // 2 bits: .0 and .3 reserved
		{"10.0.0.0/8", fields("host", 0, "tenant", 0, "segment", 0), 1, 1<<24 - 2, 1<<24 - 2},
		{"fd00::/32", fields("host", 16, "tenant", 8, "segment", 8), 1, ^uint64(0) - 1, ^uint64(0) - 1},
		{"::/0", fields("host", 32, "tenant", 32, "segment", 32), 1, 1<<32 - 2, 1<<32 - 2},
	} {
		p := mustParse(t, "n", tc.cidr, tc.fields...)
		f, l := p.EndpointRange()
		if f != tc.first || l != tc.last || p.EndpointsPerSegment() != tc.perSegment {
			t.Errorf("%s: EndpointRange() = %d, %d, EndpointsPerSegment() = %d; want %d, %d, %d",
				p, f, l, p.EndpointsPerSegment(), tc.first, tc.last, tc.perSegment)
		}
		// The highest address of the pool decodes to the all-ones ids.
		loc := Loc{Host: MaxID(p.HostBits())}
		a, err := p.Address(loc, MaxID(p.TenantBits()), MaxID(p.SegmentBits()), MaxID(p.EndpointBits()))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if last := lastAddr(p.Prefix()); a != last {
			t.Errorf("%s: all-ones address %s, want %s", p, a, last)
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestSpecRoundTrip(t *testing.T) {
	p := mustParse(t, "dc", " 10.0.0.0/8 ", fields("rack", 4, "host", 6, "tenant", 6, "segment", 4)...)
	s := p.Spec()
	want := Spec{Name: "dc", CIDR: "10.0.0.0/8", Fields: fields("rack", 4, "host", 6, "tenant", 6, "segment", 4)}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Spec() = %+v, want %+v", s, want)
	}
	q, err := Parse(s)
	if err != nil || !reflect.DeepEqual(p, q) {
		t.Errorf("Parse(Spec()) = %v, %v; want %v", q, err, p)
	}
	if got := p.Fields()[len(p.Fields())-1]; got != (Field{"endpoint", 4}) {
		t.Errorf("last field %+v, want endpoint 4", got)
	}
}

func TestOverlaps(t *testing.T) {
	a := mustParse(t, "a", "10.0.0.0/8", fields("host", 8, "tenant", 8, "segment", 4)...)
	b := mustParse(t, "b", "10.128.0.0/9", fields("host", 7, "tenant", 8, "segment", 4)...)
	c := mustParse(t, "c", "192.168.0.0/16", fields("host", 4, "tenant", 4, "segment", 4)...)
	if !a.Overlaps(b) || !b.Overlaps(a) || a.Overlaps(c) {
		t.Errorf("Overlaps: a~b %v, b~a %v, a~c %v; want true, true, false", a.Overlaps(b), b.Overlaps(a), a.Overlaps(c))
	}
}

func TestMaxID(t *testing.T) {
	for bits, want := range map[int]uint64{0: 0, 1: 1, 8: 255, 32: 1<<32 - 1, 63: 1<<63 - 1, 64: ^uint64(0)} {
		if got := MaxID(bits); got != want {
			t.Errorf("MaxID(%d) = %d, want %d", bits, got, want)
		}
	}
}

func TestErrorsNameTheNetwork(t *testing.T) {
	_, err := Parse(Spec{Name: "prod", CIDR: "10.0.0.0/8"})
	if err == nil || !strings.Contains(err.Error(), `network "prod"`) {
		t.Errorf("error %v does not name the network", err)
	}
}
