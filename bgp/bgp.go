// Package bgp is the host agent's BGP speaker: with GoBGP as a library it
// announces the host's CIDRs to the top-of-rack routers serving the host,
// withdraws them when stopped, and (when configured to accept) installs
// the routes those peers offer into the kernel, tagged with Protocol, as
// equal-cost multipath routes when several uplinks offer the best path.
// What to announce and to whom is decided by package fabric (HostBGP);
// this package only carries it out.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/romana/romana/fabric"
)

// Defaults of Config.
const (
	DefaultASN          = 64512
	DefaultHoldTime     = 90 * time.Second
	DefaultConnectRetry = 5 * time.Second
)

// Config configures a Speaker.
type Config struct {
	// ASN is the host's autonomous system (default DefaultASN). Hosts
	// usually share one private ASN; each top-of-rack has its own.
	ASN uint32
	// RouterID is the BGP identifier; default: HostBGP.RouterID (the
	// host's IPv4 underlay address).
	RouterID netip.Addr
	// ListenPort, when set, accepts sessions the peers open; 0 means the
	// speaker only connects out (to PeerPort).
	ListenPort int
	// PeerPort is the peers' BGP port (default 179).
	PeerPort int
	// Password enables TCP MD5 signatures (RFC 2385) on every session.
	Password string
	// HoldTime of sessions (default DefaultHoldTime; keepalives every third).
	HoldTime time.Duration
	// ConnectRetry is the delay between connection attempts and after a
	// session reset (default DefaultConnectRetry). A restarted peer is
	// reconnected within about this long.
	ConnectRetry time.Duration
	// GracefulRestart, when set, advertises the graceful restart
	// capability (RFC 4724) with this restart time: when the speaker's
	// process ends without Stop (a crash, or an agent restart), peers keep
	// its routes that long, until it reconnects and refreshes them.
	GracefulRestart time.Duration
	// Accept installs the routes peers offer (inside HostBGP.Accept, not
	// inside the host's own blocks) into Kernel.
	Accept bool
	Kernel Kernel
	Log    *slog.Logger
}

func (c *Config) defaults() error {
	if c.ASN == 0 {
		c.ASN = DefaultASN
	}
	if c.PeerPort == 0 {
		c.PeerPort = 179
	}
	if c.HoldTime <= 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.HoldTime < 3*time.Second {
		return fmt.Errorf("bgp: hold time %s: at least 3s", c.HoldTime)
	}
	if c.ConnectRetry <= 0 {
		c.ConnectRetry = DefaultConnectRetry
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Accept && c.Kernel == nil {
		return errors.New("bgp: Accept needs a Kernel")
	}
	if c.RouterID.IsValid() && !c.RouterID.Is4() {
		return fmt.Errorf("bgp: router id %s: must be an IPv4 address", c.RouterID)
	}
	return nil
}

// Speaker is one host's BGP speaker. Its methods are safe for concurrent
// use; Apply is idempotent.
type Speaker struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	srv     *server.BgpServer // nil until the first Apply
	peers   map[netip.Addr]fabric.Peer
	paths   map[netip.Prefix][]byte // announced prefix -> GoBGP path uuid
	accept  []netip.Prefix
	own     []netip.Prefix
	stopped bool

	kick   chan struct{} // capacity 1: sessions or learned routes changed
	cancel context.CancelFunc
	// lastLearnErr is the last SyncLearned error logged.
	lastLearnErr string
}

// New returns a speaker; it starts GoBGP at the first Apply, once the
// router id is known.
func New(cfg Config) (*Speaker, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Speaker{cfg: cfg, log: cfg.Log.With("component", "bgp"), peers: map[netip.Addr]fabric.Peer{},
		paths: map[netip.Prefix][]byte{}, kick: make(chan struct{}, 1)}, nil
}

