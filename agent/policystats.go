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

// ReportPolicyStats reads the counters every interval and sends them to
// sink (romanad, which serves them to `romana policy stats`), until ctx
// ends. Agents push because romanad cannot reach them (in the demo they
// listen on 127.0.0.1 inside their host's namespace). Failures are logged
// at debug level and retried at the next tick; an unchanged report with no
// counters is not resent.
func ReportPolicyStats(ctx context.Context, host string, every time.Duration, src PolicyCounters, sink StatsSink, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	sentEmpty := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cs, err := src.PolicyCounters(ctx)
		if err != nil {
			log.Debug("read policy counters", "err", err)
			continue
		}
		if len(cs) == 0 && sentEmpty {
			continue
		}
		if err := sink.PutPolicyStats(ctx, api.HostPolicyStats{Host: host, Time: time.Now().UTC(), Counters: cs}); err != nil {
			log.Debug("report policy counters", "err", err)
			continue
		}
		sentEmpty = len(cs) == 0
	}
}
