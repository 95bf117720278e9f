package firewall

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// flowLab is two simulated hosts with the flowtable rulesets: tenants acme
// (a1 on h1, a2 on h2) and beta (b1 on h1).
type flowLab struct {
	t     *testing.T
	ctx   context.Context
	lab   *sim.Lab
	plan  *plan.Plan
	snap  api.Snapshot
	hosts map[string]*sim.Host
	eps   map[string]*sim.Endpoint
	fws   map[string]*Firewall
}

func newFlowLab(t *testing.T) *flowLab {
	simtest.Require(t, "nft")
	ctx := context.Background()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		t.Fatal(err)
	}
	l := &flowLab{t: t, ctx: ctx, lab: simtest.New(t), plan: p, hosts: map[string]*sim.Host{}, eps: map[string]*sim.Endpoint{}, fws: map[string]*Firewall{}}
	l.snap = api.Snapshot{Networks: []api.Network{n},
		Tenants:  []api.Tenant{{Name: "acme", ID: 1}, {Name: "beta", ID: 2}},
		Segments: []api.Segment{{Tenant: "acme", Name: "s", ID: 0}, {Tenant: "beta", Name: "s", ID: 0}}}
	for i := uint64(1); i <= 2; i++ {
		name := fmt.Sprintf("h%d", i)
		ip := netip.AddrFrom4([4]byte{192, 168, 63, byte(i)})
		if l.hosts[name], err = l.lab.AddHost(ctx, name, netip.PrefixFrom(ip, 24)); err != nil {
			t.Fatal(err)
		}
		c, _ := p.HostCIDR(plan.Loc{Host: i})
		l.snap.Hosts = append(l.snap.Hosts, api.Host{Name: name, IP: ip, Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: i}, CIDR: c}}})
		if err := l.hosts[name].Do(func() (err error) { l.fws[name], err = New(nil); return err }); err != nil {
			t.Fatal(err)
		}
	}
	var unsupported error
	l.hosts["h1"].Do(func() error { unsupported = l.fws["h1"].FlowtableSupport(ctx); return nil })
	if unsupported != nil {
		t.Skipf("this kernel has no software flowtables: %v", unsupported)
	}
	l.endpoint("a1", "h1", 1, "acme", 1)
	l.endpoint("a2", "h2", 1, "acme", 2)
	l.endpoint("b1", "h1", 2, "beta", 1)
	return l
}

// endpoint creates an endpoint (its veth is rv-<name>) and adds its address.
func (l *flowLab) endpoint(name, host string, tid uint64, tenant string, ep uint64) {
	l.t.Helper()
	hid := uint64(host[1] - '0')
	ip, err := l.plan.Address(plan.Loc{Host: hid}, tid, 0, ep)
	if err != nil {
		l.t.Fatal(err)
	}
	if l.eps[name], err = l.lab.AddEndpoint(l.ctx, l.hosts[host], name, ip, "rv-"+name); err != nil {
		l.t.Fatal(err)
	}
	l.snap.Addresses = append(l.snap.Addresses, api.Address{Name: name, IP: ip, Network: "net1", Host: host, Tenant: tenant, Segment: "s", Interface: "rv-" + name})
}

// apply computes and applies every host's state with the flowtable, the
// underlay read as the agent would see it (eth0 and the veths present).
func (l *flowLab) apply() {
	l.t.Helper()
	for name, h := range l.hosts {
		u := &hoststate.Underlay{Links: []hoststate.Link{{Name: sim.HostIface, Kind: "veth", Addrs: []netip.Prefix{h.Addr}}}}
		out, _ := h.Exec(l.ctx, "ip", "-o", "link", "show", "type", "veth")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "rv-") {
				u.Links = append(u.Links, hoststate.Link{Name: strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0], Kind: "veth"})
			}
		}
		for other, oh := range l.hosts { // flat mode: the other host's MAC
			if other != name {
				u.Neighbors = append(u.Neighbors, hoststate.Neighbor{IP: oh.Addr.Addr(), Link: sim.HostIface, MAC: l.mac(oh)})
			}
		}
		st, err := hoststate.Compute(l.snap, name, hoststate.Options{Underlay: u, Flowtable: true})
		if err != nil || len(st.Problems) > 0 {
			l.t.Fatal(err, st.Problems)
		}
		if err := h.Do(func() error {
			if _, err := programHost(l.ctx, st); err != nil { // routes
				return err
			}
			_, err := l.fws[name].Apply(l.ctx, st.Firewall)
			return err
		}); err != nil {
			l.t.Fatalf("apply on %s: %v", name, err)
		}
	}
}

