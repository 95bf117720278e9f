package hoststate

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/romana/romana/api"
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
	}
}

func TestPolicyGolden(t *testing.T) {
	l := demoLab(t)
	l.snap.Policies = demoPolicies()
	st := l.compute("h1", ModeFlat)
	golden(t, "policies-h1.txt", st.String())
	// Nothing from the broken policy, and it is reported.
	if !strings.Contains(strings.Join(st.Problems, "\n"), "broken") {
		t.Errorf("broken policy not reported: %q", st.Problems)
	}
	// The ruleset is valid nft (checked, not applied, in a throwaway
	// network namespace).
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("nft"); err == nil {
			f := filepath.Join(t.TempDir(), "rs.nft")
			os.WriteFile(f, []byte(st.Firewall.String()), 0o644)
			if out, err := exec.Command("unshare", "-n", "nft", "-c", "-f", f).CombinedOutput(); err != nil {
				t.Fatalf("nft -c: %v\n%s\n%s", err, out, st.Firewall.String())
			}
		}
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
