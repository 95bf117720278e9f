package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/netlinksafe"
)

// Policy keeps the host's service chain policy routing equal to the
// desired one: the ip rules tagged with Protocol (FRA_PROTOCOL, "proto
// 190" in `ip rule`) at priority hoststate.RulePriority whose table is a
// chain table, and the routes tagged with Protocol in chain tables. Other
// rules and routes are never touched, even at our priority and in our
// tables: ours is added beside a foreign rule with the same selector, and
// a desired route whose place (its table's default destination of its
// family) a foreign route holds is left out and reported by every Sync
// until that route is gone.
type Policy struct {
	k   policyKernel
	log *slog.Logger
}

// policyKernel is what Policy needs from the kernel; netlinkKernel is the
// real one and Fake the in-memory one.
type policyKernel interface {
	// listTableRoutes returns the routes of every table but main, of any
	// protocol.
	listTableRoutes() ([]KernelTableRoute, error)
	// replaceTableRoute makes r its table's default route of its family,
	// tagged with Protocol. It wraps ErrLinkNotFound when r.Dev is missing.
	replaceTableRoute(r hoststate.TableRoute) error
	// deleteTableRoute removes a route as last listed; a route already
	// gone is not an error.
	deleteTableRoute(r KernelTableRoute) error
	// listRules returns every ip rule, of both families.
	listRules() ([]KernelRule, error)
	// addRule adds r.
	addRule(r KernelRule) error
	// deleteRule removes a rule as last listed.
	deleteRule(r KernelRule) error
}

// KernelRule is an ip rule as Policy sees it: `ip rule add priority
// Priority fwmark Mark/Mask lookup Table proto Protocol` (`ip -6 rule`
// when V6). Policy neither sets nor looks at any other selector.
type KernelRule struct {
	V6         bool
	Priority   int
	Mark, Mask uint32
	Table      int
	Protocol   int
}

func (r KernelRule) String() string {
	family := ""
	if r.V6 {
		family = "-6 "
	}
	return fmt.Sprintf("%spriority %d fwmark %#x/%#x lookup %d proto %d", family, r.Priority, r.Mark, r.Mask, r.Table, r.Protocol)
}

// KernelTableRoute is a route of a table other than main as Policy sees
// it: its table, destination and protocol, and the TableRoute it would
// be if it is a default route. Dev names what no TableRoute can have for
// a route Policy would never install as it is (a multipath route, a route
// of another type).
type KernelTableRoute struct {
	hoststate.TableRoute
	Dst      netip.Prefix
	Protocol int
}

func (r KernelTableRoute) String() string {
	dst := "default"
	if r.V6 {
		dst = "default6"
	}
	if r.Dst.IsValid() && r.Dst.Bits() != 0 {
		dst = r.Dst.String()
	}
	var s string
	switch {
	case r.Blackhole:
		s = fmt.Sprintf("table %d blackhole %s", r.Table, dst)
	case r.Dev != "" && r.Via.IsValid():
		s = fmt.Sprintf("table %d %s via %s dev %s", r.Table, dst, r.Via, r.Dev)
	case r.Dev != "":
		s = fmt.Sprintf("table %d %s dev %s", r.Table, dst, r.Dev)
	default:
		s = fmt.Sprintf("table %d %s via %s", r.Table, dst, r.Via)
	}
	return fmt.Sprintf("%s proto %d", s, r.Protocol)
}

// NewPolicy returns a Policy acting on the calling process's network namespace.
func NewPolicy(log *slog.Logger) (*Policy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Policy{k: &netlinkKernel{h: h}, log: log}, nil
}

// chainTable reports whether a route table id belongs to chains.
func chainTable(t int) bool {
	return t >= hoststate.TableBase && t < hoststate.RouteTable(api.MaxChainID, 15)+1
}

type ruleKey struct {
	v6    bool
	mark  uint32
	table int
}

