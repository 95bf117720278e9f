// Package firewall is the host agent's nftables adapter: it keeps the table
// inet romana equal to a desired hoststate.Ruleset, changing only what
// differs from the ruleset it last wrote, in one atomic transaction, and
// replacing the whole table at start-up and when it finds the table
// edited. It never touches any other table.
package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/hoststate"
)

// Family is the table's family; its name is hoststate.Table.
const Family = knftables.InetFamily

// stampPrefix starts Stamp's comment, kept in the table's sumChain with
// PolicyStamp's and the hash of the listing: together they tell a new
// agent that the live table is the one its predecessor wrote for the same
// ruleset.
const stampPrefix = "romana ruleset "

// Firewall applies rulesets through knftables. Apply is not safe for
// concurrent use.
type Firewall struct {
	nft    knftables.Interface
	lister lister
	log    *slog.Logger
	// last is what the table holds as far as the adapter knows: the
	// ruleset it last wrote or found in place, with the listing's hashes
	// right after. nil at start-up and after any failure, so that the next
	// Apply compares the whole listing.
	last *written
	// gen reads the kernel's ruleset generation (generation.go); nil on
	// knftables' fake.
	gen generation
}

// written is a ruleset as the adapter wrote it, and the hash of
// each block of the table's listing ("chain x", "map m", "set s", any
// other kind nft lists) right after the write, sumChain excluded.
//
// A delta updates the written of the last one in place (Apply forgets it
// first, so a failure leaves nothing half updated in f.last).
type written struct {
	rs hoststate.Ruleset
	// hashes are rs's own (desired), of which its stamps are made.
	hashes *hashIndex
	// sums are the listing's hashes of every block but the pending ones.
	sums *hashIndex
	// pending are the blocks written by deltas since they were last
	// listed (pending.go): the table holds what the adapter wrote there,
	// but nft has not listed them yet.
	pending map[string]bool
	// gen is the kernel's ruleset generation when the table was as sums
	// says, if genOK: nothing was committed between the listing and the
	// reading of gen but the adapter's own write of the sums.
	gen   uint32
	genOK bool
}

// New returns a Firewall using the nft binary in the calling process's
// network namespace. It fails if nft is missing or unusable.
func New(log *slog.Logger) (*Firewall, error) {
	nft, err := knftables.New(Family, hoststate.Table)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return NewWith(nft, log), nil
}

// NewFake returns a Firewall on knftables' stateful fake.
func NewFake(log *slog.Logger) (*Firewall, *knftables.Fake) {
	fake := knftables.NewFake(Family, hoststate.Table)
	return NewWith(fake, log), fake
}

// NewWith returns a Firewall on any knftables.Interface bound to inet romana.
func NewWith(nft knftables.Interface, log *slog.Logger) *Firewall {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Firewall{nft: nft, lister: newLister(nft, Family, hoststate.Table), log: log}
	if _, fake := nft.(interface{ Dump() string }); !fake {
		f.gen = kernelGeneration
	}
	return f
}

// Stamp returns the comment that marks a ruleset's base: its sets, maps
// and chains but the policy chains (hoststate.IsPolicyChain), which
// PolicyStamp marks, and anything else it holds.
func Stamp(rs hoststate.Ruleset) string {
	return stampsOf(desired(rs), rs)[0]
}

// PolicyStamp returns the comment that marks a ruleset's policy chains.
func PolicyStamp(rs hoststate.Ruleset) string {
	return stampsOf(desired(rs), rs)[1]
}

// policyStampPrefix starts PolicyStamp's comment.
const policyStampPrefix = "romana policies "

// stampsOf returns Stamp and PolicyStamp of rs, whose blocks hash to
// hashes (desired): the combinations hashes keeps (hashindex.go), so this
// costs nothing per block.
func stampsOf(hashes *hashIndex, rs hoststate.Ruleset) []string {
	extra := ""
	if r := rest(rs); r != nil {
		extra = fmt.Sprintf("%+v", *r)
	}
	return []string{stampPrefix + hashes.sumBase(extra), policyStampPrefix + hashes.sumPolicy()}
}

