package hoststate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/plan"
)

// h1Underlay is what h1 of a lab has: eth0 on the hosts' subnet, lo, the
// gateway link, a docker bridge with one container port, and an endpoint
// veth per local address of the snapshot. Its neighbour table knows h2
// (and, when all, every other host).
func h1Underlay(snap api.Snapshot, all bool) *Underlay {
	u := &Underlay{Links: []Link{
		{Name: "lo", Kind: "device", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}},
		{Name: "eth0", Kind: "veth", Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.0.1/24"), netip.MustParsePrefix("fe80::1/64")}},
		{Name: GatewayLink, Kind: "dummy", Addrs: []netip.Prefix{netip.MustParsePrefix("169.254.1.1/32")}},
		{Name: "docker0", Kind: "bridge", Addrs: []netip.Prefix{netip.MustParsePrefix("172.17.0.1/16")}},
		{Name: "veth9dock", Kind: "veth", Master: "docker0"},
	}}
	for _, a := range snap.Addresses {
		if a.Host == "h1" && a.Interface != "" && !slices.ContainsFunc(u.Links, func(l Link) bool { return l.Name == a.Interface }) {
			u.Links = append(u.Links, Link{Name: a.Interface, Kind: "veth", Addrs: []netip.Prefix{netip.MustParsePrefix("fe80::c/64")}})
		}
	}
	for _, h := range snap.Hosts {
		if h.Name == "h1" || (!all && h.Name != "h2") {
			continue
		}
		u.Neighbors = append(u.Neighbors, Neighbor{IP: h.IP, Link: "eth0", MAC: hostMAC(h.IP)})
	}
	return u
}