// mac returns the link-layer address of a host's uplink.
func (l *flowLab) mac(h *sim.Host) string {
	l.t.Helper()
	out, err := h.Exec(l.ctx, "cat", "/sys/class/net/"+sim.HostIface+"/address")
	if err != nil {
		l.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// listen accepts connections on ep:port and discards what they send.
func (l *flowLab) listen(ep string, port int) {
	l.t.Helper()
	e := l.eps[ep]
	ln, err := e.Listen("tcp", netip.AddrPortFrom(e.IP, uint16(port)).String())
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
}

// dial connects from one endpoint to another's port.
func (l *flowLab) dial(from, to string, port int) (net.Conn, error) {
	var c net.Conn
	err := l.eps[from].Do(func() (err error) {
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(l.eps[to].IP, uint16(port)).String(), time.Second)
		return err
	})
	return c, err
}

// offloaded reports whether host's conntrack table shows the connection
// to port as offloaded to the flowtable.
func (l *flowLab) offloaded(host string, port int) error {
	out, err := l.hosts[host].Exec(l.ctx, "cat", "/proc/net/nf_conntrack")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, fmt.Sprintf("dport=%d ", port)) && strings.Contains(line, "[OFFLOAD]") {
			return nil
		}
	}
	return fmt.Errorf("no offloaded connection to port %d on %s:\n%s", port, host, out)
}

// send writes to c until the connection is seen offloaded on both hosts.
func (l *flowLab) sendUntilOffloaded(c net.Conn, port int, hosts ...string) {
	l.t.Helper()
	buf := make([]byte, 64<<10)
	expect.Eventually(l.t, "offloaded", 10*time.Second, func() error {
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		for _, h := range hosts {
			if err := l.offloaded(h, port); err != nil {
				return err
			}
		}
		return nil
	})
}

func (l *flowLab) devices(host string) string {
	out, err := l.hosts[host].Exec(l.ctx, "nft", "list", "flowtable", "inet", hoststate.Table, hoststate.FlowtableName)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

// With the flowtable: allowed connections flow and are offloaded, denied
// ones are still denied, a policy added later blocks new connections of
// its class (the already offloaded one goes on, as an established one
// does without the flowtable), and an endpoint removed and re-added is
// hooked again.
func TestFlowtableInNamespace(t *testing.T) {
	l := newFlowLab(t)
	l.apply()
	for _, h := range []string{"h1", "h2"} {
		if d := l.devices(h); !strings.Contains(d, "eth0") {
			t.Fatalf("%s: flowtable without the uplink:\n%s", h, d)
		}
	}
	l.listen("a2", 7070)
	c, err := l.dial("a1", "a2", 7070)
	if err != nil {
		t.Fatalf("a1 -> a2 (same tenant): %v", err)
	}
	defer c.Close()
	l.sendUntilOffloaded(c, 7070, "h1", "h2")
	if c, err := l.dial("b1", "a2", 7070); err == nil {
		c.Close()
		t.Fatal("b1 -> a2 (other tenant) connected with the flowtable")
	}

	// A policy denying acme's port 7070: new connections are refused; the
	// offloaded one keeps flowing, as with "ct state established accept".
	l.snap.Policies = []api.Policy{{Name: "no-7070", Priority: 10, Direction: []string{"ingress"},
		AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules:     []api.Rule{{Action: "deny", Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{7070}}}}}
	l.apply()
	if c, err := l.dial("a1", "a2", 7070); err == nil {
		c.Close()
		t.Fatal("a new connection of a denied class connected")
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatalf("the established connection stopped after the policy change: %v", err)
	}
	l.snap.Policies = nil
	l.apply()

	// An endpoint added later is hooked; removed (its veth gone) and
	// added again with the same veth name, it is hooked again.
	l.endpoint("a3", "h2", 1, "acme", 3)
	l.apply()
	if d := l.devices("h2"); !strings.Contains(d, "rv-a3") {
		t.Fatalf("new endpoint's veth not in the flowtable:\n%s", d)
	}
	if _, err := l.hosts["h2"].Exec(l.ctx, "ip", "link", "del", "rv-a3"); err != nil {
		t.Fatal(err)
	}
	ip := l.eps["a3"].IP
	l.snap.Addresses = l.snap.Addresses[:len(l.snap.Addresses)-1]
	l.apply()
	if l.eps["a3"], err = l.lab.AddEndpoint(l.ctx, l.hosts["h2"], "a3b", ip, "rv-a3"); err != nil {
		t.Fatal(err)
	}
	l.snap.Addresses = append(l.snap.Addresses, api.Address{Name: "a3", IP: ip, Network: "net1", Host: "h2", Tenant: "acme", Segment: "s", Interface: "rv-a3"})
	l.apply()
	if d := l.devices("h2"); !strings.Contains(d, "rv-a3") {
		t.Fatalf("re-added endpoint's veth not in the flowtable:\n%s", d)
	}
	l.listen("a3", 7072)
	c3, err := l.dial("a1", "a3", 7072)
	if err != nil {
		t.Fatalf("a1 -> re-added a3: %v", err)
	}
	defer c3.Close()
	l.sendUntilOffloaded(c3, 7072, "h2")
}
