package kubetest

import (
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"
	npinformers "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"
)

// seen is how long a test waits for an informer to deliver an event.
const seen = 30 * time.Second

// The objects Romana's controller reads, created with client-go against
// the real apiserver and read back; informers see their updates.
func TestClusterObjects(t *testing.T) {
	c := Start(t)
	ctx := t.Context()
	cs := c.Clientset

	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "host-a", Labels: map[string]string{"topology.kubernetes.io/zone": "rack1"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.0.2.11"},
		}},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gotNode, err := cs.CoreV1().Nodes().Get(ctx, "host-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gotNode.Labels["topology.kubernetes.io/zone"] != "rack1" || len(gotNode.Status.Addresses) != 1 || gotNode.Status.Addresses[0].Address != "192.0.2.11" {
		t.Errorf("node read back: labels %v, addresses %v", gotNode.Labels, gotNode.Status.Addresses)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"tenant": "blue"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Created right after its namespace: the ServiceAccount admission
	// plugin waits for the "default" ServiceAccount kubetest creates.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "x", Labels: map[string]string{"pod": "a"}},
		Spec: corev1.PodSpec{
			NodeName: "host-a",
			Containers: []corev1.Container{{
				Name:  "c",
				Image: "agnhost",
				Ports: []corev1.ContainerPort{{Name: "serve-80", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods("x").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// What a kubelet would report once the CNI plugin gave the pod an address.
	gotPod, err := cs.CoreV1().Pods("x").Get(ctx, "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gotPod.Status.PodIP = "10.112.0.5"
	gotPod.Status.PodIPs = []corev1.PodIP{{IP: "10.112.0.5"}}
	if _, err := cs.CoreV1().Pods("x").UpdateStatus(ctx, gotPod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	gotPod, err = cs.CoreV1().Pods("x").Get(ctx, "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gotPod.Spec.NodeName != "host-a" || gotPod.Status.PodIP != "10.112.0.5" || gotPod.Spec.Containers[0].Ports[0].Name != "serve-80" {
		t.Errorf("pod read back: node %q, IP %q, ports %v", gotPod.Spec.NodeName, gotPod.Status.PodIP, gotPod.Spec.Containers[0].Ports)
	}
	if gotPod.Spec.ServiceAccountName != "default" {
		t.Errorf("pod's service account %q, want default (admission)", gotPod.Spec.ServiceAccountName)
	}

	port := intstr.FromInt32(80)
	tcp := corev1.ProtocolTCP
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-blue", Namespace: "x"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "blue"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}
	if _, err := cs.NetworkingV1().NetworkPolicies("x").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gotNP, err := cs.NetworkingV1().NetworkPolicies("x").Get(ctx, "allow-blue", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The apiserver defaults policyTypes from the rules.
	if fmt.Sprint(gotNP.Spec.PolicyTypes) != "[Ingress]" || gotNP.Spec.Ingress[0].Ports[0].Port.IntValue() != 80 {
		t.Errorf("NetworkPolicy read back: policyTypes %v, ingress %+v", gotNP.Spec.PolicyTypes, gotNP.Spec.Ingress)
	}

	cnp := &v1alpha2.ClusterNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "isolate-blue"},
		Spec: v1alpha2.ClusterNetworkPolicySpec{
			Tier:     v1alpha2.AdminTier,
			Priority: 10,
			Subject:  v1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "blue"}}},
			Ingress: []v1alpha2.ClusterNetworkPolicyIngressRule{{
				Name:   "deny-others",
				Action: v1alpha2.ClusterNetworkPolicyRuleActionDeny,
				From: []v1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "tenant", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"blue"}},
				}}}},
				Protocols: []v1alpha2.ClusterNetworkPolicyProtocol{{TCP: &v1alpha2.ClusterNetworkPolicyProtocolTCP{
					DestinationPort: &v1alpha2.Port{Range: &v1alpha2.PortRange{Start: 80, End: 81}},
				}}},
			}},
		},
	}
	cnps := c.Policy.PolicyV1alpha2().ClusterNetworkPolicies()
	if _, err := cnps.Create(ctx, cnp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gotCNP, err := cnps.Get(ctx, "isolate-blue", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gotCNP.Spec.Tier != v1alpha2.AdminTier || gotCNP.Spec.Priority != 10 || gotCNP.Spec.Ingress[0].Protocols[0].TCP.DestinationPort.Range.End != 81 {
		t.Errorf("ClusterNetworkPolicy read back: %+v", gotCNP.Spec)
	}
	// The CRD's validation is in force: a priority out of 0..1000 is refused.
	bad := cnp.DeepCopy()
	bad.Name, bad.Spec.Priority = "bad", 1001
	if _, err := cnps.Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("ClusterNetworkPolicy with priority 1001: got %v, want Invalid", err)
	}

	// Informers see updates: a pod's label change, a policy's change.
	f := informers.NewSharedInformerFactory(cs, 0)
	podUpdates := make(chan *corev1.Pod, 10)
	if _, err := f.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { podUpdates <- obj.(*corev1.Pod) },
	}); err != nil {
		t.Fatal(err)
	}
	nf := npinformers.NewSharedInformerFactory(c.Policy, 0)
	cnpUpdates := make(chan *v1alpha2.ClusterNetworkPolicy, 10)
	if _, err := nf.Policy().V1alpha2().ClusterNetworkPolicies().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { cnpUpdates <- obj.(*v1alpha2.ClusterNetworkPolicy) },
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	f.Start(stop)
	nf.Start(stop)
	t.Cleanup(func() { close(stop); f.Shutdown(); nf.Shutdown() })
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("informer %v did not sync", typ)
		}
	}
	for typ, ok := range nf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("informer %v did not sync", typ)
		}
	}

	gotPod.Labels["role"] = "web"
	if _, err := cs.CoreV1().Pods("x").Update(ctx, gotPod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-podUpdates:
		if p.Name != "a" || p.Labels["role"] != "web" {
			t.Errorf("pod update seen: %s/%s labels %v", p.Namespace, p.Name, p.Labels)
		}
	case <-time.After(seen):
		t.Fatalf("the pod informer saw no update in %v", seen)
	}

	gotCNP.Spec.Ingress[0].Action = v1alpha2.ClusterNetworkPolicyRuleActionPass
	if _, err := cnps.Update(ctx, gotCNP, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-cnpUpdates:
		if p.Name != "isolate-blue" || p.Spec.Ingress[0].Action != v1alpha2.ClusterNetworkPolicyRuleActionPass {
			t.Errorf("ClusterNetworkPolicy update seen: %s %+v", p.Name, p.Spec.Ingress)
		}
	case <-time.After(seen):
		t.Fatalf("the ClusterNetworkPolicy informer saw no update in %v", seen)
	}
}

