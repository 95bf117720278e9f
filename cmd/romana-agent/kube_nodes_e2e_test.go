package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/romana/romana/expect"
	"github.com/romana/romana/kubenode"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

// TestKubeNodesSmoke is the cluster path with nothing played by the test:
// two real nodes (containerd + kubelet + kube-proxy in nftables mode, each
// in a host namespace, package kubenode), the real kube-scheduler and
// kube-controller-manager, romana-kube, romanad and one agent per host.
// Deployments' pods are scheduled onto both nodes, started by the kubelets
// through containerd, addressed by romana-cni from their host's block; they
// reach each other across nodes and through a ClusterIP Service; a
// NetworkPolicy then isolates the servers (directly and through the
// Service) from all but the clients. kube-proxy's and Romana's nft tables
// stand side by side. Everything is stopped and removed at the end
// (kubenode's cleanup reports what it had to force).
func TestKubeNodesSmoke(t *testing.T) {
	simtest.Require(t, "nft", "ping")
	began := time.Now()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"h1", "h2"}
	// The test binary is the agent (TestMain), resync 2 s; romana-kube at
	// runRomanaKube's default interval.
	kn := startKubeNodes(t, hosts, exe, 2*time.Second, 20*time.Millisecond)
	ctx, k, c, nodes := context.Background(), kn.k, kn.cluster, kn.nodes

	const ns = "smoke"
	cs := k.Clientset
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"server", "client"} {
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment(app, 2), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other", Labels: map[string]string{"app": "other"}}, Spec: podSpec()}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	podsUp := time.Now()
	var pods []corev1.Pod
	expect.Eventually(t, "5 pods running with addresses, each Deployment on both nodes", 2*time.Minute, func() error {
		l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		pods = l.Items
		var notYet []string
		spread := map[string]map[string]bool{}
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || !ready(&p) {
				notYet = append(notYet, fmt.Sprintf("%s %s on %q ip %q", p.Name, p.Status.Phase, p.Spec.NodeName, p.Status.PodIP))
				continue
			}
			app := p.Labels["app"]
			if spread[app] == nil {
				spread[app] = map[string]bool{}
			}
			spread[app][p.Spec.NodeName] = true
		}
		if len(pods) != 5 || len(notYet) > 0 {
			return fmt.Errorf("%d pods; not running: %v", len(pods), notYet)
		}
		if len(spread["server"]) != 2 || len(spread["client"]) != 2 {
			return fmt.Errorf("not on both nodes: %v", spread)
		}
		return nil
	})
	t.Logf("5 pods scheduled, started and addressed in %v", time.Since(podsUp).Round(time.Millisecond))
	// Each pod's address is romana-cni's: inside its node's block.
	probes := map[string]*probePod{}
	for _, p := range pods {
		ip := netip.MustParseAddr(p.Status.PodIP)
		if block := c.cidrs[p.Spec.NodeName]; !block.Contains(ip) {
			t.Errorf("pod %s on %s has %s, outside the node's block %s", p.Name, p.Spec.NodeName, ip, block)
		}
		netns, err := nodes[p.Spec.NodeName].PodNetwork(ctx, &p)
		if err != nil {
			t.Fatal(err)
		}
		name := p.Labels["app"] + "@" + p.Spec.NodeName
		probes[name] = &probePod{name: p.Name, node: p.Spec.NodeName, ip: ip, netns: netns}
		t.Logf("pod %s (%s) on %s: %s", p.Name, name, p.Spec.NodeName, ip)
	}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "server"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "server"},
		Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}}}
	svc, err = cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	t.Logf("Service server: ClusterIP %s", clusterIP)

	// The matrix: every pod to each server directly (cross-node and
	// local), and to the Service.
	var targets []string
	for name := range probes {
		if strings.HasPrefix(name, "server@") {
			targets = append(targets, name)
		}
	}
	slices.Sort(targets)
	targets = append(targets, "svc")
	matrix := func() string { // probes in parallel: a blocked one waits its timeout
		var mu sync.Mutex
		var wg sync.WaitGroup
		var lines []string
		for _, from := range slices.Sorted(maps.Keys(probes)) {
			for _, to := range targets {
				if from == to {
					continue
				}
				dst := clusterIP
				if to != "svc" {
					dst = probes[to].ip
				}
				wg.Go(func() {
					if _, err := probes[from].get(dst, "/hostname"); err == nil {
						mu.Lock()
						lines = append(lines, from+" -> "+to)
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	expectMatrixOf := func(what string, allowed func(from, to string) bool) {
		var want []string
		for _, from := range slices.Sorted(maps.Keys(probes)) {
			for _, to := range targets {
				if from != to && allowed(from, to) {
					want = append(want, from+" -> "+to)
				}
			}
		}
		w := strings.Join(want, "\n")
		expect.Eventually(t, what, wait, func() error {
			if got := matrix(); got != w {
				return fmt.Errorf("reachable:\n%s\nwant:\n%s", got, w)
			}
			return nil
		})
	}
	expectMatrixOf("all pods reach the servers, across nodes and through the Service", func(string, string) bool { return true })

	// The server answers with its own name through the Service too.
	name, err := probes["client@h1"].get(clusterIP, "/hostname")
	if err != nil || !strings.HasPrefix(name, "server-") {
		t.Errorf("GET /hostname through the Service: %q, %v", name, err)
	}

	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "server-from-client"}, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}},
	}}
	if _, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectMatrixOf("only the clients reach the servers, directly and through the Service", func(from, to string) bool {
		return strings.HasPrefix(from, "client@")
	})

	// kube-proxy's tables and Romana's stand side by side.
	for _, h := range hosts {
		out, err := c.hosts[h].Exec(ctx, "nft", "list", "tables")
		if err != nil {
			t.Fatal(err)
		}
		for _, tbl := range []string{"table inet romana", "table ip kube-proxy"} {
			if !strings.Contains(out, tbl) {
				t.Errorf("host %s: no %q in\n%s", h, tbl, out)
			}
		}
	}

	// Deleting the policy opens the servers again (both tables still work).
	if err := cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expectMatrixOf("all pods reach the servers again once the policy is gone", func(string, string) bool { return true })
	t.Logf("smoke test done in %v", time.Since(began).Round(time.Millisecond))
}

