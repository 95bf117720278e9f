package policy

import (
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

// Tiers, pass and address sets beyond validate_test.go's cases: every
// selector form a set takes, and what a set cannot be combined with.
func TestValidateTiersAndSets(t *testing.T) {
	ok := api.Policy{Name: "t", Tier: api.TierAdmin, Direction: []string{"ingress", "egress"},
		AppliedTo: []api.Selector{{Set: "web-pods"}, {All: true, Set: "db.pods"}, {Tenant: "acme", Set: "x"}, {Tenant: "acme", Segment: "web", Set: "y"}},
		Rules:     []api.Rule{{Action: "pass", Peers: []api.Peer{{Set: "clients"}, {Tenant: "beta"}}}, {Action: "deny"}}}
	if err := Validate(ok); err != nil {
		t.Fatalf("rejected: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*api.Policy)
		want   string
	}{
		{"segment with a set alone", func(p *api.Policy) { p.AppliedTo = []api.Selector{{Segment: "web", Set: "s"}} }, "appliedTo[0].segment: needs tenant"},
		{"peer set and any", func(p *api.Policy) { p.Rules[0].Peers = []api.Peer{{Any: true, Set: "s"}} }, "rules[0].peers[0]: set exactly one of"},
		{"peer set and cidr", func(p *api.Policy) { p.Rules[0].Peers = []api.Peer{{CIDR: "10.0.0.0/8", Set: "s"}} }, "rules[0].peers[0]: set exactly one of"},
		{"tier typo", func(p *api.Policy) { p.Tier = "default" }, `tier: "default" is not admin, baseline or empty`},
	} {
		p := ok
		p.AppliedTo = append([]api.Selector(nil), ok.AppliedTo...)
		p.Rules = append([]api.Rule(nil), ok.Rules...)
		tc.mutate(&p)
		err := Validate(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ...%s...", tc.name, err, tc.want)
		}
	}
}
