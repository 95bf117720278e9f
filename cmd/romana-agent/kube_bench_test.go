package main

// The Kubernetes scale figures of issue 12 (docs/benchmarks.md,
// "Kubernetes scale (issue 12)"), measured on the real parts of
// newKubeLab: a kube-apiserver, romanad, romana-kube in this process and
// one romana-agent process per host namespace with real nftables.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/cni"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/kube"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/policy"
	"github.com/romana/romana/sim"
)

// Sizes of the scale run (issue 12, "Must show": 1,000 pods, 100
// namespaces, 200 policies).
const (
	scaleNamespaces = 100
	scalePodsPerNS  = 10
)

// TestKubernetesScale measures, on the real parts, what issue 12 asks of
// Kubernetes at scale: nft rules and set elements per host with 1,000
// pods in 100 namespaces under 200 NetworkPolicies and 2
// ClusterNetworkPolicies; pod created → its address in the nft sets of
// its own host and of a peer host (p50/p99); NetworkPolicy created or
// updated → its rule in every host's kernel (p50/p99); the agents' memory
// with 0 and 1,000 pods. Arrival in the kernel is observed with one
// `nft monitor` per host namespace (netlink events, read as they come),
// not by polling.
//
// The 1,000 pods are Pod objects bound to a host, allocated as the CNI
// path of that host's agent does (romanad AddressRequest with Pod
// "ns/name", as host:NAME, once romana-kube wrote the pod record) and
// given their address in status.podIPs as a kubelet would; they have no
// network namespace or veth (their routes stay pending). Three real pods
// (network namespaces attached by romana-cni) check with TCP that the
// policies are enforced at that scale.
//
// Figures are logged, never asserted. Off unless ROMANA_KUBE_SCALE=1
// (make bench-kube); ROMANA_KUBE_SCALE_HOSTS (default 4) and
// ROMANA_KUBE_SCALE_SAMPLES (default 100) change the run.
func TestKubernetesScale(t *testing.T) {
	if os.Getenv("ROMANA_KUBE_SCALE") != "1" {
		t.Skip("ROMANA_KUBE_SCALE=1 runs the Kubernetes scale measurement (make bench-kube)")
	}
	nHosts := envInt(t, "ROMANA_KUBE_SCALE_HOSTS", 4, 2, 16)
	samples := envInt(t, "ROMANA_KUBE_SCALE_SAMPLES", 100, 1, 10000)
	loadBefore := loadavg(t)
	var hosts []string
	for i := range nHosts {
		hosts = append(hosts, fmt.Sprintf("h%d", i+1))
	}
	// 128 tenants (100 namespaces and Kubernetes' own), 2,048 addresses
	// per block. The agents and romana-kube run with their binaries'
	// default intervals, and the agents log at info.
	synced := &syncWatch{}
	kl := newKubeLabWith(t, kubeLabOptions{
		kubeOnSync: synced.onSync,
		fields:     []plan.Field{{Name: "host", Bits: 4}, {Name: "tenant", Bits: 7}, {Name: "segment", Bits: 2}},
		resync:     10 * time.Second,
		agentArgs:  []string{"--log-level", "info"},
		// romana-kube's defaults: --min-sync-interval 50ms, --resync 5m.
		kubeMinInterval: 50 * time.Millisecond, kubeResync: 5 * time.Minute,
		kubeLog:  slog.LevelWarn, // its info lines for 1,000 pods would flood the test log
		agentExe: agentBinary(t), // the real binary (faults_e2e_test.go)
	}, hosts...)
	ctx := kl.ctx
	kl.settle()
	mem := []memSample{kl.memory("nodes only (no namespace, pod or policy)", hosts)}

	// 100 namespaces and the policies.
	setup := time.Now()
	for k := range scaleNamespaces {
		kl.namespace(scaleNS(k), map[string]string{"team": fmt.Sprintf("t%d", k%10), "env": [2]string{"prod", "dev"}[k%2]})
	}
	nps := scalePolicies()
	parallel(t, 8, len(nps), func(i int) error {
		_, err := kl.k.Clientset.NetworkingV1().NetworkPolicies(nps[i].Namespace).Create(ctx, &nps[i], metav1.CreateOptions{})
		return err
	})
	for _, cnp := range scaleCNPs() {
		if _, err := kl.k.Policy.PolicyV1alpha2().ClusterNetworkPolicies().Create(ctx, &cnp, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kl.settle()
	t.Logf("%d namespaces, %d NetworkPolicies, 2 ClusterNetworkPolicies applied in %v", scaleNamespaces, len(nps), time.Since(setup).Round(time.Millisecond))
	mem = append(mem, kl.memory("100 namespaces, 202 policies, 0 pods", hosts))

	// 1,000 pods.
	setup = time.Now()
	clients := map[string]*client.Client{}
	for _, h := range hosts {
		clients[h] = kl.srv.ClientAs(t, pki.Host(h))
	}
	bulk := map[netip.Addr]string{} // address → "ns/name"
	var bulkMu sync.Mutex
	parallel(t, 8, scaleNamespaces*scalePodsPerNS, func(i int) error {
		k, j := i/scalePodsPerNS, i%scalePodsPerNS
		h := hosts[i%len(hosts)]
		name := fmt.Sprintf("p-%d", j)
		ip, err := kl.bulkPod(clients[h], scaleNS(k), name, h, scalePodLabels(j), nil)
		if err != nil {
			return err
		}
		bulkMu.Lock()
		defer bulkMu.Unlock()
		if other, ok := bulk[ip]; ok {
			return fmt.Errorf("pods %s and %s/%s both got %s", other, scaleNS(k), name, ip)
		}
		bulk[ip] = scaleNS(k) + "/" + name
		return nil
	})
	kl.settle()
	t.Logf("%d pods created, allocated and applied in %v", scaleNamespaces*scalePodsPerNS, time.Since(setup).Round(time.Millisecond))
	mem = append(mem, kl.memory("100 namespaces, 202 policies, 1,000 pods", hosts))

	// What the hosts' kernels hold (ROMANA_KUBE_SCALE_DUMP=DIR keeps each
	// host's listing as DIR/HOST.nft).
	dump := os.Getenv("ROMANA_KUBE_SCALE_DUMP")
	var counts []nftCounts
	for _, h := range hosts {
		c := countNFT(t, kl.hosts[h])
		c.host = h
		counts = append(counts, c)
		if dump != "" {
			out, err := kl.hosts[h].Exec(ctx, "nft", "list", "table", "inet", "romana")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dump, h+".nft"), []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	pols, err := kl.srv.Client.ListPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sets, err := kl.srv.Client.ListAddressSets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	members := 0
	for _, s := range sets {
		members += len(s.Addresses)
	}
	// Every set member at romanad is one of the pods' addresses, and,
	// since every namespace has pods on every host, every host holds
	// every set: its address-set elements are exactly those members.
	var inSet []string
	for _, s := range sets {
		for _, a := range s.Addresses {
			if _, ok := bulk[a]; !ok {
				t.Errorf("address set %s holds %s, no pod's address", s.Name, a)
			}
			inSet = append(inSet, a.String())
		}
	}
	slices.Sort(inSet)
	inSet = slices.Compact(inSet)
	for _, c := range counts {
		got := slices.Sorted(maps.Keys(c.elements))
		if !slices.Equal(got, inSet) {
			t.Errorf("host %s: %d address-set elements, want the %d members of romanad's sets", c.host, len(got), len(inSet))
		}
	}

	// Enforced at that scale, on packets: in ns-050, db pods admit api
	// pods of their own namespace on TCP 80 only.
	kl.startPod(scaleNS(50), "real-db", hosts[0], map[string]string{"app": "db"})
	kl.startPod(scaleNS(50), "real-api", hosts[1], map[string]string{"app": "api"})
	kl.startPod(scaleNS(51), "real-api", hosts[1], map[string]string{"app": "api"})
	kl.expectMatrix("db-from-api in ns-050 with 1,000 pods", []cell{
		{"tcp", scaleNS(50) + "/real-api", scaleNS(50) + "/real-db", 80},
		{"tcp", scaleNS(50) + "/real-api", scaleNS(50) + "/real-db", 81},
		{"tcp", scaleNS(51) + "/real-api", scaleNS(50) + "/real-db", 80},
	}, func(c cell) bool { return c.from == scaleNS(50)+"/real-api" && c.port == 80 })
	kl.settle()

	// The monitors start now: a burst of thousands of events (the first
	// policies) can overflow nft monitor's netlink socket.
	mons := map[string]*nftEvents{}
	for _, h := range hosts {
		mons[h] = startNFTEvents(t, kl.hosts[h])
	}

	// Pod created → enforced.
	var podAdd, podKube, podStatus, podOwn, podPeer, podDelOwn, podDelPeer []time.Duration
	for i := range samples {
		k := 50 + i%50
		own, peer := hosts[i%len(hosts)], hosts[(i+1)%len(hosts)]
		name := fmt.Sprintf("bench-%d", i)
		from := map[string]int{own: mons[own].mark(), peer: mons[peer].mark()}
		var written *syncWatch
		t0 := time.Now()
		ip, err := kl.bulkPod(clients[own], scaleNS(k), name, own, map[string]string{"app": "api", "role": "client"}, func(ip netip.Addr) {
			written = synced.expect(func(d kube.Desired) bool {
				return slices.ContainsFunc(d.Sets, func(s api.AddressSet) bool { return slices.Contains(s.Addresses, ip) })
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		tStatus := time.Now()
		added := func(l string) bool { return strings.HasPrefix(l, "add element inet romana ") && hasElement(l, ip) }
		atOwn := mons[own].wait(t, from[own], added, time.Minute)
		atPeer := mons[peer].wait(t, from[peer], added, time.Minute)
		atKube := written.wait(t)
		podAdd = append(podAdd, tStatus.Sub(t0))
		podKube = append(podKube, atKube.Sub(tStatus))
		podStatus = append(podStatus, atOwn.Sub(tStatus))
		podOwn, podPeer = append(podOwn, atOwn.Sub(t0)), append(podPeer, atPeer.Sub(t0))

		// Deleted as the kubelet finishes a pod (grace period 0), then
		// its CNI DEL releases the address.
		from = map[string]int{own: mons[own].mark(), peer: mons[peer].mark()}
		t0 = time.Now()
		var now int64
		if err := kl.k.Clientset.CoreV1().Pods(scaleNS(k)).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
			t.Fatal(err)
		}
		if err := clients[own].Release(ctx, cni.AllocationName(scaleContainerID(scaleNS(k), name), "eth0")); err != nil {
			t.Fatal(err)
		}
		deleted := func(l string) bool { return strings.HasPrefix(l, "delete element inet romana ") && hasElement(l, ip) }
		podDelOwn = append(podDelOwn, mons[own].wait(t, from[own], deleted, time.Minute).Sub(t0))
		podDelPeer = append(podDelPeer, mons[peer].wait(t, from[peer], deleted, time.Minute).Sub(t0))
		kl.settle()
	}

	// NetworkPolicy created / updated → its rule on every host.
	nps0 := kl.k.Clientset.NetworkingV1().NetworkPolicies(scaleNS(70))
	upd := scaleAllowPort(scaleNS(70), "bench-update", 41000)
	if _, err := nps0.Create(ctx, &upd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kl.settle()
	var polCreate, polCreateAll, polUpdate, polUpdateAll []time.Duration
	var polCreateKube, polUpdateKube []time.Duration
	change := func(port int, do func() error) (each []time.Duration, all, kubeWrote time.Duration) {
		from := map[string]int{}
		for _, h := range hosts {
			from[h] = mons[h].mark()
		}
		written := synced.expect(func(d kube.Desired) bool {
			return slices.ContainsFunc(d.Policies, func(p api.Policy) bool {
				return slices.ContainsFunc(p.Rules, func(r api.Rule) bool { return slices.Contains(r.Ports, uint16(port)) })
			})
		})
		t0 := time.Now()
		if err := do(); err != nil {
			t.Fatal(err)
		}
		kubeWrote = written.wait(t).Sub(t0)
		want := fmt.Sprintf("dport %d ", port)
		for _, h := range hosts {
			at := mons[h].wait(t, from[h], func(l string) bool {
				return strings.HasPrefix(l, "add rule inet romana ") && strings.Contains(l+" ", want)
			}, time.Minute)
			each = append(each, at.Sub(t0))
			all = max(all, at.Sub(t0))
		}
		return each, all, kubeWrote
	}
	for i := range samples {
		// A new policy in a namespace that already has others.
		ns := scaleNS(60 + i%40)
		np := scaleAllowPort(ns, fmt.Sprintf("bench-new-%d", i), 42000+i)
		each, all, kw := change(42000+i, func() error {
			_, err := kl.k.Clientset.NetworkingV1().NetworkPolicies(ns).Create(ctx, &np, metav1.CreateOptions{})
			return err
		})
		polCreate, polCreateAll, polCreateKube = append(polCreate, each...), append(polCreateAll, all), append(polCreateKube, kw)
		kl.settle()
		if err := kl.k.Clientset.NetworkingV1().NetworkPolicies(ns).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		kl.settle()
		// An update of an existing policy's port.
		port := 41001 + i
		each, all, kw = change(port, func() error {
			p, err := nps0.Get(ctx, "bench-update", metav1.GetOptions{})
			if err != nil {
				return err
			}
			pp := intstr.FromInt(port)
			p.Spec.Ingress[0].Ports[0].Port = &pp
			_, err = nps0.Update(ctx, p, metav1.UpdateOptions{})
			return err
		})
		polUpdate, polUpdateAll, polUpdateKube = append(polUpdate, each...), append(polUpdateAll, all), append(polUpdateKube, kw)
		kl.settle()
	}
	loadAfter := loadavg(t)

	// The report.
	var b strings.Builder
	fmt.Fprintf(&b, "\n== Kubernetes scale: %d hosts, %d namespaces, %d pods (+3 real), %d NetworkPolicies, 2 ClusterNetworkPolicies\n",
		nHosts, scaleNamespaces, scaleNamespaces*scalePodsPerNS, len(nps))
	fmt.Fprintf(&b, "load average before: %s\nload average after:  %s\n", loadBefore, loadAfter)
	fmt.Fprintf(&b, "romanad: %d policies, %d address sets, %d set members\n", len(pols), len(sets), members)
	fmt.Fprintf(&b, "| host | nft rules | of them in policy chains | sets | set elements | of them in address sets | maps | map elements | listing-sums rules |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range counts {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %d |\n", c.host, c.rules, c.policyRules, c.sets, c.setElements, c.addrSetElements, c.maps, c.mapElements, c.sumRules)
	}
	fmt.Fprintf(&b, "| what | samples | p50 | p99 | max |\n|---|---|---|---|---|\n")
	row := func(what string, d []time.Duration) {
		p50, p99, mx := percentiles(d)
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", what, len(d), ms(p50), ms(p99), ms(mx))
	}
	row("pod: create → CNI allocated and status written", podAdd)
	row("pod: status written → romana-kube wrote its set to romanad", podKube)
	row("pod: status written → element on its host", podStatus)
	row("pod: create → element on its host", podOwn)
	row("pod: create → element on a peer host", podPeer)
	row("pod: delete → element gone on its host", podDelOwn)
	row("pod: delete → element gone on a peer host", podDelPeer)
	row("NetworkPolicy created → romana-kube wrote it to romanad", polCreateKube)
	row("NetworkPolicy created → rule, each host", polCreate)
	row("NetworkPolicy created → rule on all hosts", polCreateAll)
	row("NetworkPolicy updated → romana-kube wrote it to romanad", polUpdateKube)
	row("NetworkPolicy updated → rule, each host", polUpdate)
	row("NetworkPolicy updated → rule on all hosts", polUpdateAll)
	fmt.Fprintf(&b, "| memory | agent RSS (min–max of hosts) | agent Go heap in use | test process heap in use (romanad, etcd, romana-kube, clients) |\n|---|---|---|---|\n")
	for _, m := range mem {
		fmt.Fprintf(&b, "| %s | %s–%s | %s–%s | %s |\n", m.what, mib(m.rssMin), mib(m.rssMax), mib(m.heapMin), mib(m.heapMax), mib(m.self))
	}
	fmt.Fprintf(&b, "per pod (1,000 pods minus 0 pods, ÷ 1,000), per host:")
	for _, h := range hosts {
		fmt.Fprintf(&b, " %s RSS %.1f KiB heap %.1f KiB;", h, perPod(mem[2].rss[h]-mem[1].rss[h]), perPod(mem[2].heap[h]-mem[1].heap[h]))
	}
	fmt.Fprintf(&b, " test process heap %.1f KiB\n", perPod(mem[2].self-mem[1].self))
	t.Log(b.String())
}

func scaleNS(k int) string { return fmt.Sprintf("ns-%03d", k) }

func scaleContainerID(ns, name string) string { return "kscale-" + ns + "-" + name }

// scalePodLabels: app web, api or db in turn; every fourth pod a client.
func scalePodLabels(j int) map[string]string {
	l := map[string]string{"app": [3]string{"web", "api", "db"}[j%3]}
	if j%4 == 0 {
		l["role"] = "client"
	}
	return l
}

// scalePolicies is a mix of 200 NetworkPolicies: 50 namespace deny-all,
// 50 allow-from-namespace-label (masked), 60 pod-label selectors in the
// policy's namespace and 20 across namespaces (address sets), 10 egress
// ipBlocks with except, 10 named ports from a namespace label.
func scalePolicies() []networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := func(p intstr.IntOrString) []networkingv1.NetworkPolicyPort {
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}}
	}
	sel := func(kv ...string) *metav1.LabelSelector {
		s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
		for i := 0; i+1 < len(kv); i += 2 {
			s.MatchLabels[kv[i]] = kv[i+1]
		}
		return s
	}
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	var out []networkingv1.NetworkPolicy
	np := func(k int, name string, spec networkingv1.NetworkPolicySpec) {
		out = append(out, networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: scaleNS(k), Name: name}, Spec: spec})
	}
	for k := range 50 {
		np(k, "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: ingress})
		np(k, "allow-team", networkingv1.NetworkPolicySpec{PolicyTypes: ingress, Ingress: []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", fmt.Sprintf("t%d", (k+1)%10))}}}}})
	}
	for k := 40; k < 100; k++ {
		np(k, "db-from-api", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "db"), PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "api")}}, Ports: port(intstr.FromInt(80))}}})
	}
	for k := range 20 {
		np(k, "web-from-clients", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"), PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel(), PodSelector: sel("role", "client")}}, Ports: port(intstr.FromInt(80))}}})
	}
	for k := 80; k < 90; k++ {
		np(k, "api-egress-block", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "api"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24", Except: []string{"192.0.2.128/25"}}}}, Ports: port(intstr.FromInt(443))}}})
	}
	for k := 90; k < 100; k++ {
		np(k, "api-named-port", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "api"), PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env", "prod")}}, Ports: port(intstr.FromString("http"))}}})
	}
	return out
}

// scaleCNPs: an admin deny (dev namespaces to team t0's SSH) and a
// baseline deny (dev to prod, after NetworkPolicy).
func scaleCNPs() []v1alpha2.ClusterNetworkPolicy {
	ns := func(k, v string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
	return []v1alpha2.ClusterNetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "admin-dev-ssh"}, Spec: v1alpha2.ClusterNetworkPolicySpec{Tier: v1alpha2.AdminTier, Priority: 10,
			Subject: v1alpha2.ClusterNetworkPolicySubject{Namespaces: ns("team", "t0")},
			Ingress: []v1alpha2.ClusterNetworkPolicyIngressRule{{Action: v1alpha2.ClusterNetworkPolicyRuleActionDeny,
				From:      []v1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: ns("env", "dev")}},
				Protocols: []v1alpha2.ClusterNetworkPolicyProtocol{{TCP: &v1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &v1alpha2.Port{Number: 22}}}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "baseline-dev-prod"}, Spec: v1alpha2.ClusterNetworkPolicySpec{Tier: v1alpha2.BaselineTier, Priority: 10,
			Subject: v1alpha2.ClusterNetworkPolicySubject{Namespaces: ns("env", "prod")},
			Ingress: []v1alpha2.ClusterNetworkPolicyIngressRule{{Action: v1alpha2.ClusterNetworkPolicyRuleActionDeny,
				From: []v1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: ns("env", "dev")}}}}}},
	}
}

