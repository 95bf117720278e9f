package server_test

import (
	"context"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

const (
	allocations = 400
	workers     = 16
)

// TestConcurrentAllocationEmbedded allocates from 16 concurrent clients on
// an embedded store, checks every address, restarts romanad and finds them
// all again, and re-allocating by name returns the same addresses.
func TestConcurrentAllocationEmbedded(t *testing.T) {
	in := servertest.Start(t)
	w := populate(t, in.Client)
	clients := make([]*client.Client, workers)
	for i := range clients {
		clients[i] = in.ClientAs(t, pki.Admin)
	}
	got := allocateConcurrently(t, clients, w, allocations, workers)
	checkAllocations(t, in.Client, w, allocations, got)

	in.Restart()
	ctx := context.Background()
	unix, err := client.New("unix://" + in.Socket)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{in.Client, unix} {
		list, err := c.ListAddresses(ctx, api.AddressFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != allocations {
			t.Fatalf("after restart: %d addresses, want %d", len(list), allocations)
		}
		for _, a := range list {
			if g := got[a.Name]; g.IP != a.IP || g.Host != a.Host || g.Segment != a.Segment {
				t.Fatalf("after restart %s is %+v, was %+v", a.Name, a, g)
			}
		}
	}
	if n := countPrefix(t, in, "ips/"); n != allocations {
		t.Fatalf("%d address claims in the store, want %d", n, allocations)
	}
	again := allocateConcurrently(t, clients, w, allocations, workers)
	for name, a := range again {
		if got[name].IP != a.IP {
			t.Fatalf("re-allocating %s after restart gave %s, first %s", name, a.IP, got[name].IP)
		}
	}
	if n := countPrefix(t, in, "ips/"); n != allocations {
		t.Fatalf("after idempotent re-allocation: %d address claims, want %d", n, allocations)
	}
	checkAllocations(t, unix, w, allocations, again)
}

// TestConcurrentAllocationExternalEtcd runs two romanads (two registries)
// on one external etcd, allocating concurrently through both.
func TestConcurrentAllocationExternalEtcd(t *testing.T) {
	e := servertest.StartEtcd(t, nil)
	a := servertest.Start(t, servertest.WithEtcdEndpoints(e.Endpoint))
	b := servertest.Start(t, servertest.WithEtcdEndpoints(e.Endpoint))
	w := populate(t, a.Client)
	clients := make([]*client.Client, workers)
	for i := range clients {
		in := a
		if i%2 == 1 {
			in = b
		}
		clients[i] = in.ClientAs(t, pki.Admin)
	}
	got := allocateConcurrently(t, clients, w, allocations, workers)
	checkAllocations(t, a.Client, w, allocations, got)
	checkAllocations(t, b.Client, w, allocations, got)
	// Now both romanads allocate in one segment block on one host: every
	// allocation races the other romanad's for the same smallest free address.
	hot := world{prefix: "hot-", hosts: w.hosts[:1], segments: w.segments[:1]}
	all := allocateConcurrently(t, clients, hot, 200, workers)
	for name, ad := range got {
		all[name] = ad
	}
	checkAllocations(t, b.Client, hot, 200, all)
	checkAllocations(t, a.Client, w, allocations, all)
	sa, sb := a.Registry().Stats(), b.Registry().Stats()
	if sa.Allocations+sb.Allocations != allocations+200 || sa.Allocations == 0 || sb.Allocations == 0 {
		t.Fatalf("allocations by romanad a %d, b %d; want both > 0 and %d together", sa.Allocations, sb.Allocations, allocations+200)
	}
	t.Logf("romanad a allocated %d, b %d; transactions retried after losing a race: %d", sa.Allocations, sb.Allocations, sa.Conflicts+sb.Conflicts)
	e.Stop()
}
