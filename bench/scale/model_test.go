package scale

import (
	"testing"
)

// tiny is 2 racks x 2 hosts (h1-1, h1-2 in r1; h2-1, h2-2 in r2), tenants
// t0 (segment isolation), t1 and t2 (tenant isolation), 10 endpoints.
// Endpoint k goes to host k mod 4 as its local endpoint i = k div 4:
// h1-1 and h1-2 get i = 0, 1, 2; h2-1 and h2-2 get i = 0, 1. Local
// endpoint i is in tenant i mod 3, segment (i div 3) mod 2 = s0 for all
// of them. So h1-1 holds t0/s0, t1/s0, t2/s0, and the classes of the
// cluster are t0/s0 (4 endpoints: one per host), t1 (4) and t2 (2: on
// h1-1 and h1-2).
var tiny = Cluster{Racks: 2, HostsPerRack: 2, Tenants: 3, Endpoints: 10}

func TestPerEndpoint(t *testing.T) {
	snap, err := Snapshot(tiny)
	if err != nil {
		t.Fatal(err)
	}
	got := PerEndpoint(snap, "h1-1", "r1")
	want := Counts{
		Rules:       2 * 3,     // two per local endpoint, 3 on h1-1
		Elements:    4 + 4 + 2, // its classes t0/s0, t1, t2, cluster-wide
		HostRoutes:  10,        // a /32 per endpoint
		ToRRoutes:   6 + 1,     // r1's endpoints (h1-1: 3, h1-2: 3) and a default
		SpineRoutes: 10,
	}
	if got != want {
		t.Errorf("PerEndpoint = %+v, want %+v", got, want)
	}
}

func TestPerBlock(t *testing.T) {
	snap, err := Snapshot(tiny)
	if err != nil {
		t.Fatal(err)
	}
	// Blocks of 64: every host needs one block.
	got := PerBlock(snap, "h1-1", "r1", 64)
	want := Counts{
		Rules:       1 + 3,           // the vmap rule, one per local class
		Elements:    3 + (4 + 4 + 2), // a vmap element per local endpoint, the classes' members
		HostRoutes:  3 + 3,           // 3 local /32s, one block of each other host
		ToRRoutes:   2 + 1,           // h1-1's and h1-2's blocks, a default
		SpineRoutes: 4,               // one block per host
	}
	if got != want {
		t.Errorf("PerBlock(64) = %+v, want %+v", got, want)
	}
	// Blocks of 2: hosts with 3 endpoints need 2 blocks, with 2 need 1.
	got = PerBlock(snap, "h1-1", "r1", 2)
	want.HostRoutes = 3 + 2 + 1 + 1 // h1-2: 2 blocks, h2-1 and h2-2: 1 each
	want.ToRRoutes = 2 + 2 + 1
	want.SpineRoutes = 2 + 2 + 1 + 1
	if got != want {
		t.Errorf("PerBlock(2) = %+v, want %+v", got, want)
	}
}

// TestRomanaTiny: Romana's fabric and route counts follow the topology:
// a top-of-rack has a route per host of its rack and one toward the
// spine, the spine one per rack, a host its local /32s and one route per
// other host (flat mode).
func TestRomanaTiny(t *testing.T) {
	snap, err := Snapshot(tiny)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Romana(snap)
	if err != nil {
		t.Fatal(err)
	}
	if got.HostRoutes != 3+3 || got.ToRRoutes != 2+1 || got.SpineRoutes != 2 {
		t.Errorf("Romana = %+v, want 6 host routes, 3 top-of-rack routes, 2 spine routes", got)
	}
	if got.Elements < 3 {
		t.Errorf("Romana = %+v: want at least one verdict-map element per tenant (3)", got)
	}
}

// TestSnapshotCapacity: a host holds 2 segments x 14 endpoints per
// tenant (endpoint field of 4 bits, first and last reserved): 84 with 3
// tenants, so 4 hosts hold 336 endpoints and not 337.
func TestSnapshotCapacity(t *testing.T) {
	c := tiny
	c.Endpoints = 336
	if _, err := Snapshot(c); err != nil {
		t.Errorf("336 endpoints: %v", err)
	}
	c.Endpoints = 337
	if _, err := Snapshot(c); err == nil {
		t.Error("337 endpoints: no error, want a host over capacity")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
