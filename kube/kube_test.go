package kube

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/romana/romana/api"
)

func node(name, ip string, labels map[string]string, more ...string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, a := range append([]string{ip}, more...) {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	return n
}

func namespace(name string, labels map[string]string) corev1.Namespace {
	return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func pod(ns, name string, labels map[string]string) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, UID: types.UID("uid-" + ns + "-" + name)}}
}

func TestDesire(t *testing.T) {
	cfg := Config{Topology: map[string]string{"rack": "topology.kubernetes.io/zone"}}
	hostPod := pod("kube-system", "proxy", nil)
	hostPod.Spec.HostNetwork = true
	st := State{
		Nodes: []corev1.Node{
			node("n2", "192.0.2.12", map[string]string{"topology.kubernetes.io/zone": "r2"}),
			node("n1", "192.0.2.11", map[string]string{"topology.kubernetes.io/zone": "r1"}, "2001:db8::11"),
			node("n3", "192.0.2.13", nil),               // no zone label: a problem, no host
			{ObjectMeta: metav1.ObjectMeta{Name: "n4"}}, // no address yet
		},
		Namespaces: []corev1.Namespace{
			namespace("default", nil),
			namespace("kube-system", nil),
			namespace("shop", map[string]string{DefaultIsolationLabel: "tenant"}),
			namespace("lab", map[string]string{DefaultIsolationLabel: "segment"}),
			namespace("odd", map[string]string{DefaultIsolationLabel: "sometimes"}),
		},
		Pods: []corev1.Pod{
			pod("shop", "web-1", map[string]string{DefaultSegmentLabel: "frontend", "app": "web"}),
			pod("shop", "db-1", map[string]string{DefaultSegmentLabel: "db"}),
			pod("lab", "x", nil),
			pod("lab", "y", map[string]string{DefaultSegmentLabel: "Bad_Name"}),
			pod("gone", "z", nil),
			hostPod,
		},
	}
	compile := func(State) PolicySet {
		return PolicySet{Policies: []api.Policy{{Name: "k8s.np.shop.web"}}, Sets: []api.AddressSet{{Name: "k8s.s1"}}, Problems: []string{"from the compiler"}}
	}
	d := Desire(cfg, st, compile)
	var got strings.Builder
	for _, h := range d.Hosts {
		got.WriteString("host " + hostString(h) + " " + h.Name + "\n")
	}
	for _, x := range d.Tenants {
		got.WriteString("tenant " + x.Name + " " + x.Isolation + "\n")
	}
	for _, x := range d.Segments {
		got.WriteString("segment " + x.Tenant + "/" + x.Name + "\n")
	}
	for _, x := range d.Pods {
		got.WriteString("pod " + x.Key() + " " + x.Tenant + "/" + x.Segment + " " + x.UID + "\n")
	}
	for _, x := range d.Policies {
		got.WriteString("policy " + x.Name + " " + x.Tier + "\n")
	}
	for _, x := range d.Problems {
		got.WriteString("problem " + x + "\n")
	}
	want := `host 192.0.2.11,2001:db8::11 map[rack:r1 romana.io/source:kubernetes] n1
host 192.0.2.12 map[rack:r2 romana.io/source:kubernetes] n2
tenant default none
tenant kube-system none
tenant lab none
tenant odd none
tenant shop none
segment default/default
segment kube-system/default
segment lab/default
segment odd/default
segment shop/db
segment shop/default
segment shop/frontend
pod lab/x lab/default uid-lab-x
pod lab/y lab/default uid-lab-y
pod shop/db-1 shop/db uid-shop-db-1
pod shop/web-1 shop/frontend uid-shop-web-1
policy k8s.isolation.lab.default baseline
policy k8s.isolation.shop baseline
policy k8s.np.shop.web 
problem from the compiler
problem namespace odd: label romana.io/isolation="sometimes": want tenant, segment or none; the namespace stays open
problem node n3: no label topology.kubernetes.io/zone (the plan's rack level)
problem node n4: no InternalIP in its status yet
problem pod gone/z: namespace gone unknown or unusable
problem pod lab/y: label romana.io/segment: invalid segment name "Bad_Name": use 1-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit; using segment default
`
	if got.String() != want {
		t.Errorf("Desire:\n%s\nwant:\n%s", got.String(), want)
	}
	// The tenant isolation policies are Romana's own isolation as masked
	// rules: allow from the tenant (or segment), deny the rest.
	for _, p := range d.Policies {
		if p.Name != "k8s.isolation.shop" {
			continue
		}
		if len(p.AppliedTo) != 1 || p.AppliedTo[0] != (api.Selector{Tenant: "shop"}) || len(p.Rules) != 2 ||
			p.Rules[0].Action != api.ActionAllow || len(p.Rules[0].Peers) != 1 || p.Rules[0].Peers[0].Tenant != "shop" || p.Rules[0].Peers[0].Set != "" ||
			p.Rules[1].Action != api.ActionDeny || len(p.Rules[1].Peers) != 0 {
			t.Errorf("isolation policy: %+v", p)
		}
	}
}