// Sync makes the chain rules and routes equal to the desired ones. Routes
// come before rules on the way up (a rule never points to a table being
// filled) and rules go before routes on the way down.
func (p *Policy) Sync(ctx context.Context, rules []hoststate.IPRule, routes []hoststate.TableRoute) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v6 := map[int]bool{} // table -> family of its desired route
	for _, r := range routes {
		v6[r.Table] = r.V6
	}
	want := map[ruleKey]bool{}
	for _, r := range rules {
		want[ruleKey{v6[r.Table], r.Mark, r.Table}] = true
	}
	var errs []error
	// Routes: replace the desired, delete the rest.
	live, err := p.k.listTableRoutes()
	if err != nil {
		return fmt.Errorf("list chain routes: %w", err)
	}
	places := map[KernelTableRoute]bool{} // the places of the desired routes
	for _, r := range routes {
		place := placeOf(r)
		places[place] = true
		if slices.ContainsFunc(live, func(l KernelTableRoute) bool { return l.Protocol == Protocol && installed(r, l) }) {
			continue
		}
		if i := slices.IndexFunc(live, func(l KernelTableRoute) bool {
			return l.Protocol != Protocol && at(l, place)
		}); i >= 0 {
			errs = append(errs, fmt.Errorf("chain route %s: its place is held by foreign route %s; left alone", r, live[i]))
			continue
		}
		if err := p.k.replaceTableRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("replace chain route %s: %w", r, err))
			continue
		}
		p.log.Info("chain route set", "route", r.String())
	}
	// Rules.
	liveRules, err := p.k.listRules()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list ip rules: %w", err))...)
	}
	have := map[ruleKey]bool{}
	for _, r := range liveRules {
		if r.Priority != hoststate.RulePriority || !chainTable(r.Table) {
			continue
		}
		if r.Protocol != Protocol {
			continue // not ours, whoever made it: never deleted
		}
		k := ruleKey{r.V6, r.Mark, r.Table}
		if want[k] && r.Mask == hoststate.MarkMask && !have[k] {
			have[k] = true
			continue
		}
		if err := p.k.deleteRule(r); err != nil {
			errs = append(errs, fmt.Errorf("delete ip rule fwmark %#x lookup %d: %w", r.Mark, r.Table, err))
			continue
		}
		p.log.Info("chain ip rule deleted", "mark", fmt.Sprintf("%#x", r.Mark), "table", r.Table)
	}
	keys := make([]ruleKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b ruleKey) int { return a.table - b.table })
	for _, k := range keys {
		if have[k] {
			continue
		}
		r := KernelRule{V6: k.v6, Priority: hoststate.RulePriority, Mark: k.mark, Mask: hoststate.MarkMask, Table: k.table, Protocol: Protocol}
		if err := p.k.addRule(r); err != nil {
			errs = append(errs, fmt.Errorf("add ip rule fwmark %#x lookup %d: %w", k.mark, k.table, err))
			continue
		}
		p.log.Info("chain ip rule added", "mark", fmt.Sprintf("%#x", k.mark), "table", k.table)
	}
	// Ours in chain tables outside the desired places: stale tables, the
	// other family, other destinations. (In a desired place, ours was
	// either right or replaced above.)
	for _, r := range live {
		if place := placeOf(r.TableRoute); r.Protocol != Protocol || !chainTable(r.Table) || places[place] && at(r, place) {
			continue
		}
		if err := p.k.deleteTableRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("delete chain route %s: %w", r, err))
			continue
		}
		p.log.Info("chain route deleted", "route", r.String())
	}
	return errors.Join(errs...)
}

// placeOf is where r goes: its table's default destination of its family.
func placeOf(r hoststate.TableRoute) KernelTableRoute {
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if r.V6 {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return KernelTableRoute{TableRoute: hoststate.TableRoute{Table: r.Table, V6: r.V6}, Dst: dst}
}

// at reports whether the route l sits in place.
func at(l, place KernelTableRoute) bool {
	return l.Table == place.Table && l.V6 == place.V6 && l.Dst == place.Dst
}

// installed reports whether the live route l does what r asks: a route in
// r's place, a blackhole if r is one, else through r's next hop and, when r
// names one, r's device.
func installed(r hoststate.TableRoute, l KernelTableRoute) bool {
	if !at(l, placeOf(r)) || l.Blackhole != r.Blackhole {
		return false
	}
	return r.Blackhole || l.Via == r.Via && (r.Dev == "" || l.Dev == r.Dev)
}

// Cleanup removes every chain rule and route.
func (p *Policy) Cleanup(ctx context.Context) error {
	return p.Sync(ctx, nil, nil)
}
