package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/romana/romana/api"
	"github.com/romana/romana/cnirun"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/kube"
	"github.com/romana/romana/kubetest"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// kubeLab is a real kube-apiserver, romanad, romana-kube (in the test
// process, identity kube) and one real agent per host namespace; pods are
// network namespaces attached by romana-cni with the CNI_ARGS a kubelet
// passes, and the test writes each pod's IP into its status as the
// kubelet would.
type kubeLab struct {
	*cluster
	k    *kubetest.Cluster
	rts  map[string]*cnirun.Runtime // host → CNI runtime
	pods map[string]*kubePod        // "ns/name"
	// olderAgents: the agents are $ROMANA_KUBE_E2E_AGENT, a romana-agent
	// binary older than this romanad (the upgrade path).
	olderAgents bool
}

type kubePod struct {
	ns, name, host string
	ep             *sim.Endpoint
	id             string
}

// podPorts are the TCP ports every pod serves (echo), as in Kubernetes'
// netpol e2e; podUDPPort is served by a UDP echo.
var podPorts = []int{80, 81}

const podUDPPort = 82

// kubeLabOptions change newKubeLab's defaults (the scale benchmark's
// larger plan, quieter logs, the binaries' own sync intervals).
type kubeLabOptions struct {
	// fields of the pods network (default host 8, tenant 4, segment 4 bits).
	fields []plan.Field
	// resync is the agents' --resync (default 2s); agentArgs are added to
	// their command lines.
	resync    time.Duration
	agentArgs []string
	// kubeMinInterval and kubeResync are romana-kube's (default 20ms and
	// none); kubeLog its log level (default info).
	kubeMinInterval, kubeResync time.Duration
	kubeLog                     slog.Level
	// agentExe runs another romana-agent binary than this test binary
	// (which acts as one).
	agentExe string
	// kubeOnSync is romana-kube's Controller.OnSync.
	kubeOnSync func(kube.Desired, error)
}

// olderAgentEnv names an older romana-agent binary for the agents of
// newKubeLab, to check the upgrade path (agents older than romanad and
// romana-kube): TestKubernetesEndToEnd then expects what such agents do.
const olderAgentEnv = "ROMANA_KUBE_E2E_AGENT"

func newKubeLab(t *testing.T, hosts ...string) *kubeLab {
	return newKubeLabWith(t, kubeLabOptions{}, hosts...)
}

