package policy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

// FuzzCompileTrace: for any policies (a JSON policy or array of
// policies, or, from input that is not JSON, policies genPolicies builds
// from the bytes), Trace's verdict and what decided it (the stage, and the
// policy and rule for a policy decision) equal those of refEval, a
// reference evaluator written from the semantics in docs/policy.md
// directly on api.Policy, without Compile's expansion into targets, peers
// and port sets. The packets are chosen by a generator seeded by the
// input (fuzzPackets), so that a failure reproduces. Every compiled rule
// must also render to one line naming its policy and rule.
//
// It fails within seconds of fuzzing on compiler bugs such as ranges
// merged across a one-port gap, an except equal to its cidr ignored,
// name ties ordered backwards, a host peer without its underlay address,
// or an egress allow taken as final.
func FuzzCompileTrace(f *testing.F) {
	f.Add(`{"name":"p","direction":["ingress","egress"],"appliedTo":[{"tenant":"acme"}],"rules":[{"peers":[{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}],"protocol":"tcp","ports":[80,443],"portRanges":["8000-8080"]}]}`)
	f.Add(`{"name":"q","priority":5,"direction":["egress"],"appliedTo":[{"all":true},{"host":"h2"}],"rules":[{"action":"deny","peers":[{"host":"h3"},{"tenant":"beta","segment":"db"}],"protocol":"icmp","icmpType":8,"icmpCode":0}]}`)
	f.Add(`{"name":"r","direction":["ingress"],"appliedTo":[{"tenant":"nobody","segment":"x"}],"rules":[{"peers":[{"any":true}],"protocol":"udp","ports":[1,2,3,4,5,6]}]}`)
	// Precedence: a deny of a lower priority value wins over an allow; a
	// name listed twice keeps the first in precedence order; an egress
	// allow does not open what isolation closes.
	f.Add(`[{"name":"b","priority":10,"direction":["ingress"],"appliedTo":[{"tenant":"beta","segment":"web"}],"rules":[{"action":"deny","peers":[{"tenant":"acme"}],"protocol":"tcp","ports":[22]},{"peers":[{"tenant":"acme"}],"protocol":"tcp","portRanges":["20-30"]}]},` +
		`{"name":"a","priority":10,"direction":["ingress","egress"],"appliedTo":[{"all":true}],"rules":[{"peers":[{"cidr":"10.1.0.0/16","except":["10.1.16.0/20","10.1.16.0/24"]}]}]},` +
		`{"name":"a","priority":3,"direction":["egress"],"appliedTo":[{"host":"h1"}],"rules":[{"action":"deny","peers":[{"host":"h2"}],"protocol":"sctp","ports":[9]}]},` +
		`{"name":"c","direction":["egress"],"appliedTo":[{"tenant":"acme"}],"rules":[{"protocol":"icmp"}]}]`)
	// More prefix peers than maxSplitPeers: one named set, holes carved.
	f.Add(`{"name":"s","direction":["ingress","egress"],"appliedTo":[{"tenant":"beta","segment":"web"},{"all":true}],"rules":[{"action":"deny","peers":[` +
		`{"cidr":"10.1.0.0/16","except":["10.1.16.0/20","10.1.33.0/24"]},{"cidr":"10.2.32.0/20"},{"cidr":"10.2.48.0/24"},{"host":"h3"},{"cidr":"10.1.16.7/32"},` +
		`{"cidr":"192.168.0.0/30"},{"cidr":"10.3.0.0/17","except":["10.3.0.0/18"]},{"tenant":"acme"},{"cidr":"10.2.33.0/24"},{"cidr":"10.200.0.0/16"}],"protocol":"tcp","ports":[80]}]}`)
	// Not JSON: the bytes choose policies from a vocabulary (genPolicies).
	f.Add("\x02\x01\x00\x03\x04\x05\x11\x07\x02\x09\x01\x03\x00\x06\x02\x05\x01\x08\x0a\x04")
	f.Fuzz(func(t *testing.T, js string) {
		var ps []api.Policy
		var p api.Policy
		switch {
		case json.Unmarshal([]byte(js), &ps) == nil:
		case json.Unmarshal([]byte(js), &p) == nil:
			ps = []api.Policy{p}
		default:
			ps = genPolicies([]byte(js))
		}
		snap := traceSnap(t, ps...)
		for _, h := range []string{"h1", "h2", "h3"} {
			c := Compile(snap, h)
			for _, r := range append(c.Egress, c.Ingress...) {
				e := r.Expr()
				if strings.Contains(e, "\n") || r.Comment() != fmt.Sprintf("policy %s rule %d", r.Policy, r.Index) ||
					!slices.ContainsFunc(ps, func(p api.Policy) bool { return p.Name == r.Policy }) {
					t.Fatalf("rule %q comment %q", e, r.Comment())
				}
			}
		}
		ref := newRefEval(snap)
		for _, pk := range fuzzPackets(js, snap, ps) {
			tr, err := Trace(snap, pk)
			if err != nil {
				t.Fatalf("trace %s: %v", packetString(pk), err)
			}
			want := ref.decide(pk)
			got := decisionOf(tr)
			if got != want {
				t.Fatalf("trace %s:\n got %s\nwant %s\nsteps: %+v", packetString(pk), got, want, tr.Steps)
			}
		}
	})
}

