package firewall

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/sim/simtest"
)

// listCounter counts the listings a Firewall runs, of the table and of
// blocks.
type listCounter struct {
	lister
	n int
}

func (l *listCounter) list(ctx context.Context) (*listing, error) {
	l.n++
	return l.lister.list(ctx)
}

func (l *listCounter) listBlocks(ctx context.Context, blocks []string) (*listing, error) {
	l.n++
	return l.lister.listBlocks(ctx, blocks)
}

// In the kernel, a policy change is one nft run: the delta's transaction
// (with the stamps), no listing. What it wrote is pending until the next
// check, which lists it when nothing was committed since, writes it again
// when something was, and repairs a hand edit of it either way; a new
// agent adopts a table with pending blocks without replacing it, writing
// those blocks again. After every step the table is the one a fresh
// replacement writes.
func TestPendingBlocksInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.67.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := lab.AddHost(ctx, "h2", netip.MustParsePrefix("192.168.67.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	rss := []hoststate.Ruleset{withPolicies(t, ingressPolicy(80)), withPolicies(t, ingressPolicy(81)), withPolicies(t, ingressPolicy(82))}
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
	var fw *Firewall
	var nft *txLog
	var lists *listCounter
	start := func() {
		t.Helper()
		if err := h.Do(func() error {
			real, err := knftables.New(Family, hoststate.Table)
			nft = &txLog{Interface: real}
			fw = NewWith(nft, nil)
			lists = &listCounter{lister: fw.lister}
			fw.lister = lists
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// apply applies rss[i] (i < 0: rss[-1-i], replacing the table) and
	// checks how many transactions and listings it ran (-1: any), that it
	// did not replace the table, and what the table holds.
	apply := func(what string, i, wantTx, wantLists int, wantChanged bool) {
		t.Helper()
		replace := i < 0 // a replacement is expected: ruleset -1-i
		if replace {
			i = -1 - i
		}
		n, n0 := len(nft.txs), lists.n
		var changed bool
		if err := h.Do(func() error {
			var err error
			changed, err = fw.Apply(ctx, rss[i])
			return err
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		txs := nft.txs[n:]
		for _, tx := range txs {
			if strings.Contains(tx, "delete table") && !replace {
				t.Fatalf("%s: the table was replaced:\n%s", what, tx)
			}
		}
		if changed != wantChanged || wantTx >= 0 && len(txs) != wantTx || wantLists >= 0 && lists.n-n0 != wantLists {
			t.Fatalf("%s: changed=%v, %d transactions, %d listings; want %v, %d, %d:\n%s",
				what, changed, len(txs), lists.n-n0, wantChanged, wantTx, wantLists, strings.Join(txs, "---\n"))
		}
		var got map[string]string
		h.Do(func() error { got = blocks(t, l); return nil })
		if !maps.Equal(got, want[i]) {
			out, _ := h.Exec(ctx, "nft", "list", "table", "inet", hoststate.Table)
			t.Fatalf("%s: table differs from a fresh one with ruleset %d:\n%s", what, i, out)
		}
	}
	chain := onlyChanged(t, rss[0], rss[1])
	nftIn := func(args ...string) {
		t.Helper()
		if _, err := h.Exec(ctx, append([]string{"nft"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}

	start()
	apply("first apply (replacement)", -1, -1, -1, true)
	apply("policy change", 1, 1, 0, true)
	apply("another", 2, 1, 0, true)
	apply("resync, nothing committed since: list the pending chain", 2, 1, 1, false)
	apply("resync again: nothing to do", 2, 0, 0, false)

	apply("policy change", 0, 1, 0, true)
	nftIn("add", "table", "ip", "other")
	apply("resync after a commit elsewhere: list the table, write the pending chain again", 0, 2, 2, true)
	apply("resync: nothing to do", 0, 0, 0, false)

	for k, edit := range [][]string{
		{"flush", "chain", "inet", hoststate.Table, chain},
		{"add", "rule", "inet", hoststate.Table, chain, "accept"},
	} {
		apply(fmt.Sprintf("policy change %d", k), 1-k%2, 1, 0, true)
		nftIn(edit...)
		apply(fmt.Sprintf("resync after nft %s of the pending chain", strings.Join(edit, " ")), 1-k%2, -1, -1, true)
	}

	apply("policy change before a restart", 2, 1, 0, true)
	start()
	apply("a new agent adopts the table, writing the pending chain again", 2, 2, 2, true)
	apply("and finds it in sync", 2, 0, 0, false)

	apply("policy change before a restart and an edit", 1, 1, 0, true)
	nftIn("flush", "chain", "inet", hoststate.Table, chain)
	start()
	apply("a new agent repairs the edited pending chain", 1, 2, 2, true)
	apply("and finds it in sync", 1, 0, 0, false)
}
