package hoststate

import (
	"math/rand/v2"
	"testing"
)

// Equal agrees with comparing the rendered rulesets, across random policy
// sets and the rulesets of every host of the dispatch lab.
func TestRulesetEqualAgreesWithString(t *testing.T) {
	l, _ := dispatchLab(t)
	r := rand.New(rand.NewPCG(1, 2))
	var all []Ruleset
	for range 10 {
		l.snap.Policies = randomPolicies(r, 1+r.IntN(6))
		for _, h := range []string{"h1", "h2"} {
			all = append(all, l.compute(h, ModeFlat).Firewall)
		}
	}
	// Small edits: a rule's comment, an element, a chain's name.
	edited := l.compute("h1", ModeFlat).Firewall
	all = append(all, edited)
	e1 := Ruleset{Sets: edited.Sets, Maps: edited.Maps, Chains: append([]Chain(nil), edited.Chains...)}
	e1.Chains[0].Rules = append([]Rule(nil), e1.Chains[0].Rules...)
	e1.Chains[0].Rules[0].Comment += "x"
	e2 := Ruleset{Sets: edited.Sets, Maps: append([]Map(nil), edited.Maps...), Chains: edited.Chains}
	e2.Maps[0].Elements = append([]Element(nil), e2.Maps[0].Elements...)
	e2.Maps[0].Elements[0].Verdict += "x"
	all = append(all, e1, e2)
	same := 0
	for i, a := range all {
		for j, b := range all {
			if got, want := a.Equal(b), a.String() == b.String(); got != want {
				t.Fatalf("rulesets %d and %d: Equal %v, String equal %v", i, j, got, want)
			} else if got && i != j {
				same++
			}
		}
	}
	t.Logf("%d pairs of distinct computations equal", same)
}
