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
	"github.com/romana/romana/model"
)

// input is a kind of change a manager may depend on.
type input uint32

const (
	inNetwork input = 1 << iota
	inHost
	inTenant
	inSegment
	inAddressHere // an address of this host
	inFunction    // an address of any host while chains exist (service functions)
	inPolicy
	inChain
	inDevice
	inAddressSet // an address set's members (policies' nft sets)
	inNeighbor   // a remote host's link-layer address appeared or changed
	inProbe      // a local service function's health changed
	inLearned    // BGP sessions or learned routes changed
	inStats      // time to report policy counters
	inResync     // the resync interval: every manager checks the kernel
	inRetry      // the manager failed or asked to be run again

	inAll = inRetry<<1 - 1
)

var inputOfKind = map[string]input{
	api.KindNetwork: inNetwork, api.KindHost: inHost, api.KindTenant: inTenant, api.KindSegment: inSegment,
	api.KindPolicy: inPolicy, api.KindChain: inChain, api.KindDevice: inDevice,
	api.KindAddressSet: inAddressSet,
}

// manager applies one part of the host's desired state. The loop runs a
// manager only when one of its inputs changed (deps), or to retry after it
// failed or asked to. sync runs on the loop's goroutine, the only one that
// writes to the kernel.
type manager interface {
	name() string
	deps() input
	// sync applies the part; again asks for a retry without an error
	// (waiting for a device, say). full is set at resync: compare with the
	// kernel even if the desired state did not change.
	sync(ctx context.Context, p *pass) (again bool, err error)
}

// pass is one run of the dirty managers over the model.
type pass struct {
	m    *model.Model
	full bool
	// underlay is read at most once per pass, by the first manager
	// that needs it.
	read     func(ctx context.Context) (hoststate.Underlay, error)
	under    *hoststate.Underlay
	underErr error
}

func (p *pass) underlay(ctx context.Context) (*hoststate.Underlay, error) {
	if p.under == nil && p.underErr == nil {
		u, err := p.read(ctx)
		if err != nil {
			p.underErr = fmt.Errorf("read this host's links and neighbours: %w", err)
		} else {
			p.under = &u
		}
	}
	return p.under, p.underErr
}

// slot is a manager with its dirty flag.
type slot struct {
	manager
	dirty input // the changes not yet applied
	full  bool
	err   error // of its last sync
}

// loop owns the model and the kernel: it takes the follower's updates and
// the reporters' signals, marks the managers that depend on them dirty,
// and runs the dirty ones, in order, no more often than the limiter allows.
type loop struct {
	cfg   Config
	log   *slog.Logger
	feed  *follower
	slots []*slot // in dependency order
	m     *model.Model

	limit *limiter
	retry backoff

	wake     chan struct{} // capacity 1
	mu       sync.Mutex
	reported input // signals from the reporters, not yet taken

	// hostIPs are the hosts' underlay addresses, for the neighbour watch.
	hostIPs   atomic.Pointer[map[netip.Addr]bool]
	neighbors neighborMemory

	routes   *routeManager
	firewall *firewallManager
	problems []string // of the last pass, logged

	// For status reports (report.go): the model's revision at the last
	// pass, every manager's last outcome, and when a pass last found
	// every manager in sync.
	reporter     *reporter // nil: no reports
	passRevision int64
	health       error
	lastSync     time.Time
}

func (l *loop) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// report is how goroutines other than the loop (the neighbour watch,
// probes, BGP sessions) tell it something changed; it never blocks.
func (l *loop) report(in input) {
	l.mu.Lock()
	l.reported |= in
	l.mu.Unlock()
	l.poke()
}

func (l *loop) neighborChanged(ip netip.Addr) {
	if m := l.hostIPs.Load(); m != nil && (*m)[ip] {
		l.report(inNeighbor)
	}
}

func (l *loop) mark(in input, full bool) {
	for _, s := range l.slots {
		if s.deps()&in != 0 {
			s.dirty |= in
			s.full = s.full || full
		}
	}
}

// take applies the follower's updates to the model and marks what they
// change. A new snapshot replaces the model and marks everything.
func (l *loop) take() {
	l.mu.Lock()
	in := l.reported
	l.reported = 0
	l.mu.Unlock()
	l.mark(in, false)

	snap, events := l.feed.take()
	if snap != nil {
		l.m = model.New(*snap)
		l.mark(inAll&^(inResync|inRetry|inStats), false)
	}
	if l.m == nil {
		return
	}
	for _, ev := range events {
		c, ok, err := l.m.Apply(ev)
		if err != nil {
			l.log.Warn("bad watch event: reading a new snapshot", "err", err)
			l.feed.restart()
			return
		}
		if !ok {
			continue
		}
		l.mark(l.inputOf(c), false)
	}
}

func (l *loop) inputOf(c model.Change) input {
	if c.Kind == api.KindAddressSet && !c.SetMember {
		return 0 // the same members: nothing to enforce anew
	}
	if c.Kind != api.KindAddress {
		return inputOfKind[c.Kind]
	}
	var in input
	if slices.Contains(c.Hosts, l.cfg.Host) {
		in |= inAddressHere
	}
	if l.m.HasChains() {
		in |= inFunction
	}
	if c.SetMember {
		in |= inAddressSet // a pod's address: members of the sets listing the pod
	}
	return in
}

