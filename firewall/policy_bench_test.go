package firewall

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim/simtest"
)

// benchPolicies: policy i applies to tenant t(i%tenants), ingress (every
// fifth also egress), deny tcp 22 from a /16 with a hole, allow tcp 80, 443
// and 8000-8080 from tenant t(i+1). None matches the benchmark's flow
// (tenant t42 to itself on port 5201), so its first packet passes every
// policy rule of both hosts before isolation accepts it.
func benchPolicies(n, tenants int, salt string) []api.Policy {
	ps := make([]api.Policy, n)
	for i := range ps {
		dir := []string{"ingress"}
		if i%5 == 0 {
			dir = append(dir, "egress")
		}
		ps[i] = api.Policy{Name: fmt.Sprintf("p%05d%s", i, salt), Priority: 1 + i%100, Direction: dir,
			AppliedTo: []api.Selector{{Tenant: fmt.Sprintf("t%d", i%tenants)}},
			Rules: []api.Rule{
				{Action: "deny", Peers: []api.Peer{{CIDR: fmt.Sprintf("172.%d.0.0/16", 16+i%16), Except: []string{fmt.Sprintf("172.%d.1.0/24", 16+i%16)}}}, Protocol: "tcp", Ports: []uint16{22}},
				{Peers: []api.Peer{{Tenant: fmt.Sprintf("t%d", (i+1)%tenants)}}, Protocol: "tcp", Ports: []uint16{80, 443}, PortRanges: []string{"8000-8080"}},
			}}
	}
	return ps
}

// policyLab: two hosts with 1000 tenants (host 8 | tenant 10 | segment 2).
func policyLab(b testing.TB, tenants int) (api.Snapshot, *plan.Plan) {
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 10}, {Name: "segment", Bits: 2}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		b.Fatal(err)
	}
	snap := api.Snapshot{Networks: []api.Network{n}}
	for i := uint64(1); i <= 2; i++ {
		ip := netip.AddrFrom4([4]byte{192, 168, 91, byte(i)})
		c, _ := p.HostCIDR(plan.Loc{Host: i})
		snap.Hosts = append(snap.Hosts, api.Host{Name: fmt.Sprintf("h%d", i), IP: ip, Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: i}, CIDR: c}}})
	}
	for t := 0; t < tenants; t++ {
		iso := []string{api.IsolationTenant, api.IsolationSegment, api.IsolationNone}[t%3]
		name := fmt.Sprintf("t%d", t)
		snap.Tenants = append(snap.Tenants, api.Tenant{Name: name, ID: uint64(t), Isolation: iso})
		snap.Segments = append(snap.Segments, api.Segment{Tenant: name, Name: "s0", ID: 0}, api.Segment{Tenant: name, Name: "s1", ID: 1})
	}
	return snap, p
}

func compute(b testing.TB, snap api.Snapshot, host string) hoststate.State {
	st, err := hoststate.Compute(snap, host, hoststate.Options{})
	if err != nil || len(st.Problems) > 0 {
		b.Fatal(err, st.Problems)
	}
	return st
}

// BenchmarkPolicyThroughput measures iperf3 TCP throughput between
// endpoints on two simulated hosts under three rulesets, alternated within
// one run (A-B-C-C-B-A per iteration): no table at all; isolation for 1000
// tenants and no policies; the same plus 1000 or 10,000 policies (about
// 4,800 or 48,000 policy rules per host, dispatched per tenant: the
// benchmark's flow meets those of its own tenant). It reports the medians
// of throughput and of new TCP connections per second, and the ratios of
// the policy condition to the two others. -benchtime 2x gives 4 runs of
// 3 s each per condition.
func BenchmarkPolicyThroughput(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) { policyThroughput(b, n) })
	}
}

