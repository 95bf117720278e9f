package hoststate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/model"
	"github.com/romana/romana/policy"
)

// What the input chain does with packets to the host itself, by the
// evaluator: only packets from endpoint interfaces are looked at; among
// them neighbour discovery passes, forged sources are dropped, replies
// pass, IPv6 link-local sources are dropped but for pings, and the rest
// meets the egress stage of the policies (never the ingress stage).
func TestInputChainSemantics(t *testing.T) {
	l := demoLab(t)
	acme := l.address(1, 1, 0, 1).IP // on h1
	beta := l.address(1, 2, 0, 1).IP
	host := netip.MustParseAddr("192.168.0.1") // h1's own address
	other := netip.MustParseAddr("192.168.0.2")
	ep, uplink := "romana001010001", "eth0"
	tcp := func(iif string, src, dst netip.Addr) packet {
		return packet{iif: iif, saddr: src, daddr: dst, proto: "tcp", port: 22}
	}
	type tc struct {
		name string
		p    packet
		want string
	}
	check := func(rs Ruleset, cases []tc) {
		t.Helper()
		for _, c := range cases {
			if got := evaluateHook(t, rs, ChainInput, c.p); got != c.want {
				t.Errorf("%s: %s, want %s\n%s", c.name, got, c.want, rs)
			}
		}
	}
	fail := func(p packet) packet { p.rpfFails = true; return p }
	est := func(p packet) packet { p.established = true; return p }
	icmp6 := func(iif, src, dst string, typ uint8) packet {
		return packet{iif: iif, saddr: netip.MustParseAddr(src), daddr: netip.MustParseAddr(dst), proto: "icmp", icmpType: typ}
	}

	open := l.compute("h1", ModeFlat).Firewall
	check(open, []tc{
		{"endpoint to its host, no policy", tcp(ep, acme, host), "accept"},
		{"endpoint to the gateway, no policy", tcp(ep, acme, GatewayAddr), "accept"},
		{"endpoint from a forged source", fail(tcp(ep, beta, host)), "drop"},
		{"endpoint from a forged source outside every pool", fail(tcp(ep, other, host)), "drop"},
		{"uplink, forged: not ours", fail(tcp(uplink, acme, host)), "accept"},
		{"uplink from another host", tcp(uplink, other, host), "accept"},
		{"loopback", tcp("lo", host, host), "accept"},
		{"neighbour solicitation from ::", fail(icmp6(ep, "::", "ff02::1:ff00:1", 135)), "accept"},
		{"router solicitation", icmp6(ep, "fe80::2", "ff02::2", 133), "accept"},
		{"an IPv4 packet posing as neighbour discovery", fail(packet{iif: ep, saddr: other, daddr: host, proto: "icmp", icmpType: 135}), "drop"},
		{"link-local ping of the gateway", icmp6(ep, "fe80::2", "fe80::1", 128), "accept"},
		{"link-local connection", tcp(ep, netip.MustParseAddr("fe80::2"), netip.MustParseAddr("fe80::1")), "drop"},
		{"link-local reply", est(tcp(ep, netip.MustParseAddr("fe80::2"), netip.MustParseAddr("fe80::1"))), "accept"},
	})

	// An egress deny of the hosts' subnet for acme.
	l.snap.Policies = []api.Policy{{Name: "acme-no-hosts", Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{CIDR: "192.168.0.0/24"}}, Protocol: "tcp"}}}}
	deny := l.compute("h1", ModeFlat).Firewall
	check(deny, []tc{
		{"acme to its host", tcp(ep, acme, host), "drop"},
		{"acme to its host, a reply", est(tcp(ep, acme, host)), "accept"},
		{"acme to its host, a ping", packet{iif: ep, saddr: acme, daddr: host, proto: "icmp", icmpType: 8}, "accept"},
		{"beta to its host", tcp(ep, beta, host), "accept"},
		{"uplink, acme's source", tcp(uplink, acme, host), "accept"},
	})
	if got := evaluatePacket(t, deny, tcp("", acme, other)); got != "drop" {
		t.Errorf("acme to another host's address (forward): %s, want drop", got)
	}

	// An allow of h1's address ahead of the deny.
	l.snap.Policies = append(l.snap.Policies, api.Policy{Name: "acme-to-h1", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Peers: []api.Peer{{Host: "h1"}}, Protocol: "tcp", Ports: []uint16{22}}}})
	allow := l.compute("h1", ModeFlat).Firewall
	check(allow, []tc{
		{"acme to its host, allowed", tcp(ep, acme, host), "accept"},
		{"acme to its host, another port", packet{iif: ep, saddr: acme, daddr: host, proto: "tcp", port: 80}, "drop"},
	})

	// Ingress policies do not apply: the host is no endpoint.
	l.snap.Policies = []api.Policy{{Name: "deny-all-in", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{All: true}},
		Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{Any: true}}}}}}
	check(l.compute("h1", ModeFlat).Firewall, []tc{{"acme to its host under an ingress deny of all", tcp(ep, acme, host), "accept"}})
}

