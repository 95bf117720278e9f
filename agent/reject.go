package agent

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/romana/romana/hoststate"
)

// Policies nft rejects. The compiler skips policies it cannot compile, but
// nft may still reject a compiled rule (a kernel without an expression, a
// limit the compiler does not know). One such policy must not stall the
// others: when applying a ruleset fails and it has policy rules, the agent
// asks nft --check (nothing committed) which policies it rejects, applies
// the ruleset without them in one transaction and reports each as a
// problem. A rejected policy compiles to nothing on this host, as a policy
// naming an absent tenant does. It is retried whenever the ruleset
// changes; a resync of an unchanged ruleset reuses the verdict.

// findRejected returns the policies among names that check rejects, with
// the error of checking each alone. check(only) tests the ruleset keeping
// the rules of the policies in only and no other policy's. It bisects:
// a set check accepts is clean, a rejected one is split in halves, so k
// rejected policies among n cost about 2·k·log2(n/k) checks, and a clean
// set one. Policies are assumed to be rejected independently (each
// compiles to rules of its own, sharing no sets).
func findRejected(names []string, check func(only []string) error) map[string]error {
	bad := map[string]error{}
	var walk func(s []string)
	walk = func(s []string) {
		if len(s) == 0 {
			return
		}
		err := check(s)
		switch {
		case err == nil:
		case len(s) == 1:
			bad[s[0]] = err
		default:
			walk(s[:len(s)/2])
			walk(s[len(s)/2:])
		}
	}
	walk(names)
	return bad
}

// applyFirewall applies rs without the policies in known (the ones nft
// rejected in this same ruleset before; nil after a change, so each is
// retried). If that fails and rs has policy rules, it finds the policies
// nft rejects (findRejected over fw.Check) and applies rs without them.
// It returns the policies left out, each with nft's error. When nothing
// fails this is the one Apply call of the normal path.
func applyFirewall(ctx context.Context, fw Firewall, rs hoststate.Ruleset, known map[string]error) (map[string]error, error) {
	want := rs
	if len(known) > 0 {
		want = rs.WithoutPolicies(func(p string) bool { _, ok := known[p]; return ok })
	}
	_, err := fw.Apply(ctx, want)
	if err == nil {
		return known, nil
	}
	names := rs.Policies()
	if len(names) == 0 {
		return nil, err
	}
	only := func(keep []string) error {
		set := map[string]bool{}
		for _, p := range keep {
			set[p] = true
		}
		return fw.Check(ctx, rs.WithoutPolicies(func(p string) bool { return !set[p] }))
	}
	if only(nil) != nil {
		return nil, err // the ruleset fails without any policy: not a policy's fault
	}
	bad := findRejected(names, only)
	if len(bad) == 0 {
		return nil, err // nft accepts every policy: the failure is elsewhere
	}
	if _, err := fw.Apply(ctx, rs.WithoutPolicies(func(p string) bool { _, ok := bad[p]; return ok })); err != nil {
		return nil, fmt.Errorf("apply ruleset without the %d policies nft rejects: %w", len(bad), err)
	}
	return bad, nil
}

// rejectedProblems renders rejected policies as problems, sorted, with
// nft's error on one line.
func rejectedProblems(rejected map[string]error) []string {
	var out []string
	for name, err := range rejected {
		out = append(out, fmt.Sprintf("policy %s: rejected by nftables, not enforced on this host: %s", name, oneLine(err.Error())))
	}
	sort.Strings(out)
	return out
}

// oneLine joins an nft error's lines, dropping the caret lines that point
// into the previous one.
func oneLine(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Trim(l, " \t^~") == "" {
			continue
		}
		keep = append(keep, strings.TrimSpace(l))
	}
	return strings.Join(keep, " | ")
}
