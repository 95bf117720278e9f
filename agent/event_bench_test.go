package agent

// Event benchmarks for issue 11, written against the narrow surface both
// the old agent (4cf79f9) and its redesign keep: Run, Config's Host, Mode,
// Resync, Source, Routes, Firewall, Underlay, MinBackoff, MaxBackoff and
// Log, the Source interface, newFakeUnderlay, and the route and firewall
// fakes. Everything else they need (a Source, wrappers that tell when an
// event took effect) is in this file, so the file can be copied into
// either tree unchanged. Names start with evb to stay out of the way of
// the package's own test helpers.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/route"
	"github.com/romana/romana/server/servertest"
)

// evbSource is an in-memory romanad for the event benchmarks: a snapshot
// whose addresses and policies change by the events the benchmark
// pushes, each its own revision (RevisionEnd set), and a Watch that
// delivers them from any revision on. It never compacts.
type evbSource struct {
	mu        sync.Mutex
	static    api.Snapshot // networks, hosts, tenants, segments
	addresses map[string]api.Address
	policies  map[string]api.Policy
	rev       int64
	log       []api.Event
	changed   chan struct{} // closed and replaced at every push

	snapshots, watches atomic.Int64
}

func newEvbSource(s api.Snapshot) *evbSource {
	src := &evbSource{static: api.Snapshot{Networks: s.Networks, Hosts: s.Hosts, Tenants: s.Tenants, Segments: s.Segments},
		addresses: map[string]api.Address{}, policies: map[string]api.Policy{}, rev: s.Revision, changed: make(chan struct{})}
	for _, a := range s.Addresses {
		src.addresses[a.Name] = a
	}
	for _, p := range s.Policies {
		src.policies[p.Name] = p
	}
	return src
}

// push puts obj (an api.Address or api.Policy) at the next revision.
func (s *evbSource) push(name string, obj any) {
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	ev := api.Event{Revision: s.rev, Type: api.EventPut, Name: name, Object: b, RevisionEnd: true}
	switch o := obj.(type) {
	case api.Address:
		ev.Kind = api.KindAddress
		s.addresses[name] = o
	case api.Policy:
		ev.Kind = api.KindPolicy
		s.policies[name] = o
	default:
		panic(fmt.Sprintf("evbSource: cannot push a %T", obj))
	}
	s.log = append(s.log, ev)
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *evbSource) Snapshot(ctx context.Context) (api.Snapshot, error) {
	s.snapshots.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.static
	snap.Revision = s.rev
	snap.Addresses = slices.Collect(maps.Values(s.addresses))
	snap.Policies = slices.Collect(maps.Values(s.policies))
	return snap, ctx.Err()
}