func TestDesireTenantLabel(t *testing.T) {
	cfg := Config{TenantLabel: "example.com/tenant"}
	st := State{
		Namespaces: []corev1.Namespace{
			namespace("a-dev", map[string]string{"example.com/tenant": "acme"}),
			namespace("a-prod", map[string]string{"example.com/tenant": "acme"}),
			namespace("stray", nil),
		},
		Pods: []corev1.Pod{pod("a-dev", "p", nil), pod("a-prod", "q", nil), pod("stray", "r", nil)},
	}
	d := Desire(cfg, st, nil)
	// A namespace without the label is its own tenant (as in netpol).
	if len(d.Tenants) != 2 || d.Tenants[0].Name != "acme" || d.Tenants[1].Name != "stray" {
		t.Errorf("tenants %+v, want acme and stray", d.Tenants)
	}
	// Each labelled as the controller's (it removes only those).
	for _, x := range d.Tenants {
		if x.Labels[api.LabelSource] != api.SourceKubernetes {
			t.Errorf("tenant %s labels %v, want %s=%s", x.Name, x.Labels, api.LabelSource, api.SourceKubernetes)
		}
	}
	if len(d.Pods) != 3 || d.Pods[0].Tenant != "acme" || d.Pods[1].Tenant != "acme" || d.Pods[2].Tenant != "stray" {
		t.Errorf("pods %+v", d.Pods)
	}
	if len(d.Problems) != 0 {
		t.Errorf("problems %q", d.Problems)
	}
}

