package agent

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/romana/romana/api"
)

// PolicyCounters reads the host's policy rule counters;
// *firewall.Firewall implements it.
type PolicyCounters interface {
	PolicyCounters(ctx context.Context) ([]api.RuleCounter, error)
}

// StatsSink receives a host's counters; *client.Client implements it.
type StatsSink interface {
	PutPolicyStats(ctx context.Context, s api.HostPolicyStats) error
}

// PolicyStats configures the report of policy rule counters to romanad
// (which serves them to `romana policy stats`). Agents push because
// romanad cannot reach them (in the demo they listen on 127.0.0.1 inside
// their host's namespace).
type PolicyStats struct {
	Counters PolicyCounters
	Sink     StatsSink
	Every    time.Duration // default 10s
}

// statsManager reads the counters every PolicyStats.Every, on the loop
// (they are the kernel's), and hands the report to a sender goroutine that
// talks to romanad, so a slow romanad never holds the loop. Failures are
// logged at debug level and retried at the next tick; an unchanged report
// with no counters is not resent.
type statsManager struct {
	cfg       *PolicyStats
	host      string
	log       *slog.Logger
	out       chan api.HostPolicyStats // capacity 1: the newest report wins
	sentEmpty atomic.Bool
}

func (*statsManager) name() string { return "stats" }

func (*statsManager) deps() input { return inStats }

func (m *statsManager) sync(ctx context.Context, _ *pass) (bool, error) {
	cs, err := m.cfg.Counters.PolicyCounters(ctx)
	if err != nil {
		m.log.Debug("read policy counters", "err", err)
		return false, nil
	}
	if len(cs) == 0 && m.sentEmpty.Load() {
		return false, nil
	}
	r := api.HostPolicyStats{Host: m.host, Time: time.Now().UTC(), Counters: cs}
	for {
		select {
		case m.out <- r:
			return false, nil
		default:
		}
		select { // drop the older report nobody has taken yet
		case <-m.out:
		default:
		}
	}
}

// send pushes the reports to romanad until ctx ends.
func (m *statsManager) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-m.out:
			if err := m.cfg.Sink.PutPolicyStats(ctx, r); err != nil {
				m.log.Debug("report policy counters", "err", err)
				continue
			}
			m.sentEmpty.Store(len(r.Counters) == 0)
		}
	}
}
