package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/bench/workload"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// agentBenchSnapshot is the agent benchmark's store (cmd/romana-agent
// BenchmarkPolicyEnforcementAgents): network net1 (host 8 | tenant 8 |
// segment 2 bits), tenants t0..t(tenants-1) each with segment s0, n
// policies of bench/workload, and two hosts.
func agentBenchSnapshot(b testing.TB, n, tenants int) api.Snapshot {
	nw := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 2}}}
	p, err := plan.Parse(nw.Spec())
	if err != nil {
		b.Fatal(err)
	}
	snap := api.Snapshot{Networks: []api.Network{nw}}
	for i := uint64(1); i <= 2; i++ {
		c, _ := p.HostCIDR(plan.Loc{Host: i})
		snap.Hosts = append(snap.Hosts, api.Host{Name: fmt.Sprintf("h%d", i), IP: netip.AddrFrom4([4]byte{192, 168, 93, byte(i)}),
			Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: i}, CIDR: c}}})
	}
	for t := range tenants {
		name := fmt.Sprintf("t%d", t)
		snap.Tenants = append(snap.Tenants, api.Tenant{Name: name, ID: uint64(t + 1), Isolation: api.IsolationTenant})
		snap.Segments = append(snap.Segments, api.Segment{Tenant: name, Name: "s0", ID: 0})
	}
	snap.Policies = workload.Policies(n, tenants)
	return snap
}

// verdictRE matches the verdict at the end of a rule.
var verdictRE = regexp.MustCompile(`\s*(accept|drop|return|(goto|jump) \S+)$`)

