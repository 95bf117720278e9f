package bgp

// Tests against real BIRD 2 routers in network namespaces. The speaker
// runs as this test binary re-executed inside the host's namespace (see
// TestMain), exactly as the agent runs it: every socket it opens and every
// route it installs is in that namespace.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/bird"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/fabric"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

const helperEnv = "ROMANA_BGP_TEST_SPEAKER"

// helperConfig is what the re-executed speaker reads (again at SIGHUP).
type helperConfig struct {
	Password        string
	GracefulRestart time.Duration
	Accept          bool
	// Withdraw connects, announces nothing (peers flush what a previous
	// run left with graceful restart), then stops: the agent's --cleanup.
	Withdraw bool
	Host     fabric.HostBGP
}

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		if err := runSpeaker(path); err != nil {
			fmt.Fprintln(os.Stderr, "speaker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func readHelperConfig(path string) (helperConfig, error) {
	var c helperConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

// runSpeaker is the re-executed process: a speaker with the real kernel.
func runSpeaker(path string) error {
	c, err := readHelperConfig(path)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	k, err := NewKernel()
	if err != nil {
		return err
	}
	s, err := New(Config{Password: c.Password, GracefulRestart: c.GracefulRestart, Accept: c.Accept, Kernel: k,
		HoldTime: 9 * time.Second, ConnectRetry: time.Second, Log: log})
	if err != nil {
		return err
	}
	ctx := context.Background()
	go installLearned(ctx, s, time.Second)
	if c.Withdraw {
		d := c.Host
		d.Announce = nil
		if err := s.Apply(ctx, d); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := s.WaitEstablished(wctx); err != nil {
			return err
		}
		time.Sleep(time.Second) // let the End-of-RIB reach the peers
		return s.Stop(ctx)
	}
	if err := s.Apply(ctx, c.Host); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM)
	for x := range sig {
		if x == syscall.SIGTERM {
			if c.GracefulRestart > 0 {
				log.Info("graceful restart: exiting without withdrawing")
				return nil
			}
			return s.Stop(ctx)
		}
		if c, err = readHelperConfig(path); err != nil {
			return err
		}
		if err := s.Apply(ctx, c.Host); err != nil {
			log.Error("apply", "err", err)
		}
	}
	return nil
}

// speakerProc is a running re-executed speaker.
type speakerProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	conf string
	log  string
}

func startSpeaker(t *testing.T, host *sim.Host, c helperConfig) *speakerProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &speakerProc{conf: filepath.Join(dir, "speaker.json"), log: filepath.Join(dir, "speaker.log"), done: make(chan struct{})}
	p.write(t, c)
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = host.Command(context.Background(), exe, "-test.run=^$")
	p.cmd.Env = append(os.Environ(), helperEnv+"="+p.conf)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("speaker log:\n%s", b)
		}
	})
	return p
}

func (p *speakerProc) write(t *testing.T, c helperConfig) {
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.conf, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (p *speakerProc) signal(t *testing.T, s syscall.Signal) {
	if err := p.cmd.Process.Signal(s); err != nil {
		t.Fatal(err)
	}
}

func (p *speakerProc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("speaker did not exit")
	}
	if !p.cmd.ProcessState.Success() {
		b, _ := os.ReadFile(p.log)
		t.Fatalf("speaker failed: %v\n%s", p.cmd.ProcessState, b)
	}
}

func (p *speakerProc) kill() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

func requireBird(t *testing.T) {
	t.Helper()
	simtest.Require(t)
	if _, err := os.Stat(bird.Daemon); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs %s (Debian bird2): %v", bird.Daemon, err)
		}
		t.Skipf("needs %s (Debian bird2): %v", bird.Daemon, err)
	}
}

// birdToR starts a BIRD top-of-rack in ns peering with host h1 at 192.168.1.11.
func birdToR(t *testing.T, ns *sim.Host, asn uint32, opts bird.Neighbor) (*bird.Router, string) {
	t.Helper()
	r := bird.New(ns.Name, ns.Namespace.Name, t.TempDir())
	n := bird.Neighbor{Name: "h1", Local: ns.Addr.Addr(), Addr: netip.MustParseAddr("192.168.1.11"), ASN: DefaultASN,
		Import: "where net ~ " + bird.PrefixSet([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, 16),
		Export: `where proto = "romana_aggr"`, HoldTime: 9, ConnectRetry: 1,
		Password: opts.Password, GracefulRestart: opts.GracefulRestart}
	conf := bird.Config{RouterID: ns.Addr.Addr(), ASN: asn, Aggregates: []netip.Prefix{netip.MustParsePrefix("10.16.0.0/12")},
		Neighbors: []bird.Neighbor{n}}.Render()
	if err := r.Start(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("bird %s log:\n%s", r.Name, r.Tail(30))
		}
	})
	return r, conf
}

