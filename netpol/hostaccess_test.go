package netpol

import (
	"strings"
	"testing"

	"github.com/romana/romana/hoststate"
)

// Traffic from a node to its own pods (kubelet probes) needs no policy:
// Romana's table hooks forward and input only, and what the host itself
// sends to its endpoints leaves through the output hook (docs/agent.md,
// "Not isolated"); the pods' replies come back through the input chain,
// which accepts established connections before it applies egress
// policies. This computes h1's ruleset with a default-deny-all
// NetworkPolicy on every namespace and checks that it holds no other
// hook, that the input chain accepts replies before it meets the
// policies, and that the deny is in the forward path.
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
	hooks := map[string]bool{}
	for _, ch := range st.Firewall.Chains {
		if ch.Hook != "" {
			hooks[ch.Hook] = true
			if ch.Hook != "forward" && ch.Hook != "input" {
				t.Errorf("chain %s hooks %s: host traffic to its pods would be filtered", ch.Name, ch.Hook)
			}
		}
	}
	if len(hooks) != 2 {
		t.Errorf("base chains on %v, want forward and input", hooks)
	}
	in := st.Firewall.Chain(hoststate.ChainInput)
	established, jump := -1, -1
	for i, r := range in.Rules {
		switch r.Expr {
		case "ct state established,related accept":
			established = i
		case hoststate.JumpPoliciesEgress:
			jump = i
		}
	}
	if established < 0 || jump < established {
		t.Errorf("the input chain does not accept replies before the policies:\n%+v", in.Rules)
	}
	if !strings.Contains(st.Firewall.String(), "k8s.isolate.ingress") {
		t.Errorf("the isolation policy is not in h1's ruleset:\n%s", st.Firewall)
	}
}
