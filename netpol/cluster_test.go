package netpol

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// cluster is a test's Kubernetes state plus where Romana placed each pod
// address: network net1 10.0.0.0/8 (host 8 | tenant 4 | segment 4 |
// endpoint 8 bits), pods spread over hosts h1 and h2, address
// 10.<host>.<tenant<<4|segment>.<n>.
type cluster struct {
	cfg     Config
	nss     []corev1.Namespace
	pods    []corev1.Pod
	nodes   []corev1.Node
	nps     []networkingv1.NetworkPolicy
	cnps    []v1alpha2.ClusterNetworkPolicy
	tenants map[string]uint64            // tenant → id
	segs    map[string]map[string]uint64 // tenant → segment → id
	addrs   []api.Address
	next    int
}

func newCluster(cfg Config) *cluster {
	return &cluster{cfg: cfg, tenants: map[string]uint64{}, segs: map[string]map[string]uint64{}}
}

func (c *cluster) tenantOf(ns string) string {
	for _, n := range c.nss {
		if n.Name == ns {
			if c.cfg.TenantLabel != "" && n.Labels[c.cfg.TenantLabel] != "" {
				return n.Labels[c.cfg.TenantLabel]
			}
			return n.Name
		}
	}
	panic("no namespace " + ns)
}

func (c *cluster) addNamespace(name string, lbls map[string]string) {
	l := map[string]string{"kubernetes.io/metadata.name": name}
	for k, v := range lbls {
		l[k] = v
	}
	c.nss = append(c.nss, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}})
	t := c.tenantOf(name)
	if _, ok := c.tenants[t]; !ok {
		c.tenants[t] = uint64(len(c.tenants) + 1)
		c.segs[t] = map[string]uint64{DefaultSegment: 0}
	}
}

func (c *cluster) labelNamespace(name, k, v string) {
	for i := range c.nss {
		if c.nss[i].Name == name {
			c.nss[i].Labels[k] = v
		}
	}
}

// addPod adds a running pod with an address placed by its namespace's
// tenant and its segment label, and container ports.
func (c *cluster) addPod(ns, name string, lbls map[string]string, ports ...corev1.ContainerPort) netip.Addr {
	t := c.tenantOf(ns)
	seg := DefaultSegment
	if s, ok := lbls[DefaultSegmentLabel]; ok {
		seg = s
	}
	sid, ok := c.segs[t][seg]
	if !ok {
		sid = uint64(len(c.segs[t]))
		c.segs[t][seg] = sid
	}
	c.next++
	host := 1 + c.next%2
	ip := netip.AddrFrom4([4]byte{10, byte(host), byte(c.tenants[t]<<4 | sid), byte(c.next)})
	l := map[string]string{}
	for k, v := range lbls {
		l[k] = v
	}
	c.pods = append(c.pods, corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}},
	})
	c.addrs = append(c.addrs, api.Address{Name: ns + "/" + name, IP: ip, Network: "net1", Host: fmt.Sprintf("h%d", host), Tenant: t, Segment: seg})
	return ip
}

func (c *cluster) pod(key string) *corev1.Pod {
	for i := range c.pods {
		if c.pods[i].Namespace+"/"+c.pods[i].Name == key {
			return &c.pods[i]
		}
	}
	panic("no pod " + key)
}

func (c *cluster) ip(key string) netip.Addr {
	return netip.MustParseAddr(c.pod(key).Status.PodIP)
}

func (c *cluster) deletePod(key string) {
	c.pods = slices.DeleteFunc(c.pods, func(p corev1.Pod) bool { return p.Namespace+"/"+p.Name == key })
}

func (c *cluster) podKeys() []string {
	var out []string
	for _, p := range c.pods {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

func (c *cluster) input() Input {
	return Input{Config: c.cfg, Namespaces: c.nss, Pods: c.pods, Nodes: c.nodes, Addresses: c.addrs,
		NetworkPolicies: c.nps, ClusterNetworkPolicies: c.cnps}
}

// place tells where an address is (the model a verdict needs).
func (c *cluster) place(a netip.Addr) (api.Address, bool) {
	for _, x := range c.addrs {
		if x.IP == a {
			return x, true
		}
	}
	return api.Address{}, false
}

// snapshot is the Romana state of the cluster with out's policies and
// sets: the input of policy.Trace. Every tenant is open (isolation none,
// Kubernetes mode).
func (c *cluster) snapshot(out Output) api.Snapshot {
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	snap := api.Snapshot{Networks: []api.Network{n}, Policies: out.Policies, AddressSets: out.Sets}
	for t, id := range c.tenants {
		snap.Tenants = append(snap.Tenants, api.Tenant{Name: t, ID: id, Isolation: api.IsolationNone})
		for s, sid := range c.segs[t] {
			snap.Segments = append(snap.Segments, api.Segment{Tenant: t, Name: s, ID: sid})
		}
	}
	for i := 1; i <= 2; i++ {
		snap.Hosts = append(snap.Hosts, api.Host{Name: fmt.Sprintf("h%d", i), IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}),
			Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: uint64(i)}, CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)}}})
	}
	snap.Addresses = c.addrs
	return snap
}

