package main

// Pod latency on real nodes (issue 13, "Must show"; docs/benchmarks.md,
// "Kubernetes on real nodes: pod latency (issue 13)"): how long after a
// pod is created it is reachable, and how long until a NetworkPolicy that
// selects it is enforced on it, measured with real packets between pods
// on the cluster of TestKubeNodesSmoke. `make bench-kube-nodes`; not part
// of `make test`.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/kube"
	"github.com/romana/romana/kubenode"
	"github.com/romana/romana/kubetest"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// kubeNodes is the real-node cluster of TestKubeNodesSmoke and TestKubeNodesLatency: a kubetest apiserver, the
// real scheduler and controller-manager, romanad, romana-kube in this
// process, one kubenode.Node and one romana-agent process per host.
type kubeNodes struct {
	*cluster
	k     *kubetest.Cluster
	nodes map[string]*kubenode.Node
	names []string // the hosts, in order
}

// startKubeNodes starts that cluster on hosts with agentExe as the agents'
// binary (run with agentArgs and --resync resync) and romana-kube syncing
// at most every kubeMinInterval, and waits until every Node is Ready.
func startKubeNodes(t *testing.T, hosts []string, agentExe string, resync, kubeMinInterval time.Duration, agentArgs ...string) *kubeNodes {
	t.Helper()
	return startKubeNodesWith(t, hosts, kubeNodesOptions{agentExe: agentExe, resync: resync,
		kubeMinInterval: kubeMinInterval, agentArgs: agentArgs})
}

// kubeNodesOptions are what the clusters of startKubeNodesWith differ in.
// The zero value of every field but agentExe is a default.
type kubeNodesOptions struct {
	agentExe        string
	resync          time.Duration
	kubeMinInterval time.Duration
	agentArgs       []string
	// apiserverArgs are extra kube-apiserver flags.
	apiserverArgs []string
	// romanad are options of the romanad instance (a logger, ...).
	romanad []servertest.Option
	// fields are the pod network's fields; default host 8, tenant 4,
	// segment 4 bits of 10.0.0.0/8.
	fields []plan.Field
	// beforeControlPlane runs once romana-kube runs, before the scheduler
	// and controller-manager start (CRDs to install, ...).
	beforeControlPlane func(k *kubetest.Cluster)
	// images writes the nodes' image tarball to path; default
	// kubenode.WriteImages.
	images func(bin, path string)
	// onHost runs for every host namespace before its node starts.
	onHost func(name string, h *sim.Host, ip netip.Addr)
	// logs, if set, is a directory the agents' logs are copied to when the
	// test ends, failed or not.
	logs string
}

