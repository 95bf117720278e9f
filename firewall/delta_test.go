package firewall

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim/simtest"
)

// countingNFT is knftables' fake that keeps every transaction run on it.
type countingNFT struct {
	*knftables.Fake
	txs []string
}

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.txs = append(c.txs, tx.String())
	return c.Fake.Run(ctx, tx)
}

// writes returns the transactions run since the n-th without their
// operations on the listing sums (sumChain), but those that only store
// them.
func (c *countingNFT) writes(n int) []string {
	var out []string
	for _, tx := range c.txs[n:] {
		if w := withoutSums(tx); w != "" {
			out = append(out, w)
		}
	}
	return out
}

// withoutSums returns a transaction without its operations on sumChain,
// or "" when it holds no other.
func withoutSums(tx string) string {
	var keep []string
	for _, line := range strings.SplitAfter(tx, "\n") {
		if !strings.Contains(line, " "+sumChain) {
			keep = append(keep, line)
		}
	}
	w := strings.Join(keep, "")
	if strings.TrimSpace(w) == "" {
		return ""
	}
	return w
}

// ops summarizes a transaction as "verb kind name" per operation,
// consecutive repeats merged.
func ops(tx string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(tx), "\n") {
		f := strings.Fields(line)
		op := strings.Join(f[:2], " ")
		if len(f) > 4 && f[1] != "table" {
			op += " " + f[4]
		}
		if len(out) == 0 || out[len(out)-1] != op {
			out = append(out, op)
		}
	}
	return out
}

func newCounting() (*Firewall, *countingNFT) {
	c := &countingNFT{Fake: knftables.NewFake(Family, hoststate.Table)}
	return NewWith(c, nil), c
}

// apply applies rs and returns the one transaction it wrote (besides the
// listing sums), failing if it wrote more or none.
func apply(t *testing.T, fw *Firewall, c *countingNFT, rs hoststate.Ruleset) []string {
	t.Helper()
	n := len(c.txs)
	changed, err := fw.Apply(context.Background(), rs)
	if err != nil {
		t.Fatal(err)
	}
	w := c.writes(n)
	if !changed || len(w) != 1 {
		t.Fatalf("changed = %v, %d transactions written: %q", changed, len(w), w)
	}
	return ops(w[0])
}

func wantOps(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: transaction\n\t%s\nwant\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

func ingressPolicy(port uint16) api.Policy {
	return api.Policy{Name: "in", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "beta"}}, Protocol: "tcp", Ports: []uint16{port}}}}
}

// withMap returns a copy of rs whose map element with key has verdict v.
func withMap(rs hoststate.Ruleset, key, v string) hoststate.Ruleset {
	rs.Maps = slices.Clone(rs.Maps)
	rs.Maps[0].Elements = slices.Clone(rs.Maps[0].Elements)
	for i, e := range rs.Maps[0].Elements {
		if e.Key == key {
			rs.Maps[0].Elements[i].Verdict = v
		}
	}
	return rs
}

// withSet returns a copy of rs with an underlay-like set holding elems.
func withSet(rs hoststate.Ruleset, elems ...string) hoststate.Ruleset {
	rs.Sets = []hoststate.Set{{Name: hoststate.UnderlaySet4, KeyType: "ipv4_addr . ether_addr", Interval: true, Elements: elems}}
	return rs
}

