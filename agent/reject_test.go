package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim/simtest"
)

func TestFindRejected(t *testing.T) {
	var names []string
	for i := range 100 {
		names = append(names, fmt.Sprintf("p%d", i))
	}
	for _, bad := range [][]string{nil, {"p0"}, {"p7", "p42"}, {"p99"}, names} {
		checks := 0
		got := findRejected(names, func(only []string) error {
			checks++
			for _, p := range only {
				if slices.Contains(bad, p) {
					return errors.New("rejected " + p)
				}
			}
			return nil
		})
		var keys []string
		for k, err := range got {
			keys = append(keys, k)
			if err.Error() != "rejected "+k {
				t.Errorf("bad %v: %s reported with %v", bad, k, err)
			}
		}
		slices.Sort(keys)
		want := slices.Clone(bad)
		slices.Sort(want)
		if !slices.Equal(keys, want) {
			t.Errorf("bad %v: found %v", bad, keys)
		}
		if len(bad) == 0 && checks != 1 {
			t.Errorf("no rejected policy cost %d checks, want 1", checks)
		}
		if len(bad) == 2 && checks > 2*2*7+1 {
			t.Errorf("2 rejected among 100 cost %d checks", checks)
		}
	}
}

// corruptingFirewall stands for a kernel that rejects some compiled rules:
// it appends an invalid token to every rule whose expression contains
// marker before passing the ruleset on (real nft rejects it; rejectingNFT
// does on the fake). It counts calls.
type corruptingFirewall struct {
	Firewall
	marker string

	mu            sync.Mutex
	apply, checks int
}

const invalidToken = " romana-invalid-token"

func (c *corruptingFirewall) corrupt(rs hoststate.Ruleset) hoststate.Ruleset {
	out := rs
	out.Chains = slices.Clone(rs.Chains)
	for i := range out.Chains {
		out.Chains[i].Rules = slices.Clone(out.Chains[i].Rules)
		for j, r := range out.Chains[i].Rules {
			if strings.Contains(r.Expr, c.marker) {
				out.Chains[i].Rules[j].Expr += invalidToken
			}
		}
	}
	return out
}

func (c *corruptingFirewall) Apply(ctx context.Context, rs hoststate.Ruleset) (bool, error) {
	c.mu.Lock()
	c.apply++
	c.mu.Unlock()
	return c.Firewall.Apply(ctx, c.corrupt(rs))
}

func (c *corruptingFirewall) Check(ctx context.Context, rs hoststate.Ruleset) error {
	c.mu.Lock()
	c.checks++
	c.mu.Unlock()
	return c.Firewall.Check(ctx, c.corrupt(rs))
}

func (c *corruptingFirewall) counts() (apply, checks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apply, c.checks
}

// rejectingNFT is knftables' fake failing, like nft, any transaction with
// an invalid token (the fake itself does not parse rules).
type rejectingNFT struct{ *knftables.Fake }

func (r rejectingNFT) reject(tx *knftables.Transaction) error {
	for _, l := range strings.Split(tx.String(), "\n") {
		if strings.Contains(l, invalidToken) {
			return fmt.Errorf("/dev/stdin:1:1-10: Error: syntax error, unexpected string\n%s\n^^^^^^^^^^", l)
		}
	}
	return nil
}

func (r rejectingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if err := r.reject(tx); err != nil {
		return err
	}
	return r.Fake.Run(ctx, tx)
}

func (r rejectingNFT) Check(ctx context.Context, tx *knftables.Transaction) error {
	if err := r.reject(tx); err != nil {
		return err
	}
	return r.Fake.Check(ctx, tx)
}