// hostMAC is the MAC of a lab host's eth0: 02:00 and its IPv4 address.
func hostMAC(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

func (l *lab) computeOn(host string, mode Mode, u *Underlay) State {
	l.t.Helper()
	st, err := Compute(l.snap, host, Options{Mode: mode, Underlay: u})
	if err != nil {
		l.t.Fatal(err)
	}
	return st
}

// A hostile (or broken) store: pools, hosts and interfaces that romanad
// refuses today but an older romanad, a hand-edited etcd or an attacker
// with store access could leave there. h1's agent computes no route into a
// special range, via an address it may not use or to a device it may not
// use, and says why.
func TestHostileSnapshot(t *testing.T) {
	type check struct {
		dst  string // a route to dst must not exist ...
		why  string // ... and a refusal or problem must say this
		keep bool   // with the underlay unknown, the route stays (only the kernel can tell)
	}
	slot := func(l *lab, name, ip string, id uint64) {
		l.addHost(name, id)
		l.snap.Hosts[len(l.snap.Hosts)-1].IP = netip.MustParseAddr(ip)
	}
	addr := func(l *lab, ep uint64, iface string) {
		a := l.address(1, 1, 0, ep)
		a.Interface = iface
		l.snap.Addresses = append(l.snap.Addresses, a)
	}
	for _, tc := range []struct {
		name   string
		mutate func(l *lab)
		checks []check
	}{
		{"pool of half the internet with an attacker's host in it", func(l *lab) {
			n := api.Network{Name: "half", CIDR: "128.0.0.0/1", Fields: []plan.Field{{Name: "host", Bits: 2}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
			l.snap.Networks = append(l.snap.Networks, n)
			p, _ := plan.Parse(n.Spec())
			c, _ := p.HostCIDR(plan.Loc{Host: 2})
			l.snap.Hosts = append(l.snap.Hosts, api.Host{Name: "evil", IP: netip.MustParseAddr("192.168.0.66"),
				Slots: []api.HostSlot{{Network: "half", Loc: plan.Loc{Host: 2}, CIDR: c}}})
		}, []check{{dst: "192.0.0.0/3", why: `network "half": pool 128.0.0.0/1 is too wide`}}},
		{"loopback pool", func(l *lab) {
			l.snap.Networks = append(l.snap.Networks, api.Network{Name: "lo", CIDR: "127.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}})
		}, []check{{why: "overlaps loopback 127.0.0.0/8"}}},
		{"link-local pool", func(l *lab) {
			l.snap.Networks = append(l.snap.Networks, api.Network{Name: "ll", CIDR: "169.254.0.0/16", Fields: []plan.Field{{Name: "host", Bits: 4}, {Name: "tenant", Bits: 2}, {Name: "segment", Bits: 2}}})
		}, []check{{why: "the endpoints' gateway 169.254.1.1"}}},
		{"host at loopback", func(l *lab) { slot(l, "h9", "127.0.0.1", 9) },
			[]check{{dst: "10.9.0.0/16", why: "next hop: ip 127.0.0.1 is not a usable underlay address: it is in loopback"}}},
		{"host at multicast", func(l *lab) { slot(l, "h9", "224.0.0.1", 9) },
			[]check{{dst: "10.9.0.0/16", why: "it is in multicast"}}},
		{"host at broadcast", func(l *lab) { slot(l, "h9", "255.255.255.255", 9) },
			[]check{{dst: "10.9.0.0/16", why: "the broadcast address"}}},
		{"host at the gateway", func(l *lab) { slot(l, "h9", "169.254.1.1", 9) },
			[]check{{dst: "10.9.0.0/16", why: "it is in link-local 169.254.0.0/16"}}},
		{"host at unspecified", func(l *lab) { slot(l, "h9", "0.0.0.0", 9) },
			[]check{{dst: "10.9.0.0/16", why: "the unspecified address"}}},
		{"host inside the pool", func(l *lab) { slot(l, "h9", "10.1.16.1", 9) },
			[]check{{dst: "10.9.0.0/16", why: `next hop 10.1.16.1 is in network "net1" (10.0.0.0/8)`}}},
		{"host off every connected subnet", func(l *lab) { slot(l, "h9", "203.0.113.9", 9) },
			[]check{{dst: "10.9.0.0/16", why: "next hop 203.0.113.9 is on no subnet this host is directly connected to", keep: true}}},
		{"host at another address of this host", func(l *lab) { slot(l, "h9", "172.17.0.1", 9) },
			[]check{{dst: "10.9.0.0/16", why: "next hop 172.17.0.1 is an address of this host", keep: true}}},
		{"endpoint on eth0", func(l *lab) { addr(l, 9, "eth0") },
			[]check{{dst: "10.1.16.9/32", why: `interface "eth0" is not an endpoint interface`}}},
		{"endpoint on lo", func(l *lab) { addr(l, 9, "lo") },
			[]check{{dst: "10.1.16.9/32", why: `interface "lo" is not an endpoint interface`}}},
		{"endpoint on the gateway link", func(l *lab) { addr(l, 9, GatewayLink) },
			[]check{{dst: "10.1.16.9/32", why: "Romana's own host links"}}},
		{"endpoint on a docker container's port", func(l *lab) { addr(l, 9, "veth9dock") },
			[]check{{dst: "10.1.16.9/32", why: "device veth9dock is not an endpoint veth: it is enslaved to docker0", keep: true}}},
		{"endpoint on a veth holding an address", func(l *lab) {
			addr(l, 9, "rv-up")
		}, []check{{dst: "10.1.16.9/32", why: "device rv-up is not an endpoint veth: it holds the address 192.168.1.1/24", keep: true}}},
		{"pool over the underlay subnet", func(l *lab) {
			n := api.Network{Name: "under", CIDR: "192.168.0.128/25", Fields: []plan.Field{{Name: "host", Bits: 2}, {Name: "tenant", Bits: 1}, {Name: "segment", Bits: 1}}}
			l.snap.Networks = append(l.snap.Networks, n)
			p, _ := plan.Parse(n.Spec())
			c, _ := p.HostCIDR(plan.Loc{Host: 1})
			l.snap.Hosts[0].Slots = append(l.snap.Hosts[0].Slots, api.HostSlot{Network: "under", Loc: plan.Loc{Host: 1}, CIDR: c})
			ip, _ := p.Address(plan.Loc{Host: 1}, 1, 0, 1)
			l.snap.Addresses = append(l.snap.Addresses, api.Address{Name: "under1", IP: ip, Network: "under", Host: "h1", Tenant: "acme", Segment: "default", Interface: "rv-under1"})
		}, []check{{dst: "192.168.0.169/32", why: "destination overlaps this host's underlay subnet 192.168.0.0/24 (link eth0)", keep: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := demoLab(t)
			tc.mutate(l)
			u := h1Underlay(l.snap, true)
			u.Links = append(u.Links, Link{Name: "rv-up", Kind: "veth", Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.1/24")}})
			for _, known := range []bool{true, false} {
				var st State
				if known {
					st = l.computeOn("h1", ModeFlat, u)
				} else {
					st = l.compute("h1", ModeFlat)
				}
				said := strings.Join(st.Problems, "\n")
				for _, r := range st.Refused {
					said += "\n" + r.String()
				}
				for _, c := range tc.checks {
					if !known && c.keep {
						continue
					}
					if c.dst != "" && slices.ContainsFunc(st.Routes, func(r Route) bool { return r.Dst.String() == c.dst }) {
						t.Errorf("underlay known=%v: a route to %s was computed:\n%s", known, c.dst, st)
					}
					if !strings.Contains(said, c.why) {
						t.Errorf("underlay known=%v: nothing says %q:\n%s", known, c.why, said)
					}
				}
				// Whatever was refused, every route left is one the host may use.
				for _, r := range st.Routes {
					if r.Dev != "" {
						if err := api.CheckEndpointInterface(r.Dev); err != nil {
							t.Errorf("route %s: %v", r, err)
						}
						continue
					}
					if err := api.CheckHostIP(r.Via); err != nil || netip.MustParsePrefix("10.0.0.0/8").Contains(r.Via) {
						t.Errorf("route %s: next hop not usable (%v)", r, err)
					}
				}
			}
		})
	}
}

// The hostile snapshot, all at once, as the agent computes it with its
// underlay known: a golden file, and a ruleset the kernel accepts.
func TestHostileGolden(t *testing.T) {
	l := demoLab(t)
	for i, ip := range []string{"127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.1.1", "10.1.16.1", "203.0.113.9"} {
		l.addHost(fmt.Sprintf("evil%d", i), uint64(10+i))
		l.snap.Hosts[len(l.snap.Hosts)-1].IP = netip.MustParseAddr(ip)
	}
	for i, iface := range []string{"eth0", "lo", GatewayLink, "veth9dock"} {
		a := l.address(1, 1, 0, uint64(20+i))
		a.Interface = iface
		l.snap.Addresses = append(l.snap.Addresses, a)
	}
	l.snap.Networks = append(l.snap.Networks, api.Network{Name: "half", CIDR: "128.0.0.0/1", Fields: []plan.Field{{Name: "host", Bits: 2}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}})
	st := l.computeOn("h1", ModeFlat, h1Underlay(l.snap, true))
	expect.Golden(t, "hostile-h1.txt", st.String())
	nftCheck(t, st.Firewall)
}

// In flat mode with the underlay known, each remote host's block is tied
// to its host's MAC; a host whose MAC is not known yet is to be resolved,
// and its block is dropped from the underlay meanwhile.
func TestUnderlayGolden(t *testing.T) {
	l := demoLab(t)
	st := l.computeOn("h1", ModeFlat, h1Underlay(l.snap, false))
	if want := []netip.Addr{netip.MustParseAddr("192.168.0.3")}; !slices.Equal(st.Resolve, want) {
		t.Errorf("resolve %v, want %v", st.Resolve, want)
	}
	expect.Golden(t, "flat-underlay-h1.txt", st.String())
	nftCheck(t, st.Firewall)
	fab := l.computeOn("h1", ModeFabric, h1Underlay(l.snap, false))
	if len(fab.Firewall.Sets) != 0 || len(fab.Resolve) != 0 {
		t.Errorf("fabric mode: sets %v, resolve %v; want none", fab.Firewall.Sets, fab.Resolve)
	}
	expect.Golden(t, "fabric-underlay-h1.txt", fab.String())
	nftCheck(t, fab.Firewall)
}

// What the anti-spoofing rules mean, packet by packet: a remote host's
// block passes only from that host's MAC; this host's block only from an
// endpoint link; a pool address no host holds never from the underlay.
func TestUnderlaySemantics(t *testing.T) {
	l := demoLab(t)
	l.tenant("wide", 4, api.IsolationNone, "default")
	dst := l.endpoint(1, 4, 0, 1).IP // open to anyone: isolation passes
	ep := func(host, tenant uint64) netip.Addr { return l.address(host, tenant, 0, 7).IP }
	h2mac, h3mac, evil := hostMAC(netip.MustParseAddr("192.168.0.2")), hostMAC(netip.MustParseAddr("192.168.0.3")), "02:00:de:ad:be:ef"
	flat := l.computeOn("h1", ModeFlat, h1Underlay(l.snap, false)).Firewall
	fabric := l.computeOn("h1", ModeFabric, h1Underlay(l.snap, false)).Firewall
	for _, tc := range []struct {
		name     string
		p        packet
		flat, fb string
	}{
		{"h2's endpoint from h2", packet{saddr: ep(2, 1), iif: "eth0", mac: h2mac}, "accept", "accept"},
		{"h2's block from a third machine", packet{saddr: ep(2, 1), iif: "eth0", mac: evil}, "drop", "accept"},
		{"h2's block from h3", packet{saddr: ep(2, 1), iif: "eth0", mac: h3mac}, "drop", "accept"},
		{"h3 (not resolved yet) from h3", packet{saddr: ep(3, 1), iif: "eth0", mac: h3mac}, "drop", "accept"},
		{"a block no host holds", packet{saddr: netip.MustParseAddr("10.77.16.7"), iif: "eth0", mac: evil}, "drop", "accept"},
		{"this host's block from the uplink", packet{saddr: ep(1, 1), iif: "eth0", mac: evil}, "drop", "drop"},
		{"this host's block from an endpoint", packet{saddr: ep(1, 1), iif: "romana001010007", mac: "02:00:00:00:00:07"}, "accept", "accept"},
		{"this host's block from a docker container", packet{saddr: ep(1, 1), iif: "docker0", mac: evil}, "drop", "drop"},
		{"h2's block from a local endpoint (reverse path fails)", packet{saddr: ep(2, 1), iif: "romana001010007", mac: evil, rpfFails: true}, "drop", "drop"},
		{"outside the pool from the uplink", packet{saddr: netip.MustParseAddr("192.168.0.9"), iif: "eth0", mac: evil}, "accept", "accept"},
	} {
		tc.p.daddr = dst
		if got := evaluatePacket(t, flat, tc.p); got != tc.flat {
			t.Errorf("flat: %s (%s from %s on %s): %s, want %s", tc.name, tc.p.saddr, tc.p.mac, tc.p.iif, got, tc.flat)
		}
		if got := evaluatePacket(t, fabric, tc.p); got != tc.fb {
			t.Errorf("fabric: %s (%s from %s on %s): %s, want %s", tc.name, tc.p.saddr, tc.p.mac, tc.p.iif, got, tc.fb)
		}
	}

	// With chains, a steered packet (its mark set by steering after its own
	// checks) passes from another host's MAC: it comes back from a service
	// function.
	l.snap.Chains = []api.Chain{{Name: "c", ID: 1, Tenant: "acme", Segment: "default"}}
	steered := l.computeOn("h1", ModeFlat, h1Underlay(l.snap, false)).Firewall
	p := packet{saddr: ep(2, 1), daddr: dst, iif: "eth0", mac: h3mac}
	if got := evaluatePacket(t, steered, p); got != "drop" {
		t.Errorf("with chains, unmarked: %s, want drop", got)
	}
	p.mark = MarkBit | 0x12
	if got := evaluatePacket(t, steered, p); got != "accept" {
		t.Errorf("with chains, marked by steering: %s, want accept", got)
	}

	// A chain through a function on h3: h3 forwards other hosts' packets
	// to this host unmarked (its last function sends them on), so h3 may
	// send any pool source; a third machine still may not, and h2 still
	// only its own block.
	fn := l.endpoint(3, 1, 0, 9)
	l.snap.Chains = []api.Chain{{Name: "c", ID: 1, Tenant: "acme", Segment: "default", Via: []netip.Addr{fn.IP}}}
	st := l.computeOn("h1", ModeFlat, h1Underlay(l.snap, true))
	nftCheck(t, st.Firewall)
	if want := []string{"10.0.0.0/8 . " + h3mac, "10.2.0.0/16 . " + h2mac}; !slices.Equal(st.Firewall.Sets[0].Elements, want) {
		t.Errorf("elements %q, want %q", st.Firewall.Sets[0].Elements, want)
	}
	for _, tc := range []struct {
		p    packet
		want string
	}{
		{packet{saddr: ep(2, 1), daddr: dst, iif: "eth0", mac: h3mac}, "accept"},
		{packet{saddr: ep(3, 1), daddr: dst, iif: "eth0", mac: h3mac}, "accept"},
		{packet{saddr: ep(3, 1), daddr: dst, iif: "eth0", mac: h2mac}, "drop"},
		{packet{saddr: ep(2, 1), daddr: dst, iif: "eth0", mac: evil}, "drop"},
	} {
		if got := evaluatePacket(t, st.Firewall, tc.p); got != tc.want {
			t.Errorf("chain through h3: %s from %s: %s, want %s", tc.p.saddr, tc.p.mac, got, tc.want)
		}
	}
}
