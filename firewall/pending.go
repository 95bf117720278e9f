package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/hoststate"
)

// Pending blocks. A delta is one nft run: the transaction holds the
// change and the new stamps in sumChain, and nothing is listed after it.
// The chains, sets and maps it wrote are "pending": the kernel holds what
// the adapter wrote there, but their listing's hashes, which later checks
// compare, are not known yet. sumChain says which blocks are pending (by a
// hash of their names) and holds the hash of the listing of all the
// others. A check (every resync) settles them:
//
//   - if the kernel's ruleset generation is where it was right after the
//     adapter's own last write, nothing was committed since, by anyone:
//     the pending blocks still hold what the adapter wrote, and their
//     listing now is the listing right after the write. They are listed
//     and the sums stored (two nft runs per resync that follows changes,
//     however many changes there were).
//   - otherwise (something else committed: another table, a hand edit)
//     the whole table is listed and compared as before, pending blocks
//     excepted; if the rest is as written, the pending blocks, which
//     cannot be told from an edit, are written again (flushed and
//     refilled), then listed and the sums stored. Nothing a hand edit
//     changed survives: it is either found (the rest of the table) or
//     overwritten (pending blocks).
//
// A new agent adopting the table does the same with the pending blocks
// sumChain names. More than maxPending pending blocks are settled at
// once, after the delta, and so are all where the kernel's generation
// cannot be read (knftables' fake), as every delta was before.

// maxPending is how many blocks may stay pending; a delta leaving more
// lists them at once (maxBlockListings lists them one by one).
const maxPending = maxBlockListings

// pendingPrefix starts the comment of sumChain's rule naming one pending
// block: "<pendingPrefix><hash of the block's name>".
const pendingPrefix = sumPrefix + "pending "

// pendingMark is the comment naming pending block b.
func pendingMark(b string) string {
	h := sha256.Sum256([]byte(b))
	return pendingPrefix + hex.EncodeToString(h[:12])
}

// storedTail returns the comments sumChain holds after the stamps: the
// combined hash of the listing of every block but the pending ones (sums:
// the listing's block hashes, pending ones included or not), then one
// mark per pending block, in the order of their names.
func storedTail(sums *hashIndex, pending map[string]bool) []string {
	out := make([]string, 0, 1+len(pending))
	out = append(out, listingComment(sums, pending))
	for _, b := range sortedKeys(pending) {
		out = append(out, pendingMark(b))
	}
	return out
}

// pendingOf returns the pending blocks of the listed table: last's when
// the adapter knows them, else those sumChain names, found among the
// listing's blocks (sums); why is not empty when a block sumChain names is
// not in the listing.
func pendingOf(live *listing, sums map[string]string, last *written) (pending map[string]bool, why string) {
	if last != nil {
		return last.pending, ""
	}
	marks := map[string]bool{}
	for _, c := range live.stored() {
		if strings.HasPrefix(c, pendingPrefix) {
			marks[c] = true
		}
	}
	if len(marks) == 0 {
		return nil, ""
	}
	pending = map[string]bool{}
	for b := range sums {
		if m := pendingMark(b); marks[m] {
			pending[b] = true
			delete(marks, m)
		}
	}
	if len(marks) > 0 {
		return nil, fmt.Sprintf("%d blocks written since the last listing missing", len(marks))
	}
	return pending, ""
}

// How settle makes sure the pending blocks hold what the adapter wrote.
type settleMode int

const (
	// settleAuto lists them as they are if nothing was committed since
	// the adapter's last write (the generation has not moved), else
	// writes them again first.
	settleAuto settleMode = iota
	// settleRewrite writes them again first.
	settleRewrite
	// settleList lists them as they are: right after the adapter's own
	// write, where the kernel's generation is not known (knftables'
	// fake), as every delta did before pending blocks.
	settleList
)

// settle lists w's pending blocks and stores the sums of the whole table,
// none pending. Writing them again (mode) is one transaction: chains
// flushed and refilled, sets' and maps' elements flushed and added. On
// success it sets f.last.
func (f *Firewall) settle(ctx context.Context, w *written, mode settleMode) error {
	blocks := sortedKeys(w.pending)
	rewrite := mode == settleRewrite
	if mode == settleAuto {
		g, ok := f.readGen()
		rewrite = !w.genOK || !ok || g != w.gen
	}
	if rewrite {
		tx := f.nft.NewTransaction()
		for _, b := range blocks {
			if err := rewriteBlock(tx, w.rs, b); err != nil {
				return err
			}
		}
		if err := f.nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("write %d blocks of table %s %s again (%d operations): %w", len(blocks), Family, hoststate.Table, tx.NumOperations(), err)
		}
	}
	g0, ok0 := f.readGen()
	live, err := f.lister.listBlocks(ctx, blocks)
	if err != nil {
		return fmt.Errorf("list %d blocks of table %s %s written since the last listing: %w", len(blocks), Family, hoststate.Table, err)
	}
	sums := w.sums.clone()
	for _, b := range blocks {
		s, ok := live.blockSum(b)
		if !ok {
			return fmt.Errorf("list table %s %s: %s missing", Family, hoststate.Table, b)
		}
		sums.set(b, s)
	}
	if err := f.store(ctx, stampsOf(w.hashes, w.rs), sums); err != nil {
		return err
	}
	g1, ok1 := f.readGen()
	f.last = &written{rs: w.rs, hashes: w.hashes, sums: sums, pending: map[string]bool{}, gen: g1, genOK: ok0 && ok1 && g1 == g0+1}
	f.log.Info("nftables blocks listed", "table", string(Family)+" "+hoststate.Table, "blocks", len(blocks), "rewritten", rewrite)
	return nil
}

// rewriteBlock adds to tx what writes block b of rs again: a chain
// flushed and refilled, a set's or map's elements flushed and added.
func rewriteBlock(tx *knftables.Transaction, rs hoststate.Ruleset, b string) error {
	kind, name, _ := strings.Cut(b, " ")
	switch kind {
	case "chain":
		if c := rs.Chain(name); c != nil {
			tx.Flush(&knftables.Chain{Name: name})
			addRules(tx, *c)
			return nil
		}
	case "set":
		for _, st := range rs.Sets {
			if st.Name == name {
				tx.Flush(&knftables.Set{Name: name})
				for _, e := range st.Elements {
					tx.Add(setElement(name, e))
				}
				return nil
			}
		}
	case "map":
		for _, m := range rs.Maps {
			if m.Name == name {
				tx.Flush(&knftables.Map{Name: name})
				for _, e := range m.Elements {
					tx.Add(mapElement(name, e))
				}
				return nil
			}
		}
	}
	return fmt.Errorf("write %s of table %s %s again: not in the ruleset", b, Family, hoststate.Table)
}
