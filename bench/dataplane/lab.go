package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/romana/romana/api"
	"github.com/romana/romana/bench/workload"
	"github.com/romana/romana/cnirun"
	"github.com/romana/romana/firewall"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim"
)

// The simulated datacenter: two hosts and a controller (etcd for flannel)
// on one fabric bridge. Every address below lives in the lab's namespaces.
const (
	underlay  = "192.168.77.%d/24"
	etcdIP    = "192.168.77.100"
	etcdURL   = "http://" + etcdIP + ":2379"
	cniBinDir = "/usr/lib/cni"
)

// Hosts are the simulated hosts: h1 holds the source and the same-host
// destination of every condition, h2 the cross-host destination.
var Hosts = []string{"h1", "h2"}

// endpoint is one end of a measured flow: a namespace and its address.
type endpoint struct {
	ns *sim.Namespace
	ip netip.Addr
}

// flows are a condition's source and its two destinations.
type flows struct {
	src         endpoint
	cross, same endpoint
}

func (f flows) dst(placement string) endpoint {
	if placement == Same {
		return f.same
	}
	return f.cross
}

// lab is the built datacenter with every condition's endpoints.
type lab struct {
	*sim.Lab
	log       *slog.Logger
	dir       string // temp dir: etcd data, flannel subnet files, host-local data, logs
	hosts     map[string]*sim.Host
	ctl       *sim.Host        // etcd's machine
	flows     map[string]flows // by condition
	procs     []*proc
	listeners []net.Listener

	// Romana's firewall on each host, its ruleset, and whether it is on.
	fw        map[string]*firewall.Firewall
	rules     map[string]hoststate.Ruleset
	romanaOn  bool
	ruleCount int
	notes     []string
}

// romanaPlan: 10.0.0.0/8, host 8 bits | tenant 10 | segment 2, as the
// firewall benchmarks use it.
func romanaSnapshot(tenants, policies int) (api.Snapshot, *plan.Plan, error) {
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 10}, {Name: "segment", Bits: 2}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		return api.Snapshot{}, nil, fmt.Errorf("parse plan of %s: %w", n.Name, err)
	}
	snap := api.Snapshot{Networks: []api.Network{n}}
	for i, h := range Hosts {
		loc := plan.Loc{Host: uint64(i + 1)}
		c, err := p.HostCIDR(loc)
		if err != nil {
			return api.Snapshot{}, nil, fmt.Errorf("host CIDR of %s: %w", h, err)
		}
		ip := netip.MustParsePrefix(fmt.Sprintf(underlay, i+1)).Addr()
		snap.Hosts = append(snap.Hosts, api.Host{Name: h, IP: ip, Slots: []api.HostSlot{{Network: "net1", Loc: loc, CIDR: c}}})
	}
	for t := range tenants {
		iso := []string{api.IsolationTenant, api.IsolationSegment, api.IsolationNone}[t%3]
		name := fmt.Sprintf("t%d", t)
		snap.Tenants = append(snap.Tenants, api.Tenant{Name: name, ID: uint64(t), Isolation: iso})
		snap.Segments = append(snap.Segments, api.Segment{Tenant: name, Name: "s0", ID: 0}, api.Segment{Tenant: name, Name: "s1", ID: 1})
	}
	snap.Policies = workload.Policies(policies, tenants)
	return snap, p, nil
}

