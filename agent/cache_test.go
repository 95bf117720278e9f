package agent

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"github.com/romana/romana/api"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestCacheApply(t *testing.T) {
	w := newWorld()
	c := newCache(w.snap)
	put := func(rev int64, kind, name string, obj any) error {
		b, _ := json.Marshal(obj)
		return c.apply(api.Event{Revision: rev, Type: api.EventPut, Kind: kind, Name: name, Object: b})
	}
	if err := put(2, api.KindSegment, "beta/db", api.Segment{Tenant: "beta", Name: "db", ID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := put(3, api.KindTenant, "acme", api.Tenant{Name: "acme", ID: 1, Isolation: api.IsolationNone}); err != nil {
		t.Fatal(err)
	}
	if err := c.apply(api.Event{Revision: 4, Type: api.EventDelete, Kind: api.KindSegment, Name: "acme/default"}); err != nil {
		t.Fatal(err)
	}
	if err := c.apply(api.Event{Revision: 5, Type: api.EventPut, Kind: "future-kind", Name: "x"}); err != nil {
		t.Fatalf("unknown kind: %v", err)
	}
	if err := put(6, api.KindPolicy, "p", api.Policy{Name: "p", Direction: []string{"ingress"}}); err != nil {
		t.Fatal(err)
	}
	s := c.snapshot()
	if s.Revision != 6 {
		t.Errorf("revision %d, want 6", s.Revision)
	}
	if len(s.Segments) != 2 || len(s.Policies) != 1 || c.tenants["acme"].Isolation != api.IsolationNone {
		t.Errorf("state after events: %+v", s)
	}
	if _, ok := c.segments["acme/default"]; ok {
		t.Error("deleted segment still cached")
	}
	if err := c.apply(api.Event{Revision: 7, Type: api.EventPut, Kind: api.KindAddress, Name: "a", Object: []byte(`{"ip": 5}`)}); err == nil {
		t.Error("malformed object: no error")
	}
	if err := c.apply(api.Event{Revision: 7, Type: "patch", Kind: api.KindHost, Name: "h1"}); err == nil {
		t.Error("unknown event type: no error")
	}
	// A snapshot round-trips.
	c2 := newCache(c.snapshot())
	if !reflect.DeepEqual(c, c2) {
		t.Error("cache -> snapshot -> cache changed it")
	}
}
