// Package fabric computes what the routers of a routed fabric need to carry
// Romana's addresses, and what each host announces over BGP and to whom.
// Because an address's topology bits say where its host sits, a
// top-of-rack needs one route per host of its group and a spine one per
// group (rack), however many endpoints there are. It is pure: no I/O, no
// clock, no globals; its input is romanad's snapshot.
package fabric

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
	"github.com/romana/romana/plan"
)

// Route is one static route of a device. More than one next hop is an
// equal-cost multipath (ECMP) route.
type Route struct {
	Dst netip.Prefix
	Via []netip.Addr // sorted, at least one
	// Note says what the route is for ("host h1", "rack=r1 via tor1").
	Note string
}

func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	for _, v := range r.Via {
		b.WriteString(" via ")
		b.WriteString(v.String())
	}
	return b.String()
}

// Table is what one device needs: its static routes and, for a BGP
// fabric, the aggregates it announces to its upstream peers.
type Table struct {
	Device string
	Kind   string
	Group  string // the served group as "key=value,...", "" for a spine
	// Routes are sorted by destination; no two share one.
	Routes []Route
	// Announce is what a top-of-rack announces to its spines in a BGP
	// fabric instead of its hosts' CIDRs: the CIDR of its group in each
	// network whose plan has the group's topology level, else each host's
	// CIDR. Sorted. Empty for a spine.
	Announce []netip.Prefix
	// Problems lists inputs that were skipped or look wrong. They never
	// stop the rest from being computed.
	Problems []string
}

// ECMPRoutes counts the routes with more than one next hop.
func (t Table) ECMPRoutes() int {
	n := 0
	for _, r := range t.Routes {
		if len(r.Via) > 1 {
			n++
		}
	}
	return n
}

// world is the snapshot indexed for computation.
type world struct {
	nets     []*network // sorted by name; only usable ones (package model)
	hosts    []api.Host // sorted by name
	devices  map[string]api.Device
	tors     []api.Device // sorted by name
	invalid  map[string]error
	problems map[string]bool
}

type network = model.Network

func (w *world) problem(format string, args ...any) {
	w.problems[fmt.Sprintf(format, args...)] = true
}

func (w *world) sortedProblems() []string {
	out := slices.Collect(maps.Keys(w.problems))
	slices.Sort(out)
	return out
}

func index(m *model.Model) *world {
	w := &world{devices: map[string]api.Device{}, invalid: map[string]error{}, problems: map[string]bool{}}
	for _, p := range slices.Concat(m.NetworkProblems(), m.DuplicateProblems(api.KindDevice)) {
		w.problem("%s", p)
	}
	w.nets = m.Networks()
	w.hosts = m.Hosts()
	for _, d := range m.Devices() {
		v, err := d.Validate()
		if err != nil {
			w.problem("%v; skipped", err)
			w.invalid[d.Name] = err
			continue
		}
		if _, dup := w.devices[v.Name]; dup {
			w.problem("device %q: listed twice; using the first", v.Name)
			continue
		}
		w.devices[v.Name] = v
		if v.Kind == api.DeviceToR {
			w.tors = append(w.tors, v)
		}
	}
	slices.SortFunc(w.tors, func(a, b api.Device) int { return strings.Compare(a.Name, b.Name) })
	return w
}

// Compute returns the table of one device. It fails only when the device
// is not in the snapshot (or is invalid); other problems are listed in
// Table.Problems.
func Compute(snap api.Snapshot, device string) (Table, error) {
	w := index(model.New(snap))
	d, ok := w.devices[device]
	if !ok {
		if err := w.invalid[device]; err != nil {
			return Table{}, err
		}
		return Table{}, fmt.Errorf("device %q is not in the topology", device)
	}
	t := Table{Device: d.Name, Kind: d.Kind, Group: GroupString(d.Group)}
	var rs []Route
	switch d.Kind {
	case api.DeviceToR:
		rs, t.Announce = w.tor(d)
	case api.DeviceSpine:
		rs = w.spine(d)
	}
	t.Routes = merge(rs)
	t.Problems = w.sortedProblems()
	return t, nil
}

// GroupString renders a group selector as "key=value,..." sorted by key.
func GroupString(g map[string]string) string {
	keys := slices.Sorted(maps.Keys(g))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + g[k]
	}
	return strings.Join(parts, ",")
}