// scaleAllowPort is an ingress allow of all pods of ns from prod
// namespaces on one TCP port: one rule naming that port on every host
// with pods of ns.
func scaleAllowPort(ns, name string, port int) networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	p := intstr.FromInt(port)
	return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: networkingv1.NetworkPolicySpec{
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}}}}}}
}

// bulkPod does for a pod without a sandbox what the scheduler, the
// kubelet and romana-cni through the host's agent do: creates the Pod
// bound to host, allocates its address as the agent's CNI path does
// (AddressRequest naming the pod, as host:NAME; romanad waits for
// romana-kube's pod record) and writes the address into status.podIPs.
// allocated, unless nil, is called with the address before the status
// is written.
func (kl *kubeLab) bulkPod(rd *client.Client, ns, name, host string, labels map[string]string, allocated func(netip.Addr)) (netip.Addr, error) {
	ctx := kl.ctx
	pods := kl.k.Clientset.CoreV1().Pods(ns)
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: host, Containers: []corev1.Container{{Name: "c", Image: "agnhost",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	p, err := pods.Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	id := scaleContainerID(ns, name)
	alloc := cni.AllocationName(id, "eth0")
	a, err := rd.Allocate(ctx, api.AddressRequest{Name: alloc, Host: host, Interface: cni.VethName(alloc), Pod: ns + "/" + name,
		Attrs: map[string]string{cni.AttrOwner: cni.Owner, cni.AttrContainerID: id, cni.AttrIfName: "eth0"}})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate %s for pod %s/%s: %w", alloc, ns, name, err)
	}
	ip := a.IP.Unmap()
	if allocated != nil {
		allocated(ip)
	}
	p.Status.PodIP = ip.String()
	p.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
	p.Status.Phase = corev1.PodRunning
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return netip.Addr{}, fmt.Errorf("update status of pod %s/%s: %w", ns, name, err)
	}
	return ip, nil
}

