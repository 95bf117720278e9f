package policy

import (
	"fmt"
	"net/netip"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
)

// ProtoICMPv6 is accepted by Trace as another name of api.ProtoICMP
// between IPv6 addresses, where policies' "icmp" matches ICMPv6.
const ProtoICMPv6 = "icmpv6"

// Trace answers whether a new connection (its first packet p) is allowed,
// and names what decided: a policy rule, or the tenant isolation default.
// It evaluates the rules Compile produces for the hosts involved, the same
// rules the agents render into their policy chains (Rule.Matches has the
// semantics of Rule.Expr), in the order the forward chain runs them:
//
//  1. on the source's host (the host whose block holds p.Src), the egress
//     stage: a deny drops; an allow or no match goes on;
//  2. on the destination's host, the ingress stage: an allow accepts, a
//     deny drops; no match goes on to
//  3. tenant isolation of the destination's tenant (as hoststate compiles
//     it: tenant, segment or none; an unknown tenant is dropped).
//
// In each stage the rules are in precedence order (tier, priority, name,
// rule); a pass rule that matches skips the rest of its tier, and is
// listed as a step of its own (result "pass", its tier in the reason).
// Address sets are the snapshot's (a set it does not hold is empty).
//
// A destination outside every host's blocks meets no ingress enforcement:
// the egress stage on the source's host decided. That holds for a host's
// own addresses too (its underlay addresses, and the endpoints' gateway,
// which every host holds): a packet from an endpoint to an address of its
// own host meets the egress stage in that host's input hook (hoststate's
// input chain), one to another host's address in the forward hook, the
// same rules either way; the step names the host when the destination is
// one's. The other way, a host's own address (or the gateway) to one of
// its endpoints is allowed: the host sends through its output hook, which
// Romana does not filter (only another host's packets meet the
// destination's forward hook). Trace does not model anti-spoofing (it
// assumes p.Src is genuine) nor what the input chain does with IPv6
// link-local sources (neighbour discovery and pings accepted, the rest
// dropped).
func Trace(snap api.Snapshot, p Packet) (api.Trace, error) {
	p.Src, p.Dst = p.Src.Unmap(), p.Dst.Unmap()
	req := api.TraceRequest{From: p.Src, To: p.Dst, Proto: p.Proto, Port: p.Port, ICMPType: p.ICMPType, ICMPCode: p.ICMPCode}
	out := api.Trace{Request: req}
	if !p.Src.IsValid() || !p.Dst.IsValid() || p.Src.Is4() != p.Dst.Is4() {
		return out, api.Errorf(api.ReasonInvalid, "trace: from %s and to %s must be addresses of one family", p.Src, p.Dst)
	}
	if p.Proto == ProtoICMPv6 { // "icmp" between IPv6 addresses is ICMPv6 already
		if p.Src.Is4() {
			return out, api.Errorf(api.ReasonInvalid, "trace: proto icmpv6 between IPv4 addresses %s and %s: use icmp", p.Src, p.Dst)
		}
		p.Proto = api.ProtoICMP
	}
	switch p.Proto {
	case api.ProtoTCP, api.ProtoUDP, api.ProtoSCTP:
		if p.Port == 0 {
			return out, api.Errorf(api.ReasonInvalid, "trace: proto %s needs a port (1-65535)", p.Proto)
		}
	case api.ProtoICMP:
	default:
		return out, api.Errorf(api.ReasonInvalid, "trace: proto %q is not one of tcp, udp, sctp, icmp", p.Proto)
	}
	ix := indexSnapshot(snap)
	in := ix.members()
	decide := func(s api.TraceStep) (api.Trace, error) {
		out.Steps = append(out.Steps, s)
		out.Decision = s
		out.Verdict = s.Result
		return out, nil
	}
	if src := ix.hostOf(p.Src); src != "" {
		c := compileIndexed(ix, ix.m.Policies(), src)
		step := api.TraceStep{Host: src, Stage: StageEgress, Result: "pass", Reason: "no egress policy matched"}
		r, ok, passed := first(c.Egress, p, in)
		for _, x := range passed {
			out.Steps = append(out.Steps, ruleStep(src, x))
		}
		if ok {
			step = ruleStep(src, r)
			if r.Action == api.ActionDeny {
				return decide(step)
			}
		}
		out.Steps = append(out.Steps, step)
	}
	dst := ix.hostOf(p.Dst)
	if dst == "" {
		return decide(ix.toHost(p, ix.hostOf(p.Src)))
	}
	if h := ix.addressHost(p.Src); h == dst || p.Src == model.Gateway || p.Src == model.Gateway6 {
		return decide(api.TraceStep{Host: dst, Stage: StageIngress, Result: api.ActionAllow,
			Reason: fmt.Sprintf("source %s is an address of host %s, the destination's own: it sends through its output hook, where no policy applies", p.Src, dst)})
	}
	c := compileIndexed(ix, ix.m.Policies(), dst)
	r, ok, passed := first(c.Ingress, p, in)
	for _, x := range passed {
		out.Steps = append(out.Steps, ruleStep(dst, x))
	}
	if ok {
		return decide(ruleStep(dst, r))
	}
	out.Steps = append(out.Steps, api.TraceStep{Host: dst, Stage: StageIngress, Result: "pass", Reason: "no ingress policy matched"})
	return decide(ix.isolation(dst, p))
}

