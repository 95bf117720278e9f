package kube

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/romana/romana/api"
)

// A label-selected set lists every selected pod by name from the moment
// the controller sees it (unscheduled, no address), beside the addresses
// it knows; and the reconciler writes a pod's sets and policies before
// its record, so an allocation (which needs the record) always finds the
// pod's memberships written.
func TestSetsListPodsBeforeTheirRecords(t *testing.T) {
	ctx := context.Background()
	web := func(name string) corev1.Pod { return pod("shop", name, map[string]string{"app": "web"}) }
	running := web("web-2")
	running.Spec.NodeName = "n1"
	running.Status.PodIP, running.Status.PodIPs = "10.1.0.7", []corev1.PodIP{{IP: "10.1.0.7"}}
	gone := web("web-3")
	gone.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	st := State{
		Nodes:      []corev1.Node{node("n1", "192.0.2.11", nil)},
		Namespaces: []corev1.Namespace{namespace("shop", nil)},
		Pods:       []corev1.Pod{web("web-1"), running, gone, pod("shop", "client", map[string]string{"app": "client"}), pod("shop", "db", nil)},
		NetworkPolicies: []networkingv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}},
			},
		}},
	}
	want := Desire(Config{}, st, Policies(Config{}, nil))
	byPods := map[string]api.AddressSet{}
	for _, s := range want.Sets {
		byPods[strings.Join(s.Pods, ",")] = s
	}
	targets, ok := byPods["shop/web-1,shop/web-2"] // not web-3, being deleted
	if !ok || !slices.Equal(targets.Addresses, []netipAddr{mustAddr("10.1.0.7")}) {
		t.Errorf("no target set listing web-1 and web-2 with web-2's address; sets: %+v", want.Sets)
	}
	if clients, ok := byPods["shop/client"]; !ok || len(clients.Addresses) != 0 {
		t.Errorf("no peer set listing shop/client (no address yet); sets: %+v", want.Sets)
	}

	f := newFake()
	rc := &Reconciler{R: f, Prefix: DefaultPrefix, NodeGrace: time.Minute}
	// A set that fails to be written holds back the records of its new
	// pods (and only those); the next sync writes both.
	f.failNext["PutAddressSet"] = api.Errorf(api.ReasonUnavailable, "fake: store unavailable")
	if _, err := rc.Sync(ctx, want, time.Unix(1000, 0)); err == nil {
		t.Fatal("Sync succeeded with a failed set write")
	}
	if _, err := rc.Sync(ctx, want, time.Unix(1001, 0)); err != nil {
		t.Fatal(err)
	}
	// Each pod's record is written after every set listing it was
	// (successfully) written, and after the policies.
	lastWrite := map[string]int{}
	for i, w := range f.writes {
		lastWrite[w] = i
	}
	for i, w := range f.writes {
		key, isPod := strings.CutPrefix(w, "pod ")
		if !isPod {
			continue
		}
		for _, s := range want.Sets {
			if j, ok := lastWrite["set "+s.Name]; slices.Contains(s.Pods, key) && (!ok || j > i) {
				t.Errorf("record of %s written (#%d) before its set %s (#%d, written %v); writes: %q", key, i, s.Name, j, ok, f.writes)
			}
		}
		for _, p := range want.Policies {
			if j, ok := lastWrite["policy "+p.Name]; !ok || j > i {
				t.Errorf("record of %s written (#%d) before policy %s (#%d); writes: %q", key, i, p.Name, j, f.writes)
			}
		}
	}
	for _, p := range want.Pods {
		if _, ok := f.pods[p.Key()]; !ok {
			t.Errorf("no record of %s after the second sync", p.Key())
		}
	}
}

// A set whose pods would pass romanad's limits keeps its addresses only
// (and says so); one that fits keeps its pods.
func TestFitSet(t *testing.T) {
	var problems []string
	problem := func(f string, a ...any) { problems = append(problems, f) }
	small := api.AddressSet{Name: "k8s.s", Pods: []string{"a/b"}}
	if got := fitSet(small, problem); !slices.Equal(got.Pods, small.Pods) || len(problems) != 0 {
		t.Errorf("small set: %+v, problems %q", got, problems)
	}
	big := api.AddressSet{Name: "k8s.big", Addresses: []netipAddr{mustAddr("10.0.0.1")}}
	for i := range 20000 {
		big.Pods = append(big.Pods, "namespace-with-a-long-name/pod-with-a-long-name-"+strings.Repeat("x", 20)+strconv.Itoa(i))
	}
	got := fitSet(big, problem)
	if got.Pods != nil || len(got.Addresses) != 1 || len(problems) != 1 {
		t.Errorf("big set: %d pods, %d addresses, problems %q; want no pods, its address, one problem", len(got.Pods), len(got.Addresses), problems)
	}
}
