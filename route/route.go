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

// Protocol tags every route Romana owns ("proto 190" in `ip route`). The
// CNI plugin tags the endpoint routes it installs with the same number.
const Protocol = 190

// ErrLinkNotFound is wrapped when a route's device does not exist (yet).
var ErrLinkNotFound = errors.New("link not found")

// kernel is what Manager needs from the kernel; netlinkKernel is the real
// one and Fake the in-memory one.
type kernel interface {
	// listRoutes returns the routes tagged with Protocol in the main table.
	listRoutes() ([]hoststate.Route, error)
	// replaceRoute installs r tagged with Protocol, replacing a route to
	// the same destination. It wraps ErrLinkNotFound when r.Dev is missing.
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

// Manager applies desired routes, gateway and sysctls.
type Manager struct {
	k   kernel
	log *slog.Logger
}

// Changes is what SyncRoutes did.
type Changes struct {
	Added, Replaced, Deleted []hoststate.Route
	// Pending are desired routes whose device does not exist yet (the CNI
	// plugin creates it); they are retried at the next sync.
	Pending []hoststate.Route
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
// routes first, then deletes stale ones. It goes on after a failed route
// and returns all failures joined; routes waiting for their device are
// reported in Changes.Pending, not as errors.
func (m *Manager) SyncRoutes(ctx context.Context, desired []hoststate.Route) (Changes, error) {
	var ch Changes
	if err := ctx.Err(); err != nil {
		return ch, err
	}
	live, err := m.k.listRoutes()
	if err != nil {
		return ch, fmt.Errorf("list routes with protocol %d: %w", Protocol, err)
	}
	add, replace, del := Diff(live, desired)
	var errs []error
	apply := func(r hoststate.Route, verb string, done *[]hoststate.Route) {
		err := m.k.replaceRoute(r)
		switch {
		case err == nil:
			*done = append(*done, r)
			m.log.Info("route "+verb, "route", r.String())
		case errors.Is(err, ErrLinkNotFound):
			ch.Pending = append(ch.Pending, r)
			m.log.Debug("route pending: device missing", "route", r.String())
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
	return ch, errors.Join(errs...)
}

// Routes returns our live routes, sorted.
func (m *Manager) Routes(ctx context.Context) ([]hoststate.Route, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rs, err := m.k.listRoutes()
	if err != nil {
		return nil, fmt.Errorf("list routes with protocol %d: %w", Protocol, err)
	}
	slices.SortFunc(rs, hoststate.CompareRoutes)
	return rs, nil
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
// returns how many it changed.
func (m *Manager) SetSysctls(ctx context.Context, ss []hoststate.Sysctl) (int, error) {
	changed := 0
	var errs []error
	for _, s := range ss {
		if err := ctx.Err(); err != nil {
			return changed, err
		}
		cur, err := m.k.readSysctl(s.Key)
		if err != nil {
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
