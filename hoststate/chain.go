package hoststate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
)

// Service chains (api.Chain) are implemented with policy routing:
//
//   - nftables table inet SteerTable, base chain SteerChain (hook
//     prerouting, priority mangle) decides per packet which chain hop it is
//     on and sets the packet mark Mark(chain id, hop);
//   - one ip rule per hop, "fwmark Mark(id, hop)/MarkMask lookup
//     RouteTable(id, hop)", at priority RulePriority (before main);
//   - in each hop's table a default route to that hop's service function
//     ("via SF dev VETH onlink" when local, "via HOSTIP" when remote), a
//     blackhole (fail-closed, function down) or nothing (fail-open,
//     function down: the lookup falls through to the main table).
//
// The decision is taken once per connection, on its first packet (ct state
// new), and kept in the conntrack mark: connections that existed before a
// chain was added keep their direct path, and connections steered by a
// chain lose their steering (and flow directly) when it is removed. Marks
// are only set on packets whose source is verified (fib saddr . iif) or
// that come back from a service function's own interface; the isolation
// ruleset's anti-spoofing rule skips packets carrying MarkBit, since a
// packet returning from a function arrives on the function's interface,
// not its source's.
const (
	SteerTable = "romana-chain"
	SteerChain = "prerouting"
	// SteerRawChain exempts connections that only pass through from conntrack.
	SteerRawChain = "untracked"
	// MarkBit is set in every mark Romana's steering sets.
	MarkBit uint32 = 0x10000000
	// MarkMask covers MarkBit, the chain id (12 bits) and the hop (4 bits).
	MarkMask uint32 = 0x1000ffff
	// RulePriority is the priority of the steering ip rules.
	RulePriority = 1000
	// TableBase is the first route table id used by chains.
	TableBase = 20000
)

// Mark is the packet mark of a chain's hop (hop 0: past the last function).
func Mark(id uint64, hop int) uint32 { return MarkBit | uint32(id&0xfff)<<4 | uint32(hop&0xf) }

// RouteTable is the route table of a chain's hop (1-based).
func RouteTable(id uint64, hop int) int { return TableBase + int(id)*16 + hop }

// Steering is the desired chain steering state of one host. Empty (no
// rules) means the host owns no steering table, rules or routes. Slices
// are sorted.
type Steering struct {
	// Rules of chain SteerChain, in order.
	Rules []Rule
	// Raw are the rules of chain SteerRawChain (hook prerouting, priority
	// raw): connections passing through this host untracked.
	Raw      []Rule
	IPRules  []IPRule
	Routes   []TableRoute
	Probes   []netip.Addr // local service functions to health-check
	Problems []string
}

// IPRule is "fwmark Mark/Mask lookup Table" at priority RulePriority.
type IPRule struct {
	Mark  uint32
	Table int
}

func (r IPRule) String() string {
	return fmt.Sprintf("priority %d fwmark %#x/%#x lookup %d", RulePriority, r.Mark, MarkMask, r.Table)
}

// TableRoute is the default route of a hop's table: to a service function
// (Via, with Dev when it hangs off a local interface, then onlink) or a
// blackhole. V6 selects the family of the default route.
type TableRoute struct {
	Table     int
	Via       netip.Addr
	Dev       string
	Blackhole bool
	V6        bool
}

func (r TableRoute) String() string {
	def := "default"
	if r.V6 {
		def = "default6"
	}
	switch {
	case r.Blackhole:
		return fmt.Sprintf("table %d blackhole %s", r.Table, def)
	case r.Dev != "":
		return fmt.Sprintf("table %d %s via %s dev %s onlink", r.Table, def, r.Via, r.Dev)
	}
	return fmt.Sprintf("table %d %s via %s", r.Table, def, r.Via)
}

// Empty reports whether the host has no steering at all.
func (s Steering) Empty() bool { return len(s.Rules)+len(s.IPRules)+len(s.Routes) == 0 }