func packetString(p Packet) string {
	return fmt.Sprintf("%s -> %s %s port %d icmp %d/%d", p.Src, p.Dst, p.Proto, p.Port, p.ICMPType, p.ICMPCode)
}

// decision is what a trace decides, in a form both evaluators produce.
type decision struct {
	verdict string // allow or deny
	stage   string // egress, ingress, isolation, or "" (no ingress enforcement)
	policy  string // for a policy decision
	rule    int
}

func (d decision) String() string {
	if d.policy != "" {
		return fmt.Sprintf("%s by %s stage, policy %s rule %d", d.verdict, d.stage, d.policy, d.rule)
	}
	return fmt.Sprintf("%s by %q stage", d.verdict, d.stage)
}

func decisionOf(tr api.Trace) decision {
	d := decision{verdict: tr.Verdict, stage: tr.Decision.Stage, policy: tr.Decision.Policy, rule: -1}
	if tr.Decision.Stage == StageIngress && tr.Decision.Policy == "" {
		// No ingress enforcement: a destination in no host's block (a
		// host's address among them), or a host's own address sending
		// to its own endpoint.
		d.stage = ""
	}
	if tr.Decision.Rule != nil {
		d.rule = *tr.Decision.Rule
	}
	return d
}

// refEval evaluates policies on the trace snapshot (traceSnap) from their
// definition: hosts h1..h3 own 10.<i>.0.0/16 and underlay 192.168.0.<i>;
// an address 10.<host>.<tenant<<4|segment>.<endpoint>; tenants acme (1,
// isolation tenant), beta (2, segment: web 0, db 1), open (3, none).
type refEval struct {
	snap     api.Snapshot
	policies []api.Policy // valid, in precedence order, one per name
}

func newRefEval(snap api.Snapshot) *refEval {
	ps := make([]api.Policy, len(snap.Policies))
	for i, p := range snap.Policies {
		ps[i] = Normalize(p)
	}
	// Precedence: tier (admin, default, baseline), ascending priority,
	// ties by name, then listing order.
	tier := map[string]int{"admin": 0, "": 1, "baseline": 2}
	slices.SortStableFunc(ps, func(a, b api.Policy) int {
		return cmp.Or(cmp.Compare(tier[a.Tier], tier[b.Tier]), cmp.Compare(a.Priority, b.Priority), strings.Compare(a.Name, b.Name))
	})
	e := &refEval{snap: snap}
	seen := map[string]bool{}
	for _, p := range ps {
		if seen[p.Name] {
			continue // the first in precedence order counts
		}
		seen[p.Name] = true
		if Validate(p) == nil {
			e.policies = append(e.policies, p)
		}
	}
	return e
}

var refPool = netip.MustParsePrefix("10.0.0.0/8")

// host returns the host whose block holds a, or "".
func (e *refEval) host(a netip.Addr) string {
	if !a.Is4() || !refPool.Contains(a) {
		return ""
	}
	b := a.As4()
	for _, h := range e.snap.Hosts {
		if h.Name == "h"+strconv.Itoa(int(b[1])) {
			return h.Name
		}
	}
	return ""
}