// syncWatch tells when romana-kube's first sync whose desired state
// satisfies a condition ended (Controller.OnSync runs right after the
// sync wrote romanad).
type syncWatch struct {
	mu   sync.Mutex
	cond func(kube.Desired) bool
	at   chan time.Time
}

func (w *syncWatch) onSync(d kube.Desired, err error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil && w.cond != nil && w.cond(d) {
		w.at <- now
		w.cond = nil
	}
}

// expect arms the watch for cond; wait on the result.
func (w *syncWatch) expect(cond func(kube.Desired) bool) *syncWatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cond, w.at = cond, make(chan time.Time, 1)
	return w
}

// wait returns when the sync that satisfied the condition ended.
func (w *syncWatch) wait(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-w.at:
		return at
	case <-time.After(time.Minute):
		t.Fatal("romana-kube: no sync with the expected state within a minute")
		return time.Time{}
	}
}

// settle waits until romana-kube, romanad and every agent are quiet: the
// store's revision has not moved for half a second and every agent has
// applied it.
func (kl *kubeLab) settle() {
	kl.t.Helper()
	var last int64
	var since time.Time
	err := expect.Poll(5*time.Minute, func() error {
		st, err := kl.srv.Client.Status(kl.ctx)
		if err != nil {
			return err
		}
		if st.StoreRevision != last {
			last, since = st.StoreRevision, time.Now()
			return errors.New("store revision moved")
		}
		for _, h := range st.Hosts {
			if h.Revision < st.StoreRevision {
				return fmt.Errorf("host %s at revision %d of %d", h.Host, h.Revision, st.StoreRevision)
			}
		}
		if time.Since(since) < 500*time.Millisecond {
			return errors.New("quiet for less than 500ms")
		}
		return nil
	})
	if err != nil {
		kl.t.Fatalf("settle: %v", err)
	}
}

