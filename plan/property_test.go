package plan

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
)

// randomPlan builds a valid random plan: IPv4 or IPv6, zero to two topology
// levels, with at least one endpoint bit.
func randomPlan(r *rand.Rand) *Plan {
	for {
		width := 32
		maxField, maxLevel := 12, 6
		if r.IntN(2) == 0 {
			width, maxField, maxLevel = 128, 32, 16
		}
		var fs []Field
		for i := range r.IntN(3) {
			fs = append(fs, Field{Name: fmt.Sprintf("l%d", i), Bits: 1 + r.IntN(maxLevel)})
		}
		for _, n := range []string{FieldHost, FieldTenant, FieldSegment} {
			fs = append(fs, Field{Name: n, Bits: r.IntN(maxField + 1)})
		}
		used := 0
		for _, f := range fs {
			used += f.Bits
		}
		ep := 1 + r.IntN(min(MaxEndpointBits, 16+r.IntN(64)))
		plen := width - used - ep
		if plen < 0 {
			continue
		}
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		a := netip.AddrFrom16(b)
		if width == 32 {
			a = netip.AddrFrom4([4]byte(b[:4]))
		}
		pfx := netip.PrefixFrom(a, plen).Masked()
		p, err := New("rand", pfx, fs)
		if err != nil {
			panic(fmt.Sprintf("randomPlan built an invalid plan %s %v: %v", pfx, fs, err))
		}
		return p
	}
}

func randID(r *rand.Rand, bits int) uint64 { return r.Uint64() & MaxID(bits) }

func randLoc(r *rand.Rand, p *Plan) Loc {
	var l Loc
	for _, f := range p.Levels() {
		l.Groups = append(l.Groups, randID(r, f.Bits))
	}
	l.Host = randID(r, p.HostBits())
	return l
}

