package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

// Tiers, pass and address sets through romanad: policies and address
// sets put with the client, three agents (the real binary) enforcing
// them in simulated hosts, real TCP agreeing with romanad's trace for
// every probe (cluster.expect).
//
//   - admin no-9000 denies TCP 9000 to everyone, within a tenant too;
//   - admin acme-8081 passes TCP 8081 from beta to acme on to the default
//     tier, whose beta-to-acme allows it, and denies 8081 to acme from
//     anyone else (acme itself included);
//   - baseline open-floor denies TCP 7777 to open, met only by packets no
//     default policy decided (acme's are allowed by open-from-acme);
//   - default to-web-set allows TCP 7777 from the set "clients" to the
//     set "web" (a set alone as target), admin quarantine denies all to
//     and from the set "bad": members change, connections follow.
func TestTiersAndAddressSetsEndToEnd(t *testing.T) {
	c := newPolicyCluster(t)
	tcp := func(from, to string, port uint16, ok bool) pprobe {
		return pprobe{kind: "tcp", from: from, to: to, port: port, ok: ok}
	}
	set := func(name string, members ...string) {
		t.Helper()
		s := api.AddressSet{Name: name, Addresses: []netip.Addr{}}
		for _, m := range members {
			s.Addresses = append(s.Addresses, c.eps[m].IP)
		}
		if _, err := c.srv.Client.PutAddressSet(c.ctx, s); err != nil {
			t.Fatalf("put address set %s: %v", name, err)
		}
	}
	c.expect("isolation", []pprobe{tcp("a2", "a1", 9000, true), tcp("a2", "a1", 8081, true), tcp("w2", "a1", 8081, false),
		tcp("w1", "o3", echoPort, true), tcp("w2", "a1", echoPort, false)})

	set("web", "a1")
	set("clients", "w2")
	for _, p := range []api.Policy{
		{Name: "no-9000", Tier: api.TierAdmin, Priority: 10, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: "deny", Protocol: "tcp", Ports: []uint16{9000}}}},
		{Name: "acme-8081", Tier: api.TierAdmin, Priority: 20, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: "pass", Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", Ports: []uint16{8081}},
				{Action: "deny", Protocol: "tcp", Ports: []uint16{8081}}}},
		{Name: "quarantine", Tier: api.TierAdmin, Priority: 30, Direction: []string{"ingress", "egress"}, AppliedTo: []api.Selector{{Set: "bad"}},
			Rules: []api.Rule{{Action: "deny"}}},
		{Name: "beta-to-acme", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", Ports: []uint16{8081}}}},
		{Name: "open-from-acme", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "open"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{echoPort}}}},
		{Name: "to-web-set", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Set: "web"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Set: "clients"}}, Protocol: "tcp", Ports: []uint16{echoPort}}}},
		{Name: "open-floor", Tier: api.TierBaseline, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "open"}},
			Rules: []api.Rule{{Action: "deny", Protocol: "tcp", Ports: []uint16{echoPort}}}},
	} {
		c.putPolicy(p)
	}
	steady := []pprobe{
		tcp("a2", "a1", 9000, false), tcp("w1", "o3", 9000, false), // admin deny
		tcp("w2", "a1", 8081, true), tcp("d3", "a3", 8081, true), // admin pass, default allow
		tcp("a2", "a1", 8081, false), tcp("o1", "a1", 8081, false), // admin deny after the pass
		tcp("a1", "o3", echoPort, true), tcp("a3", "o1", echoPort, true), // default allow before the baseline
		tcp("w1", "o3", echoPort, false), tcp("o1", "o3", echoPort, false), // baseline deny
		tcp("w1", "o3", 8081, true), // the baseline is specific: isolation none
	}
	c.expect("tiers", append(steady, tcp("w2", "a1", echoPort, true), tcp("w2", "a1b", echoPort, false), tcp("d2", "a1", echoPort, false)))

	set("web", "a1b")
	set("clients", "w2", "d2")
	c.expect("members changed", []pprobe{tcp("w2", "a1b", echoPort, true), tcp("w2", "a1", echoPort, false), tcp("d2", "a1b", echoPort, true)})
	set("bad", "a1b")
	c.expect("a1b quarantined", []pprobe{tcp("w2", "a1b", echoPort, false), tcp("a1b", "a2", echoPort, false), tcp("a2", "a1b", echoPort, false),
		tcp("a1", "a2", echoPort, true)})
	set("bad")
	c.expect("a1b released", []pprobe{tcp("w2", "a1b", echoPort, true), tcp("a1b", "a2", echoPort, true), tcp("a2", "a1b", echoPort, true)})
	if err := c.srv.Client.RemoveAddressSet(c.ctx, "clients"); err != nil {
		t.Fatal(err)
	}
	c.expect("clients removed", append(steady, tcp("w2", "a1b", echoPort, false), tcp("d2", "a1b", echoPort, false)))

	out, err := c.hosts["h1"].Exec(c.ctx, "nft", "list", "table", "inet", "romana")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"set as-web-4", "chain policy-ingress-admin", "goto policy-ingress comment", "chain policy-ingress-baseline"} {
		if !strings.Contains(out, want) {
			t.Errorf("h1's table lacks %q:\n%s", want, out)
		}
	}
}