// BenchmarkNftCommitCost measures what one nft run costs, CPU (user and
// system, from the process's rusage) per run, against the agent
// benchmark's table at 10,000 policies ("big", about 50,000 rules), at
// 100 policies ("small") and the small table plus 40,000 rules in chains
// no base chain reaches ("orphans"), each in its own test namespace. The
// runs, interleaved, each one nft -f of a file:
//
//   - add-chain: add one empty chain;
//   - target: flush and refill the target chain of tenant t1 (about 400
//     rules at 10,000 policies; its first piece when cut), as a policy
//     change does;
//   - copy-400, copy-40: flush and refill a chain no rule jumps to,
//     holding a copy of the first 400 or 40 rules of that chain;
//   - copy-400-nov, copy-40-nov: the same with every rule's verdict
//     taken out (a counter rule is left);
//   - payload-40, meta-40, accept-40: 40 rules matching a source
//     address (a payload match) with a counter, the same after "meta
//     l4proto tcp", the same with accept and no counter: which
//     expressions make the kernel validate the table's chain graph at
//     commit.
//
// It reports, per table and run kind, the mean user and system ms.
//
//	go test -run '^$' -bench NftCommitCost -benchtime 20x ./firewall
func BenchmarkNftCommitCost(b *testing.B) {
	simtest.Require(b, "nft")
	ctx := context.Background()
	lab := simtest.New(b)
	dir := b.TempDir()
	big := compute(b, agentBenchSnapshot(b, 10000, 100), "h1").Firewall
	small := compute(b, agentBenchSnapshot(b, 100, 100), "h1").Firewall
	// The target chain of tenant t1 (the chain holding policy p00001).
	var tc *hoststate.Chain
	for i, c := range big.Chains {
		if strings.HasPrefix(c.Name, hoststate.ChainPolicyIngress+".") && slices.ContainsFunc(c.Rules, func(r hoststate.Rule) bool { return r.Policy == "p00001" }) {
			tc = &big.Chains[i]
			break
		}
	}
	if tc == nil {
		b.Fatal("no chain holds policy p00001")
	}
	target := tc.Name
	// The copies take the policy rules of the target chain and of its
	// pieces (hoststate cuts target chains into pieces joined by goto).
	var policyRules []hoststate.Rule
	for _, c := range big.Chains {
		if c.Name == target || strings.HasPrefix(c.Name, target+".p") {
			for _, r := range c.Rules {
				if r.Policy != "" {
					policyRules = append(policyRules, r)
				}
			}
		}
	}
	b.Logf("big: %d rules, %d chains, %s: %d rules (%d of its policies in all); small: %d rules, %d chains", big.RuleCount(), len(big.Chains), target, len(tc.Rules), len(policyRules), small.RuleCount(), len(small.Chains))
	copyOf := func(name string, k int, noVerdict bool) hoststate.Chain {
		c := hoststate.Chain{Name: name}
		for _, r := range policyRules[:min(k, len(policyRules))] {
			if noVerdict {
				r.Expr = verdictRE.ReplaceAllString(r.Expr, "")
				if !strings.Contains(r.Expr, "counter") {
					r.Expr += " counter"
				}
			}
			c.Rules = append(c.Rules, r)
		}
		return c
	}
	refill := func(c hoststate.Chain) string {
		_, fake := NewFake(nil)
		tx := fake.NewTransaction()
		tx.Flush(chainOf(c))
		addRules(tx, c)
		return tx.String()
	}
	ops := map[string]string{
		"target":       refill(*tc),
		"target-alone": refill(copyOf(target, len(tc.Rules), false)),
		"copy-400":     refill(copyOf("bench-400", 400, false)),
		"copy-40":      refill(copyOf("bench-40", 40, false)),
		"copy-400-nov": refill(copyOf("bench-400n", 400, true)),
		"copy-40-nov":  refill(copyOf("bench-40n", 40, true)),
	}
	// 40 rules of one kind of expression each: which expressions make
	// the kernel validate the table at commit.
	exprs := func(name, format string) hoststate.Chain {
		c := hoststate.Chain{Name: name}
		for i := range 40 {
			c.Rules = append(c.Rules, hoststate.Rule{Expr: fmt.Sprintf(format, i)})
		}
		return c
	}
	ops["payload-40"] = refill(exprs("bench-40", "ip saddr 10.9.0.%d counter"))
	ops["meta-40"] = refill(exprs("bench-40", "meta l4proto tcp ip saddr 10.9.0.%d counter"))
	ops["accept-40"] = refill(exprs("bench-40", "ip saddr 10.9.0.%d accept"))
	kinds := []string{"add-chain", "target", "copy-400", "copy-40", "copy-400-nov", "copy-40-nov", "payload-40", "meta-40", "accept-40"}
	orphans := small
	orphans.Chains = slices.Clone(small.Chains)
	for i := range 100 {
		orphans.Chains = append(orphans.Chains, copyOf(fmt.Sprintf("orphan-%d", i), 400, false))
	}
	tables := []struct {
		name string
		rs   hoststate.Ruleset
	}{{"big", big}, {"small", small}, {"orphans", orphans}}
	hosts := map[string]*sim.Host{}
	for i, t := range tables {
		h, err := lab.AddHost(ctx, "c"+t.name, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, 94, byte(i + 1)}), 24))
		if err != nil {
			b.Fatal(err)
		}
		hosts[t.name] = h
		rs := t.rs
		// The chains the copies refill exist (empty) in every table;
		// the target chain is the real one in "big", a copy elsewhere.
		for _, n := range []string{"bench-400", "bench-40", "bench-400n", "bench-40n"} {
			rs.Chains = append(slices.Clone(rs.Chains), hoststate.Chain{Name: n})
		}
		if rs.Chain(target) == nil {
			rs.Chains = append(rs.Chains, hoststate.Chain{Name: target})
		}
		if err := h.Do(func() error {
			fw, err := New(nil)
			if err != nil {
				return err
			}
			_, err = fw.Apply(ctx, rs)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.Logf("table %s: %d rules", t.name, rs.RuleCount())
	}
	files := map[string]string{}
	for k, text := range ops {
		files[k] = filepath.Join(dir, k+".nft")
		if err := os.WriteFile(files[k], []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	type cpu struct{ user, sys time.Duration }
	got := map[string][]cpu{}
	run := 0
	for b.Loop() {
		run++
		for _, t := range tables {
			for _, k := range kinds {
				path := files[k]
				if k == "target" && t.name != "big" {
					path = files["target-alone"] // the goto to its next piece left out
				}
				if k == "add-chain" {
					path = filepath.Join(dir, fmt.Sprintf("add-%s-%d.nft", t.name, run))
					os.WriteFile(path, fmt.Appendf(nil, "add chain inet romana bench-empty-%d\n", run), 0o644)
				}
				if err := hosts[t.name].Do(func() error {
					cmd := exec.Command("nft", "-f", path)
					if out, err := cmd.CombinedOutput(); err != nil {
						return fmt.Errorf("%s in %s: %w: %s", k, t.name, err, out)
					}
					got[t.name+"/"+k] = append(got[t.name+"/"+k], cpu{cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime()})
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	var report strings.Builder
	for _, t := range tables {
		for _, k := range kinds {
			var u, s time.Duration
			for _, c := range got[t.name+"/"+k] {
				u += c.user
				s += c.sys
			}
			n := time.Duration(len(got[t.name+"/"+k]))
			fmt.Fprintf(&report, "\n%-8s %-13s user %6.2f ms  sys %6.2f ms  (%d runs)", t.name, k, ms(u/n), ms(s/n), n)
			b.ReportMetric(ms((u+s)/n), t.name+"/"+k+"-cpu-ms")
		}
	}
	fmt.Printf("CPU per nft run:%s\n", report.String()) // all of it: benchmark logs are cut
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
