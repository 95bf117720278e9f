package agent

import (
	"context"
	"log/slog"
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

// statsManager reports the counters every PolicyStats.Every. The loop only
// kicks a reader goroutine, which lists the counters and talks to romanad:
// a listing of a big table (seconds at 10,000 policies) never holds a
// policy change back, and a slow romanad never holds the loop. The reader
// also bounds its own cost: after a reading that took d, it skips the
// kicks of the next 99·d, so the counters take at most about 1% of a
// core whatever the table's size (the interval grows instead: a reading
// of 48,000 rules over netlink costs about 0.14 s of CPU, most of it the
// kernel's dump: BenchmarkPolicyCounters in package firewall, so counters
// come every quarter minute or so at 10,000 policies). Failures are
// logged at debug level and retried at the next kick; an unchanged report
// with no counters is not resent.
type statsManager struct {
	cfg       *PolicyStats
	host      string
	log       *slog.Logger
	kick      chan struct{} // capacity 1
	sentEmpty bool
}

// statsDuty is the share of one core the counters may take: a reading
// that took d is followed by (1/statsDuty - 1)·d without one. Each host's
// agent pays it, so 20 agents sharing 2 cores (the benchmarks) spend a
// tenth of the machine on counters at most.
const statsDuty = 0.01

// dutyGate spaces out work by its own cost (statsDuty).
type dutyGate struct{ next time.Time }

// allow reports whether work may start at now.
func (g *dutyGate) allow(now time.Time) bool { return !now.Before(g.next) }

// spent records work that ran from start to end: none again before
// start + (end-start)/statsDuty.
func (g *dutyGate) spent(start, end time.Time) {
	g.next = start.Add(time.Duration(float64(end.Sub(start)) / statsDuty))
}

func newStatsManager(cfg *PolicyStats, host string, log *slog.Logger) *statsManager {
	return &statsManager{cfg: cfg, host: host, log: log, kick: make(chan struct{}, 1)}
}

func (*statsManager) name() string { return "stats" }

func (*statsManager) deps() input { return inStats }

func (m *statsManager) sync(context.Context, *pass) (bool, error) {
	select {
	case m.kick <- struct{}{}:
	default: // a kick is pending already
	}
	return false, nil
}

// send reads and pushes the reports to romanad until ctx ends.
func (m *statsManager) send(ctx context.Context) {
	var gate dutyGate
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		start := time.Now()
		if !gate.allow(start) {
			continue
		}
		cs, err := m.cfg.Counters.PolicyCounters(ctx)
		gate.spent(start, time.Now())
		if err != nil {
			m.log.Debug("read policy counters", "err", err)
			continue
		}
		if len(cs) == 0 && m.sentEmpty {
			continue
		}
		r := api.HostPolicyStats{Host: m.host, Time: start.UTC(), Counters: cs}
		if err := m.cfg.Sink.PutPolicyStats(ctx, r); err != nil {
			m.log.Debug("report policy counters", "err", err)
			continue
		}
		m.sentEmpty = len(cs) == 0
	}
}
