// Command kubedemo is `make demo-kubernetes`: a real Kubernetes cluster on
// this machine with Romana installed by `kubectl apply` of its own
// manifests (deploy/kubernetes), a small app, a NetworkPolicy, and the
// connectivity matrix before and after, measured with real packets; then
// everything is torn down, also on failure and on Ctrl-C.
//
// The cluster: etcd and kube-apiserver (package kubetest),
// kube-controller-manager and kube-scheduler, and three nodes, each a
// simulated host (a network namespace of package sim) running containerd,
// a kubelet and kube-proxy in nftables mode (package kubenode). Romana
// runs as pods: romanad (StatefulSet, on the node labelled
// romana.io/romanad=true), the agent DaemonSet (hostNetwork; its init
// container installs romana-cni and the CNI config into the node's
// /opt/cni/bin and /etc/cni/net.d), romana-kube and the bootstrap Job.
//
//	kubedemo -images DIR -manifests DIR -romana PATH
//
// It needs root, the binaries of scripts/kube-apiserver.sh and
// scripts/kube-node.sh (kubectl among them), containerd and runc, and
// Romana's images written by `make images IMAGE_TAG=dev`. The Makefile
// target builds all of them first.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/romana/romana/kubenode"
	"github.com/romana/romana/kubetest"
	"github.com/romana/romana/sim"
)

func main() {
	images := flag.String("images", "", "directory of romanad.tar, romana-agent.tar and romana-kube.tar (make images IMAGE_TAG=dev)")
	manifests := flag.String("manifests", "deploy/kubernetes", "directory of Romana's manifests, applied with kubectl apply -f")
	romana := flag.String("romana", "bin/romana", "the romana CLI, run on romanad's node as admin (its unix socket)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{images: *images, manifests: *manifests, romana: *romana, out: os.Stdout}
	if err := d.main(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo-kubernetes:", err)
		os.Exit(1)
	}
}

// The cluster's layout.
const (
	podCIDR   = "10.128.0.0/10" // Romana's network (outside the Services' 10.96.0.0/16)
	nodeNet   = 24
	appNS     = "demo"
	labPrefix = "romk"
)

var nodeNames = []string{"node1", "node2", "node3"}

// zoneLabel is the node label romana-kube reads the rack from.
const zoneLabel = "topology.kubernetes.io/zone"

// rackOf: node1 and node2 on rack1, node3 on rack2.
func rackOf(i int) string { return fmt.Sprintf("rack%d", 1+i/2) }

// rackConfigMap returns romana-kube's ConfigMap from its manifest with the
// commented-out topology line set.
func rackConfigMap(manifest string) ([]byte, error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return nil, err
	}
	const off = "# topology: [rack=" + zoneLabel + "]"
	for _, doc := range strings.Split(string(b), "\n---\n") {
		if strings.Contains(doc, "kind: ConfigMap") && strings.Contains(doc, off) {
			return []byte(strings.Replace(doc, off, "topology: [rack="+zoneLabel+"]", 1) + "\n"), nil
		}
	}
	return nil, fmt.Errorf("%s: no ConfigMap with %q", manifest, off)
}

type demo struct {
	images, manifests, romana string
	out                       io.Writer

	k       *kubetest.Cluster
	kubectl string
	nodes   map[string]*kubenode.Node
	began   time.Time
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "[%6.1fs] "+format+"\n", append([]any{time.Since(d.began).Seconds()}, args...)...)
}