func (s *evbSource) Watch(ctx context.Context, from int64, fn func(api.Event) error) error {
	s.watches.Add(1)
	next := from
	for {
		s.mu.Lock()
		var evs []api.Event
		if i, ok := slices.BinarySearchFunc(s.log, next, func(ev api.Event, r int64) int { return int(ev.Revision - r) }); ok || i < len(s.log) {
			evs = s.log[i:len(s.log):len(s.log)]
		}
		changed := s.changed
		s.mu.Unlock()
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
			next = ev.Revision + 1
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// evbRoutes is the route fake's Manager, telling when a SyncRoutes call
// installed the route it waits for.
type evbRoutes struct {
	*route.Manager
	syncs atomic.Int64

	mu   sync.Mutex
	want netip.Prefix   // invalid: waiting for nothing
	done chan time.Time // when the route was installed
}

func (r *evbRoutes) expect(p netip.Prefix) {
	r.mu.Lock()
	r.want = p
	r.mu.Unlock()
}

func (r *evbRoutes) SyncRoutes(ctx context.Context, desired []hoststate.Route) (route.Changes, error) {
	r.syncs.Add(1)
	ch, err := r.Manager.SyncRoutes(ctx, desired)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil || !r.want.IsValid() {
		return ch, err
	}
	has := func(rt hoststate.Route) bool { return rt.Dst == r.want }
	if slices.ContainsFunc(desired, has) && !slices.ContainsFunc(ch.Pending, has) {
		r.want = netip.Prefix{}
		r.done <- time.Now()
	}
	return ch, err
}

// evbFirewall is the knftables-fake Firewall, counting Apply and Check
// calls and telling when an Apply installed a rule of policy whose
// expression has port. Looking costs a pass over the rules' policy names,
// timed in probe (it runs in the agent's goroutine, so it is part of the
// CPU the benchmark measures).
type evbFirewall struct {
	*firewall.Firewall
	calls atomic.Int64

	mu     sync.Mutex
	policy string // "": waiting for nothing
	port   string
	probe  time.Duration
	done   chan time.Time // when the rule was installed
}

func (f *evbFirewall) expect(policy string, port uint16) {
	f.mu.Lock()
	f.policy, f.port = policy, strconv.Itoa(int(port))
	f.mu.Unlock()
}

func (f *evbFirewall) Check(ctx context.Context, rs hoststate.Ruleset) error {
	f.calls.Add(1)
	return f.Firewall.Check(ctx, rs)
}

func (f *evbFirewall) Apply(ctx context.Context, rs hoststate.Ruleset) (bool, error) {
	f.calls.Add(1)
	changed, err := f.Firewall.Apply(ctx, rs)
	if err != nil {
		return changed, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.policy == "" {
		return changed, nil
	}
	now := time.Now()
	found := false
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if r.Policy == f.policy && strings.Contains(r.Expr, f.port) {
				found = true
				break
			}
		}
	}
	f.probe += time.Since(now)
	if found {
		f.policy = ""
		f.done <- now
	}
	return changed, nil
}

func (f *evbFirewall) probeTime() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.probe
}

// evbPolicies returns n policies over tenants t0..t(tenants-1), the shape
// of workload.Policies (a copy: this file must also compile in the tree
// before issue 11, which scripts/event-bench-ab.sh measures against):
// policy i applies to tenant t(i%tenants)
// (every fourth to its segment s0; every fifth in both directions) with
// two rules: deny tcp 22 from a /16 with a hole, allow tcp 80, 443 and
// 8000-8080 from tenant t(i+1).
func evbPolicies(n, tenants int) []api.Policy {
	ps := make([]api.Policy, n)
	for i := range ps {
		ps[i] = evbPolicy(i, tenants, 80)
	}
	return ps
}

// evbPolicy is policy i of evbPolicies, allowing port instead of 80.
func evbPolicy(i, tenants int, port uint16) api.Policy {
	sel := api.Selector{Tenant: fmt.Sprintf("t%d", i%tenants)}
	if i%4 == 0 {
		sel.Segment = "s0"
	}
	dir := []string{"ingress"}
	if i%5 == 0 {
		dir = append(dir, "egress")
	}
	return api.Policy{Name: fmt.Sprintf("p%05d", i), Priority: 1 + i%100, Direction: dir, AppliedTo: []api.Selector{sel},
		Rules: []api.Rule{
			{Action: "deny", Peers: []api.Peer{{CIDR: fmt.Sprintf("172.%d.0.0/16", 16+i%16), Except: []string{fmt.Sprintf("172.%d.1.0/24", 16+i%16)}}}, Protocol: "tcp", Ports: []uint16{22}},
			{Peers: []api.Peer{{Tenant: fmt.Sprintf("t%d", (i+1)%tenants)}}, Protocol: "tcp", Ports: []uint16{port, 443}, PortRanges: []string{"8000-8080"}},
		}}
}

// Shape of the in-process world of BenchmarkEventCPU.
const (
	evbHosts       = 4   // h1 (this host, 192.168.0.1) .. h4
	evbLocal       = 200 // endpoints on h1, in segments s0
	evbRemote      = 200 // endpoints on h2..h4
	evbAddrTenants = 100 // address events cycle over the first 100 tenants
)

