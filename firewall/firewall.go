// Package firewall is the host agent's nftables adapter: it keeps the table
// inet romana equal to a desired hoststate.Ruleset, replacing the whole
// table in one atomic transaction when it differs, and never touches any
// other table.
package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
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
	nft knftables.Interface
	log *slog.Logger
	// lastBase and lastPolicies are the stamps of the ruleset last applied
	// or verified ("" when the last Apply failed). When only the policy
	// stamp changed since, Apply rewrites the policy chains without first
	// listing the table (the listing costs more than the rewrite); a
	// resync, whose ruleset equals the last one, always checks.
	lastBase, lastPolicies string
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
	return &Firewall{nft: nft, log: log}
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
	base.Maps = rs.Maps
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
	out := hoststate.Ruleset{Maps: rs.Maps, Chains: slices.Clone(rs.Chains)}
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
// stamps, same rules per chain, same map elements; see inSync) it does
// nothing and returns false. When only the policy chains differ, it
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
		return true, nil
	}
	tx := f.replaceTx(want)
	if err := f.nft.Run(ctx, tx); err != nil {
		return false, fmt.Errorf("replace table %s %s (%d operations): %w", Family, hoststate.Table, tx.NumOperations(), err)
	}
	f.log.Info("nftables table replaced", "table", string(Family)+" "+hoststate.Table, "reason", why,
		"rules", want.RuleCount(), "elements", want.ElementCount(), "stamp", strings.TrimPrefix(Stamp(rs), stampPrefix))
	return true, nil
}

// replaceTx is the transaction replacing the whole table with want: add,
// delete, add the table, then every chain, map, rule and element.
func (f *Firewall) replaceTx(want hoststate.Ruleset) *knftables.Transaction {
	tx := f.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{})
	for _, c := range want.Chains {
		tx.Add(chainOf(c))
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
// wanted ones are created if missing, flushed and refilled; the policy-*
// chains hoststate may emit that are not wanted are added (a no-op if they
// exist), flushed and deleted, which needs no listing.
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
	for _, name := range []string{hoststate.ChainPolicyEgress, hoststate.ChainPolicyIngress} {
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
	f.log.Info("nftables policy chains rewritten", "table", string(Family)+" "+hoststate.Table, "reason", why,
		"policyRules", rules, "deletedChains", gone)
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

// inSync compares the live table with want; why says what differs, and
// baseOK that everything but the policy chains matches (so rewriting those
// suffices). It costs two nft listings (all rules as JSON, then each map's
// elements): rule counts and comments per chain (the stamps among them)
// and exact map elements. An extra chain or set without rules is not
// detected: nothing can reach it, and the next replacement removes it.
func (f *Firewall) inSync(ctx context.Context, want hoststate.Ruleset) (ok, baseOK bool, why string, err error) {
	rules, err := f.nft.ListRules(ctx, "")
	if knftables.IsNotFound(err) {
		return false, false, "table missing", nil
	}
	if err != nil {
		return false, false, "", err
	}
	byChain := map[string][]*knftables.Rule{}
	for _, r := range rules {
		byChain[r.Chain] = append(byChain[r.Chain], r)
	}
	wantChains := map[string]bool{}
	polWhy := ""
	for _, c := range want.Chains {
		wantChains[c.Name] = true
		diff := ""
		if len(byChain[c.Name]) != len(c.Rules) {
			diff = fmt.Sprintf("chain %s has %d rules, want %d", c.Name, len(byChain[c.Name]), len(c.Rules))
		} else {
			for i, r := range c.Rules {
				live := byChain[c.Name][i].Comment
				if (live == nil) != (r.Comment == "") || (live != nil && *live != r.Comment) {
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
	for name, rs := range byChain {
		if !wantChains[name] {
			if !hoststate.IsPolicyChain(name) {
				return false, false, fmt.Sprintf("unexpected chain %s", name), nil
			}
			if polWhy == "" {
				polWhy = fmt.Sprintf("unexpected chain %s with %d rules", name, len(rs))
			}
		}
	}
	for _, m := range want.Maps {
		els, err := f.nft.ListElements(ctx, "map", m.Name)
		if knftables.IsNotFound(err) {
			return false, false, "map " + m.Name + " missing", nil
		}
		if err != nil {
			return false, false, "", err
		}
		if !sameElements(els, m.Elements) {
			return false, false, "map " + m.Name + " elements differ", nil
		}
	}
	return polWhy == "", true, polWhy, nil
}

// sameElements compares map elements, keys as addresses (nft may print
// them differently from netip) and verdicts as text.
func sameElements(live []*knftables.Element, want []hoststate.Element) bool {
	if len(live) != len(want) {
		return false
	}
	w := map[netip.Addr]string{}
	for _, e := range want {
		a, err := netip.ParseAddr(e.Key)
		if err != nil {
			return false
		}
		w[a] = e.Verdict
	}
	for _, e := range live {
		if len(e.Key) != 1 || len(e.Value) != 1 {
			return false
		}
		a, err := netip.ParseAddr(e.Key[0])
		if err != nil || w[a] != e.Value[0] {
			return false
		}
		delete(w, a)
	}
	return len(w) == 0
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