// start runs GoBGP with router id rid and the loop that installs learned
// routes. Called with s.mu held.
func (s *Speaker) start(ctx context.Context, rid netip.Addr) error {
	srv := server.NewBgpServer(server.LoggerOption(&logger{log: s.log}))
	go srv.Serve()
	listen := int32(-1)
	if s.cfg.ListenPort > 0 {
		listen = int32(s.cfg.ListenPort)
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: s.cfg.ASN, RouterId: rid.String(), ListenPort: listen}}); err != nil {
		srv.Stop()
		return fmt.Errorf("start bgp (as %d, router id %s): %w", s.cfg.ASN, rid, err)
	}
	if err := noTransit(ctx, srv); err != nil {
		srv.Stop()
		return err
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	err := srv.WatchEvent(lctx, &api.WatchEventRequest{
		Peer:  &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_ADJIN}}},
	}, func(r *api.WatchEventResponse) {
		if p := r.GetPeer(); p != nil && p.Type == api.WatchEventResponse_PeerEvent_STATE && p.Peer.GetState() != nil {
			st := p.Peer.State
			s.log.Info("bgp session", "peer", st.NeighborAddress, "as", st.PeerAsn, "state", sessionState(st.SessionState))
		}
		s.poke()
	})
	if err != nil {
		cancel()
		srv.Stop()
		return fmt.Errorf("watch bgp events: %w", err)
	}
	s.srv, s.cancel = srv, cancel
	s.log.Info("bgp started", "as", s.cfg.ASN, "routerId", rid, "listenPort", listen, "accept", s.cfg.Accept,
		"gracefulRestart", s.cfg.GracefulRestart)
	return nil
}

// noTransit makes the speaker announce only its own prefixes: a host is
// never a transit path between its uplinks.
func noTransit(ctx context.Context, srv *server.BgpServer) error {
	pol := &api.Policy{Name: "romana-local-only", Statements: []*api.Statement{{
		Name:       "local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}}}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return fmt.Errorf("bgp export policy: %w", err)
	}
	if err := srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_EXPORT, Policies: []*api.Policy{{Name: pol.Name}},
		DefaultAction: api.RouteAction_REJECT,
	}}); err != nil {
		return fmt.Errorf("bgp export policy: %w", err)
	}
	return nil
}

func sessionState(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_ESTABLISHED:
		return "established"
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	}
	return "unknown"
}

func (s *Speaker) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Apply makes the speaker announce d.Announce to d.Peers (adding, changing
// and removing peers and prefixes as needed) and accept learned routes
// within d.Accept. It goes on after a failed peer or prefix and returns
// every failure; the next Apply retries them.
func (s *Speaker) Apply(ctx context.Context, d fabric.HostBGP) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("bgp: speaker stopped")
	}
	if s.srv == nil {
		rid := s.cfg.RouterID
		if !rid.IsValid() {
			rid = d.RouterID
		}
		if !rid.IsValid() {
			return fmt.Errorf("bgp: no router id for host %s (its ip is not IPv4): set one", d.Host)
		}
		if err := s.start(ctx, rid); err != nil {
			return err
		}
	}
	var errs []error
	want := map[netip.Addr]fabric.Peer{}
	for _, p := range d.Peers {
		want[p.Addr] = p
	}
	for addr, cur := range s.peers {
		if w, ok := want[addr]; ok && w.ASN == cur.ASN {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("remove bgp peer %s: %w", cur, err))
			continue
		}
		delete(s.peers, addr)
		s.log.Info("bgp peer removed", "peer", cur.String())
	}
	for _, p := range d.Peers {
		if _, ok := s.peers[p.Addr]; ok {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConf(p)}); err != nil {
			errs = append(errs, fmt.Errorf("add bgp peer %s: %w", p, err))
			continue
		}
		s.peers[p.Addr] = p
		s.log.Info("bgp peer added", "peer", p.String())
	}
	announce := map[netip.Prefix]bool{}
	for _, p := range d.Announce {
		announce[p] = true
	}
	for p, id := range s.paths {
		if announce[p] {
			continue
		}
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.paths, p)
		s.log.Info("bgp withdrew", "prefix", p)
	}
	for _, p := range d.Announce {
		if _, ok := s.paths[p]; ok {
			continue
		}
		path, err := localPath(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
			continue
		}
		s.paths[p] = resp.Uuid
		s.log.Info("bgp announced", "prefix", p)
	}
	s.accept, s.own = slices.Clone(d.Accept), slices.Clone(d.Announce)
	s.poke()
	return errors.Join(errs...)
}

