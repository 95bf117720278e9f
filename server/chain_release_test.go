package server_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/romana/romana/api"
)

// TestChainHopReleaseRefused: a service function's address cannot be
// released (by name or by IP) while a chain steers through it, so that the
// next allocation cannot get its IP and receive the chain's traffic; once
// the chain is removed it can.
func TestChainHopReleaseRefused(t *testing.T) {
	in, ips := chainWorld(t)
	c := in.Client
	ctx := context.Background()
	if _, err := c.AddChain(ctx, api.Chain{Name: "inspect", Tenant: "acme", Segment: "web", Via: []netip.Addr{ips["fw1"]}}); err != nil {
		t.Fatal(err)
	}
	for name, release := range map[string]func() error{
		"by name": func() error { return c.Release(ctx, "fw1") },
		"by ip":   func() error { return c.ReleaseIP(ctx, ips["fw1"]) },
	} {
		err := release()
		if api.ReasonOf(err) != api.ReasonConflict || !strings.Contains(err.Error(), "chain inspect") {
			t.Fatalf("release %s of a chain's service function: %v, want 409 naming chain inspect", name, err)
		}
	}
	if a, err := c.GetAddress(ctx, "fw1"); err != nil || a.IP != ips["fw1"] {
		t.Fatalf("fw1 after the refused releases: %+v, %v", a, err)
	}
	// Other addresses release as before.
	if err := c.Release(ctx, "fw2"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveChain(ctx, "inspect"); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, "fw1"); err != nil {
		t.Fatalf("release after the chain is gone: %v", err)
	}
}

// TestChainHopReleaseRace: a chain added while its service function is
// being released ends one of two ways, never both: the chain exists and
// the address is still allocated, or the release won and the chain was
// refused.
func TestChainHopReleaseRace(t *testing.T) {
	in, ips := chainWorld(t)
	c := in.Client
	ctx := context.Background()
	for round := 0; round < 20; round++ {
		fw := ips["fw1"]
		var wg sync.WaitGroup
		var chainErr, relErr error
		wg.Go(func() {
			_, chainErr = c.AddChain(ctx, api.Chain{Name: "race", Tenant: "acme", Segment: "web", Via: []netip.Addr{fw}})
		})
		wg.Go(func() { relErr = c.Release(ctx, "fw1") })
		wg.Wait()
		_, getErr := c.GetAddress(ctx, "fw1")
		switch {
		case chainErr == nil && relErr == nil:
			t.Fatalf("round %d: both the chain via %s and the release of its address succeeded", round, fw)
		case chainErr == nil:
			if getErr != nil {
				t.Fatalf("round %d: the chain exists but its service function's address is gone: %v", round, getErr)
			}
			if err := c.RemoveChain(ctx, "race"); err != nil {
				t.Fatal(err)
			}
		case relErr != nil:
			t.Fatalf("round %d: neither succeeded: chain %v, release %v", round, chainErr, relErr)
		}
		// Restore fw1 for the next round (it may get another IP).
		a, err := c.Allocate(ctx, api.AddressRequest{Name: "fw1", Host: "h1", Tenant: "infra", Segment: "fw", Interface: "rv-fw1"})
		if err != nil {
			t.Fatal(err)
		}
		ips["fw1"] = a.IP
	}
}