// startKubeNodesWith starts the cluster of startKubeNodes with o.
func startKubeNodesWith(t *testing.T, hosts []string, o kubeNodesOptions) *kubeNodes {
	t.Helper()
	simtest.Require(t, "nft", "ip")
	bin := kubenode.Require(t)
	began := time.Now()
	k := kubetest.StartWithArgs(t, o.apiserverArgs...)
	ctx := context.Background()
	lab := simtest.New(t)
	srv, ctl := startRomanad(t, lab, o.romanad...)
	c := &cluster{t: t, ctx: ctx, srv: srv, ctl: ctl, lab: lab, exe: o.agentExe, logDir: t.TempDir(), credDir: t.TempDir(),
		hosts: map[string]*sim.Host{}, cidrs: map[string]netip.Prefix{}, eps: map[string]*sim.Endpoint{},
		agents: map[string]*agentProc{}, resync: o.resync}
	kn := &kubeNodes{cluster: c, k: k, nodes: map[string]*kubenode.Node{}, names: hosts}
	// Registered before the nodes: the agents stop after them, so the
	// sandboxes' CNI DELs still find them.
	t.Cleanup(func() {
		for name := range c.agents {
			c.stopAgent(name)
		}
		for _, h := range hosts {
			b, _ := os.ReadFile(filepath.Join(c.logDir, h+".log"))
			if o.logs != "" {
				os.WriteFile(filepath.Join(o.logs, "agent-"+h+".log"), b, 0o644)
			}
			if t.Failed() {
				t.Logf("agent %s log:\n%s", h, b)
			}
		}
	})
	fields := o.fields
	if fields == nil {
		fields = []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}
	}
	if _, err := srv.Client.AddNetwork(ctx, api.Network{Name: "pods", CIDR: "10.0.0.0/8", Fields: fields}); err != nil {
		t.Fatal(err)
	}
	runRomanaKube(t, k, srv, kubeLabOptions{kubeMinInterval: o.kubeMinInterval, kubeLog: slog.LevelWarn})
	if o.beforeControlPlane != nil {
		o.beforeControlPlane(k)
	}
	kubenode.StartControlPlane(t, k)
	images := filepath.Join(t.TempDir(), "images.tar")
	if o.images != nil {
		o.images(bin, images)
	} else if err := kubenode.WriteImages(bin, images); err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(pluginDir(t), "romana-cni")
	for i, name := range hosts {
		ip := netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)})
		h, err := lab.AddHost(ctx, name, netip.PrefixFrom(ip, 24))
		if err != nil {
			t.Fatal(err)
		}
		c.hosts[name] = h
		if o.onHost != nil {
			o.onHost(name, h, ip)
		}
		conf := fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"romana","plugins":[{"type":"romana-cni","agentSocket":%q,"kubernetes":true}]}`, c.cniSock(name))
		kn.nodes[name] = kubenode.Start(t, k, h, kubenode.Config{
			CNIPlugins: map[string]string{"romana-cni": plugin}, CNIConfig: conf, Images: images, ClusterCIDR: "10.0.0.0/8"})
	}
	expect.Eventually(t, "hosts registered from the kubelets' nodes", wait, func() error {
		hs, err := srv.Client.ListHosts(ctx)
		if err != nil {
			return err
		}
		if len(hs) != len(hosts) {
			return fmt.Errorf("hosts %v", hs)
		}
		for _, h := range hs {
			for _, s := range h.Slots {
				c.cidrs[h.Name] = s.CIDR
			}
		}
		return nil
	})
	c.agentCommand = func(host string, args ...string) *exec.Cmd { return kn.nodes[host].Command(args...) }
	for _, h := range hosts {
		c.startAgent(h, o.agentArgs...)
	}
	c.waitHealthy(hosts...)
	for _, h := range hosts {
		if err := kn.nodes[h].WaitReady(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("cluster up in %v: apiserver, scheduler, controller-manager, %d nodes, romanad, romana-kube, %d agents",
		time.Since(began).Round(time.Millisecond), len(hosts), len(hosts))
	return kn
}

// kubeSegmentLabel is the pod label romana-kube takes a pod's segment
// from (its default).
const kubeSegmentLabel = kube.DefaultSegmentLabel

// latPod is one measured pod: when each step was first seen, on the
// test's clock. Zero: not seen.
type latPod struct {
	name string
	// created: just before the Create call; acked: when it returned.
	created, acked time.Time
	// From the pod informer: spec.nodeName set, status.podIP set, Ready.
	scheduled, podIP, ready time.Time
	// allocated: romanad's watch sent the pod's address (romana-cni's ADD
	// reached romanad); ip and node are the address's.
	allocated time.Time
	ip        netip.Addr
	node      string
	// route: a route to ip appeared on the pod's node (netlink: the CNI
	// ADD's host route); element: `nft monitor` on the pod's node printed
	// ip added to a set (the NetworkPolicy's target set).
	route, element time.Time
	// Probes (see probeLoop), each the first round in which: firstPacket:
	// the allowed prober's SYN was answered by the pod (SYN-ACK or RST:
	// its network is up); reachable: its GET /hostname answered with the
	// pod's name; after the last round in which the denied prober's SYN
	// was answered, enforcedNet: the allowed prober's SYN was answered
	// (and the denied one's dropped); enforced: its GET answered.
	firstPacket, reachable, enforcedNet, enforced time.Time
	// through: rounds in which the denied prober got an answer,
	// firstThrough the first; falseDrops: rounds before the last of
	// those in which the allowed prober's SYN was answered and the
	// denied one's was not (the policy looked enforced but was not: a
	// SYN or its answer slower than latDropAfter).
	through, falseDrops int
	firstThrough        time.Time
	rounds              int
	roundEvery          time.Duration // mean time between two rounds
}

// The pod latency run's parameters (environment; make bench-kube-nodes).
const (
	latEnv         = "ROMANA_KUBE_NODES_BENCH"
	latHostsEnv    = "ROMANA_KUBE_NODES_HOSTS"    // nodes, 2 or 3 (default 2)
	latPodsEnv     = "ROMANA_KUBE_NODES_PODS"     // pods measured (default 100)
	latIntervalEnv = "ROMANA_KUBE_NODES_INTERVAL" // between two creations (default 200ms; 0: all at once)
	latSelectEnv   = "ROMANA_KUBE_NODES_SELECT"   // how the policy selects the pods: label (default) or segment
)

// Probe timings: how long a SYN may go unanswered before it counts as
// dropped, how long a GET may take, and the pause between two rounds of a
// pod's probes.
const (
	latDropAfter = 500 * time.Millisecond
	latGetWithin = 2 * time.Second
	latPollEvery = 20 * time.Millisecond
	// latRoundsPerSecond bounds the rounds of all pods together: with n
	// pods probed at once, each pod's rounds are n/latRoundsPerSecond
	// apart when that is longer than latPollEvery, so the probes do not
	// take the CPU the pods need to start.
	latRoundsPerSecond = 500
)

// TestKubeNodesLatency measures pod created → reachable and pod created →
// policy enforced on real nodes (issue 13). The cluster is
// TestKubeNodesSmoke's with the real romana-agent binary at its default
// --resync (10s) and log level info, and romana-kube at its default
// --min-sync-interval (50ms). In namespace "lat", two prober pods per
// node, "client" (role=client) and "other" (role=other), and one
// NetworkPolicy exist before any measured pod: pods labelled app=target
// admit TCP port 80 from role=client only (an address set of targets on
// each node: the policy selects pods by label). With
// ROMANA_KUBE_NODES_SELECT=segment the targets are also labelled
// romana.io/segment=target and the policy selects that label instead (a
// masked match of the segment: no set). Then N pods app=target (agnhost
// netexec, spread over the nodes) are created one every interval; for
// each, t0 is the time just before its Create call.
//
// As soon as romanad's watch shows a pod's address (romana-cni's ADD
// allocated it), the test probes it from a node other than its own, in
// rounds started every 20 ms (less often when many pods are probed at
// once: at most 500 rounds a second in all, so the probes do not take
// the CPU the pods need to start), whatever earlier rounds still wait
// for. In each, at the same instant, the client prober GETs /hostname
// and the other prober sends a SYN; a SYN unanswered after 500 ms counts
// as dropped. Each time below is when the first round showing the state
// was sent:
//   - first packet: the client's SYN was answered (SYN-ACK, or RST while
//     the container is not listening yet);
//   - reachable: the GET answered with the pod's own name;
//   - enforced: the client's SYN was answered and the other's dropped, in
//     the first such round after the last one in which the other's SYN
//     was answered (so a SYN merely slowed by load does not count);
//   - enforced and serving: the same with the GET answered.
//
// A pod's probes stop after 10 rounds in a row saw it enforced and
// serving. Rounds in which the other prober got an answer show the pod
// open (not yet in the policy's set on its node); rounds that looked
// enforced before the last of those are counted as load noise.
// The breakdown comes from the pod informer (scheduled, podIP in status,
// Ready), romanad's watch (address allocated) and, on the pod's node, a
// netlink route subscription (the host route of the CNI ADD) and `nft
// monitor` (the pod's address added to the target set). Those are the
// times the test read the event, late by as long as the reader waited
// for a CPU. Absolute numbers are printed, nothing timed is asserted;
// the run fails only if a pod never gets there, or if at the end a
// client cannot reach a target or an other prober can.
func TestKubeNodesLatency(t *testing.T) {
	if os.Getenv(latEnv) != "1" {
		t.Skip(latEnv + "=1 runs the pod latency measurement on real nodes (make bench-kube-nodes)")
	}
	nHosts := envInt(t, latHostsEnv, 2, 2, 3)
	nPods := envInt(t, latPodsEnv, 100, 1, 200)
	interval := 200 * time.Millisecond
	if s := os.Getenv(latIntervalEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			t.Fatalf("%s=%q: want a duration", latIntervalEnv, s)
		}
		interval = d
	}
	targetLabels := map[string]string{"app": "target"}
	selector := targetLabels
	switch sel := os.Getenv(latSelectEnv); sel {
	case "", "label":
	case "segment":
		targetLabels = map[string]string{"app": "target", kubeSegmentLabel: "target"}
		selector = map[string]string{kubeSegmentLabel: "target"}
	default:
		t.Fatalf("%s=%q: want label or segment", latSelectEnv, sel)
	}
	loadBefore := loadavg(t)
	began := time.Now()
	var hosts []string
	for i := range nHosts {
		hosts = append(hosts, fmt.Sprintf("h%d", i+1))
	}
	kn := startKubeNodes(t, hosts, agentBinary(t), 10*time.Second, 50*time.Millisecond, "--log-level", "info")
	ctx := context.Background()
	cs := kn.k.Clientset
	const ns = "lat"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "target-from-client"}, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: selector},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: new(intstr.FromInt32(80))}},
		}},
	}}
	if _, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	if selector[kubeSegmentLabel] != "" {
		// The segment exists before the measured pods, as it does when an
		// app scales up (romana-kube makes a segment for its first pod;
		// until it exists, a policy naming it compiles to nothing).
		expect.Eventually(t, "segment lat/target added", wait, func() error {
			_, err := kn.srv.Client.AddSegment(ctx, api.Segment{Tenant: ns, Name: "target"})
			return err
		})
	}
	// The probers, two per node, placed by name.
	for _, h := range hosts {
		for _, role := range []string{"client", "other"} {
			spec := podSpec()
			spec.NodeName = h
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: role + "-" + h, Labels: map[string]string{"role": role}}, Spec: spec}
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	probers := map[string]*latProber{} // "client@h1"
	expect.Eventually(t, "the prober pods running", 2*time.Minute, func() error {
		for _, h := range hosts {
			for _, role := range []string{"client", "other"} {
				name := role + "@" + h
				if probers[name] != nil {
					continue
				}
				p, err := cs.CoreV1().Pods(ns).Get(ctx, role+"-"+h, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if p.Status.PodIP == "" || !ready(p) {
					return fmt.Errorf("%s: %s, ip %q", p.Name, p.Status.Phase, p.Status.PodIP)
				}
				netns, err := kn.nodes[h].PodNetwork(ctx, p)
				if err != nil {
					return err
				}
				probers[name] = newLatProber(t, p.Name, h, netip.MustParseAddr(p.Status.PodIP), netns)
			}
		}
		return nil
	})
	// The policy's peer set (the clients) is on every node before any
	// target exists.
	for _, h := range hosts {
		expect.Eventually(t, "the clients in the policy's peer set on "+h, wait, func() error {
			els := countNFT(t, kn.hosts[h]).elements
			for _, hh := range hosts {
				if ip := probers["client@"+hh].ip; !els[ip.String()] {
					return fmt.Errorf("%s not in an address set", ip)
				}
			}
			return nil
		})
	}

	// The monitors on every node, and romanad's watch of addresses.
	routes, elements := map[string]*routeTimes{}, map[string]*nftEvents{}
	for _, h := range hosts {
		elements[h] = startNFTEvents(t, kn.hosts[h])
		routes[h] = startRouteTimes(t, kn.hosts[h])
	}
	pods := make([]*latPod, nPods)
	byName := map[string]*latPod{}
	for i := range pods {
		pods[i] = &latPod{name: fmt.Sprintf("t-%03d", i)}
		byName[pods[i].name] = pods[i]
	}
	var mu sync.Mutex // guards pods' fields
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	var probing sync.WaitGroup
	var active atomic.Int64 // pods being probed
	snap, err := kn.srv.Client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- kn.srv.Client.Watch(watchCtx, snap.Revision+1, func(ev api.Event) error {
			if ev.Kind != api.KindAddress || ev.Type != api.EventPut {
				return nil
			}
			at := time.Now()
			var a api.Address
			if err := json.Unmarshal(ev.Object, &a); err != nil {
				return fmt.Errorf("decode address %s: %w", ev.Name, err)
			}
			p := byName[a.Attrs[api.AttrK8sPod]]
			if p == nil || a.Attrs[api.AttrK8sNamespace] != ns {
				return nil
			}
			mu.Lock()
			first := p.allocated.IsZero()
			if first {
				p.allocated, p.ip, p.node = at, a.IP, a.Host
			}
			mu.Unlock()
			if first {
				i := (slices.Index(hosts, a.Host) + 1) % len(hosts)
				allowed, denied := probers["client@"+hosts[i]], probers["other@"+hosts[i]]
				probing.Go(func() { probeLoop(probeCtx, &mu, &active, p, allowed, denied) })
			}
			return nil
		})
	}()
	// The pod informer records when each pod is first seen scheduled,
	// with an address, and Ready.
	inf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	seen := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		p := byName[pod.Name]
		if p == nil {
			return
		}
		at := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if p.scheduled.IsZero() && pod.Spec.NodeName != "" {
			p.scheduled = at
		}
		if p.podIP.IsZero() && pod.Status.PodIP != "" {
			p.podIP = at
		}
		if p.ready.IsZero() && ready(pod) {
			p.ready = at
		}
	}
	if _, err := inf.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: seen, UpdateFunc: func(_, obj any) { seen(obj) }}); err != nil {
		t.Fatal(err)
	}
	infStop := make(chan struct{})
	defer close(infStop)
	inf.Start(infStop)
	inf.WaitForCacheSync(infStop)

	loadStart := loadavg(t)
	t.Logf("measuring %d pods on %d nodes, one created every %v, the policy selecting %v (load average %s; %s before the cluster started)",
		nPods, nHosts, interval, selector, loadStart, loadBefore)
	target := podSpec()
	target.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
		WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "target"}}}}
	reconciles := map[string]int{}
	for _, h := range hosts {
		reconciles[h] = kn.reconciles(h)
	}
	cpuStart := processCPU(t)
	measured := time.Now()
	var creating sync.WaitGroup
	for i, p := range pods {
		if i > 0 && interval > 0 {
			time.Sleep(time.Until(measured.Add(time.Duration(i) * interval))) // the creation schedule, not a wait for state
		}
		creating.Go(func() {
			obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: targetLabels}, Spec: target}
			mu.Lock()
			p.created = time.Now()
			mu.Unlock()
			_, err := cs.CoreV1().Pods(ns).Create(ctx, obj, metav1.CreateOptions{})
			mu.Lock()
			p.acked = time.Now()
			mu.Unlock()
			if err != nil {
				t.Errorf("create pod %s: %v", p.name, err)
			}
		})
	}
	creating.Wait()
	if t.Failed() {
		t.FailNow()
	}
	expect.Eventually(t, fmt.Sprintf("all %d pods reachable and the policy enforced on each", nPods), 10*time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		var left []string
		for _, p := range pods {
			if p.enforced.IsZero() {
				left = append(left, p.name)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%d not yet: %v", len(left), left[:min(len(left), 10)])
		}
		return nil
	})
	stopProbes()
	probing.Wait()
	done := time.Now()
	cpu := processCPU(t) - cpuStart
	loadEnd := loadavg(t)
	stopWatch()
	if err := <-watchDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("romanad watch: %v", err)
	}

	// The state at the end, once more for every pod: the client gets its
	// name back, the other prober gets no answer.
	var wg sync.WaitGroup
	for _, p := range pods {
		i := (slices.Index(hosts, p.node) + 1) % len(hosts)
		wg.Go(func() {
			if name, err := probers["client@"+hosts[i]].getWithin(p.ip, latDropAfter, latGetWithin); err != nil || name != p.name {
				t.Errorf("at the end, client@%s GET %s (%s): %q, %v", hosts[i], p.ip, p.name, name, err)
			}
			if answered, err := probers["other@"+hosts[i]].syn(p.ip, latDropAfter); answered {
				t.Errorf("at the end, other@%s reaches %s (%s): %v", hosts[i], p.ip, p.name, err)
			}
		})
	}
	wg.Wait()

	// The kernel's times, from the monitors on each pod's node.
	for _, p := range pods {
		p.route = routes[p.node].at(p.ip)
		p.element = elements[p.node].first(func(l string) bool {
			return strings.HasPrefix(l, "add element inet romana ") && hasElement(l, p.ip)
		})
	}
	perNode := map[string]int{}
	for _, p := range pods {
		perNode[p.node]++
	}
	t.Logf("%d pods (per node %v) created over %v, all enforced %v after the first creation; load average %s at the start, %s at the end; this process (romanad, romana-kube, the probes) used %v of CPU meanwhile",
		nPods, perNode, pods[nPods-1].created.Sub(pods[0].created).Round(time.Millisecond),
		done.Sub(measured).Round(time.Millisecond), loadStart, loadEnd, cpu.Round(time.Millisecond))
	var agents []string
	for _, h := range hosts {
		agents = append(agents, fmt.Sprintf("%s %d", h, kn.reconciles(h)-reconciles[h]))
	}
	t.Logf("agents' reconciliations during the run (romana_agent_reconciles_total): %s", strings.Join(agents, ", "))
	t.Log(latReport(pods))
	t.Logf("whole run %v", time.Since(began).Round(time.Second))
}

