package hoststate

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/bench/workload"
	"github.com/romana/romana/model"
)

// putEvent is a watch event putting obj (kind, name) at revision rev.
func putEvent(rev int64, kind, name string, obj any) api.Event {
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	return api.Event{Revision: rev, Type: api.EventPut, Kind: kind, Name: name, Object: b}
}

// A Compiler kept across watch events computes what ComputeFirewall
// computes from scratch, whatever changed: policies put, changed and
// deleted, and the tenants, segments, hosts and networks they depend on,
// and address sets' members. An address set put or deleted compiles no
// policy again (rules name sets, not their members).
func TestCompilerMatchesCompute(t *testing.T) {
	l, eps := dispatchLab(t)
	r := rand.New(rand.NewPCG(5, 9))
	l.snap.Policies = randomPolicies(r, 12)
	l.snap.AddressSets = randomSets(r, eps)
	m := model.New(l.snap)
	var c Compiler
	rev := int64(1)
	kinds := map[string]int{}
	for step := range 300 {
		rev++
		var ev api.Event
		switch k := r.IntN(12); {
		case k >= 10: // an address set's members change, or it goes
			s := randomSets(r, eps)[r.IntN(2)]
			s.Name = []string{"sa", "sb", "sc"}[r.IntN(3)]
			if r.IntN(4) == 0 {
				ev = api.Event{Revision: rev, Type: api.EventDelete, Kind: api.KindAddressSet, Name: s.Name}
			} else {
				ev = putEvent(rev, api.KindAddressSet, s.Name, s)
			}
		case k < 2: // change only the ports of a policy's rule
			ps := m.Policies()
			if len(ps) == 0 {
				continue
			}
			p := ps[r.IntN(len(ps))]
			p.Rules = append([]api.Rule(nil), p.Rules...)
			p.Rules[0].Protocol, p.Rules[0].Ports = "tcp", []uint16{uint16(1 + r.IntN(3))}
			ev = putEvent(rev, api.KindPolicy, p.Name, p)
		case k < 5: // put a policy (new, or changed)
			p := randomPolicies(r, 1+r.IntN(16))
			ev = putEvent(rev, api.KindPolicy, "", p[len(p)-1])
			ev.Name = p[len(p)-1].Name
		case k == 5: // delete one
			ps := m.Policies()
			if len(ps) == 0 {
				continue
			}
			ev = api.Event{Revision: rev, Type: api.EventDelete, Kind: api.KindPolicy, Name: ps[r.IntN(len(ps))].Name}
		case k == 6: // a tenant's id changes, or a tenant appears
			name := []string{"acme", "solo", "nobody", "ghost"}[r.IntN(4)]
			ev = putEvent(rev, api.KindTenant, name, api.Tenant{Name: name, ID: uint64(1 + r.IntN(9)), Isolation: api.IsolationTenant})
		case k == 7: // a segment appears, moves or goes
			tn := []string{"acme", "beta", "ghost"}[r.IntN(3)]
			sn := []string{"a", "web", "none", "z"}[r.IntN(4)]
			if r.IntN(3) == 0 {
				ev = api.Event{Revision: rev, Type: api.EventDelete, Kind: api.KindSegment, Name: tn + "/" + sn}
			} else {
				ev = putEvent(rev, api.KindSegment, tn+"/"+sn, api.Segment{Tenant: tn, Name: sn, ID: uint64(r.IntN(4))})
			}
		case k == 8: // a host's underlay address changes (host peers)
			h, _ := m.Host(fmt.Sprintf("h%d", 2+r.IntN(2)))
			h.IP = netip.AddrFrom4([4]byte{192, 168, 7, byte(1 + r.IntN(200))})
			ev = putEvent(rev, api.KindHost, h.Name, h)
		default: // a network admits other tenants
			n := l.snap.Networks[1+r.IntN(2)]
			n.Tenants = [][]string{{"acme", "beta"}, {"solo"}, nil}[r.IntN(3)]
			ev = putEvent(rev, api.KindNetwork, n.Name, n)
		}
		ch, ok, err := m.Apply(ev)
		if err != nil {
			t.Fatalf("step %d: apply %s %s: %v", step, ev.Kind, ev.Name, err)
		}
		if !ok {
			continue // deleting a set that is not there
		}
		kinds[ch.Kind]++
		compiles := c.compiles
		got, gotProblems, err := c.Firewall(m, "h1", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == api.KindAddressSet && c.compiles != compiles {
			t.Fatalf("step %d: address set %s changed: %d policies compiled again", step, ev.Name, c.compiles-compiles)
		}
		want, wantProblems, err := ComputeFirewall(model.New(m.Snapshot()), "h1", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() || fmt.Sprint(gotProblems) != fmt.Sprint(wantProblems) {
			t.Fatalf("step %d, after %s %s %s: the compiler's ruleset differs from a fresh one:\n%s\nproblems %v\n---\n%s\nproblems %v",
				step, ev.Type, ev.Kind, ev.Name, got, gotProblems, want, wantProblems)
		}
		if c.Cached() != len(m.Policies()) {
			t.Fatalf("step %d: %d policies cached, %d in the model", step, c.Cached(), len(m.Policies()))
		}
	}
	t.Logf("events: %v", kinds)
}

// BenchmarkPolicyChange: the desired firewall of one host at 10,000
// policies (1000 tenants, bench/workload's policies) after one policy
// changed, computed from scratch (ComputeFirewall, what the agent did) and
// by a Compiler kept across changes (what it does). Each iteration applies
// one watch event changing one policy's port, then computes. The two
// run in the order A-B-B-A.
func BenchmarkPolicyChange(b *testing.B) {
	snap := benchSnapshot(b, 1000, 100)
	snap.Policies = workload.Policies(10000, 1000)
	for _, mode := range []string{"ComputeFirewall", "Compiler", "Compiler", "ComputeFirewall"} {
		b.Run("policies=10000/"+mode, func(b *testing.B) {
			m := model.New(snap)
			var c Compiler
			compute := func() Ruleset {
				var rs Ruleset
				var err error
				if mode == "Compiler" {
					rs, _, err = c.Firewall(m, "h1", Options{})
				} else {
					rs, _, err = ComputeFirewall(m, "h1", Options{})
				}
				if err != nil {
					b.Fatal(err)
				}
				return rs
			}
			rs := compute() // warm: the agent's first pass
			p := snap.Policies[5000]
			rev := int64(1)
			for b.Loop() {
				rev++
				p.Rules = append([]api.Rule(nil), p.Rules...)
				p.Rules[1].Ports = []uint16{80 + uint16(rev%2)}
				if _, _, err := m.Apply(putEvent(rev, api.KindPolicy, p.Name, p)); err != nil {
					b.Fatal(err)
				}
				rs = compute()
			}
			b.ReportMetric(float64(rs.RuleCount()), "nft-rules")
			b.ReportMetric(float64(rs.ElementCount()), "elements")
		})
	}
}

// BenchmarkAddressSetChange: h1's desired firewall at 10,000 policies
// (bench/workload's) and 100 more naming address sets (1,000 members in
// all), computed by a Compiler after one watch event, which changes
// either one policy's port ("policy") or one member of one set ("set").
// They run in the order A-B-B-A; a set change compiles no policy.
func BenchmarkAddressSetChange(b *testing.B) {
	snap := benchSnapshot(b, 1000, 100)
	snap.Policies = workload.Policies(10000, 1000)
	for i := range 100 {
		snap.Policies = append(snap.Policies, api.Policy{Name: fmt.Sprintf("set-%d", i), Tier: []string{"", "admin", "baseline"}[i%3],
			Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: fmt.Sprintf("t%d", i), Set: fmt.Sprintf("s%d", i%10)}},
			Rules: []api.Rule{{Peers: []api.Peer{{Set: fmt.Sprintf("c%d", i%10)}}, Protocol: "tcp", Ports: []uint16{80}}}})
	}
	for i := range 10 {
		for _, name := range []string{fmt.Sprintf("s%d", i), fmt.Sprintf("c%d", i)} {
			s := api.AddressSet{Name: name}
			for j := range 50 {
				s.Addresses = append(s.Addresses, snap.Addresses[(i*100+j*7)%len(snap.Addresses)].IP)
			}
			snap.AddressSets = append(snap.AddressSets, s)
		}
	}
	for _, change := range []string{"policy", "set", "set", "policy"} {
		b.Run("policies=10100/"+change, func(b *testing.B) {
			m := model.New(snap)
			var c Compiler
			if _, _, err := c.Firewall(m, "h1", Options{}); err != nil { // the agent's first pass
				b.Fatal(err)
			}
			p := snap.Policies[5000]
			s, _ := m.AddressSet("s3")
			rev := int64(1)
			var rs Ruleset
			for b.Loop() {
				rev++
				var ev api.Event
				if change == "policy" {
					p.Rules = append([]api.Rule(nil), p.Rules...)
					p.Rules[1].Ports = []uint16{80 + uint16(rev%2)}
					ev = putEvent(rev, api.KindPolicy, p.Name, p)
				} else {
					s.Addresses = append([]netip.Addr(nil), s.Addresses...)
					s.Addresses[0] = snap.Addresses[int(rev)%len(snap.Addresses)].IP
					ev = putEvent(rev, api.KindAddressSet, s.Name, s)
				}
				if _, _, err := m.Apply(ev); err != nil {
					b.Fatal(err)
				}
				var err error
				if rs, _, err = c.Firewall(m, "h1", Options{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rs.RuleCount()), "nft-rules")
			b.ReportMetric(float64(rs.ElementCount()), "elements")
		})
	}
}

// A Compiler reads only the policies the model's journal names since its
// last call (model.PolicyChanges), so it must notice when that is not
// enough: several events between two calls (a policy put then deleted,
// put twice), more events than the journal keeps, and a new model (a
// snapshot read again) whose generation happens to equal the one it saw
// last. Each time it computes what ComputeFirewall computes from scratch.
func TestCompilerFollowsTheJournal(t *testing.T) {
	l, eps := dispatchLab(t)
	r := rand.New(rand.NewPCG(11, 4))
	l.snap.Policies = randomPolicies(r, 12)
	l.snap.AddressSets = randomSets(r, eps)
	m := model.New(l.snap)
	var c Compiler
	rev := int64(1)
	check := func(step int, what string) {
		t.Helper()
		got, gotProblems, err := c.Firewall(m, "h1", Options{})
		if err != nil {
			t.Fatal(err)
		}
		want, wantProblems, err := ComputeFirewall(model.New(m.Snapshot()), "h1", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() || fmt.Sprint(gotProblems) != fmt.Sprint(wantProblems) {
			t.Fatalf("step %d (%s): the compiler's ruleset differs from a fresh one:\n%s\nproblems %v\n---\n%s\nproblems %v",
				step, what, got, gotProblems, want, wantProblems)
		}
		if c.Cached() != m.PolicyCount() {
			t.Fatalf("step %d (%s): %d policies cached, %d in the model", step, what, c.Cached(), m.PolicyCount())
		}
	}
	apply := func(ev api.Event) {
		t.Helper()
		if _, _, err := m.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	randomEvent := func() api.Event {
		rev++
		ps := m.Policies()
		if len(ps) > 0 && r.IntN(4) == 0 {
			return api.Event{Revision: rev, Type: api.EventDelete, Kind: api.KindPolicy, Name: ps[r.IntN(len(ps))].Name}
		}
		p := randomPolicies(r, 1+r.IntN(16))
		return putEvent(rev, api.KindPolicy, p[len(p)-1].Name, p[len(p)-1])
	}
	// churn applies n policy events: one policy put again and again
	// (cheap events), with a random event now and then.
	churn := func(n int) {
		p := randomPolicies(r, 1+r.IntN(16))
		q := p[len(p)-1]
		for i := range n {
			rev++
			if i%1000 == 999 {
				apply(randomEvent())
				continue
			}
			q.Priority = 1 + i%7
			apply(putEvent(rev, api.KindPolicy, q.Name, q))
		}
	}
	check(0, "first call")
	for step := 1; step <= 60; step++ {
		k := r.IntN(6)
		if step%20 == 10 {
			k = 2 // three overruns are enough
		} else if k == 2 {
			k = 3
		}
		switch k {
		case 0: // a policy put, then deleted
			ev := randomEvent()
			apply(ev)
			rev++
			apply(api.Event{Revision: rev, Type: api.EventDelete, Kind: api.KindPolicy, Name: ev.Name})
			check(step, "put then deleted")
		case 1: // one policy put twice, differently
			ev := randomEvent()
			apply(ev)
			var p api.Policy
			if err := json.Unmarshal(ev.Object, &p); err == nil && ev.Type == api.EventPut {
				p.Rules = append([]api.Rule(nil), p.Rules...)
				if len(p.Rules) > 0 {
					p.Rules[0].Protocol, p.Rules[0].Ports = "tcp", []uint16{uint16(1 + r.IntN(3))}
				}
				rev++
				apply(putEvent(rev, api.KindPolicy, p.Name, p))
			}
			check(step, "put twice")
		case 2: // more events than the journal keeps
			churn(5000)
			check(step, "journal overrun")
		case 3: // a new model at the compiler's generation, other policies
			gen := m.PolicyGeneration()
			snap := m.Snapshot()
			snap.Policies = randomPolicies(r, 1+r.IntN(12))
			m = model.New(snap)
			churn(int(gen))
			if m.PolicyGeneration() != gen {
				t.Fatalf("step %d: new model at generation %d, want %d", step, m.PolicyGeneration(), gen)
			}
			check(step, "new model")
		default: // a few events
			for range r.IntN(5) {
				apply(randomEvent())
			}
			check(step, "a few events")
		}
	}
}

// A policy change makes no tenant's isolation chains again (they are the
// same values as before, shared), while a tenant's change makes them all
// again; TestCompilerMatchesCompute checks they stay right.
func TestTenantChainsKeptAcrossPolicyChanges(t *testing.T) {
	l, _ := dispatchLab(t)
	r := rand.New(rand.NewPCG(2, 8))
	l.snap.Policies = randomPolicies(r, 8)
	m := model.New(l.snap)
	var c Compiler
	first, _, err := c.Firewall(m, "h1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	made := c.tenantChains.made
	if made == 0 {
		t.Fatal("no tenant chains made")
	}
	p := randomPolicies(r, 3)[2]
	if _, _, err := m.Apply(putEvent(2, api.KindPolicy, p.Name, p)); err != nil {
		t.Fatal(err)
	}
	second, _, err := c.Firewall(m, "h1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.tenantChains.made != made {
		t.Errorf("a policy change made %d tenants' chains again", c.tenantChains.made-made)
	}
	compared := 0
	for _, ch := range first.Chains {
		if !strings.HasPrefix(ch.Name, "tenant-") && !strings.HasPrefix(ch.Name, "segment-") {
			continue
		}
		compared++
		o := second.Chain(ch.Name)
		if o == nil || len(o.Rules) == 0 || &o.Rules[0] != &ch.Rules[0] {
			t.Errorf("chain %s: not the same value after a policy change", ch.Name)
		}
	}
	if compared == 0 {
		t.Fatal("no tenant or segment chains")
	}
	tn := m.Tenants()[0]
	tn.Isolation = api.IsolationNone
	if _, _, err := m.Apply(putEvent(3, api.KindTenant, tn.Name, tn)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Firewall(m, "h1", Options{}); err != nil {
		t.Fatal(err)
	}
	if c.tenantChains.made == made {
		t.Error("a tenant's change made no tenant chains again")
	}
}
