package fabric

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// fuzzSnapshot builds a topology from fuzz bytes: hosts in racks, and
// devices with links whose peers and addresses the bytes pick (often
// inconsistent: unknown peers, off-subnet hosts, duplicate devices).
func fuzzSnapshot(t *testing.T, data []byte) api.Snapshot {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	b := newBuilder(t).
		network("pods", "10.0.0.0/8", plan.Field{Name: "rack", Bits: 2}, plan.Field{Name: "host", Bits: 4},
			plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4}).
		network("flat", "172.20.0.0/16", plan.Field{Name: "host", Bits: 4}, plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4})
	racks := 1 + int(next()%4)
	hosts := int(next() % 12)
	for i := 0; i < hosts; i++ {
		r := int(next()) % racks
		b.host(fmt.Sprintf("h%d", i), fmt.Sprintf("192.168.%d.%d", next()%4, 10+i), "rack", fmt.Sprintf("r%d", r))
	}
	devs := int(next() % 8)
	for i := 0; i < devs; i++ {
		d := api.Device{Name: fmt.Sprintf("d%d", next()%6), ASN: uint32(next())}
		if next()%3 == 0 {
			d.Kind = api.DeviceSpine
		} else {
			d.Kind = api.DeviceToR
			d.Group = map[string]string{"rack": fmt.Sprintf("r%d", next()%5)}
			if next()%4 == 0 {
				d.Group["row"] = "a"
			}
		}
		links := int(next() % 4)
		for j := 0; j < links; j++ {
			sub := next()
			l := api.DeviceLink{Local: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, sub, next() | 1}), 24+int(next()%8))}
			switch next() % 3 {
			case 0:
				if d.Kind == api.DeviceToR {
					l = api.DeviceLink{Local: netip.MustParsePrefix(fmt.Sprintf("192.168.%d.1/24", next()%4))}
				}
			case 1:
				l.Peer = fmt.Sprintf("d%d", next()%6)
			default:
				l.Peer = fmt.Sprintf("d%d", next()%6)
				l.Remote = netip.AddrFrom4([4]byte{172, 16, sub, next() &^ 1})
			}
			d.Links = append(d.Links, l)
		}
		b.device(d)
	}
	return b.snap
}

// FuzzCompute: for any topology, Compute and ForHost never panic and their
// output keeps its invariants: routes sorted by destination, one per
// destination, next hops sorted, distinct, of the destination's family.
func FuzzCompute(f *testing.F) {
	f.Add([]byte{2, 4, 0, 1, 0, 1, 1, 0, 1, 2, 3, 5, 1, 1, 2, 1, 1, 0, 0, 7, 2, 1, 9, 1, 4})
	f.Add([]byte{3, 9, 1, 2, 2, 2, 0, 1, 2, 0, 1, 3, 7, 0, 0, 0, 3, 2, 2, 4, 8, 1, 3, 1, 0, 0, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		snap := fuzzSnapshot(t, data)
		for _, d := range snap.Devices {
			tab, err := Compute(snap, d.Name)
			if err != nil {
				continue // an invalid device
			}
			if !slices.IsSortedFunc(tab.Routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) }) {
				t.Fatalf("%s: routes not sorted: %v", d.Name, tab.Routes)
			}
			for i, r := range tab.Routes {
				if i > 0 && tab.Routes[i-1].Dst == r.Dst {
					t.Fatalf("%s: two routes to %s", d.Name, r.Dst)
				}
				if len(r.Via) == 0 || !slices.IsSortedFunc(r.Via, netip.Addr.Compare) || len(slices.Compact(slices.Clone(r.Via))) != len(r.Via) {
					t.Fatalf("%s: bad next hops %v", d.Name, r)
				}
				for _, v := range r.Via {
					if v.Is4() != r.Dst.Addr().Is4() {
						t.Fatalf("%s: next hop family: %v", d.Name, r)
					}
				}
			}
			if !slices.IsSortedFunc(tab.Announce, func(a, b netip.Prefix) int {
				return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
			}) {
				t.Fatalf("%s: announce not sorted: %v", d.Name, tab.Announce)
			}
			for _, format := range Formats {
				if _, err := Render(tab, format); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, h := range snap.Hosts {
			hb, err := ForHost(snap, h.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range hb.Peers {
				if p.ASN == 0 || !p.Addr.IsValid() {
					t.Fatalf("host %s: bad peer %v", h.Name, p)
				}
			}
		}
	})
}
