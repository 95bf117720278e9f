// Package workload generates the synthetic objects Romana's benchmarks and
// scale curves load, so that every figure is measured on the same shape.
package workload

import (
	"fmt"

	"github.com/romana/romana/api"
)

// Policies returns n policies over tenants t0..t(tenants-1): policy i
// applies to tenant t(i mod tenants) (every fourth to its segment s0; every
// fifth in both directions) with two rules: deny tcp 22 from a /16 with a
// hole, allow tcp 80, 443 and 8000-8080 from tenant t(i+1).
func Policies(n, tenants int) []api.Policy {
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
