package main

// End-to-end tests of service chains: the cluster of e2e_test.go plus
// service function endpoints (tenant infra, isolation none) that forward
// packets and count them with an nft counter. The path is proven by the
// functions' counters; connections are real TCP streams.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/sim"
)

// sfCounter matches the service function's forward counter.
var sfCounter = regexp.MustCompile(`counter packets (\d+)`)

// addServiceFunction adds endpoint name of infra/fw on host: a namespace
// that forwards (ip_forward=1, no redirects) and counts forwarded packets.
func (c *cluster) addServiceFunction(name, host string) *sim.Endpoint {
	c.t.Helper()
	iface := "rv-" + name
	a, err := c.srv.Client.Allocate(c.ctx, api.AddressRequest{Name: name, Host: host, Tenant: "infra", Segment: "fw", Interface: iface})
	if err != nil {
		c.t.Fatal(err)
	}
	ep, err := c.lab.AddEndpoint(c.ctx, c.hosts[host], name, a.IP, iface)
	if err != nil {
		c.t.Fatal(err)
	}
	c.eps[name] = ep
	c.forwardAndCount(ep, name, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0")
	return ep
}

// forwardAndCount makes the endpoint's namespace a service function: the
// sysctls given (forwarding on, redirects off) and an nft counter of every
// forwarded packet (table inet sf, both families).
func (c *cluster) forwardAndCount(ep *sim.Endpoint, name string, sysctls ...string) {
	c.t.Helper()
	for _, kv := range sysctls {
		if _, err := ep.Exec(c.ctx, "sysctl", "-qw", kv); err != nil {
			c.t.Fatal(err)
		}
	}
	script := filepath.Join(c.t.TempDir(), name+".nft")
	os.WriteFile(script, []byte("table inet sf {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t\tcounter\n\t}\n}\n"), 0o644)
	if _, err := ep.Exec(c.ctx, "nft", "-f", script); err != nil {
		c.t.Fatal(err)
	}
}

// forwarded returns the packets a service function forwarded so far.
func (c *cluster) forwarded(name string) int {
	c.t.Helper()
	out, err := c.eps[name].Exec(c.ctx, "nft", "list", "chain", "inet", "sf", "forward")
	if err != nil {
		c.t.Fatal(err)
	}
	m := sfCounter.FindStringSubmatch(out)
	if m == nil {
		c.t.Fatalf("no counter in %s's ruleset:\n%s", name, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// tcpPort is c.tcp to another port.
func (c *cluster) tcpPort(from, to string, port int) error {
	dst := c.eps[to].IP
	return c.eps[from].Do(func() error {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", dst, port), time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(conn, "hello\n")
		_, err = bufio.NewReader(conn).ReadString('\n')
		return err
	})
}

// stream is a long-lived TCP connection to an echo server.
type stream struct {
	conn net.Conn
	r    *bufio.Reader
}

func (c *cluster) openStream(from, to string) *stream {
	c.t.Helper()
	var conn net.Conn
	if err := c.eps[from].Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", fmt.Sprintf("%s:%d", c.eps[to].IP, echoPort), time.Second)
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return &stream{conn: conn, r: bufio.NewReader(conn)}
}

// roundTrip sends n lines on the stream and reads them back.
func (s *stream) roundTrip(n int) error {
	for i := 0; i < n; i++ {
		s.conn.SetDeadline(time.Now().Add(3 * time.Second))
		want := fmt.Sprintf("line %d\n", i)
		if _, err := io.WriteString(s.conn, want); err != nil {
			return err
		}
		got, err := s.r.ReadString('\n')
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("echo %q, want %q", got, want)
		}
	}
	return nil
}

// steeringTable returns the host's steering table ("" if absent).
func (c *cluster) steeringTable(host string) string {
	out, err := c.hosts[host].Exec(c.ctx, "nft", "list", "table", "inet", "romana-chain")
	if err != nil {
		return ""
	}
	return out
}

func (c *cluster) addChain(ch api.Chain) api.Chain {
	c.t.Helper()
	out, err := c.srv.Client.AddChain(c.ctx, ch)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { c.srv.Client.RemoveChain(c.ctx, ch.Name) }) // a failed subtest leaves no chain behind
	return out
}

func (c *cluster) removeChain(name string) {
	c.t.Helper()
	if err := c.srv.Client.RemoveChain(c.ctx, name); err != nil {
		c.t.Fatal(err)
	}
}

// waitSteering waits until every host's steering table mentions (or, with
// present false, no longer mentions) the chain.
func (c *cluster) waitSteering(chain string, present bool, hosts ...string) {
	c.t.Helper()
	for _, h := range hosts {
		expect.Eventually(c.t, fmt.Sprintf("chain %s present=%v on %s", chain, present, h), wait, func() error {
			out := c.steeringTable(h)
			if strings.Contains(out, "chain "+chain+":") != present {
				return errors.New(out)
			}
			return nil
		})
	}
}

// through asserts that traffic from->to (TCP and ping) works and passes
// through each of sfs (their counters rise) and not through others.
func (c *cluster) through(from, to string, sfs []string, others ...string) {
	c.t.Helper()
	before := map[string]int{}
	for _, s := range append(append([]string{}, sfs...), others...) {
		before[s] = c.forwarded(s)
	}
	if err := c.tcp(from, to); err != nil {
		c.dumpSteering()
		c.t.Fatalf("tcp %s -> %s: %v", from, to, err)
	}
	if err := c.ping(from, to); err != nil {
		c.t.Fatalf("ping %s -> %s: %v", from, to, err)
	}
	defer func() {
		if c.t.Failed() {
			c.dumpSteering()
		}
	}()
	for _, s := range sfs {
		// A TCP exchange (SYN, data, ACKs, FIN: >= 4 packets from the
		// client) and a ping request: replies return directly.
		if got := c.forwarded(s) - before[s]; got < 5 {
			c.t.Errorf("%s -> %s: service function %s forwarded %d packets, want >= 5", from, to, s, got)
		}
	}
	for _, s := range others {
		if got := c.forwarded(s) - before[s]; got != 0 {
			c.t.Errorf("%s -> %s: service function %s forwarded %d packets, want 0", from, to, s, got)
		}
	}
}

func TestChainsEndToEnd(t *testing.T) {
	c := newCluster(t)
	cl := c.srv.Client
	if _, err := cl.AddTenant(c.ctx, api.Tenant{Name: "infra", Isolation: api.IsolationNone}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AddSegment(c.ctx, api.Segment{Tenant: "infra", Name: "fw"}); err != nil {
		t.Fatal(err)
	}
	f1 := c.addServiceFunction("f1", "h1")
	f2 := c.addServiceFunction("f2", "h1")
	f3 := c.addServiceFunction("f3", "h2")
	c.serveEcho(c.eps["o3"], 80)
	for _, h := range []string{"h1", "h2", "h3"} {
		c.startAgent(h, "--chain-probe-interval", "200ms")
	}
	c.waitHealthy("h1", "h2", "h3")
	c.waitRoutes("h3")
	expect.Eventually(t, "service functions routed", wait, func() error {
		return c.ping("a1", "f3")
	})
	all := []string{"f1", "f2", "f3"}
	without := func(xs ...string) []string {
		var out []string
		for _, s := range all {
			if !strings.Contains(strings.Join(xs, ","), s) {
				out = append(out, s)
			}
		}
		return out
	}
	// Direct path: no function sees anything.
	c.through("a1", "o3", nil, all...)

	t.Run("one hop", func(t *testing.T) {
		c.t = t
		c.addChain(api.Chain{Name: "inspect", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f1.IP}})
		c.waitSteering("inspect", true, "h1", "h2", "h3")
		c.through("a1", "o3", []string{"f1"}, without("f1")...) // local function
		c.through("a3", "o1", []string{"f1"}, without("f1")...) // remote function, local destination
		c.through("a2", "o3", []string{"f1"}, without("f1")...) // remote function, remote destination
		c.through("a1", "a2", nil, all...)                      // not matched: other destination tenant
		c.through("o1", "o3", nil, all...)                      // not matched: other source segment
		c.removeChain("inspect")
		c.waitSteering("inspect", false, "h1", "h2", "h3")
		c.through("a1", "o3", nil, all...)
	})
	c.t = t

	t.Run("drift repair", func(t *testing.T) {
		c.t = t
		ch := c.addChain(api.Chain{Name: "drift", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f1.IP}})
		c.waitSteering("drift", true, "h1", "h2", "h3")
		h1 := c.hosts["h1"]
		table := strconv.Itoa(20000 + 16*int(ch.ID) + 1)
		for _, cmd := range [][]string{
			{"nft", "flush", "table", "inet", "romana-chain"},
			{"ip", "rule", "del", "priority", "1000", "lookup", table},
			{"ip", "route", "flush", "table", table},
		} {
			if _, err := h1.Exec(c.ctx, cmd...); err != nil {
				t.Fatal(err)
			}
		}
		expect.Eventually(t, "h1's steering restored", wait, func() error {
			rules, _ := h1.Exec(c.ctx, "ip", "rule")
			routes, _ := h1.Exec(c.ctx, "ip", "route", "show", "table", table)
			nft := c.steeringTable("h1")
			if !strings.Contains(rules, "lookup "+table) || !strings.Contains(routes, "default via "+f1.IP.String()) ||
				!strings.Contains(nft, "chain drift:") {
				return errors.New(rules + routes + nft)
			}
			return nil
		})
		c.through("a1", "o3", []string{"f1"}, without("f1")...)
		c.removeChain("drift")
		c.waitSteering("drift", false, "h1", "h2", "h3")
	})
	c.t = t

	t.Run("two hops", func(t *testing.T) {
		c.t = t
		c.addChain(api.Chain{Name: "two", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f1.IP, f3.IP}})
		c.waitSteering("two", true, "h1", "h2", "h3")
		c.through("a1", "o3", []string{"f1", "f3"}, "f2")
		c.through("a3", "o3", []string{"f1", "f3"}, "f2")
		c.removeChain("two")
		c.addChain(api.Chain{Name: "two-local", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f2.IP, f1.IP}})
		c.waitSteering("two-local", true, "h1", "h2", "h3")
		c.through("a1", "o3", []string{"f1", "f2"}, "f3")
		c.through("a2", "o1", []string{"f1", "f2"}, "f3")
		c.removeChain("two-local")
		c.waitSteering("two-local", false, "h1", "h2", "h3")
	})
	c.t = t

	t.Run("port filter", func(t *testing.T) {
		c.t = t
		c.addChain(api.Chain{Name: "web", Tenant: "acme", Segment: "default", ToTenant: "open", Proto: "tcp", Port: 80, Via: []netip.Addr{f3.IP}})
		c.waitSteering("web", true, "h1", "h2", "h3")
		before := c.forwarded("f3")
		if err := c.tcpPort("a1", "o3", 80); err != nil {
			t.Fatal(err)
		}
		if got := c.forwarded("f3") - before; got < 4 {
			t.Errorf("tcp port 80: f3 forwarded %d packets, want >= 4", got)
		}
		before = c.forwarded("f3")
		if err := c.tcp("a1", "o3"); err != nil { // port 7777
			t.Fatal(err)
		}
		if err := c.ping("a1", "o3"); err != nil {
			t.Fatal(err)
		}
		if got := c.forwarded("f3") - before; got != 0 {
			t.Errorf("tcp port %d and ping: f3 forwarded %d packets, want 0", echoPort, got)
		}
		c.removeChain("web")
		c.waitSteering("web", false, "h1", "h2", "h3")
	})
	c.t = t

	t.Run("add and remove under a running connection", func(t *testing.T) {
		c.t = t
		old := c.openStream("a1", "o3")
		if err := old.roundTrip(3); err != nil {
			t.Fatal(err)
		}
		c.addChain(api.Chain{Name: "live", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f1.IP}})
		c.waitSteering("live", true, "h1", "h2", "h3")
		before := c.forwarded("f1")
		if err := old.roundTrip(20); err != nil {
			t.Fatalf("connection established before the chain broke when it was added: %v", err)
		}
		if got := c.forwarded("f1") - before; got != 0 {
			t.Errorf("connection established before the chain: f1 forwarded %d of its packets, want 0 (it keeps its direct path)", got)
		}
		steered := c.openStream("a1", "o3")
		before = c.forwarded("f1")
		if err := steered.roundTrip(20); err != nil {
			t.Fatal(err)
		}
		if got := c.forwarded("f1") - before; got < 20 {
			t.Errorf("new connection: f1 forwarded %d packets, want >= 20", got)
		}
		c.removeChain("live")
		c.waitSteering("live", false, "h1", "h2", "h3")
		before = c.forwarded("f1")
		if err := steered.roundTrip(20); err != nil {
			t.Fatalf("steered connection broke when the chain was removed: %v", err)
		}
		if err := old.roundTrip(5); err != nil {
			t.Fatal(err)
		}
		if got := c.forwarded("f1") - before; got != 0 {
			t.Errorf("after removal: f1 forwarded %d packets, want 0 (direct path)", got)
		}
	})
	c.t = t

	t.Run("fail-open and fail-closed", func(t *testing.T) {
		c.t = t
		c.addChain(api.Chain{Name: "open", Tenant: "acme", Segment: "default", ToSegment: "", ToTenant: "open", Via: []netip.Addr{f1.IP}, Failure: api.FailOpen})
		c.addChain(api.Chain{Name: "closed", Tenant: "acme", Segment: "default", ToCIDR: netip.PrefixFrom(c.eps["a3"].IP, 32), Via: []netip.Addr{f2.IP}, Failure: api.FailClosed})
		c.waitSteering("open", true, "h1", "h2", "h3")
		c.waitSteering("closed", true, "h1", "h2", "h3")
		c.through("a1", "o3", []string{"f1"}, "f2", "f3")
		c.through("a1", "a3", []string{"f2"}, "f1", "f3")
		// Kill both functions: their links go.
		for _, sf := range []string{"rv-f1", "rv-f2"} {
			if _, err := c.hosts["h1"].Exec(c.ctx, "ip", "link", "del", sf); err != nil {
				t.Fatal(err)
			}
		}
		expect.Eventually(t, "fail-open: a1 reaches o3 around the dead f1", wait, func() error {
			return c.tcp("a1", "o3")
		})
		c.check([]probe{{"a1", "o3", true}, {"a2", "o1", true}})
		expect.Eventually(t, "fail-closed: h1's table for chain closed is a blackhole", wait, func() error {
			out, _ := c.hosts["h1"].Exec(c.ctx, "ip", "route", "show", "table", "all", "type", "blackhole")
			if !strings.Contains(out, "blackhole default") {
				return errors.New(out)
			}
			return nil
		})
		c.check([]probe{{"a1", "a3", false}, {"a2", "a3", false}, {"a1", "a2", true}}) // every source of the segment
		// Removing the fail-closed chain opens the path again.
		c.removeChain("closed")
		c.waitSteering("closed", false, "h1", "h2", "h3")
		c.check([]probe{{"a1", "a3", true}})
	})
	c.t = t

	t.Run("cleanup", func(t *testing.T) {
		c.t = t
		// A chain in place, so that h2 has steering to clean up: chain
		// "open" of the previous step was removed when that step ended (its
		// t.Cleanup), so add it again, through f3 (f1 is dead).
		c.addChain(api.Chain{Name: "open", Tenant: "acme", Segment: "default", ToTenant: "open", Via: []netip.Addr{f3.IP}, Failure: api.FailOpen})
		c.waitSteering("open", true, "h2")
		c.stopAgent("h2")
		h2 := c.hosts["h2"]
		cmd := h2.Command(c.ctx, c.exe, "--cleanup")
		cmd.Env = append(os.Environ(), asAgent+"=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("--cleanup: %v\n%s", err, out)
		}
		if out, _ := h2.Exec(c.ctx, "nft", "list", "tables"); strings.Contains(out, "romana-chain") {
			t.Errorf("steering table after --cleanup:\n%s", out)
		}
		if out, _ := h2.Exec(c.ctx, "ip", "rule"); strings.Contains(out, "fwmark") {
			t.Errorf("chain ip rules after --cleanup:\n%s", out)
		}
		if out, _ := h2.Exec(c.ctx, "ip", "route", "show", "table", "all", "proto", "190"); out != "" {
			t.Errorf("routes with proto 190 after --cleanup:\n%s", out)
		}
	})
	c.t = t
}

// dumpSteering logs every host's steering state.
func (c *cluster) dumpSteering() {
	for _, h := range []string{"h1", "h2", "h3"} {
		rules, _ := c.hosts[h].Exec(c.ctx, "ip", "rule")
		routes, _ := c.hosts[h].Exec(c.ctx, "ip", "route", "show", "table", "all", "proto", "190")
		nft, _ := c.hosts[h].Exec(c.ctx, "nft", "list", "ruleset")
		ct, _ := c.hosts[h].Exec(c.ctx, "conntrack", "-L")
		c.t.Logf("host %s:\n%s\n%s\n%s\n%s", h, rules, routes, nft, ct)
	}
}