func newKubeLabWith(t *testing.T, o kubeLabOptions, hosts ...string) *kubeLab {
	if o.fields == nil {
		o.fields = []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}
	}
	if o.resync == 0 {
		o.resync = 2 * time.Second
	}
	if o.kubeMinInterval == 0 {
		o.kubeMinInterval = 20 * time.Millisecond
	}
	simtest.Require(t, "nft", "ping")
	k := kubetest.Start(t)
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	older := os.Getenv(olderAgentEnv)
	if o.agentExe == "" && older != "" {
		o.agentExe = older
		t.Logf("agents: %s (%s)", older, olderAgentEnv)
	}
	if o.agentExe != "" {
		exe = o.agentExe
	}
	lab := simtest.New(t)
	srv, ctl := startRomanad(t, lab)
	c := &cluster{t: t, ctx: ctx, srv: srv, ctl: ctl, lab: lab, exe: exe, logDir: t.TempDir(), credDir: t.TempDir(),
		hosts: map[string]*sim.Host{}, cidrs: map[string]netip.Prefix{}, eps: map[string]*sim.Endpoint{},
		agents: map[string]*agentProc{}, resync: o.resync}
	kl := &kubeLab{cluster: c, k: k, rts: map[string]*cnirun.Runtime{}, pods: map[string]*kubePod{}, olderAgents: o.agentExe == older && older != ""}
	t.Cleanup(func() {
		for name := range c.agents {
			c.stopAgent(name)
		}
		if t.Failed() {
			for _, h := range hosts {
				b, _ := os.ReadFile(filepath.Join(c.logDir, h+".log"))
				t.Logf("agent %s log:\n%s", h, b)
			}
		}
	})
	if _, err := srv.Client.AddNetwork(ctx, api.Network{Name: "pods", CIDR: "10.0.0.0/8",
		Fields: o.fields}); err != nil {
		t.Fatal(err)
	}
	// Nodes: the machines exist; romanad learns of them only from the
	// Node objects.
	for i, name := range hosts {
		ip := netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)})
		h, err := lab.AddHost(ctx, name, netip.PrefixFrom(ip, 24))
		if err != nil {
			t.Fatal(err)
		}
		c.hosts[name] = h
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		n, err = k.Clientset.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name}}
		if _, err := k.Clientset.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	runRomanaKube(t, k, srv, o)
	expect.Eventually(t, "hosts registered from the nodes", wait, func() error {
		hs, err := srv.Client.ListHosts(ctx)
		if err != nil {
			return err
		}
		if len(hs) != len(hosts) {
			return fmt.Errorf("hosts %v", hs)
		}
		return nil
	})
	dir := pluginDir(t)
	for _, h := range hosts {
		c.startAgent(h, o.agentArgs...)
		conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"romana-k8s","type":"romana-cni","agentSocket":%q,"kubernetes":true}`, c.cniSock(h))
		rt, err := cnirun.New(c.hosts[h].Path, []string{dir}, t.TempDir(), conf)
		if err != nil {
			t.Fatal(err)
		}
		kl.rts[h] = rt
	}
	c.waitHealthy(hosts...)
	return kl
}

// runRomanaKube runs romana-kube in the test process (identity kube) until
// the test ends: pools from 10.0.0.0/8, the default configuration.
func runRomanaKube(t *testing.T, k *kubetest.Cluster, srv *servertest.Instance, o kubeLabOptions) {
	ctx := context.Background()
	cfg := kube.Config{}
	if o.kubeMinInterval == 0 {
		o.kubeMinInterval = 20 * time.Millisecond
	}
	kctl := &kube.Controller{Config: cfg, Kube: k.Clientset, Policy: k.Policy,
		Compile:     kube.Policies(cfg, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}),
		Reconciler:  &kube.Reconciler{R: srv.ClientAs(t, pki.Kube), Prefix: kube.DefaultPrefix, NodeGrace: time.Minute},
		Addresses:   srv.ClientAs(t, pki.Kube),
		MinInterval: o.kubeMinInterval, Resync: o.kubeResync, OnSync: o.kubeOnSync,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: o.kubeLog})),
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- kctl.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("romana-kube: %v", err)
		}
	})
}

// testWriter sends the controller's log to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (kl *kubeLab) namespace(name string, labels map[string]string) {
	kl.t.Helper()
	if _, err := kl.k.Clientset.CoreV1().Namespaces().Create(kl.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		kl.t.Fatal(err)
	}
}

// startPod does what the scheduler, kubelet and container runtime do for a
// pod: creates it bound to host, attaches its sandbox with romana-cni and
// the kubelet's CNI_ARGS, and writes its IP into its status.
func (kl *kubeLab) startPod(ns, name, host string, labels map[string]string) *kubePod {
	kl.t.Helper()
	return kl.attachPod(ns, name, host, labels, true)
}

// attachPod is startPod; with report false it leaves the pod's status
// without its IP, as it is from the CNI ADD until the kubelet reports the
// pod started (seconds on a real node).
func (kl *kubeLab) attachPod(ns, name, host string, labels map[string]string, report bool) *kubePod {
	kl.t.Helper()
	ctx := kl.ctx
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: host, Containers: []corev1.Container{{Name: "c", Image: "agnhost",
			Ports: []corev1.ContainerPort{{Name: "serve-80", ContainerPort: 80}, {Name: "serve-81", ContainerPort: 81}}}}}}
	p, err := kl.k.Clientset.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		kl.t.Fatal(err)
	}
	id := fmt.Sprintf("k%s%s", ns, name)
	netns, err := kl.lab.AddNamespace(ctx, id)
	if err != nil {
		kl.t.Fatal(err)
	}
	args := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", name},
		{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", string(p.UID)}}
	r, err := kl.rts[host].Add(ctx, id, netns.Path, "eth0", args)
	if err != nil {
		kl.t.Fatalf("CNI ADD %s/%s: %v", ns, name, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil || len(res.IPs) != 1 {
		kl.t.Fatalf("CNI ADD %s/%s result %v: %v", ns, name, r, err)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if report {
		p.Status.PodIP = ip.String()
		p.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
		p.Status.Phase = corev1.PodRunning
		if _, err := kl.k.Clientset.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			kl.t.Fatal(err)
		}
	}
	ep := &sim.Endpoint{Namespace: netns, Name: ns + "/" + name, IP: ip}
	for _, port := range podPorts {
		kl.serveEcho(ep, port)
	}
	serveUDPEcho(kl.t, ep, podUDPPort)
	kp := &kubePod{ns: ns, name: name, host: host, ep: ep, id: id}
	kl.pods[ns+"/"+name] = kp
	kl.eps[ns+"/"+name] = ep
	return kp
}

// serveUDPEcho answers every datagram to the endpoint's port with itself.
func serveUDPEcho(t testing.TB, ep *sim.Endpoint, port int) {
	var pc net.PacketConn
	if err := ep.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(ep.IP, uint16(port)).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// reach probes from one pod to another: TCP (an echo exchange) or UDP (a
// datagram and its echo).
func (kl *kubeLab) reach(proto string, from, to string, port int) error {
	src, dst := kl.pods[from], kl.pods[to]
	addr := netip.AddrPortFrom(dst.ep.IP, uint16(port)).String()
	return src.ep.Do(func() error {
		conn, err := net.DialTimeout(proto, addr, time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(time.Second))
		msg := fmt.Sprintf("%s->%s:%d\n", from, to, port)
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		if line != msg {
			return fmt.Errorf("echo %q", line)
		}
		return nil
	})
}

// cell is one probe of a truth table.
type cell struct {
	proto    string
	from, to string
	port     int
}

// matrix probes every pair of pods (not a pod to itself) on each port and
// returns the reachable ones, one "proto from -> to:port" per line.
func (kl *kubeLab) matrix(cells []cell) string {
	var mu sync.Mutex
	var ok []string
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, c := range cells {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if kl.reach(c.proto, c.from, c.to, c.port) == nil {
				mu.Lock()
				ok = append(ok, fmt.Sprintf("%s %s -> %s:%d", c.proto, c.from, c.to, c.port))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(ok)
	return strings.Join(ok, "\n")
}

func (kl *kubeLab) cells(protoPorts ...string) []cell {
	var out []cell
	names := slices.Sorted(maps.Keys(kl.pods))
	for _, pp := range protoPorts {
		proto, port, _ := strings.Cut(pp, "/")
		var n int
		fmt.Sscan(port, &n)
		for _, a := range names {
			for _, b := range names {
				if a != b {
					out = append(out, cell{proto, a, b, n})
				}
			}
		}
	}
	return out
}

// want renders the expected reachable cells: all of cells for which
// allowed says so.
func want(cells []cell, allowed func(c cell) bool) string {
	var ok []string
	for _, c := range cells {
		if allowed(c) {
			ok = append(ok, fmt.Sprintf("%s %s -> %s:%d", c.proto, c.from, c.to, c.port))
		}
	}
	slices.Sort(ok)
	return strings.Join(ok, "\n")
}

// expectMatrix probes the matrix until it is the expected one (the
// controller, romanad and the agents converge) and fails the test with the
// last matrix probed when it is not within wait.
func (kl *kubeLab) expectMatrix(what string, cells []cell, allowed func(c cell) bool) {
	kl.t.Helper()
	w := want(cells, allowed)
	var last string
	err := expect.Poll(wait, func() error {
		last = kl.matrix(cells)
		if last != w {
			return errors.New("differs")
		}
		return nil
	})
	if err != nil {
		kl.t.Fatalf("%s: reachable cells\n%s\nwant\n%s", what, last, w)
	}
}

func ns(c string) string  { s, _, _ := strings.Cut(c, "/"); return s }
func pod(c string) string { _, s, _ := strings.Cut(c, "/"); return s }

// TestKubernetesEndToEnd: a real kube-apiserver, romana-kube, romanad and
// agents on two simulated nodes. Nodes become hosts, namespaces tenants,
// pods get addresses of their namespace's tenant through romana-cni; then
// NetworkPolicies and ClusterNetworkPolicies, their updates and deletes,
// and label changes of pods and namespaces, are followed and enforced on
// real TCP and UDP traffic.
func TestKubernetesEndToEnd(t *testing.T) {
	// synced has romana-kube's desired tenants of its last successful
	// sync.
	var (
		mu     sync.Mutex
		synced []string
	)
	kl := newKubeLabWith(t, kubeLabOptions{kubeOnSync: func(d kube.Desired, err error) {
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		synced = synced[:0]
		for _, x := range d.Tenants {
			synced = append(synced, x.Name)
		}
	}}, "h1", "h2")
	ctx := kl.ctx
	cs := kl.k.Clientset
	kl.namespace("x", map[string]string{"ns": "x"})
	kl.namespace("y", map[string]string{"ns": "y"})
	kl.startPod("x", "a", "h1", map[string]string{"pod": "a"})
	kl.startPod("x", "b", "h2", map[string]string{"pod": "b"})
	kl.startPod("y", "a", "h2", map[string]string{"pod": "a"})
	kl.startPod("y", "b", "h1", map[string]string{"pod": "b", kube.DefaultSegmentLabel: "web"})

	// Addresses carry their namespace and segment.
	for key, p := range kl.pods {
		d, err := kl.srv.Client.Decode(ctx, p.ep.IP)
		if err != nil {
			t.Fatal(err)
		}
		seg := "default"
		if key == "y/b" {
			seg = "web"
		}
		if d.Tenant != p.ns || d.Segment != seg || d.Host != p.host {
			t.Errorf("pod %s: address %s decodes to %s/%s on %s, want %s/%s on %s", key, p.ep.IP, d.Tenant, d.Segment, d.Host, p.ns, seg, p.host)
		}
	}
	cells := kl.cells("tcp/80", "tcp/81", "udp/82")
	all := func(cell) bool { return true }
	kl.expectMatrix("no policy: every pod reaches every pod", cells, all)

	// 1. Deny all ingress in x.
	denyAll := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny-all"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := cs.NetworkingV1().NetworkPolicies("x").Create(ctx, denyAll, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kl.expectMatrix("deny-all ingress in x", cells, func(c cell) bool { return ns(c.to) != "x" })

	// 2. Allow x/a from pods labelled role=client in any namespace, TCP 80
	// (a pod selector: an address set), and UDP 82 from namespace y (a
	// namespace: a masked match).
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p80, p82 := intstr.FromInt32(80), intstr.FromInt32(82)
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "allow-a"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p80}}},
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &p82}}},
			}}}
	if _, err := cs.NetworkingV1().NetworkPolicies("x").Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clients := map[string]bool{}
	policy2 := func(c cell) bool {
		if ns(c.to) != "x" {
			return true
		}
		if c.to != "x/a" {
			return false
		}
		return (c.proto == "tcp" && c.port == 80 && clients[c.from]) || (c.proto == "udp" && c.port == 82 && ns(c.from) == "y")
	}
	kl.expectMatrix("x/a open to role=client on tcp/80 (none yet) and to y on udp/82", cells, policy2)

	// 3. A running pod's label change: y/b becomes a client, then x/b too.
	label := func(key string, labels map[string]string) {
		t.Helper()
		p, err := cs.CoreV1().Pods(ns(key)).Get(ctx, pod(key), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Labels = labels
		if _, err := cs.CoreV1().Pods(ns(key)).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	label("y/b", map[string]string{"pod": "b", kube.DefaultSegmentLabel: "web", "role": "client"})
	label("x/b", map[string]string{"pod": "b", "role": "client"})
	clients["y/b"], clients["x/b"] = true, true
	kl.expectMatrix("y/b and x/b labelled role=client", cells, policy2)

	// The set of role=client pods changed by elements only: the set
	// holds exactly the two clients.
	sets, err := kl.srv.Client.ListAddressSets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, s := range sets {
		if slices.Equal(s.Addresses, sortedAddrs(kl.pods["x/b"].ep.IP, kl.pods["y/b"].ep.IP)) {
			found = true
		}
	}
	if !found {
		t.Errorf("no address set holds exactly x/b and y/b: %+v", sets)
	}

	// 3b. A pod the kubelet has not reported yet (no IP in its status):
	// romana-kube takes its address from romanad's allocation, so the
	// policy selects it from its CNI ADD on. y/c, a client, reaches x/a on
	// tcp/80 and not on tcp/81; the clients' set holds it.
	yc := kl.attachPod("y", "c", "h2", map[string]string{"role": "client"}, false)
	expect.Eventually(t, "y/c (status without IP) in the clients' set and through to x/a tcp/80", wait, func() error {
		sets, err := kl.srv.Client.ListAddressSets(ctx)
		if err != nil {
			return err
		}
		want := sortedAddrs(kl.pods["x/b"].ep.IP, kl.pods["y/b"].ep.IP, yc.ep.IP)
		if !slices.ContainsFunc(sets, func(s api.AddressSet) bool { return slices.Equal(s.Addresses, want) }) {
			return fmt.Errorf("no set holds exactly %v: %+v", want, sets)
		}
		return kl.reach("tcp", "y/c", "x/a", 80)
	})
	if err := kl.reach("tcp", "y/c", "x/a", 81); err == nil {
		t.Error("y/c reaches x/a on tcp/81, which allow-a does not open")
	}
	if p, err := cs.CoreV1().Pods("y").Get(ctx, "c", metav1.GetOptions{}); err != nil || p.Status.PodIP != "" {
		t.Fatalf("y/c's status has IP %q (%v); the test needs it empty", p.Status.PodIP, err)
	}

	// 3c. A new pod guarded by a label-selected policy is enforced from
	// its first packet: its sets list it by name before it exists, the
	// agents add its address to them from the allocation's own watch
	// event, and the CNI ADD makes it routable only once its host's
	// firewall has done so. Probed once, right after the ADD returned (no
	// waiting): y/a, not a client, is refused; y/b, a client, gets in.
	guard := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "y", Name: "guard-g"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "g"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p80}}}}}}
	if _, err := cs.NetworkingV1().NetworkPolicies("y").Create(ctx, guard, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "guard-g at romanad", wait, func() error {
		pols, err := kl.srv.Client.ListPolicies(ctx)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(pols, func(p api.Policy) bool { return strings.Contains(p.Name, "guard-g") }) {
			return fmt.Errorf("no policy for guard-g in %d", len(pols))
		}
		return nil
	})
	for _, host := range []string{"h1", "h2"} { // y/a, the denied peer, is on h2
		yg := kl.attachPod("y", "g"+host[1:], host, map[string]string{"pod": "g"}, false)
		key := "y/" + yg.name
		if kl.olderAgents {
			// Agents older than address sets' pods and the CNI wait:
			// enforced once romana-kube wrote the address into the set.
			expect.Eventually(t, "y/a refused by "+key+" (older agents)", wait, func() error {
				if err := kl.reach("tcp", "y/a", key, 80); err == nil {
					return errors.New("y/a reaches it")
				}
				return nil
			})
		} else if err := kl.reach("tcp", "y/a", key, 80); err == nil {
			t.Errorf("%s on %s: y/a (not a client) reached it right after its CNI ADD", key, host)
		}
		expect.Eventually(t, "y/b (a client) reaches "+key, wait, func() error { return kl.reach("tcp", "y/b", key, 80) })
	}
	if err := cs.NetworkingV1().NetworkPolicies("y").Delete(ctx, "guard-g", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// 4. A namespace's label change: y loses ns=y, so udp/82 from y closes.
	nsy, err := cs.CoreV1().Namespaces().Get(ctx, "y", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsy.Labels = map[string]string{"ns": "other"}
	if _, err := cs.CoreV1().Namespaces().Update(ctx, nsy, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	kl.expectMatrix("namespace y relabelled", cells, func(c cell) bool {
		return policy2(c) && !(c.proto == "udp" && c.to == "x/a")
	})

	// 5. A policy update: allow-a now admits tcp/81 from role=client too.
	np, err := cs.NetworkingV1().NetworkPolicies("x").Get(ctx, "allow-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p81 := intstr.FromInt32(81)
	np.Spec.Ingress[0].Ports = append(np.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &p81})
	if _, err := cs.NetworkingV1().NetworkPolicies("x").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	policy5 := func(c cell) bool {
		if ns(c.to) != "x" {
			return true
		}
		return c.to == "x/a" && c.proto == "tcp" && clients[c.from]
	}
	kl.expectMatrix("allow-a updated to tcp/81", cells, policy5)

	// 6. ClusterNetworkPolicy, admin tier: deny y → x/a on tcp/81 (before
	// any NetworkPolicy), and pass y → x on tcp/80 (NetworkPolicy decides).
	cnp := &v1alpha2.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "guard-x"},
		Spec: v1alpha2.ClusterNetworkPolicySpec{Tier: v1alpha2.AdminTier, Priority: 10,
			Subject: v1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "x"}}},
			Ingress: []v1alpha2.ClusterNetworkPolicyIngressRule{
				{Action: v1alpha2.ClusterNetworkPolicyRuleActionDeny, From: []v1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "other"}}}},
					Protocols: []v1alpha2.ClusterNetworkPolicyProtocol{{TCP: &v1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &v1alpha2.Port{Number: 81}}}}},
				{Action: v1alpha2.ClusterNetworkPolicyRuleActionPass, From: []v1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}}},
			}}}
	if _, err := kl.k.Policy.PolicyV1alpha2().ClusterNetworkPolicies().Create(ctx, cnp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kl.expectMatrix("admin deny y → x on tcp/81", cells, func(c cell) bool {
		return policy5(c) && !(ns(c.from) == "y" && ns(c.to) == "x" && c.proto == "tcp" && c.port == 81)
	})

	// 7. Delete the NetworkPolicies and the ClusterNetworkPolicy: open again.
	for _, name := range []string{"deny-all", "allow-a"} {
		if err := cs.NetworkingV1().NetworkPolicies("x").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := kl.k.Policy.PolicyV1alpha2().ClusterNetworkPolicies().Delete(ctx, "guard-x", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kl.expectMatrix("every policy deleted", cells, all)
	pols, err := kl.srv.Client.ListPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pols) != 0 {
		t.Errorf("policies left at romanad: %+v", pols)
	}

	// 8. A pod deleted (as the kubelet finishes it: grace period 0): its
	// record goes; the CNI DEL releases its address.
	var now int64
	if err := cs.CoreV1().Pods("y").Delete(ctx, "a", metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
		t.Fatal(err)
	}
	p := kl.pods["y/a"]
	if err := kl.rts[p.host].Del(ctx, p.id, p.ep.Path, "eth0", nil); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "pod record y/a removed", wait, func() error {
		if _, err := kl.srv.Client.GetPod(ctx, "y", "a"); !api.IsNotFound(err) {
			return fmt.Errorf("pod record: %v", err)
		}
		return nil
	})
	if _, err := kl.srv.Client.GetAddress(ctx, p.id+":eth0"); !api.IsNotFound(err) {
		t.Errorf("y/a's address after CNI DEL: %v", err)
	}

	// 9. A namespace deleted while its pod still terminates (deleted from
	// the API, its CNI DEL not done: a force delete): the tenant stays,
	// as romanad refuses to remove a segment with addresses.
	kl.namespace("z", nil)
	za := kl.startPod("z", "a", "h1", nil)
	tz, err := kl.srv.Client.GetTenant(ctx, "z")
	if err != nil {
		t.Fatal(err)
	}
	if tz.Labels[api.LabelSource] != api.SourceKubernetes {
		t.Errorf("tenant z: labels %v, want %s=%s", tz.Labels, api.LabelSource, api.SourceKubernetes)
	}
	kl.deletePod(za, false)
	kl.deleteNamespace("z")
	// A sync without z (z was in every sync since its pod started) has
	// tried to remove its tenant.
	expect.Eventually(t, "romana-kube synced without namespace z", wait, func() error {
		mu.Lock()
		defer mu.Unlock()
		if slices.Contains(synced, "z") {
			return fmt.Errorf("last sync's tenants %v", synced)
		}
		return nil
	})
	if got, err := kl.srv.Client.GetTenant(ctx, "z"); err != nil || got.ID != tz.ID {
		t.Fatalf("tenant z while z/a's address is held: %+v, %v; want it kept with id %d", got, err, tz.ID)
	}
	// Re-created under the same name meanwhile: the same tenant, and a new
	// pod's address in it.
	kl.namespace("z", nil)
	zb := kl.startPod("z", "b", "h2", nil)
	if d, err := kl.srv.Client.Decode(ctx, zb.ep.IP); err != nil || d.Tenant != "z" || d.TenantID != tz.ID {
		t.Errorf("re-created z: z/b's address %s decodes to %+v, %v; want tenant z id %d", zb.ep.IP, d, err, tz.ID)
	}
	// The old pod's CNI DEL, then z deleted for good: its segments and
	// tenant go.
	if err := kl.rts[za.host].Del(ctx, za.id, za.ep.Path, "eth0", nil); err != nil {
		t.Fatal(err)
	}
	kl.deletePod(zb, true)
	kl.deleteNamespace("z")
	expect.Eventually(t, "tenant z and its segments removed", wait, func() error {
		if _, err := kl.srv.Client.GetTenant(ctx, "z"); !api.IsNotFound(err) {
			return fmt.Errorf("tenant z: %v", err)
		}
		return nil
	})
	// A new namespace takes z's id.
	kl.namespace("w", nil)
	wa := kl.startPod("w", "a", "h2", nil)
	if tw, err := kl.srv.Client.GetTenant(ctx, "w"); err != nil || tw.ID != tz.ID {
		t.Errorf("tenant w: %+v, %v; want z's id %d", tw, err, tz.ID)
	}
	if err := kl.reach("tcp", "w/a", "x/a", 80); err != nil {
		t.Errorf("w/a to x/a: %v", err)
	}
	kl.deletePod(wa, true)
	kl.deleteNamespace("w")

	// 10. Churn: 16 namespaces, one after another, each with a pod: with
	// the 6 live ones, more than the plan's 4 tenant bits hold; each gets
	// an id (its pod an address) because the gone ones' are free again.
	for i := range 16 {
		name := fmt.Sprintf("churn-%d", i)
		kl.namespace(name, nil)
		p := kl.startPod(name, "p", []string{"h1", "h2"}[i%2], nil)
		kl.deletePod(p, true)
		kl.deleteNamespace(name)
	}
	expect.Eventually(t, "the churned namespaces' tenants removed", wait, func() error {
		ts, err := kl.srv.Client.ListTenants(ctx)
		if err != nil {
			return err
		}
		var left []string
		for _, x := range ts {
			if x.Labels[api.LabelSource] == api.SourceKubernetes && (strings.HasPrefix(x.Name, "churn-") || x.Name == "w") {
				left = append(left, x.Name)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
}

// deletePod deletes a pod as the kubelet finishes it (grace period 0) and,
// with cniDel, does its CNI DEL (which releases its address).
func (kl *kubeLab) deletePod(p *kubePod, cniDel bool) {
	kl.t.Helper()
	var now int64
	if err := kl.k.Clientset.CoreV1().Pods(p.ns).Delete(kl.ctx, p.name, metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
		kl.t.Fatal(err)
	}
	if cniDel {
		if err := kl.rts[p.host].Del(kl.ctx, p.id, p.ep.Path, "eth0", nil); err != nil {
			kl.t.Fatal(err)
		}
	}
	delete(kl.pods, p.ns+"/"+p.name)
	delete(kl.eps, p.ns+"/"+p.name)
}

// deleteNamespace deletes an empty namespace and, as the namespace
// controller would (kubetest runs none), finalizes it, and waits until it
// is gone.
func (kl *kubeLab) deleteNamespace(name string) {
	kl.t.Helper()
	nss := kl.k.Clientset.CoreV1().Namespaces()
	if err := nss.Delete(kl.ctx, name, metav1.DeleteOptions{}); err != nil {
		kl.t.Fatal(err)
	}
	n, err := nss.Get(kl.ctx, name, metav1.GetOptions{})
	if err == nil {
		n.Spec.Finalizers = nil
		if _, err := nss.Finalize(kl.ctx, n, metav1.UpdateOptions{}); err != nil {
			kl.t.Fatalf("finalize namespace %s: %v", name, err)
		}
	}
	expect.Eventually(kl.t, "namespace "+name+" gone", wait, func() error {
		if _, err := nss.Get(kl.ctx, name, metav1.GetOptions{}); err == nil {
			if err := nss.Delete(kl.ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			return errors.New("still there")
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		return nil
	})
}

func sortedAddrs(a ...netip.Addr) []netip.Addr {
	slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) })
	return a
}