// main runs the demo, then tears everything down and checks that nothing
// is left.
func (d *demo) main(ctx context.Context) error {
	d.began = time.Now()
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, containerd)")
	}
	for _, f := range []string{"romanad.tar", "romana-agent.tar", "romana-kube.tar"} {
		if _, err := os.Stat(filepath.Join(d.images, f)); err != nil {
			return fmt.Errorf("image %s: %w (make images IMAGE_TAG=dev)", f, err)
		}
	}
	dir, err := kubenode.Dir()
	if err != nil {
		return err
	}
	d.kubectl = filepath.Join(dir, "kubectl")
	if _, err := os.Stat(d.kubectl); err != nil {
		return fmt.Errorf("kubectl: %w (make kube-node builds it)", err)
	}
	before := snapshot()
	stack := kubenode.NewStack("romana-kdemo", indent{d.out})
	done := make(chan error, 1)
	go func() { done <- stack.Run(func(t testing.TB) { d.run(ctx, t) }) }()
	var runErr error
	select {
	case runErr = <-done:
	case <-ctx.Done():
		d.say("interrupted: stopping after the current step, then tearing down")
		runErr = <-done
		if runErr == nil {
			runErr = errors.New("interrupted")
		}
	}
	if runErr != nil && ctx.Err() == nil {
		d.say("FAILED: %v", runErr)
	}
	d.say("tearing down: app, nodes (pods' sandboxes through the CRI, containerd, kubelet, kube-proxy), control plane, namespaces")
	td := time.Now()
	if d.k != nil && runErr == nil {
		d.deleteApp()
	}
	closeErr := stack.Close()
	d.say("torn down in %.1fs", time.Since(td).Seconds())
	left := snapshot().minus(before)
	if left.empty() {
		d.say("leftovers: none (network namespaces, processes, mounts, cgroups checked)")
	} else {
		d.say("LEFTOVERS: %s", left)
	}
	d.say("total %.1fs", time.Since(d.began).Seconds())
	return errors.Join(runErr, closeErr, left.err())
}

