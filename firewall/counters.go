package firewall

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
)

// PolicyCounters reads the counters of the policy rules (the policy-egress
// and policy-ingress chains and their target and rest chains), summed per
// policy, rule index and stage, from netlink dumps of the policy chains'
// rules (kernelRuleCounters) in the calling thread's network namespace. A
// missing table gives no counters.
//
// It used to run `nft -j list table inet romana`, which loads and prints
// the whole table: about 1.8 s of CPU at 50,000 rules, against tens of
// milliseconds for the dumps, which read only each rule's chain, comment
// and counter.
func (f *Firewall) PolicyCounters(ctx context.Context) ([]api.RuleCounter, error) {
	if f.gen == nil { // knftables' fake: nothing to dump, use its listing
		return f.nftCounters(ctx)
	}
	rules, err := kernelRuleCounters(hoststate.Table, func(c string) bool { return hoststate.PolicyChainStage(c) != "" })
	if err != nil {
		return nil, fmt.Errorf("read counters of table %s %s: %w", Family, hoststate.Table, err)
	}
	return sumCounters(rules), nil
}

// nftCounters reads the counters with `nft -j list table`.
func (f *Firewall) nftCounters(ctx context.Context) ([]api.RuleCounter, error) {
	cmd := exec.CommandContext(ctx, "nft", "-j", "list", "table", string(Family), hoststate.Table)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && strings.Contains(string(ee.Stderr), "No such file") {
			return nil, nil
		}
		return nil, fmt.Errorf("list table %s %s for counters: %w", Family, hoststate.Table, err)
	}
	return ParseCounters(out)
}

// countedRule is one rule's chain, comment and counter, as listed.
type countedRule struct {
	chain, comment string
	packets, bytes uint64
	hasCounter     bool
}

// sumCounters sums the counters of policy rules: rules in the policy-*
// chains (of a stage: hoststate.PolicyChainStage) whose comment is "policy
// NAME rule I" (the log rules, "... log", are skipped) and that hold a
// counter.
func sumCounters(rules []countedRule) []api.RuleCounter {
	type key struct {
		policy, stage string
		rule          int
	}
	sums := map[key]*api.RuleCounter{}
	for _, r := range rules {
		stage := hoststate.PolicyChainStage(r.chain)
		if stage == "" || !r.hasCounter {
			continue
		}
		f := strings.Fields(r.comment)
		if len(f) != 4 || f[0] != "policy" || f[2] != "rule" {
			continue
		}
		idx, err := strconv.Atoi(f[3])
		if err != nil {
			continue
		}
		k := key{f[1], stage, idx}
		c := sums[k]
		if c == nil {
			c = &api.RuleCounter{Policy: f[1], Rule: idx, Stage: stage}
			sums[k] = c
		}
		c.Packets += r.packets
		c.Bytes += r.bytes
	}
	out := make([]api.RuleCounter, 0, len(sums))
	for _, c := range sums {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b api.RuleCounter) int {
		return cmp.Or(strings.Compare(a.Policy, b.Policy), cmp.Compare(a.Rule, b.Rule), strings.Compare(a.Stage, b.Stage))
	})
	return out
}

// ParseCounters extracts policy rule counters from nft's JSON listing:
// rules in the policy-* chains (of a stage: hoststate.PolicyChainStage) whose comment is "policy NAME rule I" (the
// log rules, "... log", are skipped) and that hold a counter.
func ParseCounters(data []byte) ([]api.RuleCounter, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Chain   string            `json:"chain"`
				Comment string            `json:"comment"`
				Expr    []json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse nft json: %w", err)
	}
	var rules []countedRule
	for _, o := range doc.Nftables {
		r := o.Rule
		if r == nil || hoststate.PolicyChainStage(r.Chain) == "" {
			continue
		}
		for _, e := range r.Expr {
			var x struct {
				Counter *struct {
					Packets uint64 `json:"packets"`
					Bytes   uint64 `json:"bytes"`
				} `json:"counter"`
			}
			if json.Unmarshal(e, &x) != nil || x.Counter == nil {
				continue
			}
			rules = append(rules, countedRule{chain: r.Chain, comment: r.Comment, packets: x.Counter.Packets, bytes: x.Counter.Bytes, hasCounter: true})
		}
	}
	return sumCounters(rules), nil
}
