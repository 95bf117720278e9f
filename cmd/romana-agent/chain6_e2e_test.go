package main

// End-to-end test of service chains over IPv6: the dual-stack cluster of
// dualstack_e2e_test.go plus dual-stack service functions (tenant infra,
// isolation none) that forward both families and count forwarded packets.
// A chain through a function's IPv6 address steers IPv6 packets (and only
// them) through it, same host and across hosts; the agents health-check
// the functions with ICMPv6 echoes.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
)

// addServiceFunction6 adds a dual-stack service function: endpoint name of
// infra/fw on host, forwarding IPv4 and IPv6 and counting what it forwards.
func (c *cluster) addServiceFunction6(name, host string) {
	c.t.Helper()
	ep := c.addDualEndpoint(name, host, "infra", "fw", true, true)
	// Namespace sysctls of the function's own namespace.
	c.forwardAndCount(ep, name, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0",
		"net.ipv6.conf.all.forwarding=1")
}

// throughFam asserts that traffic from->to over family f (TCP and ping)
// works and passes through each of sfs (their counters rise) and not
// through others.
func (c *cluster) throughFam(from, to string, f fam, sfs []string, others ...string) {
	c.t.Helper()
	before := map[string]int{}
	for _, s := range append(append([]string{}, sfs...), others...) {
		before[s] = c.forwarded(s)
	}
	if err := c.tcpFam(from, to, f, echoPort); err != nil {
		c.dumpSteering()
		c.t.Fatalf("tcp%s %s -> %s: %v", f, from, to, err)
	}
	if err := c.pingFam(from, to, f); err != nil {
		c.dumpSteering()
		c.t.Fatalf("ping%s %s -> %s: %v", f, from, to, err)
	}
	for _, s := range sfs {
		if got := c.forwarded(s) - before[s]; got < 5 {
			c.t.Errorf("%s %s -> %s: service function %s forwarded %d packets, want >= 5", f, from, to, s, got)
		}
	}
	for _, s := range others {
		if got := c.forwarded(s) - before[s]; got != 0 {
			c.t.Errorf("%s %s -> %s: service function %s forwarded %d packets, want 0", f, from, to, s, got)
		}
	}
	if c.t.Failed() {
		c.dumpSteering()
	}
}

// bypasses reports nil when a TCP exchange from->to over f works and sf
// forwards none of its packets.
func (c *cluster) bypasses(from, to string, f fam, sf string) error {
	before := c.forwarded(sf)
	if err := c.tcpFam(from, to, f, echoPort); err != nil {
		return err
	}
	if got := c.forwarded(sf) - before; got != 0 {
		return fmt.Errorf("%s forwarded %d packets", sf, got)
	}
	return nil
}

// blockProbes makes a function drop (or, with block false, accept again)
// the ICMPv6 echo requests addressed to it: its host's health probes fail
// while it keeps forwarding.
func (c *cluster) blockProbes(sf string, block bool) {
	c.t.Helper()
	ep := c.eps[sf]
	if !block {
		if _, err := ep.Exec(c.ctx, "nft", "delete", "table", "inet", "noprobe"); err != nil {
			c.t.Fatal(err)
		}
		return
	}
	script := filepath.Join(c.t.TempDir(), sf+"-noprobe.nft")
	os.WriteFile(script, []byte("table inet noprobe {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ticmpv6 type echo-request drop\n\t}\n}\n"), 0o644)
	if _, err := ep.Exec(c.ctx, "nft", "-f", script); err != nil {
		c.t.Fatal(err)
	}
}