// memSample is the agents' memory (min and max over hosts) and this
// process's heap at one point of the run.
type memSample struct {
	what                             string
	rssMin, rssMax, heapMin, heapMax int64
	self                             int64
	rss, heap                        map[string]int64 // per host
}

// memory reads, 20 times 250 ms apart, each agent's resident set
// (/proc/PID/status VmRSS) and Go heap in use
// (go_memstats_heap_inuse_bytes on its /metrics), keeping per agent the
// median RSS and the least heap (the agent cannot be made to collect
// garbage: its least heap over 5 s is nearest to its live heap); and this
// test process's heap in use after a GC.
func (kl *kubeLab) memory(what string, hosts []string) memSample {
	kl.t.Helper()
	rss, heap := map[string][]int64{}, map[string]int64{}
	for i := range 20 {
		if i > 0 {
			time.Sleep(250 * time.Millisecond)
		}
		for _, h := range hosts {
			r, hp := kl.agentMemory(h)
			rss[h] = append(rss[h], r)
			if old, ok := heap[h]; !ok || hp < old {
				heap[h] = hp
			}
		}
	}
	m := memSample{what: what, rssMin: 1 << 62, heapMin: 1 << 62, rss: map[string]int64{}, heap: heap}
	for _, h := range hosts {
		slices.Sort(rss[h])
		r := rss[h][len(rss[h])/2]
		m.rss[h] = r
		m.rssMin, m.rssMax = min(m.rssMin, r), max(m.rssMax, r)
		m.heapMin, m.heapMax = min(m.heapMin, heap[h]), max(m.heapMax, heap[h])
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.self = int64(ms.HeapInuse)
	return m
}

// agentMemory is the host's agent's VmRSS and Go heap in use, in bytes.
func (kl *kubeLab) agentMemory(h string) (rss, heap int64) {
	kl.t.Helper()
	pid := kl.agents[h].cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		kl.t.Fatal(err)
	}
	rss = procField(string(b), "VmRSS:") * 1024
	out, err := kl.agentGet(h, "/metrics", 5*time.Second)
	if err != nil {
		kl.t.Fatal(err)
	}
	for l := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(l, "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				kl.t.Fatalf("agent %s: %q: %v", h, l, err)
			}
			return rss, int64(f)
		}
	}
	kl.t.Fatalf("agent %s: no go_memstats_heap_inuse_bytes in /metrics", h)
	return 0, 0
}

