package server_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// TestExhaustionAndRelease fills a 14-address segment block, checks the
// exhaustion error, and releases by name and by IP, twice.
func TestExhaustionAndRelease(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	// 4 endpoint bits: endpoints 1..14 of each segment block are handed out.
	if _, err := c.AddNetwork(ctx, api.Network{Name: "tiny", CIDR: "10.9.0.0/24", Fields: []plan.Field{
		{Name: "host", Bits: 2}, {Name: "tenant", Bits: 1}, {Name: "segment", Bits: 1}}}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		if _, err := c.AddHost(ctx, api.Host{Name: h, IP: netip.MustParseAddr("192.0.2." + h[1:])}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.AddTenant(ctx, api.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"web", "db"} {
		if _, err := c.AddSegment(ctx, api.Segment{Tenant: "acme", Name: s}); err != nil {
			t.Fatal(err)
		}
	}
	req := func(i int) api.AddressRequest {
		return api.AddressRequest{Name: fmt.Sprintf("web-%d", i), Host: "h3", Tenant: "acme", Segment: "web"}
	}
	var ips []netip.Addr
	for i := 0; i < 14; i++ {
		a, err := c.Allocate(ctx, req(i))
		if err != nil {
			t.Fatal(err)
		}
		ips = append(ips, a.IP)
	}
	// h3 is host id 2: 10.9.0.128/26; tenant 0, segment 0: 10.9.0.128/28.
	if ips[0] != netip.MustParseAddr("10.9.0.129") || ips[13] != netip.MustParseAddr("10.9.0.142") {
		t.Fatalf("allocated %v..%v, want 10.9.0.129..10.9.0.142", ips[0], ips[13])
	}
	before := readStore(t, in)
	_, err := c.Allocate(ctx, req(14))
	const want = "segment acme/web on host h3 is full: 14 of 14 addresses in use"
	if err == nil || err.Error() != want || api.ReasonOf(err) != api.ReasonExhausted {
		t.Fatalf("15th allocation: %v (reason %q), want %q", err, api.ReasonOf(err), want)
	}
	if e, ok := err.(*api.Error); !ok || e.Status != 409 {
		t.Fatalf("exhaustion status: %#v", err)
	}
	if after := readStore(t, in); !after.equal(before) {
		t.Fatal("a failed allocation changed the store")
	}
	// Other blocks are not affected.
	if a, err := c.Allocate(ctx, api.AddressRequest{Name: "db-0", Host: "h3", Tenant: "acme", Segment: "db"}); err != nil || a.IP != netip.MustParseAddr("10.9.0.145") {
		t.Fatalf("db-0: %v, %v; want 10.9.0.145", a.IP, err)
	}

	// Release by name, twice; the freed address is the next one handed out.
	for i := 0; i < 2; i++ {
		if err := c.Release(ctx, "web-3"); err != nil {
			t.Fatalf("release web-3 (%d): %v", i+1, err)
		}
	}
	if _, err := c.GetAddress(ctx, "web-3"); !api.IsNotFound(err) {
		t.Fatalf("web-3 after release: %v", err)
	}
	if d, err := c.Decode(ctx, ips[3]); err != nil || d.Allocation != "" || d.Host != "h3" {
		t.Fatalf("decode released %s: %+v, %v", ips[3], d, err)
	}
	a, err := c.Allocate(ctx, req(20))
	if err != nil || a.IP != ips[3] {
		t.Fatalf("after releasing web-3: got %v, %v; want %v", a.IP, err, ips[3])
	}
	// Release by IP, twice; an unknown name and an address outside every network are fine too.
	for i := 0; i < 2; i++ {
		if err := c.ReleaseIP(ctx, ips[7]); err != nil {
			t.Fatalf("release %s (%d): %v", ips[7], i+1, err)
		}
	}
	if _, err := c.GetAddress(ctx, "web-7"); !api.IsNotFound(err) {
		t.Fatalf("web-7 after release by IP: %v", err)
	}
	for _, err := range []error{c.Release(ctx, "never-allocated"), c.ReleaseIP(ctx, netip.MustParseAddr("203.0.113.9")), c.ReleaseIP(ctx, netip.MustParseAddr("10.9.0.200"))} {
		if err != nil {
			t.Fatalf("harmless release: %v", err)
		}
	}
	list, err := c.ListAddresses(ctx, api.AddressFilter{Host: "h3", Segment: "web"})
	if err != nil || len(list) != 13 {
		t.Fatalf("list h3/web: %d, %v; want 13", len(list), err)
	}
	if n := countPrefix(t, in, "ips/"); n != 14 {
		t.Fatalf("%d address claims in the store, want 14 (13 web + 1 db)", n)
	}
	st := in.Registry().Stats()
	if st.Allocations != 16 || st.Releases != 2 {
		t.Fatalf("stats %+v: want 16 allocations, 2 releases", st)
	}
}
