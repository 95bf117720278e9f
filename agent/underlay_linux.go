package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/netlinksafe"
)

// NetlinkUnderlay reads links, addresses and neighbours through netlink in
// the network namespace it was created in.
type NetlinkUnderlay struct {
	h  netlinksafe.Handle
	ns netns.NsHandle // for the neighbour subscription, opened from any thread
}

// NewNetlinkUnderlay opens a netlink handle in the calling thread's network
// namespace.
func NewNetlinkUnderlay() (*NetlinkUnderlay, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open this network namespace: %w", err)
	}
	h, err := netlinksafe.NewHandle()
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink handle for the underlay: %w", err)
	}
	return &NetlinkUnderlay{h: h, ns: ns}, nil
}

// Close releases the netlink handle and the namespace.
func (u *NetlinkUnderlay) Close() {
	u.h.Close()
	u.ns.Close()
}

func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// Read lists every link with its kind, master and addresses, and the
// neighbours that hold a link-layer address (any state but FAILED and
// INCOMPLETE; a STALE entry still names the host that answered).
func (u *NetlinkUnderlay) Read(ctx context.Context) (hoststate.Underlay, error) {
	var out hoststate.Underlay
	if err := ctx.Err(); err != nil {
		return out, err
	}
	links, err := u.h.LinkList()
	if err != nil {
		return out, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs, err := u.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return out, fmt.Errorf("list addresses: %w", err)
	}
	byLink := map[int][]netip.Prefix{}
	for _, a := range addrs {
		ip, ok := addrOf(a.IP)
		if !ok || a.IPNet == nil {
			continue
		}
		ones, _ := a.IPNet.Mask.Size()
		byLink[a.LinkIndex] = append(byLink[a.LinkIndex], netip.PrefixFrom(ip, ones))
	}
	for _, l := range links {
		at := l.Attrs()
		hl := hoststate.Link{Name: at.Name, Kind: l.Type(), Addrs: byLink[at.Index]}
		if at.MasterIndex != 0 {
			hl.Master = names[at.MasterIndex]
			if hl.Master == "" {
				hl.Master = fmt.Sprintf("link %d", at.MasterIndex)
			}
		}
		out.Links = append(out.Links, hl)
	}
	neighs, err := u.h.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		return out, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range neighs {
		ip, ok := addrOf(n.IP)
		if !ok || len(n.HardwareAddr) == 0 || n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 {
			continue
		}
		out.Neighbors = append(out.Neighbors, hoststate.Neighbor{IP: ip, Link: names[n.LinkIndex], MAC: n.HardwareAddr.String()})
	}
	return out, nil
}

// Resolve asks the kernel to resolve each address on the link its route
// leaves through: a neighbour update with NTF_USE makes the kernel send
// the ARP or NDP request as if a packet were waiting (and creates the
// entry if there is none), without any packet from us.
func (u *NetlinkUnderlay) Resolve(ctx context.Context, ips []netip.Addr) error {
	var errs []error
	for _, ip := range ips {
		if err := ctx.Err(); err != nil {
			return err
		}
		rs, err := u.h.RouteGet(net.IP(ip.AsSlice()))
		if err != nil || len(rs) == 0 {
			errs = append(errs, fmt.Errorf("resolve %s: find its route: %v", ip, err))
			continue
		}
		n := &netlink.Neigh{LinkIndex: rs[0].LinkIndex, IP: net.IP(ip.AsSlice()), Flags: netlink.NTF_USE, State: netlink.NUD_NONE}
		if err := u.h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("resolve %s on link %d: %w", ip, rs[0].LinkIndex, err))
		}
	}
	return errors.Join(errs...)
}

// Watch follows the neighbour table and calls changed when an entry gets
// a link-layer address it did not have (a new host answered, a host's MAC
// changed); state changes of known entries (REACHABLE, STALE, ...) are
// ignored.
func (u *NetlinkUnderlay) Watch(ctx context.Context, changed func(netip.Addr)) error {
	ch := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 1)
	err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{Namespace: &u.ns, ErrorCallback: func(err error) {
		select {
		case errc <- err:
		default:
		}
	}})
	if err != nil {
		return fmt.Errorf("subscribe to neighbour updates: %w", err)
	}
	known := map[netip.Addr]string{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("neighbour updates: %w", err)
		case up, ok := <-ch:
			if !ok {
				return errors.New("neighbour updates: subscription closed")
			}
			ip, ok := addrOf(up.IP)
			if !ok {
				continue
			}
			if up.Type == unix.RTM_DELNEIGH {
				delete(known, ip)
				continue
			}
			mac := up.HardwareAddr.String()
			if mac == "" || known[ip] == mac {
				continue
			}
			known[ip] = mac
			changed(ip)
		}
	}
}