// Script renders the steering table as an nft script.
func (s Steering) Script() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n\tchain %s {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n", SteerTable, SteerChain)
	for _, r := range s.Rules {
		b.WriteString("\t\t" + r.Expr)
		if r.Comment != "" {
			fmt.Fprintf(&b, " comment %q", r.Comment)
		}
		b.WriteString("\n")
	}
	b.WriteString("\t}\n")
	if len(s.Raw) > 0 {
		fmt.Fprintf(&b, "\n\tchain %s {\n\t\ttype filter hook prerouting priority raw; policy accept;\n", SteerRawChain)
		for _, r := range s.Raw {
			b.WriteString("\t\t" + r.Expr)
			if r.Comment != "" {
				fmt.Fprintf(&b, " comment %q", r.Comment)
			}
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// String renders everything, one object per line.
func (s Steering) String() string {
	var b strings.Builder
	for _, r := range s.IPRules {
		fmt.Fprintf(&b, "rule %s\n", r)
	}
	for _, r := range s.Routes {
		fmt.Fprintf(&b, "route %s\n", r)
	}
	for _, p := range s.Probes {
		fmt.Fprintf(&b, "probe %s\n", p)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(&b, "problem %s\n", p)
	}
	if len(s.Rules) > 0 {
		b.WriteString(s.Script())
	}
	return b.String()
}

// hop is one service function of a chain, resolved.
type hop struct {
	ip     netip.Addr
	host   string // "" when the address is not allocated
	iface  string
	hostIP netip.Addr
}

// ComputeSteering returns the steering state of host for the chains in
// snap. alive reports the health of a local service function (nil: all
// alive); remote functions are taken as alive (their own host's agent
// bypasses or blocks them when they die, see docs/chains.md). Problems with
// one chain never stop the others.
func ComputeSteering(snap api.Snapshot, host string, alive func(netip.Addr) bool) (Steering, error) {
	return ComputeSteeringModel(model.New(snap), host, alive)
}

// ComputeSteeringModel is ComputeSteering on an indexed model.
func ComputeSteeringModel(m *model.Model, host string, alive func(netip.Addr) bool) (Steering, error) {
	in, err := index(m, host)
	if err != nil {
		return Steering{}, err
	}
	if alive == nil {
		alive = func(netip.Addr) bool { return true }
	}
	// hostIP holds each host's underlay address per family (api.Host.UnderlayIP):
	// the next hop of a hop on that host for a chain of that family.
	type hostFam struct {
		name string
		is4  bool
	}
	hostIP := map[hostFam]netip.Addr{}
	for _, h := range m.Hosts() {
		for _, is4 := range []bool{true, false} {
			ip := h.UnderlayIP(is4)
			if !ip.IsValid() {
				continue
			}
			if why := notUnderlay(ip, in); why != "" && h.Name != host {
				// Steering would route a hop's traffic "via" it: the remote
				// functions of this host are treated as down instead.
				in.problem("host %q: %s; its service functions are treated as down", h.Name, why)
				continue
			}
			hostIP[hostFam{h.Name, is4}] = ip
		}
	}
	chains := slices.Clone(m.Chains())
	slices.SortFunc(chains, func(a, b api.Chain) int { return cmp.Or(cmp.Compare(a.ID, b.ID), strings.Compare(a.Name, b.Name)) })

	var st Steering
	var entry, sfReturn, raw []Rule
	tables := map[int]TableRoute{} // table -> route (Table 0 in value: empty table)
	tableSet := map[int]uint32{}   // table -> mark
	probes := map[netip.Addr]bool{}
	seenID := map[uint64]string{}
	for _, c := range chains {
		if c.ID == 0 || c.ID > api.MaxChainID {
			in.problem("chain %q: id %d out of range; skipped", c.Name, c.ID)
			continue
		}
		if other, dup := seenID[c.ID]; dup {
			in.problem("chain %q: id %d is also chain %q's; skipped", c.Name, c.ID, other)
			continue
		}
		seenID[c.ID] = c.Name
		if len(c.Via) == 0 || len(c.Via) > api.MaxChainHops {
			in.problem("chain %q: %d service functions; skipped", c.Name, len(c.Via))
			continue
		}
		t, ok := m.Tenant(c.Tenant)
		if !ok {
			in.problem("chain %q: unknown tenant %q; skipped", c.Name, c.Tenant)
			continue
		}
		segID, ok := segmentID(in, c.Tenant, c.Segment)
		if !ok {
			in.problem("chain %q: unknown segment %q of tenant %q; skipped", c.Name, c.Segment, c.Tenant)
			continue
		}
		// A chain is of one family, its functions' (api.Chain.Normalize):
		// it steers the packets of the source segment's networks of that
		// family only.
		is4 := c.Via[0].Unmap().Is4()
		if i := slices.IndexFunc(c.Via, func(v netip.Addr) bool { return v.Unmap().Is4() != is4 }); i >= 0 {
			in.problem("chain %q: via %s and %s are of different families; skipped", c.Name, c.Via[0].Unmap(), c.Via[i].Unmap())
			continue
		}
		hops := make([]hop, len(c.Via))
		for i, v := range c.Via {
			h := hop{ip: v.Unmap()}
			if a, ok := m.AddressAt(h.ip); ok && a.Interface != "" && api.CheckEndpointInterface(a.Interface) == nil {
				h.host, h.iface, h.hostIP = a.Host, a.Interface, hostIP[hostFam{a.Host, is4}]
				if !h.hostIP.IsValid() && a.Host != host {
					in.problem("chain %q: via %s: host %q has no usable %s underlay address; treated as down", c.Name, h.ip, a.Host, famName(is4))
				}
			} else {
				in.problem("chain %q: via %s is not an attached endpoint; treated as down", c.Name, h.ip)
			}
			hops[i] = h
		}
		if h, ok := revisits(hops); !ok {
			in.problem("chain %q: visits host %q twice (its functions there are not consecutive); skipped", c.Name, h)
			continue
		}
		local := func(k int) bool { return hops[k-1].host == host }
		up := func(k int) bool {
			h := hops[k-1]
			if h.host == "" {
				return false
			}
			if h.host == host {
				return alive(h.ip)
			}
			return h.hostIP.IsValid()
		}
		for k := 1; k <= len(hops); k++ {
			if local(k) {
				probes[hops[k-1].ip] = true
			}
		}
		// need records that packets marked for hop k are routed here.
		need := func(k int) {
			if k < 1 || k > len(hops) {
				return
			}
			tbl := RouteTable(c.ID, k)
			tableSet[tbl] = Mark(c.ID, k)
			v6 := hops[k-1].ip.Is6()
			if c.Failure == api.FailClosed {
				if !up(k) {
					tables[tbl] = TableRoute{Table: tbl, Blackhole: true, V6: v6}
					return
				}
			} else {
				for k <= len(hops) && !up(k) {
					k++ // fail-open: bypass dead functions
				}
				if k > len(hops) {
					return // empty table: normal routing
				}
			}
			h := hops[k-1]
			if h.host == host {
				tables[tbl] = TableRoute{Table: tbl, Via: h.ip, Dev: h.iface, V6: v6}
			} else {
				tables[tbl] = TableRoute{Table: tbl, Via: h.hostIP, V6: v6}
			}
		}
		for _, n := range in.networks {
			if !n.Admits(c.Tenant) || n.Plan.Is4() != is4 {
				continue
			}
			proto, _ := family(n)
			m, err := n.Plan.SegmentMatch(t.ID, segID)
			if err != nil {
				in.problem("chain %q: segment %q does not fit network %q: %v", c.Name, c.Segment, n.Name, err)
				continue
			}
			src := fmt.Sprintf("%s saddr & %s == %s", proto, m.Mask, m.Value)
			dsts, err := chainDsts(in, c, n)
			if err != nil {
				in.problem("chain %q: %v; skipped", c.Name, err)
				continue
			}
			l4 := chainL4(c, n)
			for _, dst := range dsts {
				cls := strings.Join(nonEmpty(src, dst, l4), " ")
				// Back from a local function: on to the next hop (or past the last).
				for k := 1; k <= len(hops); k++ {
					if !local(k) {
						continue
					}
					next := k + 1
					if next > len(hops) {
						next = 0
					}
					sfReturn = append(sfReturn, Rule{
						Expr:    fmt.Sprintf("iifname %q %s meta mark set %#x accept", hops[k-1].iface, cls, Mark(c.ID, next)),
						Comment: fmt.Sprintf("chain %s: back from hop %d (%s)", c.Name, k, hops[k-1].ip),
					})
					need(next)
				}
				newConn := fmt.Sprintf("fib saddr . iif oif exists ct state new ct mark & %#x == 0", MarkMask)
				// New connections of local sources: to hop 1.
				if n.mine.IsValid() {
					entry = append(entry, Rule{
						Expr: fmt.Sprintf("%s saddr %s %s %s ct mark set ct mark & %#x | %#x",
							proto, n.mine, cls, newConn, ^MarkMask, Mark(c.ID, 1)),
						Comment: fmt.Sprintf("chain %s: new from %s", c.Name, c.From()),
					})
					need(1)
				}
				// Packets arriving from another host for the first local
				// function of a run of local functions. When neither their
				// source nor their destination is local, this host sees only
				// one direction of the connection: conntrack would call every
				// packet after the SYN invalid, so they go untracked and are
				// steered per packet (the source's host already decided per
				// connection). A local destination is tracked (its replies
				// pass here) and decided on the connection's first packet.
				for k := 1; k <= len(hops); k++ {
					if !local(k) || (k > 1 && local(k-1)) {
						continue
					}
					last := k
					for last < len(hops) && local(last+1) {
						last++
					}
					verified := "fib saddr . iif oif exists"
					if !n.mine.IsValid() {
						raw = append(raw, Rule{Expr: cls + " notrack", Comment: fmt.Sprintf("chain %s: passing through for hop %d", c.Name, k)})
						entry = append(entry, Rule{
							Expr:    fmt.Sprintf("%s %s meta mark set %#x", cls, verified, Mark(c.ID, k)),
							Comment: fmt.Sprintf("chain %s: from another host for hop %d", c.Name, k),
						})
						need(k)
						continue
					}
					away := fmt.Sprintf("%s saddr != %s %s daddr != %s", proto, n.mine, proto, n.mine)
					raw = append(raw, Rule{Expr: away + " " + cls + " notrack", Comment: fmt.Sprintf("chain %s: passing through for hop %d", c.Name, k)})
					entry = append(entry, Rule{
						Expr:    fmt.Sprintf("%s %s %s meta mark set %#x", away, cls, verified, Mark(c.ID, k)),
						Comment: fmt.Sprintf("chain %s: passing through from another host for hop %d", c.Name, k),
					})
					if last == len(hops) {
						// Packets past the chain can only come back to a local
						// destination from a local function, never over the
						// uplink: new arrivals for local destinations are safe
						// to steer. (Otherwise they are left alone: a packet
						// past the chain would look exactly like a new one.)
						entry = append(entry, Rule{
							Expr: fmt.Sprintf("%s saddr != %s %s daddr %s %s %s ct mark set ct mark & %#x | %#x",
								proto, n.mine, proto, n.mine, cls, newConn, ^MarkMask, Mark(c.ID, k)),
							Comment: fmt.Sprintf("chain %s: new from another host to a local endpoint for hop %d", c.Name, k),
						})
					}
					need(k)
				}
			}
		}
	}
	st.Raw = raw
	if len(entry)+len(sfReturn) > 0 {
		st.Rules = append(st.Rules, sfReturn...)
		st.Rules = append(st.Rules, entry...)
		st.Rules = append(st.Rules, Rule{
			// A local source's packet back from the chain over the uplink
			// (its destination is local too): past the chain; the mark
			// lets it past anti-spoofing.
			Expr:    fmt.Sprintf("ct direction original ct mark & %#x == %#x fib saddr . iif oif missing meta mark set ct mark & %#x", MarkBit, MarkBit, MarkMask&^0xf),
			Comment: "steered connections: back from the chain over the uplink",
		}, Rule{
			Expr:    fmt.Sprintf("ct direction original ct mark & %#x == %#x fib saddr . iif oif exists meta mark set ct mark & %#x", MarkBit, MarkBit, MarkMask),
			Comment: "steered connections: the hop decided at their first packet",
		})
	}
	for tbl, mark := range tableSet {
		st.IPRules = append(st.IPRules, IPRule{Mark: mark, Table: tbl})
		if r, ok := tables[tbl]; ok {
			st.Routes = append(st.Routes, r)
		}
	}
	slices.SortFunc(st.IPRules, func(a, b IPRule) int { return cmp.Compare(a.Table, b.Table) })
	slices.SortFunc(st.Routes, func(a, b TableRoute) int { return cmp.Compare(a.Table, b.Table) })
	for p := range probes {
		st.Probes = append(st.Probes, p)
	}
	slices.SortFunc(st.Probes, netip.Addr.Compare)
	for i := range st.Rules {
		st.Rules[i].Comment = clip(st.Rules[i].Comment)
	}
	for i := range st.Raw {
		st.Raw[i].Comment = clip(st.Raw[i].Comment)
	}
	for p := range in.problems {
		st.Problems = append(st.Problems, p)
	}
	slices.Sort(st.Problems)
	return st, nil
}

// famName names an address family in problems.
func famName(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6 (ip6)"
}

func segmentID(in *inputs, tenant, segment string) (uint64, bool) {
	s, ok := in.m.Segment(tenant, segment)
	return s.ID, ok
}

// chainDsts returns the destination matches of chain c for packets of
// network n's family: one empty match for any destination; none when the
// destination cannot be in that family.
func chainDsts(in *inputs, c api.Chain, n *network) ([]string, error) {
	proto, _ := family(n)
	switch {
	case c.ToCIDR.IsValid():
		if c.ToCIDR.Addr().Is4() != n.Plan.Is4() {
			return nil, nil
		}
		return []string{fmt.Sprintf("%s daddr %s", proto, c.ToCIDR.Masked())}, nil
	case c.ToTenant != "":
		t, ok := in.m.Tenant(c.ToTenant)
		if !ok {
			return nil, fmt.Errorf("unknown destination tenant %q", c.ToTenant)
		}
		var segID uint64
		if c.ToSegment != "" {
			id, ok := segmentID(in, c.ToTenant, c.ToSegment)
			if !ok {
				return nil, fmt.Errorf("unknown destination segment %q of tenant %q", c.ToSegment, c.ToTenant)
			}
			segID = id
		}
		var out []string
		for _, n2 := range in.networks {
			if n2.Plan.Is4() != n.Plan.Is4() || !n2.Admits(c.ToTenant) {
				continue
			}
			var m string
			if c.ToSegment != "" {
				sm, err := n2.Plan.SegmentMatch(t.ID, segID)
				if err != nil {
					continue
				}
				m = fmt.Sprintf("%s daddr & %s == %s", proto, sm.Mask, sm.Value)
			} else {
				tm, err := n2.Plan.TenantMatch(t.ID)
				if err != nil {
					continue
				}
				m = fmt.Sprintf("%s daddr & %s == %s", proto, tm.Mask, tm.Value)
			}
			out = append(out, m)
		}
		return out, nil
	}
	return []string{""}, nil
}

// chainL4 returns the protocol and port match of c.
func chainL4(c api.Chain, n *network) string {
	switch c.Proto {
	case "":
		return ""
	case "icmp":
		if n.Plan.Is4() {
			return "meta l4proto icmp"
		}
		return "meta l4proto icmpv6"
	}
	if c.Port != 0 {
		return fmt.Sprintf("meta l4proto %s th dport %d", c.Proto, c.Port)
	}
	return "meta l4proto " + c.Proto
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// revisits reports a host whose functions are not consecutive in the
// chain (ok false): its agent could not tell a packet's first arrival from
// its return.
func revisits(hops []hop) (string, bool) {
	done := map[string]bool{}
	for i, h := range hops {
		if h.host == "" {
			continue
		}
		if done[h.host] && hops[i-1].host != h.host {
			return h.host, false
		}
		done[h.host] = true
	}
	return "", true
}
