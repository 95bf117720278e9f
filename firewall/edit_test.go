package firewall

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// handleRE matches a rule line of `nft -a list chain`: the rule (with its
// comment) and its handle.
var handleRE = regexp.MustCompile(`^\s*(.*) # handle (\d+)$`)

// editRule rewrites in place, with nft replace, the first rule of a chain
// whose listing contains match: edit gets the rule as nft lists it (its
// comment included) and returns the new rule. It returns the new rule.
func editRule(t *testing.T, h *sim.Host, table, chain, match string, edit func(string) string) string {
	t.Helper()
	ctx := context.Background()
	out, err := h.Exec(ctx, "nft", "-a", "list", "chain", "inet", table, chain)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		m := handleRE.FindStringSubmatch(line)
		if m == nil || !strings.Contains(m[1], match) {
			continue
		}
		rule := edit(m[1])
		if rule == m[1] {
			t.Fatalf("edit left %q unchanged", rule)
		}
		if _, err := h.Exec(ctx, "nft", "replace", "rule", "inet", table, chain, "handle", m[2], rule); err != nil {
			t.Fatal(err)
		}
		return rule
	}
	t.Fatalf("no rule matching %q in chain %s:\n%s", match, chain, out)
	return ""
}

// A tenant's drop rewritten in place into accept, its comment kept, opens
// the tenant to others; the next Apply must see it, repair it, and traffic
// must be blocked again.
func TestEditedRuleRepairedInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.63.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	// ruleset's plan: 10.<host>.<tenant:4 bits><segment:4 bits>.x
	acmeIP, betaIP := netip.MustParseAddr("10.1.16.5"), netip.MustParseAddr("10.1.32.5")
	acme, err := lab.AddEndpoint(ctx, h, "acme", acmeIP, "")
	if err != nil {
		t.Fatal(err)
	}
	beta, err := lab.AddEndpoint(ctx, h, "beta", betaIP, "")
	if err != nil {
		t.Fatal(err)
	}
	rs := withPolicies(t, webPolicy(81)) // beta may reach acme on port 81 only
	var fw *Firewall
	if err := h.Do(func() error {
		m, err := route.New(nil)
		if err != nil {
			return err
		}
		if _, err := m.SetSysctls(ctx, []hoststate.Sysctl{{Key: "net.ipv4.ip_forward", Value: "1"}}); err != nil {
			return err
		}
		if err := m.EnsureGateway(ctx, hoststate.DefaultGateway()); err != nil {
			return err
		}
		if _, err := m.SyncRoutes(ctx, []hoststate.Route{
			{Dst: netip.PrefixFrom(acmeIP, 32), Dev: acme.HostIface},
			{Dst: netip.PrefixFrom(betaIP, 32), Dev: beta.HostIface},
		}); err != nil {
			return err
		}
		fw, err = New(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := acme.Do(func() (err error) { ln, err = net.Listen("tcp", acmeIP.String()+":80"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	connects := func(from *sim.Endpoint) bool {
		return from.Do(func() error {
			c, err := net.DialTimeout("tcp", acmeIP.String()+":80", time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	}
	apply := func(want bool, what string) {
		t.Helper()
		var changed bool
		if err := h.Do(func() (err error) { changed, err = fw.Apply(ctx, rs); return err }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != want {
			out, _ := h.Exec(ctx, "nft", "list", "table", "inet", hoststate.Table)
			t.Fatalf("%s: changed = %v, want %v; live table:\n%s", what, changed, want, out)
		}
	}
	traffic := func(what string, betaReaches bool) {
		t.Helper()
		if !connects(acme) {
			t.Fatalf("%s: acme does not reach itself through the host", what)
		}
		if got := connects(beta); got != betaReaches {
			out, _ := h.Exec(ctx, "nft", "list", "table", "inet", hoststate.Table)
			t.Fatalf("%s: beta -> acme:80 connects = %v, want %v; live table:\n%s", what, got, betaReaches, out)
		}
	}
	apply(true, "first apply")
	apply(false, "second apply")
	traffic("isolated", false)

	rule := editRule(t, h, hoststate.Table, "tenant-1", `drop comment "tenant acme: isolation"`,
		func(r string) string { return strings.Replace(r, " drop comment", " accept comment", 1) })
	t.Logf("edited: %s", rule)
	traffic("drop edited into accept", true)
	apply(true, "repair the edited rule")
	traffic("repaired", false)
	apply(false, "in sync after the repair")

	// The same in a policy chain (the policy-only rewrite path): the port
	// beta may reach edited from 81 into 80, comment kept.
	editRule(t, h, hoststate.Table, hoststate.ChainPolicyIngress+".net1.t1", "tcp dport 81", // acme's ingress chain
		func(r string) string { return strings.Replace(r, "tcp dport 81", "tcp dport 80", 1) })
	traffic("policy port edited", true)
	apply(true, "repair the policy chain")
	traffic("policy repaired", false)
	apply(false, "in sync after the policy repair")

	// A chain's policy edited (hook and comments untouched).
	if _, err := h.Exec(ctx, "nft", "add", "chain", "inet", hoststate.Table, hoststate.ChainForward,
		"{ type filter hook forward priority filter; policy drop; }"); err != nil {
		t.Fatal(err)
	}
	apply(true, fmt.Sprintf("repair the %s chain's policy", hoststate.ChainForward))
	if out, _ := h.Exec(ctx, "nft", "list", "chain", "inet", hoststate.Table, hoststate.ChainForward); !strings.Contains(out, "policy accept") {
		t.Fatalf("forward chain after repair:\n%s", out)
	}
}
