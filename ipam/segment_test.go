package ipam_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

// TestRemoveSegmentUnderLoad: removing an empty segment while other hosts
// allocate and release in other segments must not conflict with them at
// all (it used to retry on every unrelated address change, and gave up
// after 200 conflicts when allocations kept coming). The allocators work
// in separate blocks, so every conflict counted is the removal's.
func TestRemoveSegmentUnderLoad(t *testing.T) {
	r, _ := registry(t)
	ctx := context.Background()
	if _, _, err := r.AddNetwork(ctx, api.Network{Name: "blue", CIDR: "10.0.0.0/8", Fields: rackFields}); err != nil {
		t.Fatal(err)
	}
	const allocators = 8
	for i := 0; i < allocators; i++ {
		if _, _, err := r.AddHost(ctx, host(i, "ra")); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := r.AddTenant(ctx, api.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"busy", "gone"} {
		if _, _, err := r.AddSegment(ctx, api.Segment{Tenant: "acme", Name: s}); err != nil {
			t.Fatal(err)
		}
	}
	// Enough standing addresses that reading them all takes a while.
	for i := 0; i < 400; i++ {
		if _, _, err := r.Allocate(ctx, api.AddressRequest{Name: fmt.Sprintf("standing-%d", i), Host: host(i%allocators, "").Name, Tenant: "acme", Segment: "busy"}); err != nil {
			t.Fatal(err)
		}
	}
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var ops atomic.Int64
	for i := 0; i < allocators; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := host(i, "").Name
			for n := 0; lctx.Err() == nil; n++ {
				name := fmt.Sprintf("churn-%d-%d", i, n)
				if _, _, err := r.Allocate(lctx, api.AddressRequest{Name: name, Host: h, Tenant: "acme", Segment: "busy"}); err != nil {
					if lctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				if err := r.Release(lctx, name); err != nil {
					if lctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				ops.Add(2)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // let the churn run
	before, opsBefore := r.Stats().Conflicts, ops.Load()
	start := time.Now()
	err := r.RemoveSegment(ctx, "acme", "gone")
	took := time.Since(start)
	conflicts, churned := r.Stats().Conflicts-before, ops.Load()-opsBefore
	stop()
	wg.Wait()
	t.Logf("removal took %s with %d conflicts while %d unrelated allocations and releases ran", took.Round(time.Millisecond), conflicts, churned)
	if err != nil {
		t.Fatalf("remove segment under load: %v", err)
	}
	if conflicts != 0 {
		t.Errorf("the removal conflicted %d times with allocations in other segments", conflicts)
	}
	if _, err := r.GetSegment(ctx, "acme", "gone"); !api.IsNotFound(err) {
		t.Fatalf("segment after removal: %v", err)
	}
}

// TestRemoveSegmentRacesAllocation: an allocation into a segment and the
// segment's removal, started together, never both succeed, and a removal
// refused because of addresses leaves the segment usable.
func TestRemoveSegmentRacesAllocation(t *testing.T) {
	r, _ := registry(t)
	ctx := context.Background()
	if _, _, err := r.AddNetwork(ctx, api.Network{Name: "blue", CIDR: "10.0.0.0/8", Fields: rackFields}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.AddHost(ctx, host(0, "ra")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.AddTenant(ctx, api.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	wins := map[string]int{}
	for i := 0; i < 30; i++ {
		if _, _, err := r.AddSegment(ctx, api.Segment{Tenant: "acme", Name: "web"}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var allocErr, removeErr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _, allocErr = r.Allocate(ctx, api.AddressRequest{Name: "p", Host: "h00", Tenant: "acme", Segment: "web"})
		}()
		go func() {
			defer wg.Done()
			removeErr = r.RemoveSegment(ctx, "acme", "web")
		}()
		wg.Wait()
		switch {
		case allocErr == nil && removeErr == nil:
			t.Fatalf("round %d: both the allocation and the removal succeeded", i)
		case allocErr == nil:
			if api.ReasonOf(removeErr) != api.ReasonConflict {
				t.Fatalf("round %d: removal: %v", i, removeErr)
			}
			// Refused: the segment is usable, and removable once empty.
			if _, _, err := r.Allocate(ctx, api.AddressRequest{Name: "q", Host: "h00", Tenant: "acme", Segment: "web"}); err != nil {
				t.Fatalf("round %d: allocate after a refused removal: %v", i, err)
			}
			for _, n := range []string{"p", "q"} {
				if err := r.Release(ctx, n); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.RemoveSegment(ctx, "acme", "web"); err != nil {
				t.Fatalf("round %d: remove the emptied segment: %v", i, err)
			}
			wins["allocation"]++
		case removeErr == nil:
			if r := api.ReasonOf(allocErr); r != api.ReasonNotFound && r != api.ReasonConflict {
				t.Fatalf("round %d: allocation: %v", i, allocErr)
			}
			wins["removal"]++
		default:
			t.Fatalf("round %d: both failed: %v; %v", i, allocErr, removeErr)
		}
		if as, _ := r.ListAddresses(ctx, api.AddressFilter{Segment: "web"}); len(as) != 0 {
			t.Fatalf("round %d: addresses left in a removed segment: %+v", i, as)
		}
	}
	t.Logf("winners: %v", wins)
}

// TestInterruptedSegmentRemoval: a removal mark left by a romanad that died
// between marking and deleting keeps allocations out of the segment until
// Repair withdraws it, or a new removal adopts it.
func TestInterruptedSegmentRemoval(t *testing.T) {
	r, etcd := registry(t)
	ctx := context.Background()
	if _, _, err := r.AddNetwork(ctx, api.Network{Name: "blue", CIDR: "10.0.0.0/8", Fields: rackFields}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.AddHost(ctx, host(0, "ra")); err != nil {
		t.Fatal(err)
	}
	r.AddTenant(ctx, api.Tenant{Name: "acme"})
	for _, s := range []string{"web", "db"} {
		if _, _, err := r.AddSegment(ctx, api.Segment{Tenant: "acme", Name: s}); err != nil {
			t.Fatal(err)
		}
		if _, err := etcd.Put(ctx, r.Prefix()+"segmentremovals/acme/"+s, ""); err != nil {
			t.Fatal(err)
		}
	}
	req := api.AddressRequest{Name: "p", Host: "h00", Tenant: "acme", Segment: "web"}
	if _, _, err := r.Allocate(ctx, req); api.ReasonOf(err) != api.ReasonConflict {
		t.Fatalf("allocate in a segment marked for removal: %v", err)
	}
	if err := r.RemoveSegment(ctx, "acme", "db"); err != nil {
		t.Fatalf("a removal adopting the mark: %v", err)
	}
	if err := r.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Allocate(ctx, req); err != nil {
		t.Fatalf("allocate after Repair withdrew the mark: %v", err)
	}
	if resp, _ := etcd.Get(ctx, r.Prefix()+"segmentremovals/", clientv3.WithPrefix(), clientv3.WithCountOnly()); resp.Count != 0 {
		t.Fatalf("%d removal marks left", resp.Count)
	}
}
