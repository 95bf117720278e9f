// Package agent is the host agent's reconcile loop: it follows romanad's
// snapshot and watch stream, and one goroutine computes the host's desired
// state (package hoststate) and applies it through the route and firewall
// adapters, at every change and at every resync interval.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
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
	// Steering, optional, implements service chains (chain.go) from the
	// same snapshot and watch stream as the main loop.
	Steering *Steerer
	// BGP, optional, announces the host's blocks to the top-of-rack
	// routers serving it (fabric mode; see bgp.go).
	BGP BGP
	// MinBackoff and MaxBackoff bound the delay before retrying a failed
	// snapshot, watch or reconciliation (defaults 200ms and 10s).
	MinBackoff, MaxBackoff time.Duration
	// Underlay is what routes are screened against (links, addresses,
	// neighbours; see hoststate.Underlay). Nil: a NetlinkUnderlay in the
	// network namespace of the goroutine calling Run.
	Underlay Underlay
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
	return nil
}

// agent holds the inputs shared by the follower and the reconciler.
type agent struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{} // capacity 1: "the inputs changed"

	feed *follower

	// Owned by the reconciler goroutine.
	lastProblems []string
	// conflicts are the route conflicts of the last reconciliation (a
	// foreign route holds the destination), by their String.
	conflicts map[string]route.Conflict
	bgp       bgpState
	// applied is the ruleset last applied or verified in sync ("" if the
	// last attempt failed): a change that leaves it equal skips the nft
	// listing; resyncs always check.
	applied string
	// rejected are the policies nft rejected in the ruleset rejectedFor,
	// left out of it (reject.go).
	rejected    map[string]error
	rejectedFor string
	// neighbors remembers remote hosts' link-layer addresses; refused
	// are the routes refused at the last reconciliation, by their String.
	neighbors neighborMemory
	refused   map[string]bool
	// hostIPs are the hosts' underlay addresses as last reconciled, for
	// the neighbour watch (read by its goroutine).
	hostIPs atomic.Pointer[map[netip.Addr]bool]
}

// neighborChanged kicks a reconciliation when a host's link-layer address
// appears or changes; other neighbours (endpoints on their veths, the
// default gateway) do not matter.
func (a *agent) neighborChanged(ip netip.Addr) {
	if m := a.hostIPs.Load(); m != nil && (*m)[ip] {
		a.poke()
	}
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
	a := &agent{cfg: cfg, log: cfg.Log.With("host", cfg.Host), kick: make(chan struct{}, 1), neighbors: neighborMemory{}}
	a.feed = &follower{src: cfg.Source, log: a.log, minBackoff: cfg.MinBackoff, maxBackoff: cfg.MaxBackoff,
		notify: []func(){a.poke}}
	var wg sync.WaitGroup
	if cfg.Steering != nil {
		// Chains are applied by their own loop, fed by the same follower.
		a.feed.notify = append(a.feed.notify, cfg.Steering.poke)
		wg.Go(func() { cfg.Steering.run(ctx, a.feed) })
	}
	wg.Go(func() { a.feed.run(ctx) })
	if cfg.Mode == hoststate.ModeFlat {
		// A neighbour that answers (a new host, a changed MAC) changes
		// the anti-spoofing set: reconcile then, not at the next resync.
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := cfg.Underlay.Watch(ctx, a.neighborChanged); err != nil && ctx.Err() == nil {
					a.log.Warn("watch neighbours", "err", err, "retryIn", cfg.MaxBackoff)
					sleep(ctx, cfg.MaxBackoff)
				}
			}
		})
	}
	a.reconcileLoop(ctx)
	wg.Wait()
	return nil
}

func (a *agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
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

// reconcileLoop is the only goroutine that touches the kernel.
func (a *agent) reconcileLoop(ctx context.Context) {
	ticker := time.NewTicker(a.cfg.Resync)
	defer ticker.Stop()
	backoff := a.cfg.MinBackoff
	var retry <-chan time.Time
	for {
		full := true
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
			full = false
		case <-ticker.C:
		case <-retry:
		}
		snap, ok := a.feed.current()
		if !ok {
			continue // apply nothing before the first snapshot
		}
		again, err := a.reconcile(ctx, snap, full)
		if ctx.Err() != nil {
			return
		}
		if err != nil || again {
			if err != nil {
				a.log.Error("reconcile", "err", err, "retryIn", backoff)
			}
			retry = time.After(backoff)
			backoff = min(2*backoff, a.cfg.MaxBackoff)
		} else {
			retry = nil
			backoff = a.cfg.MinBackoff
		}
	}
}

