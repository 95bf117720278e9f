package main

// Faults the dataplane survives, end to end (docs/reliability.md, "Faults
// survived"): the agent restarted (SIGTERM, SIGKILL) and upgraded under a
// TCP stream, new connections and ping floods; drift repaired by the first
// reconciliation after it; romanad down for 60 s (ROMANA_FAULTS=1 only).
// Every figure the tests log is what the document records.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/server/servertest"
)

// faultsEnv runs the long fault tests (make faults).
const faultsEnv = "ROMANA_FAULTS"

// How the ping floods send: flood is ping -f, the next echo request as
// soon as the previous reply is back (tens of thousands a second here),
// for the short tests; steady is one every millisecond (1,000 a second;
// this ping takes a shorter interval for none) for a test that runs for
// minutes on a shared machine.
var (
	flood  = []string{"-f"}
	steady = []string{"-i", "0.001"}
)

// killAgent kills the host's agent with SIGKILL (by its PID) and waits.
func (c *cluster) killAgent(host string) {
	p := c.agents[host]
	if p == nil {
		return
	}
	delete(c.agents, host)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// agentMetric reads one unlabelled metric of the host's agent.
func (c *cluster) agentMetric(host, name string) (float64, error) {
	body, err := c.agentGet(host, "/metrics", 5*time.Second)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("agent %s: no metric %s", host, name)
}

func (c *cluster) reconciles(host string) int {
	c.t.Helper()
	v, err := c.agentMetric(host, "romana_agent_reconciles_total")
	if err != nil {
		c.t.Fatal(err)
	}
	return int(v)
}

// waitReconciles waits until the host's agent has started n
// reconciliations more than when called (so n-1 of them completed).
func (c *cluster) waitReconciles(host string, n int) {
	c.t.Helper()
	from := c.reconciles(host)
	expect.Eventually(c.t, fmt.Sprintf("%d more reconciliations on %s", n, host), wait, func() error {
		got := c.reconciles(host)
		if got < from+n {
			return fmt.Errorf("%d", got-from)
		}
		return nil
	})
}

// ruleset is the host's whole nftables ruleset without counter values.
func (c *cluster) ruleset(host string) string {
	c.t.Helper()
	out, err := c.hosts[host].Exec(c.ctx, "nft", "-s", "list", "ruleset")
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// nftMonitor records the nftables events of a host's namespace (nft
// monitor) between two markers: a table it adds and deletes when it
// starts, once nft monitor reports it, and another when it stops, so that
// every event in between has been read.
type nftMonitor struct {
	c    *cluster
	host string
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
}

func (c *cluster) monitorNft(host string) *nftMonitor {
	c.t.Helper()
	m := &nftMonitor{c: c, host: host, done: make(chan struct{})}
	m.cmd = c.hosts[host].Command(context.Background(), "nft", "monitor")
	m.cmd.Stdout, m.cmd.Stderr = &m.out, &m.out
	if err := m.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { m.cmd.Wait(); close(m.done) }()
	c.t.Cleanup(m.kill)
	m.mark("romt_start")
	return m
}

// mark adds and deletes table ip NAME until nft monitor has reported the
// deletion (the monitor subscribes some time after it starts).
func (m *nftMonitor) mark(name string) {
	m.c.t.Helper()
	expect.Eventually(m.c.t, "nft monitor reports marker "+name, wait, func() error {
		if _, err := m.c.hosts[m.host].Exec(m.c.ctx, "nft", "add", "table", "ip", name); err != nil {
			return err
		}
		if _, err := m.c.hosts[m.host].Exec(m.c.ctx, "nft", "delete", "table", "ip", name); err != nil {
			return err
		}
		if out := m.out.String(); !strings.Contains(out, "delete table ip "+name) {
			return errors.New(out)
		}
		return nil
	})
}

func (m *nftMonitor) kill() {
	m.cmd.Process.Signal(syscall.SIGTERM)
	<-m.done
}

// stop ends the recording and returns the events between the markers
// (nft's "# new generation" lines left out: a transaction that changes
// nothing is no flap).
func (m *nftMonitor) stop() []string {
	m.c.t.Helper()
	m.mark("romt_end")
	m.kill()
	out := m.out.String()
	start := strings.Index(out, "delete table ip romt_start")
	end := strings.Index(out, "add table ip romt_end")
	var events []string
	for _, l := range strings.Split(out[start:end], "\n")[1:] {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.Contains(l, "romt_start") || strings.Contains(l, "romt_end") {
			continue
		}
		events = append(events, l)
	}
	return events
}

// pingFlood runs ping from one endpoint to another (mode: flood or
// steady), 4,000 echo requests a run, run after run until stopped, and
// sums what each run sent and got back (ping waits for the replies of its
// last requests, up to 5 s).
type pingFlood struct {
	from, to string
	stopping chan struct{}
	wg       sync.WaitGroup

	mu       sync.Mutex
	tx, rx   int
	runs     int
	failures []string // a run that lost packets or failed, with its output
}

var pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// startLoad starts the load both fault tests run through h1: a TCP
// stream a1 -> a2 with new connections a3 -> a1b and a2 -> a3, and ping
// floods a1 -> a2 and a3 -> a1b sending as mode says. progress checks
// that all of it still flows.
func (c *cluster) startLoad(t *testing.T, mode []string) (*traffic, []*pingFlood, func(what string)) {
	tr := c.startTraffic("a1", "a2", [2]string{"a3", "a1b"}, [2]string{"a2", "a3"})
	floods := []*pingFlood{c.startPingFlood("a1", "a2", mode), c.startPingFlood("a3", "a1b", mode)}
	return tr, floods, func(what string) {
		t.Helper()
		tr.progress(t, what)
		for _, f := range floods {
			f.progress(t, what)
		}
	}
}

func (c *cluster) startPingFlood(from, to string, mode []string) *pingFlood {
	f := &pingFlood{from: from, to: to, stopping: make(chan struct{})}
	ep, dst := c.eps[from], c.eps[to].IP.String()
	f.wg.Go(func() {
		for {
			select {
			case <-f.stopping:
				return
			default:
			}
			args := append(append([]string{"ping", "-q", "-n"}, mode...), "-c", "4000", "-W", "5", dst)
			out, err := ep.Command(context.Background(), args...).CombinedOutput()
			m := pingSummaryRE.FindSubmatch(out)
			f.mu.Lock()
			f.runs++
			if m == nil {
				f.failures = append(f.failures, fmt.Sprintf("ping %s -> %s at %s: %v: %s", from, to, time.Now().Format("15:04:05.000"), err, out))
				f.mu.Unlock()
				return
			}
			tx, _ := strconv.Atoi(string(m[1]))
			rx, _ := strconv.Atoi(string(m[2]))
			f.tx, f.rx = f.tx+tx, f.rx+rx
			if rx != tx {
				f.failures = append(f.failures, fmt.Sprintf("ping %s -> %s run ending %s: %d sent, %d received", from, to,
					time.Now().Format("15:04:05.000"), tx, rx))
			}
			f.mu.Unlock()
		}
	})
	c.t.Cleanup(func() { f.stop() })
	return f
}

// progress waits until another run has completed, failing the test if a
// run lost a packet.
func (f *pingFlood) progress(t *testing.T, what string) {
	t.Helper()
	f.mu.Lock()
	runs := f.runs
	f.mu.Unlock()
	expect.Eventually(t, what, wait, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.failures) > 0 {
			t.Fatalf("%s: ping flood %s -> %s: %s", what, f.from, f.to, strings.Join(f.failures, "; "))
		}
		if f.runs <= runs {
			return fmt.Errorf("%d runs", f.runs-runs)
		}
		return nil
	})
}

