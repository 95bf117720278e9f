// Package firewall is the host agent's nftables adapter: it keeps the table
// inet romana equal to a desired hoststate.Ruleset, replacing the whole
// table in one atomic transaction when it differs, and never touches any
// other table.
package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/hoststate"
)

// Family is the table's family; its name is hoststate.Table.
const Family = knftables.InetFamily

// stampPrefix starts the comment of the forward chain's "jump policies"
// rule, which carries a hash of the whole desired ruleset: the cheap way to
// tell that the live table is the one we last wrote.
const stampPrefix = "romana ruleset "

// Firewall applies rulesets through knftables.
type Firewall struct {
	nft    knftables.Interface
	lister lister
	log    *slog.Logger
	// lastBase and lastPolicies are the stamps of the ruleset last applied
	// or verified ("" when the last Apply failed). When only the policy
	// stamp changed since, Apply rewrites the policy chains without first
	// checking the table (it lists it once after, to store the listing's
	// sums); a resync, whose ruleset equals the last one, always checks.
	lastBase, lastPolicies string
	// policyChains are policy chains the table may hold: those of the
	// last ruleset written and those the last listing showed. A policy
	// rewrite deletes those no longer wanted.
	policyChains map[string]bool
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
	return &Firewall{nft: nft, lister: newLister(nft, Family, hoststate.Table), log: log}
}

// Stamp returns the comment that marks a ruleset's base: everything but
// the rules of the policy chains (hoststate.IsPolicyChain), which
// PolicyStamp marks.
func Stamp(rs hoststate.Ruleset) string {
	base, _ := split(rs)
	sum := sha256.Sum256([]byte(base.String()))
	return stampPrefix + hex.EncodeToString(sum[:8])
}

// PolicyStamp returns the comment that marks a ruleset's policy chains.
func PolicyStamp(rs hoststate.Ruleset) string {
	_, pol := split(rs)
	var b strings.Builder
	for _, c := range pol {
		fmt.Fprintf(&b, "%s %q\n", c.Name, c.Comment)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t%s %q\n", r.Expr, r.Comment)
		}
	}
	sum := sha256.Sum256([]byte(b.String()))
	return policyStampPrefix + hex.EncodeToString(sum[:8])
}

// policyStampPrefix starts the comment of the policies chain's last rule
// (hoststate.PoliciesEnd).
const policyStampPrefix = "romana policies "

// split returns the ruleset without the policy chains' rules (and without
// the policy-* chains), and the policy chains.
func split(rs hoststate.Ruleset) (base hoststate.Ruleset, pol []hoststate.Chain) {
	base.Sets, base.Maps = rs.Sets, rs.Maps
	for _, c := range rs.Chains {
		if !hoststate.IsPolicyChain(c.Name) {
			base.Chains = append(base.Chains, c)
			continue
		}
		pol = append(pol, c)
		if c.Name == hoststate.ChainPolicies {
			c.Rules = nil
			base.Chains = append(base.Chains, c)
		}
	}
	return base, pol
}

// stamped returns a copy of rs whose forward chain's JumpPolicies rule
// carries Stamp(rs) as its comment and whose policies chain's last rule,
// when it is hoststate.PoliciesEnd, carries PolicyStamp(rs).
func stamped(rs hoststate.Ruleset) (hoststate.Ruleset, error) {
	stamp := Stamp(rs)
	out := hoststate.Ruleset{Sets: rs.Sets, Maps: rs.Maps, Chains: slices.Clone(rs.Chains)}
	fwd := out.Chain(hoststate.ChainForward)
	if fwd == nil || fwd.Hook == "" {
		return out, fmt.Errorf("ruleset has no base chain %q", hoststate.ChainForward)
	}
	fwd.Rules = slices.Clone(fwd.Rules)
	i := slices.IndexFunc(fwd.Rules, func(r hoststate.Rule) bool { return r.Expr == hoststate.JumpPolicies })
	if i < 0 {
		return out, fmt.Errorf("ruleset's chain %q has no rule %q", hoststate.ChainForward, hoststate.JumpPolicies)
	}
	fwd.Rules[i].Comment = stamp
	if pc := out.Chain(hoststate.ChainPolicies); pc != nil && len(pc.Rules) > 0 && pc.Rules[len(pc.Rules)-1].Expr == hoststate.PoliciesEnd {
		pc.Rules = slices.Clone(pc.Rules)
		pc.Rules[len(pc.Rules)-1].Comment = PolicyStamp(rs)
	}
	return out, nil
}

