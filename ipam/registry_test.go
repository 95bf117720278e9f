package ipam_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

var rackFields = []plan.Field{{Name: "rack", Bits: 2}, {Name: "host", Bits: 5}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}

func host(i int, rack string) api.Host {
	return api.Host{Name: fmt.Sprintf("h%02d", i), IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), Labels: map[string]string{"rack": rack}}
}

func registry(t *testing.T) (*ipam.Registry, *clientv3.Client) {
	in := servertest.Start(t)
	return in.Registry(), in.Etcd()
}

// TestConcurrentIDs adds hosts, tenants and segments from many goroutines:
// every id handed out is distinct and the smallest ones are used.
func TestConcurrentIDs(t *testing.T) {
	r, _ := registry(t)
	ctx := context.Background()
	if _, _, err := r.AddNetwork(ctx, api.Network{Name: "blue", CIDR: "10.0.0.0/8", Fields: rackFields}); err != nil {
		t.Fatal(err)
	}
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := 0; i < n; i++ {
		wg.Add(3)
		go func() {
			defer wg.Done()
			_, _, err := r.AddHost(ctx, host(i, []string{"ra", "rb", "rc"}[i%3]))
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, _, err := r.AddTenant(ctx, api.Tenant{Name: fmt.Sprintf("t%02d", i)})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			// Segments of one tenant, created concurrently with the tenant itself: retry until it exists.
			for {
				_, _, err := r.AddSegment(ctx, api.Segment{Tenant: "t00", Name: fmt.Sprintf("s%02d", i)})
				if !api.IsNotFound(err) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	hosts, err := r.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	locs := map[string]string{}
	rackID := map[string]uint64{}
	perRack := map[string]map[uint64]bool{}
	for _, h := range hosts {
		if len(h.Slots) != 1 {
			t.Fatalf("host %s slots %+v", h.Name, h.Slots)
		}
		l := h.Slots[0].Loc
		if other, dup := locs[l.String()]; dup {
			t.Fatalf("hosts %s and %s share location %s", other, h.Name, l)
		}
		locs[l.String()] = h.Name
		rack := h.Labels["rack"]
		if id, ok := rackID[rack]; ok && id != l.Groups[0] {
			t.Fatalf("rack %s has ids %d and %d", rack, id, l.Groups[0])
		}
		rackID[rack] = l.Groups[0]
		if perRack[rack] == nil {
			perRack[rack] = map[uint64]bool{}
		}
		perRack[rack][l.Host] = true
	}
	if len(rackID) != 3 || len(locs) != n {
		t.Fatalf("racks %v, %d locations", rackID, len(locs))
	}
	for rack, ids := range perRack {
		for id := uint64(0); id < uint64(len(ids)); id++ {
			if !ids[id] {
				t.Fatalf("rack %s host ids %v are not 0..%d", rack, ids, len(ids)-1)
			}
		}
	}
	seen := map[uint64]string{}
	tenants, _ := r.ListTenants(ctx)
	for _, tn := range tenants {
		if other, dup := seen[tn.ID]; dup || tn.ID >= n {
			t.Fatalf("tenant %s id %d (also %q)", tn.Name, tn.ID, other)
		}
		seen[tn.ID] = tn.Name
	}
	segs, _ := r.ListSegments(ctx, "t00")
	seen = map[uint64]string{}
	for _, s := range segs {
		if other, dup := seen[s.ID]; dup || s.ID >= n {
			t.Fatalf("segment %s id %d (also %q)", s.Name, s.ID, other)
		}
		seen[s.ID] = s.Name
	}
	if len(tenants) != n || len(segs) != n {
		t.Fatalf("%d tenants, %d segments", len(tenants), len(segs))
	}
}

// TestNetworkAndHostAddsRace adds networks and hosts concurrently: in the
// end every host has a slot in every network.
func TestNetworkAndHostAddsRace(t *testing.T) {
	r, _ := registry(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := r.AddNetwork(ctx, api.Network{Name: fmt.Sprintf("n%d", i), CIDR: fmt.Sprintf("10.%d.0.0/16", i), Fields: []plan.Field{
				{Name: "rack", Bits: 1}, {Name: "host", Bits: 3}, {Name: "tenant", Bits: 2}, {Name: "segment", Bits: 2}}})
			errs <- err
		}()
	}
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := r.AddHost(ctx, host(i, []string{"ra", "rb"}[i%2]))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	hosts, _ := r.ListHosts(ctx)
	for _, h := range hosts {
		if len(h.Slots) != 8 {
			t.Fatalf("host %s has %d slots, want 8: %+v", h.Name, len(h.Slots), h.Slots)
		}
	}
}

// TestRepair simulates interrupted operations by editing etcd directly.
func TestRepair(t *testing.T) {
	r, etcd := registry(t)
	ctx := context.Background()
	p := r.Prefix()
	if _, _, err := r.AddNetwork(ctx, api.Network{Name: "blue", CIDR: "10.0.0.0/8", Fields: rackFields}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, _, err := r.AddHost(ctx, host(i, "ra")); err != nil {
			t.Fatal(err)
		}
	}
	r.AddTenant(ctx, api.Tenant{Name: "acme"})
	r.AddSegment(ctx, api.Segment{Tenant: "acme", Name: "web"})

	// A network written without placing the hosts (romanad died in AddNetwork):
	// an allocation places its host on the way.
	green := `{"name":"green","cidr":"172.16.0.0/12","fields":[{"name":"rack","bits":2},{"name":"host","bits":2},{"name":"tenant","bits":4},{"name":"segment","bits":4}],"endpointBits":8}`
	if _, err := etcd.Put(ctx, p+"networks/green", green); err != nil {
		t.Fatal(err)
	}
	a, _, err := r.Allocate(ctx, api.AddressRequest{Name: "a1", Network: "green", Host: "h02", Tenant: "acme", Segment: "web"})
	if err != nil || a.IP != netip.MustParseAddr("172.16.0.1") {
		t.Fatalf("allocate on an unplaced host: %+v, %v", a, err)
	}
	if h, _ := r.GetHost(ctx, "h02"); len(h.Slots) != 2 || h.Slots[1].Network != "green" || h.Slots[1].Loc.String() != "0.0" {
		t.Fatalf("h02 after lazy placement: %+v", h.Slots)
	}
	// Repair places the rest.
	if err := r.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"0.1", "0.2"} {
		if h, _ := r.GetHost(ctx, fmt.Sprintf("h%02d", i)); len(h.Slots) != 2 || h.Slots[1].Loc.String() != want {
			t.Fatalf("h%02d after repair: %+v, want green at %s", i, h.Slots, want)
		}
	}
	if err := r.Release(ctx, "a1"); err != nil {
		t.Fatal(err)
	}

	// A network removed without updating the hosts (romanad died in
	// RemoveNetwork): snapshots hide the stale slots, Repair drops them.
	if _, err := etcd.Txn(ctx).Then(
		clientv3.OpDelete(p+"networks/green"), clientv3.OpDelete(p+"groups/green/", clientv3.WithPrefix()),
		clientv3.OpDelete(p+"groupids/green/", clientv3.WithPrefix()), clientv3.OpDelete(p+"slotids/green/", clientv3.WithPrefix()),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	snap, err := r.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range snap.Hosts {
		if len(h.Slots) != 1 {
			t.Fatalf("snapshot shows stale slots of %s: %+v", h.Name, h.Slots)
		}
	}
	// Re-adding a network of that name replaces the stale slots (their claims are gone).
	if _, _, err := r.AddNetwork(ctx, api.Network{Name: "green", CIDR: "172.16.0.0/12", Fields: []plan.Field{
		{Name: "host", Bits: 4}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}); err != nil {
		t.Fatal(err)
	}
	hosts, _ := r.ListHosts(ctx)
	for _, h := range hosts {
		if len(h.Slots) != 2 || h.Slots[1].Loc.Groups != nil {
			t.Fatalf("host %s after re-adding green: %+v", h.Name, h.Slots)
		}
	}
	// And Repair drops slots of a network that is gone for good.
	if _, err := etcd.Delete(ctx, p+"networks/green"); err != nil {
		t.Fatal(err)
	}
	if err := r.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	hosts, _ = r.ListHosts(ctx)
	for _, h := range hosts {
		if len(h.Slots) != 1 || h.Slots[0].Network != "blue" {
			t.Fatalf("host %s after repair: %+v", h.Name, h.Slots)
		}
	}
}
