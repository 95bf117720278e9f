package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/netlinksafe"
)

// netlinkKernel installs learned routes in the main table of the namespace
// its netlink socket was opened in.
type netlinkKernel struct{ h netlinksafe.Handle }

// NewKernel returns the Kernel of the calling process's network namespace.
func NewKernel() (Kernel, error) {
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &netlinkKernel{h: h}, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (k *netlinkKernel) Routes(ctx context.Context) ([]Route, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	filter := &netlink.Route{Protocol: Protocol, Table: unix.RT_TABLE_MAIN}
	raw, err := k.h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	by := map[netip.Prefix]*Route{}
	for _, r := range raw {
		if r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		dst := netip.PrefixFrom(a.Unmap(), ones)
		lr := by[dst]
		if lr == nil {
			lr = &Route{Dst: dst}
			by[dst] = lr
		}
		if r.Gw != nil {
			gw, _ := netip.AddrFromSlice(r.Gw)
			lr.Via = append(lr.Via, gw.Unmap())
		}
		for _, nh := range r.MultiPath {
			gw, _ := netip.AddrFromSlice(nh.Gw)
			lr.Via = append(lr.Via, gw.Unmap())
		}
	}
	out := make([]Route, 0, len(by))
	for _, r := range by {
		slices.SortFunc(r.Via, netip.Addr.Compare)
		out = append(out, *r)
	}
	return out, nil
}

func (k *netlinkKernel) Replace(ctx context.Context, r Route) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(r.Via) == 0 {
		return fmt.Errorf("route %s has no next hop", r.Dst)
	}
	nr := &netlink.Route{Dst: ipNet(r.Dst), Protocol: Protocol, Table: unix.RT_TABLE_MAIN, Priority: Metric}
	if len(r.Via) == 1 {
		nr.Gw = net.IP(r.Via[0].AsSlice())
	} else {
		for _, v := range r.Via {
			nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{Gw: net.IP(v.AsSlice())})
		}
	}
	if r.Dst.Addr().Is6() {
		// An IPv6 replace only swaps one next hop of a multipath route:
		// delete ours first so that the new set replaces the old.
		_ = k.Delete(ctx, r)
	}
	return k.h.RouteReplace(nr)
}

func (k *netlinkKernel) Delete(ctx context.Context, r Route) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	nr := &netlink.Route{Dst: ipNet(r.Dst), Protocol: Protocol, Table: unix.RT_TABLE_MAIN, Priority: Metric}
	for {
		err := k.h.RouteDel(nr)
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		if err != nil {
			return err
		}
		if r.Dst.Addr().Is4() {
			return nil
		}
		// IPv6 multipath routes may be stored as siblings: delete them all.
	}
}
