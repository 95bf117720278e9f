package agent

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
)

// routeManager applies sysctls, the gateway link and routes, and asks the
// kernel to resolve remote hosts' link-layer addresses. It depends on
// networks, hosts, this host's addresses and the neighbours; never on
// policies.
type routeManager struct {
	cfg *Config
	log *slog.Logger

	// Results of the last sync, for status and metrics.
	problems   []string
	status     Status // the route fields only
	routeCount int
	// conflicts are the route conflicts of the last sync (a foreign route
	// holds the destination), by their String; refused, the routes
	// refused, by their String.
	conflicts map[string]route.Conflict
	refused   map[string]bool
}

func (*routeManager) name() string { return "routes" }

func (*routeManager) deps() input {
	return inNetwork | inHost | inAddressHere | inNeighbor | inResync | inRetry
}

// sync: a failed step does not stop the later ones. again reports routes
// waiting for their device, worth a retry before the next resync.
func (r *routeManager) sync(ctx context.Context, p *pass) (bool, error) {
	under, err := p.underlay(ctx)
	if err != nil {
		return false, err
	}
	st, err := hoststate.ComputeRouting(p.m, r.cfg.Host, hoststate.Options{Mode: r.cfg.Mode, Underlay: under})
	if err != nil {
		r.problems = nil
		return false, err
	}
	r.reportRefused(st.Refused)
	r.problems = st.Problems
	var errs []error
	if _, err := r.cfg.Routes.SetSysctls(ctx, st.Sysctls); err != nil {
		errs = append(errs, err)
	}
	if err := r.cfg.Routes.EnsureGateway(ctx, st.Gateway); err != nil {
		errs = append(errs, err)
	}
	ch, err := r.cfg.Routes.SyncRoutes(ctx, st.Routes)
	if err != nil {
		errs = append(errs, err)
	}
	if len(st.Resolve) > 0 {
		// Their routes exist now: ask for their link-layer addresses; the
		// neighbour watch reports when they answer.
		if err := r.cfg.Underlay.Resolve(ctx, st.Resolve); err != nil {
			r.log.Warn("resolve remote hosts' link-layer addresses", "err", err)
		}
	}
	r.reportConflicts(ch.Conflicts)
	r.routeCount = len(st.Routes)
	r.status = Status{}
	for _, c := range ch.Conflicts {
		r.status.RouteConflicts = append(r.status.RouteConflicts, c.String())
	}
	for _, x := range ch.Pending {
		r.status.RoutesPending = append(r.status.RoutesPending, x.String())
	}
	for _, x := range st.Refused {
		r.status.RoutesRefused = append(r.status.RoutesRefused, x.String())
	}
	for _, ip := range st.Resolve {
		r.status.NeighborsUnresolved = append(r.status.NeighborsUnresolved, ip.String())
	}
	if len(ch.Pending) > 0 {
		r.log.Info("routes waiting for their device", "count", len(ch.Pending), "first", ch.Pending[0].String())
	}
	return len(ch.Pending) > 0, errors.Join(errs...)
}

// reportConflicts logs route conflicts that appeared (a warning naming the
// prefix and the foreign route) and those resolved since the last call.
func (r *routeManager) reportConflicts(cs []route.Conflict) {
	now := make(map[string]route.Conflict, len(cs))
	for _, c := range cs {
		now[c.String()] = c
		if _, known := r.conflicts[c.String()]; !known {
			r.log.Warn("route not installed: a foreign route holds its destination; left alone, retried at every resync",
				"prefix", c.Route.Dst.String(), "route", c.Route.String(), "foreign", c.Foreign)
		}
	}
	for k, c := range r.conflicts {
		if _, still := now[k]; !still {
			r.log.Info("route conflict resolved", "prefix", c.Route.Dst.String(), "foreign", c.Foreign)
		}
	}
	r.conflicts = now
}

// reportRefused logs routes refused that were not refused at the last
// sync (a warning naming the route and the reason), and those no longer
// refused.
func (r *routeManager) reportRefused(rs []hoststate.Refusal) {
	now := make(map[string]bool, len(rs))
	for _, x := range rs {
		now[x.Route.String()] = true
		if !r.refused[x.Route.String()] {
			r.log.Warn("route refused: this host may not install it; fix the object in romanad",
				"route", x.Route.String(), "reason", x.Reason)
		}
	}
	for k := range r.refused {
		if !now[k] {
			r.log.Info("route no longer refused", "route", k)
		}
	}
	r.refused = now
}

// firewallManager applies table inet romana: isolation and policies. It
// depends on everything but this host's endpoints (which never change the
// ruleset, unless --flowtable lists their veths), and on addresses only
// while service chains exist.
type firewallManager struct {
	cfg *Config
	log *slog.Logger

	problems        []string // with the policies nft rejected
	rules, elements int
	// applied is the ruleset last applied or verified in sync (nil if the
	// last attempt failed): a change that leaves it equal skips the nft
	// listing; resyncs always check. Rulesets are compared with Equal,
	// not rendered (at 10,000 policies rendering takes longer than
	// computing them with the compiler).
	applied *hoststate.Ruleset
	// rejected are the policies nft rejected in the ruleset rejectedFor,
	// left out of it (reject.go).
	rejected    map[string]error
	rejectedFor *hoststate.Ruleset
	// compiler keeps the policies compiled from pass to pass: a change to
	// one policy recompiles that one.
	compiler hoststate.Compiler
	// flowtable is the state of Config.Flowtable (flowtable.go).
	flowtable flowtableState
}

func (*firewallManager) name() string { return "firewall" }

func (f *firewallManager) deps() input {
	in := inNetwork | inHost | inTenant | inSegment | inPolicy | inAddressSet | inChain | inFunction | inNeighbor | inResync | inRetry
	if f.cfg.Flowtable {
		in |= inAddressHere // the flowtable lists the endpoints' veths
	}
	return in
}

func (f *firewallManager) sync(ctx context.Context, p *pass) (bool, error) {
	under, err := p.underlay(ctx)
	if err != nil {
		return false, err
	}
	rs, problems, err := f.compiler.Firewall(p.m, f.cfg.Host, hoststate.Options{Mode: f.cfg.Mode, Underlay: under, Flowtable: f.flowtable.use(ctx, f.cfg, f.log)})
	if err != nil {
		f.problems = nil
		return false, err
	}
	f.rules, f.elements = rs.RuleCount(), rs.ElementCount()
	same := func(o *hoststate.Ruleset) bool { return o != nil && rs.Equal(*o) }
	var applyErr error
	if p.full || !same(f.applied) {
		f.applied = nil
		if !same(f.rejectedFor) {
			f.rejected = nil // the ruleset changed: retry every policy
		}
		rejected, err := applyFirewall(ctx, f.cfg.Firewall, rs, f.rejected)
		f.rejected, f.rejectedFor = rejected, &rs
		if err != nil {
			applyErr = err
		} else {
			f.applied = &rs
		}
	}
	if len(f.rejected) > 0 {
		problems = append(slices.Clone(problems), rejectedProblems(f.rejected)...)
		slices.Sort(problems)
	}
	f.problems = append(slices.Clone(problems), f.flowtable.problems()...)
	return f.flowtable.pending(rs), applyErr
}
