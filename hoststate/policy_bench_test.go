package hoststate

import (
	"fmt"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/policy"
)

// BenchPolicies returns n policies over tenants t0..t(tenants-1): policy i
// applies to tenant t(i%tenants) (every fourth to its segment s0; every
// fifth in both directions) with two rules: deny tcp 22 from a /16 with a
// hole, allow tcp 80, 443 and 8000-8080 from tenant t(i+1).
func BenchPolicies(n, tenants int) []api.Policy {
	ps := make([]api.Policy, n)
	for i := range ps {
		sel := api.Selector{Tenant: fmt.Sprintf("t%d", i%tenants)}
		if i%4 == 0 {
			sel.Segment = "s0"
		}
		dir := []string{"ingress"}
		if i%5 == 0 {
			dir = append(dir, "egress")
		}
		ps[i] = api.Policy{Name: fmt.Sprintf("p%05d", i), Priority: 1 + i%100, Direction: dir, AppliedTo: []api.Selector{sel},
			Rules: []api.Rule{
				{Action: "deny", Peers: []api.Peer{{CIDR: fmt.Sprintf("172.%d.0.0/16", 16+i%16), Except: []string{fmt.Sprintf("172.%d.1.0/24", 16+i%16)}}}, Protocol: "tcp", Ports: []uint16{22}},
				{Peers: []api.Peer{{Tenant: fmt.Sprintf("t%d", (i+1)%tenants)}}, Protocol: "tcp", Ports: []uint16{80, 443}, PortRanges: []string{"8000-8080"}},
			}}
	}
	return ps
}

// BenchmarkComputePolicies reports the compile time of a host's whole
// state (isolation for 1000 tenants plus the policies) and of the policy
// compiler alone, and the resulting rule count, for 100 to 10,000 policies.
func BenchmarkComputePolicies(b *testing.B) {
	for _, n := range []int{0, 100, 1000, 10000} {
		snap := benchSnapshot(b, 1000, 100)
		snap.Policies = BenchPolicies(n, 1000)
		b.Run(fmt.Sprintf("policies=%d/Compute", n), func(b *testing.B) {
			var st State
			for b.Loop() {
				var err error
				if st, err = Compute(snap, "h1", Options{}); err != nil {
					b.Fatal(err)
				}
			}
			if len(st.Problems) > 0 {
				b.Fatal(st.Problems)
			}
			pol := 0
			for _, c := range st.Firewall.Chains {
				if IsPolicyChain(c.Name) {
					pol += len(c.Rules)
				}
			}
			b.ReportMetric(float64(st.Firewall.RuleCount()), "nft-rules")
			b.ReportMetric(float64(pol), "policy-rules")
			b.ReportMetric(float64(len(st.Firewall.String())), "nft-bytes")
		})
		b.Run(fmt.Sprintf("policies=%d/policy.Compile", n), func(b *testing.B) {
			for b.Loop() {
				policy.Compile(snap, "h1")
			}
		})
	}
}