// reconcile computes the desired state and applies it: sysctls, the
// gateway link and address, then the firewall, then routes (so an
// endpoint becomes routable only once isolation is in place). A failed
// step does not stop the later ones. Unless full, the firewall is left
// alone when its desired ruleset did not change since it was last applied
// (most changes are endpoints, which never change the ruleset). again
// reports routes waiting for their device, worth a retry before the next
// resync.
func (a *agent) reconcile(ctx context.Context, snap api.Snapshot, full bool) (again bool, err error) {
	m := a.cfg.Metrics
	if m != nil {
		m.reconciles.Inc()
		defer func() {
			if err != nil {
				m.errors.Inc()
				m.setHealth(err)
			} else {
				m.lastSuccess.SetToCurrentTime()
				m.setHealth(nil)
			}
		}()
	}
	under, err := a.cfg.Underlay.Read(ctx)
	if err != nil {
		return false, fmt.Errorf("read this host's links and neighbours: %w", err)
	}
	hostIPs := map[netip.Addr]bool{}
	for _, h := range snap.Hosts {
		hostIPs[h.IP.Unmap()] = true
	}
	a.hostIPs.Store(&hostIPs)
	under = a.neighbors.merge(under, hostIPs)
	st, err := hoststate.Compute(snap, a.cfg.Host, hoststate.Options{Mode: a.cfg.Mode, Underlay: &under})
	if err != nil {
		return false, fmt.Errorf("compute desired state at revision %d: %w", snap.Revision, err)
	}
	a.reportRefused(st.Refused)
	var errs []error
	if _, err := a.cfg.Routes.SetSysctls(ctx, st.Sysctls); err != nil {
		errs = append(errs, err)
	}
	if err := a.cfg.Routes.EnsureGateway(ctx, st.Gateway); err != nil {
		errs = append(errs, err)
	}
	rs := st.Firewall.String()
	if full || rs != a.applied {
		a.applied = ""
		if rs != a.rejectedFor {
			a.rejected = nil // the ruleset changed: retry every policy
		}
		rejected, err := applyFirewall(ctx, a.cfg.Firewall, st.Firewall, a.rejected)
		a.rejected, a.rejectedFor = rejected, rs
		if err != nil {
			errs = append(errs, err)
		} else {
			a.applied = rs
		}
	}
	if len(a.rejected) > 0 {
		st.Problems = append(slices.Clone(st.Problems), rejectedProblems(a.rejected)...)
		slices.Sort(st.Problems)
	}
	if !slices.Equal(st.Problems, a.lastProblems) {
		for _, p := range st.Problems {
			a.log.Warn("skipped", "problem", p)
		}
		a.lastProblems = st.Problems
	}
	ch, err := a.cfg.Routes.SyncRoutes(ctx, st.Routes)
	if err != nil {
		errs = append(errs, err)
	}
	if len(st.Resolve) > 0 {
		// Their routes exist now: ask for their link-layer addresses; the
		// neighbour watch kicks a reconciliation when they answer.
		if err := a.cfg.Underlay.Resolve(ctx, st.Resolve); err != nil {
			a.log.Warn("resolve remote hosts' link-layer addresses", "err", err)
		}
	}
	if err := a.applyBGP(ctx, snap); err != nil {
		errs = append(errs, err)
	}
	a.reportConflicts(ch.Conflicts)
	if m != nil {
		status := Status{Revision: snap.Revision, Problems: st.Problems}
		for _, c := range ch.Conflicts {
			status.RouteConflicts = append(status.RouteConflicts, c.String())
		}
		for _, r := range ch.Pending {
			status.RoutesPending = append(status.RoutesPending, r.String())
		}
		for _, r := range st.Refused {
			status.RoutesRefused = append(status.RoutesRefused, r.String())
		}
		for _, ip := range st.Resolve {
			status.NeighborsUnresolved = append(status.NeighborsUnresolved, ip.String())
		}
		m.setStatus(status)
		m.conflicts.Set(float64(len(ch.Conflicts)))
		m.routes.Set(float64(len(st.Routes)))
		m.pending.Set(float64(len(ch.Pending)))
		m.refused.Set(float64(len(st.Refused)))
		m.unresolved.Set(float64(len(st.Resolve)))
		m.rules.Set(float64(st.Firewall.RuleCount()))
		m.elements.Set(float64(st.Firewall.ElementCount()))
		m.problems.Set(float64(len(st.Problems)))
		m.revision.Set(float64(snap.Revision))
	}
	if len(ch.Pending) > 0 {
		a.log.Info("routes waiting for their device", "count", len(ch.Pending), "first", ch.Pending[0].String())
	}
	return len(ch.Pending) > 0, errors.Join(errs...)
}

// reportConflicts logs route conflicts that appeared (a warning naming the
// prefix and the foreign route) and those resolved since the last call.
func (a *agent) reportConflicts(cs []route.Conflict) {
	now := make(map[string]route.Conflict, len(cs))
	for _, c := range cs {
		now[c.String()] = c
		if _, known := a.conflicts[c.String()]; !known {
			a.log.Warn("route not installed: a foreign route holds its destination; left alone, retried at every resync",
				"prefix", c.Route.Dst.String(), "route", c.Route.String(), "foreign", c.Foreign)
		}
	}
	for k, c := range a.conflicts {
		if _, still := now[k]; !still {
			a.log.Info("route conflict resolved", "prefix", c.Route.Dst.String(), "foreign", c.Foreign)
		}
	}
	a.conflicts = now
}

// reportRefused logs routes refused that were not refused at the last
// reconciliation (a warning naming the route and the reason), and those no
// longer refused.
func (a *agent) reportRefused(rs []hoststate.Refusal) {
	now := make(map[string]bool, len(rs))
	for _, r := range rs {
		now[r.Route.String()] = true
		if !a.refused[r.Route.String()] {
			a.log.Warn("route refused: this host may not install it; fix the object in romanad",
				"route", r.Route.String(), "reason", r.Reason)
		}
	}
	for k := range a.refused {
		if !now[k] {
			a.log.Info("route no longer refused", "route", k)
		}
	}
	a.refused = now
}

// Cleanup removes everything the agent owns on this host: table inet
// romana, every route tagged with route.Protocol and the gateway link.
// Foreign tables, routes and links are left alone; sysctls stay as they are.
func Cleanup(ctx context.Context, routes Routes, fw Firewall) error {
	return errors.Join(fw.Cleanup(ctx), routes.Cleanup(ctx, hoststate.DefaultGateway()))
}
