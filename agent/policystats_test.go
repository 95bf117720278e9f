package agent

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
)

type countersFake struct{ cs []api.RuleCounter }

func (f countersFake) PolicyCounters(context.Context) ([]api.RuleCounter, error) { return f.cs, nil }

type sinkFake struct {
	mu  sync.Mutex
	got []api.HostPolicyStats
}

func (s *sinkFake) PutPolicyStats(_ context.Context, st api.HostPolicyStats) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, st)
	return nil
}

func TestReportPolicyStats(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sink := &sinkFake{}
	src := countersFake{[]api.RuleCounter{{Policy: "web", Rule: 1, Stage: "ingress", Packets: 4, Bytes: 240}}}
	done := make(chan struct{})
	r := newRig(t, newWorld().snap)
	go func() {
		Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: time.Hour, Source: r.src, Routes: r.routes, Firewall: r.fw,
			PolicyStats: &PolicyStats{Counters: src, Sink: sink, Every: time.Millisecond}})
		close(done)
	}()
	expect.Eventually(t, "two reports", within, func() error {
		sink.mu.Lock()
		n := len(sink.got)
		sink.mu.Unlock()
		if n < 2 {
			return fmt.Errorf("%d reports", n)
		}
		return nil
	})
	cancel()
	<-done
	if g := sink.got[0]; g.Host != "h1" || len(g.Counters) != 1 || g.Counters[0].Packets != 4 || g.Time.IsZero() {
		t.Fatalf("report: %+v", g)
	}
}

// TestStatsDutyGate: a reading that took d is followed by 99·d without
// one (1% of a core), whatever the report interval.
func TestStatsDutyGate(t *testing.T) {
	var g dutyGate
	t0 := time.Unix(1000, 0)
	if !g.allow(t0) {
		t.Fatal("first listing refused")
	}
	g.spent(t0, t0.Add(2*time.Second)) // a 2 s reading: none until t0+200s
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{{2 * time.Second, false}, {40 * time.Second, false}, {199*time.Second + 999*time.Millisecond, false}, {200 * time.Second, true}, {5 * time.Minute, true}} {
		if got := g.allow(t0.Add(c.at)); got != c.want {
			t.Errorf("allow at t0+%v = %v, want %v", c.at, got, c.want)
		}
	}
	g.spent(t0.Add(5*time.Minute), t0.Add(5*time.Minute+time.Millisecond)) // cheap: every kick again
	if !g.allow(t0.Add(5*time.Minute + 100*time.Millisecond)) {
		t.Error("a 1 ms reading held the next one back more than 99 ms")
	}
}