// evbWorld is the snapshot of BenchmarkEventCPU: network net1 10.0.0.0/8
// (host 3 | tenant 14 | segment 1 | endpoint 6 bits), hosts h1..h4 on
// 192.168.0.0/24, tenants t0..t(n-1) each with segments s0 and s1,
// evbLocal endpoints on h1 and evbRemote on the others (all in segment
// s0), and n policies (evbPolicies) over the n tenants.
type evbWorld struct {
	plan *plan.Plan
	snap api.Snapshot
}

func newEvbWorld(tb testing.TB, n int) *evbWorld {
	nw := api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 3}, {Name: "tenant", Bits: 14}, {Name: "segment", Bits: 1}}}
	p, err := plan.Parse(nw.Spec())
	if err != nil {
		tb.Fatal(err)
	}
	w := &evbWorld{plan: p, snap: api.Snapshot{Revision: 1, Networks: []api.Network{nw}}}
	for h := uint64(1); h <= evbHosts; h++ {
		c, err := p.HostCIDR(plan.Loc{Host: h})
		if err != nil {
			tb.Fatal(err)
		}
		w.snap.Hosts = append(w.snap.Hosts, api.Host{Name: fmt.Sprintf("h%d", h), IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(h)}),
			Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: h}, CIDR: c}}})
	}
	for i := range n {
		t := fmt.Sprintf("t%d", i)
		w.snap.Tenants = append(w.snap.Tenants, api.Tenant{Name: t, ID: uint64(i + 1)})
		w.snap.Segments = append(w.snap.Segments, api.Segment{Tenant: t, Name: "s0", ID: 0}, api.Segment{Tenant: t, Name: "s1", ID: 1})
	}
	for i := range evbLocal + evbRemote {
		host := uint64(1)
		if i >= evbLocal {
			host = 2 + uint64(i%(evbHosts-1))
		}
		a := w.address(tb, fmt.Sprintf("ep%d", i), host, i%min(n, evbAddrTenants), 0, 1+uint64(i/min(n, evbAddrTenants)))
		a.Interface = fmt.Sprintf("vethb%d", i)
		w.snap.Addresses = append(w.snap.Addresses, a)
	}
	w.snap.Policies = evbPolicies(n, n)
	return w
}

func (w *evbWorld) address(tb testing.TB, name string, host uint64, tenant int, segment, ep uint64) api.Address {
	ip, err := w.plan.Address(plan.Loc{Host: host}, uint64(tenant+1), segment, ep)
	if err != nil {
		tb.Fatal(err)
	}
	return api.Address{Name: name, IP: ip, Network: "net1", Host: fmt.Sprintf("h%d", host),
		Tenant: fmt.Sprintf("t%d", tenant), Segment: fmt.Sprintf("s%d", segment)}
}

// evbCPU returns the CPU time (user + system) this process has used.
func evbCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// evbQuiesce waits until the process has been idle for a moment (less
// than 1ms of CPU in each of four 25ms windows in a row), at most 30s: the
// agent may go on working after the wrapper saw the effect it waited for
// (the old agent syncs routes after the firewall), and that tail belongs
// to the event before. Four windows, not one: on a loaded machine the
// agent's thread can wait 25ms for a CPU.
func evbQuiesce(tb testing.TB) {
	prev, idle := evbCPU(tb), 0
	for range 1200 {
		time.Sleep(25 * time.Millisecond)
		now := evbCPU(tb)
		if now-prev < time.Millisecond {
			idle++
		} else {
			idle = 0
		}
		if idle == 4 {
			return
		}
		prev = now
	}
	tb.Logf("the process did not go idle within 30s")
}

// evbPercentile returns the p-quantile of sorted durations in ms.
func evbPercentile(sorted []time.Duration, p float64) float64 {
	return float64(sorted[min(len(sorted)-1, int(p*float64(len(sorted))))].Microseconds()) / 1000
}

