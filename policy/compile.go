package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
	"github.com/romana/romana/plan"
)

// Compilation model
//
// Policies are enforced in the forward hook of the host that owns the
// endpoint they apply to, in two stages (see Compiled): the egress stage
// sees packets whose source is one of this host's blocks, the ingress stage
// packets whose destination is. An egress deny drops; an egress allow ends
// the egress stage (nft "return") and the packet goes on to the ingress
// stage and tenant isolation at its destination, so an egress allow never
// opens what the destination's isolation closes. An ingress allow accepts
// (skipping tenant isolation), an ingress deny drops; no match falls to
// isolation. Within a stage, rules are in policy precedence order
// (ascending priority, ties by name, then rule order) and the first rule
// that matches decides.
//
// Tiers come first: every rule of an admin policy precedes every rule of a
// default-tier policy, which precede those of baseline policies (Sorted).
// A pass rule that matches skips the rest of its tier for the packet's
// stage: evaluation goes on at the next tier's first rule, and after the
// last tier as if no rule had matched (tenant isolation for ingress, the
// end of the egress stage for egress).
//
// Every target and peer compiles to an address match: a prefix (a host's
// block, a CIDR peer with holes carved by except) or a masked match on the
// tenant/segment bits (plan.TenantMatch, plan.SegmentMatch), which covers
// that tenant on every host, optionally narrowed to the members of an
// address set (api.AddressSet), which nft holds as a named set the rule
// refers to by name. So the rule count grows with the policies and the
// networks, never with the endpoints or hosts, and a rule never depends on
// an address set's members: a membership change changes set elements only.

// Stage names.
const (
	StageEgress    = api.DirectionEgress
	StageIngress   = api.DirectionIngress
	StageIsolation = "isolation"
)

// Compiled is the policy part of one host's desired state.
type Compiled struct {
	Host string
	// Local are this host's blocks: the egress stage applies to packets
	// from them, the ingress stage to packets to them.
	Local []Local
	// Egress and Ingress are the stages' rules in evaluation order.
	Egress, Ingress []Rule
	// Problems are policies or parts of policies that were skipped.
	Problems []string
}

// Local is one of the host's blocks in a network.
type Local struct {
	Network string
	Prefix  netip.Prefix
}

// Family is "ip" or "ip6", as in nft.
func (l Local) Family() string { return familyOf(l.Prefix.Addr()) }

func familyOf(a netip.Addr) string {
	if a.Is4() {
		return "ip"
	}
	return "ip6"
}

// AddrMatch matches an address: a prefix minus the Except prefixes, or
// (when Mask is valid) a&Mask == Value, or (when Set is not empty) an
// address in one of the Ranges, which nft holds as the named interval set
// Set (the rule's peers, several prefixes with their holes carved out).
//
// AddressSet, when not empty, names an api.AddressSet: the address must
// also be one of its members (nft: "@" AddressSetName(AddressSet,
// family)). With neither a prefix nor a mask the match is the members
// alone, of the family Fam ("ip" or "ip6"). The members are not part of
// the match: Contains asks a SetMembers.
type AddrMatch struct {
	Prefix     netip.Prefix
	Except     []netip.Prefix
	Value      netip.Addr
	Mask       netip.Addr
	Set        string
	Ranges     []AddrRange // sorted, disjoint, not adjacent
	AddressSet string
	Fam        string // of a match on AddressSet alone
}

// SetMembers reports whether a is a member of the address set called
// set; a nil SetMembers has no members in any set (as for a set that
// does not exist).
type SetMembers func(set string, a netip.Addr) bool

// AddressSetPrefix starts the nft names of address sets.
const AddressSetPrefix = "as-"

// AddressSetName is the name of the nft set holding the members of family
// fam ("ip" or "ip6") of the address set called name: "as-NAME-4" or
// "as-NAME-6". Valid names (api.ValidateName: at most 63 characters of
// [a-z0-9.-], starting with a letter or digit) make valid nft identifiers,
// never a keyword (they contain "-").
func AddressSetName(name, fam string) string {
	if fam == "ip6" {
		return AddressSetPrefix + name + "-6"
	}
	return AddressSetPrefix + name + "-4"
}

