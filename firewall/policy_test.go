package firewall

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim/simtest"
)

// withPolicies computes h1's ruleset (tenants acme and beta) with policies.
func withPolicies(t testing.TB, ps ...api.Policy) hoststate.Ruleset {
	t.Helper()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	snap := api.Snapshot{Networks: []api.Network{n}, Hosts: []api.Host{{Name: "h1", IP: netip.MustParseAddr("192.168.0.1"),
		Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: 1}, CIDR: netip.MustParsePrefix("10.1.0.0/16")}}}},
		Tenants:  []api.Tenant{{Name: "acme", ID: 1}, {Name: "beta", ID: 2}},
		Policies: ps}
	st, err := hoststate.Compute(snap, "h1", hoststate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Problems) > 0 {
		t.Fatal(st.Problems)
	}
	return st.Firewall
}

func webPolicy(port uint16) api.Policy {
	return api.Policy{Name: "web", Direction: []string{"ingress", "egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", Ports: []uint16{port}}}}
}

// policySteps: none -> one policy -> changed port (same comments) -> two
// policies -> none.
func policySteps(t testing.TB) []hoststate.Ruleset {
	deny := api.Policy{Name: "deny", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
		Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{CIDR: "172.16.0.0/12", Except: []string{"172.16.1.0/24"}}}}}}
	return []hoststate.Ruleset{withPolicies(t), withPolicies(t, webPolicy(80)), withPolicies(t, webPolicy(81)),
		withPolicies(t, webPolicy(81), deny), withPolicies(t)}
}

// A policy change rewrites only the policy chains; anything else replaces
// the table.
func TestPolicyChangeRewritesPolicyChainsOnFake(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(Family, hoststate.Table)
	rec := &recordingNFT{Fake: fake}
	fw := NewWith(rec, nil)
	for i, rs := range policySteps(t) {
		changed, err := fw.Apply(ctx, rs)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if !changed {
			t.Fatalf("step %d: not applied", i)
		}
		tx := rec.writes[len(rec.writes)-1] // the last one before the listing sums
		full := strings.Contains(tx, "delete table")
		if full != (i == 0) {
			t.Fatalf("step %d: full replacement = %v; transaction:\n%s", i, full, tx)
		}
		if i > 0 && (strings.Contains(tx, "tenant-") || strings.Contains(tx, " map ") || strings.Contains(tx, " element ")) {
			t.Fatalf("step %d: policy change touched isolation:\n%s", i, tx)
		}
		if changed, err := fw.Apply(ctx, rs); err != nil || changed {
			t.Fatalf("step %d: second apply changed=%v err=%v\n%s", i, changed, err, fake.Dump())
		}
		if d := fake.Dump(); !strings.Contains(d, Stamp(rs)) || !strings.Contains(d, PolicyStamp(rs)) {
			t.Fatalf("step %d: stamps missing:\n%s", i, d)
		}
	}
	if d := fake.Dump(); strings.Contains(d, "policy-") {
		t.Fatalf("policy chains left after the last policy went:\n%s", d)
	}
	// A policy change after the table drifted (here: deleted) still
	// converges: the rewrite fails or leaves the table incomplete, and the
	// checked path repairs it (at once or at the next resync's Apply).
	tx := fake.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	rs := withPolicies(t, webPolicy(99))
	for range 2 {
		if _, err := fw.Apply(ctx, rs); err != nil {
			t.Fatal(err)
		}
	}
	if d := fake.Dump(); !strings.Contains(d, "tcp dport 99") || !strings.Contains(d, "vmap @tenants-net1") || !strings.Contains(d, Stamp(rs)) {
		t.Fatalf("not repaired after drift:\n%s", d)
	}
	if changed, err := fw.Apply(ctx, rs); err != nil || changed {
		t.Fatalf("after repair: changed=%v err=%v", changed, err)
	}
}

// recordingNFT records the transactions run on a fake, but those that only
// store listing sums.
type recordingNFT struct {
	*knftables.Fake
	writes []string
}

func (r *recordingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if s := withoutSums(tx.String()); s != "" {
		r.writes = append(r.writes, s)
	}
	return r.Fake.Run(ctx, tx)
}

// The same steps against the kernel: nft accepts the policy transactions.
func TestPolicyChangeInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	h, err := simtest.New(t).AddHost(ctx, "h1", netip.MustParsePrefix("192.168.61.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	var fw *Firewall
	if err := h.Do(func() (err error) { fw, err = New(nil); return err }); err != nil {
		t.Fatal(err)
	}
	for i, rs := range policySteps(t) {
		for j, want := range []bool{true, false} {
			var changed bool
			if err := h.Do(func() (err error) { changed, err = fw.Apply(ctx, rs); return err }); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if changed != want {
				out, _ := h.Exec(ctx, "nft", "list", "table", "inet", "romana")
				t.Fatalf("step %d apply %d: changed = %v; live:\n%s", i, j, changed, out)
			}
		}
		out, _ := h.Exec(ctx, "nft", "list", "table", "inet", "romana")
		if strings.Contains(out, "policy-ingress") != (i > 0 && i < 4) {
			t.Fatalf("step %d: live table:\n%s", i, out)
		}
	}
}

// Policy peer sets (named interval sets, hoststate's policy-peers-*) are
// written, found in sync by the listing check, and replaced when their
// elements change.
func TestPeerSetInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	h, err := simtest.New(t).AddHost(ctx, "h1", netip.MustParsePrefix("192.168.62.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	many := func(last string) api.Policy {
		var peers []api.Peer
		for _, c := range []string{"172.16.0.0/12", "192.0.2.0/24", "198.51.100.0/24", "198.51.101.0/24", "203.0.113.7/32",
			"100.64.0.0/10", "10.9.0.0/16", "10.10.0.0/16", last} {
			peers = append(peers, api.Peer{CIDR: c})
		}
		peers[0].Except = []string{"172.16.5.0/24", "172.17.0.0/16"}
		return api.Policy{Name: "many", Direction: []string{"ingress", "egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: "deny", Peers: peers, Protocol: "tcp", Ports: []uint16{25}}}}
	}
	var fw *Firewall
	if err := h.Do(func() (err error) { fw, err = New(nil); return err }); err != nil {
		t.Fatal(err)
	}
	for i, rs := range []hoststate.Ruleset{withPolicies(t, many("10.20.0.0/16")), withPolicies(t, many("10.21.0.0/16"))} {
		if !strings.Contains(rs.String(), "flags interval") {
			t.Fatalf("step %d: no interval set:\n%s", i, rs)
		}
		for j, want := range []bool{true, false} {
			var changed bool
			if err := h.Do(func() (err error) { changed, err = fw.Apply(ctx, rs); return err }); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if changed != want {
				out, _ := h.Exec(ctx, "nft", "list", "table", "inet", "romana")
				t.Fatalf("step %d apply %d: changed = %v; live:\n%s", i, j, changed, out)
			}
		}
	}
	// An element edited behind the adapter's back is found and repaired.
	if _, err := h.Exec(ctx, "sh", "-c", "nft list sets inet | grep -o 'policy-peers-[0-9a-f]*' | head -1 | xargs -I S nft add element inet romana S '{ 10.99.0.1 }'"); err != nil {
		t.Fatal(err)
	}
	var changed bool
	if err := h.Do(func() (err error) { changed, err = fw.Apply(ctx, withPolicies(t, many("10.21.0.0/16"))); return err }); err != nil || !changed {
		out, _ := h.Exec(ctx, "nft", "list", "table", "inet", "romana")
		t.Fatalf("edited set: changed = %v, %v; live:\n%s", changed, err, out)
	}
}