func family(is4 bool) *api.Family {
	if is4 {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// localPath is the path announcing p with ourselves as the next hop (GoBGP
// sets the session's local address toward each eBGP peer).
func localPath(p netip.Prefix) (*api.Path, error) {
	origin := bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	var nlri bgp.AddrPrefixInterface
	var attrs []bgp.PathAttributeInterface
	if p.Addr().Is4() {
		nlri = bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
		attrs = []bgp.PathAttributeInterface{origin, bgp.NewPathAttributeNextHop("0.0.0.0")}
	} else {
		nlri = bgp.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
		attrs = []bgp.PathAttributeInterface{origin, bgp.NewPathAttributeMpReachNLRI("::", []bgp.AddrPrefixInterface{nlri})}
	}
	path, err := apiutil.NewPath(nlri, false, attrs, time.Now())
	if err != nil {
		return nil, fmt.Errorf("announce %s: %w", p, err)
	}
	return path, nil
}

// peerConf is GoBGP's configuration of one peer.
func (s *Speaker) peerConf(p fabric.Peer) *api.Peer {
	hold := uint64(s.cfg.HoldTime / time.Second)
	retry := uint64(max(s.cfg.ConnectRetry/time.Second, 1))
	af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: family(p.Addr.Is4()), Enabled: true}}
	peer := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Addr.String(), PeerAsn: p.ASN, AuthPassword: s.cfg.Password,
			Description: p.Device},
		Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: hold, KeepaliveInterval: max(hold/3, 1),
			ConnectRetry: retry, IdleHoldTimeAfterReset: retry}},
		Transport: &api.Transport{RemotePort: uint32(s.cfg.PeerPort), PassiveMode: false},
		AfiSafis:  []*api.AfiSafi{af},
	}
	if gr := s.cfg.GracefulRestart; gr > 0 {
		peer.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(gr / time.Second)}
		af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return peer
}

// Changed receives a value when a session changed state, a peer sent or
// withdrew a route, or Apply changed what is accepted: the caller (the
// agent's loop, which owns the kernel) then calls SyncLearned. The speaker
// itself never writes to the kernel.
func (s *Speaker) Changed() <-chan struct{} { return s.kick }

// SyncLearned installs the routes the peers offer (within the accepted
// prefixes, outside the host's own) into Config.Kernel and removes those
// no longer offered. Without Config.Accept, or before the first Apply, it
// does nothing. Call it at every Changed and periodically, to repair drift.
func (s *Speaker) SyncLearned(ctx context.Context) error {
	s.mu.Lock()
	started := s.srv != nil && !s.stopped
	s.mu.Unlock()
	if !s.cfg.Accept || !started {
		return nil
	}
	routes, err := s.learned(ctx)
	if err == nil {
		var n int
		n, err = syncKernel(ctx, s.cfg.Kernel, routes)
		if n > 0 {
			s.log.Info("learned routes installed", "routes", len(routes), "changed", n)
		}
	}
	if err != nil {
		if msg := err.Error(); msg != s.lastLearnErr {
			s.log.Warn("install learned routes", "err", err)
			s.lastLearnErr = msg
		}
		return fmt.Errorf("install learned routes: %w", err)
	}
	s.lastLearnErr = ""
	return nil
}

// learned computes the routes to install from what the peers sent.
func (s *Speaker) learned(ctx context.Context) ([]Route, error) {
	s.mu.Lock()
	peers := make([]netip.Addr, 0, len(s.peers))
	for a := range s.peers {
		peers = append(peers, a)
	}
	accept, own, srv := s.accept, s.own, s.srv
	s.mu.Unlock()
	var cands []candidate
	for _, a := range peers {
		err := srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_ADJ_IN, Name: a.String(), Family: family(a.Is4())},
			func(d *api.Destination) {
				for _, p := range d.Paths {
					if c, ok := candidateOf(p, s.cfg.ASN); ok {
						cands = append(cands, c)
					}
				}
			})
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Other errors mean the peer is gone or not up: it offers nothing.
	}
	return selectRoutes(cands, accept, own), nil
}

