package hoststate

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/plan"
)

func u8(v uint8) *uint8 { return &v }

// demoPolicies cover every target, peer and rule kind, both directions,
// deny before allow, a policy naming an absent tenant and an invalid one.
func demoPolicies() []api.Policy {
	return []api.Policy{
		{Name: "web-from-acme", Priority: 100, Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{
				{Action: "deny", Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{22}},
				{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{80, 443}, PortRanges: []string{"8000-8080", "8080-8090"}},
				{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "udp", Ports: []uint16{53}},
				{Peers: []api.Peer{{Tenant: "open", Segment: "default"}}, Protocol: "icmp", ICMPType: u8(8), ICMPCode: u8(0)},
				{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "sctp", Ports: []uint16{10, 20, 30, 40}, PortRanges: []string{"50-60"}}, // a set
			}},
		{Name: "deny-egress-mgmt", Priority: 50, Direction: []string{"egress"}, Log: true,
			AppliedTo: []api.Selector{{All: true}},
			Rules:     []api.Rule{{Action: "deny", Peers: []api.Peer{{CIDR: "172.16.0.0/12", Except: []string{"172.16.5.0/24"}}}}}},
		{Name: "ops", Direction: []string{"ingress", "egress"},
			AppliedTo: []api.Selector{{Host: "h1"}, {Host: "h2"}},
			Rules:     []api.Rule{{Peers: []api.Peer{{Host: "h3"}}, Protocol: "sctp"}, {Peers: []api.Peer{{Any: true}}, Protocol: "icmp"}}},
		{Name: "future", Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{Tenant: "gamma"}},
			Rules:     []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}}}},
		{Name: "future-peer", Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules:     []api.Rule{{Peers: []api.Peer{{Tenant: "gamma"}}}}},
		{Name: "broken", Direction: []string{"sideways"}, AppliedTo: []api.Selector{{All: true}}, Rules: []api.Rule{{}}},
		{Name: "many-peers", Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "open"}}, // a named set
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{CIDR: "172.16.0.0/12", Except: []string{"172.16.5.0/24", "172.17.0.0/16"}},
				{CIDR: "192.0.2.0/24"}, {CIDR: "198.51.100.0/24"}, {CIDR: "198.51.101.0/24"}, {CIDR: "203.0.113.7/32"}, {Host: "h2"},
				{CIDR: "100.64.0.0/10"}, {CIDR: "10.9.0.0/16"}, {CIDR: "10.10.0.0/16"}}, Protocol: "tcp", Ports: []uint16{25}}}},
	}
}

func TestPolicyGolden(t *testing.T) {
	l := demoLab(t)
	l.snap.Policies = demoPolicies()
	st := l.compute("h1", ModeFlat)
	expect.Golden(t, "policies-h1.txt", st.String())
	// Nothing from the broken policy, and it is reported.
	if !strings.Contains(strings.Join(st.Problems, "\n"), "broken") {
		t.Errorf("broken policy not reported: %q", st.Problems)
	}
	nftCheck(t, st.Firewall)

	// With an IPv6 network too (beta only): ip6 matches and icmpv6.
	l.snap.Networks = append(l.snap.Networks, api.Network{Name: "v6", CIDR: "fd00::/48",
		Fields:  []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 8}},
		Tenants: []string{"beta"}})
	p6, err := plan.Parse(l.snap.Networks[1].Spec())
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.snap.Hosts {
		loc := plan.Loc{Host: uint64(i + 1)}
		c, _ := p6.HostCIDR(loc)
		l.snap.Hosts[i].Slots = append(l.snap.Hosts[i].Slots, api.HostSlot{Network: "v6", Loc: loc, CIDR: c})
	}
	l.snap.Policies = append(l.snap.Policies, api.Policy{Name: "v6-peers", Direction: []string{"ingress", "egress"},
		AppliedTo: []api.Selector{{Tenant: "beta"}},
		Rules: []api.Rule{{Peers: []api.Peer{{CIDR: "fd00:1::/32", Except: []string{"fd00:1:2::/48", "fd00:1:3::/48"}}}, Protocol: "icmp", ICMPType: u8(128)},
			{Action: "deny", Peers: []api.Peer{{Tenant: "beta", Segment: "db"}, {Host: "h2"}}, Protocol: "udp", PortRanges: []string{"1000-2000"}}}})
	st = l.compute("h1", ModeFlat)
	expect.Golden(t, "policies-v6-h1.txt", st.String())
	nftCheck(t, st.Firewall)
}