// toHost is the last step of a packet whose destination is in no host's
// block, from an endpoint of host src ("" if p.Src is none's): allowed,
// the egress stage having let it through; the reason says whether the
// destination is an address of src itself (met in its input hook), of
// another host, or of none.
func (ix *snapIndex) toHost(p Packet, src string) api.TraceStep {
	step := api.TraceStep{Stage: StageIngress, Result: api.ActionAllow}
	h := ix.addressHost(p.Dst)
	if p.Dst == model.Gateway || p.Dst == model.Gateway6 {
		h = src // every host holds it: the source's own
	}
	switch {
	case h == "":
		step.Reason = fmt.Sprintf("destination %s is in no host's block: no ingress enforcement", p.Dst)
	case h == src:
		step.Host = h
		step.Reason = fmt.Sprintf("destination %s is an address of host %s, the source's own: egress policies applied in its input hook; no ingress enforcement", p.Dst, h)
	default:
		step.Host = h
		step.Reason = fmt.Sprintf("destination %s is an address of host %s, not an endpoint's: no ingress enforcement", p.Dst, h)
	}
	return step
}

// addressHost returns the host whose underlay address (ip or ip6) a is,
// or "".
func (ix *snapIndex) addressHost(a netip.Addr) string {
	for _, h := range ix.m.Hosts() {
		if h.IP.Unmap() == a || h.IP6.Unmap() == a {
			return h.Name
		}
	}
	return ""
}

// first returns the rule that decides p among a stage's rules (in
// precedence order), and the pass rules that matched before it: a pass
// skips the rest of its tier.
func first(rules []Rule, p Packet, in SetMembers) (decided Rule, ok bool, passed []Rule) {
	skip := -1 // the rank of the tier a pass left
	for _, r := range rules {
		if TierRank(r.Tier) == skip || !r.MatchesIn(p, in) {
			continue
		}
		if r.Action == api.ActionPass {
			passed = append(passed, r)
			skip = TierRank(r.Tier)
			continue
		}
		return r, true, passed
	}
	return Rule{}, false, passed
}

// ruleStep is the step of a matching rule. The reason names the tier
// when it is not the default one; a pass names the tier it goes on to.
func ruleStep(host string, r Rule) api.TraceStep {
	i := r.Index
	reason := r.Comment()
	if r.Tier != api.TierDefault {
		reason += " (tier " + TierName(r.Tier) + ")"
	}
	reason += ": " + r.Action
	if r.Action == api.ActionPass {
		next := "no tier left: as if no policy matched"
		if k := TierRank(r.Tier) + 1; k < len(Tiers) {
			next = "on to the " + TierName(Tiers[k]) + " tier"
		}
		reason += " (" + next + ")"
	}
	return api.TraceStep{Host: host, Stage: r.Stage, Result: r.Action, Policy: r.Policy, Rule: &i,
		Reason: reason, RuleNFT: r.Expr()}
}

// members returns the membership of the model's address sets.
func (ix *snapIndex) members() SetMembers {
	sets := map[string]map[netip.Addr]bool{}
	for _, s := range ix.m.AddressSets() {
		members := ix.m.AddressSetMembers(s.Name) // addresses and pods' addresses
		m := make(map[netip.Addr]bool, len(members))
		for _, a := range members {
			m[a] = true
		}
		sets[s.Name] = m
	}
	return func(set string, a netip.Addr) bool { return sets[set][a] }
}

// hostOf returns the host whose block holds a, or "".
func (ix *snapIndex) hostOf(a netip.Addr) string {
	for _, h := range ix.m.Hosts() {
		for _, l := range ix.local(h.Name) {
			if l.Prefix.Contains(a) {
				return h.Name
			}
		}
	}
	return ""
}

// isolation decides p at its destination's tenant isolation, mirroring
// what hoststate compiles (tenant chains behind the destination-tenant map).
func (ix *snapIndex) isolation(host string, p Packet) api.TraceStep {
	step := api.TraceStep{Host: host, Stage: StageIsolation}
	deny := func(format string, args ...any) api.TraceStep {
		step.Result, step.Reason = api.ActionDeny, fmt.Sprintf(format, args...)
		return step
	}
	allow := func(format string, args ...any) api.TraceStep {
		step.Result, step.Reason = api.ActionAllow, fmt.Sprintf(format, args...)
		return step
	}
	var n *netw
	for _, x := range ix.m.Networks() {
		if x.Plan.Prefix().Contains(p.Dst) {
			n = x
			break
		}
	}
	if n == nil {
		return deny("destination %s: in no network", p.Dst)
	}
	d, err := n.Plan.Decode(p.Dst)
	if err != nil {
		return deny("destination %s: %v", p.Dst, err)
	}
	var t api.Tenant
	found := false
	for _, x := range ix.m.Tenants() { // IDs are unique among them
		if x.ID == d.Tenant && n.Admits(x.Name) {
			t, found = x, true
			break
		}
	}
	if !found {
		return deny("destination %s: unknown tenant id %d in network %s: dropped", p.Dst, d.Tenant, n.Name)
	}
	switch t.Isolation {
	case api.IsolationNone:
		return allow("tenant isolation of %s: none (open to all)", t.Name)
	case api.IsolationSegment:
		var seg *api.Segment
		for _, s := range ix.m.Segments(t.Name) {
			if s.ID == d.Segment {
				seg = &s
				break
			}
		}
		if seg == nil {
			return deny("tenant isolation of %s: unknown segment id %d", t.Name, d.Segment)
		}
		for _, m := range ix.m.Networks() {
			if gm, ok := ix.groupMatch(m, t.Name, seg.Name); ok && gm.Contains(p.Src) {
				return allow("segment isolation of %s/%s: same segment", t.Name, seg.Name)
			}
		}
		return deny("segment isolation of %s/%s", t.Name, seg.Name)
	}
	for _, m := range ix.m.Networks() {
		if gm, ok := ix.groupMatch(m, t.Name, ""); ok && gm.Contains(p.Src) {
			return allow("tenant isolation of %s: same tenant", t.Name)
		}
	}
	return deny("tenant isolation of %s", t.Name)
}