// procField is the number after key in a /proc status file (in kB).
func procField(status, key string) int64 {
	for l := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(l, key); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// nftEvents records every line `nft monitor` prints in a host's
// namespace (netlink events of all tables, one line each, flushed per
// event) with the time it was read. (faults_e2e_test.go's nftMonitor
// keeps the text between two markers; this one keeps each line's time.)
type nftEvents struct {
	mu      sync.Mutex
	lines   []string
	at      []time.Time
	changed chan struct{} // closed and replaced at each line and at the end
	ended   error         // why nft monitor stopped, once it did
	stderr  strings.Builder
}

func startNFTEvents(t *testing.T, h *sim.Host) *nftEvents {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, "nft", "monitor")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	m := &nftEvents{changed: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &m.mu, w: &m.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			now := time.Now()
			m.mu.Lock()
			m.lines, m.at = append(m.lines, sc.Text()), append(m.at, now)
			close(m.changed)
			m.changed = make(chan struct{})
			m.mu.Unlock()
		}
		err := cmd.Wait()
		m.mu.Lock()
		m.ended = fmt.Errorf("nft monitor in %s ended (%v): %s", h.Name, cmp.Or(sc.Err(), err), m.stderr.String())
		close(m.changed)
		m.mu.Unlock()
	}()
	t.Cleanup(func() {
		cancel() // kills the nft process we started (exec.CommandContext)
		<-done
	})
	// nft monitor subscribes some time after it starts: a table of ours
	// added and deleted until it reports the deletion.
	expect.Eventually(t, "nft monitor subscribed", wait, func() error {
		from := m.mark()
		for _, args := range [][]string{{"add", "table", "ip", "romk_start"}, {"delete", "table", "ip", "romk_start"}} {
			if _, err := h.Exec(ctx, append([]string{"nft"}, args...)...); err != nil {
				return err
			}
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, l := range m.lines[from:] {
			if strings.Contains(l, "delete table ip romk_start") {
				return nil
			}
		}
		return errors.New("not yet")
	})
	return m
}

