package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/policy"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// Tiers, pass and address sets on the kernel: two hosts, real agents fed
// by a fake romanad, real nft, real TCP connections between endpoints of
// three tenants. Every probe is also traced (policy.Trace on the fake's
// state) and must agree with the connection.
//
//   - admin no-ssh denies TCP 22 to everyone, also within a tenant that
//     isolation opens;
//   - admin web passes TCP 80 from beta to acme on to the default tier,
//     whose web-from-beta allows it (isolation would not), and denies TCP
//     80 to acme from anyone else (acme itself included);
//   - baseline open-443 denies TCP 443 to the open tenant, reached only by
//     packets no default policy matched: acme's, allowed by the default
//     tier's open-from-acme, pass;
//   - admin quarantine denies everything to and from the members of set
//     "bad"; default to-set allows TCP 8080 from the members of set
//     "clients" to the members of set "web" (a set alone as target): the
//     sets' members change and connections start and stop accordingly.
func TestTiersPassAndSetsInNamespaces(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	w, hosts := labWorld(t, lab, 84, 2)
	w.snap.Tenants = append(w.snap.Tenants, api.Tenant{Name: "open", ID: 3, Isolation: api.IsolationNone})
	w.snap.Segments = append(w.snap.Segments, api.Segment{Tenant: "open", Name: "default", ID: 0})
	type ep struct {
		name   string
		host   int
		tenant string
		tid    uint64
		n      uint64
	}
	eps := []ep{{"a1", 1, "acme", 1, 1}, {"a2", 1, "acme", 1, 2}, {"b1", 1, "beta", 2, 1}, {"o1", 1, "open", 3, 1},
		{"a3", 2, "acme", 1, 3}, {"b2", 2, "beta", 2, 2}, {"o2", 2, "open", 3, 2}}
	ip := map[string]netip.Addr{}
	ns := map[string]*sim.Endpoint{}
	ports := []int{22, 80, 443, 8080}
	for _, e := range eps {
		iface := "rv-" + e.name
		a := w.address(e.name, uint64(e.host), e.tenant, e.tid, e.n, iface)
		if e.tenant == "beta" {
			a.Segment = "web"
		}
		w.snap.Addresses = append(w.snap.Addresses, a)
		x, err := lab.AddEndpoint(ctx, hosts[e.host-1], e.name, a.IP, iface)
		if err != nil {
			t.Fatal(err)
		}
		ip[e.name], ns[e.name] = a.IP, x
		for _, port := range ports {
			var ln net.Listener
			if err := x.Do(func() (err error) {
				ln, err = net.Listen("tcp", netip.AddrPortFrom(a.IP, uint16(port)).String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	}
	src := newFakeSource(w.snap)
	runIn(t, hosts[0], "h1", src, NewMetrics(prometheus.NewRegistry()))
	runIn(t, hosts[1], "h2", src, NewMetrics(prometheus.NewRegistry()))

	type probe struct {
		from, to string
		port     int
		ok       bool
	}
	connects := func(p probe) bool {
		return ns[p.from].Do(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(ip[p.to], uint16(p.port)).String(), 700*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	}
	// check waits until every probe connects as it should, and checks
	// that trace agrees with each.
	check := func(what string, probes ...probe) {
		t.Helper()
		expect.Eventually(t, what, 3*within, func() error {
			var bad []string
			for _, p := range probes {
				if got := connects(p); got != p.ok {
					bad = append(bad, fmt.Sprintf("%s -> %s:%d connects=%v", p.from, p.to, p.port, got))
				}
			}
			if len(bad) > 0 {
				return fmt.Errorf("%s", strings.Join(bad, "; "))
			}
			return nil
		})
		snap, _ := src.Snapshot(ctx)
		for _, p := range probes {
			tr, err := policy.Trace(snap, policy.Packet{Src: ip[p.from], Dst: ip[p.to], Proto: "tcp", Port: uint16(p.port)})
			if err != nil {
				t.Fatal(err)
			}
			if (tr.Verdict == api.ActionAllow) != p.ok {
				t.Errorf("%s: %s -> %s:%d connects=%v, trace %s: %s", what, p.from, p.to, p.port, p.ok, tr.Verdict, tr.Decision.Reason)
			}
		}
	}

	// Isolation only: the baseline of what the policies change.
	check("isolation only",
		probe{"a3", "a1", 22, true}, probe{"a3", "a1", 80, true}, probe{"b2", "a1", 80, false},
		probe{"b2", "o1", 443, true}, probe{"a3", "o1", 443, true}, probe{"b2", "a2", 8080, false})

	set := func(name string, members ...string) {
		s := api.AddressSet{Name: name}
		for _, m := range members {
			s.Addresses = append(s.Addresses, ip[m])
		}
		src.put(api.KindAddressSet, name, s)
	}
	set("web", "a1")
	set("clients", "b2")
	for _, p := range []api.Policy{
		{Name: "no-ssh", Tier: api.TierAdmin, Priority: 10, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: "deny", Protocol: "tcp", Ports: []uint16{22}}}},
		{Name: "web", Tier: api.TierAdmin, Priority: 20, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: "pass", Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", Ports: []uint16{80}},
				{Action: "deny", Protocol: "tcp", Ports: []uint16{80}}}},
		{Name: "quarantine", Tier: api.TierAdmin, Priority: 30, Direction: []string{"ingress", "egress"}, AppliedTo: []api.Selector{{Set: "bad"}},
			Rules: []api.Rule{{Action: "deny"}}},
		{Name: "web-from-beta", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", Ports: []uint16{80}}}},
		{Name: "open-from-acme", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "open"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{443}}}},
		{Name: "to-set", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Set: "web"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Set: "clients"}}, Protocol: "tcp", Ports: []uint16{8080}}}},
		{Name: "open-443", Tier: api.TierBaseline, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "open"}},
			Rules: []api.Rule{{Action: "deny", Protocol: "tcp", Ports: []uint16{443}}}},
	} {
		src.put(api.KindPolicy, p.Name, p)
	}
	steady := []probe{
		{"a3", "a1", 22, false}, {"a2", "a1", 22, false}, // admin deny, within a tenant, across hosts and on one
		{"b2", "a1", 80, true}, {"b1", "a3", 80, true}, // admin pass, default allow
		{"a3", "a1", 80, false}, {"o2", "a1", 80, false}, // admin deny after the pass
		{"a3", "o1", 443, true}, {"a1", "o2", 443, true}, // default allow before baseline
		{"b2", "o1", 443, false}, {"o1", "o2", 443, false}, // baseline deny
		{"b2", "o1", 80, true}, // baseline is specific: isolation none
	}
	check("tiers", append(steady,
		probe{"b2", "a1", 8080, true}, probe{"b2", "a2", 8080, false}, probe{"b1", "a1", 8080, false},
		probe{"a3", "a2", 443, true}, probe{"a2", "a3", 443, true})...)

	// Members change: the set target moves from a1 to a2, b1 joins the
	// clients, a2 is quarantined (both ways), then released.
	set("web", "a2")
	set("clients", "b2", "b1")
	check("web moved, clients grew", probe{"b2", "a1", 8080, false}, probe{"b2", "a2", 8080, true}, probe{"b1", "a2", 8080, true})
	set("bad", "a2")
	check("a2 quarantined", probe{"a3", "a2", 443, false}, probe{"a2", "a3", 443, false}, probe{"b2", "a2", 8080, false},
		probe{"a3", "a1", 443, true})
	set("bad")
	check("a2 released", probe{"a3", "a2", 443, true}, probe{"a2", "a3", 443, true}, probe{"b2", "a2", 8080, true})
	src.del(api.KindAddressSet, "clients")
	check("clients gone: empty", append(steady, probe{"b2", "a2", 8080, false}, probe{"b1", "a2", 8080, false})...)

	// The rules did not change with the members: h1's policy chains
	// name the sets, whose elements are the members.
	out, err := hosts[0].Exec(ctx, "nft", "list", "table", "inet", "romana")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"set as-web-4", "ip daddr @as-web-4 ip saddr @as-clients-4 tcp dport 8080", "goto policy-ingress", "chain policy-ingress-baseline"} {
		if !strings.Contains(out, want) {
			t.Errorf("h1's table lacks %q:\n%s", want, out)
		}
	}
}