// candidateOf decodes a received path; ok is false for withdrawals, paths
// through our own AS (a loop) and paths it cannot read.
func candidateOf(p *api.Path, ownASN uint32) (candidate, bool) {
	if p.IsWithdraw || p.Filtered {
		return candidate{}, false
	}
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return candidate{}, false
	}
	dst, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		return candidate{}, false
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return candidate{}, false
	}
	c := candidate{dst: dst.Masked(), origin: bgp.BGP_ORIGIN_ATTR_TYPE_INCOMPLETE}
	for _, a := range attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			c.nextHop, _ = netip.AddrFromSlice(a.Value)
		case *bgp.PathAttributeMpReachNLRI:
			c.nextHop, _ = netip.AddrFromSlice(a.Nexthop)
		case *bgp.PathAttributeOrigin:
			c.origin = a.Value
		case *bgp.PathAttributeAsPath:
			for _, seg := range a.Value {
				if slices.Contains(seg.GetAS(), ownASN) {
					return candidate{}, false
				}
				if seg.GetType() == bgp.BGP_ASPATH_ATTR_TYPE_SET {
					c.pathLen++
				} else {
					c.pathLen += len(seg.GetAS())
				}
			}
		}
	}
	c.nextHop = c.nextHop.Unmap()
	return c, c.nextHop.IsValid()
}

// PeerStatus is one session's state.
type PeerStatus struct {
	fabric.Peer
	State       string // "established", "active", "idle", ...
	Established bool
	Received    uint64 // prefixes received from the peer
}

// Status is the speaker's state.
type Status struct {
	Peers     []PeerStatus   // by address
	Announced []netip.Prefix // sorted
}

// Status returns the sessions and what is announced.
func (s *Speaker) Status(ctx context.Context) (Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st Status
	for p := range s.paths {
		st.Announced = append(st.Announced, p)
	}
	slices.SortFunc(st.Announced, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if s.srv == nil {
		return st, nil
	}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State == nil {
			return
		}
		a, err := netip.ParseAddr(p.State.NeighborAddress)
		if err != nil {
			return
		}
		ps := PeerStatus{Peer: s.peers[a.Unmap()], State: sessionState(p.State.SessionState)}
		ps.Established = p.State.SessionState == api.PeerState_ESTABLISHED
		for _, af := range p.AfiSafis {
			if af.State != nil {
				ps.Received += af.State.Received
			}
		}
		st.Peers = append(st.Peers, ps)
	})
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return a.Addr.Compare(b.Addr) })
	return st, err
}

// WaitEstablished waits until every configured peer's session is up.
func (s *Speaker) WaitEstablished(ctx context.Context) error {
	for {
		st, err := s.Status(ctx)
		if err == nil {
			up := 0
			for _, p := range st.Peers {
				if p.Established {
					up++
				}
			}
			if up == len(st.Peers) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bgp sessions not established: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop withdraws every announced prefix, closes the sessions (peers drop
// whatever they learned from us at once, graceful restart or not) and
// removes the routes it installed. The speaker cannot be used again.
//
// To let peers keep the host's routes across an agent restart, do not
// call Stop: with GracefulRestart set, ending the process leaves the
// routes in place for the restart time.
func (s *Speaker) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	srv := s.srv
	var errs []error
	if srv != nil {
		for p, id := range s.paths {
			if err := srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
				errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			}
			delete(s.paths, p)
		}
	}
	s.mu.Unlock()
	if srv != nil {
		s.cancel()
		if err := srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
			errs = append(errs, fmt.Errorf("stop bgp: %w", err))
		}
		s.log.Info("bgp stopped: prefixes withdrawn, sessions closed")
	}
	if s.cfg.Kernel != nil {
		if _, err := syncKernel(ctx, s.cfg.Kernel, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Cleanup removes every route tagged Protocol from the kernel.
func Cleanup(ctx context.Context, k Kernel) error {
	_, err := syncKernel(ctx, k, nil)
	return err
}