// mark is the position after the lines read so far.
func (m *nftEvents) mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.lines)
}

// wait returns when the first line at or after position from that match
// accepts was read.
func (m *nftEvents) wait(t *testing.T, from int, match func(string) bool, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for i := from; ; {
		m.mu.Lock()
		for ; i < len(m.lines); i++ {
			if match(m.lines[i]) {
				at := m.at[i]
				m.mu.Unlock()
				return at
			}
		}
		ch, ended, stderr := m.changed, m.ended, m.stderr.String()
		m.mu.Unlock()
		if ended != nil {
			t.Fatal(ended)
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("nft monitor: no matching line within %v (stderr: %q)", timeout, stderr)
		}
	}
}

// lockedWriter writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// hasElement reports whether an nft monitor element line ("add element
// inet romana SET { 10.1.2.3 }") names ip.
func hasElement(line string, ip netip.Addr) bool {
	_, rest, ok := strings.Cut(line, "{")
	if !ok {
		return false
	}
	rest, _, _ = strings.Cut(rest, "}")
	for f := range strings.SplitSeq(rest, ",") {
		if strings.TrimSpace(f) == ip.String() {
			return true
		}
	}
	return false
}

// nftCounts is what one host's table inet romana holds.
type nftCounts struct {
	host                               string
	rules, policyRules, sumRules       int
	sets, setElements, addrSetElements int
	maps, mapElements                  int
	elements                           map[string]bool // address-set elements
}