func networks(t *testing.T, r *bird.Router) []netip.Prefix {
	t.Helper()
	nets, err := r.Networks(context.Background(), "protocol", "h1")
	if err != nil {
		t.Fatal(err)
	}
	return nets
}

func birdHas(t *testing.T, r *bird.Router, want ...string) func() error {
	var w []netip.Prefix
	for _, s := range want {
		w = append(w, netip.MustParsePrefix(s))
	}
	return func() error {
		if got := networks(t, r); !reflect.DeepEqual(got, w) {
			return fmt.Errorf("bird %s has %v from h1, want %v", r.Name, got, w)
		}
		return nil
	}
}

func established(t *testing.T, r *bird.Router, want bool) func() error {
	return func() error {
		up, err := r.Established(context.Background(), "h1")
		if err != nil {
			return err
		}
		if up != want {
			return fmt.Errorf("bird %s: session with h1 established=%v, want %v", r.Name, up, want)
		}
		return nil
	}
}

func ipRoute(t *testing.T, ns *sim.Host, args ...string) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), append([]string{"ip", "-4", "route", "show"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func hostBGPFor(announce ...string) fabric.HostBGP {
	return hostBGP(announce,
		fabric.Peer{Device: "tora", Addr: netip.MustParseAddr("192.168.1.1"), ASN: 65101},
		fabric.Peer{Device: "torb", Addr: netip.MustParseAddr("192.168.1.2"), ASN: 65102})
}

// TestBIRDSessionsAnnounceLearnRestartWithdraw: the speaker peers with two
// BIRD top-of-racks; both learn (and install) the host's block, the host
// installs their aggregate as one ECMP route; a restarted BIRD is
// reconnected; a changed announcement replaces the old; stopping
// withdraws everything.
func TestBIRDSessionsAnnounceLearnRestartWithdraw(t *testing.T) {
	requireBird(t)
	lab := simtest.New(t)
	ctx := context.Background()
	h1, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.1.11/24"))
	if err != nil {
		t.Fatal(err)
	}
	nsA, err := lab.AddHost(ctx, "tora", netip.MustParsePrefix("192.168.1.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	nsB, err := lab.AddHost(ctx, "torb", netip.MustParsePrefix("192.168.1.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	a, confA := birdToR(t, nsA, 65101, bird.Neighbor{})
	b, _ := birdToR(t, nsB, 65102, bird.Neighbor{})
	sp := startSpeaker(t, h1, helperConfig{Accept: true, Host: hostBGPFor("10.1.0.0/16")})

	for _, r := range []*bird.Router{a, b} {
		expect.Eventually(t, "session", wait, established(t, r, true))
		expect.Eventually(t, "bird learns the host's block", wait, birdHas(t, r, "10.1.0.0/16"))
	}
	if out := ipRoute(t, nsA, "10.1.0.0/16"); !strings.Contains(out, "via 192.168.1.11") || !strings.Contains(out, "proto bird") {
		t.Errorf("tora's kernel lacks the host's block via the host: %q", out)
	}
	expect.Eventually(t, "ECMP route on the host", wait, func() error {
		out := ipRoute(t, h1, "proto", "191")
		if !strings.Contains(out, "10.16.0.0/12") || !strings.Contains(out, "nexthop via 192.168.1.1 ") || !strings.Contains(out, "nexthop via 192.168.1.2 ") {
			return fmt.Errorf("host routes proto 191: %q", out)
		}
		return nil
	})

	// BIRD restarts: GoBGP reconnects, the route comes back.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "host route shrinks to the remaining uplink", wait, func() error {
		out := ipRoute(t, h1, "proto", "191")
		if !strings.Contains(out, "10.16.0.0/12 via 192.168.1.2") {
			return fmt.Errorf("host routes proto 191: %q", out)
		}
		return nil
	})
	if err := a.Start(ctx, confA); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "reconnected after BIRD restarted", wait, established(t, a, true))
	expect.Eventually(t, "restarted bird learns the block again", wait, birdHas(t, a, "10.1.0.0/16"))

	// A new desired state: the old block is withdrawn, the new announced.
	sp.write(t, helperConfig{Accept: true, Host: hostBGPFor("10.2.0.0/16")})
	sp.signal(t, syscall.SIGHUP)
	for _, r := range []*bird.Router{a, b} {
		expect.Eventually(t, "re-announce", wait, birdHas(t, r, "10.2.0.0/16"))
	}

	// Stop: withdrawn everywhere, learned routes removed from the host.
	sp.signal(t, syscall.SIGTERM)
	sp.wait(t)
	for _, r := range []*bird.Router{a, b} {
		expect.Eventually(t, "withdrawn at stop", wait, birdHas(t, r))
	}
	if out := ipRoute(t, nsA, "10.2.0.0/16"); strings.Contains(out, "10.2.0.0/16") {
		t.Errorf("tora's kernel still routes the withdrawn block: %q", out)
	}
	if out := ipRoute(t, h1, "proto", "191"); out != "" {
		t.Errorf("learned routes left on the host: %q", out)
	}
}

// TestBIRDGracefulRestartAndMD5: sessions need the password; with graceful
// restart, a crashed speaker's routes stay on BIRD until it comes back,
// then only what it announces again remains; a stop leaves them for the
// restart time and the agent's cleanup (withdraw mode) flushes them.
func TestBIRDGracefulRestartAndMD5(t *testing.T) {
	requireBird(t)
	lab := simtest.New(t)
	ctx := context.Background()
	h1, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.1.11/24"))
	if err != nil {
		t.Fatal(err)
	}
	nsA, err := lab.AddHost(ctx, "tora", netip.MustParsePrefix("192.168.1.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := birdToR(t, nsA, 65101, bird.Neighbor{Password: "s3cret", GracefulRestart: true})
	peer := fabric.Peer{Device: "tora", Addr: netip.MustParseAddr("192.168.1.1"), ASN: 65101}
	cfg := func(pw string, announce ...string) helperConfig {
		return helperConfig{Password: pw, GracefulRestart: time.Minute, Host: hostBGP(announce, peer)}
	}

	// The wrong password: the speaker's connection attempts reach tora,
	// whose kernel drops them for their signature (tora's TCPMD5Failure).
	netstat := func() (string, error) { return nsA.Exec(ctx, "cat", "/proc/net/netstat") }
	refused := md5Refused(t, netstat)
	wrong := startSpeaker(t, h1, cfg("wrong", "10.1.0.0/16"))
	expect.Eventually(t, "connection attempts with the wrong password refused", wait, func() error {
		if n := md5Refused(t, netstat) - refused; n < 2 {
			return fmt.Errorf("tora refused %d segments for their MD5 signature, want 2 or more", n)
		}
		return nil
	})
	if err := established(t, a, false)(); err != nil {
		t.Fatal(err)
	}
	if got := networks(t, a); len(got) != 0 {
		t.Fatalf("BIRD learned %v over a session with the wrong password", got)
	}
	wrong.kill()

	sp := startSpeaker(t, h1, cfg("s3cret", "10.1.0.0/16"))
	expect.Eventually(t, "session with the password", wait, established(t, a, true))
	expect.Eventually(t, "learned", wait, birdHas(t, a, "10.1.0.0/16"))

	// A crash: the session drops without a notification; BIRD keeps the route.
	sp.kill()
	expect.Eventually(t, "session down", wait, established(t, a, false))
	if err := birdHas(t, a, "10.1.0.0/16")(); err != nil {
		t.Fatalf("graceful restart: %v", err)
	}
	// The speaker comes back announcing another block: after its
	// End-of-RIB the stale route is flushed and the new one stays.
	sp = startSpeaker(t, h1, cfg("s3cret", "10.2.0.0/16"))
	expect.Eventually(t, "session back", wait, established(t, a, true))
	expect.Eventually(t, "stale route replaced", wait, birdHas(t, a, "10.2.0.0/16"))

	// A stop with graceful restart keeps the routes (an agent restart)...
	sp.signal(t, syscall.SIGTERM)
	sp.wait(t)
	expect.Eventually(t, "session down", wait, established(t, a, false))
	if err := birdHas(t, a, "10.2.0.0/16")(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	// ...and the cleanup flushes them.
	c := cfg("s3cret", "10.2.0.0/16")
	c.Withdraw = true
	cl := startSpeaker(t, h1, c)
	cl.wait(t)
	expect.Eventually(t, "flushed by cleanup", wait, birdHas(t, a))
}