func TestChainsIPv6EndToEnd(t *testing.T) {
	c := newDualCluster(t)
	cl := c.srv.Client
	if _, err := cl.AddTenant(c.ctx, api.Tenant{Name: "infra", Isolation: api.IsolationNone}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AddSegment(c.ctx, api.Segment{Tenant: "infra", Name: "fw"}); err != nil {
		t.Fatal(err)
	}
	c.addServiceFunction6("f1", "h1")
	c.addServiceFunction6("f3", "h2")
	for _, h := range []string{"h1", "h2", "h3"} {
		c.startAgent(h, "--chain-probe-interval", "200ms")
	}
	c.waitHealthy("h1", "h2", "h3")
	c.checkFam("endpoints and functions routed", []fprobe{{"a1", "f3", v6, 0, true}, {"a3", "f1", v6, 0, true}, {"a1", "o3", v6, echoPort, true}})
	f1, f3 := c.eps["f1"].IPOf(false), c.eps["f3"].IPOf(false)
	all := []string{"f1", "f3"}
	c.throughFam("a1", "o3", v6, nil, all...) // direct path
	step := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) { c.t = t; f(t) })
		c.t = t
		if t.Failed() {
			t.FailNow()
		}
	}

	step("one hop", func(t *testing.T) {
		ch := c.addChain(api.Chain{Name: "inspect6", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f1}})
		c.waitSteering("inspect6", true, "h1", "h2", "h3")
		table := strconv.Itoa(20000 + 16*int(ch.ID) + 1)
		rules, _ := c.hosts["h1"].Exec(c.ctx, "ip", "-6", "rule")
		routes, _ := c.hosts["h1"].Exec(c.ctx, "ip", "-6", "route", "show", "table", table)
		if !strings.Contains(rules, "lookup "+table) || !strings.Contains(routes, "default via "+f1.String()+" dev rv-f1") {
			t.Errorf("h1: no IPv6 rule or route for table %s:\n%s\n%s", table, rules, routes)
		}
		if rules4, _ := c.hosts["h1"].Exec(c.ctx, "ip", "rule"); strings.Contains(rules4, "lookup "+table) {
			t.Errorf("h1: an IPv4 rule for an IPv6 chain's table %s:\n%s", table, rules4)
		}
		c.throughFam("a1", "o3", v6, []string{"f1"}, "f3") // local function, remote destination
		c.throughFam("a1", "o1", v6, []string{"f1"}, "f3") // local function, local destination
		c.throughFam("a3", "o1", v6, []string{"f1"}, "f3") // remote function, local destination
		c.throughFam("a2", "o3", v6, []string{"f1"}, "f3") // remote function, remote destination
		c.throughFam("a1", "o3", v4, nil, all...)          // IPv4: another family, not steered
		c.throughFam("a1", "a2", v6, nil, all...)          // not matched: other destination tenant
		c.throughFam("o1", "o3", v6, nil, all...)          // not matched: other source segment
		c.removeChain("inspect6")
		c.waitSteering("inspect6", false, "h1", "h2", "h3")
		c.throughFam("a1", "o3", v6, nil, all...)
		c.throughFam("a2", "o3", v6, nil, all...)
	})

	step("two hops across hosts", func(t *testing.T) {
		c.addChain(api.Chain{Name: "two6", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f1, f3}})
		c.waitSteering("two6", true, "h1", "h2", "h3")
		c.throughFam("a1", "o3", v6, []string{"f1", "f3"})
		c.throughFam("a3", "o3", v6, []string{"f1", "f3"})
		c.removeChain("two6")
		c.waitSteering("two6", false, "h1", "h2", "h3")
		c.throughFam("a1", "o3", v6, nil, all...)
	})

	step("ICMPv6 health probes: fail-open and fail-closed", func(t *testing.T) {
		c.addChain(api.Chain{Name: "open6", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f1}, Failure: api.FailOpen})
		c.addChain(api.Chain{Name: "closed6", Tenant: "acme", Segment: "default", ToCIDR: netip.PrefixFrom(c.eps["a3"].IPOf(false), 128),
			Via: []netip.Addr{f3}, Failure: api.FailClosed})
		c.waitSteering("open6", true, "h1", "h2", "h3")
		c.waitSteering("closed6", true, "h1", "h2", "h3")
		c.throughFam("a1", "o3", v6, []string{"f1"}, "f3")
		c.throughFam("a1", "a3", v6, []string{"f3"}, "f1")
		// The functions stop answering their hosts' echoes but still
		// forward: only the probes can tell the agents.
		c.blockProbes("f1", true)
		c.blockProbes("f3", true)
		expect.Eventually(t, "fail-open: a1 reaches o3 around f1 (probes fail)", wait, func() error {
			return c.bypasses("a1", "o3", v6, "f1")
		})
		expect.Eventually(t, "fail-closed: h2's IPv6 table for chain closed6 is a blackhole", wait, func() error {
			out, _ := c.hosts["h2"].Exec(c.ctx, "ip", "-6", "route", "show", "table", "all", "type", "blackhole")
			if !strings.Contains(out, "blackhole default") {
				return errors.New(out)
			}
			return nil
		})
		c.checkFam("fail-closed", []fprobe{{"a1", "a3", v6, echoPort, false}, {"a2", "a3", v6, echoPort, false}, {"a1", "a3", v4, echoPort, true}})
		// Probes answered again: both functions are back in the path.
		c.blockProbes("f1", false)
		c.blockProbes("f3", false)
		c.checkFam("fail-closed function back", []fprobe{{"a1", "a3", v6, echoPort, true}})
		expect.Eventually(t, "fail-open function back in the path", wait, func() error {
			if err := c.bypasses("a1", "o3", v6, "f1"); err == nil {
				return errors.New("f1 still bypassed")
			}
			return nil
		})
		c.throughFam("a1", "o3", v6, []string{"f1"}, "f3")
		c.throughFam("a2", "a3", v6, []string{"f3"}, "f1")
		c.removeChain("open6")
		c.removeChain("closed6")
		c.waitSteering("open6", false, "h1", "h2", "h3")
		c.waitSteering("closed6", false, "h1", "h2", "h3")
		c.throughFam("a1", "o3", v6, nil, all...)
		c.throughFam("a1", "a3", v6, nil, all...)
	})
}