func TestReconcilerConvergesAndOwnsOnlyItsObjects(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	// Objects the operator made: left alone.
	f.hosts["bare"] = api.Host{Name: "bare", IP: mustAddr("192.0.2.99")}
	f.tenants["ops"] = api.Tenant{Name: "ops", ID: 7, Isolation: api.IsolationTenant}
	f.policies["operator-policy"] = api.Policy{Name: "operator-policy", Priority: 10}
	// Left by an earlier run: removed.
	f.policies["k8s.np.old.gone"] = api.Policy{Name: "k8s.np.old.gone"}
	f.sets["k8s.old"] = api.AddressSet{Name: "k8s.old"}
	f.pods["old/p"] = api.Pod{Namespace: "old", Name: "p", Tenant: "old", Segment: "default"}

	st := State{
		Nodes:      []corev1.Node{node("n1", "192.0.2.11", nil), node("n2", "192.0.2.12", nil)},
		Namespaces: []corev1.Namespace{namespace("shop", nil), namespace("ops", nil)},
		Pods:       []corev1.Pod{pod("shop", "web", map[string]string{DefaultSegmentLabel: "frontend"})},
	}
	pols := PolicySet{
		Policies: []api.Policy{{Name: "k8s.np.shop.web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "shop", Set: "k8s.sel.1"}},
			Rules: []api.Rule{{Protocol: "tcp", Ports: []uint16{80}}}}},
		Sets: []api.AddressSet{{Name: "k8s.sel.1", Addresses: []netipAddr{mustAddr("10.1.0.5")}}},
	}
	want := Desire(Config{}, st, func(State) PolicySet { return pols })
	rc := &Reconciler{R: f, Prefix: DefaultPrefix, NodeGrace: time.Minute}
	now := time.Unix(1000, 0)
	if _, err := rc.Sync(ctx, want, now); err != nil {
		t.Fatal(err)
	}
	wantDump := `host bare 192.0.2.99 invalid IP map[]
host n1 192.0.2.11 invalid IP map[romana.io/source:kubernetes]
host n2 192.0.2.12 invalid IP map[romana.io/source:kubernetes]
tenant ops 7 tenant map[]
tenant shop 0 none map[romana.io/source:kubernetes]
segment ops/default
segment shop/default
segment shop/frontend
pod shop/web shop/frontend
policy k8s.np.shop.web tier="" prio=1000 rules=1
policy operator-policy tier="" prio=10 rules=0
set k8s.sel.1 [10.1.0.5]
`
	if got := f.dump(); got != wantDump {
		t.Errorf("after the first sync:\n%s\nwant:\n%s", got, wantDump)
	}
	// Idempotent: a second sync with nothing changed writes nothing (and
	// romanad's defaults are not taken for differences).
	before := rc.Stats
	if _, err := rc.Sync(ctx, want, now); err != nil {
		t.Fatal(err)
	}
	if rc.Stats != before {
		t.Errorf("second sync wrote: %+v → %+v", before, rc.Stats)
	}
	// After a restart (a new reconciler reading romanad) still nothing to
	// write.
	rc2 := &Reconciler{R: f, Prefix: DefaultPrefix, NodeGrace: time.Minute}
	if _, err := rc2.Sync(ctx, want, now); err != nil {
		t.Fatal(err)
	}
	if rc2.Stats.Writes+rc2.Stats.Deletes != 0 {
		t.Errorf("a restarted reconciler wrote: %+v", rc2.Stats)
	}

	// A node deleted: its host keeps its addresses for the grace period,
	// then they are released and the host removed.
	f.addAddress("c1:eth0", "n2", "10.1.1.5")
	f.addAddress("c2:eth0", "n1", "10.1.0.5")
	st.Nodes = st.Nodes[:1]
	want = Desire(Config{}, st, func(State) PolicySet { return pols })
	next, err := rc.Sync(ctx, want, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.hosts["n2"]; !ok || len(f.addrs) != 2 {
		t.Fatalf("host n2 removed within its grace period:\n%s", f.dump())
	}
	if !next.Equal(now.Add(time.Second + time.Minute)) {
		t.Errorf("next sync %v, want the end of n2's grace period %v", next, now.Add(time.Second+time.Minute))
	}
	if _, err := rc.Sync(ctx, want, next); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.hosts["n2"]; ok {
		t.Errorf("host n2 still there after its grace period:\n%s", f.dump())
	}
	if _, ok := f.addrs["c1:eth0"]; ok {
		t.Errorf("n2's address not released")
	}
	if _, ok := f.addrs["c2:eth0"]; !ok {
		t.Errorf("n1's address released")
	}
	if _, ok := f.hosts["bare"]; !ok {
		t.Errorf("the operator's host was removed")
	}

	// A failed write is retried by the next sync, after re-reading romanad.
	pols.Sets[0].Addresses = append(pols.Sets[0].Addresses, mustAddr("10.1.0.6"))
	want = Desire(Config{}, st, func(State) PolicySet { return pols })
	f.failNext["PutAddressSet"] = api.Errorf(api.ReasonUnavailable, "store down")
	if _, err := rc.Sync(ctx, want, next); err == nil || !strings.Contains(err.Error(), "put address set k8s.sel.1: store down") {
		t.Fatalf("sync with a failing write: err %v", err)
	}
	if _, err := rc.Sync(ctx, want, next); err != nil {
		t.Fatal(err)
	}
	if got := f.sets["k8s.sel.1"].Addresses; len(got) != 2 {
		t.Errorf("set after retry: %v", got)
	}
}

// A node whose address changed keeps its host (a host cannot move while
// it holds addresses): the sync reports it, and writes nothing.
func TestReconcilerReportsMovedNode(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	rc := &Reconciler{R: f, Prefix: DefaultPrefix}
	st := State{Nodes: []corev1.Node{node("n1", "192.0.2.11", nil)}}
	if _, err := rc.Sync(ctx, Desire(Config{}, st, nil), time.Now()); err != nil {
		t.Fatal(err)
	}
	st.Nodes[0] = node("n1", "192.0.2.21", nil)
	_, err := rc.Sync(ctx, Desire(Config{}, st, nil), time.Now())
	if err == nil || !strings.Contains(err.Error(), "node n1 changed") {
		t.Fatalf("err %v, want node n1 changed", err)
	}
	if f.hosts["n1"].IP != mustAddr("192.0.2.11") {
		t.Errorf("host moved: %+v", f.hosts["n1"])
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		t.Errorf("a moved node is the controller's report, not romanad's error: %v", err)
	}
}