// group returns a's tenant and segment ids; ok is false outside the pool.
func group(a netip.Addr) (tenant, segment uint64, ok bool) {
	if !a.Is4() || !refPool.Contains(a) {
		return 0, 0, false
	}
	b := a.As4()
	return uint64(b[2] >> 4), uint64(b[2] & 15), true
}

// inGroup reports whether a belongs to tenant (and segment, if not "").
func (e *refEval) inGroup(a netip.Addr, tenant, segment string) bool {
	tid, sid, ok := group(a)
	if !ok {
		return false
	}
	i := slices.IndexFunc(e.snap.Tenants, func(t api.Tenant) bool { return t.Name == tenant })
	if i < 0 || e.snap.Tenants[i].ID != tid {
		return false
	}
	if segment == "" {
		return true
	}
	j := slices.IndexFunc(e.snap.Segments, func(s api.Segment) bool { return s.Tenant == tenant && s.Name == segment })
	return j >= 0 && e.snap.Segments[j].ID == sid
}

// inSet reports whether a is a member of the snapshot's address set
// called name (none when it does not exist).
func (e *refEval) inSet(name string, a netip.Addr) bool {
	for _, s := range e.snap.AddressSets {
		if s.Name == name {
			return slices.Contains(s.Addresses, a)
		}
	}
	return false
}

// applies reports whether p applies to endpoint a on host: a selector
// with a set applies to the set's members that it selects without it
// (all of them when it names nothing else).
func (e *refEval) applies(p api.Policy, host string, a netip.Addr) bool {
	for _, s := range p.AppliedTo {
		if s.Set != "" && !e.inSet(s.Set, a) {
			continue
		}
		switch {
		case s.All, s.Host != "" && s.Host == host:
			return true
		case s.Tenant != "" && e.inGroup(a, s.Tenant, s.Segment):
			return true
		case s.Set != "" && s.Tenant == "" && s.Host == "":
			return true
		}
	}
	return false
}

// peer reports whether a is one of the rule's peers.
func (e *refEval) peer(r api.Rule, a netip.Addr) bool {
	if len(r.Peers) == 0 {
		return true
	}
	for _, pe := range r.Peers {
		switch {
		case pe.Any:
			return true
		case pe.Set != "":
			if e.inSet(pe.Set, a) {
				return true
			}
		case pe.CIDR != "":
			c := netip.MustParsePrefix(pe.CIDR) // valid
			if c.Addr().Is4() != a.Is4() || !c.Contains(a) {
				continue
			}
			if !slices.ContainsFunc(pe.Except, func(x string) bool { return netip.MustParsePrefix(x).Contains(a) }) {
				return true
			}
		case pe.Tenant != "":
			if e.inGroup(a, pe.Tenant, pe.Segment) {
				return true
			}
		case pe.Host != "":
			for _, h := range e.snap.Hosts {
				if h.Name == pe.Host && (h.IP == a || slices.ContainsFunc(h.Slots, func(s api.HostSlot) bool { return s.CIDR.Contains(a) })) {
					return true
				}
			}
		}
	}
	return false
}

// matches reports whether rule r matches pk, peer being pk's other side.
func (e *refEval) matches(r api.Rule, pk Packet, peer netip.Addr) bool {
	if !e.peer(r, peer) {
		return false
	}
	switch r.Protocol {
	case api.ProtoAny:
		return true
	case api.ProtoICMP:
		return pk.Proto == api.ProtoICMP && (r.ICMPType == nil || *r.ICMPType == pk.ICMPType) &&
			(r.ICMPCode == nil || *r.ICMPCode == pk.ICMPCode)
	}
	if pk.Proto != r.Protocol {
		return false
	}
	if len(r.Ports) == 0 && len(r.PortRanges) == 0 {
		return true
	}
	if slices.Contains(r.Ports, pk.Port) {
		return true
	}
	for _, pr := range r.PortRanges {
		lo, hi := portRange(pr)
		if lo <= pk.Port && pk.Port <= hi {
			return true
		}
	}
	return false
}