// run is the agent's one loop. Nothing is applied before the first
// snapshot.
func (l *loop) run(ctx context.Context) {
	resync := time.NewTicker(l.cfg.Resync)
	defer resync.Stop()
	var stats <-chan time.Time
	if ps := l.cfg.PolicyStats; ps != nil {
		t := time.NewTicker(ps.Every)
		defer t.Stop()
		stats = t.C
	}
	var report <-chan time.Time
	if l.reporter != nil {
		t := time.NewTicker(l.cfg.Report.Every)
		defer t.Stop()
		report = t.C
		l.reportStatus() // alive, waiting for the first snapshot
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var retryAt time.Time // when managers that failed run again
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-resync.C:
			l.mark(inResync, true)
		case <-stats:
			l.mark(inStats, false)
		case <-report:
			l.reportStatus() // never blocks; no pass
		case <-timer.C:
		}
		l.take()
		if l.m == nil {
			continue // nothing before the first snapshot
		}
		l.settle() // changes that leave the firewall as it is
		// Changes run at once (within the limiter); managers that only
		// wait for a retry run when it is due.
		now := time.Now()
		fresh, retrying := l.pending()
		if !fresh && !retrying {
			continue
		}
		if !fresh && now.Before(retryAt) {
			timer.Reset(retryAt.Sub(now))
			continue
		}
		if ok, wait := l.limit.take(now); !ok {
			timer.Reset(wait)
			continue
		}
		failed := l.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		l.settle()
		if failed {
			retryAt = time.Now().Add(l.retry.failed())
		} else {
			retryAt = time.Time{}
			l.retry.reset()
		}
		if fresh, retrying := l.pending(); fresh || retrying {
			l.poke() // reported while passing, or a retry to schedule
		}
	}
}

// pending reports whether some manager has changes to apply, and whether
// some waits only for a retry.
func (l *loop) pending() (fresh, retrying bool) {
	for _, s := range l.slots {
		fresh = fresh || s.dirty&^inRetry != 0
		retrying = retrying || s.dirty == inRetry
	}
	return fresh, retrying
}

// pass runs the dirty managers in order. A manager that fails or asks
// again stays dirty; a failed one does not stop the later ones.
func (l *loop) pass(ctx context.Context) (failed bool) {
	m := l.cfg.Metrics
	if m != nil {
		m.reconciles.Inc()
	}
	p := &pass{m: l.m, read: l.readUnderlay}
	l.passRevision = l.m.Revision()
	var errs []error
	for _, s := range l.slots {
		if s.dirty == 0 {
			continue
		}
		p.full = s.full
		s.dirty, s.full = 0, false
		again, err := s.sync(ctx, p)
		if ctx.Err() != nil {
			return true
		}
		s.err = nil
		if err != nil {
			s.err = fmt.Errorf("%s: %w", s.name(), err)
			errs = append(errs, s.err)
		}
		if err != nil || again {
			s.dirty |= inRetry
			failed = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		l.log.Error("reconcile", "err", err, "revision", l.m.Revision())
	}
	var err error
	for _, s := range l.slots {
		err = errors.Join(err, s.err) // health is every manager's last outcome
	}
	problems := slices.Concat(l.routes.problems, l.firewall.problems)
	slices.Sort(problems)
	problems = slices.Compact(problems)
	logProblems(l.log, "skipped", problems, &l.problems)
	l.health = err
	if err == nil {
		l.lastSync = time.Now()
	}
	if m != nil {
		l.report2metrics(m, err)
	}
	l.reportStatus()
	return failed
}

// readUnderlay reads the host's links, addresses and neighbours, keeping
// remote hosts' link-layer addresses the kernel forgot (neighborMemory).
func (l *loop) readUnderlay(ctx context.Context) (hoststate.Underlay, error) {
	u, err := l.cfg.Underlay.Read(ctx)
	if err != nil {
		return u, err
	}
	hostIPs := map[netip.Addr]bool{}
	for _, h := range l.m.Hosts() {
		hostIPs[h.IP.Unmap()] = true
	}
	l.hostIPs.Store(&hostIPs)
	return l.neighbors.merge(u, hostIPs), nil
}

// report2metrics publishes the managers' last results.
func (l *loop) report2metrics(m *Metrics, err error) {
	if err != nil {
		m.errors.Inc()
		m.setHealth(err)
	} else {
		m.lastSuccess.SetToCurrentTime()
		m.setHealth(nil)
	}
	r, f := l.routes, l.firewall
	problems := l.problems
	status := Status{Revision: l.m.Revision(), Problems: problems,
		RouteConflicts: r.status.RouteConflicts, RoutesPending: r.status.RoutesPending,
		RoutesRefused: r.status.RoutesRefused, NeighborsUnresolved: r.status.NeighborsUnresolved}
	m.setStatus(status)
	m.conflicts.Set(float64(len(status.RouteConflicts)))
	m.routes.Set(float64(r.routeCount))
	m.pending.Set(float64(len(status.RoutesPending)))
	m.refused.Set(float64(len(status.RoutesRefused)))
	m.unresolved.Set(float64(len(status.NeighborsUnresolved)))
	m.rules.Set(float64(f.rules))
	m.elements.Set(float64(f.elements))
	m.problems.Set(float64(len(problems)))
	m.revision.Set(float64(l.m.Revision()))
}

// logProblems logs the problems that differ from the last list.
func logProblems(log *slog.Logger, msg string, now []string, last *[]string) {
	if slices.Equal(now, *last) {
		return
	}
	for _, p := range now {
		log.Warn(msg, "problem", p)
	}
	*last = now
}