// processCPU is the user and system CPU time this process used so far.
func processCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// latReport renders the run: every step's delay after creation and the
// intervals between steps, p50 / p99 / max over the pods that have both
// ends, and the open windows.
func latReport(pods []*latPod) string {
	type span struct {
		name     string
		from, to func(*latPod) time.Time
	}
	created := func(p *latPod) time.Time { return p.created }
	steps := []span{
		{"Create call returned (API ack)", created, func(p *latPod) time.Time { return p.acked }},
		{"scheduled (informer: spec.nodeName)", created, func(p *latPod) time.Time { return p.scheduled }},
		{"address allocated (romanad watch)", created, func(p *latPod) time.Time { return p.allocated }},
		{"host route on its node (netlink)", created, func(p *latPod) time.Time { return p.route }},
		{"first packet answered by the pod", created, func(p *latPod) time.Time { return p.firstPacket }},
		{"REACHABLE: GET answered, across nodes", created, func(p *latPod) time.Time { return p.reachable }},
		{"podIP in status (informer)", created, func(p *latPod) time.Time { return p.podIP }},
		{"Ready (informer)", created, func(p *latPod) time.Time { return p.ready }},
		{"in the target set on its node (nft monitor)", created, func(p *latPod) time.Time { return p.element }},
		{"ENFORCED: allowed SYN answered, denied SYN dropped", created, func(p *latPod) time.Time { return p.enforcedNet }},
		{"enforced and serving: allowed GET answered, denied dropped", created, func(p *latPod) time.Time { return p.enforced }},
	}
	parts := []span{
		{"scheduling: created → scheduled", created, func(p *latPod) time.Time { return p.scheduled }},
		{"kubelet, sandbox, CNI ADD to romanad: scheduled → allocated", func(p *latPod) time.Time { return p.scheduled }, func(p *latPod) time.Time { return p.allocated }},
		{"CNI ADD after the allocation: allocated → host route", func(p *latPod) time.Time { return p.allocated }, func(p *latPod) time.Time { return p.route }},
		{"host route → first packet answered", func(p *latPod) time.Time { return p.route }, func(p *latPod) time.Time { return p.firstPacket }},
		{"container start: first packet → GET answered", func(p *latPod) time.Time { return p.firstPacket }, func(p *latPod) time.Time { return p.reachable }},
		{"kubelet status: allocated → podIP in status", func(p *latPod) time.Time { return p.allocated }, func(p *latPod) time.Time { return p.podIP }},
		{"romana-kube, romanad, agent: podIP in status → set element", func(p *latPod) time.Time { return p.podIP }, func(p *latPod) time.Time { return p.element }},
		{"set element → enforcement observed", func(p *latPod) time.Time { return p.element }, func(p *latPod) time.Time { return p.enforcedNet }},
		{"first packet → enforced", func(p *latPod) time.Time { return p.firstPacket }, func(p *latPod) time.Time { return p.enforcedNet }},
		{"reachable → enforced (positive: served while open)", func(p *latPod) time.Time { return p.reachable }, func(p *latPod) time.Time { return p.enforcedNet }},
	}
	var b strings.Builder
	table := func(title string, spans []span) {
		fmt.Fprintf(&b, "\n%-62s %6s %10s %10s %10s\n", title, "pods", "p50", "p99", "max")
		for _, s := range spans {
			var d []time.Duration
			for _, p := range pods {
				from, to := s.from(p), s.to(p)
				if !from.IsZero() && !to.IsZero() {
					d = append(d, to.Sub(from))
				}
			}
			p50, p99, mx := percentiles(d)
			fmt.Fprintf(&b, "%-62s %6d %10s %10s %10s\n", s.name, len(d), ms(p50), ms(p99), ms(mx))
		}
	}
	table("after the Create call", steps)
	table("intervals (negative: the second came first)", parts)
	var open []time.Duration
	rounds, falseDrops := 0, 0
	for _, p := range pods {
		rounds += p.rounds
		falseDrops += p.falseDrops
		if !p.firstThrough.IsZero() {
			open = append(open, p.enforcedNet.Sub(p.firstThrough))
		}
	}
	var every []time.Duration
	for _, p := range pods {
		every = append(every, p.roundEvery)
	}
	e50, _, emx := percentiles(every)
	p50, p99, mx := percentiles(open)
	served := 0
	for _, p := range pods {
		if !p.reachable.IsZero() && p.reachable.Before(p.enforcedNet) {
			served++
		}
	}
	fmt.Fprintf(&b, "\nserving before enforced (a GET answered in a round before the enforced one): %d of %d pods\n", served, len(pods))
	fmt.Fprintf(&b, "open before enforced (the denied prober's SYN answered): %d of %d pods; its first such round → enforced p50 %s, p99 %s, max %s\n",
		len(open), len(pods), ms(p50), ms(p99), ms(mx))
	fmt.Fprintf(&b, "%d probe rounds in all; a pod's rounds came every %s (p50 over the pods; max %s); rounds that looked enforced before the denied prober's last answer (a SYN or answer slower than %v): %d\n",
		rounds, ms(e50), ms(emx), latDropAfter, falseDrops)
	return b.String()
}