// countNFT lists the host's table as JSON and counts its rules, sets,
// maps and their elements.
func countNFT(t *testing.T, h *sim.Host) nftCounts {
	out, err := h.Exec(context.Background(), "nft", "-j", "list", "table", "inet", "romana")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j list table: %v", err)
	}
	c := nftCounts{elements: map[string]bool{}}
	for _, obj := range doc.Nftables {
		switch {
		case obj["rule"] != nil:
			var r struct{ Chain string }
			json.Unmarshal(obj["rule"], &r)
			switch {
			case r.Chain == "listing-sums": // the agent's bookkeeping, never entered
				c.sumRules++
			case strings.HasPrefix(r.Chain, "policy"):
				c.policyRules++
				c.rules++
			default:
				c.rules++
			}
		case obj["set"] != nil, obj["map"] != nil:
			var s struct {
				Name string
				Elem []json.RawMessage
			}
			if obj["set"] != nil {
				json.Unmarshal(obj["set"], &s)
				c.sets++
				c.setElements += len(s.Elem)
				if strings.HasPrefix(s.Name, policy.AddressSetPrefix) {
					c.addrSetElements += len(s.Elem)
					for _, e := range s.Elem {
						var str string
						if json.Unmarshal(e, &str) == nil {
							c.elements[str] = true
						}
					}
				}
			} else {
				json.Unmarshal(obj["map"], &s)
				c.maps++
				c.mapElements += len(s.Elem)
			}
		}
	}
	return c
}

// parallel runs do(0..n-1) on workers goroutines; the first error fails
// the test.
func parallel(t *testing.T, workers, n int, do func(i int) error) {
	t.Helper()
	work := make(chan int)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range work {
				if err := do(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

func envInt(t *testing.T, key string, def, lo, hi int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		t.Fatalf("%s=%q: want %d to %d", key, s, lo, hi)
	}
	return v
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg(t *testing.T) string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

// percentiles returns p50, p99 (nearest rank: the p99 of 100 samples is
// the 99th, of 60 the 60th) and the maximum.
func percentiles(d []time.Duration) (p50, p99, mx time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		return s[max(0, int(math.Ceil(q*float64(len(s))))-1)]
	}
	return at(0.5), at(0.99), s[len(s)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// perPod is a difference of bytes over 1,000 pods, in KiB per pod.
func perPod(b int64) float64 { return float64(b) / 1024 / 1000 }
