package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/hoststate"
)

// netlinkKernel's side of Policy: ip rules and the routes of tables other
// than main. It deletes the rules and routes exactly as it last listed
// them (with whatever other attributes they carry).

// linkNames maps link indexes to names.
func (k *netlinkKernel) linkNames() (map[int]string, error) {
	links, err := k.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return names, nil
}

func (k *netlinkKernel) listTableRoutes() ([]KernelTableRoute, error) {
	raw, err := k.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	names, err := k.linkNames()
	if err != nil {
		return nil, err
	}
	k.lastTable = map[KernelTableRoute][]netlink.Route{}
	var out []KernelTableRoute
	for _, r := range raw {
		if r.Table == unix.RT_TABLE_MAIN {
			continue
		}
		v6 := r.Family == unix.AF_INET6
		lr := KernelTableRoute{TableRoute: hoststate.TableRoute{Table: r.Table, V6: v6}, Protocol: int(r.Protocol)}
		if r.Dst == nil {
			lr.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if v6 {
				lr.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
		} else if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			ones, _ := r.Dst.Mask.Size()
			lr.Dst = netip.PrefixFrom(a.Unmap(), ones)
		}
		switch {
		case r.Type == unix.RTN_BLACKHOLE:
			lr.Blackhole = true
		case r.Type != unix.RTN_UNICAST:
			lr.Dev = fmt.Sprintf("(type %d)", r.Type) // never desired
		case len(r.MultiPath) > 0:
			lr.Dev = "(multipath)" // never desired
		default:
			if gw, ok := netip.AddrFromSlice(r.Gw); ok {
				lr.Via = gw.Unmap()
			}
			lr.Dev = names[r.LinkIndex]
		}
		k.lastTable[lr] = append(k.lastTable[lr], r)
		out = append(out, lr)
	}
	return out, nil
}

func (k *netlinkKernel) replaceTableRoute(r hoststate.TableRoute) error {
	nr := netlink.Route{Table: r.Table, Protocol: Protocol, Family: unix.AF_INET}
	zero := netip.IPv4Unspecified()
	if r.V6 {
		nr.Family, zero = unix.AF_INET6, netip.IPv6Unspecified()
	}
	nr.Dst = &net.IPNet{IP: zero.AsSlice(), Mask: net.CIDRMask(0, zero.BitLen())}
	switch {
	case r.Blackhole:
		nr.Type = unix.RTN_BLACKHOLE
	default:
		nr.Type = unix.RTN_UNICAST
		nr.Gw = net.IP(r.Via.AsSlice())
		if r.Dev != "" {
			l, err := k.h.LinkByName(r.Dev)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrLinkNotFound, r.Dev, err)
			}
			nr.LinkIndex = l.Attrs().Index
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
	}
	return k.h.RouteReplace(&nr)
}

func (k *netlinkKernel) deleteTableRoute(r KernelTableRoute) error {
	nr := netlink.Route{Table: r.Table, Protocol: netlink.RouteProtocol(r.Protocol), Family: unix.AF_INET, Dst: ipNet(r.Dst)}
	if r.V6 {
		nr.Family = unix.AF_INET6
	}
	if listed := k.lastTable[r]; len(listed) > 0 {
		nr, k.lastTable[r] = listed[0], listed[1:]
	}
	if err := k.h.RouteDel(&nr); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

func (k *netlinkKernel) listRules() ([]KernelRule, error) {
	raw, err := k.h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	k.lastRules = map[KernelRule][]netlink.Rule{}
	out := make([]KernelRule, 0, len(raw))
	for _, r := range raw {
		lr := KernelRule{V6: r.Family == unix.AF_INET6, Priority: r.Priority, Mark: r.Mark, Table: r.Table, Protocol: int(r.Protocol)}
		if r.Mask != nil {
			lr.Mask = *r.Mask
		}
		k.lastRules[lr] = append(k.lastRules[lr], r)
		out = append(out, lr)
	}
	return out, nil
}

// rule returns r as a netlink rule.
func rule(r KernelRule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family, nr.Priority, nr.Mark, nr.Table, nr.Protocol = unix.AF_INET, r.Priority, r.Mark, r.Table, uint8(r.Protocol)
	if r.V6 {
		nr.Family = unix.AF_INET6
	}
	if r.Mask != 0 {
		nr.Mask = new(uint32)
		*nr.Mask = r.Mask
	}
	return nr
}

func (k *netlinkKernel) addRule(r KernelRule) error {
	return k.h.RuleAdd(rule(r))
}

func (k *netlinkKernel) deleteRule(r KernelRule) error {
	nr := rule(r)
	if listed := k.lastRules[r]; len(listed) > 0 {
		nr, k.lastRules[r] = &listed[0], listed[1:]
	}
	return k.h.RuleDel(nr)
}
