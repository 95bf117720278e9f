package plan

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse: parsing any spec never panics, and an accepted spec describes a
// consistent plan that round-trips through Spec().
func FuzzParse(f *testing.F) {
	f.Add("10.0.0.0/8", "host,tenant,segment", []byte{8, 8, 4})
	f.Add("10.0.0.0/8", "rack,host,tenant,segment", []byte{4, 6, 6, 4})
	f.Add("fd00:1::/48", "host,tenant,segment", []byte{16, 16, 16})
	f.Add("2001:db8::/32", "zone,rack,host,tenant,segment", []byte{8, 8, 16, 16, 16})
	f.Add("10.1.0.0/8", "host,tenant,segment", []byte{8, 8, 4})
	f.Add("::ffff:10.0.0.0/104", "host,tenant,segment", []byte{4, 8, 4})
	f.Add("10.0.0.0/8", "host,host,tenant,segment", []byte{8, 0xff, 8, 4})
	f.Add(" 0.0.0.0/0 ", "host,tenant,segment", []byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, cidr, names string, bits []byte) {
		var fs []Field
		for i, n := range strings.Split(names, ",") {
			b := 0
			if i < len(bits) {
				b = int(int8(bits[i]))
			}
			fs = append(fs, Field{Name: n, Bits: b})
		}
		p, err := Parse(Spec{Name: "fuzz", CIDR: cidr, Fields: fs})
		if err != nil {
			if !strings.HasPrefix(err.Error(), `network "fuzz": `) {
				t.Fatalf("error does not name the network: %v", err)
			}
			return
		}
		sum := p.Prefix().Bits()
		for _, f := range p.Fields() {
			if f.Bits < 0 || f.Bits > MaxEndpointBits {
				t.Fatalf("%s: field %+v out of range", p, f)
			}
			sum += f.Bits
		}
		if sum != p.Prefix().Addr().BitLen() {
			t.Fatalf("%s: fields and prefix add up to %d bits", p, sum)
		}
		if p.EndpointBits() < 1 || p.EndpointBits() > MaxEndpointBits {
			t.Fatalf("%s: %d endpoint bits", p, p.EndpointBits())
		}
		q, err := Parse(p.Spec())
		if err != nil {
			t.Fatalf("%s: Parse(Spec()) failed: %v", p, err)
		}
		if !reflect.DeepEqual(p, q) || !reflect.DeepEqual(p.Spec(), q.Spec()) {
			t.Fatalf("Parse(Spec()) = %s, want %s", q, p)
		}
		_ = p.Capacity()
		loc := Loc{Groups: make([]uint64, len(p.Levels())), Host: MaxID(p.HostBits())}
		a, err := p.Address(loc, 0, MaxID(p.SegmentBits()), 1)
		if err != nil {
			t.Fatalf("%s: Address: %v", p, err)
		}
		if !p.Prefix().Contains(a) {
			t.Fatalf("%s: address %s outside the pool", p, a)
		}
	})
}

// FuzzAddressMath: for any valid plan and ids that fit, Address and Decode
// are inverse, the address lies in its segment, tenant, host and group
// CIDRs, and the tenant and segment matches contain it.
func FuzzAddressMath(f *testing.F) {
	f.Add(false, []byte{10, 0, 0, 0}, uint8(8), []byte{}, uint8(8), uint8(8), uint8(4), uint64(0), uint64(1), uint64(1), uint64(1), uint64(11))
	f.Add(false, []byte{10, 0, 0, 0}, uint8(8), []byte{4}, uint8(6), uint8(6), uint8(4), uint64(2), uint64(3), uint64(5), uint64(2), uint64(7))
	f.Add(true, []byte{0xfd, 0, 0, 1}, uint8(48), []byte{}, uint8(16), uint8(16), uint8(16), uint64(0), uint64(0xab), uint64(2), uint64(3), uint64(0x10005))
	f.Add(true, []byte{0x20, 0x01, 0x0d, 0xb8}, uint8(32), []byte{8, 8}, uint8(16), uint8(16), uint8(16), uint64(0x0102), uint64(3), uint64(4), uint64(5), uint64(6))
	f.Fuzz(func(t *testing.T, v6 bool, addr []byte, plen uint8, levels []byte, hb, tb, sb uint8, groups, host, tenant, segment, ep uint64) {
		var a netip.Addr
		if v6 {
			var b [16]byte
			copy(b[:], addr)
			a = netip.AddrFrom16(b)
		} else {
			var b [4]byte
			copy(b[:], addr)
			a = netip.AddrFrom4(b)
		}
		if len(levels) > 4 {
			levels = levels[:4]
		}
		var fs []Field
		for i, l := range levels {
			fs = append(fs, Field{Name: "l" + string(rune('a'+i)), Bits: int(l % 40)})
		}
		fs = append(fs, Field{FieldHost, int(hb % 40)}, Field{FieldTenant, int(tb % 40)}, Field{FieldSegment, int(sb % 40)})
		pfx := netip.PrefixFrom(a, int(plen)%(a.BitLen()+1)).Masked()
		p, err := New("fuzz", pfx, fs)
		if err != nil {
			return
		}
		var loc Loc
		for i, l := range p.Levels() {
			loc.Groups = append(loc.Groups, (groups>>(8*i))&MaxID(l.Bits))
		}
		loc.Host = host & MaxID(p.HostBits())
		tenant &= MaxID(p.TenantBits())
		segment &= MaxID(p.SegmentBits())
		ep &= MaxID(p.EndpointBits())

		ip, err := p.Address(loc, tenant, segment, ep)
		if err != nil {
			t.Fatalf("%s: Address(%s, %d, %d, %d): %v", p, loc, tenant, segment, ep, err)
		}
		d, err := p.Decode(ip)
		want := Decoded{Network: "fuzz", Loc: loc, Tenant: tenant, Segment: segment, Endpoint: ep}
		if err != nil || !reflect.DeepEqual(d, want) {
			t.Fatalf("%s: Decode(%s) = %+v, %v; want %+v", p, ip, d, err, want)
		}
		sc, err1 := p.SegmentCIDR(loc, tenant, segment)
		tc, err2 := p.TenantCIDR(loc, tenant)
		hc, err3 := p.HostCIDR(loc)
		gc, err4 := p.GroupCIDR(loc.Groups)
		tm, err5 := p.TenantMatch(tenant)
		sm, err6 := p.SegmentMatch(tenant, segment)
		for _, err := range []error{err1, err2, err3, err4, err5, err6} {
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
		}
		for _, c := range []netip.Prefix{sc, tc, hc, gc, p.Prefix()} {
			if !c.Contains(ip) {
				t.Fatalf("%s: %s not in %s", p, ip, c)
			}
		}
		if !(sc.Bits() >= tc.Bits() && tc.Bits() >= hc.Bits() && hc.Bits() >= gc.Bits() && gc.Bits() >= p.Prefix().Bits()) {
			t.Fatalf("%s: prefix lengths do not nest: %s %s %s %s", p, sc, tc, hc, gc)
		}
		if !tm.Contains(ip) || !sm.Contains(ip) {
			t.Fatalf("%s: %s not matched by %s / %s", p, ip, tm, sm)
		}
	})
}
