package server_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// BenchmarkAllocate64 measures allocations per second through the HTTP API
// with 64 concurrent clients (each its own connection) on the embedded
// store with fsync on, as romanad runs by default, and on a 3-member etcd
// cluster (Debian's etcd, loopback, fsync as etcd always does).
//
//	spread:    the clients allocate in 64 different segment blocks (8 hosts x 8 segments)
//	one-block: all 64 allocate in the same segment of the same host
//	etcd3-*:   the same on the 3-member cluster
func BenchmarkAllocate64(b *testing.B) {
	for _, mode := range []string{"spread", "one-block", "etcd3-spread", "etcd3-one-block"} {
		b.Run(mode, func(b *testing.B) {
			opt := servertest.WithFsync()
			if strings.HasPrefix(mode, "etcd3-") {
				opt = servertest.WithEtcdEndpoints(servertest.StartEtcdCluster(b, 3).Endpoints()...)
			}
			benchAllocate(b, strings.HasSuffix(mode, "one-block"), opt)
		})
	}
}

func benchAllocate(b *testing.B, oneBlock bool, opt servertest.Option) {
	const clients = 64
	ctx := context.Background()
	in := servertest.Start(b, opt)
	c := in.Client
	if _, err := c.AddNetwork(ctx, api.Network{Name: "bench", CIDR: "10.0.0.0/8", Fields: []plan.Field{
		{Name: "host", Bits: 4}, {Name: "tenant", Bits: 2}, {Name: "segment", Bits: 2}}}); err != nil {
		b.Fatal(err)
	}
	var blocks [][3]string
	for h := 0; h < 8; h++ {
		host := fmt.Sprintf("h%d", h)
		if _, err := c.AddHost(ctx, api.Host{Name: host, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(h + 1)})}); err != nil {
			b.Fatal(err)
		}
		for t := 0; t < 2; t++ {
			tenant := fmt.Sprintf("t%d", t)
			c.AddTenant(ctx, api.Tenant{Name: tenant})
			for s := 0; s < 4; s++ {
				seg := fmt.Sprintf("s%d", s)
				if _, err := c.AddSegment(ctx, api.Segment{Tenant: tenant, Name: seg}); err != nil {
					b.Fatal(err)
				}
				blocks = append(blocks, [3]string{host, tenant, seg})
			}
		}
	}
	cs := make([]*client.Client, clients)
	for i := range cs {
		cs[i] = in.ClientAs(b, pki.Admin)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	b.ResetTimer()
	for k := 0; k < clients; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				blk := blocks[i%len(blocks)]
				if oneBlock {
					blk = blocks[0]
				}
				_, err := cs[k].Allocate(ctx, api.AddressRequest{Name: fmt.Sprintf("pod-%d", i), Host: blk[0], Tenant: blk[1], Segment: blk[2]})
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
	b.ReportMetric(float64(in.Registry().Stats().Conflicts)/float64(b.N), "retries/alloc")
}
