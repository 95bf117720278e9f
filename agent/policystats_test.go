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
