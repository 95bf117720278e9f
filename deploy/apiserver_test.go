package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/romana/romana/kubetest"
)

// TestApplyToAPIServer applies every manifest to a real kube-apiserver
// (server-side apply, as `kubectl apply --server-side`), reads each object
// back and checks that what the manifest says is what the server holds
// (defaults may add fields, nothing may differ), then asks the server's
// RBAC what each component's ServiceAccount may do.
func TestApplyToAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Clientset.Discovery()))

	m, err := Manifests()
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range split(m) {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatal(err)
		}
		gvk := u.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		ri := c.Dynamic.Resource(mapping.Resource)
		var res interface {
			Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*unstructured.Unstructured, error)
			Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
		} = ri
		if u.GetNamespace() != "" {
			res = ri.Namespace(u.GetNamespace())
		}
		js, err := u.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		force := true
		if _, err := res.Patch(ctx, u.GetName(), types.ApplyPatchType, js, metav1.PatchOptions{FieldManager: "romana-deploy-test", Force: &force}); err != nil {
			t.Fatalf("apply %s %s: %v", gvk.Kind, u.GetName(), err)
		}
		got, err := res.Get(ctx, u.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("read back %s %s: %v", gvk.Kind, u.GetName(), err)
		}
		want := u.DeepCopy().Object
		delete(want, "status") // the server's to write (the CRD's manifest has an empty one)
		if d := subset(want, got.Object, gvk.Kind+"/"+u.GetName()); d != "" {
			t.Errorf("%s %s as the server holds it differs from the manifest: %s", gvk.Kind, u.GetName(), d)
		}
	}

	// Each pod template makes a Pod the apiserver admits (dry run): its
	// ServiceAccount exists, PodSecurity (the namespace's level), Priority
	// (the priority classes) and validation (volumes, propagation,
	// capabilities) agree.
	for _, w := range workloads {
		var u unstructured.Unstructured
		for _, doc := range split(m) {
			var o unstructured.Unstructured
			if err := yaml.Unmarshal(doc, &o.Object); err == nil && o.GetKind() == w.kind && o.GetName() == w.name {
				u = o
			}
		}
		tmpl, ok, err := unstructured.NestedMap(u.Object, "spec", "template")
		if !ok || err != nil {
			t.Fatalf("%s %s: no pod template: %v", w.kind, w.name, err)
		}
		var pod corev1.Pod
		js, _ := json.Marshal(tmpl)
		if err := json.Unmarshal(js, &pod); err != nil {
			t.Fatal(err)
		}
		pod.Name = w.name + "-dry-run"
		pod.Spec.NodeName = "node-a"
		if _, err := c.Clientset.CoreV1().Pods("romana-system").Create(ctx, &pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Errorf("a Pod of %s %s is not admitted: %v", w.kind, w.name, err)
		}
	}

	// What each ServiceAccount may do, by the server's own RBAC decision.
	read := map[string]bool{"get": true, "list": true, "watch": true}
	kubeReads := map[schema.GroupResource]bool{
		{Resource: "nodes"}: true, {Resource: "namespaces"}: true, {Resource: "pods"}: true,
		{Group: "networking.k8s.io", Resource: "networkpolicies"}:               true,
		{Group: "policy.networking.k8s.io", Resource: "clusternetworkpolicies"}: true,
	}
	resources := []schema.GroupResource{
		{Resource: "nodes"}, {Resource: "namespaces"}, {Resource: "pods"}, {Resource: "secrets"}, {Resource: "configmaps"},
		{Resource: "services"}, {Resource: "serviceaccounts"},
		{Group: "networking.k8s.io", Resource: "networkpolicies"},
		{Group: "policy.networking.k8s.io", Resource: "clusternetworkpolicies"},
		{Group: "apps", Resource: "daemonsets"}, {Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
		{Group: "authentication.k8s.io", Resource: "tokenreviews"},
	}
	verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
	bootstrap := map[string]bool{"list nodes /": true, "list nodes /romana-system": true, "create secrets /romana-system": true}
	for _, sa := range []string{"romana-kube", "romana-agent", "romanad", "romana-bootstrap"} {
		user := "system:serviceaccount:romana-system:" + sa
		for _, gr := range resources {
			for _, verb := range verbs {
				for _, ns := range []string{"", "romana-system"} {
					sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
						User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:romana-system", "system:authenticated"},
						ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: gr.Group, Resource: gr.Resource},
					}}
					r, err := c.Clientset.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
					if err != nil {
						t.Fatal(err)
					}
					want := sa == "romana-kube" && read[verb] && kubeReads[gr] ||
						sa == "romana-bootstrap" && bootstrap[verb+" "+gr.String()+" /"+ns]
					if r.Status.Allowed != want {
						t.Errorf("%s %s %s (namespace %q): allowed %v, want %v", sa, verb, gr, ns, r.Status.Allowed, want)
					}
				}
			}
		}
	}
	// Secrets by name: the bootstrap Job's own two only; the agent may
	// get romana-join and nothing else.
	for _, x := range []struct {
		sa, verb, name string
		want           bool
	}{{"romana-bootstrap", "get", "romana-join", true}, {"romana-bootstrap", "update", "romana-kube", true}, {"romana-bootstrap", "get", "other", false},
		{"romana-bootstrap", "delete", "romana-join", false}, {"romana-bootstrap", "patch", "romana-join", false},
		{"romana-agent", "get", "romana-join", true}, {"romana-agent", "get", "romana-kube", false}, {"romana-agent", "update", "romana-join", false},
		{"romana-agent", "watch", "romana-join", false}, {"romana-kube", "get", "romana-join", false}} {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: "system:serviceaccount:romana-system:" + x.sa, Groups: []string{"system:serviceaccounts", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: "romana-system", Verb: x.verb, Resource: "secrets", Name: x.name},
		}}
		r, err := c.Clientset.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != x.want {
			t.Errorf("%s %s secret %s: allowed %v, want %v", x.sa, x.verb, x.name, r.Status.Allowed, x.want)
		}
	}
}

// subset returns "" when every field of want is in got with the same
// value (lists: the same length, element by element), else the first
// difference.
func subset(want, got any, at string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: %T on the server, want a map", at, got)
		}
		for k, v := range w {
			if d := subset(v, g[k], at+"."+k); d != "" {
				return d
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: %v on the server, want %v", at, got, want)
		}
		for i := range w {
			if d := subset(w[i], g[i], fmt.Sprintf("%s[%d]", at, i)); d != "" {
				return d
			}
		}
	default:
		if got == nil && (want == false || want == "" || want == int64(0) || want == float64(0)) {
			return "" // a zero value the server leaves out (omitempty)
		}
		if fmt.Sprint(want) != fmt.Sprint(got) || (want == nil) != (got == nil) {
			return fmt.Sprintf("%s: %v on the server, want %v", at, got, want)
		}
	}
	return ""
}
