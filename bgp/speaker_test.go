//go:debug multipathtcp=0

package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/romana/romana/expect"
	"github.com/romana/romana/fabric"
)

// These tests run the speaker against GoBGP "top-of-rack" routers on
// loopback addresses (127.0.0.2, 127.0.0.3) of this namespace: no
// namespace and no root needed. The tests with BIRD in namespaces are in
// bird_test.go.

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// freePort returns a TCP port free on 127.0.0.2 and 127.0.0.3.
func freePort(t testing.TB) int {
	for i := 0; i < 20; i++ {
		l1, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.3:%d", port))
		l1.Close()
		if err == nil {
			l2.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// tor is a GoBGP router standing in for a top-of-rack.
type tor struct {
	t        testing.TB
	srv      *server.BgpServer
	addr     string
	port     int
	asn      uint32
	password string
}

func startToR(t testing.TB, addr string, port int, asn uint32, password string, announce ...string) *tor {
	t.Helper()
	r := &tor{t: t, srv: server.NewBgpServer(server.LoggerOption(&logger{log: testLog(t).With("tor", addr)})), addr: addr, port: port, asn: asn, password: password}
	go r.srv.Serve()
	ctx := context.Background()
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: asn, RouterId: addr, ListenPort: int32(port),
		ListenAddresses: []string{addr}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: DefaultASN, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
	}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range announce {
		path, err := localPath(netip.MustParsePrefix(a))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(r.stop)
	return r
}

func (r *tor) stop() { r.srv.StopBgp(context.Background(), &api.StopBgpRequest{}) }

// received returns the prefixes the router learned from the host.
func (r *tor) received() []netip.Prefix {
	var out []netip.Prefix
	err := r.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_ADJ_IN, Name: "127.0.0.1", Family: family(true)},
		func(d *api.Destination) {
			for _, p := range d.Paths {
				if !p.IsWithdraw {
					out = append(out, netip.MustParsePrefix(d.Prefix))
					break
				}
			}
		})
	if err != nil {
		return nil
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

func (r *tor) peer() fabric.Peer {
	return fabric.Peer{Device: "tor-" + r.addr, Addr: netip.MustParseAddr(r.addr), ASN: r.asn}
}

// wait bounds every expect.Eventually of the BGP tests.
const wait = 20 * time.Second

func newSpeaker(t testing.TB, port int, k Kernel, password string) *Speaker {
	t.Helper()
	s, err := New(Config{PeerPort: port, HoldTime: 9 * time.Second, ConnectRetry: time.Second, Accept: k != nil, Kernel: k,
		Password: password, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { installLearned(ctx, s, time.Second); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// installLearned does what the agent's loop does with a speaker: install
// learned routes at every change and every interval, until ctx ends.
func installLearned(ctx context.Context, s *Speaker, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.Changed():
		case <-t.C:
		}
		s.SyncLearned(ctx)
	}
}

func hostBGP(announce []string, peers ...fabric.Peer) fabric.HostBGP {
	d := fabric.HostBGP{Host: "h1", RouterID: netip.MustParseAddr("192.0.2.11"), Peers: peers,
		Accept: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for _, a := range announce {
		d.Announce = append(d.Announce, netip.MustParsePrefix(a))
	}
	return d
}

// TestAnnounceLearnECMPReconnectWithdraw: the host announces its block to
// two top-of-racks and learns an aggregate from both (ECMP); a restarted
// top-of-rack is reconnected; withdrawals follow Apply and Stop.
func TestAnnounceLearnECMPReconnectWithdraw(t *testing.T) {
	ctx := context.Background()
	port := freePort(t)
	// Both offer rack r2 (one AS hop each) and, to be ignored, the host's
	// own block echoed back and a default route.
	a := startToR(t, "127.0.0.2", port, 65101, "", "10.16.0.0/12", "10.1.0.0/16", "0.0.0.0/0")
	b := startToR(t, "127.0.0.3", port, 65102, "", "10.16.0.0/12")
	k := NewFake()
	s := newSpeaker(t, port, k, "")
	if err := s.Apply(ctx, hostBGP([]string{"10.1.0.0/16"}, a.peer(), b.peer())); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, hostBGP([]string{"10.1.0.0/16"}, a.peer(), b.peer())); err != nil { // idempotent
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := s.WaitEstablished(wctx); err != nil {
		t.Fatal(err)
	}
	own := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	for _, r := range []*tor{a, b} {
		expect.Eventually(t, "tor "+r.addr+" learns the host's block", wait, func() error {
			if got := r.received(); !reflect.DeepEqual(got, own) {
				return fmt.Errorf("received %v", got)
			}
			return nil
		})
	}
	ecmp := []Route{{Dst: netip.MustParsePrefix("10.16.0.0/12"), Via: []netip.Addr{addr("127.0.0.2"), addr("127.0.0.3")}}}
	kernelIs := func(want []Route) func() error {
		return func() error {
			got, _ := k.Routes(ctx)
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("kernel has %v, want %v", got, want)
			}
			return nil
		}
	}
	expect.Eventually(t, "ECMP route over both uplinks", wait, kernelIs(ecmp))

	// One top-of-rack goes away: its next hop leaves the route.
	a.stop()
	expect.Eventually(t, "route via the remaining uplink", wait, kernelIs([]Route{{Dst: ecmp[0].Dst, Via: []netip.Addr{addr("127.0.0.3")}}}))
	// It comes back (a new process on the same address): reconnected, ECMP again.
	a = startToR(t, "127.0.0.2", port, 65101, "", "10.16.0.0/12")
	expect.Eventually(t, "reconnect after the peer restarted", wait, func() error {
		if got := a.received(); !reflect.DeepEqual(got, own) {
			return fmt.Errorf("restarted tor received %v", got)
		}
		return nil
	})
	expect.Eventually(t, "ECMP again", wait, kernelIs(ecmp))

	// A new block is announced, the old one withdrawn.
	if err := s.Apply(ctx, hostBGP([]string{"10.2.0.0/16"}, a.peer(), b.peer())); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "re-announce", wait, func() error {
		if got := b.received(); !reflect.DeepEqual(got, []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}) {
			return fmt.Errorf("received %v", got)
		}
		return nil
	})
	// A peer removed from the desired state is dropped.
	if err := s.Apply(ctx, hostBGP([]string{"10.2.0.0/16"}, b.peer())); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "peer removed", wait, func() error {
		if got := a.received(); len(got) != 0 {
			return fmt.Errorf("removed peer still has %v", got)
		}
		return nil
	})
	st, err := s.Status(ctx)
	if err != nil || len(st.Peers) != 1 || st.Peers[0].Addr != addr("127.0.0.3") || !st.Peers[0].Established {
		t.Errorf("status = %+v, %v", st, err)
	}
	// Stop withdraws everything and removes the learned routes.
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "withdrawn at stop", wait, func() error {
		if got := b.received(); len(got) != 0 {
			return fmt.Errorf("still has %v", got)
		}
		return nil
	})
	if got, _ := k.Routes(ctx); len(got) != 0 {
		t.Errorf("learned routes left after stop: %v", got)
	}
	if err := s.Apply(ctx, hostBGP(nil)); err == nil {
		t.Error("Apply after Stop succeeded")
	}
}

// TestMD5: a session comes up only with the peer's password. With the
// wrong one, the speaker's connection attempts reach the top-of-rack and
// its kernel drops them for their signature (TcpExt TCPMD5Failure counts
// them; the count is of this namespace, where nothing else signs).
func TestMD5(t *testing.T) {
	ctx := context.Background()
	port := freePort(t)
	r := startToR(t, "127.0.0.2", port, 65101, "s3cret")
	netstat := func() (string, error) { b, err := os.ReadFile("/proc/net/netstat"); return string(b), err }
	refused := md5Refused(t, netstat)
	wrong := newSpeaker(t, port, nil, "wrong")
	if err := wrong.Apply(ctx, hostBGP([]string{"10.1.0.0/16"}, r.peer())); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "connection attempts with the wrong password refused", wait, func() error {
		if n := md5Refused(t, netstat) - refused; n < 2 {
			return fmt.Errorf("%d segments refused for their MD5 signature, want 2 or more", n)
		}
		return nil
	})
	if st, _ := wrong.Status(ctx); len(st.Peers) != 1 || st.Peers[0].Established {
		t.Fatalf("session with the wrong password: %+v", st)
	}
	if got := r.received(); len(got) != 0 {
		t.Fatalf("learned %v over a session with the wrong password", got)
	}
	wrong.Stop(ctx)
	right := newSpeaker(t, port, nil, "s3cret")
	if err := right.Apply(ctx, hostBGP([]string{"10.1.0.0/16"}, r.peer())); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "session with the right password", wait, func() error {
		if got := r.received(); len(got) != 1 {
			return fmt.Errorf("received %v", got)
		}
		return nil
	})
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Accept: true},
		{HoldTime: time.Second},
		{RouterID: netip.MustParseAddr("fd00::1")},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(context.Background(), fabric.HostBGP{Host: "h6"}); err == nil {
		t.Error("Apply without any router id succeeded")
	}
}
