package model

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

func testSnapshot() api.Snapshot {
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	return api.Snapshot{Revision: 1, Networks: []api.Network{n},
		Hosts:    []api.Host{{Name: "h1", IP: netip.MustParseAddr("192.168.0.1")}, {Name: "h2", IP: netip.MustParseAddr("192.168.0.2")}},
		Tenants:  []api.Tenant{{Name: "acme", ID: 1}, {Name: "beta", ID: 2, Isolation: api.IsolationSegment}},
		Segments: []api.Segment{{Tenant: "acme", Name: "default", ID: 0}, {Tenant: "beta", Name: "web", ID: 0}},
	}
}

func TestApply(t *testing.T) {
	c := New(testSnapshot())
	apply := func(ev api.Event) error { _, _, err := c.Apply(ev); return err }
	put := func(rev int64, kind, name string, obj any) error {
		b, _ := json.Marshal(obj)
		return apply(api.Event{Revision: rev, Type: api.EventPut, Kind: kind, Name: name, Object: b})
	}
	if err := put(2, api.KindSegment, "beta/db", api.Segment{Tenant: "beta", Name: "db", ID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := put(3, api.KindTenant, "acme", api.Tenant{Name: "acme", ID: 1, Isolation: api.IsolationNone}); err != nil {
		t.Fatal(err)
	}
	if err := apply(api.Event{Revision: 4, Type: api.EventDelete, Kind: api.KindSegment, Name: "acme/default"}); err != nil {
		t.Fatal(err)
	}
	if err := apply(api.Event{Revision: 5, Type: api.EventPut, Kind: "future-kind", Name: "x"}); err != nil {
		t.Fatalf("unknown kind: %v", err)
	}
	if err := put(6, api.KindPolicy, "p", api.Policy{Name: "p", Direction: []string{"ingress"}}); err != nil {
		t.Fatal(err)
	}
	s := c.Snapshot()
	if s.Revision != 6 {
		t.Errorf("revision %d, want 6", s.Revision)
	}
	if acme, _ := c.Tenant("acme"); len(s.Segments) != 2 || len(s.Policies) != 1 || acme.Isolation != api.IsolationNone {
		t.Errorf("state after events: %+v", s)
	}
	if _, ok := c.Segment("acme", "default"); ok {
		t.Error("deleted segment still cached")
	}
	if err := apply(api.Event{Revision: 7, Type: api.EventPut, Kind: api.KindAddress, Name: "a", Object: []byte(`{"ip": 5}`)}); err == nil {
		t.Error("malformed object: no error")
	}
	if err := apply(api.Event{Revision: 7, Type: "patch", Kind: api.KindHost, Name: "h1"}); err == nil {
		t.Error("unknown event type: no error")
	}
	// A snapshot round-trips.
	if s2 := New(s).Snapshot(); !reflect.DeepEqual(s, s2) {
		t.Errorf("model -> snapshot -> model changed it:\n%+v\n%+v", s, s2)
	}
}

// Policies stays sorted by name and equal to the model's policies as
// events put and delete them one by one (the list is updated, not sorted
// again), and a list handed out earlier never changes.
func TestPoliciesUpdatedInPlaceOfSorting(t *testing.T) {
	m := New(testSnapshot())
	type handed struct {
		list []api.Policy
		want []api.Policy
	}
	var earlier []handed
	names := []string{"a", "b", "c", "d", "e"}
	for i := range 200 {
		name := names[(i*7+i/3)%len(names)]
		ev := api.Event{Revision: int64(i + 2), Kind: api.KindPolicy, Name: name, Type: api.EventDelete}
		if i%3 != 2 {
			b, _ := json.Marshal(api.Policy{Name: name, Priority: i})
			ev.Type, ev.Object = api.EventPut, b
		}
		if _, _, err := m.Apply(ev); err != nil {
			t.Fatal(err)
		}
		got := m.Policies()
		if want := sortedValues(m.policies); !reflect.DeepEqual(got, want) {
			t.Fatalf("event %d (%s %s): Policies() = %v, want %v", i, ev.Type, name, got, want)
		}
		earlier = append(earlier, handed{got, append([]api.Policy(nil), got...)})
	}
	for i, h := range earlier {
		if !reflect.DeepEqual(h.list, h.want) {
			t.Fatalf("the list handed out after event %d changed later", i)
		}
	}
}
