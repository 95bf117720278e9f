package hoststate

import (
	"fmt"
	"testing"

	"github.com/romana/romana/bench/workload"
	"github.com/romana/romana/policy"
)

// BenchmarkComputePolicies reports the compile time of a host's whole
// state (isolation for 1000 tenants plus the policies) and of the policy
// compiler alone, and the resulting rule count, for 100 to 10,000 policies.
func BenchmarkComputePolicies(b *testing.B) {
	for _, n := range []int{0, 100, 1000, 10000} {
		snap := benchSnapshot(b, 1000, 100)
		snap.Policies = workload.Policies(n, 1000)
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