// buildRomana attaches the routed path's endpoints (tenant t42, tenant
// isolation: no policy matches its flows, so a connection's first packet
// passes its tenant's policy rules and isolation accepts it), programs the
// routes as the agent does, and computes Romana's ruleset for each host.
// The routed and Romana conditions share these endpoints and routes; only
// the table differs.
func (l *lab) buildRomana(ctx context.Context, tenants, policies int) error {
	snap, p, err := romanaSnapshot(tenants, policies)
	if err != nil {
		return err
	}
	add := func(host string, hostIdx uint64, name string, idx uint64) (endpoint, error) {
		ip, err := p.Address(plan.Loc{Host: hostIdx}, 42, 0, idx)
		if err != nil {
			return endpoint{}, fmt.Errorf("romana address %d on %s: %w", idx, host, err)
		}
		ep, err := l.AddEndpoint(ctx, l.hosts[host], name, ip, "rv-"+name)
		if err != nil {
			return endpoint{}, err
		}
		snap.Addresses = append(snap.Addresses, api.Address{Name: name, IP: ip, Network: "net1", Host: host, Tenant: "t42", Segment: "s0", Interface: "rv-" + name})
		return endpoint{ep.Namespace, ip}, nil
	}
	var f flows
	if f.src, err = add("h1", 1, "ra", 1); err != nil {
		return err
	}
	if f.same, err = add("h1", 1, "rb", 2); err != nil {
		return err
	}
	if f.cross, err = add("h2", 2, "rc", 1); err != nil {
		return err
	}
	l.flows[Routed], l.flows[Romana] = f, f
	withoutPolicies := snap
	withoutPolicies.Policies = nil
	for _, h := range Hosts {
		st, err := hoststate.Compute(snap, h, hoststate.Options{})
		if err != nil {
			return fmt.Errorf("compute host state of %s: %w", h, err)
		}
		if len(st.Problems) > 0 {
			return fmt.Errorf("compute host state of %s: %v", h, st.Problems)
		}
		bare, err := hoststate.Compute(withoutPolicies, h, hoststate.Options{})
		if err != nil {
			return fmt.Errorf("compute host state of %s: %w", h, err)
		}
		l.rules[h] = st.Firewall
		l.ruleCount = st.Firewall.RuleCount()
		l.notes = append(l.notes, fmt.Sprintf("Romana on %s: %d nft rules (%d of them from the policies), %d set and map elements",
			h, st.Firewall.RuleCount(), st.Firewall.RuleCount()-bare.Firewall.RuleCount(), st.Firewall.ElementCount()))
		if err := l.hosts[h].Do(func() error {
			m, err := route.New(nil)
			if err != nil {
				return err
			}
			if _, err := m.SetSysctls(ctx, st.Sysctls); err != nil {
				return err
			}
			if err := m.EnsureGateway(ctx, st.Gateway); err != nil {
				return err
			}
			if _, err := m.SyncRoutes(ctx, st.Routes); err != nil {
				return err
			}
			l.fw[h], err = firewall.New(nil)
			return err
		}); err != nil {
			return fmt.Errorf("program host %s: %w", h, err)
		}
	}
	return nil
}

// setRomana loads Romana's table on both hosts, or removes it (no table,
// so no conntrack either: the other conditions run without it).
func (l *lab) setRomana(ctx context.Context, on bool) error {
	if on == l.romanaOn {
		return nil
	}
	for _, h := range Hosts {
		if err := l.hosts[h].Do(func() error {
			if on {
				_, err := l.fw[h].Apply(ctx, l.rules[h])
				return err
			}
			return l.fw[h].Cleanup(ctx)
		}); err != nil {
			return fmt.Errorf("romana table on %s (on=%v): %w", h, on, err)
		}
	}
	l.romanaOn = on
	return nil
}

// buildVXLAN sets up the reference overlay by hand, as flannel's vxlan
// backend does: a VXLAN device (VNI 42, UDP 4789, MTU 1450, no learning)
// on each host holding 172.23.N.0/32, a route to the other host's /24 via
// its VTEP address, a permanent neighbour and an FDB entry towards its
// underlay address. Endpoints are routed veths with MTU 1450.
func (l *lab) buildVXLAN(ctx context.Context) error {
	mac := func(i int) string { return fmt.Sprintf("02:42:ac:17:%02x:00", i) }
	for i, h := range Hosts {
		n := i + 1
		host := l.hosts[h]
		cmds := [][]string{
			{"ip", "link", "add", "vx42", "address", mac(n), "type", "vxlan", "id", "42", "dstport", "4789",
				"local", fmt.Sprintf("192.168.77.%d", n), "dev", sim.HostIface, "nolearning"},
			{"ip", "link", "set", "vx42", "mtu", "1450", "up"},
			{"ip", "addr", "add", fmt.Sprintf("172.23.%d.0/32", n), "dev", "vx42"},
		}
		for j := range Hosts {
			if m := j + 1; m != n {
				cmds = append(cmds,
					[]string{"ip", "neigh", "add", fmt.Sprintf("172.23.%d.0", m), "lladdr", mac(m), "dev", "vx42", "nud", "permanent"},
					[]string{"bridge", "fdb", "append", mac(m), "dev", "vx42", "dst", fmt.Sprintf("192.168.77.%d", m)},
					[]string{"ip", "route", "add", fmt.Sprintf("172.23.%d.0/24", m), "via", fmt.Sprintf("172.23.%d.0", m), "dev", "vx42", "onlink"})
			}
		}
		for _, c := range cmds {
			if _, err := host.Exec(ctx, c...); err != nil {
				return fmt.Errorf("vxlan on %s: %w", h, err)
			}
		}
	}
	add := func(host, name, ip string) (endpoint, error) {
		a := netip.MustParseAddr(ip)
		ep, err := l.AddEndpoint(ctx, l.hosts[host], name, a, "rv-"+name)
		if err != nil {
			return endpoint{}, err
		}
		for _, c := range []struct {
			ns   *sim.Namespace
			args []string
		}{
			{ep.Namespace, []string{"ip", "link", "set", sim.EndpointIface, "mtu", "1450"}},
			{l.hosts[host].Namespace, []string{"ip", "link", "set", "rv-" + name, "mtu", "1450"}},
			{l.hosts[host].Namespace, []string{"ip", "route", "add", ip + "/32", "dev", "rv-" + name}},
		} {
			if _, err := c.ns.Exec(ctx, c.args...); err != nil {
				return endpoint{}, fmt.Errorf("vxlan endpoint %s: %w", name, err)
			}
		}
		return endpoint{ep.Namespace, a}, nil
	}
	var f flows
	var err error
	if f.src, err = add("h1", "xa", "172.23.1.10"); err != nil {
		return err
	}
	if f.same, err = add("h1", "xb", "172.23.1.11"); err != nil {
		return err
	}
	if f.cross, err = add("h2", "xc", "172.23.2.10"); err != nil {
		return err
	}
	l.flows[VXLAN] = f
	return nil
}