// Apply makes the table equal to rs. When the live table already is (same
// stamps, same rules per chain, and a listing unchanged since our last
// write; see inSync) it does nothing and returns false. When only the policy chains differ, it
// rewrites just those in one transaction (flush and refill the policies
// and policy-* chains, delete policy chains no longer wanted): the maps,
// the forward chain and the isolation chains stay as they are. Otherwise
// it replaces the table in one transaction (add, delete, add table, then
// every chain, map, rule and element). Either way packets see the old
// rules or the new ones, never a mix or an empty window, and conntrack
// state is untouched.
func (f *Firewall) Apply(ctx context.Context, rs hoststate.Ruleset) (changed bool, err error) {
	want, err := stamped(rs)
	if err != nil {
		return false, err
	}
	base, pol := Stamp(rs), PolicyStamp(rs)
	if f.lastBase == base && f.lastPolicies != "" && f.lastPolicies != pol {
		if err := f.applyPolicies(ctx, want, "policies changed"); err == nil {
			if err := f.writeSums(ctx, want); err != nil {
				f.lastBase, f.lastPolicies = "", ""
				return true, err
			}
			f.lastPolicies = pol
			return true, nil
		}
		// Fall back to the checked path (the table may have drifted).
	}
	f.lastBase, f.lastPolicies = "", ""
	defer func() {
		if err == nil {
			f.lastBase, f.lastPolicies = base, pol
		}
	}()
	ok, baseOK, why, err := f.inSync(ctx, want)
	if err != nil {
		return false, fmt.Errorf("read table %s %s: %w", Family, hoststate.Table, err)
	}
	if ok {
		return false, nil
	}
	if baseOK {
		if err := f.applyPolicies(ctx, want, why); err != nil {
			return false, err
		}
		return true, f.writeSums(ctx, want)
	}
	tx := f.replaceTx(want)
	if err := f.nft.Run(ctx, tx); err != nil {
		return false, fmt.Errorf("replace table %s %s (%d operations): %w", Family, hoststate.Table, tx.NumOperations(), err)
	}
	f.policyChains = policyChainNames(want)
	if err := f.writeSums(ctx, want); err != nil {
		return true, err
	}
	f.log.Info("nftables table replaced", "table", string(Family)+" "+hoststate.Table, "reason", why,
		"rules", want.RuleCount(), "elements", want.ElementCount(), "stamp", strings.TrimPrefix(Stamp(rs), stampPrefix))
	return true, nil
}

// replaceTx is the transaction replacing the whole table with want: add,
// delete, add the table, then every chain, set, map, rule and element.
func (f *Firewall) replaceTx(want hoststate.Ruleset) *knftables.Transaction {
	tx := f.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{})
	for _, c := range want.Chains {
		tx.Add(chainOf(c))
	}
	for _, st := range want.Sets {
		ks := &knftables.Set{Name: st.Name, Type: st.KeyType}
		if st.Interval {
			ks.Flags = []knftables.SetFlag{knftables.IntervalFlag}
		}
		if st.Comment != "" {
			ks.Comment = knftables.PtrTo(st.Comment)
		}
		tx.Add(ks)
	}
	for _, m := range want.Maps {
		km := &knftables.Map{Name: m.Name, Type: m.KeyType + " : verdict"}
		if m.Comment != "" {
			km.Comment = knftables.PtrTo(m.Comment)
		}
		tx.Add(km)
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
	want, err := stamped(rs)
	if err != nil {
		return err
	}
	tx := f.replaceTx(want)
	if err := f.nft.Check(ctx, tx); err != nil {
		return fmt.Errorf("check table %s %s (%d operations): %w", Family, hoststate.Table, tx.NumOperations(), err)
	}
	return nil
}

// applyPolicies rewrites only the policy chains, in one transaction: the
// wanted ones are created if missing, flushed and refilled; the policy
// chains not wanted among the stages' entry chains and f.policyChains
// (those last written or listed) are added (a no-op if they exist),
// flushed and deleted, which needs no listing.
func (f *Firewall) applyPolicies(ctx context.Context, want hoststate.Ruleset, why string) error {
	tx := f.nft.NewTransaction()
	wanted := map[string]bool{}
	rules := 0
	for _, c := range want.Chains {
		if hoststate.IsPolicyChain(c.Name) {
			wanted[c.Name] = true
			tx.Add(chainOf(c))
			tx.Flush(&knftables.Chain{Name: c.Name})
			rules += len(c.Rules)
		}
	}
	var gone []string
	maybe := []string{hoststate.ChainPolicyEgress, hoststate.ChainPolicyIngress}
	for _, name := range sortedKeys(f.policyChains) {
		if name != hoststate.ChainPolicyEgress && name != hoststate.ChainPolicyIngress {
			maybe = append(maybe, name)
		}
	}
	for _, name := range maybe {
		if !wanted[name] {
			tx.Add(&knftables.Chain{Name: name})
			tx.Flush(&knftables.Chain{Name: name})
			gone = append(gone, name)
		}
	}
	for _, name := range gone {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, c := range want.Chains {
		if hoststate.IsPolicyChain(c.Name) {
			addRules(tx, c)
		}
	}
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("rewrite policy chains of table %s %s (%d operations): %w", Family, hoststate.Table, tx.NumOperations(), err)
	}
	f.policyChains = wanted
	f.log.Info("nftables policy chains rewritten", "table", string(Family)+" "+hoststate.Table, "reason", why,
		"policyRules", rules, "deletedChains", gone)
	return nil
}