// stop stops after the current run and returns the totals.
func (f *pingFlood) stop() (tx, rx int, failures []string) {
	select {
	case <-f.stopping:
	default:
		close(f.stopping)
	}
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tx, f.rx, f.failures
}

// retransmits returns the TCP segments the endpoint's namespace has
// retransmitted (Tcp RetransSegs of /proc/net/snmp).
func (c *cluster) retransmits(ep string) int {
	c.t.Helper()
	out, err := c.eps[ep].Exec(c.ctx, "cat", "/proc/net/snmp")
	if err != nil {
		c.t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RetransSegs" && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	c.t.Fatalf("no Tcp RetransSegs in %s's /proc/net/snmp", ep)
	return 0
}

// agentBinary returns $ROMANA_BIN/romana-agent (set by the Makefile) or a
// fresh build: the "new version" of an upgrade from this test binary.
func agentBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("ROMANA_BIN"); d != "" {
		return filepath.Join(d, "romana-agent")
	}
	d := t.TempDir()
	cmd := exec.Command("go", "build", "-o", d+"/", "github.com/romana/romana/cmd/romana-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build romana-agent: %v\n%s", err, out)
	}
	return filepath.Join(d, "romana-agent")
}

// changedLines are the agent's log lines that say it changed the host.
var changedLines = regexp.MustCompile(`msg="(nftables [a-z ]*(replaced|rewritten|updated|deleted)|route (add|replace|deleted)|steering table [a-z]*|sysctl set|chain ip rule [a-z]*|chain route [a-z]*)"`)