// ingressPolicy lets tenant beta reach tenant acme on a TCP port.
func ingressPolicy(name string, port uint16) api.Policy {
	return api.Policy{Name: name, Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", Ports: []uint16{port}}}}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A policy nft rejects is left out and reported; the others are enforced,
// it is retried on every change, and fixing or removing it converges.
func TestRejectedPolicyDoesNotStallOthers(t *testing.T) {
	w := newWorld()
	r := newRig(t, w.snap)
	fw := firewall.NewWith(rejectingNFT{r.nft}, nil)
	cf := &corruptingFirewall{Firewall: fw, marker: "dport 6666"}
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: time.Hour, Source: r.src, Routes: r.routes, Firewall: cf, Metrics: r.metrics,
			Log: slog.New(slog.NewTextHandler(&logs, nil)), MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
	problems := func() float64 { return metric(t, r.reg, "romana_agent_problems") }
	state := func(want ...string) func() error {
		return func() error {
			d := r.nft.Dump()
			for _, w := range want {
				present := !strings.HasPrefix(w, "!")
				if strings.Contains(d, strings.TrimPrefix(w, "!")) != present {
					return fmt.Errorf("want %q; table:\n%s", w, d)
				}
			}
			return nil
		}
	}

	// Nothing fails: one Apply per change, no check.
	r.src.put(api.KindPolicy, "good", ingressPolicy("good", 80))
	expect.Eventually(t, "good enforced", within, state("policy good rule 0"))
	if _, checks := cf.counts(); checks != 0 {
		t.Fatalf("the normal path ran %d checks", checks)
	}

	r.src.put(api.KindPolicy, "bad", ingressPolicy("bad", 6666))
	expect.Eventually(t, "bad left out, good kept", within, func() error {
		if err := state("policy good rule 0", "!policy bad", "!"+invalidToken)(); err != nil {
			return err
		}
		if p := problems(); p != 1 {
			return fmt.Errorf("problems = %v", p)
		}
		return nil
	})
	if l := logs.String(); !strings.Contains(l, "policy bad: rejected by nftables") || !strings.Contains(l, "syntax error") {
		t.Fatalf("rejection not logged with the policy and nft's error:\n%s", l)
	}

	// Another change: every policy is retried; bad is still rejected.
	r.src.put(api.KindPolicy, "other", ingressPolicy("other", 443))
	expect.Eventually(t, "other enforced", within, state("policy good rule 0", "policy other rule 0", "!policy bad"))
	if p := problems(); p != 1 {
		t.Fatalf("problems = %v after another change", p)
	}

	// Fixed: enforced, no problem.
	r.src.put(api.KindPolicy, "bad", ingressPolicy("bad", 8080))
	expect.Eventually(t, "fixed policy enforced", within, func() error {
		if err := state("policy bad rule 0", "dport 8080", "policy good rule 0", "policy other rule 0")(); err != nil {
			return err
		}
		if p := problems(); p != 0 {
			return fmt.Errorf("problems = %v", p)
		}
		return nil
	})

	// Broken again, then removed.
	r.src.put(api.KindPolicy, "bad", ingressPolicy("bad", 6666))
	expect.Eventually(t, "broken again", within, func() error {
		if p := problems(); p != 1 {
			return fmt.Errorf("problems = %v", p)
		}
		return nil
	})
	r.src.del(api.KindPolicy, "bad")
	expect.Eventually(t, "removed", within, func() error {
		if err := r.converged(); err != nil {
			return err
		}
		if p := problems(); p != 0 {
			return fmt.Errorf("problems = %v", p)
		}
		st := r.desired()
		return state(firewall.PolicyStamp(st.Firewall), "policy good rule 0", "policy other rule 0")()
	})
}

// A ruleset failing without any policy is not blamed on the policies.
func TestBaseFailureIsNotBlamedOnPolicies(t *testing.T) {
	w := newWorld()
	w.snap.Policies = []api.Policy{ingressPolicy("good", 80)}
	st, err := hoststate.Compute(w.snap, "h1", hoststate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fake := knftables.NewFake(firewall.Family, hoststate.Table)
	cf := &corruptingFirewall{Firewall: firewall.NewWith(rejectingNFT{fake}, nil), marker: "vmap"}
	rejected, err := applyFirewall(context.Background(), cf, st.Firewall, nil)
	if err == nil || len(rejected) != 0 {
		t.Fatalf("rejected %v, err %v; want the Apply error and no policy blamed", rejected, err)
	}
}

// Against the kernel: real nft rejects the corrupted policy; the others
// are applied in one transaction and enforced (real connections between
// two endpoints of the simulated host); the same ruleset is then applied
// without checks, and the fixed policy is enforced.
func TestRejectedPolicyInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.62.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld()
	acmeIP, _ := w.plan.Address(plan.Loc{Host: 1}, 1, 0, 1)
	betaIP, _ := w.plan.Address(plan.Loc{Host: 1}, 2, 0, 1)
	w.snap.Addresses = []api.Address{
		{Name: "a1", IP: acmeIP, Network: "net1", Host: "h1", Tenant: "acme", Segment: "default", Interface: "rv-a1"},
		{Name: "b1", IP: betaIP, Network: "net1", Host: "h1", Tenant: "beta", Segment: "web", Interface: "rv-b1"},
	}
	a1, err := lab.AddEndpoint(ctx, h, "a1", acmeIP, "rv-a1")
	if err != nil {
		t.Fatal(err)
	}
	b1, err := lab.AddEndpoint(ctx, h, "b1", betaIP, "rv-b1")
	if err != nil {
		t.Fatal(err)
	}
	compute := func(ps ...api.Policy) hoststate.State {
		s := w.snap
		s.Policies = ps
		st, err := hoststate.Compute(s, "h1", hoststate.Options{})
		if err != nil || len(st.Problems) > 0 {
			t.Fatal(err, st.Problems)
		}
		return st
	}
	var fw *firewall.Firewall
	if err := h.Do(func() error {
		st := compute()
		m, err := route.New(nil)
		if err != nil {
			return err
		}
		if _, err := m.SetSysctls(ctx, st.Sysctls); err != nil {
			return err
		}
		if err := m.EnsureGateway(ctx, st.Gateway); err != nil {
			return err
		}
		var local []hoststate.Route // endpoint routes: h2 is not simulated
		for _, r := range st.Routes {
			if r.Dev != "" {
				local = append(local, r)
			}
		}
		if _, err := m.SyncRoutes(ctx, local); err != nil {
			return err
		}
		fw, err = firewall.New(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, port := range []int{80, 6666, 8080} {
		var ln net.Listener
		if err := a1.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", acmeIP, port)); return err }); err != nil {
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
	// connects reports whether beta's endpoint reaches acme's on port.
	connects := func(port int) bool {
		return b1.Do(func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", acmeIP, port), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	}
	traffic := func(what string, want map[int]bool) {
		t.Helper()
		for port, ok := range want {
			if got := connects(port); got != ok {
				out, _ := h.Exec(ctx, "nft", "list", "table", "inet", "romana")
				t.Fatalf("%s: beta -> acme:%d connects = %v, want %v; live table:\n%s", what, port, got, ok, out)
			}
		}
	}
	cf := &corruptingFirewall{Firewall: fw, marker: "dport 6666"}
	apply := func(rs hoststate.Ruleset, known map[string]error) (rejected map[string]error) {
		t.Helper()
		if err := h.Do(func() (err error) { rejected, err = applyFirewall(ctx, cf, rs, known); return err }); err != nil {
			t.Fatal(err)
		}
		return rejected
	}
	live := func() string {
		out, err := h.Exec(ctx, "nft", "list", "table", "inet", "romana")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	apply(compute().Firewall, nil)
	traffic("isolation only", map[int]bool{80: false})

	// nft itself rejects the corrupted rule.
	bad := compute(ingressPolicy("good", 80), ingressPolicy("bad", 6666), ingressPolicy("other", 443)).Firewall
	if err := h.Do(func() error { return cf.Check(ctx, bad) }); err == nil {
		t.Fatal("nft --check accepted the corrupted ruleset")
	}
	rejected := apply(bad, nil)
	if len(rejected) != 1 || rejected["bad"] == nil {
		t.Fatalf("rejected %v, want bad", rejected)
	}
	t.Logf("problem: %s", rejectedProblems(rejected)[0])
	out := live()
	if !strings.Contains(out, `"policy good rule 0"`) || !strings.Contains(out, `"policy other rule 0"`) || strings.Contains(out, "policy bad") {
		t.Fatalf("live table:\n%s", out)
	}
	traffic("bad rejected", map[int]bool{80: true, 6666: false, 8080: false})

	a0, c0 := cf.counts()
	if again := apply(bad, rejected); len(again) != 1 {
		t.Fatalf("known rejection dropped: %v", again)
	}
	if a1, c1 := cf.counts(); a1-a0 != 1 || c1 != c0 {
		t.Fatalf("re-applying with the known rejection cost %d applies, %d checks", a1-a0, c1-c0)
	}

	if rejected := apply(compute(ingressPolicy("good", 80), ingressPolicy("bad", 8080), ingressPolicy("other", 443)).Firewall, nil); len(rejected) != 0 {
		t.Fatalf("fixed policy rejected: %v", rejected)
	}
	if out := live(); !strings.Contains(out, `"policy bad rule 0"`) || !strings.Contains(out, "dport 8080") || !strings.Contains(out, `"policy good rule 0"`) {
		t.Fatalf("live table after the fix:\n%s", out)
	}
	traffic("bad fixed", map[int]bool{80: true, 6666: false, 8080: true})
}
