// Package route is the host agent's kernel adapter for everything but the
// firewall: it keeps the routes tagged with Protocol in the main table equal
// to the desired ones (never touching any other route), ensures the
// endpoints' gateway (a dummy link holding 169.254.1.1/32) and sets
// sysctls. It acts in the network namespace of the calling process.
package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/hoststate"
)

// Protocol tags every route and ip rule Romana owns ("proto 190" in `ip
// route` and `ip rule`; unused in iproute2's rt_protos). The CNI plugin
// tags the endpoint routes it installs with the same number. Nothing
// without it is ever replaced or deleted.
const Protocol = 190

// ErrLinkNotFound is wrapped when a route's device does not exist (yet).
var ErrLinkNotFound = errors.New("link not found")

// ErrLinkDown is wrapped when a route's device exists but is not up yet
// (the kernel's ENETDOWN): the CNI plugin creates an endpoint's veth and
// brings it up after romanad allocated the address the agent routes.
var ErrLinkDown = errors.New("link is down")

// kernel is what Manager needs from the kernel; netlinkKernel is the real
// one and Fake the in-memory one.
type kernel interface {
	// listRoutes returns the routes tagged with Protocol in the main
	// table, and the other routes (foreign: the kernel's, an
	// administrator's, another daemon's) in the main table whose
	// destination is in dsts, described as `ip route` would.
	listRoutes(dsts map[netip.Prefix]bool) (ours []hoststate.Route, foreign map[netip.Prefix]string, err error)
	// addRoute installs r tagged with Protocol if no route to r.Dst with
	// the same metric exists; otherwise it wraps ErrExists. It wraps
	// ErrLinkNotFound when r.Dev is missing.
	addRoute(r hoststate.Route) error
	// replaceRoute replaces our route to r.Dst with r, tagged with
	// Protocol. It wraps ErrLinkNotFound when r.Dev is missing.
	replaceRoute(r hoststate.Route) error
	// deleteRoute removes our route to r.Dst (as last listed).
	deleteRoute(r hoststate.Route) error
	// ensureDummy creates (if missing) and sets up a dummy link holding addr.
	ensureDummy(name string, addr netip.Prefix) error
	// deleteLink removes a dummy link; a missing one is not an error.
	deleteDummy(name string) error
	readSysctl(key string) (string, error)
	writeSysctl(key, value string) error
}

// ErrExists is wrapped when a route to the same destination (and metric)
// already exists.
var ErrExists = errors.New("route exists")

// Conflict is a desired route whose destination a foreign route holds in
// the main table: Romana leaves the foreign route alone and installs
// nothing there until it is gone.
type Conflict struct {
	Route   hoststate.Route
	Foreign string // the foreign route, as `ip route` shows it
}

func (c Conflict) String() string {
	return c.Route.String() + ": destination held by foreign route " + c.Foreign
}

// Manager applies desired routes, gateway and sysctls.
type Manager struct {
	k   kernel
	log *slog.Logger
}

// Changes is what SyncRoutes did.
type Changes struct {
	Added, Replaced, Deleted []hoststate.Route
	// Pending are desired routes whose device does not exist or is not up
	// yet (the CNI plugin creates it, then brings it up); they are retried
	// at the next sync.
	Pending []hoststate.Route
	// Conflicts are desired routes whose destination a foreign route
	// holds; they are left out and retried at every sync. A route of ours
	// to the same destination, if any, is left as it is.
	Conflicts []Conflict
}

// Empty reports whether nothing changed and nothing is pending.
func (c Changes) Empty() bool {
	return len(c.Added)+len(c.Replaced)+len(c.Deleted)+len(c.Pending) == 0
}

// Diff compares our live routes with the desired ones: routes to add,
// routes whose destination exists with other attributes (replace), and
// live routes no longer desired (delete). Inputs need not be sorted; the
// outputs are.
func Diff(live, desired []hoststate.Route) (add, replace, del []hoststate.Route) {
	have := map[netip.Prefix]hoststate.Route{}
	for _, r := range live {
		have[r.Dst] = r
	}
	want := map[netip.Prefix]bool{}
	for _, r := range desired {
		want[r.Dst] = true
		switch old, ok := have[r.Dst]; {
		case !ok:
			add = append(add, r)
		case old != r:
			replace = append(replace, r)
		}
	}
	for _, r := range live {
		if !want[r.Dst] {
			del = append(del, r)
		}
	}
	for _, s := range [][]hoststate.Route{add, replace, del} {
		slices.SortFunc(s, hoststate.CompareRoutes)
	}
	return add, replace, del
}

