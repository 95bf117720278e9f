package main

// End-to-end tests: a real romanad (servertest) on a controller machine of
// the lab, three simulated hosts on one L2 bridge with it, endpoints in
// their own namespaces, and this very binary running as romana-agent inside
// each host namespace, talking to romanad over the simulated underlay with
// mutual TLS as host:NAME. They assert packets (TCP connects, pings), not
// rule text.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// asAgent makes the test binary run as romana-agent (see TestMain).
const asAgent = "ROMANA_AGENT_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asJoinProbe) == "1" {
		os.Exit(joinProbe(os.Args[1:], os.Getenv("ROMANA_JOIN_TOKEN")))
	}
	if os.Getenv(asAgent) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		stopProfile := agentProfile()
		err := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stopProfile()
		stop()
		os.Exit(cmdline.Exit(os.Stderr, "romana-agent", err))
	}
	os.Exit(m.Run())
}

// agentProfile starts a CPU profile of an agent run by a test when
// ROMANA_AGENT_TEST_CPUPROFILE names a directory (written there as
// agent-<pid>.cpu when the agent stops), after the agent has run for
// ROMANA_AGENT_TEST_CPUPROFILE_DELAY (a duration, to leave its start
// out); it returns the function that stops it.
func agentProfile() func() {
	dir := os.Getenv("ROMANA_AGENT_TEST_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	delay, _ := time.ParseDuration(os.Getenv("ROMANA_AGENT_TEST_CPUPROFILE_DELAY"))
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("agent-%d.cpu", os.Getpid())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		return func() {}
	}
	var mu sync.Mutex
	started, stopped := false, false
	time.AfterFunc(delay, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "cpu profile:", err)
			return
		}
		started = true
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if started {
			pprof.StopCPUProfile()
		}
		f.Close()
	}
}

const echoPort = 7777

// controllerAddr is where romanad listens, on the hosts' L2 segment
// (192.168.77.0/24; the hosts are .1 to .3).
var controllerAddr = netip.MustParsePrefix("192.168.77.250/24")

const romanadPort = 9600

// startRomanad starts romanad on a controller machine of lab, serving TLS
// at controllerAddr:romanadPort inside it; its harness clients (admin)
// dial from inside the controller too, never from the test's own namespace.
func startRomanad(t testing.TB, lab *sim.Lab, opts ...servertest.Option) (*servertest.Instance, *sim.Host) {
	t.Helper()
	ctl, err := lab.AddController(context.Background(), "ctl", controllerAddr)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(controllerAddr.Addr(), romanadPort).String()
	opts = append([]servertest.Option{
		servertest.WithListener(func() (net.Listener, error) { return ctl.Listen("tcp", addr) }, controllerAddr.Addr().String()),
		servertest.WithDialer(dialIn(ctl.Namespace)),
	}, opts...)
	return servertest.Start(t, opts...), ctl
}

