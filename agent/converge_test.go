package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/model"
)

// randomState draws a romanad state from a small vocabulary, so that two
// draws share some objects and differ in others: hosts h1 (always), h2
// and h3; tenants with random isolation, segments, endpoints on h1 and
// h2, policies.
func randomState(rng *rand.Rand, w *world) api.Snapshot {
	s := api.Snapshot{Networks: w.snap.Networks, Hosts: []api.Host{w.host("h1", 1)}}
	for i, name := range []string{"h2", "h3"} {
		if rng.IntN(3) > 0 {
			s.Hosts = append(s.Hosts, w.host(name, uint64(i+2)))
		}
	}
	isolations := []string{api.IsolationTenant, api.IsolationSegment, api.IsolationNone}
	var tenants []api.Tenant
	for i, name := range []string{"acme", "beta", "gamma"} {
		if rng.IntN(4) == 0 {
			continue
		}
		t := api.Tenant{Name: name, ID: uint64(i + 1), Isolation: isolations[rng.IntN(len(isolations))]}
		tenants = append(tenants, t)
		s.Tenants = append(s.Tenants, t)
		s.Segments = append(s.Segments, api.Segment{Tenant: name, Name: "default", ID: 0})
		if rng.IntN(2) == 0 {
			s.Segments = append(s.Segments, api.Segment{Tenant: name, Name: "db", ID: 1})
		}
	}
	for ep := uint64(1); ep <= 6; ep++ {
		if len(tenants) == 0 || rng.IntN(2) == 0 {
			continue
		}
		t := tenants[rng.IntN(len(tenants))]
		host := uint64(1 + rng.IntN(2))
		a := w.address(fmt.Sprintf("a%d", ep), host, t.Name, t.ID, ep, fmt.Sprintf("romana%d", ep))
		if rng.IntN(5) == 0 {
			a.Interface = "" // allocated, not attached yet
		}
		s.Addresses = append(s.Addresses, a)
	}
	peers := []api.Peer{{Tenant: "acme"}, {Tenant: "beta", Segment: "db"}, {CIDR: "172.16.0.0/12"}, {Host: "h2"}, {Any: true}}
	for i := range 4 {
		if rng.IntN(2) == 0 {
			continue
		}
		p := api.Policy{Name: fmt.Sprintf("p%d", i), Priority: 1 + rng.IntN(3), Direction: []string{[]string{"ingress", "egress"}[rng.IntN(2)]},
			AppliedTo: []api.Selector{{Tenant: []string{"acme", "beta", "gamma"}[rng.IntN(3)]}},
			Rules: []api.Rule{{Action: []string{"allow", "deny"}[rng.IntN(2)], Peers: []api.Peer{peers[rng.IntN(len(peers))]},
				Protocol: "tcp", Ports: []uint16{uint16(80 + rng.IntN(3))}}}}
		s.Policies = append(s.Policies, p)
	}
	return s
}

// mutate changes one object of s (a small step, where randomState
// changes many at once): a segment added or removed, a tenant's
// isolation, an endpoint moved to another tenant, a policy's port.
func mutate(rng *rand.Rand, w *world, s api.Snapshot) api.Snapshot {
	s.Tenants, s.Segments = slices.Clone(s.Tenants), slices.Clone(s.Segments)
	s.Addresses, s.Policies = slices.Clone(s.Addresses), slices.Clone(s.Policies)
	switch rng.IntN(4) {
	case 0:
		if len(s.Tenants) == 0 {
			return s
		}
		t := s.Tenants[rng.IntN(len(s.Tenants))].Name
		if i := slices.IndexFunc(s.Segments, func(x api.Segment) bool { return x.Tenant == t && x.Name == "db" }); i >= 0 {
			s.Segments = slices.Delete(s.Segments, i, i+1)
		} else {
			s.Segments = append(s.Segments, api.Segment{Tenant: t, Name: "db", ID: 1})
		}
	case 1:
		if len(s.Tenants) > 0 {
			i := rng.IntN(len(s.Tenants))
			s.Tenants[i].Isolation = []string{api.IsolationTenant, api.IsolationSegment, api.IsolationNone}[rng.IntN(3)]
		}
	case 2:
		if len(s.Addresses) > 0 && len(s.Tenants) > 0 {
			i, t := rng.IntN(len(s.Addresses)), s.Tenants[rng.IntN(len(s.Tenants))]
			a := s.Addresses[i]
			host := uint64(a.Host[1] - '0')
			var ep uint64
			fmt.Sscanf(a.Name, "a%d", &ep)
			s.Addresses[i] = w.address(a.Name, host, t.Name, t.ID, ep, a.Interface)
		}
	case 3:
		if len(s.Policies) > 0 {
			i := rng.IntN(len(s.Policies))
			p := s.Policies[i]
			p.Rules = slices.Clone(p.Rules)
			p.Rules[0].Ports = []uint16{uint16(80 + rng.IntN(3))}
			s.Policies[i] = p
		}
	}
	return s
}

