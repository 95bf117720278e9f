package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/netlinksafe"
)

// Policy keeps the host's service chain policy routing equal to the
// desired one: the ip rules tagged with Protocol (FRA_PROTOCOL, "proto
// 190" in `ip rule`) at priority hoststate.RulePriority whose table is a
// chain table, and the routes tagged with Protocol in chain tables. Other
// rules and routes are never touched, even at our priority and in our
// tables (ours is added beside a foreign rule with the same selector).
type Policy struct {
	h   netlinksafe.Handle
	log *slog.Logger
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
	return &Policy{h: h, log: log}, nil
}

// chainTable reports whether a route table id belongs to chains.
func chainTable(t int) bool {
	return t >= hoststate.TableBase && t < hoststate.RouteTable(api.MaxChainID, 15)+1
}

type ruleKey struct {
	family int
	mark   uint32
	table  int
}

// Sync makes the chain rules and routes equal to the desired ones. Routes
// come before rules on the way up (a rule never points to a table being
// filled) and rules go before routes on the way down.
func (p *Policy) Sync(ctx context.Context, rules []hoststate.IPRule, routes []hoststate.TableRoute) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	family := map[int]int{} // table -> family
	for _, r := range routes {
		family[r.Table] = unix.AF_INET
		if r.V6 {
			family[r.Table] = unix.AF_INET6
		}
	}
	want := map[ruleKey]bool{}
	for _, r := range rules {
		f, ok := family[r.Table]
		if !ok {
			f = unix.AF_INET
		}
		want[ruleKey{f, r.Mark, r.Table}] = true
	}
	var errs []error
	// Routes: replace the desired, delete the rest.
	live, err := p.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: Protocol, Table: unix.RT_TABLE_UNSPEC},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list chain routes: %w", err)
	}
	wantTable := map[int]bool{}
	for _, r := range routes {
		wantTable[r.Table] = true
		if err := p.replace(r, live); err != nil {
			errs = append(errs, fmt.Errorf("replace chain route %s: %w", r, err))
		}
	}
	// Rules.
	liveRules, err := p.h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list ip rules: %w", err))...)
	}
	have := map[ruleKey]bool{}
	for _, r := range liveRules {
		if r.Priority != hoststate.RulePriority || !chainTable(r.Table) {
			continue
		}
		k := ruleKey{r.Family, r.Mark, r.Table}
		if r.Protocol != Protocol {
			continue // not ours, whoever made it: never deleted
		}
		if want[k] && r.Mask != nil && *r.Mask == hoststate.MarkMask && !have[k] {
			have[k] = true
			continue
		}
		r := r
		if err := p.h.RuleDel(&r); err != nil {
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
		r := netlink.NewRule()
		r.Family, r.Priority, r.Mark, r.Table = k.family, hoststate.RulePriority, k.mark, k.table
		r.Protocol = Protocol
		r.Mask = new(uint32)
		*r.Mask = hoststate.MarkMask
		if err := p.h.RuleAdd(r); err != nil {
			errs = append(errs, fmt.Errorf("add ip rule fwmark %#x lookup %d: %w", k.mark, k.table, err))
			continue
		}
		p.log.Info("chain ip rule added", "mark", fmt.Sprintf("%#x", k.mark), "table", k.table)
	}
	for _, r := range live {
		if !chainTable(r.Table) || wantTable[r.Table] {
			continue
		}
		r := r
		if err := p.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete chain route in table %d: %w", r.Table, err))
			continue
		}
		p.log.Info("chain route deleted", "table", r.Table)
	}
	return errors.Join(errs...)
}

// replace installs r unless an equal route is live.
func (p *Policy) replace(r hoststate.TableRoute, live []netlink.Route) error {
	nr := netlink.Route{Table: r.Table, Protocol: Protocol, Family: unix.AF_INET}
	bits := 32
	if r.V6 {
		nr.Family, bits = unix.AF_INET6, 128
	}
	zero := netip.IPv4Unspecified()
	if r.V6 {
		zero = netip.IPv6Unspecified()
	}
	nr.Dst = &net.IPNet{IP: zero.AsSlice(), Mask: net.CIDRMask(0, bits)}
	switch {
	case r.Blackhole:
		nr.Type = unix.RTN_BLACKHOLE
	default:
		nr.Type = unix.RTN_UNICAST
		nr.Gw = net.IP(r.Via.AsSlice())
		if r.Dev != "" {
			l, err := p.h.LinkByName(r.Dev)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrLinkNotFound, r.Dev, err)
			}
			nr.LinkIndex = l.Attrs().Index
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
	}
	for _, l := range live {
		if l.Table != r.Table || l.Family != nr.Family {
			continue
		}
		if l.Type == nr.Type && l.Gw.Equal(nr.Gw) && (nr.LinkIndex == 0 || l.LinkIndex == nr.LinkIndex) {
			return nil
		}
	}
	if err := p.h.RouteReplace(&nr); err != nil {
		return err
	}
	p.log.Info("chain route set", "route", r.String())
	return nil
}

// Cleanup removes every chain rule and route.
func (p *Policy) Cleanup(ctx context.Context) error {
	return p.Sync(ctx, nil, nil)
}