func TestDeltaTransactionsOnFake(t *testing.T) {
	ctx := context.Background()
	fw, c := newCounting()
	first := apply(t, fw, c, withPolicies(t, ingressPolicy(80)))
	if !slices.Contains(first, "delete table") {
		t.Fatalf("first apply is no replacement: %q", first)
	}

	ch := onlyChanged(t, withPolicies(t, ingressPolicy(80)), withPolicies(t, ingressPolicy(81)))
	wantOps(t, "one policy changed", apply(t, fw, c, withPolicies(t, ingressPolicy(81))),
		"flush chain "+ch, "add rule "+ch)

	// Nothing changed: no transaction at all, not even the sums.
	n := len(c.txs)
	if changed, err := fw.Apply(ctx, withPolicies(t, ingressPolicy(81))); err != nil || changed || len(c.txs) != n {
		t.Fatalf("same ruleset: changed=%v err=%v, %d transactions", changed, err, len(c.txs)-n)
	}

	// Tenants and their map elements.
	two := ruleset(t, "acme", "", "beta", "")
	apply(t, fw, c, two)
	three := ruleset(t, "acme", "", "beta", "", "cat", "")
	wantOps(t, "tenant added", apply(t, fw, c, three),
		"add chain tenant-3", "add rule tenant-3", "add element tenants-net1")
	wantOps(t, "tenant removed", apply(t, fw, c, two),
		"delete element tenants-net1", "flush chain tenant-3", "delete chain tenant-3")
	wantOps(t, "map element's verdict changed", apply(t, fw, c, withMap(two, "10.0.32.0", "goto tenant-1")),
		"delete element tenants-net1", "add element tenants-net1")
	if e := c.Table.Maps["tenants-net1"].FindElement("10.0.32.0"); e == nil || e.Value[0] != "goto tenant-1" {
		t.Fatalf("element after the change: %+v", e)
	}

	// A segment-mode tenant removed: its chains go after what jumps to them.
	seg := ruleset(t, "acme", "", "beta", "segment")
	apply(t, fw, c, seg)
	wantOps(t, "segment tenant removed", apply(t, fw, c, ruleset(t, "acme", "")),
		"delete element tenants-net1", "flush chain tenant-2", "flush chain segment-2-0", "flush chain segment-2-1",
		"delete chain tenant-2", "delete chain segment-2-0", "delete chain segment-2-1")

	// Set elements.
	one := ruleset(t, "acme", "")
	apply(t, fw, c, withSet(one, "10.2.0.0/16 . 02:00:00:00:00:02", "10.3.0.0/16 . 02:00:00:00:00:03"))
	got := apply(t, fw, c, withSet(one, "10.2.0.0/16 . 02:00:00:00:00:02", "10.4.0.0/16 . 02:00:00:00:00:04"))
	wantOps(t, "set element changed", got, "delete element underlay-v4", "add element underlay-v4")
	wantOps(t, "set removed", apply(t, fw, c, one), "delete set underlay-v4")

	// Policy chains appear and go: only what differs is touched, objects
	// are declared before use and deleted after the last reference.
	none, one := withPolicies(t), withPolicies(t, ingressPolicy(80))
	apply(t, fw, c, none)
	inOrder(t, "first policy", none, one, apply(t, fw, c, one))
	inOrder(t, "last policy gone", one, none, apply(t, fw, c, none))
}

// onlyChanged returns the one chain whose rules differ from a to b.
func onlyChanged(t *testing.T, a, b hoststate.Ruleset) string {
	t.Helper()
	d, why := diff(a, b)
	if why != "" || len(d.changed) != 1 || len(d.touched) != 1 || len(d.gone) != 0 {
		t.Fatalf("want one chain changed, got %q %v, gone %v", why, d.touched, d.gone)
	}
	return d.changed[0].Name
}

// inOrder checks a delta's operations from a to b: each names a block
// that differs; declarations come before flushes, rules and elements;
// deletions of chains, sets and maps come last.
func inOrder(t *testing.T, what string, a, b hoststate.Ruleset, ops []string) {
	t.Helper()
	d, why := diff(a, b)
	if why != "" {
		t.Fatal(why)
	}
	differs := toSet(append(slices.Clone(d.touched), d.gone...))
	phase := 0 // 0 declarations, 1 flushes, rules, elements, 2 deletions
	for _, op := range ops {
		f := strings.Fields(op)
		verb, kind, name := f[0], f[1], f[2]
		if kind == "rule" {
			kind = "chain"
		}
		if !differs[kind+" "+name] {
			t.Fatalf("%s: %q touches %s %s, which did not change; transaction %q", what, op, kind, name, ops)
		}
		p := 1
		switch {
		case verb == "add" && kind != "element" && f[1] != "rule":
			p = 0
		case verb == "delete" && kind != "element":
			p = 2
		}
		if p < phase {
			t.Fatalf("%s: %q out of order in %q", what, op, ops)
		}
		phase = p
	}
}

