package hoststate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/api"
)

// Underlay is what the agent found on this host's own links and in its
// neighbour table. Compute uses it for two things: to refuse routes the
// host must not install (a next hop not on a directly connected subnet, a
// device that is not an endpoint veth, a destination in the host's own
// underlay subnets), and, in flat mode, to tie each remote host's blocks to
// that host's link-layer address (anti-spoofing on the underlay). It is
// plain data; the agent reads it from the kernel at every reconciliation.
type Underlay struct {
	Links     []Link
	Neighbors []Neighbor
}

// Link is one network interface of the host.
type Link struct {
	Name string
	// Kind is the link type as netlink names it ("veth", "dummy",
	// "bridge", "device" for a physical NIC or loopback, ...).
	Kind string
	// Master is the bridge or bond the link is enslaved to, "" if none.
	Master string
	// Addrs are the link's addresses with their prefix lengths.
	Addrs []netip.Prefix
}

// Neighbor is an entry of the host's neighbour table (ARP or NDP) that
// holds a link-layer address.
type Neighbor struct {
	IP   netip.Addr
	Link string
	MAC  string // lowercase, colon-separated: "02:00:c0:a8:4d:02"
}

// Refusal is a route Compute left out because the host must not install
// it, with the reason.
type Refusal struct {
	Route  Route
	Reason string
}

func (r Refusal) String() string { return r.Route.String() + ": " + r.Reason }

// EndpointLink reports whether l may carry an endpoint's route: a veth
// with an endpoint interface name, enslaved to nothing, holding no address
// but IPv6 link-local ones (which the kernel gives every veth). A host's
// uplink, even when it is a veth (as in the lab simulator), holds the
// host's address; a container port of a bridge has a master.
func (l Link) EndpointLink() (bool, string) {
	switch {
	case api.CheckEndpointInterface(l.Name) != nil:
		return false, "its name is not an endpoint interface's"
	case l.Kind != "veth":
		return false, fmt.Sprintf("it is a %s, not a veth", cmp.Or(l.Kind, "link of unknown kind"))
	case l.Master != "":
		return false, "it is enslaved to " + l.Master
	}
	for _, a := range l.Addrs {
		if !a.Addr().Is6() || !a.Addr().IsLinkLocalUnicast() {
			return false, "it holds the address " + a.String()
		}
	}
	return true, ""
}

// connected is a subnet this host is directly attached to: the prefix of
// one of its addresses, on a link that is not an endpoint veth.
type connected struct {
	prefix netip.Prefix
	link   string
}

// underlay is Underlay indexed for Compute.
type underlay struct {
	links     map[string]Link
	connected []connected // longest prefix first
	local     map[netip.Addr]bool
	neighbors map[netip.Addr][]Neighbor
}

func indexUnderlay(u *Underlay) *underlay {
	if u == nil {
		return nil
	}
	x := &underlay{links: map[string]Link{}, local: map[netip.Addr]bool{}, neighbors: map[netip.Addr][]Neighbor{}}
	for _, l := range u.Links {
		x.links[l.Name] = l
		for _, a := range l.Addrs {
			x.local[a.Addr().Unmap()] = true
		}
		if ok, _ := l.EndpointLink(); ok || l.Name == GatewayLink {
			continue
		}
		for _, a := range l.Addrs {
			if _, special := api.SpecialRange(netip.PrefixFrom(a.Addr(), a.Addr().BitLen())); special {
				continue // loopback, link-local: no underlay
			}
			x.connected = append(x.connected, connected{prefix: a.Masked(), link: l.Name})
		}
	}
	slices.SortFunc(x.connected, func(a, b connected) int {
		return cmp.Or(-cmp.Compare(a.prefix.Bits(), b.prefix.Bits()), ComparePrefix(a.prefix, b.prefix), strings.Compare(a.link, b.link))
	})
	for _, n := range u.Neighbors {
		ip := n.IP.Unmap()
		x.neighbors[ip] = append(x.neighbors[ip], n)
	}
	return x
}

// subnetOf returns the connected subnet holding ip (the longest).
func (u *underlay) subnetOf(ip netip.Addr) (connected, bool) {
	for _, c := range u.connected {
		if c.prefix.Contains(ip) {
			return c, true
		}
	}
	return connected{}, false
}

// mac returns the link-layer address of neighbour ip on link (or, if it
// has none there, on any link).
func (u *underlay) mac(ip netip.Addr, link string) string {
	var other string
	for _, n := range u.neighbors[ip] {
		if n.Link == link {
			return strings.ToLower(n.MAC)
		}
		other = cmp.Or(other, strings.ToLower(n.MAC))
	}
	return other
}

// screenRoutes splits routes into those the host may install and those it
// must refuse. It is the last word on every route, whatever the snapshot
// says: romanad screens what it accepts the same way (api/screen.go), but
// a store written some other way must not get past the agent either.
//
// Every route: its destination is in an accepted pool (computed so) and
// overlaps no subnet or address of the host's own (when the underlay is
// known). An endpoint route: its device has an endpoint interface name and,
// when it exists, is an endpoint veth (Link.EndpointLink); a missing device
// is left to the route adapter, which waits for it. A route to another
// host's block: its next hop is a usable underlay address, in no pool, not
// one of this host's own addresses, and on a subnet the host is directly
// connected to (when the underlay is known).
func screenRoutes(routes []Route, in *inputs, u *underlay) (ok []Route, refused []Refusal) {
	for _, r := range routes {
		if why := refuse(r, in, u); why != "" {
			refused = append(refused, Refusal{Route: r, Reason: why})
			continue
		}
		ok = append(ok, r)
	}
	slices.SortFunc(refused, func(a, b Refusal) int {
		return cmp.Or(CompareRoutes(a.Route, b.Route), strings.Compare(a.Reason, b.Reason))
	})
	return ok, refused
}

