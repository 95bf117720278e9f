package server_test

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

func TestCreateStatusAndIdempotency(t *testing.T) {
	in := servertest.Start(t)
	populate(t, in.Client)
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/tenants", `{"name":"initech"}`},
		{"POST", "/v1/tenants/initech/segments", `{"name":"api"}`},
		{"POST", "/v1/hosts", `{"name":"h9","ip":"192.0.2.99","labels":{"rack":"r1"}}`},
		{"POST", "/v1/networks", `{"name":"v6","cidr":"fd00::/48","fields":[{"name":"rack","bits":2},{"name":"host","bits":6},{"name":"tenant","bits":8},{"name":"segment","bits":8}]}`},
		{"POST", "/v1/addresses", `{"name":"p1","network":"blue","host":"h9","tenant":"initech","segment":"api"}`},
		{"PUT", "/v1/policies/p", `{"direction":["egress"],"appliedTo":[{"all":true}],"rules":[{"peers":[{"cidr":"0.0.0.0/0"}]}]}`},
		// A policy may name a tenant that does not exist (yet).
		{"PUT", "/v1/policies/future", `{"direction":["ingress"],"appliedTo":[{"tenant":"not-yet"}],"rules":[{"peers":[{"tenant":"nor-this","segment":"x"}]}]}`},
	} {
		first, _, b1 := rawString(t, in, tc.method, tc.path, tc.body)
		second, _, b2 := rawString(t, in, tc.method, tc.path, tc.body)
		if first != http.StatusCreated || second != http.StatusOK || b1 != b2 {
			t.Errorf("%s %s: statuses %d then %d (want 201, 200), bodies\n%s%s", tc.method, tc.path, first, second, b1, b2)
		}
	}
	before := readStore(t, in)
	rawString(t, in, "POST", "/v1/networks", `{"name":"v6","cidr":"fd00::/48","fields":[{"name":"rack","bits":2},{"name":"host","bits":6},{"name":"tenant","bits":8},{"name":"segment","bits":8}]}`)
	rawString(t, in, "POST", "/v1/addresses", `{"name":"p1","host":"h9","tenant":"initech","segment":"api","network":"blue"}`)
	if !readStore(t, in).equal(before) {
		t.Error("an idempotent repeat wrote to the store")
	}
}