// AddrRange is an inclusive range of addresses of one family.
type AddrRange struct{ Lo, Hi netip.Addr }

// String renders the range as nft does in a set: a prefix or an address
// when it is one, else "lo-hi".
func (r AddrRange) String() string {
	if r.Lo == r.Hi {
		return r.Lo.String()
	}
	for bits := r.Lo.BitLen() - 1; bits >= 0; bits-- {
		p := netip.PrefixFrom(r.Lo, bits)
		if p.Masked().Addr() != r.Lo {
			break
		}
		if last := lastAddr(p); last == r.Hi {
			return p.String()
		} else if last.Compare(r.Hi) > 0 {
			break
		}
	}
	return r.Lo.String() + "-" + r.Hi.String()
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether a matches when every address set is empty.
func (m AddrMatch) Contains(a netip.Addr) bool { return m.ContainsIn(a, nil) }

// ContainsIn reports whether a matches, with the address sets' members
// given by in.
func (m AddrMatch) ContainsIn(a netip.Addr, in SetMembers) bool {
	a = a.Unmap()
	if m.AddressSet != "" {
		if in == nil || !in(m.AddressSet, a) || a.Is4() != m.is4() {
			return false
		}
		if !m.Mask.IsValid() && !m.Prefix.IsValid() {
			return true
		}
	}
	if m.Mask.IsValid() {
		return plan.Match{Value: m.Value, Mask: m.Mask}.Contains(a)
	}
	if m.Set != "" {
		for _, r := range m.Ranges {
			if a.Is4() == r.Lo.Is4() && r.Lo.Compare(a) <= 0 && a.Compare(r.Hi) <= 0 {
				return true
			}
		}
		return false
	}
	if !m.Prefix.Contains(a) {
		return false
	}
	for _, x := range m.Except {
		if x.Contains(a) {
			return false
		}
	}
	return true
}

func (m AddrMatch) is4() bool {
	if m.AddressSet != "" && !m.Mask.IsValid() && !m.Prefix.IsValid() {
		return m.Fam != "ip6"
	}
	if m.Mask.IsValid() {
		return m.Value.Is4()
	}
	if m.Set != "" {
		return m.Ranges[0].Lo.Is4()
	}
	return m.Prefix.Addr().Is4()
}

// expr renders the match on field ("saddr" or "daddr").
func (m AddrMatch) expr(field string) string {
	fam := "ip"
	if !m.is4() {
		fam = "ip6"
	}
	if m.AddressSet != "" {
		set := fmt.Sprintf("%s %s @%s", fam, field, AddressSetName(m.AddressSet, fam))
		if !m.Mask.IsValid() && !m.Prefix.IsValid() {
			return set
		}
		n := m
		n.AddressSet = ""
		return n.expr(field) + " " + set
	}
	if m.Mask.IsValid() {
		return fmt.Sprintf("%s %s & %s == %s", fam, field, m.Mask, m.Value)
	}
	if m.Set != "" {
		return fmt.Sprintf("%s %s @%s", fam, field, m.Set)
	}
	s := fmt.Sprintf("%s %s %s", fam, field, m.Prefix)
	if len(m.Except) > 0 {
		parts := make([]string, len(m.Except))
		for i, x := range m.Except {
			parts[i] = x.String()
		}
		s += fmt.Sprintf(" %s %s != { %s }", fam, field, strings.Join(parts, ", "))
	}
	return s
}

func (m AddrMatch) String() string {
	if m.AddressSet != "" {
		fam := "ip"
		if !m.is4() {
			fam = "ip6"
		}
		set := "set " + m.AddressSet + " (" + fam + ")"
		if !m.Mask.IsValid() && !m.Prefix.IsValid() {
			return set
		}
		n := m
		n.AddressSet = ""
		return n.String() + " in " + set
	}
	if m.Mask.IsValid() {
		return m.Value.String() + "/" + m.Mask.String()
	}
	if m.Set != "" {
		return "@" + m.Set
	}
	s := m.Prefix.String()
	for _, x := range m.Except {
		s += " except " + x.String()
	}
	return s
}

// maxSplitPorts is the longest port list compiled to one rule per port
// (or range) instead of one rule with an anonymous set.
const maxSplitPorts = 4

// maxSplitPeers is the largest number of address prefixes (CIDR and host
// peers, after merging) of one rule and family compiled to one rule each;
// more become one rule matching a named interval set (PeerSet). Measured
// loading 10,000 such rules of 3 prefixes each with nft -f (load average
// 38, so the ratios count): 30,000 plain rules 6.8 s, 10,000 rules with an
// anonymous set each 55.6 s, 10,000 named interval sets and rules 15.7 s.
// A plain rule costs about 0.23 ms to load, a named set with its rule
// about 1.6 ms: sets pay from about 7 prefixes on, and they are looked
// up in one step where rules are walked one by one.
const maxSplitPeers = 8

// PeerSetPrefix starts the names of the peer sets.
const PeerSetPrefix = "policy-peers-"

// peerSet folds prefix matches (a prefix with its holes) into one match
// on a named set of the ranges they cover, named by its content.
func peerSet(ms []AddrMatch) AddrMatch {
	var rs []AddrRange
	for _, m := range ms {
		lo, hi := m.Prefix.Masked().Addr(), lastAddr(m.Prefix)
		for _, x := range m.Except { // sorted, none inside another
			xl, xh := x.Masked().Addr(), lastAddr(x)
			if xl.Compare(lo) > 0 {
				rs = append(rs, AddrRange{lo, xl.Prev()})
			}
			if xh == hi {
				lo = netip.Addr{}
				break
			}
			lo = xh.Next()
		}
		if lo.IsValid() {
			rs = append(rs, AddrRange{lo, hi})
		}
	}
	slices.SortFunc(rs, func(a, b AddrRange) int { return a.Lo.Compare(b.Lo) })
	var out []AddrRange
	for _, r := range rs {
		if n := len(out); n > 0 && (r.Lo.Compare(out[n-1].Hi) <= 0 || r.Lo == out[n-1].Hi.Next()) {
			if r.Hi.Compare(out[n-1].Hi) > 0 {
				out[n-1].Hi = r.Hi
			}
			continue
		}
		out = append(out, r)
	}
	h := sha256.New()
	for _, r := range out {
		fmt.Fprintf(h, "%s,", r)
	}
	return AddrMatch{Set: PeerSetPrefix + hex.EncodeToString(h.Sum(nil)[:6]), Ranges: out}
}

// SetElements renders a set match's ranges as nft set elements.
func (m AddrMatch) SetElements() []string {
	out := make([]string, len(m.Ranges))
	for i, r := range m.Ranges {
		out[i] = r.String()
	}
	return out
}

// PortRange is an inclusive port range.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Rule is one compiled rule: a policy rule narrowed to one target and one
// peer address match of one family.
type Rule struct {
	Policy   string
	Tier     string // the policy's tier: api.TierAdmin, api.TierDefault or api.TierBaseline
	Priority int
	Index    int    // the rule's index in the policy's rules
	Stage    string // StageEgress or StageIngress
	Action   string // api.ActionAllow, api.ActionDeny or api.ActionPass
	Family   string // "ip" or "ip6"
	// Target selects the endpoints the policy applies to: the destination
	// in the ingress stage, the source in the egress stage.
	Target AddrMatch
	// Peer matches the other side; nil means any.
	Peer     *AddrMatch
	Proto    string      // "" (any), tcp, udp, sctp, icmp (icmpv6 in ip6)
	Ports    []PortRange // destination ports; empty means any
	ICMPType *uint8
	ICMPCode *uint8
	// Log asks for dropped packets to be logged (rate-limited).
	Log bool
}

// Comment names the rule in nft and in stats: "policy NAME rule I".
func (r Rule) Comment() string { return fmt.Sprintf("policy %s rule %d", r.Policy, r.Index) }

// LogPrefix is the prefix of logged packets: "romana:NAME:".
func (r Rule) LogPrefix() string {
	p := "romana:" + r.Policy + ":"
	if len(p) > 127 {
		p = p[:127]
	}
	return p
}

// Match is the rule's match part in nft syntax, without statements.
func (r Rule) Match() string {
	tf, pf := "daddr", "saddr"
	if r.Stage == StageEgress {
		tf, pf = "saddr", "daddr"
	}
	parts := []string{r.Target.expr(tf)}
	if r.Peer != nil {
		parts = append(parts, r.Peer.expr(pf))
	}
	switch r.Proto {
	case "":
	case api.ProtoICMP:
		icmp, l4 := "icmp", "icmp"
		if r.Family == "ip6" {
			icmp, l4 = "icmpv6", "ipv6-icmp"
		}
		switch {
		case r.ICMPType == nil:
			parts = append(parts, "meta l4proto "+l4)
		default:
			parts = append(parts, fmt.Sprintf("%s type %d", icmp, *r.ICMPType))
			if r.ICMPCode != nil {
				parts = append(parts, fmt.Sprintf("%s code %d", icmp, *r.ICMPCode))
			}
		}
	default:
		switch {
		case len(r.Ports) == 0:
			parts = append(parts, "meta l4proto "+r.Proto)
		case len(r.Ports) == 1:
			parts = append(parts, fmt.Sprintf("%s dport %s", r.Proto, r.Ports[0]))
		default:
			ps := make([]string, len(r.Ports))
			for i, p := range r.Ports {
				ps[i] = p.String()
			}
			parts = append(parts, fmt.Sprintf("%s dport { %s }", r.Proto, strings.Join(ps, ", ")))
		}
	}
	return strings.Join(parts, " ")
}

// PassVerdict stands for a pass rule's verdict in Verdict and Expr: it
// depends on the tiers a host has rules in, so hoststate renders it as
// "goto" the next tier's entry chain, or "return" in the last one.
const PassVerdict = "goto <next tier>"

// Verdict is the rule's nft verdict: accept or drop, or return for an
// egress allow (the packet goes on to the ingress stage); PassVerdict for
// a pass rule.
func (r Rule) Verdict() string {
	switch {
	case r.Action == api.ActionPass:
		return PassVerdict
	case r.Action == api.ActionDeny:
		return "drop"
	case r.Stage == StageEgress:
		return "return"
	}
	return "accept"
}

// Expr is the whole rule in nft syntax: match, counter, verdict.
func (r Rule) Expr() string { return r.Match() + " counter " + r.Verdict() }

// Packet is the first packet of a connection, for Matches and Trace.
// Proto is tcp, udp, sctp or icmp (icmpv6 for IPv6 addresses).
type Packet struct {
	Src, Dst netip.Addr
	Proto    string
	Port     uint16 // destination port (tcp, udp, sctp)
	ICMPType uint8
	ICMPCode uint8
}

// Matches reports whether the rule matches p, with the semantics of its
// nft rendering (Match), when every address set is empty.
func (r Rule) Matches(p Packet) bool { return r.MatchesIn(p, nil) }

// MatchesIn reports whether the rule matches p, with the semantics of its
// nft rendering (Match), the address sets' members given by in.
func (r Rule) MatchesIn(p Packet, in SetMembers) bool {
	if familyOf(p.Src) != r.Family || familyOf(p.Dst) != r.Family {
		return false
	}
	target, peer := p.Dst, p.Src
	if r.Stage == StageEgress {
		target, peer = p.Src, p.Dst
	}
	if !r.Target.ContainsIn(target, in) || (r.Peer != nil && !r.Peer.ContainsIn(peer, in)) {
		return false
	}
	switch r.Proto {
	case "":
		return true
	case api.ProtoICMP:
		return p.Proto == api.ProtoICMP && (r.ICMPType == nil || *r.ICMPType == p.ICMPType) &&
			(r.ICMPCode == nil || *r.ICMPCode == p.ICMPCode)
	}
	if p.Proto != r.Proto {
		return false
	}
	if len(r.Ports) == 0 {
		return true
	}
	for _, pr := range r.Ports {
		if pr.Lo <= p.Port && p.Port <= pr.Hi {
			return true
		}
	}
	return false
}

// snapIndex is the model a compilation reads.
type snapIndex struct {
	m *model.Model
}

type netw = model.Network

func indexSnapshot(snap api.Snapshot) *snapIndex { return &snapIndex{m: model.New(snap)} }

// local returns host's blocks, by network name.
func (ix *snapIndex) local(host string) []Local {
	h, ok := ix.m.Host(host)
	if !ok {
		return nil
	}
	var out []Local
	for _, n := range ix.m.Networks() {
		if c, ok := n.HostCIDR(h); ok {
			out = append(out, Local{Network: n.Name, Prefix: c})
		}
	}
	return out
}

// groupMatch returns the masked match of a tenant (segment "" ) or a
// tenant's segment in network n; ok is false when they do not exist, are
// not admitted to n or do not fit it.
func (ix *snapIndex) groupMatch(n *netw, tenant, segment string) (AddrMatch, bool) {
	m, ok := ix.m.TenantMatch(n, tenant, segment)
	return AddrMatch{Value: m.Value, Mask: m.Mask}, ok
}

// peerMatches compiles a peer to the address matches of one family; nil
// with ok true is "any".
func (ix *snapIndex) peerMatches(p api.Peer, is4 bool) []AddrMatch {
	var out []AddrMatch
	switch {
	case p.Set != "":
		fam := "ip"
		if !is4 {
			fam = "ip6"
		}
		out = append(out, AddrMatch{AddressSet: p.Set, Fam: fam})
	case p.CIDR != "":
		pfx, err := netip.ParsePrefix(p.CIDR)
		if err != nil || pfx.Addr().Is4() != is4 {
			return nil
		}
		m := AddrMatch{Prefix: pfx.Masked()}
		for _, e := range p.Except {
			x, err := netip.ParsePrefix(e)
			if err == nil && x.Addr().Is4() == is4 && pfx.Contains(x.Addr()) && x.Bits() >= pfx.Bits() {
				m.Except = append(m.Except, x.Masked())
			}
		}
		m.Except = mergePrefixes(m.Except)
		if len(m.Except) == 1 && m.Except[0] == m.Prefix {
			return nil // nothing left
		}
		out = append(out, m)
	case p.Tenant != "":
		for _, n := range ix.m.Networks() {
			if n.Plan.Is4() != is4 {
				continue
			}
			if m, ok := ix.groupMatch(n, p.Tenant, p.Segment); ok {
				out = append(out, m)
			}
		}
	case p.Host != "":
		h, ok := ix.m.Host(p.Host)
		if !ok {
			return nil
		}
		var pfxs []netip.Prefix
		for _, s := range h.Slots {
			if s.CIDR.IsValid() && s.CIDR.Addr().Is4() == is4 {
				pfxs = append(pfxs, s.CIDR.Masked())
			}
		}
		if ip := h.UnderlayIP(is4); ip.IsValid() { // IP, or IP6 for IPv6
			pfxs = append(pfxs, netip.PrefixFrom(ip, ip.BitLen()))
		}
		for _, p := range mergePrefixes(pfxs) {
			out = append(out, AddrMatch{Prefix: p})
		}
	}
	return out
}

// mergePrefixes sorts prefixes and drops those inside another.
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	var out []netip.Prefix
	for _, p := range ps {
		if len(out) > 0 && out[len(out)-1].Contains(p.Addr()) && out[len(out)-1].Bits() <= p.Bits() {
			continue
		}
		out = append(out, p)
	}
	return out
}