// diff returns the events that turn state a into state b: deletes of what
// b lacks, puts of what is new or changed, in a random order (a real
// stream may bring an endpoint before its tenant).
func diff(rng *rand.Rand, a, b api.Snapshot) []api.Event {
	var evs []api.Event
	add := func(kind string, before, after map[string]any) {
		for name := range before {
			if _, ok := after[name]; !ok {
				evs = append(evs, api.Event{Type: api.EventDelete, Kind: kind, Name: name})
			}
		}
		for name, v := range after {
			if old, ok := before[name]; ok && reflect.DeepEqual(old, v) {
				continue
			}
			obj, err := json.Marshal(v)
			if err != nil {
				panic(err)
			}
			evs = append(evs, api.Event{Type: api.EventPut, Kind: kind, Name: name, Object: obj})
		}
	}
	byName := func(s api.Snapshot) map[string]map[string]any {
		m := map[string]map[string]any{}
		put := func(kind, name string, v any) {
			if m[kind] == nil {
				m[kind] = map[string]any{}
			}
			m[kind][name] = v
		}
		for _, x := range s.Hosts {
			put(api.KindHost, x.Name, x)
		}
		for _, x := range s.Tenants {
			put(api.KindTenant, x.Name, x)
		}
		for _, x := range s.Segments {
			put(api.KindSegment, x.Tenant+"/"+x.Name, x)
		}
		for _, x := range s.Addresses {
			put(api.KindAddress, x.Name, x)
		}
		for _, x := range s.Policies {
			put(api.KindPolicy, x.Name, x)
		}
		return m
	}
	ma, mb := byName(a), byName(b)
	for _, kind := range []string{api.KindHost, api.KindTenant, api.KindSegment, api.KindAddress, api.KindPolicy} {
		add(kind, ma[kind], mb[kind])
	}
	rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	return evs
}

// moveTo brings the source to state b: by watch events, or (when
// snapshot) by replacing its state and compacting its log, so the agent
// must read a new snapshot.
func (s *fakeSource) moveTo(rng *rand.Rand, b api.Snapshot, snapshot bool) {
	if !snapshot {
		s.mu.Lock()
		a := s.state.Snapshot()
		s.mu.Unlock()
		for _, ev := range diff(rng, a, b) {
			s.event(ev)
		}
		return
	}
	s.mu.Lock()
	s.rev++
	b.Revision = s.rev
	s.state = model.New(b)
	s.mu.Unlock()
	s.compact()
}

// Any state can move to any other, by events or by a new snapshot, one
// step at a time or several before the agent catches up, and the agent
// converges to it (the model is tailscale's router test: random
// sequences of desired states against a stateful fake).
func TestConvergesBetweenRandomStates(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			w := newWorld()
			first := randomState(rng, w)
			first.Revision = 1
			r := newRig(t, first)
			for i := 1; i <= 6; i++ {
				r.kernel.AddLink(fmt.Sprintf("romana%d", i), "veth")
			}
			r.run(time.Hour) // no resync: only the changes drive it
			expect.Eventually(t, "first state", within, r.converged)
			for step := range 40 {
				// Sometimes several states in a row before the agent has
				// caught up with the first.
				for range 1 + rng.IntN(2) {
					next := randomState(rng, w)
					if rng.IntN(2) == 0 {
						r.src.mu.Lock()
						next = mutate(rng, w, r.src.state.Snapshot())
						r.src.mu.Unlock()
					}
					r.src.moveTo(rng, next, rng.IntN(5) == 0)
				}
				expect.Eventually(t, fmt.Sprintf("step %d", step), within, r.converged)
			}
		})
	}
}