// Serves reports whether a top-of-rack's group selects a host's labels.
func Serves(d api.Device, labels map[string]string) bool {
	if d.Kind != api.DeviceToR || len(d.Group) == 0 {
		return false
	}
	for k, v := range d.Group {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// members returns the hosts a top-of-rack serves, by name.
func (w *world) members(d api.Device) []api.Host {
	var out []api.Host
	for _, h := range w.hosts {
		if Serves(d, h.Labels) {
			out = append(out, h)
		}
	}
	return out
}

// slot returns the host's slot in network n when it is consistent with
// the network's plan.
func (w *world) slot(h api.Host, n *network) (api.HostSlot, bool) {
	for _, s := range h.Slots {
		if s.Network != n.Name {
			continue
		}
		if c, err := n.Plan.HostCIDR(s.Loc); err != nil || c != s.CIDR {
			w.problem("host %q: slot in network %q: cidr %s does not match location %s; skipped", h.Name, n.Name, s.CIDR, s.Loc)
			return api.HostSlot{}, false
		}
		return s, true
	}
	return api.HostSlot{}, false
}

// aggDepth is how many leading topology levels of p a group selector pins:
// the group's hosts then share the CIDR of that group. It is 0 (no
// aggregation) unless every key of the selector is one of those levels,
// because another key could leave some hosts of the group to another device.
func aggDepth(p *plan.Plan, group map[string]string) int {
	j := 0
	for i, lv := range p.Levels() {
		if _, ok := group[lv.Name]; !ok {
			break
		}
		j = i + 1
	}
	if j != len(group) {
		return 0
	}
	return j
}

// aggregate is a prefix a top-of-rack stands for, with what it covers.
type aggregate struct {
	prefix netip.Prefix
	note   string
}

// aggregates returns what top-of-rack d stands for in network n: its
// group's CIDR when the group pins topology levels, else each served
// host's CIDR.
func (w *world) aggregates(d api.Device, n *network, members []api.Host) []aggregate {
	depth := aggDepth(n.Plan, d.Group)
	seen := map[netip.Prefix]bool{}
	var out []aggregate
	for _, h := range members {
		s, ok := w.slot(h, n)
		if !ok {
			continue
		}
		a := aggregate{prefix: s.CIDR, note: "host " + h.Name}
		if depth > 0 {
			g, err := n.Plan.GroupCIDR(s.Loc.Groups[:depth])
			if err != nil {
				w.problem("host %q: group of slot %s in network %q: %v; skipped", h.Name, s.Loc, n.Name, err)
				continue
			}
			a = aggregate{prefix: g, note: GroupString(d.Group)}
		}
		if !seen[a.prefix] {
			seen[a.prefix] = true
			out = append(out, a)
		}
	}
	return out
}

// tor computes a top-of-rack's routes: one per served host and network,
// "<host CIDR> via <host IP>", and one per network toward its spines,
// "<pool> via <spine ends of its uplinks>".
func (w *world) tor(d api.Device) ([]Route, []netip.Prefix) {
	members := w.members(d)
	if len(members) == 0 {
		w.problem("device %q: no host has the labels %s", d.Name, GroupString(d.Group))
	}
	var rs []Route
	var announce []netip.Prefix
	for _, n := range w.nets {
		for _, h := range members {
			s, ok := w.slot(h, n)
			if !ok {
				continue
			}
			ip := h.UnderlayIP(n.Plan.Is4())
			if !ip.IsValid() {
				w.problem("host %q: no %s underlay address to be the next hop of its block %s in network %q; skipped", h.Name, familyName(n.Plan.Is4()), s.CIDR, n.Name)
				continue
			}
			if !onHostLink(d, ip) {
				w.problem("host %q: ip %s is on none of device %q's host links; its route may not resolve", h.Name, ip, d.Name)
			}
			rs = append(rs, Route{Dst: s.CIDR, Via: []netip.Addr{ip}, Note: "host " + h.Name})
		}
		for _, a := range w.aggregates(d, n, members) {
			announce = append(announce, a.prefix)
		}
		var via []netip.Addr
		var spines []string
		for _, p := range w.linkedPeers(d) {
			if p.Kind != api.DeviceSpine {
				continue
			}
			nh := family(w.nextHops(d, p), n.Plan.Is4())
			if len(nh) > 0 {
				via = append(via, nh...)
				spines = append(spines, p.Name)
			}
		}
		if len(via) > 0 {
			rs = append(rs, Route{Dst: n.Plan.Prefix(), Via: via, Note: "pool " + n.Name + " via " + strings.Join(spines, ",")})
		}
	}
	slices.SortFunc(announce, comparePrefix)
	return rs, slices.Compact(announce)
}

// spine computes a spine's routes: for every top-of-rack linked to it,
// each of its aggregates via the top-of-rack's ends of the links. Two
// top-of-racks standing for one aggregate (a redundant pair) share one
// ECMP route.
func (w *world) spine(d api.Device) []Route {
	type agg struct {
		route Route
		tors  []string
	}
	by := map[netip.Prefix]*agg{}
	for _, tor := range w.tors {
		nhs := w.nextHops(d, tor)
		if len(nhs) == 0 {
			continue
		}
		members := w.members(tor)
		for _, n := range w.nets {
			via := family(nhs, n.Plan.Is4())
			if len(via) == 0 {
				if len(members) > 0 {
					w.problem("device %q: no %s link to %q; network %q not routed through it", d.Name, familyName(n.Plan.Is4()), tor.Name, n.Name)
				}
				continue
			}
			for _, a := range w.aggregates(tor, n, members) {
				g, ok := by[a.prefix]
				if !ok {
					g = &agg{route: Route{Dst: a.prefix, Note: a.note}}
					by[a.prefix] = g
				}
				g.route.Via = append(g.route.Via, via...)
				g.tors = append(g.tors, tor.Name)
			}
		}
	}
	var rs []Route
	for _, g := range by {
		g.route.Note += " via " + strings.Join(g.tors, ",")
		rs = append(rs, g.route)
	}
	return rs
}

func familyName(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}

func family(as []netip.Addr, is4 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if a.Is4() == is4 {
			out = append(out, a)
		}
	}
	return out
}

// onHostLink reports whether ip is on one of d's host links, or d
// describes no host link of ip's family (then nothing can be checked).
func onHostLink(d api.Device, ip netip.Addr) bool {
	any := false
	for _, l := range d.Links {
		if l.Peer != "" || l.Local.Addr().Is4() != ip.Is4() {
			continue
		}
		any = true
		if l.Local.Contains(ip) {
			return true
		}
	}
	return !any
}

// linkedPeers returns the devices linked to d, from either side, by name.
func (w *world) linkedPeers(d api.Device) []api.Device {
	names := map[string]bool{}
	for _, l := range d.Links {
		if l.Peer != "" {
			names[l.Peer] = true
		}
	}
	for _, o := range w.devices {
		for _, l := range o.Links {
			if l.Peer == d.Name {
				names[o.Name] = true
			}
		}
	}
	var out []api.Device
	for _, n := range slices.Sorted(maps.Keys(names)) {
		p, ok := w.devices[n]
		if !ok {
			w.problem("device %q: link to unknown device %q; skipped", d.Name, n)
			continue
		}
		out = append(out, p)
	}
	return out
}

// nextHops returns b's addresses on the links between a and b, each link
// described by either device (a's Remote, or b's Local on the same subnet).
func (w *world) nextHops(a, b api.Device) []netip.Addr {
	var out []netip.Addr
	covered := map[netip.Prefix]bool{}
	for _, l := range a.Links {
		if l.Peer != b.Name {
			continue
		}
		sub := l.Local.Masked()
		covered[sub] = true
		if l.Remote.IsValid() {
			out = append(out, l.Remote)
			continue
		}
		found := false
		for _, m := range b.Links {
			if m.Peer == a.Name && m.Local.Masked() == sub {
				out, found = append(out, m.Local.Addr()), true
			}
		}
		if !found {
			w.problem("device %q: link %s to %q has no remote address and %q does not describe it; skipped", a.Name, l.Local, b.Name, b.Name)
		}
	}
	for _, m := range b.Links {
		if m.Peer == a.Name && !covered[m.Local.Masked()] {
			out = append(out, m.Local.Addr())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// merge joins routes to one destination into one route with the union of
// their next hops (ECMP) and notes, sorted by destination.
func merge(rs []Route) []Route {
	by := map[netip.Prefix]*Route{}
	var order []netip.Prefix
	for _, r := range rs {
		m, ok := by[r.Dst]
		if !ok {
			c := Route{Dst: r.Dst, Via: slices.Clone(r.Via), Note: r.Note}
			by[r.Dst] = &c
			order = append(order, r.Dst)
			continue
		}
		m.Via = append(m.Via, r.Via...)
		if !slices.Contains(strings.Split(m.Note, "; "), r.Note) {
			m.Note += "; " + r.Note
		}
	}
	slices.SortFunc(order, comparePrefix)
	out := make([]Route, 0, len(order))
	for _, d := range order {
		r := by[d]
		slices.SortFunc(r.Via, netip.Addr.Compare)
		r.Via = slices.Compact(r.Via)
		out = append(out, *r)
	}
	return out
}
