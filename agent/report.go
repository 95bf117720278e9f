package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/version"
)

// StatusSink receives the agent's status reports; *client.Client
// implements it.
type StatusSink interface {
	PutStatus(ctx context.Context, s api.AgentStatus) error
}

// Report configures the agent's status reports to romanad (`romana
// status`): one after every reconciliation and one every Every, so that
// romanad can tell a silent agent from a quiet host.
type Report struct {
	Sink StatusSink
	// Every is the interval of reports when nothing changes (default:
	// half the resync interval, at least 1 s). romanad takes an agent
	// silent for over two intervals plus a margin for unreachable, so a
	// stopped agent shows within one resync interval plus the margin.
	Every time.Duration
	// Version is reported as the agent's (default version.String()).
	Version string
	// Sessions, optional, reads the BGP sessions; it is called by the
	// sender goroutine, never by the loop.
	Sessions func(ctx context.Context) ([]api.BGPSession, error)
}

// reporter hands status reports from the loop to a sender goroutine that
// talks to romanad: offer never blocks (the newest report replaces one not
// taken yet), so a slow or unreachable romanad never holds the loop.
// Failures are logged at debug level; the next report goes anyway.
type reporter struct {
	cfg  *Report
	host string
	log  *slog.Logger
	out  chan api.AgentStatus // capacity 1: the newest report wins
}

func newReporter(cfg *Report, host string, log *slog.Logger) *reporter {
	return &reporter{cfg: cfg, host: host, log: log, out: make(chan api.AgentStatus, 1)}
}

// offer queues s for sending, dropping an older report nobody took.
func (r *reporter) offer(s api.AgentStatus) {
	for {
		select {
		case r.out <- s:
			return
		default:
		}
		select {
		case <-r.out:
		default:
		}
	}
}

// send pushes the reports to romanad until ctx ends. Each send (and the
// BGP sessions' read) gets at most one report interval.
func (r *reporter) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-r.out:
			sctx, cancel := context.WithTimeout(ctx, r.cfg.Every)
			if r.cfg.Sessions != nil {
				bs, err := r.cfg.Sessions(sctx)
				if err != nil {
					r.log.Debug("read bgp sessions for the status report", "err", err)
				}
				if len(bs) > api.MaxStatusSessions {
					bs = bs[:api.MaxStatusSessions]
				}
				s.BGP = bs
			}
			if err := r.cfg.Sink.PutStatus(sctx, s); err != nil && ctx.Err() == nil {
				r.log.Debug("report status", "err", err)
			}
			cancel()
		}
	}
}

// status is the loop's status report now: the results of the last pass,
// at the revision the kernel state reflects. Called on the loop only.
func (l *loop) status() api.AgentStatus {
	now := time.Now()
	s := api.AgentStatus{Host: l.cfg.Host, Version: l.cfg.Report.Version, Time: now, LastSync: l.lastSync,
		ResyncSeconds: l.cfg.Resync.Seconds(), ReportSeconds: l.cfg.Report.Every.Seconds()}
	if l.m == nil {
		s.Error = errNotSynced.Error()
		return s
	}
	// The model's revision is applied when no manager waits for a change
	// it brought (a change that concerns no manager is applied at once);
	// else the revision of the last pass.
	s.Revision = l.passRevision
	if fresh, _ := l.pending(); !fresh {
		s.Revision = l.m.Revision()
	}
	if l.health != nil {
		s.Error = api.TruncateText(l.health.Error())
	}
	r, f := l.routes, l.firewall
	s.Problems = api.TruncateStatus(l.problems)
	s.RouteConflicts = api.TruncateStatus(r.status.RouteConflicts)
	s.RoutesRefused = api.TruncateStatus(r.status.RoutesRefused)
	s.Routes, s.RoutesPending, s.NeighborsUnresolved = r.routeCount, len(r.status.RoutesPending), len(r.status.NeighborsUnresolved)
	s.NFTRules, s.NFTElements = f.rules, f.elements
	return s
}

// reportStatus offers the status to the reporter, if there is one.
func (l *loop) reportStatus() {
	if l.reporter != nil {
		l.reporter.offer(l.status())
	}
}

func (c *Config) reportDefaults() {
	rp := c.Report
	if rp == nil {
		return
	}
	if rp.Every <= 0 {
		rp.Every = max(c.Resync/2, time.Second)
	}
	if rp.Version == "" {
		rp.Version = version.String()
	}
	if len(rp.Version) > api.MaxVersionLen {
		rp.Version = rp.Version[:api.MaxVersionLen]
	}
}
