package fabric

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// builder makes snapshots the way romanad places hosts: a new topology
// group takes the smallest free id among its siblings, a host the smallest
// free id in its innermost group (in order of addition).
type builder struct {
	tb    testing.TB
	snap  api.Snapshot
	plans map[string]*plan.Plan
	group map[string]map[string]uint64 // network -> label path -> id
	next  map[string]uint64            // network/group path -> next host id
}

func newBuilder(tb testing.TB) *builder {
	return &builder{tb: tb, plans: map[string]*plan.Plan{}, group: map[string]map[string]uint64{}, next: map[string]uint64{}}
}

func (b *builder) network(name, cidr string, fields ...plan.Field) *builder {
	n := api.Network{Name: name, CIDR: cidr, Fields: fields}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		b.tb.Fatal(err)
	}
	b.plans[name] = p
	b.group[name] = map[string]uint64{}
	b.snap.Networks = append(b.snap.Networks, n)
	return b
}

// host adds a host placed in every network added so far.
func (b *builder) host(name, ip string, labels ...string) *builder {
	h := api.Host{Name: name, IP: netip.MustParseAddr(ip)}
	if len(labels) > 0 {
		h.Labels = map[string]string{}
		for i := 0; i+1 < len(labels); i += 2 {
			h.Labels[labels[i]] = labels[i+1]
		}
	}
	for _, n := range b.snap.Networks {
		p := b.plans[n.Name]
		var loc plan.Loc
		path := ""
		for _, lv := range p.Levels() {
			path += "/" + h.Labels[lv.Name]
			id, ok := b.group[n.Name][path]
			if !ok {
				used := 0
				for range b.group[n.Name] {
					used++ // ids of all groups: fine for one-level tests
				}
				id = uint64(used)
				b.group[n.Name][path] = id
			}
			loc.Groups = append(loc.Groups, id)
		}
		key := n.Name + path
		loc.Host = b.next[key]
		b.next[key]++
		cidr, err := p.HostCIDR(loc)
		if err != nil {
			b.tb.Fatal(err)
		}
		h.Slots = append(h.Slots, api.HostSlot{Network: n.Name, Loc: loc, CIDR: cidr})
	}
	b.snap.Hosts = append(b.snap.Hosts, h)
	return b
}

// ip6 gives the host added last an IPv6 underlay address beside its IPv4.
func (b *builder) ip6(addr string) *builder {
	b.snap.Hosts[len(b.snap.Hosts)-1].IP6 = netip.MustParseAddr(addr)
	return b
}

func (b *builder) device(d api.Device) *builder {
	b.snap.Devices = append(b.snap.Devices, d)
	return b
}

// endpoints allocates n addresses per host in network net, spread over
// tenants and segments the way the allocator fills blocks.
func (b *builder) endpoints(net string, perHost int) *builder {
	p := b.plans[net]
	first, last := p.EndpointRange()
	per := int(last - first + 1)
	for _, h := range b.snap.Hosts {
		var loc plan.Loc
		for _, s := range h.Slots {
			if s.Network == net {
				loc = s.Loc
			}
		}
		for i := 0; i < perHost; i++ {
			blk := i / per
			seg := uint64(blk) % (1 << p.SegmentBits())
			ten := uint64(blk) / (1 << p.SegmentBits()) % (1 << p.TenantBits())
			ip, err := p.Address(loc, ten, seg, first+uint64(i%per))
			if err != nil {
				b.tb.Fatal(err)
			}
			b.snap.Addresses = append(b.snap.Addresses, api.Address{Name: fmt.Sprintf("%s-%d", h.Name, i), IP: ip, Network: net, Host: h.Name,
				Tenant: fmt.Sprintf("t%d", ten), Segment: fmt.Sprintf("s%d", seg)})
		}
	}
	return b
}

func link(peer, local, remote string) api.DeviceLink {
	l := api.DeviceLink{Peer: peer, Local: netip.MustParsePrefix(local)}
	if remote != "" {
		l.Remote = netip.MustParseAddr(remote)
	}
	return l
}

