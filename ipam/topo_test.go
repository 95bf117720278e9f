package ipam

import (
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

func mustPlan(t *testing.T, cidr string, fields ...plan.Field) *plan.Plan {
	t.Helper()
	p, err := plan.Parse(plan.Spec{Name: "blue", CIDR: cidr, Fields: fields})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSmallestFree(t *testing.T) {
	for _, tc := range []struct {
		used   []uint64
		lo, hi uint64
		want   uint64
		ok     bool
	}{
		{nil, 0, 3, 0, true},
		{[]uint64{0, 1, 3}, 0, 3, 2, true},
		{[]uint64{0, 1, 2, 3}, 0, 3, 0, false},
		{[]uint64{1, 2}, 1, 14, 3, true},
		{[]uint64{1}, 1, 1, 0, false},
		{nil, ^uint64(0), ^uint64(0), ^uint64(0), true},
		{[]uint64{^uint64(0)}, ^uint64(0) - 1, ^uint64(0), ^uint64(0) - 1, true},
	} {
		used := map[uint64]bool{}
		for _, u := range tc.used {
			used[u] = true
		}
		got, ok := smallestFree(used, tc.lo, tc.hi)
		if got != tc.want || ok != tc.ok {
			t.Errorf("smallestFree(%v, %d, %d) = %d, %v; want %d, %v", tc.used, tc.lo, tc.hi, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPlaceByRack(t *testing.T) {
	p := mustPlan(t, "10.0.0.0/8", plan.Field{Name: "rack", Bits: 1}, plan.Field{Name: "host", Bits: 2},
		plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4})
	tp := newTopo("blue", p)
	rack := func(r string) map[string]string { return map[string]string{"rack": r} }
	steps := []struct {
		host, rack string
		want       string // loc, or an error substring
	}{
		{"a1", "ra", "0.0"},
		{"b1", "rb", "1.0"},
		{"a2", "ra", "0.1"},
		{"a3", "ra", "0.2"},
		{"a4", "ra", "0.3"},
		{"a5", "ra", "rack ra of network blue is full: 4 of 4 host ids in use"},
		{"c1", "rc", `network blue: no free rack id for rack "rc": all 2 in use`},
		{"b2", "rb", "1.1"},
	}
	for _, s := range steps {
		l, err := tp.place(s.host, rack(s.rack))
		got := l.String()
		if err != nil {
			got = err.Error()
			if api.ReasonOf(err) != api.ReasonExhausted {
				t.Errorf("place %s: reason %q, want Exhausted", s.host, api.ReasonOf(err))
			}
		}
		if got != s.want {
			t.Errorf("place %s in rack %s: got %q, want %q", s.host, s.rack, got, s.want)
		}
	}
	// Freeing a2 makes id 1 of rack ra the smallest free again.
	tp.unplace("a2", plan.Loc{Groups: []uint64{0}, Host: 1})
	if l, err := tp.place("a6", rack("ra")); err != nil || l.String() != "0.1" {
		t.Errorf("after unplace: place a6 = %v, %v; want 0.1", l, err)
	}
	// Unplacing someone else's slot is a no-op.
	tp.unplace("zz", plan.Loc{Groups: []uint64{0}, Host: 0})
	if tp.slotHost(plan.Loc{Groups: []uint64{0}, Host: 0}) != "a1" {
		t.Error("unplace by a non-owner freed the slot")
	}
	// Emptying rack rb deletes the group, freeing rack id 1 for rc.
	tp.unplace("b1", plan.Loc{Groups: []uint64{1}, Host: 0})
	tp.unplace("b2", plan.Loc{Groups: []uint64{1}, Host: 1})
	if !tp.groups["rb"].gone {
		t.Fatal("empty group rb not marked gone")
	}
	delete(tp.groups, "rb") // as after the transaction and a re-read
	if l, err := tp.place("c1", rack("rc")); err != nil || l.String() != "1.0" {
		t.Errorf("rack rc: %v, %v; want 1.0", l, err)
	}
}

func TestPlaceNeedsLabels(t *testing.T) {
	p := mustPlan(t, "10.0.0.0/8", plan.Field{Name: "zone", Bits: 2}, plan.Field{Name: "rack", Bits: 2}, plan.Field{Name: "host", Bits: 4},
		plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4})
	tp := newTopo("blue", p)
	_, err := tp.place("h1", map[string]string{"zone": "z1"})
	if err == nil || api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), `host h1 has no label "rack"`) {
		t.Fatalf("missing rack label: %v", err)
	}
	// Racks are numbered within their zone: rack r1 of z2 and rack r1 of z1 are different groups.
	for _, s := range []struct{ host, zone, rack, want string }{
		{"h1", "z1", "r1", "0.0.0"},
		{"h2", "z1", "r2", "0.1.0"},
		{"h3", "z2", "r1", "1.0.0"},
		{"h4", "z1", "r1", "0.0.1"},
		{"h5", "z2", "r9", "1.1.0"},
	} {
		l, err := tp.place(s.host, map[string]string{"zone": s.zone, "rack": s.rack})
		if err != nil || l.String() != s.want {
			t.Errorf("place %s (%s/%s) = %v, %v; want %s", s.host, s.zone, s.rack, l, err, s.want)
		}
	}
	if g := tp.groups["z1"]; g.rec.Hosts != 3 {
		t.Errorf("zone z1 counts %d hosts, want 3", g.rec.Hosts)
	}
}

func TestPlaceWithoutLevels(t *testing.T) {
	p := mustPlan(t, "10.0.0.0/8", plan.Field{Name: "host", Bits: 1}, plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4})
	tp := newTopo("blue", p)
	tp.addSlot(plan.Loc{Host: 0}, "old")
	l, err := tp.place("h1", nil)
	if err != nil || l.String() != "1" {
		t.Fatalf("place = %v, %v; want 1", l, err)
	}
	if _, err := tp.place("h2", nil); err == nil || err.Error() != "network blue is full: 2 of 2 host ids in use" {
		t.Fatalf("full network: %v", err)
	}
}