func portRange(s string) (lo, hi uint16) {
	a, b, _ := strings.Cut(s, "-")
	l, _ := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	h, _ := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	return uint16(l), uint16(h)
}

// stage returns the first rule of the stage's policies that applies to
// the endpoint local (on host) and matches pk; a pass skips the rest of
// its tier's policies.
func (e *refEval) stage(stage, host string, local, peer netip.Addr, pk Packet) (decision, bool) {
	passed := "-"
policies:
	for _, p := range e.policies {
		if p.Tier == passed || !slices.Contains(p.Direction, stage) || !e.applies(p, host, local) {
			continue
		}
		for i, r := range p.Rules {
			if e.matches(r, pk, peer) {
				if r.Action == api.ActionPass {
					passed = p.Tier
					continue policies
				}
				return decision{verdict: r.Action, stage: stage, policy: p.Name, rule: i}, true
			}
		}
	}
	return decision{}, false
}

func (e *refEval) decide(pk Packet) decision {
	if src := e.host(pk.Src); src != "" {
		if d, ok := e.stage(StageEgress, src, pk.Src, pk.Dst, pk); ok && d.verdict == api.ActionDeny {
			return d
		}
	}
	dst := e.host(pk.Dst)
	if dst == "" {
		return decision{verdict: api.ActionAllow, rule: -1}
	}
	if slices.ContainsFunc(e.snap.Hosts, func(h api.Host) bool { return h.Name == dst && h.IP == pk.Src }) {
		return decision{verdict: api.ActionAllow, rule: -1} // the host's own output hook
	}
	if d, ok := e.stage(StageIngress, dst, pk.Dst, pk.Src, pk); ok {
		return d
	}
	iso := decision{verdict: api.ActionDeny, stage: StageIsolation, rule: -1}
	tid, sid, _ := group(pk.Dst)
	i := slices.IndexFunc(e.snap.Tenants, func(t api.Tenant) bool { return t.ID == tid })
	if i < 0 {
		return iso // unknown tenant
	}
	t := e.snap.Tenants[i]
	stid, ssid, ok := group(pk.Src)
	switch t.Isolation {
	case api.IsolationNone:
		iso.verdict = api.ActionAllow
	case api.IsolationSegment:
		known := slices.ContainsFunc(e.snap.Segments, func(s api.Segment) bool { return s.Tenant == t.Name && s.ID == sid })
		if known && ok && stid == tid && ssid == sid {
			iso.verdict = api.ActionAllow
		}
	default:
		if ok && stid == tid {
			iso.verdict = api.ActionAllow
		}
	}
	return iso
}