// TestFaultsAgentRestartUpgrade: while a TCP stream (a1 on h1 to a2 on h2,
// a line every 10 ms), new connections every 100 ms (a3 to a1b, a2 to a3)
// and two ping -f floods (a1 to a2, a3 to a1b) run, h2's agent is stopped
// and started (SIGTERM), h1's is killed (SIGKILL) and started, and h2's is
// upgraded (stopped, and another build started on the same host). Each
// time: nft monitor in the host sees no change from before the stop until
// the new agent has run a full resync, the ruleset (without counter
// values) and the routes are what they were, and the agent logs no change.
// Over all of it: no ping lost, the stream unbroken, no new connection
// failed.
func TestFaultsAgentRestartUpgrade(t *testing.T) {
	c := newCluster(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		c.startAgent(h)
	}
	c.waitHealthy("h1", "h2", "h3")
	c.waitRoutes("h1", "h2", "h3")
	c.check(matrix) // also resolves the hosts' link-layer addresses
	newVersion := agentBinary(t)
	testBinary := c.exe

	retrans := map[string]int{}
	for _, ep := range []string{"a1", "a2", "a3"} {
		retrans[ep] = c.retransmits(ep)
	}
	tr, floods, progress := c.startLoad(t, flood)
	progress("traffic running")
	began := time.Now()

	type step struct {
		name, host string
		stop       func(host string)
		exe        string
	}
	var figures []string
	for _, s := range []step{
		{"restart (SIGTERM)", "h2", c.stopAgent, testBinary},
		{"restart (SIGKILL)", "h1", c.killAgent, testBinary},
		{"upgrade (SIGTERM, then the romana-agent build)", "h2", c.stopAgent, newVersion},
	} {
		rules, routes := c.ruleset(s.host), c.ourRoutes(s.host)
		mon := c.monitorNft(s.host)
		logAt := len(c.agentLog(s.host, 0))
		stopped := time.Now()
		s.stop(s.host)
		progress("traffic while " + s.host + "'s agent is down")
		c.exe = s.exe
		c.startAgent(s.host)
		c.exe = testBinary
		c.waitHealthy(s.host)
		healthy := time.Since(stopped)
		// The first reconciliation checks the table; wait for a ticker
		// resync after it too.
		c.waitReconciles(s.host, 3)
		progress("traffic after " + s.host + "'s agent " + s.name)
		ev := mon.stop()
		if len(ev) > 0 {
			t.Errorf("%s of %s's agent: nftables changed:\n%s", s.name, s.host, strings.Join(ev, "\n"))
		}
		if got := c.ruleset(s.host); got != rules {
			t.Errorf("%s of %s's agent: ruleset before\n%s\nafter\n%s", s.name, s.host, rules, got)
		}
		if got := c.ourRoutes(s.host); got != routes {
			t.Errorf("%s of %s's agent: routes before\n%s\nafter\n%s", s.name, s.host, routes, got)
		}
		if l := changedLines.FindAllString(c.agentLog(s.host, logAt), -1); len(l) > 0 {
			t.Errorf("%s of %s's agent: it changed the host: %s\n%s", s.name, s.host, strings.Join(l, ", "), c.agentLog(s.host, logAt))
		}
		figures = append(figures, fmt.Sprintf("%s of %s: healthy again %v after the stop; %d nft events",
			s.name, s.host, healthy.Round(time.Millisecond), len(ev)))
	}
	lines, connects, err := tr.stop()
	if err != nil {
		t.Fatalf("traffic broke: %v", err)
	}
	for _, f := range floods {
		tx, rx, failures := f.stop()
		if len(failures) > 0 || tx != rx {
			t.Errorf("ping flood %s -> %s: %d sent, %d received: %s", f.from, f.to, tx, rx, strings.Join(failures, "; "))
		}
		figures = append(figures, fmt.Sprintf("ping -f %s -> %s: %d sent (%.0f/s), %d received, %d lost", f.from, f.to, tx,
			float64(tx)/time.Since(began).Seconds(), rx, tx-rx))
	}
	var rt []string
	for _, ep := range []string{"a1", "a2", "a3"} {
		rt = append(rt, fmt.Sprintf("%s %d", ep, c.retransmits(ep)-retrans[ep]))
	}
	figures = append(figures, fmt.Sprintf("TCP: %d lines on one stream, %d new connections, none failed; segments retransmitted: %s",
		lines, connects, strings.Join(rt, ", ")))
	for _, f := range figures {
		t.Log(f)
	}
}