// A table edited behind the adapter's back is replaced at the next Apply
// of the same ruleset (the agent's resync); a change applied meanwhile as
// a delta does not hide the edit; a delta that fails falls back to a
// replacement.
func TestDeltaDriftOnFake(t *testing.T) {
	ctx := context.Background()
	fw, c := newCounting()
	a, b := withPolicies(t, ingressPolicy(80)), withPolicies(t, ingressPolicy(81))
	apply(t, fw, c, a)
	want := c.Dump()

	edit := func() {
		tx := c.Fake.NewTransaction()
		last := c.Table.Chains["tenant-1"].Rules[1]
		tx.Replace(&knftables.Rule{Chain: "tenant-1", Handle: last.Handle, Rule: "counter accept", Comment: last.Comment})
		if err := c.Fake.Run(ctx, tx); err != nil {
			t.Fatal(err)
		}
	}
	edit()
	if got := apply(t, fw, c, a); !slices.Contains(got, "delete table") {
		t.Fatalf("drift not repaired by a replacement: %q", got)
	}
	if c.Dump() != want {
		t.Fatalf("after repair:\n%s\nwant\n%s", c.Dump(), want)
	}

	edit()
	ch := onlyChanged(t, a, b)
	wantOps(t, "policy change after an edit elsewhere", apply(t, fw, c, b),
		"flush chain "+ch, "add rule "+ch)
	if got := apply(t, fw, c, b); !slices.Contains(got, "delete table") {
		t.Fatalf("edit not found at the resync after a delta: %q", got)
	}

	// The chain a delta flushes is gone (the fake deletes a chain still
	// jumped to): the delta fails, the table is replaced in the same Apply.
	tx := c.Fake.NewTransaction()
	tx.Delete(&knftables.Chain{Name: onlyChanged(t, b, a)})
	if err := c.Fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	n := len(c.txs)
	if changed, err := fw.Apply(ctx, a); err != nil || !changed {
		t.Fatalf("apply after the chain went: changed=%v err=%v", changed, err)
	}
	if w := c.writes(n); len(w) != 2 || !strings.Contains(w[1], "delete table") {
		t.Fatalf("want a failed delta then a replacement, got %q", w)
	}
	if c.Dump() != want {
		t.Fatalf("after the fallback:\n%s\nwant\n%s", c.Dump(), want)
	}

	// A new adapter adopts the table written for the same ruleset, and
	// replaces it for another.
	fw2 := NewWith(c, nil)
	n = len(c.txs)
	if changed, err := fw2.Apply(ctx, a); err != nil || changed || len(c.txs) != n {
		t.Fatalf("adoption: changed=%v err=%v, %d transactions", changed, err, len(c.txs)-n)
	}
	fw3 := NewWith(c, nil)
	if got := apply(t, fw3, c, b); !slices.Contains(got, "delete table") {
		t.Fatalf("a new adapter with another ruleset did not replace the table: %q", got)
	}
}

