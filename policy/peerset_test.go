package policy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

// A rule's prefix peers folded into a set (more than maxSplitPeers of
// them) match exactly the addresses the peers match (holes carved out),
// as sorted ranges that neither overlap nor touch (nft refuses
// overlapping intervals), named by their content.
func TestPeerSetMatchesItsPeers(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 7))
	addr := func(v uint32) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(v >> 16), byte(v >> 8), byte(v)}) }
	for round := range 300 {
		var ms []AddrMatch
		var probes []netip.Addr
		for range maxSplitPeers + 1 + r.IntN(6) {
			bits := 12 + r.IntN(21)
			p := netip.PrefixFrom(addr(r.Uint32()&0xfffff), bits).Masked()
			m := AddrMatch{Prefix: p}
			for range r.IntN(3) {
				if x := netip.PrefixFrom(addr(r.Uint32()&0xfffff), min(32, bits+1+r.IntN(6))).Masked(); p.Contains(x.Addr()) {
					m.Except = append(m.Except, x)
				}
			}
			m.Except = mergePrefixes(m.Except)
			ms = append(ms, m)
			for _, q := range append([]netip.Prefix{p}, m.Except...) {
				first, last := q.Addr(), lastAddr(q)
				probes = append(probes, first, last, first.Prev(), last.Next())
			}
		}
		for range 200 {
			probes = append(probes, addr(r.Uint32()&0xfffff))
		}
		set := peerSet(ms)
		if !strings.HasPrefix(set.Set, PeerSetPrefix) || set.String() != "@"+set.Set {
			t.Fatalf("set named %q", set.Set)
		}
		for i, x := range set.Ranges {
			if x.Hi.Compare(x.Lo) < 0 || i > 0 && (x.Lo.Compare(set.Ranges[i-1].Hi) <= 0 || x.Lo == set.Ranges[i-1].Hi.Next()) {
				t.Fatalf("round %d: ranges %v: %v not after the previous one, or touching it", round, set.Ranges, x)
			}
		}
		for _, a := range probes {
			if !a.IsValid() {
				continue
			}
			want := slices.ContainsFunc(ms, func(m AddrMatch) bool { return m.Contains(a) })
			if got := set.Contains(a); got != want {
				t.Fatalf("round %d: %s: set %v contains %v, peers %v", round, a, set.SetElements(), got, ms)
			}
		}
		if again := peerSet(slices.Clone(ms)); again.Set != set.Set {
			t.Fatalf("the same peers named %s and %s", set.Set, again.Set)
		}
	}
}

func TestAddrRangeString(t *testing.T) {
	for _, c := range []struct{ lo, hi, want string }{
		{"10.0.0.0", "10.0.0.255", "10.0.0.0/24"},
		{"10.0.0.7", "10.0.0.7", "10.0.0.7"},
		{"10.0.0.0", "10.0.1.254", "10.0.0.0-10.0.1.254"},
		{"10.0.0.1", "10.0.0.2", "10.0.0.1-10.0.0.2"},
		{"0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
		{"fd00::", "fd00::ffff", "fd00::/112"},
	} {
		if got := (AddrRange{netip.MustParseAddr(c.lo), netip.MustParseAddr(c.hi)}).String(); got != c.want {
			t.Errorf("%s-%s: %s, want %s", c.lo, c.hi, got, c.want)
		}
	}
}

// A rule with more prefix peers than maxSplitPeers compiles to one rule
// per target matching a named set; one with fewer, to one rule per prefix.
func TestManyPeersCompileToOneSetRule(t *testing.T) {
	var peers []api.Peer
	for i := range maxSplitPeers {
		peers = append(peers, api.Peer{CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24).String()})
	}
	p := api.Policy{Name: "many", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Peers: peers, Protocol: "tcp", Ports: []uint16{80}}}}
	if c := Compile(traceSnap(t, p), "h1"); len(c.Ingress) != maxSplitPeers {
		t.Fatalf("%d peers: %d rules, want one per peer:\n%s", len(peers), len(c.Ingress), c)
	}
	p.Rules[0].Peers = append(peers, api.Peer{Host: "h2"}, api.Peer{Tenant: "beta"})
	c := Compile(traceSnap(t, p), "h1")
	if len(c.Ingress) != 2 || c.Ingress[1].Peer.Set == "" || !strings.Contains(c.Ingress[1].Expr(), "ip saddr @"+PeerSetPrefix) {
		t.Fatalf("%d prefixes and a tenant: want a tenant rule and a set rule:\n%s", len(p.Rules[0].Peers), c)
	}
	if got := c.Ingress[1].Peer.SetElements(); len(got) != 3 || got[0] != "10.2.0.0/16" || got[1] != "172.16.0.0/21" || got[2] != "192.168.0.2" {
		t.Fatalf("set elements %v", got)
	}
}
