package ipam_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// BenchmarkAllocateFullness measures one allocation (sequential, one
// client, the registry called directly, embedded etcd without fsync) in a
// segment block of 4,094 addresses that holds 0, 2,000 or 4,000 addresses
// already: before each timed round, b.N addresses spread over the block are
// released, and the round allocates b.N addresses again (filling those
// holes), so the block's fullness stays where it was. An allocator whose
// cost follows fullness shows it as the used=4000 case being slower than
// used=0.
//
//	go test -run '^$' -bench AllocateFullness -benchtime 200x ./ipam/
func BenchmarkAllocateFullness(b *testing.B) {
	ctx := context.Background()
	in := servertest.Start(b)
	r := in.Registry()
	// 12 endpoint bits: 4,094 usable addresses per segment block.
	if _, _, err := r.AddNetwork(ctx, api.Network{Name: "bench", CIDR: "10.0.0.0/8", Fields: []plan.Field{
		{Name: "host", Bits: 4}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}); err != nil {
		b.Fatal(err)
	}
	if _, _, err := r.AddHost(ctx, host(0, "")); err != nil {
		b.Fatal(err)
	}
	if _, _, err := r.AddTenant(ctx, api.Tenant{Name: "t"}); err != nil {
		b.Fatal(err)
	}
	for _, used := range []int{0, 2000, 4000} {
		seg := fmt.Sprintf("used%d", used)
		if _, _, err := r.AddSegment(ctx, api.Segment{Tenant: "t", Name: seg}); err != nil {
			b.Fatal(err)
		}
		req := func(name string) api.AddressRequest {
			return api.AddressRequest{Name: name, Host: "h00", Tenant: "t", Segment: seg}
		}
		var names []string
		for i := 0; i < used; i++ {
			names = append(names, fmt.Sprintf("%s-fill-%d", seg, i))
			if _, _, err := r.Allocate(ctx, req(names[i])); err != nil {
				b.Fatal(err)
			}
		}
		round := 0
		b.Run(fmt.Sprintf("used=%d", used), func(b *testing.B) {
			if used > 0 && b.N > used || b.N > 4094 {
				b.Fatalf("b.N %d: at most %d", b.N, max(used, 4094))
			}
			round++
			// Free b.N addresses spread over the block (for used=0: none
			// to free, the round allocates into an empty block and frees
			// its own addresses afterwards).
			var freed []string
			if used > 0 {
				step := max(used/b.N, 1)
				for i := 0; i < b.N; i++ {
					k := (i*step + round) % len(names)
					if err := r.Release(ctx, names[k]); err != nil {
						b.Fatal(err)
					}
					freed = append(freed, names[k])
				}
			}
			b.ResetTimer()
			var got []string
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("%s-r%d-%d", seg, round, i)
				if _, _, err := r.Allocate(ctx, req(name)); err != nil {
					b.Fatal(err)
				}
				got = append(got, name)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
			if used == 0 {
				for _, n := range got {
					r.Release(ctx, n)
				}
				return
			}
			// The new names take the freed ones' places.
			for i, n := range freed {
				for k := range names {
					if names[k] == n {
						names[k] = got[i]
					}
				}
			}
		})
	}
}