// genRulesets returns n rulesets of host h1 drawn at random: tenants of
// all isolation modes present or not, policies present or not, flat mode
// with an underlay whose neighbours vary (the underlay set's elements) or
// no underlay, and now and then a tenant whose isolation mode changes
// (a chain's comment: that needs a replacement).
func genRulesets(t testing.TB, r *rand.Rand, n int) []hoststate.Ruleset {
	net1 := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	var hosts []api.Host
	for i := 1; i <= 3; i++ {
		ip := netip.AddrFrom4([4]byte{192, 168, 0, byte(i)})
		c := netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", i))
		hosts = append(hosts, api.Host{Name: fmt.Sprintf("h%d", i), IP: ip, Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: uint64(i)}, CIDR: c}}})
	}
	tenants := []api.Tenant{{Name: "acme", ID: 1}, {Name: "beta", ID: 2, Isolation: api.IsolationSegment},
		{Name: "open", ID: 3, Isolation: api.IsolationNone}, {Name: "dune", ID: 4}, {Name: "echo", ID: 5, Isolation: api.IsolationSegment}}
	policies := []api.Policy{
		webPolicy(80), ingressPolicy(22),
		{Name: "deny", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{CIDR: "172.16.0.0/12", Except: []string{"172.16.1.0/24"}}}}}},
		{Name: "dune-web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "dune"}},
			Rules: []api.Rule{{Peers: []api.Peer{{CIDR: "192.168.0.0/16"}}, Protocol: "tcp", Ports: []uint16{80, 443}, PortRanges: []string{"8000-8080"}}}},
		{Name: "echo-seg", Direction: []string{"ingress", "egress"}, AppliedTo: []api.Selector{{Tenant: "echo", Segment: "a"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "echo", Segment: "b"}}, Protocol: "udp", Ports: []uint16{53}}}},
	}
	var out []hoststate.Ruleset
	for range n {
		snap := api.Snapshot{Networks: []api.Network{net1}, Hosts: hosts}
		for _, tn := range tenants {
			if r.IntN(10) < 7 {
				if tn.Name == "echo" && r.IntN(5) == 0 {
					tn.Isolation = api.IsolationTenant
				}
				snap.Tenants = append(snap.Tenants, tn)
				snap.Segments = append(snap.Segments, api.Segment{Tenant: tn.Name, Name: "a", ID: 0}, api.Segment{Tenant: tn.Name, Name: "b", ID: 1})
			}
		}
		for _, p := range policies {
			if r.IntN(2) == 0 {
				if p.Name == "web" && r.IntN(2) == 0 {
					p = webPolicy(81)
				}
				snap.Policies = append(snap.Policies, p)
			}
		}
		var u *hoststate.Underlay
		if r.IntN(3) > 0 {
			u = &hoststate.Underlay{Links: []hoststate.Link{
				{Name: "lo", Kind: "device", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
				{Name: "eth0", Kind: "veth", Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.0.1/24")}},
			}}
			for _, h := range hosts[1:] {
				if r.IntN(2) == 0 {
					b := h.IP.As4()
					u.Neighbors = append(u.Neighbors, hoststate.Neighbor{IP: h.IP, Link: "eth0", MAC: fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])})
				}
			}
		}
		st, err := hoststate.Compute(snap, "h1", hoststate.Options{Underlay: u})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Firewall)
	}
	return out
}

// blocks returns the hash of every block of a table's listing but the
// sums chain.
func blocks(t testing.TB, l lister) map[string]string {
	t.Helper()
	live, err := l.list(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return live.blockSums()
}

// Any ruleset to any other, on the fake: after each Apply the table holds
// what a replacement with that ruleset writes, and a second Apply finds
// it in sync.
func TestAnyRulesetToAnyOnFake(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 17))
		rss := genRulesets(t, r, 10)
		want := make([]map[string]string, len(rss))
		for i, rs := range rss {
			fw, fake := NewFake(nil)
			if _, err := fw.Apply(ctx, rs); err != nil {
				t.Fatal(err)
			}
			want[i] = blocks(t, newLister(fake, Family, hoststate.Table))
		}
		fw, c := newCounting()
		l := newLister(c, Family, hoststate.Table)
		deltas, replaced := 0, 0
		for step := range 40 {
			i := r.IntN(len(rss))
			n := len(c.txs)
			if _, err := fw.Apply(ctx, rss[i]); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			for _, w := range c.writes(n) {
				if strings.Contains(w, "delete table") {
					replaced++
				} else {
					deltas++
				}
			}
			if got := blocks(t, l); !maps.Equal(got, want[i]) {
				t.Fatalf("seed %d step %d (ruleset %d): table differs from a fresh one:\n%s", seed, step, i, c.Dump())
			}
			if !sameIndex(fw.last.hashes, desired(rss[i])) {
				t.Fatalf("seed %d step %d: hashes kept after the delta differ from the ruleset's", seed, step)
			}
			if changed, err := fw.Apply(ctx, rss[i]); err != nil || changed {
				t.Fatalf("seed %d step %d: second apply changed=%v err=%v", seed, step, changed, err)
			}
		}
		t.Logf("seed %d: %d deltas, %d replacements", seed, deltas, replaced)
		if deltas == 0 {
			t.Fatalf("seed %d: no step was applied as a delta", seed)
		}
	}
}