// deployment is n replicas of agnhost netexec labelled app=name, spread
// over the nodes (at most one more on one node than on another).
func deployment(name string, n int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	spec := podSpec()
	spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
		WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1.DeploymentSpec{
		Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}}}
}

// podSpec runs the upstream agnhost image's HTTP server on port 80, from
// the locally imported image only.
func podSpec() corev1.PodSpec {
	no := false
	grace := int64(2)
	return corev1.PodSpec{
		AutomountServiceAccountToken:  &no,
		TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{Name: "agnhost", Image: kubenode.AgnhostImage, ImagePullPolicy: corev1.PullNever,
			Args:  []string{"netexec", "--http-port=80", "--udp-port=-1"},
			Ports: []corev1.ContainerPort{{ContainerPort: 80}}}},
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// probePod is a pod the test connects from, inside its network namespace.
type probePod struct {
	name, node string
	ip         netip.Addr
	netns      *sim.Namespace
}

// get sends GET path over HTTP/1.0 from inside the pod to dst:80 and
// returns the body.
func (p *probePod) get(dst netip.Addr, path string) (string, error) {
	var body string
	err := p.netns.Do(func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 80).String(), time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.0\r\n\r\n", path)
		b, err := io.ReadAll(conn)
		if err != nil {
			return err
		}
		_, after, ok := strings.Cut(string(b), "\r\n\r\n")
		if !ok || !strings.HasPrefix(string(b), "HTTP/1.") || !strings.Contains(strings.SplitN(string(b), "\r\n", 2)[0], " 200 ") {
			return errors.New("bad answer " + strings.SplitN(string(b), "\r\n", 2)[0])
		}
		body = after
		return nil
	})
	return body, err
}