// fuzzPackets returns packets for the policies, chosen by a generator
// seeded by the input: half aimed at a rule (an endpoint a policy selects
// on the side its direction names, a peer of the rule on the other, the
// rule's protocol, ports at and around its ports and ranges, its ICMP type
// and code or the next), half from everywhere (every host, tenant and
// segment and none, the hosts' underlay addresses, outside the pool).
func fuzzPackets(js string, snap api.Snapshot, ps []api.Policy) []Packet {
	ep := func(h int, tenant, segment uint64) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(h), byte(tenant<<4 | segment), 7})
	}
	var anywhere []netip.Addr
	for h := 1; h <= 4; h++ {
		for tn := uint64(1); tn <= 4; tn++ {
			for s := uint64(0); s <= 2; s++ {
				anywhere = append(anywhere, ep(h, tn, s))
			}
		}
	}
	for i := 1; i <= 3; i++ {
		anywhere = append(anywhere, netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}))
	}
	anywhere = append(anywhere, netip.MustParseAddr("10.200.0.1"), netip.MustParseAddr("172.16.0.1"))
	// Addresses of a selector or peer.
	cidr := func(s string) []netip.Addr {
		c, err := netip.ParsePrefix(s)
		if err != nil || !c.Addr().Is4() {
			return nil
		}
		c = c.Masked()
		b := c.Addr().As4()
		var last, mid [4]byte
		for i := range 4 {
			bits := min(max(c.Bits()-8*i, 0), 8)
			last[i] = b[i] | byte(0xff>>bits)
			mid[i] = b[i] | (byte(0xa5) & byte(0xff>>bits))
		}
		return []netip.Addr{c.Addr(), netip.AddrFrom4(last), netip.AddrFrom4(mid)}
	}
	group := func(tenant, segment string) []netip.Addr {
		var out []netip.Addr
		for _, t := range snap.Tenants {
			for _, sg := range snap.Segments {
				if t.Name == tenant && sg.Tenant == tenant && (segment == "" || sg.Name == segment) {
					for h := 1; h <= 3; h++ {
						out = append(out, ep(h, t.ID, sg.ID))
					}
				}
			}
		}
		return out
	}
	set := func(name string) []netip.Addr {
		for _, s := range snap.AddressSets {
			if s.Name == name {
				return s.Addresses
			}
		}
		return nil
	}
	host := func(name string) []netip.Addr {
		for i := 1; i <= 3; i++ {
			if name == "h"+strconv.Itoa(i) {
				return []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}), ep(i, 1, 0), ep(i, 2, 0), ep(i, 2, 1), ep(i, 3, 0)}
			}
		}
		return nil
	}
	h := fnv.New64a()
	h.Write([]byte(js))
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	pick := func(n int) int { return rng.IntN(n) }
	from := func(as []netip.Addr) netip.Addr {
		if len(as) == 0 || pick(4) == 0 {
			return anywhere[pick(len(anywhere))]
		}
		return as[pick(len(as))]
	}
	port := func(r api.Rule) uint16 {
		ports := []uint16{1, 22, 53, 80, 443, 8080, 65535}
		near := func(p uint16) { ports = append(ports, p, max(p, 2)-1, min(p, 65534)+1) }
		for _, x := range r.Ports {
			near(x)
		}
		for _, x := range r.PortRanges {
			lo, hi := portRange(x)
			near(lo)
			near(hi)
		}
		return max(ports[pick(len(ports))], 1)
	}
	out := []Packet{{Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("fd00::2"), Proto: api.ProtoTCP, Port: 80}}
	for i := range 32 {
		var target, peer []netip.Addr
		r := api.Rule{Protocol: api.ProtoAny}
		egress := pick(2) == 0
		if len(ps) > 0 && i%2 == 0 {
			p := ps[pick(len(ps))]
			if len(p.Direction) > 0 {
				egress = p.Direction[pick(len(p.Direction))] == StageEgress
			}
			for _, s := range p.AppliedTo {
				target = append(append(append(target, group(s.Tenant, s.Segment)...), host(s.Host)...), set(s.Set)...)
				if s.All {
					target = append(target, anywhere...)
				}
			}
			if len(p.Rules) > 0 {
				r = p.Rules[pick(len(p.Rules))]
			}
			for _, pe := range r.Peers {
				peer = append(append(append(append(peer, cidr(pe.CIDR)...), group(pe.Tenant, pe.Segment)...), host(pe.Host)...), set(pe.Set)...)
				for _, x := range pe.Except {
					peer = append(peer, cidr(x)...)
				}
			}
		}
		pk := Packet{Dst: from(target), Src: from(peer), Proto: r.Protocol}
		if egress {
			pk.Src, pk.Dst = pk.Dst, pk.Src
		}
		if !slices.Contains([]string{api.ProtoTCP, api.ProtoUDP, api.ProtoSCTP, api.ProtoICMP}, pk.Proto) || pick(8) == 0 {
			pk.Proto = []string{api.ProtoTCP, api.ProtoUDP, api.ProtoSCTP, api.ProtoICMP}[pick(4)]
		}
		if pk.Proto == api.ProtoICMP {
			pk.ICMPType, pk.ICMPCode = uint8(pick(2)*8), 0
			if r.ICMPType != nil {
				pk.ICMPType = *r.ICMPType + uint8(pick(2))
			}
			if r.ICMPCode != nil {
				pk.ICMPCode = *r.ICMPCode + uint8(pick(2))
			}
		} else {
			pk.Port = port(r)
		}
		out = append(out, pk)
	}
	return out
}