// TestProperties checks, on random plans and locations, that Address and
// Decode are inverse, that the CIDRs nest (segment in tenant in host in each
// enclosing group in the pool), and that the tenant and segment matches hold
// for their own addresses on any host and for no other tenant's or segment's.
func TestProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		p := randomPlan(r)
		loc := randLoc(r, p)
		tenant, segment := randID(r, p.TenantBits()), randID(r, p.SegmentBits())
		ep := randID(r, p.EndpointBits())
		a, err := p.Address(loc, tenant, segment, ep)
		if err != nil {
			t.Fatalf("%s: Address(%s, %d, %d, %d): %v", p, loc, tenant, segment, ep, err)
		}
		d, err := p.Decode(a)
		want := Decoded{Network: p.Name(), Loc: loc, Tenant: tenant, Segment: segment, Endpoint: ep}
		if err != nil || !reflect.DeepEqual(d, want) {
			t.Fatalf("%s: Decode(%s) = %+v, %v; want %+v", p, a, d, err, want)
		}

		// Nesting, innermost first.
		chain := []netip.Prefix{}
		add := func(pfx netip.Prefix, err error) {
			if err != nil {
				t.Fatalf("%s loc %s: %v", p, loc, err)
			}
			chain = append(chain, pfx)
		}
		add(netip.PrefixFrom(a, a.BitLen()), nil)
		add(p.SegmentCIDR(loc, tenant, segment))
		add(p.TenantCIDR(loc, tenant))
		add(p.HostCIDR(loc))
		for n := len(loc.Groups); n >= 0; n-- {
			add(p.GroupCIDR(loc.Groups[:n]))
		}
		if chain[len(chain)-1] != p.Prefix() {
			t.Fatalf("%s: GroupCIDR(nil) = %s, want the pool", p, chain[len(chain)-1])
		}
		for j := 1; j < len(chain); j++ {
			in, out := chain[j-1], chain[j]
			if in.Bits() < out.Bits() || !out.Contains(in.Addr()) {
				t.Fatalf("%s loc %s tenant %d segment %d: %s is not inside %s", p, loc, tenant, segment, in, out)
			}
		}
		if sc := chain[1]; sc.Bits() != a.BitLen()-p.EndpointBits() {
			t.Fatalf("%s: segment CIDR %s is not /%d", p, sc, a.BitLen()-p.EndpointBits())
		}

		// Matches: the same tenant/segment elsewhere matches; another does not.
		tm, err := p.TenantMatch(tenant)
		if err != nil {
			t.Fatal(err)
		}
		sm, err := p.SegmentMatch(tenant, segment)
		if err != nil {
			t.Fatal(err)
		}
		if !tm.Contains(a) || !sm.Contains(a) {
			t.Fatalf("%s: %s (tenant %d segment %d) not matched by %s / %s", p, a, tenant, segment, tm, sm)
		}
		other, err := p.Address(randLoc(r, p), tenant, segment, randID(r, p.EndpointBits()))
		if err != nil {
			t.Fatal(err)
		}
		if !tm.Contains(other) || !sm.Contains(other) {
			t.Fatalf("%s: %s (tenant %d segment %d, another host) not matched by %s / %s", p, other, tenant, segment, tm, sm)
		}
		if p.TenantBits() > 0 {
			t2 := randID(r, p.TenantBits())
			if t2 == tenant {
				t2 ^= 1
			}
			b, err := p.Address(randLoc(r, p), t2, randID(r, p.SegmentBits()), randID(r, p.EndpointBits()))
			if err != nil {
				t.Fatal(err)
			}
			if tm.Contains(b) || sm.Contains(b) {
				t.Fatalf("%s: tenant %d's %s matched by tenant %d's %s / %s", p, t2, b, tenant, tm, sm)
			}
		}
		if p.SegmentBits() > 0 {
			s2 := randID(r, p.SegmentBits())
			if s2 == segment {
				s2 ^= 1
			}
			b, err := p.Address(randLoc(r, p), tenant, s2, randID(r, p.EndpointBits()))
			if err != nil {
				t.Fatal(err)
			}
			if !tm.Contains(b) || sm.Contains(b) {
				t.Fatalf("%s: segment %d's %s: tenant match %v (want true), segment %d match %v (want false)",
					p, s2, b, tm.Contains(b), segment, sm.Contains(b))
			}
		}
		// Nothing outside the pool matches (when there is an outside).
		if p.Prefix().Bits() > 0 {
			out := flipBit(a, p.Prefix().Bits()-1)
			if tm.Contains(out) || sm.Contains(out) {
				t.Fatalf("%s: %s outside the pool matched by %s", p, out, tm)
			}
			if _, err := p.Decode(out); err == nil {
				t.Fatalf("%s: Decode(%s) outside the pool succeeded", p, out)
			}
		}
		// Spec round-trips.
		q, err := Parse(p.Spec())
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("%s: Parse(Spec()) = %v, %v", p, q, err)
		}
	}
}

// flipBit flips bit i of a, counted from the most significant bit.
func flipBit(a netip.Addr, i int) netip.Addr {
	b := a.AsSlice()
	b[i/8] ^= 0x80 >> (i % 8)
	out, _ := netip.AddrFromSlice(b)
	return out
}

// TestCapacityProperties: counts multiply up, and the number of hosts equals
// the number of distinct host CIDRs the pool splits into.
func TestCapacityProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 500; i++ {
		p := randomPlan(r)
		c := p.Capacity()
		hostLen := p.Prefix().Bits()
		for _, l := range p.Levels() {
			hostLen += l.Bits
		}
		hostLen += p.HostBits()
		if bits := hostLen - p.Prefix().Bits(); bits < 64 && c.Hosts != 1<<bits {
			t.Fatalf("%s: Hosts = %d, want 2^%d", p, c.Hosts, bits)
		}
		h, err := p.HostCIDR(randLoc(r, p))
		if err != nil || h.Bits() != hostLen {
			t.Fatalf("%s: HostCIDR = %s, %v; want a /%d", p, h, err, hostLen)
		}
		if c.Tenants != 1<<p.TenantBits() || c.SegmentsPerTenant != 1<<p.SegmentBits() {
			t.Fatalf("%s: Capacity %+v", p, c)
		}
		prod := c.Hosts
		for _, x := range []uint64{c.Tenants, c.SegmentsPerTenant, c.EndpointsPerSegment} {
			prod = satMul(prod, x)
		}
		if c.Endpoints != prod {
			t.Fatalf("%s: Endpoints = %d, want %d", p, c.Endpoints, prod)
		}
	}
}
