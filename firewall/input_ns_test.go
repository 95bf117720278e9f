package firewall

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// The input chain in a real namespace: an endpoint's connection to its
// host's own address meets the endpoint's egress policy, while the host's
// connection to the endpoint keeps working (its replies are established);
// hand edits of the input chain (a rule deleted, its policy, the whole
// chain) are found and repaired by the next Apply; and a ruleset without
// the input chain and one with it follow each other by deltas.
func TestInputChainInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	hostIP := netip.MustParseAddr("192.168.63.1")
	h, err := lab.AddHost(ctx, "h1", netip.PrefixFrom(hostIP, 24))
	if err != nil {
		t.Fatal(err)
	}
	acmeIP := netip.MustParseAddr("10.1.16.5") // tenant acme (1), segment 0
	acme, err := lab.AddEndpoint(ctx, h, "acme", acmeIP, "")
	if err != nil {
		t.Fatal(err)
	}
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
		if _, err := m.SyncRoutes(ctx, []hoststate.Route{{Dst: netip.PrefixFrom(acmeIP, 32), Dev: acme.HostIface}}); err != nil {
			return err
		}
		fw, err = New(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	serve := func(ns *sim.Namespace, ip netip.Addr) {
		var ln net.Listener
		if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", ip.String()+":80"); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("x"))
				c.Close()
			}
		}()
	}
	serve(h.Namespace, hostIP)
	serve(acme.Namespace, acmeIP)
	// connects reports whether a connection from ns to ip:80 is accepted
	// and its server's byte arrives.
	connects := func(ns *sim.Namespace, ip netip.Addr) bool {
		return ns.Do(func() error {
			c, err := net.DialTimeout("tcp", ip.String()+":80", time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Read(make([]byte, 1))
			return err
		}) == nil
	}
	table := func() string {
		out, _ := h.Exec(ctx, "nft", "list", "table", "inet", hoststate.Table)
		return out
	}
	traffic := func(what string, toHost bool) {
		t.Helper()
		if got := connects(acme.Namespace, hostIP); got != toHost {
			t.Fatalf("%s: acme -> its host %s:80 connects = %v, want %v; live table:\n%s", what, hostIP, got, toHost, table())
		}
		if !connects(h.Namespace, acmeIP) {
			t.Fatalf("%s: the host does not reach acme; live table:\n%s", what, table())
		}
	}
	apply := func(rs hoststate.Ruleset, want bool, what string) {
		t.Helper()
		var changed bool
		if err := h.Do(func() (err error) { changed, err = fw.Apply(ctx, rs); return err }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != want {
			t.Fatalf("%s: changed = %v, want %v; live table:\n%s", what, changed, want, table())
		}
	}
	nft := func(args ...string) {
		t.Helper()
		if out, err := h.Exec(ctx, append([]string{"nft"}, args...)...); err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
	}

	open := withPolicies(t)
	deny := withPolicies(t, api.Policy{Name: "acme-no-host", Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{CIDR: "192.168.63.0/24"}}, Protocol: "tcp"}}})
	apply(open, true, "first apply")
	traffic("no policy", true)
	apply(deny, true, "the deny")
	apply(deny, false, "in sync")
	traffic("egress deny of the host's subnet", false)

	// The input chain's jump to the policies deleted by hand.
	out, err := h.Exec(ctx, "nft", "-a", "list", "chain", "inet", hoststate.Table, hoststate.ChainInput)
	if err != nil {
		t.Fatal(err)
	}
	handle := ""
	for _, line := range strings.Split(out, "\n") {
		if m := handleRE.FindStringSubmatch(line); m != nil && strings.TrimSpace(m[1]) == hoststate.JumpPoliciesEgress {
			handle = m[2]
		}
	}
	if handle == "" {
		t.Fatalf("no %q in the input chain:\n%s", hoststate.JumpPoliciesEgress, out)
	}
	nft("delete", "rule", "inet", hoststate.Table, hoststate.ChainInput, "handle", handle)
	traffic("jump deleted by hand", true)
	apply(deny, true, "repair the input chain's rules")
	traffic("repaired", false)

	// Its policy edited.
	nft("add", "chain", "inet", hoststate.Table, hoststate.ChainInput, "{ type filter hook input priority filter; policy drop; }")
	apply(deny, true, "repair the input chain's policy")
	if out, _ := h.Exec(ctx, "nft", "list", "chain", "inet", hoststate.Table, hoststate.ChainInput); !strings.Contains(out, "policy accept") {
		t.Fatalf("input chain after repair:\n%s", out)
	}
	traffic("policy repaired", false)

	// The whole chain deleted.
	nft("flush", "chain", "inet", hoststate.Table, hoststate.ChainInput)
	nft("delete", "chain", "inet", hoststate.Table, hoststate.ChainInput)
	traffic("chain deleted by hand", true)
	apply(deny, true, "repair the deleted chain")
	apply(deny, false, "in sync after the repair")
	traffic("chain repaired", false)

	// Without the input chain and back, by deltas (the adapter writes a
	// base chain's hook when it adds the chain).
	without := deny
	without.Chains = slices.DeleteFunc(slices.Clone(deny.Chains), func(c hoststate.Chain) bool { return c.Name == hoststate.ChainInput })
	apply(without, true, "the input chain removed")
	traffic("no input chain", true)
	apply(deny, true, "the input chain added back")
	apply(deny, false, "in sync")
	traffic("input chain back", false)
}

// validate accepts the forward and input base chains and nothing else
// hooked.
func TestValidateBaseChains(t *testing.T) {
	rs := ruleset(t, "acme", "")
	if err := validate(rs); err != nil {
		t.Fatal(err)
	}
	bad := func(what string, edit func(c *hoststate.Chain) bool) {
		t.Helper()
		x := rs
		x.Chains = slices.Clone(rs.Chains)
		for i := range x.Chains {
			if edit(&x.Chains[i]) {
				break
			}
		}
		if err := validate(x); err == nil {
			t.Errorf("%s: accepted", what)
		}
	}
	bad("input chain without its hook", func(c *hoststate.Chain) bool {
		if c.Name == hoststate.ChainInput {
			c.Hook = ""
			return true
		}
		return false
	})
	bad("input chain on the forward hook", func(c *hoststate.Chain) bool {
		if c.Name == hoststate.ChainInput {
			c.Hook = "forward"
			return true
		}
		return false
	})
	bad("a tenant chain hooked", func(c *hoststate.Chain) bool {
		if strings.HasPrefix(c.Name, "tenant-") {
			c.Hook = "output"
			return true
		}
		return false
	})
}