func TestPlacementAcrossNetworks(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	w := populate(t, c)
	// A second network is placed on every existing host, by rack, in host order.
	v6 := api.Network{Name: "v6", CIDR: "fd00::/48", Fields: []plan.Field{{Name: "rack", Bits: 2}, {Name: "host", Bits: 6},
		{Name: "tenant", Bits: 8}, {Name: "segment", Bits: 8}}, Tenants: []string{"globex"}}
	if _, err := c.AddNetwork(ctx, v6); err != nil {
		t.Fatal(err)
	}
	wantLoc := map[string]string{"h0": "0.0", "h1": "0.1", "h2": "1.0", "h3": "1.1"}
	for _, name := range w.hosts {
		h, err := c.GetHost(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Slots) != 2 || h.Slots[0].Network != "blue" || h.Slots[1].Network != "v6" ||
			h.Slots[0].Loc.String() != wantLoc[name] || h.Slots[1].Loc.String() != wantLoc[name] {
			t.Fatalf("host %s slots %+v, want blue and v6 at %s", name, h.Slots, wantLoc[name])
		}
	}
	h2, _ := c.GetHost(ctx, "h2")
	if h2.Slots[0].CIDR != netip.MustParsePrefix("10.128.0.0/12") || h2.Slots[1].CIDR != netip.MustParsePrefix("fd00:0:0:4000::/56") {
		t.Fatalf("h2 CIDRs %v, %v", h2.Slots[0].CIDR, h2.Slots[1].CIDR)
	}
	// A new host is placed in both.
	h, err := c.AddHost(ctx, api.Host{Name: "h5", IP: netip.MustParseAddr("2001:db8::5"), Labels: map[string]string{"rack": "r2", "other": "x"}})
	if err != nil || len(h.Slots) != 2 || h.Slots[0].Loc.String() != "1.2" || h.Slots[1].Loc.String() != "1.2" {
		t.Fatalf("h5: %+v, %v", h, err)
	}
	// Network choice: globex may use both networks, acme only blue.
	a, err := c.Allocate(ctx, api.AddressRequest{Name: "x1", Host: "h5", Tenant: "acme", Segment: "web"})
	if err != nil || a.Network != "blue" {
		t.Fatalf("acme without a network: %+v, %v", a, err)
	}
	_, err = c.Allocate(ctx, api.AddressRequest{Name: "x2", Host: "h5", Tenant: "globex", Segment: "web"})
	if api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), "networks blue, v6 all accept tenant globex: name one in the request") {
		t.Fatalf("globex without a network: %v", err)
	}
	_, err = c.Allocate(ctx, api.AddressRequest{Name: "x2", Network: "v6", Host: "h5", Tenant: "acme", Segment: "web"})
	if api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), "network v6 does not accept tenant acme") {
		t.Fatalf("acme in v6: %v", err)
	}
	a, err = c.Allocate(ctx, api.AddressRequest{Name: "x2", Network: "v6", Host: "h5", Tenant: "globex", Segment: "db"})
	if err != nil || a.IP != netip.MustParseAddr("fd00:0:0:4201:100::1") {
		t.Fatalf("globex in v6: %+v, %v", a, err)
	}
	if d, err := c.Decode(ctx, a.IP); err != nil || d.Host != "h5" || d.Tenant != "globex" || d.Segment != "db" || d.Loc.String() != "1.2" {
		t.Fatalf("decode %s: %+v, %v", a.IP, d, err)
	}

	// Removing every host of rack r1 frees its rack id: a new rack takes it.
	for _, name := range []string{"h0", "h1"} {
		if err := c.RemoveHost(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	h, err = c.AddHost(ctx, api.Host{Name: "h6", IP: netip.MustParseAddr("192.0.2.60"), Labels: map[string]string{"rack": "r7"}})
	if err != nil || h.Slots[0].Loc.String() != "0.0" {
		t.Fatalf("h6 in new rack r7: %+v, %v", h, err)
	}
	// The host's IP is free again after removal.
	if _, err := c.AddHost(ctx, api.Host{Name: "h0b", IP: netip.MustParseAddr("192.0.2.10"), Labels: map[string]string{"rack": "r7"}}); err != nil {
		t.Fatal(err)
	}

	// Removing a network drops it from every host's slots and frees its claims.
	if err := c.Release(ctx, "x2"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveNetwork(ctx, "v6"); err != nil {
		t.Fatal(err)
	}
	hosts, err := c.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if len(h.Slots) != 1 || h.Slots[0].Network != "blue" {
			t.Fatalf("host %s after removing v6: %+v", h.Name, h.Slots)
		}
	}
	for _, p := range []string{"groups/v6/", "groupids/v6/", "slotids/v6/", "ips/v6/"} {
		if n := countPrefix(t, in, p); n != 0 {
			t.Errorf("%d keys left under %s", n, p)
		}
	}
}

func TestTenantAndSegmentIDs(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	for i, name := range []string{"a", "b", "c"} {
		tn, err := c.AddTenant(ctx, api.Tenant{Name: name})
		if err != nil || tn.ID != uint64(i) || tn.Isolation != api.IsolationTenant {
			t.Fatalf("tenant %s: %+v, %v", name, tn, err)
		}
	}
	if err := c.RemoveTenant(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if tn, err := c.AddTenant(ctx, api.Tenant{Name: "d", Isolation: api.IsolationSegment}); err != nil || tn.ID != 1 {
		t.Fatalf("tenant d takes the smallest free id 1: %+v, %v", tn, err)
	}
	for i, name := range []string{"web", "db"} {
		for _, tenant := range []string{"a", "c"} {
			s, err := c.AddSegment(ctx, api.Segment{Tenant: tenant, Name: name})
			if err != nil || s.ID != uint64(i) {
				t.Fatalf("segment %s/%s: %+v, %v", tenant, name, s, err)
			}
		}
	}
	segs, err := c.ListSegments(ctx, "")
	if err != nil || len(segs) != 4 {
		t.Fatalf("all segments: %v, %v", segs, err)
	}
	segs, err = c.ListSegments(ctx, "c")
	if err != nil || len(segs) != 2 || segs[0].Name != "db" {
		t.Fatalf("segments of c: %v, %v", segs, err)
	}
	if err := c.RemoveSegment(ctx, "a", "web"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.AddSegment(ctx, api.Segment{Tenant: "a", Name: "cache"}); err != nil || s.ID != 0 {
		t.Fatalf("segment a/cache reuses id 0: %+v, %v", s, err)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	w := populate(t, c)
	for i := 0; i < 3; i++ {
		if _, err := c.Allocate(ctx, w.request(i)); err != nil {
			t.Fatal(err)
		}
	}
	c.Allocate(ctx, w.request(0))
	c.GetTenant(ctx, "nope")
	resp, err := in.HTTP.Get(in.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, b)
	}
	resp, err = in.HTTP.Get(in.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`romanad_http_requests_total{code="201",route="POST /v1/addresses"} 3`,
		`romanad_http_requests_total{code="200",route="POST /v1/addresses"} 1`,
		`romanad_http_requests_total{code="404",route="GET /v1/tenants/{name}"} 1`,
		`romanad_http_request_duration_seconds_count{route="POST /v1/addresses"} 4`,
		`romanad_addresses_allocated_total 3`,
		`romanad_addresses_released_total 0`,
		`romanad_store_conflicts_total`,
		`romanad_watch_streams 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// With the store gone, health says so.
	in.Etcd().Close()
	resp, err = in.HTTP.Get(in.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Fatalf("healthz with a closed store: %d", resp.StatusCode)
	}
}