// policyChainNames returns the names of rs's policy chains.
func policyChainNames(rs hoststate.Ruleset) map[string]bool {
	out := map[string]bool{}
	for _, c := range rs.Chains {
		if hoststate.IsPolicyChain(c.Name) {
			out[c.Name] = true
		}
	}
	return out
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

// inSync compares the live table with want, from one nft listing; why
// says what differs, and baseOK that everything but the policy chains
// matches (so rewriting those suffices). The live table matches when each
// wanted chain has the wanted number of rules with the wanted comments
// (the stamps among them: the table holds the desired ruleset), every
// wanted map exists, no other chain with rules exists, and the listing of
// the base and of the policy chains hashes to what it did right after our
// last write (listing.go: a rule edited in place, a chain's policy or a
// map element changed). An extra chain or set without rules is not
// detected: nothing can reach it, and the next replacement removes it.
func (f *Firewall) inSync(ctx context.Context, want hoststate.Ruleset) (ok, baseOK bool, why string, err error) {
	live, err := f.lister.list(ctx)
	if errors.Is(err, errTableMissing) {
		return false, false, "table missing", nil
	}
	if err != nil {
		return false, false, "", err
	}
	for name := range live.chains {
		if hoststate.IsPolicyChain(name) {
			if f.policyChains == nil {
				f.policyChains = map[string]bool{}
			}
			f.policyChains[name] = true
		}
	}
	wantChains := map[string]bool{sumChain: true}
	polWhy := ""
	for _, c := range want.Chains {
		wantChains[c.Name] = true
		diff := ""
		lc := live.chains[c.Name]
		switch {
		case lc == nil:
			diff = fmt.Sprintf("chain %s missing", c.Name)
		case len(lc.rules) != len(c.Rules):
			diff = fmt.Sprintf("chain %s has %d rules, want %d", c.Name, len(lc.rules), len(c.Rules))
		default:
			for i, r := range c.Rules {
				l := lc.rules[i]
				if l.hasComment != (r.Comment != "") || l.comment != r.Comment {
					diff = fmt.Sprintf("chain %s rule %d differs", c.Name, i)
					break
				}
			}
		}
		switch {
		case diff == "":
		case hoststate.IsPolicyChain(c.Name):
			if polWhy == "" {
				polWhy = diff
			}
		default:
			return false, false, diff, nil
		}
	}
	for name, lc := range live.chains {
		if wantChains[name] || len(lc.rules) == 0 {
			continue
		}
		if !hoststate.IsPolicyChain(name) {
			return false, false, fmt.Sprintf("unexpected chain %s", name), nil
		}
		if polWhy == "" {
			polWhy = fmt.Sprintf("unexpected chain %s with %d rules", name, len(lc.rules))
		}
	}
	for _, st := range want.Sets {
		if _, ok := live.others["set "+st.Name]; !ok {
			return false, false, "set " + st.Name + " missing", nil
		}
	}
	for _, m := range want.Maps {
		if _, ok := live.others["map "+m.Name]; !ok {
			return false, false, "map " + m.Name + " missing", nil
		}
	}
	base, pol := parts(want)
	sums := live.sums()
	if live.sum(base) != sums["base"] {
		return false, false, "base chains or maps edited since written (listing differs)", nil
	}
	if polWhy == "" && live.sum(pol) != sums["policies"] {
		polWhy = "policy chains edited since written (listing differs)"
	}
	return polWhy == "", true, polWhy, nil
}

// parts returns the blocks of the listing whose hash is stored as "base"
// (sets, maps and chains other than the policy chains) and as "policies".
func parts(want hoststate.Ruleset) (base, pol []string) {
	for _, st := range want.Sets {
		base = append(base, "set "+st.Name)
	}
	for _, m := range want.Maps {
		base = append(base, "map "+m.Name)
	}
	for _, c := range want.Chains {
		if hoststate.IsPolicyChain(c.Name) {
			pol = append(pol, "chain "+c.Name)
		} else {
			base = append(base, "chain "+c.Name)
		}
	}
	return base, pol
}

// writeSums lists the table we just wrote and stores the hashes of its
// base and policy parts in it (listing.go).
func (f *Firewall) writeSums(ctx context.Context, want hoststate.Ruleset) error {
	live, err := f.lister.list(ctx)
	if err != nil {
		return fmt.Errorf("list table %s %s after writing it: %w", Family, hoststate.Table, err)
	}
	base, pol := parts(want)
	tx := f.nft.NewTransaction()
	sumsTx(tx, map[string]string{"base": live.sum(base), "policies": live.sum(pol)})
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("store listing sums in table %s %s: %w", Family, hoststate.Table, err)
	}
	return nil
}

// Cleanup deletes the table; a missing table is not an error.
func (f *Firewall) Cleanup(ctx context.Context) error {
	tx := f.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := f.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("delete table %s %s: %w", Family, hoststate.Table, err)
	}
	f.log.Info("nftables table deleted", "table", string(Family)+" "+hoststate.Table)
	return nil
}