// cniAdd attaches a new namespace <host>-<name> through a CNI plugin run
// in the host's namespace, as a container runtime would, and returns its
// first IPv4 address.
func (l *lab) cniAdd(ctx context.Context, host, name, conf string) (endpoint, error) {
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return endpoint{}, fmt.Errorf("cni config for %s: %w", name, err)
	}
	ns, err := l.AddNamespace(ctx, host+"-"+name)
	if err != nil {
		return endpoint{}, err
	}
	cacheDir := filepath.Join(l.dir, "cni-cache")
	cfg := libcni.NewCNIConfigWithCacheDir([]string{cniBinDir}, cacheDir, &cnirun.NSExec{HostNS: l.hosts[host].Path})
	res, err := cfg.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: "rbench-" + host + "-" + name, NetNS: ns.Path, IfName: "eth0"})
	if err != nil {
		return endpoint{}, fmt.Errorf("cni ADD %s on %s (%s): %w", name, host, list.Plugins[0].Network.Type, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return endpoint{}, fmt.Errorf("cni result of %s: %w", name, err)
	}
	for _, ip := range r.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP.To4()); ok && ip.Address.IP.To4() != nil {
			return endpoint{ns, a}, nil
		}
	}
	return endpoint{}, fmt.Errorf("cni ADD %s on %s: no IPv4 address in %v", name, host, r.IPs)
}

// buildPTP attaches endpoints with the reference ptp plugin and
// host-local (172.22.N.0/24 on host N, no policy, no masquerade) and adds
// the routes between hosts by hand, which a routing daemon would.
func (l *lab) buildPTP(ctx context.Context) error {
	conf := func(n int) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"rbench-ptp","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,`+
			`"ipam":{"type":"host-local","ranges":[[{"subnet":"172.22.%d.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}}]}`,
			n, filepath.Join(l.dir, fmt.Sprintf("ptp-ipam-h%d", n)))
	}
	var f flows
	var err error
	if f.src, err = l.cniAdd(ctx, "h1", "pa", conf(1)); err != nil {
		return err
	}
	if f.same, err = l.cniAdd(ctx, "h1", "pb", conf(1)); err != nil {
		return err
	}
	if f.cross, err = l.cniAdd(ctx, "h2", "pc", conf(2)); err != nil {
		return err
	}
	for i, h := range Hosts {
		for j := range Hosts {
			if j != i {
				if _, err := l.hosts[h].Exec(ctx, "ip", "route", "add", fmt.Sprintf("172.22.%d.0/24", j+1), "via", fmt.Sprintf("192.168.77.%d", j+1), "dev", sim.HostIface); err != nil {
					return fmt.Errorf("ptp route on %s: %w", h, err)
				}
			}
		}
	}
	l.flows[PTP] = f
	return nil
}

// flannelNets: the network each flannel backend leases /24s from, and
// the bridge its endpoints hang on.
var flannelNets = map[string]struct{ network, bridge, backend string }{
	FlannelVXLAN: {"172.20.0.0/16", "cnifv0", "vxlan"},
	FlannelHGW:   {"172.21.0.0/16", "cnifh0", "host-gw"},
}

