package ipam_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/plan"
)

// tinyWorld is a network with 14 addresses per segment block (4 endpoint
// bits), host h00 at 10.9.0.0/26, and segment acme/web: block
// 10.9.0.1..10.9.0.14.
func tinyWorld(t *testing.T) (*ipam.Registry, *clientv3.Client) {
	t.Helper()
	r, etcd := registry(t)
	ctx := context.Background()
	if _, _, err := r.AddNetwork(ctx, api.Network{Name: "tiny", CIDR: "10.9.0.0/24", Fields: []plan.Field{
		{Name: "host", Bits: 2}, {Name: "tenant", Bits: 1}, {Name: "segment", Bits: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.AddHost(ctx, host(0, "")); err != nil {
		t.Fatal(err)
	}
	r.AddTenant(ctx, api.Tenant{Name: "acme"})
	if _, _, err := r.AddSegment(ctx, api.Segment{Tenant: "acme", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	return r, etcd
}

func alloc(t *testing.T, r *ipam.Registry, name string) netip.Addr {
	t.Helper()
	a, _, err := r.Allocate(context.Background(), api.AddressRequest{Name: name, Host: "h00", Tenant: "acme", Segment: "web"})
	if err != nil {
		t.Fatalf("allocate %s: %v", name, err)
	}
	return a.IP
}

func ip(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, 9, 0, byte(n)}) }

// claimKey is the ips/ claim of a in network tiny.
func claimKey(r *ipam.Registry, a netip.Addr) string {
	return r.Prefix() + "ips/tiny/" + hex.EncodeToString(a.AsSlice())
}

// TestAllocateSmallestFree: allocation takes the smallest free endpoint,
// released ones first, also across the block's end.
func TestAllocateSmallestFree(t *testing.T) {
	r, _ := tinyWorld(t)
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		if got := alloc(t, r, fmt.Sprint("a", i)); got != ip(i) {
			t.Fatalf("allocation %d: %v, want %v", i, got, ip(i))
		}
	}
	for _, i := range []int{7, 3} {
		if err := r.Release(ctx, fmt.Sprint("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.ReleaseIP(ctx, ip(9)); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{3, 7, 9, 11, 12, 13, 14} {
		if got := alloc(t, r, fmt.Sprint("b", i)); got != ip(want) {
			t.Fatalf("allocation b%d: %v, want %v", i, got, ip(want))
		}
	}
	_, _, err := r.Allocate(ctx, api.AddressRequest{Name: "full", Host: "h00", Tenant: "acme", Segment: "web"})
	if want := "segment acme/web on host h00 is full: 14 of 14 addresses in use"; err == nil || err.Error() != want {
		t.Fatalf("allocation in a full block: %v, want %q", err, want)
	}
}

// TestAllocateWithoutHints: claims written without hints (by an older
// romanad: no cursor, releases that left no ipfree key) and hints that
// name claimed addresses are all survived: no duplicate, every hole found.
func TestAllocateWithoutHints(t *testing.T) {
	r, etcd := tinyWorld(t)
	ctx := context.Background()
	// Endpoints 1..6 and 8 claimed as an older romanad left them: no cursor.
	for _, i := range []int{1, 2, 3, 4, 5, 6, 8} {
		name := fmt.Sprint("old", i)
		a := fmt.Sprintf(`{"name":%q,"ip":"%s","network":"tiny","host":"h00","tenant":"acme","segment":"web"}`, name, ip(i))
		if _, err := etcd.Txn(ctx).Then(clientv3.OpPut(r.Prefix()+"addresses/"+name, a), clientv3.OpPut(claimKey(r, ip(i)), name)).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// A stale free hint for a claimed address.
	if _, err := etcd.Put(ctx, r.Prefix()+"ipfree/tiny/"+hex.EncodeToString(ip(2).AsSlice()), ""); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{7, 9, 10} {
		if got := alloc(t, r, fmt.Sprint("n", i)); got != ip(want) {
			t.Fatalf("allocation n%d: %v, want %v", i, got, ip(want))
		}
	}
	// An older romanad releases 4 and 9: no hint. They are found when the
	// block looks full.
	for _, k := range []string{"old4", "n1"} {
		v, _ := etcd.Get(ctx, r.Prefix()+"addresses/"+k)
		var a api.Address
		if err := json.Unmarshal(v.Kvs[0].Value, &a); err != nil {
			t.Fatal(err)
		}
		if _, err := etcd.Txn(ctx).Then(clientv3.OpDelete(r.Prefix()+"addresses/"+k), clientv3.OpDelete(claimKey(r, a.IP))).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var got []netip.Addr
	for i := 0; i < 6; i++ {
		got = append(got, alloc(t, r, fmt.Sprint("m", i)))
	}
	if fmt.Sprint(got) != fmt.Sprint([]netip.Addr{ip(11), ip(12), ip(13), ip(14), ip(4), ip(9)}) {
		t.Fatalf("allocations %v, want 11..14, then the holes 4 and 9", got)
	}
	if _, _, err := r.Allocate(ctx, api.AddressRequest{Name: "full", Host: "h00", Tenant: "acme", Segment: "web"}); api.ReasonOf(err) != api.ReasonExhausted {
		t.Fatalf("allocation in a full block: %v", err)
	}
	checkUnique(t, r)
}

// checkUnique fails if two addresses share an IP or a claim is missing.
func checkUnique(t *testing.T, r *ipam.Registry) {
	t.Helper()
	as, err := r.ListAddresses(context.Background(), api.AddressFilter{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for _, a := range as {
		if o, dup := seen[a.IP]; dup {
			t.Fatalf("%s and %s both have %s", o, a.Name, a.IP)
		}
		seen[a.IP] = a.Name
	}
}

// TestAllocateAfterHostReplaced: a host removed and another placed in its
// slot starts its blocks afresh (the cursor belongs to the old slot claim).
func TestAllocateAfterHostReplaced(t *testing.T) {
	r, etcd := tinyWorld(t)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		alloc(t, r, fmt.Sprint("a", i))
	}
	// Released by an older romanad: no free hints left behind.
	if _, err := etcd.Txn(ctx).Then(clientv3.OpDelete(r.Prefix()+"addresses/", clientv3.WithPrefix()),
		clientv3.OpDelete(r.Prefix()+"ips/", clientv3.WithPrefix())).Commit(); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveHost(ctx, "h00"); err != nil {
		t.Fatal(err)
	}
	h := host(5, "")
	if _, _, err := r.AddHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	a, _, err := r.Allocate(ctx, api.AddressRequest{Name: "new", Host: h.Name, Tenant: "acme", Segment: "web"})
	if err != nil || a.IP != ip(1) {
		t.Fatalf("first allocation on the host in the old one's slot: %v, %v; want %v", a.IP, err, ip(1))
	}
}
