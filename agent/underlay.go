package agent

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/hoststate"
)

// Underlay is the host as the agent screens routes against it: its links,
// their addresses and its neighbour table (hoststate.Underlay). NetlinkUnderlay
// implements it for the agent's own network namespace.
type Underlay interface {
	// Read returns the host's links and the neighbours that hold a
	// link-layer address.
	Read(ctx context.Context) (hoststate.Underlay, error)
	// Resolve asks the kernel to resolve the link-layer addresses of ips
	// (it sends the ARP or NDP requests); the answers appear in the
	// neighbour table.
	Resolve(ctx context.Context, ips []netip.Addr) error
	// Watch calls changed with the address of each neighbour whose
	// link-layer address appears or changes, until ctx ends. It only reads.
	Watch(ctx context.Context, changed func(netip.Addr)) error
}

// neighborMemory keeps the link-layer address last seen for each address,
// so that a neighbour entry the kernel garbage-collects (an idle host, in a
// table past gc_thresh1) does not make that host's blocks drop until it is
// resolved again. A new address for the same IP replaces the old one at
// once. Owned by the reconcile goroutine.
type neighborMemory map[netip.Addr]hoststate.Neighbor

// merge returns u with the remembered neighbours the kernel no longer
// lists, and remembers what it lists. Addresses not in keep are forgotten.
func (m neighborMemory) merge(u hoststate.Underlay, keep map[netip.Addr]bool) hoststate.Underlay {
	listed := map[netip.Addr]bool{}
	for _, n := range u.Neighbors {
		if n.MAC == "" {
			continue
		}
		listed[n.IP] = true
		if keep[n.IP] {
			m[n.IP] = n
		}
	}
	for ip := range m {
		if !keep[ip] {
			delete(m, ip)
		}
	}
	out := u
	out.Neighbors = slices.Clone(u.Neighbors)
	for ip, n := range m {
		if !listed[ip] {
			out.Neighbors = append(out.Neighbors, n)
		}
	}
	slices.SortFunc(out.Neighbors, func(a, b hoststate.Neighbor) int {
		return cmp.Or(a.IP.Compare(b.IP), strings.Compare(a.Link, b.Link), strings.Compare(a.MAC, b.MAC))
	})
	return out
}
