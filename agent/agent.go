// Package agent is the host agent: one loop (loop.go) owns the kernel. A
// follower goroutine reads romanad's snapshot and watch stream; the loop
// applies them to one indexed model (package model) and runs the managers
// (routes, firewall, chain steering, BGP, policy counters) whose inputs
// changed, in that order, no more often than a bounded-frequency limiter
// allows, and all of them at every resync interval. Other goroutines (the
// neighbour watch, service-function probes, BGP sessions) only report into
// the loop.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
)

// Source is romanad as the agent sees it; *client.Client implements it.
type Source interface {
	Snapshot(ctx context.Context) (api.Snapshot, error)
	// Watch calls fn for each event from revision on until ctx ends or the
	// stream breaks; a compacted revision is an *api.Error with reason Gone.
	Watch(ctx context.Context, revision int64, fn func(api.Event) error) error
}

// Routes applies sysctls, the gateway link and routes; *route.Manager
// implements it.
type Routes interface {
	SetSysctls(ctx context.Context, ss []hoststate.Sysctl) (int, error)
	EnsureGateway(ctx context.Context, gw hoststate.Gateway) error
	SyncRoutes(ctx context.Context, desired []hoststate.Route) (route.Changes, error)
	Cleanup(ctx context.Context, gw hoststate.Gateway) error
}

// Firewall applies the nftables ruleset; *firewall.Firewall implements it.
type Firewall interface {
	Apply(ctx context.Context, rs hoststate.Ruleset) (changed bool, err error)
	// Check reports whether nft would accept rs, committing nothing; the
	// agent uses it to find policies nft rejects (reject.go).
	Check(ctx context.Context, rs hoststate.Ruleset) error
	Cleanup(ctx context.Context) error
}

// Config configures Run.
type Config struct {
	Host     string         // this host's name at romanad
	Mode     hoststate.Mode // flat (default) or fabric
	Resync   time.Duration  // full reconciliation interval (default 10s)
	Source   Source
	Routes   Routes
	Firewall Firewall
	Log      *slog.Logger // default: discard
	Metrics  *Metrics     // optional
	// Steering, optional, implements service chains (chain.go).
	Steering *Steerer
	// BGP, optional, announces the host's blocks to the top-of-rack
	// routers serving it (fabric mode; see bgp.go).
	BGP BGP
	// PolicyStats, optional, reports policy rule counters to romanad.
	PolicyStats *PolicyStats
	// Report, optional, reports the agent's status to romanad
	// (report.go).
	Report *Report
	// MinBackoff and MaxBackoff bound the delay before retrying a failed
	// snapshot, watch or reconciliation (defaults 200ms and 10s).
	MinBackoff, MaxBackoff time.Duration
	// MinSyncInterval and SyncBurst bound how often the loop applies
	// changes: a burst of SyncBurst passes, then one per MinSyncInterval
	// at most, changes arriving meanwhile folded into the next pass
	// (defaults 10ms and 10). Resyncs and retries count too.
	MinSyncInterval time.Duration
	SyncBurst       int
	// Underlay is what routes are screened against (links, addresses,
	// neighbours; see hoststate.Underlay). Nil: a NetlinkUnderlay in the
	// network namespace of the goroutine calling Run.
	Underlay Underlay
	// Flowtable offloads established connections of this host's
	// endpoints to an nftables software flowtable (hoststate.Flowtable;
	// --flowtable, not proven yet). The firewall must also implement
	// FlowtableSupporter; on a kernel without flowtables the agent runs
	// without it and reports a problem (flowtable.go).
	Flowtable bool
	// Settled, optional, lets the CNI plugin wait until the firewall
	// enforces the sets a new address belongs to (settle.go).
	Settled *Settled
}

