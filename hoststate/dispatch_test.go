package hoststate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/policy"
)

// dispatchLab: hosts h1..h3 in three networks: net1 10.0.0.0/8 (host 8 |
// tenant 4 | segment 4, every tenant), net2 172.16.0.0/12 (host 4 |
// tenant 4, no segment bits; acme, open and solo only) and v6 fd00::/48
// (host 8 | tenant 8 | segment 8; beta and solo only). Tenants acme (1,
// tenant: a, b), beta (2, segment: web, db, cache), open (3, none:
// default), solo (4, tenant: x, y) and ghost (5, no segments). eps are
// addresses of every host, tenant and segment (and one of a segment that
// does not exist) in every network admitting the tenant, and a few outside
// every block.
func dispatchLab(t *testing.T) (*lab, []netip.Addr) {
	l := newLab(t, 3)
	l.tenant("acme", 1, "", "a", "b")
	l.tenant("beta", 2, api.IsolationSegment, "web", "db", "cache")
	l.tenant("open", 3, api.IsolationNone, "default")
	l.tenant("solo", 4, "", "x", "y")
	l.tenant("ghost", 5, "")
	nets := []api.Network{
		{Name: "net2", CIDR: "172.16.0.0/12", Fields: []plan.Field{{Name: "host", Bits: 4}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 0}}, Tenants: []string{"acme", "open", "solo"}},
		{Name: "v6", CIDR: "fd00::/48", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 8}}, Tenants: []string{"beta", "solo"}},
	}
	l.snap.Networks = append(l.snap.Networks, nets...)
	plans := []*plan.Plan{l.plan}
	for _, n := range nets {
		p, err := plan.Parse(n.Spec())
		if err != nil {
			t.Fatal(err)
		}
		plans = append(plans, p)
		for i := range l.snap.Hosts {
			loc := plan.Loc{Host: uint64(i + 1)}
			c, err := p.HostCIDR(loc)
			if err != nil {
				t.Fatal(err)
			}
			l.snap.Hosts[i].Slots = append(l.snap.Hosts[i].Slots, api.HostSlot{Network: n.Name, Loc: loc, CIDR: c})
		}
	}
	var eps []netip.Addr
	for i, p := range plans {
		for h := uint64(1); h <= 3; h++ {
			for tn := uint64(1); tn <= 6; tn++ {
				for s := uint64(0); s <= 3; s++ {
					if p.SegmentBits() == 0 && s > 0 || i == 1 && tn == 2 {
						continue
					}
					ip, err := p.Address(plan.Loc{Host: h}, tn, s, 1+s)
					if err != nil {
						t.Fatal(err)
					}
					eps = append(eps, ip)
				}
			}
		}
	}
	eps = append(eps, netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("192.168.0.3"), netip.MustParseAddr("8.8.8.8"),
		netip.MustParseAddr("fd00:0:0:900::1"), netip.MustParseAddr("fd00:1::1"))
	return l, eps
}

// randomSets: address sets sa and sb of random members among eps (sc,
// which policies also name, does not exist).
func randomSets(r *rand.Rand, eps []netip.Addr) []api.AddressSet {
	var out []api.AddressSet
	for _, name := range []string{"sa", "sb"} {
		s := api.AddressSet{Name: name}
		for _, a := range eps {
			if r.IntN(4) == 0 {
				s.Addresses = append(s.Addresses, a)
			}
		}
		out = append(out, s)
	}
	return out
}