// desired returns the hash of each chain, set and map of rs, by the name
// of its block in a listing ("chain x", "set s", "map m"): what the
// stamps are made of. The hashes of a ruleset differing in a few blocks
// from one already hashed are cheaper to get with rehash.
func desired(rs hoststate.Ruleset) *hashIndex {
	out := newHashIndex(len(rs.Sets) + len(rs.Maps) + len(rs.Chains))
	for _, st := range rs.Sets {
		out.set("set "+st.Name, hashSet(st))
	}
	for _, m := range rs.Maps {
		out.set("map "+m.Name, hashMap(m))
	}
	for _, c := range rs.Chains {
		out.set("chain "+c.Name, hashChain(c))
	}
	return out
}

// rehash turns hashes, those of the ruleset d leads from, into those of
// the ruleset it leads to, in place: only the blocks d deletes or writes
// are hashed again.
func rehash(hashes *hashIndex, d *delta) {
	for _, b := range d.gone {
		hashes.del(b)
	}
	for _, st := range d.sets {
		hashes.set("set "+st.Name, hashSet(*st))
	}
	for _, m := range d.maps {
		hashes.set("map "+m.Name, hashMap(*m))
	}
	for _, c := range d.newChains {
		hashes.set("chain "+c.Name, hashChain(c))
	}
	for _, c := range d.changed {
		hashes.set("chain "+c.Name, hashChain(c))
	}
}