// Any ruleset to any other, against the kernel: random rulesets applied in
// random order on one host; after each Apply the listing of every chain,
// set and map equals the listing of the same ruleset written by a
// replacement on a second host, and a second Apply finds the table in
// sync.
func TestAnyRulesetToAnyInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.64.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := lab.AddHost(ctx, "h2", netip.MustParsePrefix("192.168.64.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 17))
	rss := genRulesets(t, r, 8)
	l := nftLister{family: Family, table: hoststate.Table}
	want := make([]map[string]string, len(rss))
	for i, rs := range rss {
		if err := ref.Do(func() error {
			fw, err := New(nil)
			if err != nil {
				return err
			}
			if err := fw.Cleanup(ctx); err != nil {
				return err
			}
			_, err = fw.Apply(ctx, rs)
			want[i] = blocks(t, l)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Exec(ctx, "nft", "add", "table", "ip", "other"); err != nil {
		t.Fatal(err)
	}
	var fw *Firewall
	var nft *txLog
	if err := h.Do(func() error {
		real, err := knftables.New(Family, hoststate.Table)
		nft = &txLog{Interface: real}
		fw = NewWith(nft, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	deltas, replaced, edits := 0, 0, 0
	for step := range 30 {
		i := r.IntN(len(rss))
		if err := h.Do(func() error {
			n := len(nft.txs)
			if _, err := fw.Apply(ctx, rss[i]); err != nil {
				return err
			}
			for _, w := range nft.txs[n:] {
				switch {
				case strings.Contains(w, "delete table"):
					replaced++
				case withoutSums(w) != "":
					deltas++
				}
			}
			if got := blocks(t, l); !maps.Equal(got, want[i]) {
				out, _ := h.Exec(ctx, "nft", "list", "table", "inet", hoststate.Table)
				return fmt.Errorf("table differs from a fresh one with ruleset %d:\n%s\nwant\n%s", i, out, rss[i])
			}
			if changed, err := fw.Apply(ctx, rss[i]); err != nil || changed {
				return fmt.Errorf("second apply: changed=%v err=%v", changed, err)
			}
			// A commit elsewhere moves the generation: the next Apply lists
			// the whole table, whose blocks must hash as the blocks the
			// delta listed alone did.
			if _, err := h.Exec(ctx, "nft", "add", "chain", "ip", "other", fmt.Sprintf("c%d", step)); err != nil {
				return err
			}
			if changed, err := fw.Apply(ctx, rss[i]); err != nil || changed {
				return fmt.Errorf("apply after a commit elsewhere: changed=%v err=%v", changed, err)
			}
			// Now and then an edit by hand, which the next Apply of the
			// same ruleset (the resync) must find and repair.
			edit := damage(r, rss[i])
			if edit == nil {
				return nil
			}
			if _, err := h.Exec(ctx, append([]string{"nft"}, edit...)...); err != nil {
				return err
			}
			edits++
			if changed, err := fw.Apply(ctx, rss[i]); err != nil || !changed {
				return fmt.Errorf("nft %s not repaired: changed=%v err=%v", strings.Join(edit, " "), changed, err)
			}
			if got := blocks(t, l); !maps.Equal(got, want[i]) {
				return fmt.Errorf("table after repairing nft %s differs from a fresh one", strings.Join(edit, " "))
			}
			return nil
		}); err != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, err)
		}
	}
	t.Logf("%d deltas, %d replacements, %d edits repaired", deltas, replaced, edits)
	if replaced == 0 || deltas == 0 {
		t.Fatalf("%d deltas and %d replacements: want both", deltas, replaced)
	}
}

// damage returns, one time in three, the arguments of an nft command
// that edits the table holding rs: an extra rule or chain, a chain
// flushed, a map element deleted, a rule's verdict turned.
func damage(r *rand.Rand, rs hoststate.Ruleset) []string {
	if r.IntN(3) > 0 {
		return nil
	}
	c := rs.Chains[r.IntN(len(rs.Chains))]
	switch r.IntN(4) {
	case 0:
		return []string{"add", "rule", "inet", hoststate.Table, c.Name, "counter"}
	case 1:
		return []string{"add", "chain", "inet", hoststate.Table, "extra"}
	case 2:
		if len(rs.Maps) > 0 && len(rs.Maps[0].Elements) > 0 {
			return []string{"delete", "element", "inet", hoststate.Table, rs.Maps[0].Name, "{ " + rs.Maps[0].Elements[0].Key + " }"}
		}
	}
	if len(c.Rules) == 0 {
		return []string{"add", "rule", "inet", hoststate.Table, c.Name, "drop"}
	}
	return []string{"flush", "chain", "inet", hoststate.Table, c.Name}
}

// txLog is a knftables.Interface that keeps every transaction run.
type txLog struct {
	knftables.Interface
	txs []string
}

func (l *txLog) Run(ctx context.Context, tx *knftables.Transaction) error {
	l.txs = append(l.txs, tx.String())
	return l.Interface.Run(ctx, tx)
}

// What a delta cannot express asks for a replacement.
func TestDiffReplaceReasons(t *testing.T) {
	rs := withSet(ruleset(t, "acme", "", "beta", "segment"), "10.2.0.0/16 . 02:00:00:00:00:02")
	for what, edit := range map[string]func(*hoststate.Ruleset){
		"chain comment": func(r *hoststate.Ruleset) { r.Chain("tenant-1").Comment = "renamed" },
		"chain hook":    func(r *hoststate.Ruleset) { r.Chain("tenant-1").Hook = "forward" },
		"set flags":     func(r *hoststate.Ruleset) { r.Sets[0].Interval = false },
		"map type":      func(r *hoststate.Ruleset) { r.Maps[0].KeyType = "ipv6_addr" },
		"map comment":   func(r *hoststate.Ruleset) { r.Maps[0].Comment = "renamed" },
	} {
		w := hoststate.Ruleset{Sets: slices.Clone(rs.Sets), Maps: slices.Clone(rs.Maps), Chains: slices.Clone(rs.Chains)}
		edit(&w)
		if _, why := diff(rs, w); why == "" {
			t.Errorf("%s changed: no replacement asked", what)
		}
	}
	w := hoststate.Ruleset{Sets: rs.Sets, Maps: rs.Maps, Chains: slices.Clone(rs.Chains)}
	w.Chain("tenant-1").Rules = append(slices.Clone(w.Chain("tenant-1").Rules), hoststate.Rule{Expr: "counter"})
	d, why := diff(rs, w)
	if why != "" || !slices.Equal(d.touched, []string{"chain tenant-1"}) || len(d.gone) != 0 {
		t.Fatalf("one chain's rules changed: %q, touched %v, gone %v", why, d.touched, d.gone)
	}
	if d, why := diff(rs, rs); why != "" || !d.empty() {
		t.Fatalf("no change: %q, %+v", why, d)
	}
}