// xyz is the upstream NetworkPolicy e2e topology: namespaces x, y, z
// (label ns=<name>), pods a, b, c in each (label pod=<name>), serving TCP,
// UDP and SCTP on ports 80 and 81 with the named container ports
// serve-80-tcp, serve-81-udp, ...
func xyz() *cluster {
	c := newCluster(Config{})
	for _, n := range []string{"x", "y", "z"} {
		c.addNamespace(n, map[string]string{"ns": n})
	}
	for _, n := range []string{"x", "y", "z"} {
		for _, p := range []string{"a", "b", "c"} {
			c.addPod(n, p, map[string]string{"pod": p}, servePorts(80, 81)...)
		}
	}
	return c
}

func servePorts(ports ...int32) []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, p := range ports {
		for _, pr := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
			out = append(out, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", p, strings.ToLower(string(pr))), ContainerPort: p, Protocol: pr})
		}
	}
	return out
}

// reach is a truth table: whether each pod reaches each other pod.
type reach struct {
	pods []string
	m    map[[2]string]bool
}

func newReach(pods []string, def bool) *reach {
	r := &reach{pods: pods, m: map[[2]string]bool{}}
	r.set("*/*", "*/*", def)
	return r
}

func matchPod(pat, pod string) bool {
	pn, pp, _ := strings.Cut(pat, "/")
	n, p, _ := strings.Cut(pod, "/")
	return (pn == "*" || pn == n) && (pp == "*" || pp == p)
}

// set sets every cell from a pod matching from to a pod matching to
// ("x/a", "x/*", "*/b", "*/*").
func (r *reach) set(from, to string, v bool) *reach {
	for _, f := range r.pods {
		for _, t := range r.pods {
			if matchPod(from, f) && matchPod(to, t) {
				r.m[[2]string{f, t}] = v
			}
		}
	}
	return r
}

func (r *reach) String() string {
	var b strings.Builder
	b.WriteString("from\\to")
	for _, t := range r.pods {
		fmt.Fprintf(&b, " %4s", t)
	}
	b.WriteString("\n")
	for _, f := range r.pods {
		fmt.Fprintf(&b, "%7s", f)
		for _, t := range r.pods {
			c := "."
			switch {
			case f == t:
				c = "-" // loopback: not checked, as upstream
			case r.m[[2]string{f, t}]:
				c = "X"
			}
			fmt.Fprintf(&b, " %4s", c)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// probe is one protocol and port a truth table is checked on.
type probe struct {
	proto string
	port  uint16
}

var tcp80, tcp81 = probe{api.ProtoTCP, 80}, probe{api.ProtoTCP, 81}

// check compiles the cluster and compares the verdict of every pod pair
// (loopback excluded) on p with want. It returns the output.
func (c *cluster) check(t *testing.T, name string, p probe, want *reach) Output {
	t.Helper()
	out := Compile(c.input())
	got := newReach(want.pods, false)
	// policy.Trace decides; the local reading of docs/policy.md must agree.
	withTrace := true
	bad, traced := 0, 0
	var why []string
	for _, f := range want.pods {
		for _, to := range want.pods {
			if f == to {
				continue
			}
			ok, by := verdict(t, c, out, c.ip(f), c.ip(to), p)
			got.m[[2]string{f, to}] = ok
			if withTrace {
				if lok, lby := localVerdict(c, out, c.ip(f), c.ip(to), p); lok != ok {
					t.Errorf("%s %s -> %s: policy.Trace says %v by %s, the local evaluator %v by %s", name, f, to, ok, by, lok, lby)
				}
				traced++
			}
			if ok != want.m[[2]string{f, to}] {
				bad++
				why = append(why, fmt.Sprintf("%s -> %s: %v by %s", f, to, ok, by))
			}
		}
	}
	if withTrace {
		t.Logf("%s %s/%d: %d cells also decided by policy.Trace", name, p.proto, p.port, traced)
	}
	if bad > 0 {
		t.Errorf("%s %s/%d: %d cells differ\nwant:\n%sgot:\n%s%s\noutput:\n%s", name, p.proto, p.port, bad, want, got, strings.Join(why, "\n"), out)
	}
	return out
}
