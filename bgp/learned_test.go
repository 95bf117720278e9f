package bgp

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestSelectRoutes(t *testing.T) {
	accept := []netip.Prefix{pfx("10.0.0.0/8"), pfx("fd00::/48")}
	own := []netip.Prefix{pfx("10.1.0.0/16")}
	cands := []candidate{
		// Two uplinks offer rack r2 with one AS each: ECMP.
		{dst: pfx("10.16.0.0/12"), nextHop: addr("192.168.1.2"), pathLen: 1},
		{dst: pfx("10.16.0.0/12"), nextHop: addr("192.168.1.1"), pathLen: 1},
		// A longer path loses; the shorter one stands alone.
		{dst: pfx("10.32.0.0/12"), nextHop: addr("192.168.1.1"), pathLen: 2},
		{dst: pfx("10.32.0.0/12"), nextHop: addr("192.168.1.2"), pathLen: 1},
		// Same length, worse origin loses.
		{dst: pfx("10.48.0.0/12"), nextHop: addr("192.168.1.1"), pathLen: 1, origin: 2},
		{dst: pfx("10.48.0.0/12"), nextHop: addr("192.168.1.2"), pathLen: 1},
		// The same next hop twice is one next hop.
		{dst: pfx("10.64.0.0/12"), nextHop: addr("192.168.1.1"), pathLen: 1},
		{dst: pfx("10.64.0.0/12"), nextHop: addr("192.168.1.1"), pathLen: 1},
		// Never installed: our own block (echoed back), inside it, outside the pools, the default,
		// a next hop of the wrong family or none.
		{dst: pfx("10.1.0.0/16"), nextHop: addr("192.168.1.1"), pathLen: 1},
		{dst: pfx("10.1.4.0/24"), nextHop: addr("192.168.1.1"), pathLen: 1},
		{dst: pfx("192.168.0.0/16"), nextHop: addr("192.168.1.1"), pathLen: 1},
		{dst: pfx("0.0.0.0/0"), nextHop: addr("192.168.1.1"), pathLen: 1},
		{dst: pfx("10.80.0.0/12"), nextHop: addr("fd00::1"), pathLen: 1},
		{dst: pfx("10.96.0.0/12"), pathLen: 1},
		// The pool itself contains our block but is fine: our endpoint routes are more specific.
		{dst: pfx("10.0.0.0/8"), nextHop: addr("192.168.1.1"), pathLen: 2},
		{dst: pfx("fd00:0:0:10::/60"), nextHop: addr("fd00:1::1"), pathLen: 1},
	}
	got := selectRoutes(cands, accept, own)
	want := []Route{
		{pfx("10.0.0.0/8"), []netip.Addr{addr("192.168.1.1")}},
		{pfx("10.16.0.0/12"), []netip.Addr{addr("192.168.1.1"), addr("192.168.1.2")}},
		{pfx("10.32.0.0/12"), []netip.Addr{addr("192.168.1.2")}},
		{pfx("10.48.0.0/12"), []netip.Addr{addr("192.168.1.2")}},
		{pfx("10.64.0.0/12"), []netip.Addr{addr("192.168.1.1")}},
		{pfx("fd00:0:0:10::/60"), []netip.Addr{addr("fd00:1::1")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("selectRoutes:\n got %v\nwant %v", got, want)
	}
}

func TestSyncKernel(t *testing.T) {
	ctx := context.Background()
	k := NewFake()
	a := Route{pfx("10.16.0.0/12"), []netip.Addr{addr("192.168.1.1"), addr("192.168.1.2")}}
	b := Route{pfx("10.32.0.0/12"), []netip.Addr{addr("192.168.1.1")}}
	if n, err := syncKernel(ctx, k, []Route{a, b}); err != nil || n != 2 {
		t.Fatalf("first sync: %d %v", n, err)
	}
	if n, err := syncKernel(ctx, k, []Route{a, b}); err != nil || n != 0 {
		t.Errorf("second sync changed %d (%v): not idempotent", n, err)
	}
	a2 := Route{a.Dst, a.Via[:1]} // one uplink lost
	if n, err := syncKernel(ctx, k, []Route{a2}); err != nil || n != 2 {
		t.Errorf("shrink: %d %v", n, err)
	}
	live, _ := k.Routes(ctx)
	if !reflect.DeepEqual(live, []Route{a2}) {
		t.Errorf("live = %v, want %v", live, []Route{a2})
	}
	if err := Cleanup(ctx, k); err != nil {
		t.Fatal(err)
	}
	if live, _ := k.Routes(ctx); len(live) != 0 {
		t.Errorf("after cleanup: %v", live)
	}
}
