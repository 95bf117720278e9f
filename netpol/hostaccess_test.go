package netpol

import (
	"strings"
	"testing"

	"github.com/romana/romana/hoststate"
)

// Traffic from a node to its own pods (kubelet probes) needs no policy:
// Romana's table has one base chain, on the forward hook, and what the
// host itself sends to its endpoints leaves through the output hook
// (docs/agent.md, "Not isolated"). This computes h1's ruleset with a
// default-deny-all NetworkPolicy on every namespace and checks that it
// holds no other hook, and that the deny is in the forward path.
func TestHostToOwnPodsIsNotFiltered(t *testing.T) {
	c := xyz()
	for _, ns := range []string{"x", "y", "z"} {
		c.putNP(newNP(ns, "deny-all", nil, types(tIn, tEg)))
	}
	out := Compile(c.input())
	if usesNewSemantics(out) {
		t.Fatalf("want an output hoststate compiles today:\n%s", out)
	}
	st, err := hoststate.Compute(c.snapshot(out), "h1", hoststate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hooks := 0
	for _, ch := range st.Firewall.Chains {
		if ch.Hook != "" {
			hooks++
			if ch.Hook != "forward" {
				t.Errorf("chain %s hooks %s: host traffic to its pods would be filtered", ch.Name, ch.Hook)
			}
		}
	}
	if hooks != 1 {
		t.Errorf("%d base chains, want 1 (forward)", hooks)
	}
	if !strings.Contains(st.Firewall.String(), "k8s.isolate.ingress") {
		t.Errorf("the isolation policy is not in h1's ruleset:\n%s", st.Firewall)
	}
}