// BenchmarkEventCPU measures what one watch event costs the agent: one
// agent (this host h1, flat mode, the route and knftables fakes, an
// in-memory underlay) follows an in-memory Source; each iteration pushes
// one event and waits until the agent has acted on it:
//
//   - event=address: a new endpoint address on this host (its veth added
//     to the route fake first); done when SyncRoutes installs its route;
//   - event=policy: policy p00001 put again with another port; done when
//     Firewall.Apply installs a rule of it with that port.
//
// cpu-ms/event is the process's user+system CPU (getrusage) over the
// timed loop divided by the events: the agent's work, plus the
// benchmark's small share (pushing the event, the wrappers' checks;
// probe-ms/event is the firewall wrapper's share). wall-p50-ms is push to
// done. fw-calls/event counts Firewall.Apply and Check calls and
// route-syncs/event SyncRoutes calls. Resync is an hour: only events
// trigger work. The world is newEvbWorld's, with n tenants and n policies.
func BenchmarkEventCPU(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		w := newEvbWorld(b, n)
		for _, kind := range []string{"address", "policy"} {
			b.Run(fmt.Sprintf("policies=%d/event=%s", n, kind), func(b *testing.B) {
				evbEventCPU(b, w, kind)
			})
		}
	}
}

func evbEventCPU(b *testing.B, w *evbWorld, kind string) {
	src := newEvbSource(w.snap)
	mgr, kernel := route.NewFake(nil)
	routes := &evbRoutes{Manager: mgr, done: make(chan time.Time, 1)}
	fw, _ := firewall.NewFake(nil)
	fwl := &evbFirewall{Firewall: fw, done: make(chan time.Time, 1)}
	for _, a := range w.snap.Addresses {
		if a.Host == "h1" {
			kernel.AddLink(a.Interface, "veth")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() {
		ran <- Run(ctx, Config{Host: "h1", Mode: hoststate.ModeFlat, Resync: time.Hour, Source: src, Routes: routes, Firewall: fwl,
			Underlay: newFakeUnderlay(), MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Second})
	}()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			b.Errorf("Run: %v", err)
		}
	}()

	i := 0
	nt := min(len(w.snap.Tenants), evbAddrTenants)
	event := func() time.Duration {
		i++
		var done chan time.Time
		var push func()
		switch kind {
		case "address":
			name := fmt.Sprintf("new%d", i)
			a := w.address(b, name, 1, i%nt, 1, 1+uint64(i/nt))
			a.Interface = fmt.Sprintf("vethn%d", i)
			kernel.AddLink(a.Interface, "veth")
			routes.expect(netip.PrefixFrom(a.IP, 32))
			done, push = routes.done, func() { src.push(name, a) }
		case "policy":
			port := uint16(40000 + i%20000)
			p := evbPolicy(1, len(w.snap.Tenants), port)
			fwl.expect(p.Name, port)
			done, push = fwl.done, func() { src.push(p.Name, p) }
		}
		start := time.Now()
		push()
		select {
		case at := <-done:
			return at.Sub(start)
		case <-time.After(2 * time.Minute):
			b.Fatalf("%s event %d: the agent did not act on it within 2m", kind, i)
			return 0
		}
	}
	event() // warm up: the agent has its snapshot, its watch, and has applied both

	evbQuiesce(b)

	var lat []time.Duration
	fw0, rt0, probe0 := fwl.calls.Load(), routes.syncs.Load(), fwl.probeTime()
	cpu0 := evbCPU(b)
	for b.Loop() {
		lat = append(lat, event())
	}
	evbQuiesce(b) // the last event's tail
	cpu := evbCPU(b) - cpu0
	events := float64(len(lat))
	slices.Sort(lat)
	b.ReportMetric(cpu.Seconds()*1000/events, "cpu-ms/event")
	b.ReportMetric(evbPercentile(lat, 0.5), "wall-p50-ms")
	b.ReportMetric(float64(fwl.calls.Load()-fw0)/events, "fw-calls/event")
	b.ReportMetric(float64(routes.syncs.Load()-rt0)/events, "route-syncs/event")
	b.ReportMetric((fwl.probeTime()-probe0).Seconds()*1000/events, "probe-ms/event")
	if s := src.snapshots.Load(); s != 1 {
		b.Logf("the agent read %d snapshots (expected 1)", s)
	}
}