// mergeRanges sorts port ranges and merges overlapping or adjacent ones
// (nft refuses overlapping intervals in a set).
func mergeRanges(rs []PortRange) []PortRange {
	slices.SortFunc(rs, func(a, b PortRange) int { return cmp.Or(cmp.Compare(a.Lo, b.Lo), cmp.Compare(a.Hi, b.Hi)) })
	var out []PortRange
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.Lo) <= uint32(out[n-1].Hi)+1 {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Tiers are the policy tiers in evaluation order.
var Tiers = []string{api.TierAdmin, api.TierDefault, api.TierBaseline}

// TierRank is a tier's position in Tiers (api.TierRank).
func TierRank(tier string) int { return api.TierRank(tier) }

// TierName names a tier in messages and nft names: "admin", "default"
// or "baseline".
func TierName(tier string) string {
	if tier == api.TierDefault {
		return "default"
	}
	return tier
}

// Sorted returns the policies in precedence order: by tier (admin,
// default, baseline), then ascending priority (0 counts as
// api.DefaultPriority), ties by name.
func Sorted(ps []api.Policy) []api.Policy {
	out := make([]api.Policy, len(ps))
	for i, p := range ps {
		out[i] = Normalize(p)
	}
	slices.SortStableFunc(out, func(a, b api.Policy) int { return Compare(a, b) })
	return out
}

// Compare orders two normalised policies by precedence: tier, priority,
// name.
func Compare(a, b api.Policy) int {
	return cmp.Or(cmp.Compare(TierRank(a.Tier), TierRank(b.Tier)), cmp.Compare(a.Priority, b.Priority), strings.Compare(a.Name, b.Name))
}

// Compile compiles the snapshot's policies for host. It never fails: a
// policy that is invalid is skipped and reported in Problems; targets and
// peers naming tenants, segments or hosts that do not exist compile to
// nothing (and take effect when they appear, at the next compilation).
func Compile(snap api.Snapshot, host string) Compiled {
	return CompileModel(model.New(snap), host)
}

// CompileModel is Compile on an indexed model.
func CompileModel(m *model.Model, host string) Compiled {
	return compileIndexed(&snapIndex{m: m}, m.Policies(), host)
}

func compileIndexed(ix *snapIndex, policies []api.Policy, host string) Compiled {
	c := Compiled{Host: host, Local: ix.local(host)}
	if len(c.Local) == 0 {
		return c
	}
	seen := map[string]bool{}
	for _, p := range Sorted(policies) {
		if seen[p.Name] {
			c.Problems = append(c.Problems, fmt.Sprintf("policy %q: listed twice; using the first", p.Name))
			continue
		}
		seen[p.Name] = true
		eg, in, problem := ix.compileNormalized(p, host, c.Local)
		if problem != "" {
			c.Problems = append(c.Problems, problem)
		} else {
			c.Problems = append(c.Problems, MissingSets(ix.m, p)...)
		}
		c.Egress = append(c.Egress, eg...)
		c.Ingress = append(c.Ingress, in...)
	}
	return c
}

// SetRefs returns the names of the address sets p names (selectors and
// peers), sorted, each once.
func SetRefs(p api.Policy) []string {
	var out []string
	for _, s := range p.AppliedTo {
		if s.Set != "" {
			out = append(out, s.Set)
		}
	}
	for _, r := range p.Rules {
		for _, pe := range r.Peers {
			if pe.Set != "" {
				out = append(out, pe.Set)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// MissingSets returns a problem for every address set p names that the
// model does not hold: such a set is empty (it matches nothing) until it
// appears.
func MissingSets(m *model.Model, p api.Policy) []string {
	var out []string
	for _, name := range SetRefs(p) {
		if _, ok := m.AddressSet(name); !ok {
			out = append(out, fmt.Sprintf("policy %q: address set %q does not exist: it matches nothing until it does", p.Name, name))
		}
	}
	return out
}

// Blocks returns host's blocks, one per network it has a valid slot in, in
// network order: what Compiled.Local holds.
func Blocks(m *model.Model, host string) []Local { return (&snapIndex{m: m}).local(host) }

// CompilePolicy compiles one policy for host, whose blocks are local (as
// Blocks returns them): its egress and ingress rules in the order they take
// within the policy. Rules of several policies are in precedence order
// when the policies are (Sorted), so Compile is CompilePolicy over the
// sorted policies. An invalid policy compiles to nothing and problem says
// why. The result depends only on p, host, local, the networks and what
// Deps(m, p) describes.
func CompilePolicy(m *model.Model, p api.Policy, host string, local []Local) (egress, ingress []Rule, problem string) {
	if len(local) == 0 {
		return nil, nil, ""
	}
	return (&snapIndex{m: m}).compileNormalized(Normalize(p), host, local)
}

func (ix *snapIndex) compileNormalized(p api.Policy, host string, local []Local) (egress, ingress []Rule, problem string) {
	if err := Validate(p); err != nil {
		return nil, nil, fmt.Sprintf("%v; skipped", err)
	}
	if slices.Contains(p.Direction, StageEgress) {
		egress = ix.compilePolicy(p, StageEgress, host, local)
	}
	if slices.Contains(p.Direction, StageIngress) {
		ingress = ix.compilePolicy(p, StageIngress, host, local)
	}
	return egress, ingress, ""
}

// Deps describes what compiling p reads of the model besides p itself,
// the host's blocks and the networks: the tenants and segments it names
// (their IDs, or their absence) and the hosts its peers name (their
// address and slots). Two compilations of p for one host with equal
// networks, blocks and Deps give equal rules.
func Deps(m *model.Model, p api.Policy) string {
	var b []byte
	group := func(tenant, segment string) {
		if tenant == "" {
			return
		}
		t, ok := m.Tenant(tenant)
		b = append(b, "t "...)
		b = append(b, tenant...)
		b = strconv.AppendBool(append(b, ' '), ok)
		b = strconv.AppendUint(append(b, ' '), t.ID, 10)
		if segment != "" {
			s, ok := m.Segment(tenant, segment)
			b = append(b, " s "...)
			b = append(b, segment...)
			b = strconv.AppendBool(append(b, ' '), ok)
			b = strconv.AppendUint(append(b, ' '), s.ID, 10)
		}
		b = append(b, ';')
	}
	for _, s := range p.AppliedTo {
		group(s.Tenant, s.Segment)
	}
	for _, r := range p.Rules {
		for _, pe := range r.Peers {
			group(pe.Tenant, pe.Segment)
			if pe.Host != "" {
				h, ok := m.Host(pe.Host)
				b = append(b, "h "...)
				b = append(b, pe.Host...)
				b = strconv.AppendBool(append(b, ' '), ok)
				b = h.IP.AppendTo(append(b, ' '))
				b = h.IP6.AppendTo(append(b, ' '))
				for _, s := range h.Slots {
					b = s.CIDR.AppendTo(append(b, ' '))
				}
				b = append(b, ';')
			}
		}
	}
	return string(b)
}

// compilePolicy expands one (validated, normalised) policy for one stage.
func (ix *snapIndex) compilePolicy(p api.Policy, stage, host string, local []Local) []Rule {
	var out []Rule
	// Targets: per local block, the applied-to selectors narrowed to it.
	type target struct {
		m   AddrMatch
		is4 bool
	}
	var targets []target
	for _, l := range local {
		n := ix.m.Network(l.Network)
		for _, s := range p.AppliedTo {
			var m AddrMatch
			switch {
			case s.All, s.Tenant == "" && s.Host == "": // all, or a set alone
				m = AddrMatch{Prefix: l.Prefix}
			case s.Host != "":
				if s.Host != host {
					continue
				}
				m = AddrMatch{Prefix: l.Prefix}
			default:
				var ok bool
				if m, ok = ix.groupMatch(n, s.Tenant, s.Segment); !ok {
					continue
				}
			}
			m.AddressSet = s.Set // narrowed to the set's members
			if !slices.ContainsFunc(targets, func(t target) bool { return t.m.String() == m.String() }) {
				targets = append(targets, target{m, l.Prefix.Addr().Is4()})
			}
		}
	}
	for _, t := range targets {
		fam := "ip"
		if !t.is4 {
			fam = "ip6"
		}
		for i, r := range p.Rules {
			base := Rule{Policy: p.Name, Tier: p.Tier, Priority: p.Priority, Index: i, Stage: stage, Action: r.Action,
				Family: fam, Target: t.m, Log: p.Log && r.Action == api.ActionDeny}
			if r.Protocol != api.ProtoAny {
				base.Proto = r.Protocol
			}
			var ports []PortRange
			for _, x := range r.Ports {
				ports = append(ports, PortRange{x, x})
			}
			for _, x := range r.PortRanges {
				a, b, _ := strings.Cut(x, "-")
				lo, _ := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
				hi, _ := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
				ports = append(ports, PortRange{uint16(lo), uint16(hi)})
			}
			base.Ports = mergeRanges(ports)
			// A few ports become one rule each: nft loads thousands of
			// anonymous sets very slowly (about 1.5 ms each at 10,000, see
			// docs/benchmarks.md), plain port matches cost nothing extra.
			// Longer lists keep one rule with a set.
			portSets := [][]PortRange{base.Ports}
			if n := len(base.Ports); n > 1 && n <= maxSplitPorts {
				portSets = portSets[:0]
				for _, pr := range base.Ports {
					portSets = append(portSets, []PortRange{pr})
				}
			}
			if r.ICMPType != nil {
				v := *r.ICMPType
				base.ICMPType = &v
			}
			if r.ICMPCode != nil {
				v := *r.ICMPCode
				base.ICMPCode = &v
			}
			var peers []*AddrMatch
			if len(r.Peers) == 0 || slices.ContainsFunc(r.Peers, func(p api.Peer) bool { return p.Any }) {
				peers = []*AddrMatch{nil}
			} else {
				for _, pe := range r.Peers {
					for _, m := range ix.peerMatches(pe, t.is4) {
						if !slices.ContainsFunc(peers, func(x *AddrMatch) bool { return x.String() == m.String() }) {
							peers = append(peers, &m)
						}
					}
				}
				peers = foldPeers(peers)
			}
			for _, m := range peers {
				for _, ps := range portSets {
					r := base
					r.Peer, r.Ports = m, ps
					out = append(out, r)
				}
			}
		}
	}
	// Rules must stay in precedence order: by rule index, then target.
	slices.SortStableFunc(out, func(a, b Rule) int { return cmp.Compare(a.Index, b.Index) })
	return out
}

// foldPeers replaces the prefix matches among peers by one set match
// when there are more than maxSplitPeers of them (the masked matches of
// tenants and the address sets stay as they are).
func foldPeers(peers []*AddrMatch) []*AddrMatch {
	var pfx []AddrMatch
	var out []*AddrMatch
	for _, m := range peers {
		if m.Mask.IsValid() || m.AddressSet != "" {
			out = append(out, m)
		} else {
			pfx = append(pfx, *m)
		}
	}
	if len(pfx) <= maxSplitPeers {
		return peers
	}
	set := peerSet(pfx)
	if len(set.Ranges) == 0 {
		return out
	}
	return append(out, &set)
}

// String renders the compiled policies, one rule a line, for tests and logs.
func (c Compiled) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "host %s\n", c.Host)
	for _, l := range c.Local {
		fmt.Fprintf(&b, "local %s %s\n", l.Network, l.Prefix)
	}
	for _, r := range c.Egress {
		fmt.Fprintf(&b, "egress %s # %s\n", r.Expr(), r.Comment())
	}
	for _, r := range c.Ingress {
		fmt.Fprintf(&b, "ingress %s # %s\n", r.Expr(), r.Comment())
	}
	for _, p := range c.Problems {
		fmt.Fprintf(&b, "problem %s\n", p)
	}
	return b.String()
}
