package model

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/romana/romana/api"
)

// The policy journal names, for any generation a consumer saw, exactly
// the policies put or deleted since (a consumer comparing only those with
// what it derived from them stays in step with the model), and says so
// when it no longer reaches that far back. Policies, asked after batches
// of events of any size, stays the sorted list, and a list handed out
// earlier never changes.
func TestPolicyJournal(t *testing.T) {
	m := New(testSnapshot())
	r := rand.New(rand.NewPCG(3, 17))
	type seen struct {
		gen      uint64
		policies map[string]api.Policy
		list     []api.Policy
		want     []api.Policy
	}
	var views []seen
	snapshotOf := func() seen {
		list := m.Policies()
		return seen{gen: m.PolicyGeneration(), policies: maps.Clone(m.policies), list: list, want: slices.Clone(list)}
	}
	views = append(views, snapshotOf())
	rev := int64(1)
	for batch := range 120 {
		n := r.IntN(8)
		switch batch % 20 {
		case 7:
			n = policyPatchMax + 1 + r.IntN(20) // past the patching: sorted again
		case 13:
			n = policyLogMax + r.IntN(100) // past the journal's reach
		}
		gen0 := m.PolicyGeneration()
		for range n {
			rev++
			name := fmt.Sprintf("p%d", r.IntN(40))
			ev := api.Event{Revision: rev, Kind: api.KindPolicy, Name: name, Type: api.EventDelete}
			if r.IntN(3) != 0 {
				b, _ := json.Marshal(api.Policy{Name: name, Priority: r.IntN(1000)})
				ev.Type, ev.Object = api.EventPut, b
			}
			if _, _, err := m.Apply(ev); err != nil {
				t.Fatal(err)
			}
			// Events of other kinds are not policy events.
			b, _ := json.Marshal(api.Tenant{Name: "acme", ID: 1})
			if _, _, err := m.Apply(api.Event{Revision: rev, Type: api.EventPut, Kind: api.KindTenant, Name: "acme", Object: b}); err != nil {
				t.Fatal(err)
			}
		}
		if got := m.PolicyGeneration() - gen0; got != uint64(n) {
			t.Fatalf("batch %d: %d policy events moved the generation by %d", batch, n, got)
		}
		for _, v := range views {
			names, ok := m.PolicyChanges(v.gen)
			if int(m.PolicyGeneration()-v.gen) > policyLogMax {
				if ok {
					t.Fatalf("batch %d: changes since generation %d (now %d): ok beyond the journal's %d entries", batch, v.gen, m.PolicyGeneration(), policyLogMax)
				}
				continue
			}
			if !ok {
				if m.PolicyGeneration()-v.gen <= policyLogMax/2 {
					t.Fatalf("batch %d: changes since generation %d (now %d): not ok", batch, v.gen, m.PolicyGeneration())
				}
				continue
			}
			// The policies as v saw them, with the named ones taken from
			// the model now, are the model's policies.
			got := maps.Clone(v.policies)
			for _, name := range names {
				if p, ok := m.Policy(name); ok {
					got[name] = p
				} else {
					delete(got, name)
				}
			}
			if !reflect.DeepEqual(got, m.policies) {
				t.Fatalf("batch %d: the changes since generation %d (%v) do not lead to the model's policies", batch, v.gen, names)
			}
		}
		if v := snapshotOf(); !reflect.DeepEqual(v.list, sortedValues(m.policies)) {
			t.Fatalf("batch %d (%d events): Policies() = %v, want %v", batch, n, v.list, sortedValues(m.policies))
		} else {
			views = append(views, v)
		}
		if m.PolicyCount() != len(m.policies) {
			t.Fatalf("PolicyCount() = %d, want %d", m.PolicyCount(), len(m.policies))
		}
	}
	for i, v := range views {
		if !reflect.DeepEqual(v.list, v.want) {
			t.Fatalf("the list handed out at view %d changed later", i)
		}
	}
	if New(m.Snapshot()).PolicyGeneration() != 0 {
		t.Error("a new model does not start at generation 0")
	}
}