func refuse(r Route, in *inputs, u *underlay) string {
	if u != nil {
		for _, c := range u.connected {
			if c.prefix.Overlaps(r.Dst) {
				return fmt.Sprintf("destination overlaps this host's underlay subnet %s (link %s)", c.prefix, c.link)
			}
		}
	}
	if r.Dev != "" {
		if err := api.CheckEndpointInterface(r.Dev); err != nil {
			return "device: " + err.Error()
		}
		if u == nil {
			return ""
		}
		if l, found := u.links[r.Dev]; found {
			if ok, why := l.EndpointLink(); !ok {
				return fmt.Sprintf("device %s is not an endpoint veth: %s", r.Dev, why)
			}
		}
		return ""
	}
	via := r.Via
	if why := notUnderlay(via, in); why != "" {
		return why
	}
	if u == nil {
		return ""
	}
	if u.local[via] {
		return fmt.Sprintf("next hop %s is an address of this host", via)
	}
	if _, ok := u.subnetOf(via); !ok {
		return fmt.Sprintf("next hop %s is on no subnet this host is directly connected to", via)
	}
	return ""
}

// notUnderlay says why ip cannot be a next hop on the underlay, judged
// from the snapshot alone: not a usable host address (api.CheckHostIP), or
// inside a pool. "" if it can.
func notUnderlay(ip netip.Addr, in *inputs) string {
	if err := api.CheckHostIP(ip); err != nil {
		return "next hop: " + err.Error()
	}
	for _, n := range in.networks {
		if n.Plan.Prefix().Contains(ip) {
			return fmt.Sprintf("next hop %s is in network %q (%s), not on the underlay", ip, n.Name, n.Plan.Prefix())
		}
	}
	return ""
}

// underlaySets names the sets of remote hosts' blocks with their hosts'
// link-layer addresses (flat mode anti-spoofing).
const (
	UnderlaySet4 = "underlay-v4"
	UnderlaySet6 = "underlay-v6"
)

// underlaySources returns, in flat mode with a known underlay, the sets
// tying each remote host's blocks to that host's link-layer address, and
// the next hops whose link-layer address is not known yet (the agent asks
// the kernel to resolve them; until then their blocks are dropped when
// they arrive from the underlay: fail closed).
//
// A host running a service function of a chain forwards other hosts'
// packets (the chain's sources, from any block) to their destination's
// host, without steering's mark there: it is paired with the whole pool.
// A third machine on the fabric is no such host.
func underlaySources(routes []Route, in *inputs, u *underlay) (sets []Set, resolve []netip.Addr) {
	byMAC := map[string][]netip.Prefix{}
	unresolved := map[netip.Addr]bool{}
	pair := func(ip netip.Addr, p netip.Prefix) {
		c, _ := u.subnetOf(ip)
		mac := u.mac(ip, c.link)
		if mac == "" {
			unresolved[ip] = true
			return
		}
		byMAC[mac] = append(byMAC[mac], p)
	}
	for _, r := range routes {
		if r.Dev == "" {
			pair(r.Via, r.Dst)
		}
	}
	for _, ip := range functionHosts(in) {
		if _, ok := u.subnetOf(ip); !ok || u.local[ip] {
			continue // this host, or one it has no route to
		}
		for _, n := range in.networks {
			if n.Plan.Is4() == ip.Is4() {
				pair(ip, n.Plan.Prefix())
			}
		}
	}
	var v4, v6 []string
	for mac, ps := range byMAC {
		for _, p := range ps {
			if slices.ContainsFunc(ps, func(q netip.Prefix) bool { return q != p && q.Bits() < p.Bits() && q.Contains(p.Addr()) }) || slices.Contains(ps[:slices.Index(ps, p)], p) {
				continue // covered by a wider prefix of the same host, or listed twice
			}
			e := p.String() + " . " + mac
			if p.Addr().Is4() {
				v4 = append(v4, e)
			} else {
				v6 = append(v6, e)
			}
		}
	}
	slices.Sort(v4)
	slices.Sort(v6)
	has4, has6 := false, false
	for _, n := range in.networks {
		has4, has6 = has4 || n.Plan.Is4(), has6 || !n.Plan.Is4()
	}
	if has4 {
		sets = append(sets, Set{Name: UnderlaySet4, KeyType: "ipv4_addr . ether_addr", Interval: true,
			Comment: "flat mode: each remote host's block with its host's link-layer address", Elements: v4})
	}
	if has6 {
		sets = append(sets, Set{Name: UnderlaySet6, KeyType: "ipv6_addr . ether_addr", Interval: true,
			Comment: "flat mode: each remote host's block with its host's link-layer address", Elements: v6})
	}
	for ip := range unresolved {
		resolve = append(resolve, ip)
	}
	slices.SortFunc(resolve, netip.Addr.Compare)
	return sets, resolve
}

// functionHosts returns the underlay addresses of the hosts running a
// service function of some chain (other than this host), of the function's
// family (its host's ip6 for an IPv6 function beside an IPv4 ip), sorted.
func functionHosts(in *inputs) []netip.Addr {
	var out []netip.Addr
	for _, c := range in.m.Chains() {
		for _, v := range c.Via {
			a, ok := in.m.AddressAt(v)
			if !ok || a.Host == in.host.Name {
				continue
			}
			h, ok := in.m.Host(a.Host)
			if !ok {
				continue
			}
			ip := h.UnderlayIP(v.Unmap().Is4()) // the chain's family: its packets' next hop
			if !ip.IsValid() || notUnderlay(ip, in) != "" || slices.Contains(out, ip) {
				continue
			}
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