// An address event marks only the managers that depend on this host's
// endpoints: the firewall manager does not run (it would recompile every
// policy); a policy event marks the firewall and not the routes.
func TestAddressEventDoesNotRunFirewall(t *testing.T) {
	w := newWorld()
	l := &loop{cfg: Config{Host: "h1"}, log: slog.New(slog.DiscardHandler), wake: make(chan struct{}, 1),
		feed: &follower{}}
	l.routes, l.firewall = &routeManager{cfg: &l.cfg}, &firewallManager{cfg: &l.cfg}
	for _, m := range []manager{l.firewall, l.routes, &steeringManager{}, &bgpManager{}, &statsManager{}} {
		l.slots = append(l.slots, &slot{manager: m})
	}
	snap := w.snap
	l.feed.snap = &snap
	l.take()
	dirty := func() []string {
		var out []string
		for _, s := range l.slots {
			if s.dirty != 0 {
				out = append(out, s.name())
			}
			s.dirty = 0
		}
		return out
	}
	if got := dirty(); !slices.Equal(got, []string{"firewall", "routes", "chains", "bgp"}) {
		t.Fatalf("a snapshot marks %v", got)
	}
	event := func(kind, name string, v any) []string {
		b, _ := json.Marshal(v)
		l.feed.events = []api.Event{{Revision: 9, Type: api.EventPut, Kind: kind, Name: name, Object: b, RevisionEnd: true}}
		l.take()
		return dirty()
	}
	if got := event(api.KindAddress, "a1", w.address("a1", 1, "acme", 1, 1, "romana1")); !slices.Equal(got, []string{"routes"}) {
		t.Fatalf("an address on this host marks %v, want only routes", got)
	}
	if got := event(api.KindAddress, "a2", w.address("a2", 2, "acme", 1, 1, "romana2")); len(got) != 0 {
		t.Fatalf("an address on another host marks %v, want nothing", got)
	}
	if got := event(api.KindPolicy, "p", api.Policy{Name: "p", Direction: []string{"ingress"}}); !slices.Equal(got, []string{"firewall"}) {
		t.Fatalf("a policy marks %v, want only the firewall", got)
	}
	// With a service chain, where functions run matters to the firewall
	// (anti-spoofing exemptions) and to steering.
	if got := event(api.KindChain, "c", api.Chain{Name: "c", ID: 1}); !slices.Equal(got, []string{"firewall", "chains"}) {
		t.Fatalf("a chain marks %v", got)
	}
	if got := event(api.KindAddress, "a3", w.address("a3", 2, "acme", 1, 3, "romana3")); !slices.Equal(got, []string{"firewall", "chains"}) {
		t.Fatalf("with chains, an address on another host marks %v", got)
	}
	if got := event(api.KindDevice, "tor", api.Device{Name: "tor"}); !slices.Equal(got, []string{"bgp"}) {
		t.Fatalf("a device marks %v", got)
	}
}

// The limiter lets a burst through at once, then one pass per interval.
func TestLimiter(t *testing.T) {
	l := newLimiter(100*time.Millisecond, 2)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := l.take(now); !ok {
			t.Fatalf("pass %d of the burst refused", i)
		}
	}
	ok, wait := l.take(now)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("third pass at once: ok %v, wait %v", ok, wait)
	}
	if ok, wait := l.take(now.Add(40 * time.Millisecond)); ok || wait != 60*time.Millisecond {
		t.Fatalf("40ms later: ok %v, wait %v", ok, wait)
	}
	if ok, _ := l.take(now.Add(100 * time.Millisecond)); !ok {
		t.Fatal("refused after the interval")
	}
	if ok, _ := l.take(now.Add(time.Hour)); !ok {
		t.Fatal("refused after an hour")
	}
	if ok, _ := l.take(now.Add(time.Hour)); !ok {
		t.Fatal("the burst did not refill")
	}
	if ok, _ := l.take(now.Add(time.Hour)); ok {
		t.Fatal("more than the burst")
	}
}

// A manager waiting for a retry (a route whose veth never appears, with a
// backoff of an hour) does not hold back changes that arrive meanwhile.
func TestFreshChangesDoNotWaitForRetry(t *testing.T) {
	w := newWorld()
	r := newRig(t, w.snap)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Resync: time.Hour, Source: r.src, Routes: r.routes, Firewall: r.fw,
			Metrics: r.metrics, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	}()
	defer func() { cancel(); <-done }()
	expect.Eventually(t, "initial", within, r.converged)
	r.src.put(api.KindAddress, "stuck", w.address("stuck", 1, "acme", 1, 9, "romananever"))
	expect.Eventually(t, "pending reported", within, func() error {
		if g := metric(t, r.reg, "romana_agent_routes_pending"); g != 1 {
			return fmt.Errorf("gauge %v", g)
		}
		return nil
	})
	r.src.put(api.KindTenant, "gamma", api.Tenant{Name: "gamma", ID: 7})
	r.kernel.AddLink("romana5", "veth")
	a := w.address("a5", 1, "acme", 1, 5, "romana5")
	r.src.put(api.KindAddress, "a5", a)
	expect.Eventually(t, "the tenant and the endpoint applied", within, r.converged)
}