func (c *Config) defaults() error {
	if c.Host == "" {
		return errors.New("agent: no host name")
	}
	if c.Source == nil || c.Routes == nil || c.Firewall == nil {
		return errors.New("agent: Source, Routes and Firewall are required")
	}
	mode, err := hoststate.ParseMode(string(c.Mode))
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	c.Mode = mode
	if c.Resync <= 0 {
		c.Resync = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(10*time.Second, c.MinBackoff)
	}
	if c.MinSyncInterval == 0 {
		c.MinSyncInterval = 10 * time.Millisecond
	}
	if c.SyncBurst <= 0 {
		c.SyncBurst = 10
	}
	if c.Report != nil && c.Report.Sink == nil {
		return errors.New("agent: Report needs a Sink")
	}
	c.reportDefaults()
	if ps := c.PolicyStats; ps != nil {
		if ps.Counters == nil || ps.Sink == nil {
			return errors.New("agent: PolicyStats needs Counters and Sink")
		}
		if ps.Every <= 0 {
			ps.Every = 10 * time.Second
		}
	}
	return nil
}

// Run follows romanad and reconciles the host until ctx ends, then returns
// nil, leaving the host's state in place (a restarted agent adopts it
// without disturbing traffic). Nothing is applied before the first snapshot.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	if cfg.Underlay == nil {
		u, err := NewNetlinkUnderlay()
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		defer u.Close()
		cfg.Underlay = u
	}
	log := cfg.Log.With("host", cfg.Host)
	l := &loop{cfg: cfg, log: log, wake: make(chan struct{}, 1), neighbors: neighborMemory{},
		limit: newLimiter(cfg.MinSyncInterval, cfg.SyncBurst),
		retry: backoff{min: cfg.MinBackoff, max: cfg.MaxBackoff}}
	if cfg.Settled != nil {
		cfg.Settled.setPoke(l.poke)
		defer cfg.Settled.setPoke(nil)
	}
	l.feed = &follower{src: cfg.Source, log: log, minBackoff: cfg.MinBackoff, maxBackoff: cfg.MaxBackoff, notify: l.poke}
	l.routes = &routeManager{cfg: &l.cfg, log: log}
	l.firewall = &firewallManager{cfg: &l.cfg, log: log}
	// Dependency order: isolation before routes (an endpoint becomes
	// routable only once isolation is in place), steering after both,
	// BGP announces only blocks the host can serve.
	managers := []manager{l.firewall, l.routes}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s := cfg.Steering; s != nil {
		managers = append(managers, &steeringManager{s: s, host: cfg.Host})
		wg.Go(func() { s.probeLoop(ctx, func() { l.report(inProbe) }) })
	}
	if cfg.BGP != nil {
		managers = append(managers, &bgpManager{b: cfg.BGP, host: cfg.Host, log: log})
		if lr, ok := cfg.BGP.(BGPLearner); ok {
			wg.Go(func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-lr.Changed():
						l.report(inLearned)
					}
				}
			})
		}
	}
	if ps := cfg.PolicyStats; ps != nil {
		sm := newStatsManager(ps, cfg.Host, log)
		managers = append(managers, sm)
		wg.Go(func() { sm.send(ctx) })
	}
	if cfg.Report != nil {
		l.reporter = newReporter(cfg.Report, cfg.Host, log)
		wg.Go(func() { l.reporter.send(ctx) })
	}
	for _, m := range managers {
		l.slots = append(l.slots, &slot{manager: m})
	}
	wg.Go(func() { l.feed.run(ctx) })
	if cfg.Mode == hoststate.ModeFlat {
		// A neighbour that answers (a new host, a changed MAC) changes
		// the anti-spoofing set: reconcile then, not at the next resync.
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := cfg.Underlay.Watch(ctx, l.neighborChanged); err != nil && ctx.Err() == nil {
					log.Warn("watch neighbours", "err", err, "retryIn", cfg.MaxBackoff)
					sleep(ctx, cfg.MaxBackoff)
				}
			}
		})
	}
	l.run(ctx)
	return nil
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Cleanup removes everything the agent owns on this host: table inet
// romana, every route tagged with route.Protocol and the gateway link.
// Foreign tables, routes and links are left alone; sysctls stay as they are.
func Cleanup(ctx context.Context, routes Routes, fw Firewall) error {
	return errors.Join(fw.Cleanup(ctx), routes.Cleanup(ctx, hoststate.DefaultGateway()))
}