// dialIn returns a dial function that connects from inside ns.
func dialIn(ns *sim.Namespace) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.Do(func() (err error) {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// cluster is romanad, a lab of hosts and endpoints, and one agent per host.
type cluster struct {
	t      testing.TB
	ctx    context.Context
	srv    *servertest.Instance
	ctl    *sim.Host // where romanad runs
	lab    *sim.Lab
	hosts  map[string]*sim.Host
	cidrs  map[string]netip.Prefix // host -> its block in net1
	eps    map[string]*sim.Endpoint
	agents map[string]*agentProc
	exe    string
	logDir string
	// credDir holds the agents' credentials: host-NAME.conf (host:NAME,
	// written by the test or by a join) and cni-NAME.conf (cni:NAME, kept
	// by the agent).
	credDir string
	resync  time.Duration
	// agentCommand, when set, makes the command that runs an agent on a
	// host (default: the host's Command, `ip netns exec`).
	agentCommand func(host string, args ...string) *exec.Cmd
}

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// endpoints: name -> host, tenant, segment.
var layout = []struct{ name, host, tenant, segment string }{
	{"a1", "h1", "acme", "default"}, {"a1b", "h1", "acme", "default"}, {"w1", "h1", "beta", "web"}, {"o1", "h1", "open", "default"},
	{"a2", "h2", "acme", "default"}, {"w2", "h2", "beta", "web"}, {"d2", "h2", "beta", "db"},
	{"a3", "h3", "acme", "default"}, {"d3", "h3", "beta", "db"}, {"o3", "h3", "open", "default"},
}

// newCluster builds the lab and romanad (started with opts); it starts no
// agent.
func newCluster(t *testing.T, opts ...servertest.Option) *cluster {
	simtest.Require(t, "nft", "ping")
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	lab := simtest.New(t)
	srv, ctl := startRomanad(t, lab, opts...)
	c := &cluster{t: t, ctx: ctx, srv: srv, ctl: ctl, lab: lab, exe: exe, logDir: t.TempDir(), credDir: t.TempDir(),
		hosts: map[string]*sim.Host{}, cidrs: map[string]netip.Prefix{}, eps: map[string]*sim.Endpoint{},
		agents: map[string]*agentProc{}, resync: 300 * time.Millisecond}
	t.Cleanup(func() {
		for name := range c.agents {
			c.stopAgent(name)
		}
		if t.Failed() {
			for _, h := range []string{"h1", "h2", "h3"} {
				b, _ := os.ReadFile(filepath.Join(c.logDir, h+".log"))
				t.Logf("agent %s log:\n%s", h, b)
			}
		}
	})
	cl := c.srv.Client
	if _, err := cl.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"h1", "h2", "h3"} {
		ip := netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)})
		h, err := c.lab.AddHost(ctx, name, netip.PrefixFrom(ip, 24))
		if err != nil {
			t.Fatal(err)
		}
		c.hosts[name] = h
		ah, err := cl.AddHost(ctx, api.Host{Name: name, IP: ip})
		if err != nil {
			t.Fatal(err)
		}
		if len(ah.Slots) != 1 {
			t.Fatalf("host %s slots: %+v", name, ah.Slots)
		}
		c.cidrs[name] = ah.Slots[0].CIDR
	}
	for _, tn := range []api.Tenant{{Name: "acme"}, {Name: "beta", Isolation: api.IsolationSegment}, {Name: "open", Isolation: api.IsolationNone}} {
		if _, err := cl.AddTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []api.Segment{{Tenant: "acme", Name: "default"}, {Tenant: "beta", Name: "web"}, {Tenant: "beta", Name: "db"}, {Tenant: "open", Name: "default"}} {
		if _, err := cl.AddSegment(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range layout {
		iface := "rv-" + e.name
		a, err := cl.Allocate(ctx, api.AddressRequest{Name: e.name, Host: e.host, Tenant: e.tenant, Segment: e.segment, Interface: iface})
		if err != nil {
			t.Fatal(err)
		}
		ep, err := c.lab.AddEndpoint(ctx, c.hosts[e.host], e.name, a.IP, iface)
		if err != nil {
			t.Fatal(err)
		}
		c.eps[e.name] = ep
		c.serveEcho(ep, echoPort)
	}
	return c
}

// serveEcho runs a TCP echo server on the endpoint's address and port
// until the test ends.
func (c *cluster) serveEcho(ep *sim.Endpoint, port int) { c.serveEchoAt(ep, ep.IP, port) }

// url is romanad's address as the agents reach it, over the underlay.
func (c *cluster) url() string {
	return "https://" + netip.AddrPortFrom(controllerAddr.Addr(), romanadPort).String()
}

// credPath is the host's agent credential (host:NAME); cniPath the CNI
// plugin's credential (cni:NAME) that the agent keeps.
func (c *cluster) credPath(host string) string {
	return filepath.Join(c.credDir, "host-"+host+".conf")
}

func (c *cluster) cniPath(host string) string { return filepath.Join(c.credDir, "cni-"+host+".conf") }

// cniSock is where the host's agent serves the CNI plugin (each simulated
// host its own: they share one filesystem).
func (c *cluster) cniSock(host string) string { return filepath.Join(c.credDir, "cni-"+host+".sock") }

// startAgent runs this test binary as romana-agent in the host's namespace,
// talking to romanad over TLS as host:NAME with a credential the test
// issues (once; a restarted agent keeps it).
func (c *cluster) startAgent(host string, extra ...string) {
	c.t.Helper()
	if _, err := os.Stat(c.credPath(host)); os.IsNotExist(err) {
		if p := c.srv.WriteCredential(c.t, pki.Host(host), c.credDir); p != c.credPath(host) {
			c.t.Fatalf("credential written to %s, want %s", p, c.credPath(host))
		}
	}
	c.startAgentEnv(host, nil, extra...)
}

// startAgentEnv runs the agent with env added to the test's environment
// (e.g. a join token).
func (c *cluster) startAgentEnv(host string, env []string, extra ...string) {
	c.t.Helper()
	args := append([]string{c.exe, "--host", host, "--server", c.url(), "--config", c.credPath(host), "--cni-config", c.cniPath(host),
		"--cni-socket", c.cniSock(host), "--resync", c.resync.String(), "--log-level", "debug"}, extra...)
	cmd := c.hosts[host].Command(context.Background(), args...)
	if c.agentCommand != nil {
		cmd = c.agentCommand(host, args...)
	}
	cmd.Env = append(append(os.Environ(), asAgent+"=1"), env...)
	logPath := filepath.Join(c.logDir, host+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(f, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.agents[host] = p
}

// stopAgent stops the host's agent with SIGTERM (by its PID) and waits.
func (c *cluster) stopAgent(host string) {
	p := c.agents[host]
	if p == nil {
		return
	}
	delete(c.agents, host)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		c.t.Errorf("agent %s did not stop on SIGTERM", host)
	}
}

// wait is how long an end-to-end test waits for its cluster to converge
// (expect.Eventually logs a wait longer than a sixth of it).
const wait = 30 * time.Second

// healthz asks the agent in the host's namespace for /healthz.
func (c *cluster) healthz(host string) (string, error) {
	return c.agentGet(host, "/healthz", 2*time.Second)
}

// agentGet sends GET path to the agent's metrics listener in the host's
// namespace and returns the whole response, headers included.
func (c *cluster) agentGet(host, path string, timeout time.Duration) (string, error) {
	var out string
	err := c.hosts[host].Do(func() error {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:9601", time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(timeout))
		fmt.Fprintf(conn, "GET %s HTTP/1.0\r\n\r\n", path)
		b, err := io.ReadAll(conn)
		out = string(b)
		return err
	})
	return out, err
}

func (c *cluster) waitHealthy(hosts ...string) {
	c.t.Helper()
	for _, h := range hosts {
		expect.Eventually(c.t, "agent "+h+" healthy", wait, func() error {
			out, err := c.healthz(h)
			if err != nil || !strings.HasPrefix(out, "HTTP/1.0 200") {
				return errors.New(fmt.Sprint(out, err))
			}
			return nil
		})
	}
}

// ourRoutes returns `ip -4 route show proto 190` in the host, lines sorted.
func (c *cluster) ourRoutes(host string) string {
	out, err := c.hosts[host].Exec(c.ctx, "ip", "-4", "route", "show", "proto", "190")
	if err != nil {
		c.t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return sortLines(lines)
}

// wantRoutes is the exact Romana route table of host: one route per remote
// host, one /32 per local endpoint.
func (c *cluster) wantRoutes(host string) string {
	var lines []string
	for _, e := range layout {
		if e.host == host {
			lines = append(lines, fmt.Sprintf("%s dev rv-%s scope link ", c.eps[e.name].IP, e.name))
		}
	}
	for i, h := range []string{"h1", "h2", "h3"} {
		if h != host {
			lines = append(lines, fmt.Sprintf("%s via 192.168.77.%d dev eth0 ", c.cidrs[h], i+1))
		}
	}
	return sortLines(lines)
}

// sortLines joins lines sorted, each ending in a newline.
func sortLines(lines []string) string {
	slices.Sort(lines)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func (c *cluster) waitRoutes(hosts ...string) {
	c.t.Helper()
	for _, h := range hosts {
		expect.Eventually(c.t, "routes of "+h, wait, func() error {
			got, want := c.ourRoutes(h), c.wantRoutes(h)
			if got != want {
				return fmt.Errorf("got\n%swant\n%s", got, want)
			}
			return nil
		})
	}
}

// tcp connects from one endpoint to another's echo server and exchanges a
// line: an expected failure (isolation) times out within a second or two.
func (c *cluster) tcp(from, to string) error { return c.connect(from, to, time.Second) }

// connect is tcp with a connect timeout (the exchange gets twice that):
// traffic that must never fail, on a loaded machine, gets more than a
// probe that may.
func (c *cluster) connect(from, to string, timeout time.Duration) error {
	dst := c.eps[to].IP
	return c.eps[from].Do(func() error {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", dst, echoPort), timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * timeout))
		if _, err := fmt.Fprintf(conn, "hello %s\n", to); err != nil {
			return err
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "hello "+to+"\n" {
			return fmt.Errorf("echo %q", line)
		}
		return nil
	})
}

func (c *cluster) ping(from, to string) error {
	_, err := c.eps[from].Exec(c.ctx, "ping", "-c1", "-W1", c.eps[to].IP.String())
	return err
}

type probe struct {
	from, to string
	ok       bool
}

// check runs TCP and ping probes in parallel; each must succeed or fail as expected.
func (c *cluster) check(probes []probe) {
	c.t.Helper()
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for _, p := range probes {
		for kind, f := range map[string]func(string, string) error{"tcp": c.tcp, "ping": c.ping} {
			wg.Go(func() {
				err := f(p.from, p.to)
				if (err == nil) != p.ok {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s %s(%s) -> %s(%s): want ok=%v, got err=%v",
						kind, p.from, c.eps[p.from].IP, p.to, c.eps[p.to].IP, p.ok, err))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(failures) > 0 {
		c.t.Fatalf("connectivity:\n%s", strings.Join(failures, "\n"))
	}
}

var matrix = []probe{
	{"a1", "a1b", true}, // same host, same tenant
	{"a1", "a2", true},  // cross host
	{"a1", "a3", true},
	{"a3", "a2", true},
	{"a1", "w1", false}, // same host, other tenant
	{"a1", "w2", false}, // cross host, other tenant
	{"w1", "a2", false},
	{"w1", "w2", true},  // segment mode: same segment
	{"d3", "d2", true},  // same segment
	{"w1", "d2", false}, // same tenant, other segment
	{"d2", "w1", false},
	{"a1", "o3", true}, // none mode: open to all
	{"d2", "o1", true},
	{"o1", "a2", false}, // an open tenant's endpoint is still an outsider to acme
}

func TestAgentEndToEnd(t *testing.T) {
	c := newCluster(t)
	h3 := c.hosts["h3"]
	// Foreign objects in h3, present before the agent starts.
	foreign := filepath.Join(t.TempDir(), "foreign.nft")
	os.WriteFile(foreign, []byte("table ip foreign {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tcounter\n\t}\n}\n"), 0o644)
	if _, err := h3.Exec(c.ctx, "nft", "-f", foreign); err != nil {
		t.Fatal(err)
	}
	if _, err := h3.Exec(c.ctx, "ip", "route", "add", "172.16.0.0/12", "via", "192.168.77.254", "proto", "static"); err != nil {
		t.Fatal(err)
	}
	foreignSurvives := func(when string) {
		t.Helper()
		if out, err := h3.Exec(c.ctx, "nft", "list", "table", "ip", "foreign"); err != nil || !strings.Contains(out, "chain input") {
			t.Fatalf("%s: foreign nft table: %v\n%s", when, err, out)
		}
		if out, _ := h3.Exec(c.ctx, "ip", "route", "show", "172.16.0.0/12"); !strings.Contains(out, "via 192.168.77.254") {
			t.Fatalf("%s: foreign route gone: %q", when, out)
		}
	}

	for _, h := range []string{"h1", "h2", "h3"} {
		c.startAgent(h)
	}
	c.waitHealthy("h1", "h2", "h3")
	c.waitRoutes("h1", "h2", "h3")

	t.Run("connectivity", func(t *testing.T) { c.t = t; c.check(matrix) })
	c.t = t

	t.Run("spoofed sources dropped", func(t *testing.T) {
		c.t = t
		c.spoofing()
	})
	c.t = t

	t.Run("follows romanad", func(t *testing.T) {
		c.t = t
		cl := c.srv.Client
		// romanad restarts: the agents' watch streams break and they
		// watch again from the revision after the last they had whole.
		c.srv.Restart()
		// A new endpoint: reachable from its tenant only once the agent
		// routes it, which it learns from the watch stream.
		a, err := cl.Allocate(c.ctx, api.AddressRequest{Name: "a2b", Host: "h2", Tenant: "acme", Segment: "default", Interface: "rv-a2b"})
		if err != nil {
			t.Fatal(err)
		}
		ep, err := c.lab.AddEndpoint(c.ctx, c.hosts["h2"], "a2b", a.IP, "rv-a2b")
		if err != nil {
			t.Fatal(err)
		}
		c.eps["a2b"] = ep
		c.serveEcho(ep, echoPort)
		expect.Eventually(t, "a1 reaches the new endpoint a2b", wait, func() error {
			return c.tcp("a1", "a2b")
		})
		c.check([]probe{{"a2b", "a3", true}, {"w1", "a2b", false}})
		if b, _ := os.ReadFile(c.agents["h2"].log); !bytes.Contains(b, []byte(`msg="watch resumed"`)) {
			t.Errorf("h2's agent did not resume its watch after romanad restarted:\n%s", b)
		}
		// Released: its route goes.
		if err := cl.Release(c.ctx, "a2b"); err != nil {
			t.Fatal(err)
		}
		c.waitRoutes("h2")
	})
	c.t = t

	t.Run("drift repair", func(t *testing.T) {
		c.t = t
		h2 := c.hosts["h2"]
		if _, err := h2.Exec(c.ctx, "ip", "route", "del", c.cidrs["h1"].String()); err != nil {
			t.Fatal(err)
		}
		if _, err := h2.Exec(c.ctx, "ip", "route", "del", c.eps["a2"].IP.String()+"/32"); err != nil {
			t.Fatal(err)
		}
		if _, err := h2.Exec(c.ctx, "nft", "flush", "table", "inet", "romana"); err != nil {
			t.Fatal(err)
		}
		c.waitRoutes("h2")
		expect.Eventually(t, "h2's nft table restored", wait, func() error {
			out, err := h2.Exec(c.ctx, "nft", "list", "table", "inet", "romana")
			if err != nil || !strings.Contains(out, "vmap @tenants-net1") || !strings.Contains(out, "goto segment-") {
				return errors.New(out)
			}
			return nil
		})
		if _, err := h3.Exec(c.ctx, "nft", "delete", "table", "inet", "romana"); err != nil {
			t.Fatal(err)
		}
		expect.Eventually(t, "h3's deleted nft table restored", wait, func() error {
			out, err := h3.Exec(c.ctx, "nft", "list", "table", "inet", "romana")
			if err != nil || !strings.Contains(out, "vmap @tenants-net1") {
				return errors.New(out)
			}
			return nil
		})
		c.check([]probe{{"a1", "a2", true}, {"a1", "w2", false}, {"w1", "d2", false}, {"a2", "a3", true}, {"a1", "d3", false}})
		foreignSurvives("after reconciles")
	})
	c.t = t

	t.Run("agent restart keeps established streams", func(t *testing.T) {
		c.t = t
		c.restartKeepsStream()
	})
	c.t = t

	t.Run("cleanup", func(t *testing.T) {
		c.t = t
		c.stopAgent("h3")
		// Stopping leaves everything in place.
		if got := c.ourRoutes("h3"); got != c.wantRoutes("h3") {
			t.Fatalf("stopping the agent changed routes:\n%s", got)
		}
		cmd := h3.Command(c.ctx, c.exe, "--cleanup")
		cmd.Env = append(os.Environ(), asAgent+"=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("--cleanup: %v\n%s", err, out)
		}
		if got := c.ourRoutes("h3"); got != "" {
			t.Errorf("routes with proto 190 after --cleanup:\n%s", got)
		}
		if out, _ := h3.Exec(c.ctx, "nft", "list", "tables"); strings.Contains(out, "romana") {
			t.Errorf("tables after --cleanup:\n%s", out)
		}
		if _, err := h3.Exec(c.ctx, "ip", "link", "show", "romana-gw"); err == nil {
			t.Error("gateway link after --cleanup")
		}
		if out, _ := h3.Exec(c.ctx, "ip", "-o", "link", "show", "rv-a3"); !strings.Contains(out, "rv-a3") {
			t.Error("--cleanup removed an endpoint's veth")
		}
		foreignSurvives("after --cleanup")
	})
}

// restartKeepsStream keeps one TCP connection from a1 (h1) to a2 (h2)
// exchanging lines while h2's and then h1's agent stop and start again.
func (c *cluster) restartKeepsStream() {
	t := c.t
	tr := c.startTraffic("a1", "a2")
	tr.progress(t, "stream running")
	for _, h := range []string{"h2", "h1"} {
		logBefore, _ := os.ReadFile(filepath.Join(c.logDir, h+".log"))
		c.stopAgent(h)
		tr.progress(t, "stream while "+h+"'s agent is down")
		c.startAgent(h)
		c.waitHealthy(h)
		tr.progress(t, "stream after "+h+"'s agent restarted")
		logAfter, _ := os.ReadFile(filepath.Join(c.logDir, h+".log"))
		if bytes.Contains(logAfter[len(logBefore):], []byte("nftables table replaced")) {
			t.Errorf("restarted agent on %s rewrote an in-sync nft table:\n%s", h, logAfter[len(logBefore):])
		}
	}
	lines, _, err := tr.stop()
	if err != nil {
		t.Fatalf("the stream broke: %v", err)
	}
	t.Logf("%d lines exchanged across two agent restarts", lines)
}

// traffic is packets that must keep flowing while something changes: one
// TCP connection exchanging lines every 10ms and, optionally, a new TCP
// connection every 100ms. The first failure stops it.
type traffic struct {
	mu       sync.Mutex
	loops    int // connection loops
	lines    int
	connects int
	fail     error
	stopping chan struct{}
	wg       sync.WaitGroup
}

// startTraffic opens a stream from one endpoint to another's echo server
// and, for each pair in connects, connects again and again.
func (c *cluster) startTraffic(from, to string, connects ...[2]string) *traffic {
	c.t.Helper()
	var conn net.Conn
	if err := c.eps[from].Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", fmt.Sprintf("%s:%d", c.eps[to].IP, echoPort), time.Second)
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	tr := &traffic{stopping: make(chan struct{}), loops: len(connects)}
	failed := func(err error) bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if err != nil && tr.fail == nil {
			tr.fail = err
		}
		return tr.fail != nil
	}
	tr.wg.Go(func() {
		defer conn.Close()
		r := bufio.NewReader(conn)
		for i := 0; ; i++ {
			select {
			case <-tr.stopping:
				return
			case <-time.After(10 * time.Millisecond):
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			msg := fmt.Sprintf("line %d\n", i)
			_, err := io.WriteString(conn, msg)
			var got string
			if err == nil {
				got, err = r.ReadString('\n')
			}
			if err == nil && got != msg {
				err = fmt.Errorf("echo %q, want %q", got, msg)
			}
			if err != nil {
				err = fmt.Errorf("stream %s -> %s, line %d at %s: %w", from, to, i, time.Now().Format("15:04:05.000"), err)
			}
			if failed(err) {
				return
			}
			tr.mu.Lock()
			tr.lines++
			tr.mu.Unlock()
		}
	})
	for _, p := range connects {
		tr.wg.Go(func() {
			for {
				select {
				case <-tr.stopping:
					return
				case <-time.After(100 * time.Millisecond):
				}
				start := time.Now()
				err := c.connect(p[0], p[1], 5*time.Second)
				if err != nil {
					err = fmt.Errorf("new connection %s -> %s at %s (after %v): %w", p[0], p[1],
						start.Format("15:04:05.000"), time.Since(start).Round(time.Millisecond), err)
				}
				if failed(err) {
					return
				}
				tr.mu.Lock()
				tr.connects++
				tr.mu.Unlock()
			}
		})
	}
	c.t.Cleanup(func() { tr.stop() })
	return tr
}

// progress waits until 20 more lines (and 3 more connections, if any run)
// went through, failing the test if the traffic broke.
func (tr *traffic) progress(t testing.TB, what string) {
	t.Helper()
	tr.mu.Lock()
	lines, connects, wantConnects := tr.lines, tr.connects, 0
	if tr.loops > 0 {
		wantConnects = 3
	}
	tr.mu.Unlock()
	expect.Eventually(t, what, wait, func() error {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if tr.fail != nil {
			t.Fatalf("%s: the traffic broke: %v", what, tr.fail)
		}
		if tr.lines < lines+20 || tr.connects < connects+wantConnects {
			return fmt.Errorf("%d lines, %d connections", tr.lines-lines, tr.connects-connects)
		}
		return nil
	})
}

// stop stops the traffic (once; later calls return the same) and returns
// what went through and the first failure.
func (tr *traffic) stop() (lines, connects int, err error) {
	tr.mu.Lock()
	select {
	case <-tr.stopping:
	default:
		close(tr.stopping)
	}
	tr.mu.Unlock()
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.lines, tr.connects, tr.fail
}

// spoofing: w1 (beta, on h1) borrows the addresses of a1 (acme, same host)
// and a2 (acme, h2) to send UDP to acme endpoints, which isolation would
// accept by source address. The anti-spoofing rule must drop them at h1.
func (c *cluster) spoofing() {
	c.spoofingOver(true)
	out, err := c.hosts["h1"].Exec(c.ctx, "nft", "list", "chain", "inet", "romana", "forward")
	if err != nil || !strings.Contains(out, "counter packets 10 ") {
		c.t.Errorf("h1's anti-spoofing rule did not count the 10 spoofed packets: %v\n%s", err, out)
	}
}

// spoofingOver is spoofing over IPv4 (is4) or IPv6: w1 borrows a1's and
// a2's addresses of that family, 5 datagrams each; the owners' own
// datagrams, sent after on the same paths, are the barrier. The caller
// checks h1's counters.
func (c *cluster) spoofingOver(is4 bool) {
	t := c.t
	ip, bits, nodad := []string{"ip"}, 32, []string{}
	if !is4 {
		ip, bits, nodad = []string{"ip", "-6"}, 128, []string{"nodad"}
	}
	addr := func(name string) netip.Addr { return c.eps[name].IPOf(is4) }
	send := func(from *sim.Endpoint, src netip.Addr, to string, payload string) {
		t.Helper()
		sendUDP(t, from.Namespace, src, netip.AddrPortFrom(addr(to), 9999), payload, 5)
	}
	w1 := c.eps["w1"]
	spoof := func(victim, to string) {
		t.Helper()
		pfx := netip.PrefixFrom(addr(victim), bits).String()
		if _, err := w1.Exec(c.ctx, append(append(slices.Clone(ip), "addr", "add", pfx, "dev", "eth0"), nodad...)...); err != nil {
			t.Fatal(err)
		}
		send(w1, addr(victim), to, "spoof")
		if _, err := w1.Exec(c.ctx, append(slices.Clone(ip), "addr", "del", pfx, "dev", "eth0")...); err != nil {
			t.Fatal(err)
		}
	}
	atA2 := listenUDP(t, c.eps["a2"], addr("a2"), 9999)
	atA1b := listenUDP(t, c.eps["a1b"], addr("a1b"), 9999)
	spoof("a1", "a2")  // cross host, borrowing a local acme address
	spoof("a2", "a1b") // same host, borrowing a remote acme address
	// Barriers: the real owners' datagrams, sent later on the same paths.
	send(c.eps["a1"], addr("a1"), "a2", "real")
	send(c.eps["a2"], addr("a2"), "a1b", "real")
	all5 := func(n int) error {
		if n != 5 {
			return fmt.Errorf("%d of 5 arrived", n)
		}
		return nil
	}
	expect.Eventually(t, "the real a1's datagrams reach a2", wait, func() error { return all5(atA2.count(addr("a1"), "real")) })
	expect.Eventually(t, "the real a2's datagrams reach a1b", wait, func() error { return all5(atA1b.count(addr("a2"), "real")) })
	if n := atA2.count(addr("a1"), "spoof"); n != 0 {
		t.Errorf("a2 got %d datagrams from w1 posing as a1", n)
	}
	if n := atA1b.count(addr("a2"), "spoof"); n != 0 {
		t.Errorf("a1b got %d datagrams from w1 posing as a2", n)
	}
}

// udpSink counts the datagrams received on one address of an endpoint,
// by source and payload.
type udpSink struct {
	mu  sync.Mutex
	got map[string]int // "10.0.0.1 spoof"
}

// listenUDP receives UDP on ip:port inside ep until the test ends.
func listenUDP(t testing.TB, ep *sim.Endpoint, ip netip.Addr, port uint16) *udpSink {
	t.Helper()
	s := &udpSink{got: map[string]int{}}
	var conn *net.UDPConn
	if err := ep.Do(func() (err error) {
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 100)
		for {
			n, a, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got[a.Addr().Unmap().String()+" "+string(buf[:n])]++
			s.mu.Unlock()
		}
	}()
	return s
}

// count is the number of datagrams with payload received from src.
func (s *udpSink) count(src netip.Addr, payload string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[src.String()+" "+payload]
}

// received reports whether a datagram with payload came from any source.
func (s *udpSink) received(payload string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, n := range s.got {
		if _, p, _ := strings.Cut(k, " "); p == payload && n > 0 {
			return true
		}
	}
	return false
}

// sendUDP sends payload n times from src to dst, inside ns.
func sendUDP(t testing.TB, ns *sim.Namespace, src netip.Addr, dst netip.AddrPort, payload string, n int) {
	t.Helper()
	if err := ns.Do(func() error {
		conn, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer conn.Close()
		for range n {
			if _, err := conn.Write([]byte(payload)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
