package ipam_test

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

// TestReleaseIPStrayClaim: releasing by IP an address whose claim names
// no address (a stray ips/ key), or names an address that has another IP,
// removes the stray claim and releases nothing else. It used to retry 200
// times ("gave up after 200 conflicting concurrent updates"), and in the
// second case would have released the other address.
func TestReleaseIPStrayClaim(t *testing.T) {
	r, etcd := tinyWorld(t)
	ctx := context.Background()
	a5 := alloc(t, r, "real") // 10.9.0.1
	if _, err := etcd.Put(ctx, claimKey(r, ip(9)), "ghost"); err != nil {
		t.Fatal(err)
	}
	if _, err := etcd.Put(ctx, claimKey(r, ip(10)), "real"); err != nil {
		t.Fatal(err)
	}
	for _, stray := range []int{9, 10} {
		before := r.Stats().Conflicts
		start := time.Now()
		if err := r.ReleaseIP(ctx, ip(stray)); err != nil {
			t.Fatalf("release %v (stray claim): %v", ip(stray), err)
		}
		if n := r.Stats().Conflicts - before; n > 1 {
			t.Errorf("release %v: %d conflicts in %s", ip(stray), n, time.Since(start))
		}
		if resp, _ := etcd.Get(ctx, claimKey(r, ip(stray)), clientv3.WithCountOnly()); resp.Count != 0 {
			t.Errorf("stray claim of %v still there", ip(stray))
		}
	}
	if got, err := r.GetAddress(ctx, "real"); err != nil || got.IP != a5 {
		t.Fatalf("address real after releasing stray claims: %+v, %v", got, err)
	}
	if got := alloc(t, r, "next"); got != ip(2) {
		t.Fatalf("next allocation %v", got)
	}
}

// TestRepairClaims: Repair makes claims and addresses agree: a claim with
// no address (or naming an address with another IP) goes, an address
// whose claim is missing gets it back (so that its IP is not handed out
// again), and ipfree hints for claimed addresses or removed networks go.
func TestRepairClaims(t *testing.T) {
	r, etcd := tinyWorld(t)
	ctx := context.Background()
	p := r.Prefix()
	alloc(t, r, "a1") // .1
	alloc(t, r, "a2") // .2
	alloc(t, r, "a3") // .3
	free := func(a string) string { return p + "ipfree/" + a }
	hexOf := func(n int) string { return hex.EncodeToString(ip(n).AsSlice()) }
	if _, err := etcd.Txn(ctx).Then(
		clientv3.OpPut(claimKey(r, ip(9)), "ghost"), // no such address
		clientv3.OpPut(claimKey(r, ip(10)), "a1"),   // a1 is .1
		clientv3.OpDelete(claimKey(r, ip(2))),       // a2 lost its claim
		clientv3.OpPut(free("tiny/"+hexOf(3)), ""),  // a3 is claimed
		clientv3.OpPut(free("gone/"+hexOf(4)), ""),  // no network gone
		clientv3.OpPut(free("tiny/"+hexOf(5)), ""),  // a true hint: kept
		clientv3.OpPut(free("tiny/zz"), ""),         // not a hint at all
	).Commit(); err != nil {
		t.Fatal(err)
	}
	if err := r.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	resp, err := etcd.Get(ctx, p+"ip", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		keys[string(kv.Key[len(p):])] = string(kv.Value)
	}
	want := map[string]string{
		"ips/tiny/" + hexOf(1): "a1", "ips/tiny/" + hexOf(2): "a2", "ips/tiny/" + hexOf(3): "a3",
		"ipfree/tiny/" + hexOf(5): "",
	}
	for k, v := range want {
		if got, ok := keys[k]; !ok || got != v {
			t.Errorf("after repair %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	for k := range keys {
		if _, ok := want[k]; !ok && k[:4] != "ipne" {
			t.Errorf("after repair %s is left", k)
		}
	}
	// .2 is a2's again: the next allocations skip it.
	for _, want := range []int{4, 5} {
		a, _, err := r.Allocate(ctx, api.AddressRequest{Name: "n" + ip(want).String(), Host: "h00", Tenant: "acme", Segment: "web"})
		if err != nil || a.IP != ip(want) {
			t.Fatalf("allocation after repair: %v, %v; want %v", a.IP, err, ip(want))
		}
	}
	checkUnique(t, r)
}