// nftCheck checks the ruleset with the kernel (nft -c: not applied) in a
// throwaway network namespace, when root.
func nftCheck(t *testing.T, rs Ruleset) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	f := filepath.Join(t.TempDir(), "rs.nft")
	os.WriteFile(f, []byte(rs.String()), 0o644)
	if out, err := exec.Command("unshare", "-n", "nft", "-c", "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("nft -c: %v\n%s\n%s", err, out, rs.String())
	}
}

// Rule and element counts depend on the policies, not on how many hosts
// and endpoints exist.
func TestPolicyRuleCountIndependentOfScale(t *testing.T) {
	count := func(hosts, eps int) (int, int) {
		l := newLab(t, hosts)
		l.tenant("acme", 1, "", "default")
		l.tenant("beta", 2, api.IsolationSegment, "web", "db")
		l.tenant("open", 3, api.IsolationNone, "default")
		for h := 1; h <= hosts; h++ {
			for e := 1; e <= eps; e++ {
				l.endpoint(uint64(h), uint64(1+e%3), 0, uint64(e))
			}
		}
		l.snap.Policies = demoPolicies()
		st := l.compute("h1", ModeFlat)
		return st.Firewall.RuleCount(), st.Firewall.ElementCount()
	}
	r1, e1 := count(3, 1)
	r2, e2 := count(200, 50)
	if r1 != r2 || e1 != e2 {
		t.Fatalf("3 hosts x 1 endpoint: %d rules %d elements; 200 hosts x 50 endpoints: %d rules %d elements", r1, e1, r2, e2)
	}
}

// A policy change touches only the policy chains.
func TestPolicyChangeOnlyPolicyChains(t *testing.T) {
	l := demoLab(t)
	before := l.compute("h1", ModeFlat).Firewall
	l.snap.Policies = demoPolicies()
	after := l.compute("h1", ModeFlat).Firewall
	strip := func(rs Ruleset) string {
		var b strings.Builder
		for _, c := range rs.Chains {
			if !IsPolicyChain(c.Name) {
				fmt.Fprintf(&b, "%s %v\n", c.Name, c.Rules)
			}
		}
		fmt.Fprint(&b, rs.Maps)
		return b.String()
	}
	if strip(before) != strip(after) {
		t.Fatalf("non-policy chains changed:\n%s\n---\n%s", strip(before), strip(after))
	}
}

// Every policy rule names its policy (the dispatch rules, a verdict map
// or a goto, name none); WithoutPolicies drops exactly those rules,
// leaving the chains, the other rules and the input alone.
func TestWithoutPolicies(t *testing.T) {
	l := demoLab(t)
	l.snap.Policies = demoPolicies()
	rs := l.compute("h1", ModeFlat).Firewall
	names := rs.Policies()
	if len(names) < 2 {
		t.Fatalf("policies %v: the demo needs two", names)
	}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			dispatch := r.Policy == "" && r.Comment == "" && (strings.HasPrefix(r.Expr, "goto ") || strings.Contains(r.Expr, " vmap { "))
			if IsPolicyChain(c.Name) && c.Name != ChainPolicies && c.Name != ChainPoliciesEgress && !dispatch && (r.Policy == "" || !strings.Contains(r.Comment, "policy "+r.Policy+" ")) {
				t.Errorf("chain %s rule %q (comment %q) names policy %q", c.Name, r.Expr, r.Comment, r.Policy)
			}
		}
	}
	before := rs.String()
	drop := names[0]
	out := rs.WithoutPolicies(func(p string) bool { return p == drop })
	if rs.String() != before {
		t.Fatal("WithoutPolicies modified its input")
	}
	if got := out.Policies(); len(got) != len(names)-1 || slices.Contains(got, drop) {
		t.Fatalf("policies after dropping %s: %v", drop, got)
	}
	dropped := 0
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if r.Policy == drop {
				dropped++
			}
		}
	}
	if len(out.Chains) != len(rs.Chains) || out.RuleCount() != rs.RuleCount()-dropped {
		t.Fatalf("chains %d->%d, rules %d->%d, dropped %d", len(rs.Chains), len(out.Chains), rs.RuleCount(), out.RuleCount(), dropped)
	}
	if all := rs.WithoutPolicies(func(string) bool { return true }); len(all.Policies()) != 0 {
		t.Fatalf("policies left: %v", all.Policies())
	}
}