// run is the demo proper; any failure is t.Fatal (the stack's).
func (d *demo) run(ctx context.Context, t testing.TB) {
	step := func(format string, args ...any) {
		if ctx.Err() != nil {
			t.Skipf("interrupted")
		}
		d.say(format, args...)
	}
	step("starting etcd and kube-apiserver %s", kubetest.Version)
	d.k = kubetest.Start(t)
	step("starting kube-controller-manager and kube-scheduler")
	kubenode.StartControlPlane(t, d.k)

	if err := sim.CleanupAbandoned(labPrefix, 0); err != nil {
		d.say("sweeping namespaces of earlier runs: %v", err)
	}
	lab, err := sim.New(ctx, fmt.Sprintf("%s-%d", labPrefix, os.Getpid()%100000), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("create the lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})

	// In-cluster clients (romana-kube, the bootstrap Job) reach the
	// apiserver through the `kubernetes` Service: its endpoints are the
	// nodes' addresses, port 6443, where each node forwards to the
	// apiserver (kubenode's ServeAPI).
	var addrs []netip.Addr
	for i := range nodeNames {
		addrs = append(addrs, netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)}))
	}
	if err := d.kubernetesEndpoints(ctx, addrs); err != nil {
		t.Fatal(err)
	}

	gateway := netip.AddrFrom4([4]byte{192, 168, 77, 254})
	if _, err := lab.Fabric.Exec(ctx, "ip", "addr", "add", netip.PrefixFrom(gateway, nodeNet).String(), "dev", sim.BridgeName); err != nil {
		t.Fatalf("fabric: gateway address: %v", err)
	}

	bin, err := kubenode.Dir()
	if err != nil {
		t.Fatal(err)
	}
	testImages := filepath.Join(t.TempDir(), "test-images.tar")
	if err := kubenode.WriteImages(bin, testImages); err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, f := range []string{"romanad.tar", "romana-agent.tar", "romana-kube.tar"} {
		extra = append(extra, filepath.Join(d.images, f))
	}
	d.nodes = map[string]*kubenode.Node{}
	for i, name := range nodeNames {
		step("starting %s: host namespace %s-%s at %s, containerd, kubelet, kube-proxy (nftables); images imported with ctr", name, lab.Prefix, name, addrs[i])
		h, err := lab.AddHost(ctx, name, netip.PrefixFrom(addrs[i], nodeNet))
		if err != nil {
			t.Fatalf("add host %s: %v", name, err)
		}
		// A Kubernetes node forwards (kubeadm checks it) and has a
		// default route: a host-network process's connection to a
		// ClusterIP is routed before kube-proxy's DNAT, so without one it
		// fails with "network is unreachable". The gateway is an address
		// of the lab's fabric that leads nowhere. In the host's
		// namespace only.
		for _, args := range [][]string{{"sysctl", "-qw", "net.ipv4.ip_forward=1"}, {"ip", "route", "add", "default", "via", gateway.String()}} {
			if _, err := h.Exec(ctx, args...); err != nil {
				t.Fatalf("%s: %s: %v", name, strings.Join(args, " "), err)
			}
		}
		d.nodes[name] = kubenode.Start(t, d.k, h, kubenode.Config{
			Images: testImages, ExtraImages: extra, ClusterCIDR: podCIDR,
			Overlays:    []string{"/etc", "/opt", "/var/lib", "/run"},
			NodeCNIDirs: true, NetnsInRun: true, ServeAPI: true,
		})
	}

	step("installing Romana: kubectl apply of %s; the nodes on two racks (label %s), which romana-kube maps to the plan's rack level", d.manifests, zoneLabel)
	d.must(t, "label", "node", nodeNames[0], "romana.io/romanad=true")
	for i, n := range nodeNames {
		d.must(t, "label", "node", n, fmt.Sprintf("%s=%s", zoneLabel, rackOf(i)))
	}
	applied0 := time.Now()
	d.must(t, "apply", "-f", d.manifests)
	// romana-kube's --topology, the knob its ConfigMap has commented out:
	// set as an operator would, then a new romana-kube pod reads it.
	cm, err := rackConfigMap(filepath.Join(d.manifests, "30-romana-kube.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cmFile := filepath.Join(t.TempDir(), "romana-kube-config.yaml")
	if err := os.WriteFile(cmFile, cm, 0o644); err != nil {
		t.Fatal(err)
	}
	d.say("  romana-kube-config with `topology: [rack=%s]`", zoneLabel)
	d.must(t, "apply", "-f", cmFile)
	d.must(t, "-n", "romana-system", "rollout", "restart", "deployment/romana-kube")

	step("waiting for romanad-0 on %s, then adding the address plan as romanad's admin (its unix socket on that node)", nodeNames[0])
	d.waitFor(ctx, t, "romanad-0 running", 3*time.Minute, func() error { return d.podRunning(ctx, "romana-system", "romanad-0") })
	var plan string
	d.waitFor(ctx, t, "romana network add", time.Minute, func() error {
		out, err := d.romanaCLI(ctx, "network", "add", "pods", "--cidr", podCIDR, "--field", "rack=2", "--field", "host=6", "--field", "tenant=6", "--field", "segment=4")
		plan = out
		return err
	})
	d.say("  $ romana network add pods --cidr %s --field rack=2 --field host=6 --field tenant=6 --field segment=4\n%s", podCIDR, indentText(plan))

	step("waiting for the bootstrap Job, romana-kube, an agent on each node, and the nodes Ready")
	d.waitFor(ctx, t, "Romana installed", 5*time.Minute, func() error { return d.romanaReady(ctx) })
	for _, n := range nodeNames {
		if err := d.nodes[n].WaitReady(ctx, d.k); err != nil {
			t.Fatal(err)
		}
	}
	d.say("Romana installed %.1fs after kubectl apply", time.Since(applied0).Seconds())
	d.printTimeline(ctx, applied0)
	d.show(t, "-n", "romana-system", "get", "pods", "-o", "wide")
	d.show(t, "get", "nodes", "-o", "wide")

	step("running the app: namespace %s, Deployment web (3 replicas, segment web) + ClusterIP Service web, Deployment client (2, segment client), Deployment other (1, segment other)", appNS)
	app := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(app, []byte(appYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	d.must(t, "apply", "-f", app)
	var pods []corev1.Pod
	d.waitFor(ctx, t, "6 app pods running and ready", 3*time.Minute, func() error {
		var err error
		pods, err = d.appPods(ctx)
		return err
	})
	d.show(t, "-n", appNS, "get", "pods,svc", "-o", "wide")
	d.printAddresses(ctx, t, pods)

	svc, err := d.k.Clientset.CoreV1().Services(appNS).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := d.newMatrix(ctx, t, pods, netip.MustParseAddr(svc.Spec.ClusterIP))
	step("connectivity before any NetworkPolicy (TCP connect + HTTP GET from inside each pod's network namespace, port 80)")
	d.waitFor(ctx, t, "every pod reaching every web pod and the Service", time.Minute, func() error {
		return m.expect(func(from, to string) bool { return true })
	})
	m.print(d.out)

	step("applying NetworkPolicy web-from-client: pods app=web accept only pods app=client")
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(policyYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	d.must(t, "apply", "-f", pol)
	d.waitFor(ctx, t, "only the clients reaching web", time.Minute, func() error {
		return m.expect(func(from, to string) bool { return strings.HasPrefix(from, "client") })
	})
	d.say("policy in force within %.1fs of kubectl apply (matrix polled until it matched)", time.Since(applied).Seconds())
	m.print(d.out)

	step("nft tables on each node: Romana's and kube-proxy's side by side")
	for _, n := range nodeNames {
		out, err := d.nodes[n].Host.Exec(ctx, "nft", "list", "tables")
		if err != nil {
			t.Fatal(err)
		}
		d.say("  %s: %s", n, strings.Join(strings.Fields(strings.ReplaceAll(out, "\n", "; ")), " "))
	}
	step("demo done")
}

// must runs kubectl, printing the command and its output; a failure is
// fatal.
func (d *demo) must(t testing.TB, args ...string) {
	out, err := d.kubectlRun(args...)
	d.say("  $ kubectl %s\n%s", strings.Join(args, " "), indentText(out))
	if err != nil {
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
}

func (d *demo) show(t testing.TB, args ...string) { d.must(t, args...) }

func (d *demo) kubectlRun(args ...string) (string, error) {
	cmd := exec.Command(d.kubectl, append([]string{"--kubeconfig", d.k.Kubeconfig}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// romanaCLI runs the romana CLI on romanad's node as its admin, through
// romanad's unix socket (hostPath /run/romanad on that node).
func (d *demo) romanaCLI(ctx context.Context, args ...string) (string, error) {
	romana, err := filepath.Abs(d.romana)
	if err != nil {
		return "", err
	}
	cmd := d.nodes[nodeNames[0]].Command(append([]string{romana, "--server", "unix:///run/romanad/romanad.sock"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("romana %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// waitFor polls cond every half second until it returns nil, saying what
// it still waits for every 15 s; after timeout it is fatal, on Ctrl-C it
// ends the run (Skip).
func (d *demo) waitFor(ctx context.Context, t testing.TB, what string, timeout time.Duration, cond func() error) {
	deadline := time.Now().Add(timeout)
	lastSaid := time.Now()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Since(lastSaid) > 15*time.Second {
			d.say("  still waiting for %s: %v", what, err)
			lastSaid = time.Now()
		}
		if time.Now().After(deadline) {
			d.diagnose()
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			t.Skipf("interrupted while waiting for %s", what)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// diagnose prints the pods, the recent events and the last lines of
// Romana's containers' logs on each node (read from the node's
// /var/log/pods: the apiserver cannot reach the kubelets for kubectl logs).
func (d *demo) diagnose() {
	for _, args := range [][]string{{"get", "pods", "-A", "-o", "wide"}, {"get", "events", "-A", "--sort-by=.lastTimestamp"}} {
		out, _ := d.kubectlRun(args...)
		d.say("  $ kubectl %s\n%s", strings.Join(args, " "), indentText(out))
	}
	for _, n := range nodeNames {
		if d.nodes[n] == nil {
			continue
		}
		out, _ := d.nodes[n].Command("sh", "-c", "for f in /var/log/pods/romana-system_*/*/*.log; do echo \"== $f\"; tail -n 15 \"$f\"; done").CombinedOutput()
		d.say("  %s: Romana's container logs\n%s", n, indentText(string(out)))
	}
}

// ref returns a pointer to v (the API's optional fields).
func ref[T any](v T) *T { return &v }

func (d *demo) kubernetesEndpoints(ctx context.Context, addrs []netip.Addr) error {
	var eps []discoveryv1.Endpoint
	for _, a := range addrs {
		eps = append(eps, discoveryv1.Endpoint{Addresses: []string{a.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ref(true)}})
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: map[string]string{
			discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "romana-kubedemo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: ref("https"), Port: ref(int32(6443)), Protocol: ref(corev1.ProtocolTCP)}},
	}
	if _, err := d.k.Clientset.DiscoveryV1().EndpointSlices("default").Create(ctx, es, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create EndpointSlice default/kubernetes: %w", err)
	}
	return nil
}

func (d *demo) podRunning(ctx context.Context, ns, name string) error {
	p, err := d.k.Clientset.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.Status.Phase != corev1.PodRunning {
		return fmt.Errorf("pod %s/%s is %s", ns, name, p.Status.Phase)
	}
	return nil
}

// romanaReady: the bootstrap Job succeeded, romana-kube and an agent per
// node ready.
func (d *demo) romanaReady(ctx context.Context) error {
	cs := d.k.Clientset
	job, err := cs.BatchV1().Jobs("romana-system").Get(ctx, "romana-bootstrap", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if job.Status.Succeeded < 1 {
		return fmt.Errorf("bootstrap Job: %d succeeded, %d failed", job.Status.Succeeded, job.Status.Failed)
	}
	dep, err := cs.AppsV1().Deployments("romana-system").Get(ctx, "romana-kube", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if dep.Status.ReadyReplicas < 1 {
		return errors.New("romana-kube not ready")
	}
	ds, err := cs.AppsV1().DaemonSets("romana-system").Get(ctx, "romana-agent", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if ds.Status.NumberReady != int32(len(nodeNames)) {
		return fmt.Errorf("agents ready: %d of %d", ds.Status.NumberReady, len(nodeNames))
	}
	return nil
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (d *demo) appPods(ctx context.Context) ([]corev1.Pod, error) {
	l, err := d.k.Clientset.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var notYet []string
	for _, p := range l.Items {
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || !ready(&p) {
			notYet = append(notYet, fmt.Sprintf("%s %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName))
		}
	}
	if len(l.Items) != 6 || len(notYet) > 0 {
		return nil, fmt.Errorf("%d pods; not ready: %v", len(l.Items), notYet)
	}
	pods := l.Items
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		return strings.Compare(a.Labels["app"]+a.Spec.NodeName+a.Name, b.Labels["app"]+b.Spec.NodeName+b.Name)
	})
	return pods, nil
}

// printAddresses decodes each pod's address with romana address decode.
func (d *demo) printAddresses(ctx context.Context, t testing.TB, pods []corev1.Pod) {
	d.say("pod addresses, taken apart by `romana address decode` (tenant = the namespace, segment = label romana.io/segment):")
	fmt.Fprintf(d.out, "    %-26s %-6s %-15s %s\n", "POD", "NODE", "IP", "NAMESPACE/SEGMENT")
	for _, p := range pods {
		out, err := d.romanaCLI(ctx, "address", "decode", p.Status.PodIP, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(d.out, "    %-26s %-6s %-15s %s\n", p.Name, p.Spec.NodeName, p.Status.PodIP, decoded(out))
	}
}

// decoded renders romana address decode's JSON as namespace/segment (the
// tenant is the pod's namespace), with the host and endpoint fields.
func decoded(js string) string {
	var a struct {
		Network, Host, Tenant, Segment string
		Endpoint                       uint64
		Loc                            struct{ Groups []uint64 }
	}
	if err := json.Unmarshal([]byte(js), &a); err != nil {
		return strings.TrimSpace(js)
	}
	rack := ""
	if len(a.Loc.Groups) > 0 {
		rack = fmt.Sprintf("rack %d, ", a.Loc.Groups[0])
	}
	return fmt.Sprintf("%s/%s  (network %s, %shost %s, endpoint %d)", a.Tenant, a.Segment, a.Network, rack, a.Host, a.Endpoint)
}

func (d *demo) deleteApp() {
	d.say("deleting namespace %s (its pods' CNI DELs reach the agents while they still run)", appNS)
	if out, err := d.kubectlRun("delete", "namespace", appNS, "--wait=true", "--timeout=90s"); err != nil {
		d.say("  kubectl delete namespace %s: %v\n%s", appNS, err, indentText(out))
	}
}

// matrix probes from every client and other pod to every web pod and the
// Service.
type matrix struct {
	t       testing.TB
	froms   []probe
	targets []string
	dst     map[string]netip.Addr
	last    map[[2]string]bool
}

type probe struct {
	name string
	ns   *sim.Namespace
}

func (d *demo) newMatrix(ctx context.Context, t testing.TB, pods []corev1.Pod, clusterIP netip.Addr) *matrix {
	m := &matrix{t: t, dst: map[string]netip.Addr{}}
	for _, p := range pods {
		ns, err := d.nodes[p.Spec.NodeName].PodNetwork(ctx, &p)
		if err != nil {
			t.Fatal(err)
		}
		short := p.Labels["app"] + "@" + p.Spec.NodeName
		for i := 2; slices.ContainsFunc(m.froms, func(q probe) bool { return q.name == short }) || m.dst[short].IsValid(); i++ {
			short = fmt.Sprintf("%s@%s#%d", p.Labels["app"], p.Spec.NodeName, i)
		}
		if p.Labels["app"] != "web" {
			m.froms = append(m.froms, probe{name: short, ns: ns})
		} else {
			m.targets = append(m.targets, short)
			m.dst[short] = netip.MustParseAddr(p.Status.PodIP)
		}
	}
	m.targets = append(m.targets, "svc/web")
	m.dst["svc/web"] = clusterIP
	return m
}

// measure probes every pair in parallel.
func (m *matrix) measure() map[[2]string]bool {
	got := map[[2]string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, f := range m.froms {
		for _, to := range m.targets {
			if f.name == to {
				continue
			}
			wg.Go(func() {
				ok := get(f.ns, m.dst[to]) == nil
				mu.Lock()
				got[[2]string{f.name, to}] = ok
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return got
}

func (m *matrix) expect(allowed func(from, to string) bool) error {
	got := m.measure()
	m.last = got
	var wrong []string
	for k, ok := range got {
		if ok != allowed(k[0], k[1]) {
			wrong = append(wrong, fmt.Sprintf("%s -> %s reachable=%v", k[0], k[1], ok))
		}
	}
	if len(wrong) > 0 {
		slices.Sort(wrong)
		return errors.New(strings.Join(wrong, ", "))
	}
	return nil
}

func (m *matrix) print(w io.Writer) {
	fmt.Fprintf(w, "    %-16s", "from \\ to")
	for _, to := range m.targets {
		fmt.Fprintf(w, " %-13s", to)
	}
	fmt.Fprintln(w)
	for _, f := range m.froms {
		fmt.Fprintf(w, "    %-16s", f.name)
		for _, to := range m.targets {
			cell := "-"
			if f.name != to {
				cell = "blocked"
				if m.last[[2]string{f.name, to}] {
					cell = "OK"
				}
			}
			fmt.Fprintf(w, " %-13s", cell)
		}
		fmt.Fprintln(w)
	}
}

// get connects from inside ns to dst:80 and expects agnhost's HTTP answer
// to GET /hostname.
func get(ns *sim.Namespace, dst netip.Addr) error {
	return ns.Do(func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 80).String(), time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(conn, "GET /hostname HTTP/1.0\r\n\r\n")
		b, err := io.ReadAll(conn)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(b, []byte("HTTP/1.")) || !strings.Contains(strings.SplitN(string(b), "\r\n", 2)[0], " 200 ") {
			return fmt.Errorf("bad answer %q", strings.SplitN(string(b), "\r\n", 2)[0])
		}
		return nil
	})
}

// indent writes each line with a margin (the stack's log).
type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	if _, err := io.WriteString(i.w, indentText(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func indentText(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}

const appYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, romana.io/segment: web}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 2
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
        - name: agnhost
          image: ` + kubenode.AgnhostImage + `
          imagePullPolicy: Never
          args: [netexec, --http-port=80, --udp-port=-1]
          ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80, protocol: TCP}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client, romana.io/segment: client}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 2
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: client}}}
      containers:
        - name: agnhost
          image: ` + kubenode.AgnhostImage + `
          imagePullPolicy: Never
          args: [netexec, --http-port=80, --udp-port=-1]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: other, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: other}}
  template:
    metadata: {labels: {app: other, romana.io/segment: other}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 2
      containers:
        - name: agnhost
          image: ` + kubenode.AgnhostImage + `
          imagePullPolicy: Never
          args: [netexec, --http-port=80, --udp-port=-1]
`

const policyYAML = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from:
        - podSelector: {matchLabels: {app: client}}
`