// SyncRoutes makes our routes equal to desired: it adds and replaces
// routes first, then deletes stale ones. Only routes tagged with Protocol
// are ever replaced or deleted: a desired route whose destination a
// foreign route holds in the main table is reported in Changes.Conflicts
// and left out, whatever that route's metric (ours, at metric 0, would
// take its traffic). It goes on after a failed route and returns all
// failures joined; routes waiting for their device are reported in
// Changes.Pending, not as errors.
func (m *Manager) SyncRoutes(ctx context.Context, desired []hoststate.Route) (Changes, error) {
	var ch Changes
	if err := ctx.Err(); err != nil {
		return ch, err
	}
	dsts := make(map[netip.Prefix]bool, len(desired))
	for _, r := range desired {
		dsts[r.Dst] = true
	}
	live, foreign, err := m.k.listRoutes(dsts)
	if err != nil {
		return ch, fmt.Errorf("list routes in the main table: %w", err)
	}
	add, replace, del := Diff(live, desired)
	var errs []error
	apply := func(r hoststate.Route, verb string, done *[]hoststate.Route) {
		if f, ok := foreign[r.Dst]; ok {
			ch.Conflicts = append(ch.Conflicts, Conflict{Route: r, Foreign: f})
			return
		}
		var err error
		if verb == "add" {
			err = m.k.addRoute(r)
		} else {
			err = m.k.replaceRoute(r)
		}
		switch {
		case err == nil:
			*done = append(*done, r)
			m.log.Info("route "+verb, "route", r.String())
		case errors.Is(err, ErrLinkNotFound), errors.Is(err, ErrLinkDown):
			ch.Pending = append(ch.Pending, r)
			m.log.Debug("route pending: device missing or down", "route", r.String(), "reason", err)
		case errors.Is(err, ErrExists):
			// A foreign route appeared since the listing.
			ch.Conflicts = append(ch.Conflicts, Conflict{Route: r, Foreign: r.Dst.String() + " (appeared during the sync)"})
		default:
			errs = append(errs, fmt.Errorf("%s route %s: %w", verb, r, err))
		}
	}
	for _, r := range add {
		apply(r, "add", &ch.Added)
	}
	for _, r := range replace {
		apply(r, "replace", &ch.Replaced)
	}
	for _, r := range del {
		if err := m.k.deleteRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r, err))
			continue
		}
		ch.Deleted = append(ch.Deleted, r)
		m.log.Info("route deleted", "route", r.String())
	}
	// Destinations held by both a foreign route and ours (at another
	// metric) are conflicts too, though nothing was to be done.
	for _, r := range desired {
		if f, ok := foreign[r.Dst]; ok && !slices.ContainsFunc(ch.Conflicts, func(c Conflict) bool { return c.Route.Dst == r.Dst }) {
			ch.Conflicts = append(ch.Conflicts, Conflict{Route: r, Foreign: f})
		}
	}
	slices.SortFunc(ch.Conflicts, func(a, b Conflict) int { return hoststate.CompareRoutes(a.Route, b.Route) })
	return ch, errors.Join(errs...)
}

// EnsureGateway creates the gateway's dummy link if needed, sets it up and
// makes sure it holds the gateway address. Other addresses on it are left alone.
func (m *Manager) EnsureGateway(ctx context.Context, gw hoststate.Gateway) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.k.ensureDummy(gw.Link, gw.Addr); err != nil {
		return fmt.Errorf("ensure gateway %s: %w", gw, err)
	}
	return nil
}

// SetSysctls writes the settings that differ from the desired values and
// returns how many it changed. A setting of an interface that does not
// exist yet is skipped (set at a later call, once the interface exists).
func (m *Manager) SetSysctls(ctx context.Context, ss []hoststate.Sysctl) (int, error) {
	changed := 0
	var errs []error
	for _, s := range ss {
		if err := ctx.Err(); err != nil {
			return changed, err
		}
		cur, err := m.k.readSysctl(s.Key)
		switch {
		case errors.Is(err, ErrLinkNotFound):
			// The interface (an endpoint's veth) does not exist yet: set
			// when it does, like its route.
			m.log.Debug("sysctl pending: interface missing", "key", s.Key)
			continue
		case errors.Is(err, errors.ErrUnsupported) && strings.HasSuffix(s.Key, "/force_forwarding"):
			if all, err := m.k.readSysctl("net.ipv6.conf.all.forwarding"); err == nil && strings.TrimSpace(all) == "1" {
				continue // the administrator forwards IPv6 on every interface
			}
			errs = append(errs, fmt.Errorf("set sysctl %s: %w (Linux 6.17 or later has it; on older kernels IPv6 endpoints are forwarded only if you set net.ipv6.conf.all.forwarding=1, see docs/agent.md)", s, err))
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("read sysctl %s: %w", s.Key, err))
			continue
		}
		if strings.TrimSpace(cur) == s.Value {
			continue
		}
		if err := m.k.writeSysctl(s.Key, s.Value); err != nil {
			errs = append(errs, fmt.Errorf("set sysctl %s: %w", s, err))
			continue
		}
		changed++
		m.log.Info("sysctl set", "key", s.Key, "value", s.Value, "was", strings.TrimSpace(cur))
	}
	return changed, errors.Join(errs...)
}

// Cleanup removes every route tagged with Protocol and the gateway link.
// Sysctls are left as they are (other software may rely on forwarding).
func (m *Manager) Cleanup(ctx context.Context, gw hoststate.Gateway) error {
	_, err := m.SyncRoutes(ctx, nil)
	if err != nil {
		err = fmt.Errorf("cleanup: %w", err)
	}
	if derr := m.k.deleteDummy(gw.Link); derr != nil {
		err = errors.Join(err, fmt.Errorf("cleanup: delete gateway link %s: %w", gw.Link, derr))
	}
	return err
}
