package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/romana/romana/fabric"
)

// Protocol tags the routes the speaker installs from what it learned
// ("proto 191" in `ip route`). It differs from route.Protocol (190) on
// purpose: the agent's route manager owns every proto-190 route of the main
// table as one desired set and would delete these; each owner keeps its own tag.
const Protocol = 191

// Metric of learned routes. Any route the administrator or the underlay
// installed to the same destination with the usual metric 0 is never
// replaced and wins over ours.
const Metric = 200

// Route is a learned route as installed: Dst via every address of Via
// (equal-cost multipath when there are several).
type Route struct {
	Dst netip.Prefix
	Via []netip.Addr // sorted, at least one
}

func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	for _, v := range r.Via {
		b.WriteString(" via " + v.String())
	}
	return b.String()
}

func (r Route) equal(o Route) bool { return r.Dst == o.Dst && slices.Equal(r.Via, o.Via) }

// Kernel holds learned routes; the netlink implementation (NewKernel) acts
// on the main table of the calling process's namespace, Fake in memory.
type Kernel interface {
	// Routes returns the routes tagged Protocol.
	Routes(ctx context.Context) ([]Route, error)
	// Replace installs r tagged Protocol with Metric, replacing ours to r.Dst.
	Replace(ctx context.Context, r Route) error
	// Delete removes ours to r.Dst; a missing route is not an error.
	Delete(ctx context.Context, r Route) error
}

// candidate is one path a peer sent for a prefix.
type candidate struct {
	dst     netip.Prefix
	nextHop netip.Addr
	pathLen int   // AS_PATH length (an AS_SET counts as one)
	origin  uint8 // IGP < EGP < INCOMPLETE
}

// selectRoutes picks, for each acceptable destination, the candidates that
// tie on the best AS path length and origin, and routes via all of their
// next hops: equal-cost multipath over the uplinks that offer the best
// path. Destinations outside accept or inside own are dropped (see
// fabric.Acceptable). The result is sorted by destination.
func selectRoutes(cands []candidate, accept, own []netip.Prefix) []Route {
	by := map[netip.Prefix][]candidate{}
	for _, c := range cands {
		if !c.nextHop.IsValid() || c.nextHop.IsUnspecified() || c.nextHop.Is4() != c.dst.Addr().Is4() {
			continue
		}
		if !fabric.Acceptable(c.dst, accept, own) {
			continue
		}
		by[c.dst] = append(by[c.dst], c)
	}
	out := make([]Route, 0, len(by))
	for dst, cs := range by {
		best := slices.MinFunc(cs, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(a.pathLen, b.pathLen), cmp.Compare(a.origin, b.origin))
		})
		r := Route{Dst: dst}
		for _, c := range cs {
			if c.pathLen == best.pathLen && c.origin == best.origin {
				r.Via = append(r.Via, c.nextHop)
			}
		}
		slices.SortFunc(r.Via, netip.Addr.Compare)
		r.Via = slices.Compact(r.Via)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()))
	})
	return out
}

// diffRoutes returns what to replace (new or changed) and what to delete
// to turn live into desired.
func diffRoutes(live, desired []Route) (replace, del []Route) {
	have := map[netip.Prefix]Route{}
	for _, r := range live {
		have[r.Dst] = r
	}
	want := map[netip.Prefix]bool{}
	for _, r := range desired {
		want[r.Dst] = true
		if old, ok := have[r.Dst]; !ok || !old.equal(r) {
			replace = append(replace, r)
		}
	}
	for _, r := range live {
		if !want[r.Dst] {
			del = append(del, r)
		}
	}
	return replace, del
}

// syncKernel makes the kernel's learned routes equal to desired and
// reports how many it changed. It goes on after a failed route.
func syncKernel(ctx context.Context, k Kernel, desired []Route) (changed int, err error) {
	live, err := k.Routes(ctx)
	if err != nil {
		return 0, fmt.Errorf("list learned routes (proto %d): %w", Protocol, err)
	}
	replace, del := diffRoutes(live, desired)
	var errs []error
	for _, r := range replace {
		if err := k.Replace(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("install learned route %s: %w", r, err))
			continue
		}
		changed++
	}
	for _, r := range del {
		if err := k.Delete(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("delete learned route %s: %w", r, err))
			continue
		}
		changed++
	}
	return changed, errors.Join(errs...)
}

// Fake is an in-memory Kernel.
type Fake struct {
	mu     sync.Mutex
	routes map[netip.Prefix]Route
}

// NewFake returns an empty fake kernel.
func NewFake() *Fake { return &Fake{routes: map[netip.Prefix]Route{}} }

// Routes implements Kernel.
func (f *Fake) Routes(context.Context) ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Route, 0, len(f.routes))
	for _, r := range f.routes {
		out = append(out, Route{Dst: r.Dst, Via: slices.Clone(r.Via)})
	}
	slices.SortFunc(out, func(a, b Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	return out, nil
}

// Replace implements Kernel.
func (f *Fake) Replace(_ context.Context, r Route) error {
	if len(r.Via) == 0 {
		return fmt.Errorf("route %s has no next hop", r.Dst)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[r.Dst] = Route{Dst: r.Dst, Via: slices.Clone(r.Via)}
	return nil
}

// Delete implements Kernel.
func (f *Fake) Delete(_ context.Context, r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, r.Dst)
	return nil
}