// startEtcd runs etcd for flannel in the controller namespace, listening
// on the lab's underlay only, and waits until it answers.
func (l *lab) startEtcd(ctx context.Context) error {
	ctl, err := l.AddController(ctx, "ctl", netip.MustParsePrefix(etcdIP+"/24"))
	if err != nil {
		return err
	}
	l.ctl = ctl
	data := filepath.Join(l.dir, "etcd")
	peer := "http://127.0.0.1:2380"
	if _, err := l.start(ctx, ctl.Namespace, "etcd", "etcd", "--name", "rbench", "--data-dir", data,
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "rbench="+peer); err != nil {
		return err
	}
	return poll(ctx, 20*time.Second, func() error {
		_, err := l.etcdctl(ctx, ctl.Namespace, "endpoint", "health")
		return err
	}, "etcd to answer")
}

func (l *lab) etcdctl(ctx context.Context, ns *sim.Namespace, args ...string) (string, error) {
	cmd := ns.Command(ctx, append([]string{"etcdctl", "--endpoints", etcdURL}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("etcdctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// buildFlannel writes the backend's network config into etcd, runs the
// real flanneld on both hosts (--iface eth0 of the host's namespace, no
// masquerade, no iptables forward rules: flannel writes no firewall rule
// anywhere, and everything it does is inside the host namespaces) and
// attaches endpoints as flannel's CNI plugin does, through the reference
// bridge plugin with the subnet and MTU flanneld wrote.
func (l *lab) buildFlannel(ctx context.Context, cond, flanneld string) error {
	fn := flannelNets[cond]
	prefix := "/romana-bench/" + fn.backend
	netconf := fmt.Sprintf(`{"Network":%q,"SubnetLen":24,"Backend":{"Type":%q}}`, fn.network, fn.backend)
	if _, err := l.etcdctl(ctx, l.ctl.Namespace, "put", prefix+"/config", netconf); err != nil {
		return err
	}
	type env struct {
		subnet netip.Prefix
		mtu    int
	}
	envs := map[string]env{}
	for _, h := range Hosts {
		sf := filepath.Join(l.dir, fmt.Sprintf("flannel-%s-%s.env", fn.backend, h))
		if _, err := l.start(ctx, l.hosts[h].Namespace, "flanneld-"+fn.backend+"-"+h, flanneld,
			"--etcd-endpoints="+etcdURL, "--etcd-prefix="+prefix, "--iface="+sim.HostIface,
			"--ip-masq=false", "--iptables-forward-rules=false", "--subnet-file="+sf); err != nil {
			return err
		}
		var e env
		if err := poll(ctx, 30*time.Second, func() error {
			b, err := os.ReadFile(sf)
			if err != nil {
				return err
			}
			vals := map[string]string{}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					vals[k] = v
				}
			}
			if e.subnet, err = netip.ParsePrefix(vals["FLANNEL_SUBNET"]); err != nil {
				return fmt.Errorf("FLANNEL_SUBNET in %s: %w", sf, err)
			}
			_, err = fmt.Sscan(vals["FLANNEL_MTU"], &e.mtu)
			return err
		}, "flanneld on "+h+" to write "+sf); err != nil {
			return err
		}
		envs[h] = e
	}
	conf := func(h string) string {
		e := envs[h]
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"rbench-%s","plugins":[{"type":"bridge","bridge":%q,"isGateway":true,"isDefaultGateway":true,`+
			`"ipMasq":false,"hairpinMode":true,"mtu":%d,"ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}}]}`,
			fn.backend, fn.bridge, e.mtu, e.subnet.Masked().String(), filepath.Join(l.dir, "flannel-ipam-"+fn.backend+"-"+h))
	}
	short := map[string]string{FlannelVXLAN: "v", FlannelHGW: "g"}[cond]
	var f flows
	var err error
	if f.src, err = l.cniAdd(ctx, "h1", "f"+short+"a", conf("h1")); err != nil {
		return err
	}
	if f.same, err = l.cniAdd(ctx, "h1", "f"+short+"b", conf("h1")); err != nil {
		return err
	}
	if f.cross, err = l.cniAdd(ctx, "h2", "f"+short+"c", conf("h2")); err != nil {
		return err
	}
	l.flows[cond] = f
	l.notes = append(l.notes, fmt.Sprintf("flannel %s: subnets %s (h1) and %s (h2), MTU %d", fn.backend, envs["h1"].subnet, envs["h2"].subnet, envs["h1"].mtu))
	return nil
}

// tables lists the nftables tables in a host namespace (flannel must
// have written none).
func (l *lab) tables(ctx context.Context, h string) string {
	out, err := l.hosts[h].Exec(ctx, "nft", "list", "tables")
	if err != nil {
		return err.Error()
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(out, "\n", "; ")), " ")
}