// RBAC is in force: an identity without a binding may not read pods, and
// may once a role grants it; the kubeconfig file works as the admin.
func TestClusterAuthorization(t *testing.T) {
	c := Start(t)
	ctx := t.Context()
	const sa = "system:serviceaccount:kube-system:romana"
	as, err := kubernetes.NewForConfig(c.As(sa, "system:serviceaccounts", "system:authenticated"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list pods as %s without a binding: got %v, want Forbidden", sa, err)
	}
	if _, err := c.Clientset.RbacV1().ClusterRoles().Create(ctx, podReader(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clientset.RbacV1().ClusterRoleBindings().Create(ctx, podReaderBinding(sa), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The authorizer reads bindings from its informer: wait for it.
	if err := wait(ctx, "pods readable as "+sa, func() error {
		_, err := as.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := as.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "y"}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("create a namespace as a pod reader: got %v, want Forbidden", err)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := kc.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version through %s: %v", c.Kubeconfig, err)
	}
	if v.GitVersion != Version {
		t.Errorf("server version %s, want %s", v.GitVersion, Version)
	}
}

// The Makefile builds the version Start looks for.
func TestMakefileBuildsVersion(t *testing.T) {
	b, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^KUBE_VERSION \?= (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no `KUBE_VERSION ?= ...` line in the Makefile")
	}
	if string(m[1]) != Version {
		t.Errorf("Makefile's KUBE_VERSION %s, kubetest.Version %s", m[1], Version)
	}
}

// A binary named by $ROMANA_KUBE_APISERVER must exist (Start then fails
// rather than skips).
func TestBinaryNamedMustExist(t *testing.T) {
	t.Setenv(EnvBinary, "/nonexistent/kube-apiserver")
	if _, err := Binary(); err == nil {
		t.Fatal("Binary() with a missing $ROMANA_KUBE_APISERVER: no error")
	}
	dir := t.TempDir()
	t.Setenv(EnvBinary, dir)
	if _, err := Binary(); err == nil {
		t.Fatal("Binary() with a directory: no error")
	}
}

// The CRD comes from the module go.mod requires.
func TestCNPCRDFromModule(t *testing.T) {
	b, err := cnpCRD()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^  name: clusternetworkpolicies\.policy\.networking\.k8s\.io$`).Match(b) ||
		!regexp.MustCompile(`(?m)^\s+policy\.networking\.k8s\.io/bundle-version: v0\.3\.0$`).Match(b) {
		t.Errorf("%s is not the v0.3.0 ClusterNetworkPolicy CRD", CNPCRDPath)
	}
}

func podReader() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}},
	}
}

func podReaderBinding(user string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}},
	}
}