// The input chain is the same for every host and family: its rules name
// no address but the link-local prefix.
func TestInputChainSameEverywhere(t *testing.T) {
	l, _ := dispatchLab(t)
	var first *Chain
	for _, h := range []string{"h1", "h2", "h3"} {
		for _, mode := range []Mode{ModeFlat, ModeFabric} {
			rs := l.compute(h, mode).Firewall
			c := rs.Chain(ChainInput)
			if c == nil || c.Hook != "input" {
				t.Fatalf("%s %s: no input base chain:\n%s", h, mode, rs)
			}
			if first == nil {
				first = c
			} else if fmt.Sprint(*c) != fmt.Sprint(*first) {
				t.Errorf("%s %s: input chain differs:\n%+v\n%+v", h, mode, *c, *first)
			}
		}
	}
}

// Packets from endpoints to hosts' addresses (their own host's, another
// host's, the gateway) and random policies (the dispatch lab's): the
// rulesets decide as policy.Trace does, the source's host's input chain
// for its own addresses and its forward chain (then the destination's
// input chain, from the uplink) for another host's; and such a packet
// meets only egress rules.
func TestInputAgreesWithTrace(t *testing.T) {
	l, eps := dispatchLab(t)
	for i := range l.snap.Hosts {
		l.snap.Hosts[i].IP6 = netip.MustParseAddr(fmt.Sprintf("fd77::%d", i+1))
	}
	hostOf := func(a netip.Addr) string {
		for _, h := range l.snap.Hosts {
			for _, s := range h.Slots {
				if s.CIDR.Contains(a) {
					return h.Name
				}
			}
		}
		return ""
	}
	var srcs []netip.Addr
	for _, a := range eps {
		if hostOf(a) != "" {
			srcs = append(srcs, a)
		}
	}
	r := rand.New(rand.NewPCG(13, 31))
	seen := map[string]int{}
	for round := range 40 {
		l.snap.Policies = randomPolicies(r, 2+r.IntN(8))
		l.snap.AddressSets = randomSets(r, eps)
		rulesets := map[string]Ruleset{}
		for _, h := range l.snap.Hosts {
			rulesets[h.Name] = l.compute(h.Name, ModeFlat).Firewall
		}
		for range 200 {
			src := srcs[r.IntN(len(srcs))]
			hs := hostOf(src)
			h := l.snap.Hosts[r.IntN(len(l.snap.Hosts))]
			dst := h.UnderlayIP(src.Is4())
			if r.IntN(5) == 0 {
				dst = model.Gateway
				if !src.Is4() {
					dst = model.Gateway6
				}
				h.Name = hs
			}
			pk := packet{iif: "romana1", saddr: src, daddr: dst, proto: []string{"tcp", "udp", "icmp"}[r.IntN(3)]}
			if pk.proto == "icmp" {
				pk.icmpType = uint8(8 * r.IntN(2))
				if !src.Is4() && pk.icmpType == 8 {
					pk.icmpType = 128
				}
			} else {
				pk.port = []uint16{22, 80, 81, 443}[r.IntN(4)]
			}
			pk.met = func(chain string, ru Rule) {
				if PolicyChainStage(chain) != policy.StageEgress {
					t.Fatalf("round %d: %s -> %s meets rule %q of chain %s, not an egress rule", round, src, dst, ru.Expr, chain)
				}
			}
			var got string
			if h.Name == hs {
				got = evaluateHook(t, rulesets[hs], ChainInput, pk)
				seen["own host "+got]++
			} else {
				got = evaluatePacket(t, rulesets[hs], pk)
				if got == "accept" {
					up := pk
					up.iif = "eth0"
					got = evaluateHook(t, rulesets[h.Name], ChainInput, up)
				}
				seen["other host "+got]++
			}
			icmpType := pk.icmpType
			tr, err := policy.Trace(l.snap, policy.Packet{Src: src, Dst: dst, Proto: pk.proto, Port: pk.port, ICMPType: icmpType})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{api.ActionAllow: "accept", api.ActionDeny: "drop"}[tr.Verdict]
			if got != want {
				var b strings.Builder
				for _, p := range l.snap.Policies {
					fmt.Fprintf(&b, "%+v\n", p)
				}
				t.Fatalf("round %d: %s (%s) -> %s (%s) %s port %d icmp %d: rulesets %s, trace %s (%s)\npolicies:\n%s\nsource host:\n%s",
					round, src, hs, dst, h.Name, pk.proto, pk.port, pk.icmpType, got, want, tr.Decision.Reason, b.String(), rulesets[hs])
			}
			if tr.Verdict == api.ActionAllow && tr.Decision.Host != h.Name {
				t.Fatalf("round %d: %s -> %s: trace's last step names host %q, want %q (%s)", round, src, dst, tr.Decision.Host, h.Name, tr.Decision.Reason)
			}
		}
	}
	for _, k := range []string{"own host accept", "own host drop", "other host accept", "other host drop"} {
		if seen[k] == 0 {
			t.Errorf("no case of %q: the test does not cover it (%v)", k, seen)
		}
	}
	t.Logf("%v", seen)
}