// hostState is what the agent owns on a host, as the kernel lists it: the
// table (without counter values), its routes, its gateway link.
func (c *cluster) hostState(host string) string {
	c.t.Helper()
	h := c.hosts[host]
	nft, err := h.Exec(c.ctx, "nft", "-s", "list", "table", "inet", hoststate.Table)
	if err != nil {
		nft = "no table: " + err.Error()
	}
	gw, _ := h.Exec(c.ctx, "ip", "-4", "-br", "addr", "show", "dev", hoststate.GatewayLink)
	return nft + c.ourRoutes(host) + gw
}

// foreignState is what others own on a host: every nftables table but
// ours, the routes that are not ours (proto 190) and every ip rule.
func (c *cluster) foreignState(host string) string {
	c.t.Helper()
	h := c.hosts[host]
	var b strings.Builder
	tables, err := h.Exec(c.ctx, "nft", "list", "tables")
	if err != nil {
		c.t.Fatal(err)
	}
	for _, tb := range strings.Split(strings.TrimSpace(tables), "\n") {
		if f := strings.Fields(tb); len(f) == 3 && f[2] != hoststate.Table {
			out, _ := h.Exec(c.ctx, "nft", "-s", "list", "table", f[1], f[2])
			b.WriteString(out)
		}
	}
	for _, args := range [][]string{{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-4", "rule", "show"}} {
		out, err := h.Exec(c.ctx, args...)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, l := range strings.Split(out, "\n") {
			if !strings.Contains(l, "proto 190") {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

// handleRE matches a rule line of `nft -a list chain`: the rule (with its
// comment) and its handle.
var handleRE = regexp.MustCompile(`^\s*(.*) # handle (\d+)$`)

// editRule rewrites in place (nft replace) the first rule of our table
// whose listing contains match, with the rule edit returns (its comment
// kept if edit keeps it), and returns the chain and the new rule.
func (c *cluster) editRule(host, match string, edit func(string) string) (string, string) {
	c.t.Helper()
	h := c.hosts[host]
	out, err := h.Exec(c.ctx, "nft", "-a", "list", "table", "inet", hoststate.Table)
	if err != nil {
		c.t.Fatal(err)
	}
	chain := ""
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "chain" {
			chain = f[1]
			continue
		}
		m := handleRE.FindStringSubmatch(line)
		if m == nil || !strings.Contains(m[1], match) {
			continue
		}
		rule := edit(m[1])
		if _, err := h.Exec(c.ctx, "nft", "replace", "rule", "inet", hoststate.Table, chain, "handle", m[2], rule); err != nil {
			c.t.Fatal(err)
		}
		return chain, rule
	}
	c.t.Fatalf("no rule matching %q in table %s on %s:\n%s", match, hoststate.Table, host, out)
	return "", ""
}

// TestFaultsDrift: on hosts whose agents converged, each of these is
// undone by the first reconciliation that starts after it (the agent's
// reconciliation counter, read right after the drift, has not yet counted
// a second one when the host is found repaired): a deleted route to a
// remote block, a deleted endpoint route, the gateway link deleted, an
// endpoint's veth deleted and created again by its owner, a tenant's
// isolation drop rewritten in place into accept (comment kept), the whole
// table flushed, the table deleted. A foreign nftables table, a foreign
// route and two foreign ip rules (one at the priority chain steering uses,
// to a table in its range) are untouched, and connectivity is as before.
func TestFaultsDrift(t *testing.T) {
	c := newCluster(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		c.startAgent(h)
	}
	c.waitHealthy("h1", "h2", "h3")
	c.waitRoutes("h1", "h2", "h3")
	c.check(matrix)
	h2 := c.hosts["h2"]
	foreign := filepath.Join(t.TempDir(), "foreign.nft")
	os.WriteFile(foreign, []byte("table ip foreign {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tip saddr 10.0.0.0/8 counter\n\t}\n}\n"), 0o644)
	for _, cmd := range [][]string{
		{"nft", "-f", foreign},
		{"ip", "route", "add", "172.16.0.0/12", "via", "192.168.77.254", "proto", "static"},
		{"ip", "rule", "add", "priority", "1000", "from", "10.99.0.0/16", "lookup", "20001"},
		{"ip", "rule", "add", "priority", "30000", "fwmark", "0x99", "lookup", "100"},
	} {
		if _, err := h2.Exec(c.ctx, cmd...); err != nil {
			t.Fatal(err)
		}
	}
	c.waitReconciles("h2", 2)
	others := c.foreignState("h2")
	for _, want := range []string{"table ip foreign", "172.16.0.0/12 via 192.168.77.254", "from 10.99.0.0/16 lookup 20001", "fwmark 0x99 lookup 100"} {
		if !strings.Contains(others, want) {
			t.Fatalf("h2's foreign state lacks %q:\n%s", want, others)
		}
	}
	before := map[string]string{}
	for _, h := range []string{"h1", "h2", "h3"} {
		before[h] = c.hostState(h)
	}

	var figures []string
	drift := func(host, what string, do func()) {
		t.Helper()
		do()
		n0, began := c.reconciles(host), time.Now()
		expect.Eventually(t, what+" repaired", wait, func() error {
			n := c.reconciles(host) // before the state: if n >= n0+2, reconciliation n0+1 has ended
			got := c.hostState(host)
			if got == before[host] {
				figures = append(figures, fmt.Sprintf("%s on %s: repaired by reconciliation %d after it, %v", what, host, n-n0,
					time.Since(began).Round(time.Millisecond)))
				return nil
			}
			if n >= n0+2 {
				t.Fatalf("%s on %s: not repaired by the first reconciliation after it (%d ran):\n%s\nwant\n%s", what, host, n-n0, got, before[host])
			}
			return errors.New(got)
		})
	}
	drift("h2", "route to h1's block deleted", func() {
		if _, err := h2.Exec(c.ctx, "ip", "route", "del", c.cidrs["h1"].String()); err != nil {
			t.Fatal(err)
		}
	})
	drift("h2", "endpoint route deleted", func() {
		if _, err := h2.Exec(c.ctx, "ip", "route", "del", c.eps["a2"].IP.String()+"/32"); err != nil {
			t.Fatal(err)
		}
	})
	drift("h2", "gateway link deleted", func() {
		if _, err := h2.Exec(c.ctx, "ip", "link", "del", hoststate.GatewayLink); err != nil {
			t.Fatal(err)
		}
	})
	drift("h2", "endpoint veth deleted and created again", func() {
		a2 := c.eps["a2"]
		if _, err := h2.Exec(c.ctx, "ip", "link", "del", a2.HostIface); err != nil {
			t.Fatal(err)
		}
		expect.Eventually(t, "the agent notices the missing veth", wait, func() error {
			st := c.hostState("h2")
			if strings.Contains(st, a2.IP.String()+" dev "+a2.HostIface) {
				return errors.New(st)
			}
			return nil
		})
		// The endpoint's owner (the CNI plugin) attaches it again: a new
		// namespace with the same address behind the same host interface.
		ep, err := c.lab.AddEndpoint(c.ctx, h2, "a2r", a2.IP, a2.HostIface)
		if err != nil {
			t.Fatal(err)
		}
		c.eps["a2"] = ep
		c.serveEcho(ep, echoPort)
	})
	drift("h1", "tenant isolation drop edited into accept", func() {
		c.editRule("h1", `drop comment "tenant acme: isolation"`,
			func(r string) string { return strings.Replace(r, " drop comment", " accept comment", 1) })
	})
	drift("h3", "table flushed", func() {
		if _, err := c.hosts["h3"].Exec(c.ctx, "nft", "flush", "table", "inet", hoststate.Table); err != nil {
			t.Fatal(err)
		}
	})
	drift("h3", "table deleted", func() {
		if _, err := c.hosts["h3"].Exec(c.ctx, "nft", "delete", "table", "inet", hoststate.Table); err != nil {
			t.Fatal(err)
		}
	})
	if got := c.foreignState("h2"); got != others {
		t.Errorf("h2's foreign tables, routes or rules changed:\nbefore\n%s\nafter\n%s", others, got)
	}
	c.check(matrix)
	for _, f := range figures {
		t.Log(f)
	}
}

// TestFaultsRomanadDown (ROMANA_FAULTS=1): romanad is stopped for 60 s
// while a stream, new connections and ping floods run. The agents keep
// the last state: nothing in h1's nftables changes while it is down, the
// traffic never fails, the agents stay healthy, and a route deleted on h2
// in that time (d2's) is put back from the agent's cache. The change made
// while it is away goes through a second romanad on the same etcd (another
// replica; the one the agents use is the one down): a new endpoint a2b on
// h2 and a policy refusing a1's connections to h3's endpoints. When
// romanad is back, the agents read a new snapshot and both take effect:
// a1 reaches a2b, a1 no longer reaches a3.
func TestFaultsRomanadDown(t *testing.T) {
	if os.Getenv(faultsEnv) != "1" {
		t.Skip("60 s of romanad downtime: run with " + faultsEnv + "=1 (make faults)")
	}
	const down = 60 * time.Second
	etcd := servertest.StartEtcd(t, nil)
	c := newCluster(t, servertest.WithEtcdEndpoints(etcd.Endpoint))
	replica := servertest.Start(t, servertest.WithEtcdEndpoints(etcd.Endpoint))
	for _, h := range []string{"h1", "h2", "h3"} {
		c.startAgent(h)
	}
	c.waitHealthy("h1", "h2", "h3")
	c.waitRoutes("h1", "h2", "h3")
	c.check(matrix)
	c.check([]probe{{"a1", "a3", true}})

	tr, floods, progress := c.startLoad(t, steady)
	progress("traffic running")
	mon := c.monitorNft("h1")
	logAt := map[string]int{}
	for _, h := range []string{"h1", "h2", "h3"} {
		logAt[h] = len(c.agentLog(h, 0))
	}
	reconcilesAt := c.reconciles("h2")

	c.srv.Stop()
	stopped := time.Now()
	for _, h := range []string{"h1", "h2", "h3"} {
		expect.Eventually(t, h+"'s agent sees romanad gone", wait, func() error {
			if log := c.agentLog(h, logAt[h]); !strings.Contains(log, "watch ended") {
				return errors.New(log)
			}
			return nil
		})
	}
	// The change, made while it is away.
	a, err := replica.Client.Allocate(c.ctx, api.AddressRequest{Name: "a2b", Host: "h2", Tenant: "acme", Segment: "default", Interface: "rv-a2b"})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.lab.AddEndpoint(c.ctx, c.hosts["h2"], "a2b", a.IP, "rv-a2b")
	if err != nil {
		t.Fatal(err)
	}
	c.eps["a2b"] = ep
	c.serveEcho(ep, echoPort)
	if _, err := replica.Client.PutPolicy(c.ctx, api.Policy{Name: "no-a1-to-a3", Direction: []string{api.DirectionIngress},
		AppliedTo: []api.Selector{{Host: "h3"}},
		Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{CIDR: netip.PrefixFrom(c.eps["a1"].IP, 32).String()}},
			Protocol: api.ProtoTCP, Ports: []uint16{echoPort}}}}); err != nil {
		t.Fatal(err)
	}
	// Drift while romanad is away is repaired from the agent's cache (the
	// route of d2, which no measured traffic uses).
	routeGone := time.Now()
	if _, err := c.hosts["h2"].Exec(c.ctx, "ip", "route", "del", c.eps["d2"].IP.String()+"/32"); err != nil {
		t.Fatal(err)
	}
	c.waitRoutes("h2")
	repaired := time.Since(routeGone)
	// The rest of the minute: the traffic must keep flowing and the agents
	// healthy; the changes must not arrive (nothing serves them).
	expect.Eventually(t, "romanad down", time.Until(stopped.Add(down+30*time.Second)), func() error {
		progress(fmt.Sprintf("traffic %v after romanad stopped", time.Since(stopped).Round(time.Second)))
		for _, h := range []string{"h1", "h2", "h3"} {
			if out, err := c.healthz(h); err != nil || !strings.HasPrefix(out, "HTTP/1.0 200") {
				t.Fatalf("%s's agent unhealthy while romanad is down: %v %s", h, err, out)
			}
		}
		if d := time.Since(stopped); d < down {
			return fmt.Errorf("down for %v of %v", d.Round(time.Second), down)
		}
		return nil
	})
	if err := c.tcp("a1", "a3"); err != nil {
		t.Fatalf("the policy made while romanad was down took effect without it: %v", err)
	}
	if ev := mon.stop(); len(ev) > 0 {
		t.Errorf("h1's nftables changed while romanad was down:\n%s", strings.Join(ev, "\n"))
	}
	reconcilesDown := c.reconciles("h2") - reconcilesAt
	retries := strings.Count(c.agentLog("h2", logAt["h2"]), `msg="watch ended; watching again"`) +
		strings.Count(c.agentLog("h2", logAt["h2"]), `msg="read snapshot from romanad"`)

	c.srv.Restart()
	back := time.Now()
	for _, h := range []string{"h1", "h2", "h3"} {
		expect.Eventually(t, h+"'s agent follows romanad again", wait, func() error {
			log := c.agentLog(h, logAt[h])
			if !strings.Contains(log, `msg="watch resumed"`) && !strings.Contains(log, `msg="snapshot read"`) {
				return errors.New(log)
			}
			return nil
		})
	}
	reconnected := time.Since(back)
	expect.Eventually(t, "a1 reaches a2b, allocated while romanad was down", wait, func() error {
		return c.tcp("a1", "a2b")
	})
	expect.Eventually(t, "the policy made while romanad was down refuses a1 -> a3", wait, func() error {
		if c.tcp("a1", "a3") == nil {
			return errors.New("a1 still reaches a3")
		}
		return nil
	})
	converged := time.Since(back)
	c.check([]probe{{"a1", "a2", true}, {"a3", "a1b", true}, {"w1", "a2b", false}, {"a2b", "a3", true}, {"a1", "w2", false}})
	progress("traffic after romanad is back")
	lines, connects, err := tr.stop()
	if err != nil {
		t.Fatalf("traffic broke: %v", err)
	}
	t.Logf("romanad down %v: 0 nft events on h1, h2's agent ran %d reconciliations (%d reconnection attempts), a deleted route put back in %v",
		back.Sub(stopped).Round(time.Second), reconcilesDown, retries, repaired.Round(time.Millisecond))
	t.Logf("romanad back: every agent followed it again within %v, the changes made while it was away in effect within %v",
		reconnected.Round(time.Millisecond), converged.Round(time.Millisecond))
	for _, f := range floods {
		tx, rx, failures := f.stop()
		if len(failures) > 0 || tx != rx {
			t.Errorf("ping flood %s -> %s: %d sent, %d received: %s", f.from, f.to, tx, rx, strings.Join(failures, "; "))
		}
		t.Logf("ping -i 0.001 %s -> %s: %d sent, %d received, %d lost", f.from, f.to, tx, rx, tx-rx)
	}
	t.Logf("TCP: %d lines on one stream, %d new connections, none failed", lines, connects)
}