// BenchmarkPolicyEnforcement20 measures the time from a policy update at a
// real romanad (servertest: embedded etcd, TLS on loopback) to its
// application on each of 20 in-process agents (their own clients, watch
// streams and loops; knftables' fake in place of nft), with 100 tenants
// and n other policies (evbPolicies) loaded. Each iteration PUTs policy
// "mark" with a new port and waits until every agent's Firewall.Apply has
// installed it; p50/p99/max are over all agents' latencies, and
// cpu-ms/change is this process's CPU (romanad and the 20 agents; etcd
// runs in its own process) per change. Resync is an hour.
func BenchmarkPolicyEnforcement20(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) { evbEnforcement(b, 20, n) })
	}
}

func evbEnforcement(b *testing.B, agents, n int) {
	const tenants = 100
	srv := servertest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := srv.Client
	if _, err := c.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 6}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 2}}}); err != nil {
		b.Fatal(err)
	}
	for i := range tenants {
		if _, err := c.AddTenant(ctx, api.Tenant{Name: fmt.Sprintf("t%d", i)}); err != nil {
			b.Fatal(err)
		}
		if _, err := c.AddSegment(ctx, api.Segment{Tenant: fmt.Sprintf("t%d", i), Name: "s0"}); err != nil {
			b.Fatal(err)
		}
	}
	// Load the policies with a few PUTs in flight.
	loadStart := time.Now()
	work := make(chan api.Policy)
	errs := make(chan error, 8)
	var loaders sync.WaitGroup
	for range 8 {
		loaders.Go(func() {
			for p := range work {
				if _, err := c.PutPolicy(ctx, p); err != nil {
					errs <- fmt.Errorf("put policy %s: %w", p.Name, err)
					return
				}
			}
		})
	}
	for _, p := range evbPolicies(n, tenants) {
		select {
		case work <- p:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(work)
	loaders.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("%d policies loaded in %v", n, time.Since(loadStart).Round(time.Millisecond))

	var fws []*evbFirewall
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range agents {
		name := fmt.Sprintf("h%d", i)
		if _, err := c.AddHost(ctx, api.Host{Name: name, IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(i + 1)})}); err != nil {
			b.Fatal(err)
		}
		cl := srv.ClientAs(b, pki.Host(name)) // each agent as its own host, over TLS
		routes, _ := route.NewFake(nil)
		fw, _ := firewall.NewFake(nil)
		f := &evbFirewall{Firewall: fw, done: make(chan time.Time, 1)}
		fws = append(fws, f)
		wg.Go(func() {
			if err := Run(ctx, Config{Host: name, Mode: hoststate.ModeFlat, Resync: time.Hour, Source: cl, Routes: routes, Firewall: f,
				Underlay: newFakeUnderlay()}); err != nil {
				b.Errorf("agent %s: %v", name, err)
			}
		})
	}
	var lat []time.Duration
	i := 0
	change := func() {
		i++
		port := uint16(40000 + i%20000)
		for _, f := range fws {
			f.expect("mark", port)
		}
		start := time.Now()
		if _, err := c.PutPolicy(ctx, api.Policy{Name: "mark", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "t1"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "t2"}}, Protocol: "tcp", Ports: []uint16{port}}}}); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(5 * time.Minute)
		for _, f := range fws {
			select {
			case at := <-f.done:
				lat = append(lat, at.Sub(start))
			case <-timeout:
				b.Fatalf("change %d: not every agent applied it within 5m", i)
			}
		}
	}
	warm := time.Now()
	change() // warm up: every agent has its snapshot and watch
	b.Logf("first change (snapshots included) applied on all %d agents in %v", agents, time.Since(warm).Round(time.Millisecond))
	evbQuiesce(b)
	lat = nil
	cpu0 := evbCPU(b)
	changes := 0
	for b.Loop() {
		change()
		changes++
	}
	evbQuiesce(b) // the last change's tail
	cpu := evbCPU(b) - cpu0
	slices.Sort(lat)
	b.ReportMetric(evbPercentile(lat, 0.5), "p50-ms")
	b.ReportMetric(evbPercentile(lat, 0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(lat)), "samples")
	b.ReportMetric(cpu.Seconds()*1000/float64(changes), "cpu-ms/change")
}
