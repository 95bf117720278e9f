package firewall

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/romana/romana/sim/simtest"
)

// BenchmarkPolicyCounters measures one read of the policy counters
// (PolicyCounters: a netlink dump of each policy chain) of the agent
// benchmark's table at 10,000 policies (about 48,000 policy rules), in a
// test namespace: CPU of the reading thread per read, user and system
// (the kernel's dump), from its rusage; the agent reads them every
// --stats-interval (5 s).
//
//	go test -run '^$' -bench PolicyCounters -benchtime 20x ./firewall
func BenchmarkPolicyCounters(b *testing.B) {
	simtest.Require(b, "nft")
	ctx := context.Background()
	lab := simtest.New(b)
	rs := compute(b, agentBenchSnapshot(b, 10000, 100), "h1").Firewall
	h, err := lab.AddHost(ctx, "cnt", netip.MustParsePrefix("192.168.96.1/24"))
	if err != nil {
		b.Fatal(err)
	}
	var user, sys time.Duration
	n := 0
	if err := h.Do(func() error {
		fw, err := New(nil)
		if err != nil {
			return err
		}
		if _, err := fw.Apply(ctx, rs); err != nil {
			return err
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			var r0, r1 unix.Rusage
			unix.Getrusage(unix.RUSAGE_THREAD, &r0)
			cs, err := fw.PolicyCounters(ctx)
			unix.Getrusage(unix.RUSAGE_THREAD, &r1)
			if err != nil {
				return err
			}
			if len(cs) == 0 {
				b.Fatal("no counters")
			}
			user += time.Duration(r1.Utime.Nano() - r0.Utime.Nano())
			sys += time.Duration(r1.Stime.Nano() - r0.Stime.Nano())
			n++
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(ms(user/time.Duration(n)), "user-ms")
	b.ReportMetric(ms(sys/time.Duration(n)), "sys-ms")
}
