// Package netlinksafe is how Romana dumps kernel state over netlink: each
// dump that the kernel marks as interrupted by a concurrent change
// (NLM_F_DUMP_INTR, netlink.ErrDumpInterrupted) is repeated, and one that
// is still interrupted after Attempts tries is an error, never a result.
//
// It follows containernetworking/plugins' pkg/netlinksafe (vishvananda/netlink
// v1.3.1 has no such package), with one policy where that one has two: its
// package-level functions return the possibly inconsistent result of the last
// attempt as a success, while Romana reconciles against what a dump shows and
// would delete or re-add what an incomplete dump left out.
//
// Handle embeds *netlink.Handle for everything else. A dump method that is
// not wrapped here is the embedded one and is not retried: wrap it here
// before using it.
package netlinksafe

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// Attempts is how many times a dump is tried before its interruption is
// returned as an error.
const Attempts = 5

// Handle is a netlink.Handle whose dump methods retry interrupted dumps.
type Handle struct {
	*netlink.Handle
}

// NewHandle returns a Handle on the calling thread's network namespace.
func NewHandle() (Handle, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return Handle{}, err
	}
	return Handle{h}, nil
}

// Retry calls dump until it returns anything but netlink.ErrDumpInterrupted,
// at most Attempts times. If every attempt was interrupted it returns the
// zero T and an error wrapping netlink.ErrDumpInterrupted.
func Retry[T any](what string, dump func() (T, error)) (T, error) {
	for range Attempts {
		v, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	var zero T
	return zero, fmt.Errorf("%s: interrupted by concurrent changes %d times: %w", what, Attempts, netlink.ErrDumpInterrupted)
}

// LinkList is netlink.Handle.LinkList, retried.
func (h Handle) LinkList() ([]netlink.Link, error) {
	return Retry("list links", h.Handle.LinkList)
}

// LinkByName is netlink.Handle.LinkByName, retried: on kernels without
// IFLA_IFNAME lookups it falls back to a dump of all links.
func (h Handle) LinkByName(name string) (netlink.Link, error) {
	return Retry("find link "+name, func() (netlink.Link, error) { return h.Handle.LinkByName(name) })
}

// AddrList is netlink.Handle.AddrList, retried.
func (h Handle) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return Retry("list addresses", func() ([]netlink.Addr, error) { return h.Handle.AddrList(link, family) })
}

// RouteListFiltered is netlink.Handle.RouteListFiltered, retried.
func (h Handle) RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error) {
	return Retry("list routes", func() ([]netlink.Route, error) { return h.Handle.RouteListFiltered(family, filter, filterMask) })
}

// NeighList is netlink.Handle.NeighList, retried.
func (h Handle) NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	return Retry("list neighbours", func() ([]netlink.Neigh, error) { return h.Handle.NeighList(linkIndex, family) })
}

// RuleList is netlink.Handle.RuleList, retried.
func (h Handle) RuleList(family int) ([]netlink.Rule, error) {
	return Retry("list ip rules", func() ([]netlink.Rule, error) { return h.Handle.RuleList(family) })
}

// The package-level functions act, like netlink's, in the network namespace
// of the calling thread (the CNI plugin switches threads between the host's
// and a container's).

// LinkList is netlink.LinkList, retried.
func LinkList() ([]netlink.Link, error) { return Retry("list links", netlink.LinkList) }

// LinkByName is netlink.LinkByName, retried.
func LinkByName(name string) (netlink.Link, error) {
	return Retry("find link "+name, func() (netlink.Link, error) { return netlink.LinkByName(name) })
}

// AddrList is netlink.AddrList, retried.
func AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return Retry("list addresses", func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
}

// RouteListFiltered is netlink.RouteListFiltered, retried.
func RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error) {
	return Retry("list routes", func() ([]netlink.Route, error) { return netlink.RouteListFiltered(family, filter, filterMask) })
}