// leafSpine is the golden scenario: two racks, rack r1 behind tor1 (two
// uplinks: to spine1, and to spine2 described only by spine2's side),
// rack r2 behind a redundant pair tor2a/tor2b linked to spine1; a network
// with a rack level ("pods") and one without ("flat").
func leafSpine(tb testing.TB) api.Snapshot {
	b := newBuilder(tb).
		network("pods", "10.0.0.0/8", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 4},
			plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4}).
		network("flat", "172.20.0.0/16", plan.Field{Name: "host", Bits: 4},
			plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4}).
		host("h1", "192.168.1.11", "rack", "r1").
		host("h2", "192.168.1.12", "rack", "r1").
		host("h3", "192.168.2.13", "rack", "r2").
		host("h4", "192.168.2.14", "rack", "r2").
		device(api.Device{Name: "tor1", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}, ASN: 65101,
			RouterID: netip.MustParseAddr("172.31.255.1"), Links: []api.DeviceLink{
				link("", "192.168.1.1/24", ""),
				link("spine1", "172.16.0.1/31", "172.16.0.0"),
			}}).
		device(api.Device{Name: "tor2a", Kind: api.DeviceToR, Group: map[string]string{"rack": "r2"}, ASN: 65102,
			Links: []api.DeviceLink{link("", "192.168.2.2/24", ""), link("spine1", "172.16.0.3/31", "")}}).
		device(api.Device{Name: "tor2b", Kind: api.DeviceToR, Group: map[string]string{"rack": "r2"}, ASN: 65102,
			Links: []api.DeviceLink{link("", "192.168.2.3/24", ""), link("spine1", "172.16.0.5/31", "")}}).
		device(api.Device{Name: "spine1", Kind: api.DeviceSpine, ASN: 65100, Links: []api.DeviceLink{
			link("tor2a", "172.16.0.2/31", ""), link("tor2b", "172.16.0.4/31", "172.16.0.5"),
		}}).
		device(api.Device{Name: "spine2", Kind: api.DeviceSpine, ASN: 65100, Links: []api.DeviceLink{
			link("tor1", "172.16.1.0/31", "172.16.1.1"),
		}}).
		endpoints("pods", 40)
	return b.snap
}

// leafSpine6 is an IPv6 rack: hosts with IPv6 underlay addresses.
func leafSpine6(tb testing.TB) api.Snapshot {
	b := newBuilder(tb).
		network("v6", "fd00:10::/48", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 8},
			plan.Field{Name: "tenant", Bits: 8}, plan.Field{Name: "segment", Bits: 8}).
		host("h1", "fd00:1::11", "rack", "r1").
		host("h2", "fd00:1::12", "rack", "r1").
		device(api.Device{Name: "tor1", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}, ASN: 65101,
			Links: []api.DeviceLink{link("", "fd00:1::1/64", ""), link("spine1", "fd00:ff::1/127", "fd00:ff::"),
				link("spine1", "fd00:ff::3/127", "fd00:ff::2")}}).
		device(api.Device{Name: "spine1", Kind: api.DeviceSpine, ASN: 65100})
	return b.snap
}

// dualStack is a dual-stack fabric: network "pods" on 10.0.0.0/8 and its
// IPv6 twin "pods6" on a /48 ULA with the same levels (rack, host, tenant,
// segment; 48 endpoint bits in v6), hosts with an IPv4 and an IPv6 underlay
// address, top-of-racks with a host link and an uplink in each family.
func dualStack(tb testing.TB) api.Snapshot {
	b := newBuilder(tb).
		network("pods", "10.0.0.0/8", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 4},
			plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4}).
		network("pods6", "fd00:1234:5678::/48", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 12},
			plan.Field{Name: "tenant", Bits: 8}, plan.Field{Name: "segment", Bits: 8}).
		host("h1", "192.168.1.11", "rack", "r1").ip6("fd00:1::11").
		host("h2", "192.168.1.12", "rack", "r1").ip6("fd00:1::12").
		host("h3", "192.168.2.13", "rack", "r2").ip6("fd00:2::13").
		host("h4", "192.168.2.14", "rack", "r2").ip6("fd00:2::14").
		device(api.Device{Name: "tor1", Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}, ASN: 65101,
			Links: []api.DeviceLink{link("", "192.168.1.1/24", ""), link("", "fd00:1::1/64", ""),
				link("spine1", "172.16.0.1/31", "172.16.0.0"), link("spine1", "fd00:ff::1/127", "fd00:ff::")}}).
		device(api.Device{Name: "tor2", Kind: api.DeviceToR, Group: map[string]string{"rack": "r2"}, ASN: 65102,
			Links: []api.DeviceLink{link("", "192.168.2.1/24", ""), link("", "fd00:2::1/64", ""),
				link("spine1", "172.16.0.3/31", "172.16.0.2"), link("spine1", "fd00:ff::3/127", "fd00:ff::2")}}).
		device(api.Device{Name: "spine1", Kind: api.DeviceSpine, ASN: 65100}).
		endpoints("pods", 4).
		endpoints("pods6", 4)
	return b.snap
}