// randomPolicies: policies over the dispatch lab's tenants, segments and
// hosts, applied to all, a host, tenants and segments, and address sets
// (alone, with all or narrowing a tenant), interleaved by tier and
// priority (few values, so ties are ordered by name); rules allow, deny
// or pass.
func randomPolicies(r *rand.Rand, n int) []api.Policy {
	tenants := map[string][]string{"acme": {"a", "b"}, "beta": {"web", "db", "cache"}, "open": {"default"}, "solo": {"x", "y"}, "ghost": {"none"}}
	names := []string{"acme", "beta", "open", "solo", "ghost", "nobody"}
	group := func() (string, string) {
		tn := names[r.IntN(len(names))]
		if ss := tenants[tn]; ss != nil && r.IntN(2) == 0 {
			return tn, ss[r.IntN(len(ss))]
		}
		return tn, ""
	}
	host := func() string { return fmt.Sprintf("h%d", 1+r.IntN(4)) }
	set := func() string { return []string{"sa", "sb", "sa", "sb", "sc"}[r.IntN(5)] }
	var ps []api.Policy
	for i := range n {
		p := api.Policy{Name: fmt.Sprintf("p%02d", i), Tier: []string{"", "", "admin", "baseline"}[r.IntN(4)], Priority: []int{0, 10, 100, 100, 1000}[r.IntN(5)],
			Direction: [][]string{{"ingress"}, {"egress"}, {"ingress", "egress"}}[r.IntN(3)], Log: r.IntN(4) == 0}
		for range 1 + r.IntN(2) {
			var s api.Selector
			switch r.IntN(6) {
			case 0:
				s.All = true
			case 1:
				s.Host = host()
			case 2:
				s.Set = set()
				switch r.IntN(3) {
				case 0:
					s.All = true
				case 1:
					s.Tenant, s.Segment = group()
				}
			default:
				s.Tenant, s.Segment = group()
			}
			p.AppliedTo = append(p.AppliedTo, s)
		}
		for range 1 + r.IntN(3) {
			ru := api.Rule{Action: []string{"", "allow", "deny", "pass"}[r.IntN(4)], Protocol: []string{"", "tcp", "tcp", "udp", "icmp"}[r.IntN(5)]}
			for range r.IntN(3) {
				var pe api.Peer
				switch r.IntN(6) {
				case 0:
					pe.Any = true
				case 5:
					pe.Set = set()
				case 1:
					pe.Host = host()
				case 2:
					pe.CIDR = []string{"10.1.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "fd00::/48", "0.0.0.0/0"}[r.IntN(5)]
					if r.IntN(2) == 0 {
						pe.Except = []string{map[string]string{"10.1.0.0/16": "10.1.16.0/20", "10.0.0.0/8": "10.2.0.0/16",
							"172.16.0.0/12": "172.17.0.0/16", "fd00::/48": "fd00:0:0:200::/56", "0.0.0.0/0": "10.0.0.0/9"}[pe.CIDR]}
					}
				default:
					pe.Tenant, pe.Segment = group()
				}
				ru.Peers = append(ru.Peers, pe)
			}
			if r.IntN(6) == 0 {
				// Many prefixes: a named set (maxSplitPeers), holes carved.
				for range 9 + r.IntN(4) {
					h, tn, sg := 1+r.IntN(3), 1+r.IntN(5), r.IntN(3)
					pe := api.Peer{CIDR: fmt.Sprintf("10.%d.%d.0/24", h, tn<<4|sg)}
					switch r.IntN(4) {
					case 0:
						pe.CIDR = fmt.Sprintf("10.%d.0.0/16", h)
						pe.Except = []string{fmt.Sprintf("10.%d.%d.0/20", h, tn<<4), fmt.Sprintf("10.%d.%d.0/24", h, (tn+1)<<4)}
					case 1:
						pe.CIDR = fmt.Sprintf("172.%d.0.0/16", 16+h)
					case 2:
						pe.CIDR = fmt.Sprintf("fd00:0:0:%d%02x::/64", h, tn)
					}
					ru.Peers = append(ru.Peers, pe)
				}
			}
			switch ru.Protocol {
			case "tcp", "udp":
				if r.IntN(2) == 0 {
					ru.Ports = []uint16{[]uint16{22, 80, 443}[r.IntN(3)]}
				} else if r.IntN(2) == 0 {
					ru.PortRanges = []string{"79-81"}
				}
			case "icmp":
				if r.IntN(2) == 0 {
					v := uint8(8)
					ru.ICMPType = &v
				}
			}
			p.Rules = append(p.Rules, ru)
		}
		ps = append(ps, p)
	}
	return ps
}

// The dispatch keeps the semantics: for random policies (all, host,
// tenant and segment targets interleaved by priority; several networks,
// one without segment bits, one IPv6, tenants not admitted to some) and
// random packets, the hosts' rulesets (run by the evaluator on the
// source's host, then on the destination's) decide as policy.Trace does.
// And a packet meets only rules of policies that apply to its endpoint
// (the destination in the ingress stage, the source in the egress stage).
func TestPolicyDispatchAgreesWithTrace(t *testing.T) {
	pieceName := regexp.MustCompile(`\` + pieceSuffix + `[0-9a-f]{12}$`)
	l, eps := dispatchLab(t)
	r := rand.New(rand.NewPCG(17, 1))
	hostOf := func(a netip.Addr) string {
		for _, h := range l.snap.Hosts {
			for _, s := range h.Slots {
				if s.CIDR.Contains(a) {
					return h.Name
				}
			}
		}
		return ""
	}
	plans := map[string]*plan.Plan{}
	for _, n := range l.snap.Networks {
		p, err := plan.Parse(n.Spec())
		if err != nil {
			t.Fatal(err)
		}
		plans[n.Name] = p
	}
	// applies reports whether policy p applies to endpoint a, but for
	// the narrowing by address sets: a set narrowing a tenant is a match
	// in the tenant's chain (dispatch is by tenant and segment), so its
	// rules are met by the tenant's other endpoints too; a set alone is
	// dispatched as all.
	applies := func(p api.Policy, a netip.Addr) bool {
		for _, s := range p.AppliedTo {
			switch {
			case s.All, s.Set != "" && s.Tenant == "" && s.Host == "":
				return true
			case s.Host != "":
				if s.Host == hostOf(a) {
					return true
				}
				continue
			}
			for _, n := range l.snap.Networks {
				d, err := plans[n.Name].Decode(a)
				if err != nil || len(n.Tenants) > 0 && !slices.Contains(n.Tenants, s.Tenant) {
					continue
				}
				for _, tn := range l.snap.Tenants {
					if tn.Name != s.Tenant || tn.ID != d.Tenant {
						continue
					}
					if s.Segment == "" {
						return true
					}
					for _, sg := range l.snap.Segments {
						if sg.Tenant == tn.Name && sg.Name == s.Segment && sg.ID == d.Segment {
							return true
						}
					}
				}
			}
		}
		return false
	}
	seen := map[string]int{}
	for round := range 60 {
		l.snap.Policies = randomPolicies(r, 2+r.IntN(8))
		l.snap.AddressSets = randomSets(r, eps)
		byName := map[string]api.Policy{}
		for _, p := range l.snap.Policies {
			byName[p.Name] = p
		}
		rulesets := map[string]Ruleset{}
		for _, h := range l.snap.Hosts {
			st := l.compute(h.Name, ModeFlat)
			rulesets[h.Name] = st.Firewall
			for _, set := range st.Firewall.Sets {
				if strings.HasPrefix(set.Name, policy.PeerSetPrefix) {
					seen["peer set"]++
				}
			}
			for _, set := range st.Firewall.Sets {
				if strings.HasPrefix(set.Name, policy.AddressSetPrefix) {
					seen["address set"]++
				}
			}
			for _, c := range st.Firewall.Chains {
				for _, ru := range c.Rules {
					switch {
					case strings.Contains(ru.Expr, "@"+policy.AddressSetPrefix):
						seen["rule naming an address set"]++
					case strings.HasPrefix(ru.Expr, "goto policy-") && pieceName.MatchString(ru.Expr):
						seen["goto the next piece"]++
					case strings.HasPrefix(ru.Expr, "goto policy-") && !strings.HasSuffix(ru.Expr, restSuffix):
						seen["goto the next tier"]++
					}
				}
				switch {
				case strings.HasPrefix(c.Name, ChainPolicyIngress+"-admin"), strings.HasPrefix(c.Name, ChainPolicyEgress+"-admin"):
					seen["admin tier chain"]++
				case strings.HasPrefix(c.Name, ChainPolicyIngress+"-baseline"), strings.HasPrefix(c.Name, ChainPolicyEgress+"-baseline"):
					seen["baseline tier chain"]++
				}
				switch {
				case strings.HasSuffix(c.Name, restSuffix):
					seen["rest chain"]++
				case strings.Contains(c.Name, ".s"):
					seen["segment chain"]++
				case strings.Contains(c.Name, "net2.t"):
					seen["chain in the network without segment bits"]++
				case strings.Contains(c.Name, "v6.t"):
					seen["chain in the v6 network"]++
				}
			}
		}
		for range 200 {
			src, dst := eps[r.IntN(len(eps))], eps[r.IntN(len(eps))]
			if src.Is4() != dst.Is4() {
				continue
			}
			pk := packet{saddr: src, daddr: dst, proto: []string{"tcp", "udp", "icmp"}[r.IntN(3)]}
			if pk.proto == "icmp" {
				pk.icmpType = uint8(8 * r.IntN(2))
			} else {
				pk.port = []uint16{22, 80, 81, 443}[r.IntN(4)]
			}
			met := 0
			pk.met = func(chain string, ru Rule) {
				met++
				end := dst
				if PolicyChainStage(chain) == policy.StageEgress {
					end = src
				}
				if !applies(byName[ru.Policy], end) {
					t.Fatalf("round %d: %s -> %s meets rule %q of policy %s in chain %s, which does not apply to %s",
						round, src, dst, ru.Expr, ru.Policy, chain, end)
				}
			}
			got := "accept"
			hs, hd := hostOf(src), hostOf(dst)
			if hs != "" {
				got = evaluatePacket(t, rulesets[hs], pk)
			}
			// A host's own address sends to its endpoints through the
			// output hook: no forward chain.
			own := slices.ContainsFunc(l.snap.Hosts, func(h api.Host) bool { return h.Name == hd && h.IP == src })
			if got == "accept" && hd != "" && hd != hs && !own {
				got = evaluatePacket(t, rulesets[hd], pk)
			}
			tr, err := policy.Trace(l.snap, policy.Packet{Src: src, Dst: dst, Proto: pk.proto, Port: pk.port, ICMPType: pk.icmpType})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{api.ActionAllow: "accept", api.ActionDeny: "drop"}[tr.Verdict]
			if got != want {
				var b strings.Builder
				for _, p := range l.snap.Policies {
					fmt.Fprintf(&b, "%+v\n", p)
				}
				t.Fatalf("round %d: %s -> %s %s port %d icmp %d: rulesets %s, trace %s (%s)\npolicies:\n%s\nsource host %s:\n%s\ndestination host %s:\n%s",
					round, src, dst, pk.proto, pk.port, pk.icmpType, got, want, tr.Decision.Reason, b.String(), hs, rulesets[hs], hd, rulesets[hd])
			}
			seen[got]++
			if tr.Decision.Policy != "" {
				seen["decided by a policy"]++
				seen["decided by tier "+byName[tr.Decision.Policy].Tier]++
			}
			for _, st := range tr.Steps {
				if st.Result == api.ActionPass {
					seen["passed"]++
				}
			}
			if met > 0 {
				seen["met policy rules"]++
			}
		}
	}
	for _, k := range []string{"accept", "drop", "decided by a policy", "met policy rules", "rest chain", "segment chain", "peer set",
		"chain in the network without segment bits", "chain in the v6 network",
		"address set", "rule naming an address set", "goto the next tier", "goto the next piece", "admin tier chain", "baseline tier chain",
		"decided by tier admin", "decided by tier ", "decided by tier baseline", "passed"} {
		if seen[k] == 0 {
			t.Errorf("no case of %q: the test does not cover it (%v)", k, seen)
		}
	}
	t.Logf("%v", seen)
}