func hashChain(c hoststate.Chain) string {
	h := sha256.New()
	fields(h, c.Hook, c.Comment)
	for _, r := range c.Rules {
		fields(h, r.Expr, r.Comment)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func hashSet(st hoststate.Set) string {
	h := sha256.New()
	fields(h, st.KeyType, fmt.Sprint(st.Interval), st.Comment)
	fields(h, slices.Sorted(slices.Values(st.Elements))...)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func hashMap(m hoststate.Map) string {
	h := sha256.New()
	fields(h, m.KeyType, m.Comment)
	es := slices.Clone(m.Elements)
	slices.SortFunc(es, func(a, b hoststate.Element) int { return strings.Compare(a.Key, b.Key) })
	for _, e := range es {
		fields(h, e.Key, e.Verdict)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// fields writes each string followed by a NUL (no rule, comment or
// element holds one).
func fields(w io.Writer, ss ...string) {
	for _, s := range ss {
		io.WriteString(w, s)
		w.Write([]byte{0})
	}
}

// baseChains are the base chains a ruleset may hold, by name, with their
// hooks: the forward chain is required, the input chain optional (a
// ruleset written without it, by hand in a test, still applies).
var baseChains = map[string]string{hoststate.ChainForward: "forward", hoststate.ChainInput: "input"}

// validate rejects a ruleset without the forward base chain, or with a
// base chain other than baseChains' (on another hook, or under another
// name): the table's chains hook only where the agent knows they do.
func validate(rs hoststate.Ruleset) error {
	if fwd := rs.Chain(hoststate.ChainForward); fwd == nil || fwd.Hook == "" {
		return fmt.Errorf("ruleset has no base chain %q", hoststate.ChainForward)
	}
	for _, c := range rs.Chains {
		if want, ok := baseChains[c.Name]; (ok || c.Hook != "") && c.Hook != want {
			return fmt.Errorf("ruleset chain %q: hook %q, want %q", c.Name, c.Hook, want)
		}
	}
	return nil
}

// Apply makes the table equal to rs and reports whether it changed
// anything in it.
//
// When rs differs from the ruleset last written, Apply sends one
// transaction holding only the difference (diff: changed chains flushed
// and refilled, new ones added, gone ones deleted, set and map elements
// added and deleted one by one), then lists only the blocks it wrote to
// keep their hashes. It does not list the table first: an edit elsewhere
// is found at the next resync.
//
// When rs equals the last ruleset (the agent's resync) and the kernel's
// ruleset generation has not moved since the adapter's last write and
// listing (generation.go), nothing was committed since, by anyone: Apply
// returns at once. Otherwise, when rs equals the last ruleset or the
// adapter knows nothing yet (start-up, or after a failure), it lists the
// whole table and compares the hash of every block with what nft listed right
// after the adapter's own writes (listing.go), and the stamps and listing
// hash stored in the table with rs's: so any rule, chain, set or map
// element edited, added or deleted by hand is found, and a new agent
// adopts the table its predecessor wrote for the same ruleset. If they
// differ, or the difference cannot be sent as a delta (diff), or the
// delta's transaction fails, Apply replaces the table in one transaction
// (add, delete, add table, then every chain, set, map, rule and element).
//
// Either way packets see the old rules or the new ones, never a mix or an
// empty window, and conntrack state is untouched. Counters of rules in
// chains a delta leaves alone keep counting.
func (f *Firewall) Apply(ctx context.Context, rs hoststate.Ruleset) (changed bool, err error) {
	if err := validate(rs); err != nil {
		return false, err
	}
	defer f.afterApply(ctx, rs, &changed, &err) // flowtable devices (flowtable.go)
	last := f.last
	f.last = nil // set again on success
	var hashes *hashIndex
	if last != nil {
		d, why := diff(last.rs, rs)
		switch {
		case why != "":
			return f.replace(ctx, rs, desired(rs), why)
		case !d.empty():
			// last is forgotten: its hashes, sums and pending blocks
			// become the new ruleset's, in place.
			hashes = last.hashes
			rehash(hashes, &d)
			err := f.update(ctx, last, rs, hashes, &d)
			if err == nil {
				return true, nil
			}
			f.log.Warn("nftables incremental update failed; replacing the table", "table", string(Family)+" "+hoststate.Table, "err", err)
			return f.replace(ctx, rs, hashes, "incremental update failed")
		}
		hashes = last.hashes // the kernel holds the same: a resync
	} else {
		hashes = desired(rs)
	}
	stamps := stampsOf(hashes, rs)
	if last != nil && last.genOK {
		if g, ok := f.readGen(); ok && g == last.gen {
			if len(last.pending) == 0 {
				f.last = last
				return false, nil
			}
			// Nothing was committed since the adapter's own last write:
			// the pending blocks hold what it wrote; list them now.
			err := f.settle(ctx, last, settleAuto)
			if err == nil {
				return false, nil
			}
			f.log.Warn("nftables: listing the blocks written since the last check failed; listing the table", "table", string(Family)+" "+hoststate.Table, "err", err)
		}
	}
	g0, ok0 := f.readGen()
	live, err := f.lister.list(ctx)
	g1, ok1 := f.readGen()
	why := ""
	switch {
	case errors.Is(err, errTableMissing):
		why = "table missing"
	case err != nil:
		return false, fmt.Errorf("read table %s %s: %w", Family, hoststate.Table, err)
	default:
		sums := indexOf(live.blockSums())
		var pending map[string]bool
		if pending, why = pendingOf(live, sums.m, last); why == "" {
			if why = check(live, sums, last, stamps, pending); why == "" {
				why = flowtablesMissing(live, rs)
			}
		}
		if why == "" {
			for b := range pending {
				sums.del(b)
			}
			w := &written{rs: rs, hashes: hashes, sums: sums, pending: pending, gen: g1, genOK: ok0 && ok1 && g0 == g1}
			if len(pending) == 0 {
				f.last = w
				return false, nil
			}
			// The rest of the table is as written; the blocks written
			// since they were last listed cannot be told from an edit:
			// write them again, then list them.
			if err := f.settle(ctx, w, settleRewrite); err != nil {
				f.log.Warn("nftables: rewriting the blocks written since the last check failed; replacing the table", "table", string(Family)+" "+hoststate.Table, "err", err)
				why = "rewriting unlisted blocks failed"
			} else {
				return true, nil
			}
		}
	}
	return f.replace(ctx, rs, hashes, why)
}

// check compares a listing of the whole table, whose block hashes are
// sums, with what the adapter wrote: the hashes of last (nil when it knows
// nothing) and the comments stored in sumChain (rs's stamps, the hash of
// the listing of every block but the pending ones, and which blocks are
// pending). Pending blocks are not compared. It returns what differs, or
// "".
func check(live *listing, sums *hashIndex, last *written, stamps []string, pending map[string]bool) string {
	if last != nil {
		for _, b := range sortedKeys(last.sums.m) {
			s, ok := sums.get(b)
			switch {
			case !ok:
				return b + " missing"
			case s != last.sums.m[b]:
				return b + " edited since written (listing differs)"
			}
		}
		for _, b := range sortedKeys(sums.m) {
			if _, ok := last.sums.get(b); !ok && !pending[b] {
				return "unexpected " + b
			}
		}
	}
	stored := live.stored()
	if len(stored) < len(stamps) || !slices.Equal(stored[:len(stamps)], stamps) {
		return "table not written for this ruleset (stamps differ)"
	}
	if !slices.Equal(stored[len(stamps):], storedTail(sums, pending)) {
		return "table edited since written (listing differs)"
	}
	return ""
}

// listingComment is the comment of sumChain's rule holding the combined
// hash of the listing's block hashes, skip's excepted.
func listingComment(sums *hashIndex, skip map[string]bool) string {
	return sumPrefix + "table " + sums.sumWithout(skip)
}

// update sends d, the difference from last to rs, in one transaction with
// the new stamps, and marks the blocks it wrote pending: they are listed
// at the next check (pending.go). Only when more than maxPending blocks
// would be pending, or the kernel's generation is not known, does it list
// them at once.
//
// last, which Apply has forgotten, is updated in place: its sums and
// pending blocks become the new ruleset's.
func (f *Firewall) update(ctx context.Context, last *written, rs hoststate.Ruleset, hashes *hashIndex, d *delta) error {
	sums := last.sums
	pending := last.pending
	if pending == nil {
		pending = map[string]bool{}
	}
	for _, b := range d.gone {
		sums.del(b)
		delete(pending, b)
	}
	for _, b := range d.touched {
		sums.del(b)
		pending[b] = true
	}
	tx := f.nft.NewTransaction()
	d.fill(tx)
	ops := tx.NumOperations()
	storeTx(tx, append(stampsOf(hashes, rs), storedTail(sums, pending)...))
	g0, ok0 := f.readGen()
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("update table %s %s (%d operations): %w", Family, hoststate.Table, ops, err)
	}
	g1, ok1 := f.readGen()
	// The generation moved by exactly this transaction, and nothing was
	// committed between the last write (or check) and it.
	genOK := last.genOK && ok0 && ok1 && g0 == last.gen && g1 == g0+1
	w := &written{rs: rs, hashes: hashes, sums: sums, pending: pending, gen: g1, genOK: genOK}
	f.last = w
	f.log.Info("nftables table updated", "table", string(Family)+" "+hoststate.Table, "operations", ops,
		"chainsAdded", len(d.newChains), "chainsRewritten", len(d.changed), "chainsDeleted", len(d.goneChains),
		"rulesWritten", d.rules(), "elementsAdded", len(d.addElems), "elementsDeleted", len(d.delElems), "pending", len(pending))
	switch {
	case !ok1:
		f.last = nil // set again by settle
		return f.settle(ctx, w, settleList)
	case len(pending) > maxPending:
		f.last = nil
		return f.settle(ctx, w, settleAuto)
	}
	return nil
}

// replace replaces the table with rs in one transaction, then lists it
// and stores the stamps and the listing's hash.
func (f *Firewall) replace(ctx context.Context, rs hoststate.Ruleset, hashes *hashIndex, why string) (bool, error) {
	stamps := stampsOf(hashes, rs)
	tx := f.replaceTx(rs)
	if err := f.nft.Run(ctx, tx); err != nil {
		return false, fmt.Errorf("replace table %s %s (%d operations): %w", Family, hoststate.Table, tx.NumOperations(), err)
	}
	g0, ok0 := f.readGen()
	live, err := f.lister.list(ctx)
	if err != nil {
		return true, fmt.Errorf("list table %s %s after writing it: %w", Family, hoststate.Table, err)
	}
	sums := indexOf(live.blockSums())
	if err := f.store(ctx, stamps, sums); err != nil {
		return true, err
	}
	g1, ok1 := f.readGen()
	f.last = &written{rs: rs, hashes: hashes, sums: sums, pending: map[string]bool{}, gen: g1, genOK: ok0 && ok1 && g1 == g0+1}
	f.log.Info("nftables table replaced", "table", string(Family)+" "+hoststate.Table, "reason", why,
		"rules", rs.RuleCount(), "elements", rs.ElementCount(), "stamp", strings.TrimPrefix(stamps[0], stampPrefix))
	return true, nil
}

// readGen returns the kernel's ruleset generation, if known.
func (f *Firewall) readGen() (uint32, bool) {
	if f.gen == nil {
		return 0, false
	}
	g, err := f.gen()
	if err != nil {
		f.log.Debug("nftables generation unknown; resyncs list the table", "err", err)
		return 0, false
	}
	return g, true
}

// store writes the stamps and the hash of the listing's block hashes into
// sumChain.
func (f *Firewall) store(ctx context.Context, stamps []string, sums *hashIndex) error {
	tx := f.nft.NewTransaction()
	storeTx(tx, append(slices.Clone(stamps), storedTail(sums, nil)...))
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("store listing sums in table %s %s: %w", Family, hoststate.Table, err)
	}
	return nil
}

// replaceTx is the transaction replacing the whole table with want: add,
// delete, add the table, then every chain, set, map, rule and element.
func (f *Firewall) replaceTx(want hoststate.Ruleset) *knftables.Transaction {
	tx := f.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{})
	addFlowtables(tx, want)
	for _, c := range want.Chains {
		tx.Add(chainOf(c))
	}
	for _, st := range want.Sets {
		tx.Add(setOf(st))
	}
	for _, m := range want.Maps {
		tx.Add(mapOf(m))
	}
	for _, c := range want.Chains {
		addRules(tx, c)
	}
	for _, st := range want.Sets {
		for _, e := range st.Elements {
			tx.Add(&knftables.Element{Set: st.Name, Key: strings.Split(e, " . ")})
		}
	}
	for _, m := range want.Maps {
		for _, e := range m.Elements {
			tx.Add(&knftables.Element{Map: m.Name, Key: []string{e.Key}, Value: []string{e.Verdict}})
		}
	}
	return tx
}

// Check reports whether nft accepts the transaction replacing the table
// with rs (nft --check), without committing anything: the live table, its
// counters and the adapter's memory of the last applied ruleset are left
// as they are. The agent uses it to find which policies nft rejects.
func (f *Firewall) Check(ctx context.Context, rs hoststate.Ruleset) error {
	if err := validate(rs); err != nil {
		return err
	}
	tx := f.replaceTx(rs)
	if err := f.nft.Check(ctx, tx); err != nil {
		return fmt.Errorf("check table %s %s (%d operations): %w", Family, hoststate.Table, tx.NumOperations(), err)
	}
	return nil
}

func chainOf(c hoststate.Chain) *knftables.Chain {
	kc := &knftables.Chain{Name: c.Name}
	if c.Comment != "" {
		kc.Comment = knftables.PtrTo(c.Comment)
	}
	if c.Hook != "" {
		kc.Type = knftables.PtrTo(knftables.FilterType)
		kc.Hook = knftables.PtrTo(knftables.BaseChainHook(c.Hook))
		kc.Priority = knftables.PtrTo(knftables.FilterPriority)
		kc.Policy = knftables.PtrTo(knftables.AcceptPolicy)
	}
	return kc
}

func addRules(tx *knftables.Transaction, c hoststate.Chain) {
	for _, r := range c.Rules {
		kr := &knftables.Rule{Chain: c.Name, Rule: r.Expr}
		if r.Comment != "" {
			kr.Comment = knftables.PtrTo(r.Comment)
		}
		tx.Add(kr)
	}
}

// Cleanup deletes the table; a missing table is not an error.
func (f *Firewall) Cleanup(ctx context.Context) error {
	tx := f.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	f.last = nil
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("delete table %s %s: %w", Family, hoststate.Table, err)
	}
	f.log.Info("nftables table deleted", "table", string(Family)+" "+hoststate.Table)
	return nil
}
