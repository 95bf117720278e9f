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

// statusSinkFake records reports; with block set, PutStatus waits for
// its context instead (a romanad that never answers).
type statusSinkFake struct {
	mu    sync.Mutex
	got   []api.AgentStatus
	block bool
}

func (s *statusSinkFake) PutStatus(ctx context.Context, st api.AgentStatus) error {
	s.mu.Lock()
	block := s.block
	if !block {
		s.got = append(s.got, st)
	}
	s.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *statusSinkFake) last() (api.AgentStatus, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) == 0 {
		return api.AgentStatus{}, 0
	}
	return s.got[len(s.got)-1], len(s.got)
}

func (r *rig) runReporting(sink StatusSink) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: time.Hour, Source: r.src, Routes: r.routes, Firewall: r.fw,
			Metrics: r.metrics, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
			Report: &Report{Sink: sink, Every: 5 * time.Millisecond, Version: "v-test"}})
	}()
	r.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("Run: %v", err)
		}
	})
}

// TestReportStatus: the agent reports while it waits for its first
// snapshot (revision 0, saying so), then after every pass and every
// interval the revision it applied, its last sync and its counts.
func TestReportStatus(t *testing.T) {
	r := newRig(t, newWorld().snap)
	r.src.failNext(1 << 30)
	sink := &statusSinkFake{}
	r.runReporting(sink)
	expect.Eventually(t, "reports before the first snapshot", within, func() error {
		s, n := sink.last()
		if n < 3 || s.Revision != 0 || s.Error != errNotSynced.Error() || !s.LastSync.IsZero() || s.Version != "v-test" ||
			s.Host != "h1" || s.ReportSeconds != 0.005 || s.ResyncSeconds != 3600 {
			return fmt.Errorf("%d reports, last %+v", n, s)
		}
		return nil
	})
	r.src.failNext(0)
	want := r.src.rev
	expect.Eventually(t, "a converged report", within, func() error {
		s, _ := sink.last()
		if s.Revision != want || s.Error != "" || s.LastSync.IsZero() || s.NFTRules == 0 || s.Routes == 0 || len(s.Problems) != 0 {
			return fmt.Errorf("last report %+v, want revision %d", s, want)
		}
		if err := s.Screen(); err != nil {
			return fmt.Errorf("romanad would refuse it: %v", err)
		}
		return nil
	})
	r.src.put(api.KindTenant, "gamma", api.Tenant{Name: "gamma", ID: 7})
	expect.Eventually(t, "the new revision reported", within, func() error {
		if s, _ := sink.last(); s.Revision != want+1 {
			return fmt.Errorf("revision %d, want %d", s.Revision, want+1)
		}
		return nil
	})
	// A change that concerns no manager (an address on another host) is
	// applied at once: its revision is reported at the next interval.
	r.src.put(api.KindAddress, "elsewhere", api.Address{Name: "elsewhere", Host: "h2", Tenant: "acme", Segment: "web"})
	expect.Eventually(t, "a revision no manager needed reported", within, func() error {
		if s, _ := sink.last(); s.Revision != want+2 {
			return fmt.Errorf("revision %d, want %d", s.Revision, want+2)
		}
		return nil
	})
}

// TestReportNeverBlocksLoop: a romanad that never answers the reports
// does not hold the loop: changes are still applied.
func TestReportNeverBlocksLoop(t *testing.T) {
	r := newRig(t, newWorld().snap)
	sink := &statusSinkFake{block: true}
	r.runReporting(sink)
	expect.Eventually(t, "converged", within, r.converged)
	for i := range 20 { // far more passes than reports in flight
		r.src.put(api.KindTenant, fmt.Sprintf("t%d", i), api.Tenant{Name: fmt.Sprintf("t%d", i), ID: uint64(10 + i)})
	}
	want := r.src.rev
	expect.Eventually(t, "every change applied", within, func() error {
		if got := r.metrics.Status().Revision; got != want {
			return fmt.Errorf("revision %d, want %d", got, want)
		}
		return r.converged()
	})
}
