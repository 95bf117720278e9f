package hoststate

import (
	"fmt"

	"github.com/romana/romana/policy"
)

// Policy chains. The policies chain (ChainPolicies) sends packets from this
// host's blocks through ChainPolicyEgress and packets to them through
// ChainPolicyIngress; both hold the compiled rules (package policy) in
// precedence order. The policies chain ends with PoliciesEnd, whose comment
// is left empty for the firewall adapter's stamp of the policy chains.
// When there are no policies the policies chain is empty and the
// policy-* chains do not exist.
const (
	ChainPolicyEgress  = "policy-egress"
	ChainPolicyIngress = "policy-ingress"
	PoliciesEnd        = "return"
)

// IsPolicyChain reports whether a chain holds only policy rules: the
// firewall adapter rewrites these alone when nothing else changed.
func IsPolicyChain(name string) bool {
	return name == ChainPolicies || len(name) > 7 && name[:7] == "policy-"
}

// logRate limits logged drops per rule.
const logRate = "limit rate 10/second burst 20 packets"

// addPolicies compiles the model's policies for this host into the ruleset's
// policy chains and reports the compiler's problems.
func addPolicies(rs *Ruleset, in *inputs) {
	if len(in.m.Policies()) == 0 {
		return
	}
	c := policy.CompileModel(in.m, in.host.Name)
	for _, p := range c.Problems {
		in.problem("%s", p)
	}
	pc := rs.Chain(ChainPolicies)
	if pc == nil || len(c.Local) == 0 {
		return
	}
	for _, l := range c.Local {
		pc.Rules = append(pc.Rules, Rule{Expr: fmt.Sprintf("%s saddr %s jump %s", l.Family(), l.Prefix, ChainPolicyEgress)})
	}
	for _, l := range c.Local {
		pc.Rules = append(pc.Rules, Rule{Expr: fmt.Sprintf("%s daddr %s jump %s", l.Family(), l.Prefix, ChainPolicyIngress)})
	}
	pc.Rules = append(pc.Rules, Rule{Expr: PoliciesEnd})
	eg := Chain{Name: ChainPolicyEgress, Comment: "egress policies: packets from this host's endpoints"}
	ing := Chain{Name: ChainPolicyIngress, Comment: "ingress policies: packets to this host's endpoints"}
	eg.Rules = policyRules(c.Egress)
	ing.Rules = policyRules(c.Ingress)
	// Policy chains go right after the policies chain.
	i := 0
	for i < len(rs.Chains) && rs.Chains[i].Name != ChainPolicies {
		i++
	}
	rest := append([]Chain{eg, ing}, rs.Chains[i+1:]...)
	rs.Chains = append(rs.Chains[:i+1], rest...)
}

// PolicyRules renders compiled rules; a deny rule of a logging policy is
// preceded by a rate-limited log rule with the same match.
func policyRules(rules []policy.Rule) []Rule {
	var out []Rule
	for _, r := range rules {
		if r.Log {
			out = append(out, Rule{Expr: fmt.Sprintf("%s %s log prefix %q", r.Match(), logRate, r.LogPrefix()),
				Comment: clip(r.Comment() + " log"), Policy: r.Policy})
		}
		out = append(out, Rule{Expr: r.Expr(), Comment: clip(r.Comment()), Policy: r.Policy})
	}
	return out
}
