package fabric

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
)

// HostBGP is what one host's BGP speaker should do: announce the host's
// CIDRs to the top-of-rack routers serving it. It is plain sorted data;
// two values computed from equal inputs are equal.
type HostBGP struct {
	Host string
	// RouterID is the host's underlay IP when it is IPv4 (BGP identifiers
	// are IPv4-shaped), else invalid.
	RouterID netip.Addr
	// Announce is the host's block in every network, sorted.
	Announce []netip.Prefix
	// Peers are the top-of-rack routers whose group selects the host and
	// that speak BGP (have an ASN), at their address on the host's subnet:
	// one session per underlay family the host and the router share (a
	// dual-stack host peers twice with a dual-stack top-of-rack, over IPv4
	// for its IPv4 blocks and over IPv6 for its IPv6 blocks). Sorted by
	// address.
	Peers []Peer
	// Accept is where routes learned from peers may point: the networks'
	// pools. Learned routes outside them, or equal to or inside one of
	// Announce, are ignored: a speaker must never take over the host's
	// underlay routes or its own block (see Acceptable).
	Accept []netip.Prefix
	// Problems lists devices or slots that were skipped.
	Problems []string
}

// Peer is one BGP neighbour of a host.
type Peer struct {
	Device string
	Addr   netip.Addr
	ASN    uint32
}

func (p Peer) String() string { return fmt.Sprintf("%s %s as %d", p.Device, p.Addr, p.ASN) }

// String renders the decision, one item per line.
func (h HostBGP) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "host %s\n", h.Host)
	if h.RouterID.IsValid() {
		fmt.Fprintf(&b, "router-id %s\n", h.RouterID)
	}
	for _, p := range h.Announce {
		fmt.Fprintf(&b, "announce %s\n", p)
	}
	for _, p := range h.Peers {
		fmt.Fprintf(&b, "peer %s\n", p)
	}
	for _, p := range h.Accept {
		fmt.Fprintf(&b, "accept %s\n", p)
	}
	for _, p := range h.Problems {
		fmt.Fprintf(&b, "problem %s\n", p)
	}
	return b.String()
}

// ForHost decides what host announces and to whom. It fails only when the
// host is not in the snapshot.
func ForHost(snap api.Snapshot, host string) (HostBGP, error) {
	return ForHostModel(model.New(snap), host)
}

// ForHostModel is ForHost on an indexed model.
func ForHostModel(m *model.Model, host string) (HostBGP, error) {
	w := index(m)
	i := slices.IndexFunc(w.hosts, func(h api.Host) bool { return h.Name == host })
	if i < 0 {
		return HostBGP{}, fmt.Errorf("host %q is not registered with romanad", host)
	}
	h := w.hosts[i]
	out := HostBGP{Host: h.Name}
	for _, n := range w.nets {
		out.Accept = append(out.Accept, n.Plan.Prefix())
		if s, ok := w.slot(h, n); ok {
			out.Announce = append(out.Announce, s.CIDR)
		}
	}
	out.RouterID = h.UnderlayIP(true)
	var ips []netip.Addr // the host's underlay addresses, IPv4 first
	for _, is4 := range []bool{true, false} {
		if ip := h.UnderlayIP(is4); ip.IsValid() {
			ips = append(ips, ip)
		}
	}
	for _, d := range w.tors {
		if !Serves(d, h.Labels) {
			continue
		}
		if d.ASN == 0 {
			w.problem("device %q serves host %q but has no ASN: no BGP session", d.Name, h.Name)
			continue
		}
		for _, ip := range ips {
			found, other := false, false
			for _, l := range d.Links {
				if l.Peer != "" {
					continue
				}
				if l.Local.Contains(ip) {
					out.Peers = append(out.Peers, Peer{Device: d.Name, Addr: l.Local.Addr(), ASN: d.ASN})
					found = true
				} else if l.Local.Addr().Is4() == ip.Is4() {
					other = true
				}
			}
			// A router with no host link of this family simply does not
			// carry it (an IPv4-only top-of-rack beside a dual-stack host);
			// one with a host link elsewhere is a misconfiguration.
			if !found && (other || len(ips) == 1) {
				w.problem("device %q serves host %q but has no host link on the subnet of %s: no BGP session", d.Name, h.Name, ip)
			}
		}
	}
	slices.SortFunc(out.Announce, comparePrefix)
	out.Announce = slices.Compact(out.Announce)
	slices.SortFunc(out.Accept, comparePrefix)
	out.Accept = slices.Compact(out.Accept)
	slices.SortFunc(out.Peers, func(a, b Peer) int { return a.Addr.Compare(b.Addr) })
	out.Problems = w.sortedProblems()
	return out, nil
}

// Acceptable reports whether a learned route to dst may be installed: it
// lies inside one of accept and is not one of own or inside one. An
// aggregate that contains an own block is fine: the host's endpoint routes
// are more specific.
func Acceptable(dst netip.Prefix, accept, own []netip.Prefix) bool {
	in := false
	for _, a := range accept {
		if a.Bits() <= dst.Bits() && a.Contains(dst.Addr()) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, o := range own {
		if o.Bits() <= dst.Bits() && o.Contains(dst.Addr()) {
			return false
		}
	}
	return true
}
