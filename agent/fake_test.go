package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/model"
	"github.com/romana/romana/plan"
)

// fakeSource is an in-memory romanad: a state with a revision, an event
// log that can be compacted, Snapshot and Watch with romanad's semantics.
type fakeSource struct {
	mu            sync.Mutex
	state         *model.Model
	rev           int64
	log           []api.Event
	compacted     int64         // events at or below this revision are gone
	changed       chan struct{} // closed and replaced at every change
	failSnapshots int           // the next n Snapshot calls fail
	snapshots     int           // Snapshot calls so far (failed ones too)
}

func newFakeSource(s api.Snapshot) *fakeSource {
	return &fakeSource{state: model.New(s), rev: s.Revision, changed: make(chan struct{})}
}

func (s *fakeSource) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *fakeSource) put(kind, name string, obj any) {
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	s.event(api.Event{Type: api.EventPut, Kind: kind, Name: name, Object: b})
}

func (s *fakeSource) del(kind, name string) {
	s.event(api.Event{Type: api.EventDelete, Kind: kind, Name: name})
}

func (s *fakeSource) event(ev api.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	ev.Revision, ev.RevisionEnd = s.rev, true
	if _, _, err := s.state.Apply(ev); err != nil {
		panic(err)
	}
	s.log = append(s.log, ev)
	s.broadcast()
}

// raw sends an event without applying it to the state (a malformed one).
func (s *fakeSource) raw(ev api.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	ev.Revision, ev.RevisionEnd = s.rev, true
	s.log = append(s.log, ev)
	s.broadcast()
}

// compact forgets the event log; open watches end with Gone.
func (s *fakeSource) compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compacted = s.rev
	s.log = nil
	s.broadcast()
}

func (s *fakeSource) failNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failSnapshots = n
}

func (s *fakeSource) snapshotCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshots
}

func (s *fakeSource) Snapshot(ctx context.Context) (api.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snapshots++
	if s.failSnapshots > 0 {
		s.failSnapshots--
		return api.Snapshot{}, api.Errorf(api.ReasonUnavailable, "fake romanad: store unavailable")
	}
	snap := s.state.Snapshot()
	snap.Revision = s.rev
	return snap, nil
}

func (s *fakeSource) Watch(ctx context.Context, from int64, fn func(api.Event) error) error {
	gone := api.Errorf(api.ReasonGone, "revision %d compacted", from)
	next := from
	for {
		s.mu.Lock()
		if next <= s.compacted {
			s.mu.Unlock()
			return gone
		}
		var evs []api.Event
		for _, ev := range s.log {
			if ev.Revision >= next {
				evs = append(evs, ev)
			}
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

// world builds romanad states: network net1 10.0.0.0/8 with host 8 |
// tenant 4 | segment 4; hosts h1 and h2 at 192.168.0.1 and .2.
type world struct {
	plan *plan.Plan
	snap api.Snapshot
}

func newWorld() *world {
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		panic(err)
	}
	w := &world{plan: p, snap: api.Snapshot{Revision: 1, Networks: []api.Network{n}}}
	w.snap.Hosts = []api.Host{w.host("h1", 1), w.host("h2", 2)}
	w.snap.Tenants = []api.Tenant{{Name: "acme", ID: 1}, {Name: "beta", ID: 2, Isolation: api.IsolationSegment}}
	w.snap.Segments = []api.Segment{{Tenant: "acme", Name: "default", ID: 0}, {Tenant: "beta", Name: "web", ID: 0}}
	return w
}

func (w *world) host(name string, id uint64) api.Host {
	c, err := w.plan.HostCIDR(plan.Loc{Host: id})
	if err != nil {
		panic(err)
	}
	return api.Host{Name: name, IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(id)}),
		Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: id}, CIDR: c}}}
}

func (w *world) address(name string, host uint64, tenant string, tid, ep uint64, iface string) api.Address {
	ip, err := w.plan.Address(plan.Loc{Host: host}, tid, 0, ep)
	if err != nil {
		panic(err)
	}
	return api.Address{Name: name, IP: ip, Network: "net1", Host: "h" + string(rune('0'+host)), Tenant: tenant, Segment: "default", Interface: iface}
}

// fakeUnderlay is h1's links and neighbour table, in memory: eth0 on
// 192.168.0.0/24, and the MACs of 192.168.0.2-9 (the other hosts a world
// has). Resolve records what it was asked; Watch reports nothing.
type fakeUnderlay struct {
	mu       sync.Mutex
	u        hoststate.Underlay
	resolved []netip.Addr
}

func newFakeUnderlay() *fakeUnderlay {
	f := &fakeUnderlay{u: hoststate.Underlay{Links: []hoststate.Link{
		{Name: "lo", Kind: "device", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
		{Name: "eth0", Kind: "device", Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.0.1/24")}},
	}}}
	for i := 2; i <= 9; i++ {
		f.u.Neighbors = append(f.u.Neighbors, hoststate.Neighbor{IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}), Link: "eth0",
			MAC: fmt.Sprintf("02:00:c0:a8:00:%02x", i)})
	}
	return f
}

func (f *fakeUnderlay) Read(ctx context.Context) (hoststate.Underlay, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.u
	u.Links = slices.Clone(u.Links)
	u.Neighbors = slices.Clone(u.Neighbors)
	return u, ctx.Err()
}

func (f *fakeUnderlay) Resolve(ctx context.Context, ips []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolved = append(f.resolved, ips...)
	return nil
}

func (f *fakeUnderlay) Watch(ctx context.Context, changed func(netip.Addr)) error {
	<-ctx.Done()
	return nil
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