// genPolicies builds up to three policies from b, each choice a byte
// picking from a vocabulary of the trace snapshot's names and of prefixes,
// ports and ranges at the edges that matter (adjacent and overlapping
// ranges, an except equal to its cidr, other families). An invalid value
// is a rare choice (one in 32), so that most policies built are valid and
// worth tracing, and some exercise the compiler's skipping.
func genPolicies(b []byte) []api.Policy {
	next := func(n int) int {
		if len(b) == 0 {
			return 0
		}
		v := int(b[0]) % n
		b = b[1:]
		return v
	}
	bad := func() bool { return next(32) == 0 }
	one := func(vs ...string) string { return vs[next(len(vs))] }
	cidrs := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.16.0/20", "10.1.16.0/24", "10.2.32.0/20", "10.2.33.0/24",
		"10.3.0.0/17", "192.168.0.0/24", "192.168.0.3/32", "0.0.0.0/0", "10.1.16.7/32", "fd00::/8"}
	u8 := func() *uint8 {
		if next(3) == 0 {
			return nil
		}
		v := []uint8{0, 3, 8, 255}[next(4)]
		return &v
	}
	tenant := func() (string, string) {
		return one("acme", "beta", "beta", "open", "nobody"), one("", "", "default", "web", "db", "x")
	}
	host := func() string { return one("h1", "h2", "h3", "h4") }
	set := func() string { return one("s1", "s2", "missing") }
	var ps []api.Policy
	for range 1 + next(3) {
		p := api.Policy{Name: one("a", "b", "c"), Tier: one("", "", "admin", "baseline"), Priority: []int{0, 1, 5, 5, 1000}[next(5)], Log: next(2) == 0,
			Direction: [][]string{{"ingress"}, {"egress"}, {"ingress", "egress"}, {"egress", "ingress"}}[next(4)]}
		if bad() {
			p.Priority = 70000
		}
		if bad() {
			p.Direction = []string{"ingress", "ingress"}
		}
		for range 1 + next(2) {
			var s api.Selector
			switch next(5) {
			case 0:
				s.All = true
			case 1:
				s.Host = host()
			case 2:
				s.Set = set()
				if next(2) == 0 {
					s.Tenant, s.Segment = tenant()
				}
			default:
				s.Tenant, s.Segment = tenant()
			}
			p.AppliedTo = append(p.AppliedTo, s)
		}
		for range 1 + next(3) {
			r := api.Rule{Action: one("", "allow", "deny", "deny", "pass"), Protocol: one("", "any", "tcp", "tcp", "udp", "sctp", "icmp", "icmp")}
			if bad() {
				r.Action = "maybe"
			}
			for range next(3) {
				var pe api.Peer
				switch next(6) {
				case 0:
					pe.Any = true
				case 5:
					pe.Set = set()
				case 1:
					pe.Host = host()
				case 2:
					pe.Tenant, pe.Segment = tenant()
				default:
					c := netip.MustParsePrefix(cidrs[next(len(cidrs))])
					pe.CIDR = c.String()
					// Holes: the cidr itself, or a longer prefix inside it.
					for range next(3) {
						x := c
						if bits := c.Bits() + next(9); bits <= c.Addr().BitLen() {
							x = netip.PrefixFrom(c.Addr(), bits)
						}
						pe.Except = append(pe.Except, x.String())
					}
					if bad() {
						pe.Except = append(pe.Except, "192.0.2.0/24")
					}
				}
				r.Peers = append(r.Peers, pe)
			}
			if r.Protocol == "tcp" || r.Protocol == "udp" || r.Protocol == "sctp" || bad() {
				for range next(4) {
					r.Ports = append(r.Ports, []uint16{1, 2, 3, 5, 6, 22, 80, 443, 65535}[next(9)])
				}
				for range next(3) {
					r.PortRanges = append(r.PortRanges, one("1-5", "7-9", "5-7", "6-6", "20-30", "8000-8080", "65530-65535"))
				}
				if bad() {
					r.PortRanges = append(r.PortRanges, "9-8")
				}
			}
			if r.Protocol == "icmp" || bad() {
				r.ICMPType, r.ICMPCode = u8(), u8()
			}
			p.Rules = append(p.Rules, r)
		}
		ps = append(ps, p)
	}
	return ps
}