func policyThroughput(b *testing.B, n int) {
	simtest.Require(b, "nft", "iperf3")
	ctx := context.Background()
	lab := simtest.New(b)
	snap, p := policyLab(b, 1000)
	hosts, eps := t42Hosts(b, ctx, lab, p, &snap)
	withPol := snap
	withPol.Policies = benchPolicies(n, 1000, "")
	fws := map[string]*Firewall{}
	rulesets := map[string]map[string]hoststate.Ruleset{"isolation": {}, "policies": {}}
	policyRules := 0
	for h, host := range hosts {
		st := compute(b, snap, h)
		rulesets["isolation"][h] = st.Firewall
		pst := compute(b, withPol, h)
		rulesets["policies"][h] = pst.Firewall
		policyRules = pst.Firewall.RuleCount() - st.Firewall.RuleCount()
		if err := host.Do(func() (err error) {
			fws[h], err = programHost(ctx, st)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	set := func(cond string) {
		for h, host := range hosts {
			if err := host.Do(func() error {
				if cond == "none" {
					return fws[h].Cleanup(ctx)
				}
				_, err := fws[h].Apply(ctx, rulesets[cond][h])
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	dst := eps["h2"]
	iperfServer(b, dst)
	set("policies")
	if out, err := eps["h1"].Command(ctx, "ping", "-c1", "-W1", dst.IP.String()).CombinedOutput(); err != nil {
		b.Fatalf("same-tenant ping with policies: %v\n%s", err, out)
	}
	// A TCP listener for the connection rate: every connect's SYN meets
	// the policy rules on both hosts.
	var ln net.Listener
	if err := dst.Do(func() (err error) { ln, err = net.Listen("tcp", dst.IP.String()+":7070"); return err }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// Each connection is closed with a reset (linger 0), so that it leaves
	// no TIME_WAIT behind: closed normally, about 14,000 of them (60 s
	// each) fill the even half of the ephemeral port range, which connect()
	// prefers, and from then on every connect searches the whole range,
	// about 2 ms each: the rate fell from 10,000-20,000/s to about 480/s
	// in every condition, the one without a table included, for a minute
	// after any run that had made 14,000 connections. Each run also notes
	// its slowest connect and how many took 200 ms or more (a SYN
	// retransmission would take 1 s; CPU starvation spreads over many).
	var dialNotes []string
	connects := func() float64 {
		n, slow := 0, 0
		var slowest time.Duration
		start := time.Now()
		if err := eps["h1"].Do(func() error {
			for time.Since(start) < time.Second {
				t0 := time.Now()
				c, err := net.DialTimeout("tcp", dst.IP.String()+":7070", 3*time.Second)
				if err != nil {
					return err
				}
				d := time.Since(t0)
				slowest = max(slowest, d)
				if d >= 200*time.Millisecond {
					slow++
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				n++
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		rate := float64(n) / time.Since(start).Seconds()
		dialNotes = append(dialNotes, fmt.Sprintf("%.0f/s (slowest %v, %d >= 200ms)", rate, slowest.Round(time.Millisecond), slow))
		return rate
	}
	res := map[string][]float64{}
	cps := map[string][]float64{}
	for b.Loop() {
		for _, cond := range []string{"none", "isolation", "policies", "policies", "isolation", "none"} {
			set(cond)
			res[cond] = append(res[cond], iperf(b, ctx, eps["h1"], dst))
			cps[cond] = append(cps[cond], connects())
		}
	}
	b.Logf("Gbit/s: %v", res)
	b.Logf("connects/s: %v", cps)
	b.Logf("connect runs in order: %v", dialNotes)
	b.ReportMetric(median(cps["isolation"]), "conn/s-nopolicies")
	b.ReportMetric(median(cps["policies"]), "conn/s-policies")
	b.ReportMetric(median(cps["policies"])/median(cps["isolation"]), "conn-ratio")
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(policyRules), "policy-rules")
	b.ReportMetric(median(res["none"]), "Gbit/s-notable")
	b.ReportMetric(median(res["isolation"]), "Gbit/s-nopolicies")
	b.ReportMetric(median(res["policies"]), "Gbit/s-policies")
	b.ReportMetric(median(res["policies"])/median(res["isolation"]), "ratio-to-nopolicies")
	b.ReportMetric(median(res["policies"])/median(res["none"]), "ratio-to-notable")
}

// BenchmarkPolicyRewrite measures, against the kernel, one policy change
// with N policies loaded (isolation for 1000 tenants stays), alternating
// between two policy sets that differ in one policy's port. Two ways are
// alternated within one run, A-B-B-A per iteration: "delta" is Apply as
// the agent runs it (one transaction with what changed, then a listing of
// the chains it wrote); "replace" is Apply with no memory of its last write
// (a listing of the whole table, a replacement, a listing again), what
// start-up and drift cost. Per change it records when the transaction
// holding the change was committed ("enforced": packets meet the new rules
// from then on) and when Apply returned, and reports p50 and p99 of each.
// -benchtime 10x gives 20 changes per way.
//
// Layout "one" is hoststate's: every ingress policy rule in one chain, so
// a change rewrites and relists that chain. Layout "split" moves the
// policy rules into 1000 chains by policy (splitPolicyChains), standing in
// for per-target chains: a change rewrites one small chain.
func BenchmarkPolicyRewrite(b *testing.B) {
	simtest.Require(b, "nft")
	ctx := context.Background()
	for _, bc := range []struct {
		layout string
		n      int
	}{{"one", 100}, {"one", 1000}, {"one", 10000}, {"split", 1000}, {"split", 10000}} {
		n := bc.n
		b.Run(fmt.Sprintf("layout=%s/policies=%d", bc.layout, n), func(b *testing.B) {
			h, err := simtest.New(b).AddHost(ctx, "h1", netip.MustParsePrefix("192.168.92.1/24"))
			if err != nil {
				b.Fatal(err)
			}
			snap, _ := policyLab(b, 1000)
			snap.Policies = benchPolicies(n, 1000, "")
			a := compute(b, snap, "h1").Firewall
			snap.Policies[n/2].Rules[1].Ports = []uint16{81}
			c := compute(b, snap, "h1").Firewall
			if bc.layout == "split" {
				a, c = splitPolicyChains(a, 1000), splitPolicyChains(c, 1000)
			}
			var fw *Firewall
			nft := &timedNFT{}
			if err := h.Do(func() (err error) {
				if nft.Interface, err = knftables.New(Family, hoststate.Table); err != nil {
					return err
				}
				fw = NewWith(nft, nil)
				_, err = fw.Apply(ctx, a)
				return err
			}); err != nil {
				b.Fatal(err)
			}
			next := c
			enforced := map[string][]time.Duration{}
			applied := map[string][]time.Duration{}
			change := func(way string) {
				if err := h.Do(func() error {
					if way == "replace" {
						fw.last = nil
					}
					start := time.Now()
					nft.committed = time.Time{}
					changed, err := fw.Apply(ctx, next)
					if err == nil && !changed {
						err = fmt.Errorf("not applied")
					}
					applied[way] = append(applied[way], time.Since(start))
					enforced[way] = append(enforced[way], nft.committed.Sub(start))
					return err
				}); err != nil {
					b.Fatal(err)
				}
				if next.String() == c.String() {
					next = a
				} else {
					next = c
				}
			}
			for b.Loop() {
				for _, way := range []string{"delta", "replace", "replace", "delta"} {
					change(way)
				}
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(a.RuleCount()), "nft-rules")
			b.ReportMetric(float64(a.ElementCount()), "nft-elements")
			for _, way := range []string{"delta", "replace"} {
				b.ReportMetric(percentile(enforced[way], 50).Seconds()*1000, way+"-enforced-p50-ms")
				b.ReportMetric(percentile(enforced[way], 99).Seconds()*1000, way+"-enforced-p99-ms")
				b.ReportMetric(percentile(applied[way], 50).Seconds()*1000, way+"-apply-p50-ms")
				b.ReportMetric(percentile(applied[way], 99).Seconds()*1000, way+"-apply-p99-ms")
			}
			b.ReportMetric(percentile(enforced["delta"], 50).Seconds()/percentile(enforced["replace"], 50).Seconds(), "enforced-p50-ratio")
		})
	}
}

// timedNFT is a knftables.Interface that records when the last
// transaction holding more than the listing sums was committed (a delta
// carries its stamps in the same transaction as the change).
type timedNFT struct {
	knftables.Interface
	committed time.Time
}

func (t *timedNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	err := t.Interface.Run(ctx, tx)
	done := time.Now()
	if err == nil && withoutSums(tx.String()) != "" {
		t.committed = done
	}
	return err
}

// percentile returns the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(i, 0)]
}

// splitPolicyChains returns rs with the rules of each policy-* chain moved
// into k chains by policy (a hash of the policy's name picks the chain;
// a policy's rules keep their order), which the policy chain enters
// through one rule each. Packets would no longer meet the policies as
// hoststate means them: it only gives the firewall adapter the shape of
// per-target policy chains, many small chains of which a policy change
// touches few.
func splitPolicyChains(rs hoststate.Ruleset, k int) hoststate.Ruleset {
	out := rs
	out.Chains = nil
	for _, c := range rs.Chains {
		if c.Name != hoststate.ChainPolicyIngress && c.Name != hoststate.ChainPolicyEgress {
			out.Chains = append(out.Chains, c)
			continue
		}
		parts := make([]hoststate.Chain, k)
		for _, r := range c.Rules {
			h := fnv.New32a()
			h.Write([]byte(r.Policy))
			i := int(h.Sum32()) % k
			parts[i].Rules = append(parts[i].Rules, r)
		}
		entry := hoststate.Chain{Name: c.Name, Comment: c.Comment}
		var sub []hoststate.Chain
		for i, p := range parts {
			if len(p.Rules) == 0 {
				continue
			}
			p.Name = fmt.Sprintf("%s-%d", c.Name, i)
			entry.Rules = append(entry.Rules, hoststate.Rule{Expr: fmt.Sprintf("meta mark %#x jump %s", i+1, p.Name)})
			sub = append(sub, p)
		}
		out.Chains = append(append(out.Chains, entry), sub...)
	}
	return out
}
