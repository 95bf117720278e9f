package server_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

// TestHostIP6Unique: a host's ip6 is claimed like its ip (hostips/), in the
// host's transaction. A second host with the same ip6, or whose ip is that
// ip6, is refused with 409 Conflict and nothing is written; removing the
// first host releases the claim.
func TestHostIP6Unique(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	if _, err := c.AddHost(ctx, api.Host{Name: "h1", IP: netip.MustParseAddr("192.0.2.1"), IP6: netip.MustParseAddr("fd77::1")}); err != nil {
		t.Fatal(err)
	}
	before := readStore(t, in)
	for _, tc := range []struct{ name, body, msg string }{
		{"same ip6", `{"name":"h2","ip":"192.0.2.2","ip6":"fd77::1"}`, "ip6 fd77::1 is already the address of host h1"},
		{"ip6 as an IPv6-only host's ip", `{"name":"h2","ip":"fd77::1"}`, "ip fd77::1 is already the address of host h1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, e, body := rawString(t, in, "POST", "/v1/hosts", tc.body)
			if st != 409 || e == nil || e.Reason != api.ReasonConflict || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("status %d body %s; want 409 Conflict with %q", st, body, tc.msg)
			}
		})
	}
	if after := readStore(t, in); !after.equal(before) {
		t.Errorf("refused hosts changed the store (revision %d -> %d)", before.rev, after.rev)
	}
	// An IPv6-only host's ip is claimed too: nobody may take it as ip6.
	if _, err := c.AddHost(ctx, api.Host{Name: "h6", IP: netip.MustParseAddr("fd77::6")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddHost(ctx, api.Host{Name: "h7", IP: netip.MustParseAddr("192.0.2.7"), IP6: netip.MustParseAddr("fd77::6")}); err == nil ||
		!strings.Contains(err.Error(), "ip6 fd77::6 is already the address of host h6") {
		t.Errorf("ip6 of an IPv6-only host's ip: %v", err)
	}
	// Re-adding h1 as it is stays fine; removing it frees both claims.
	if _, err := c.AddHost(ctx, api.Host{Name: "h1", IP: netip.MustParseAddr("192.0.2.1"), IP6: netip.MustParseAddr("fd77::1")}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveHost(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if n := countPrefix(t, in, "hostips/"); n != 1 {
		t.Errorf("after removing h1: %d host ip claims, want 1 (h6's)", n)
	}
	if _, err := c.AddHost(ctx, api.Host{Name: "h2", IP: netip.MustParseAddr("192.0.2.2"), IP6: netip.MustParseAddr("fd77::1")}); err != nil {
		t.Fatalf("ip6 released with its host: %v", err)
	}
	// A host stored before ip6 was claimed has no claim: it is removed all
	// the same.
	if _, err := c.AddHost(ctx, api.Host{Name: "h9", IP: netip.MustParseAddr("192.0.2.9"), IP6: netip.MustParseAddr("fd77::9")}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Etcd().Delete(ctx, in.Prefix+"hostips/fd77::9"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveHost(ctx, "h9"); err != nil {
		t.Fatalf("remove a host without an ip6 claim: %v", err)
	}
}
