package server_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/server"
	"github.com/romana/romana/server/servertest"
)

// TestPodsCRUD: every verb of /v1/pods through the client, the namespace
// filter, and the screening of bad records.
func TestPodsCRUD(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	pods := []api.Pod{
		{Namespace: "ns1", Name: "web-0", UID: "u1", Tenant: "acme", Segment: "web"},
		{Namespace: "ns1", Name: "db-0.x", Tenant: "acme", Segment: "db"},
		{Namespace: "ns2", Name: "web-0", Tenant: "globex", Segment: "default"},
	}
	for _, p := range pods {
		if got, err := c.PutPod(ctx, p); err != nil || got != p {
			t.Fatalf("PutPod(%+v) = %+v, %v", p, got, err)
		}
	}
	body := `{"namespace":"ns1","name":"web-0","uid":"u1","tenant":"acme","segment":"web"}`
	if st, _, b := rawString(t, in, "PUT", "/v1/pods/ns1/web-0", body); st != http.StatusOK {
		t.Errorf("PUT an identical pod: %d %s, want 200", st, b)
	}
	if st, _, b := rawString(t, in, "PUT", "/v1/pods/ns3/p", `{"tenant":"t","segment":"s"}`); st != http.StatusCreated {
		t.Errorf("PUT a pod named by its path only: %d %s, want 201", st, b)
	}
	if got, err := c.GetPod(ctx, "ns2", "web-0"); err != nil || got != pods[2] {
		t.Errorf("GetPod = %+v, %v", got, err)
	}
	all, err := c.ListPods(ctx, "")
	if err != nil || len(all) != 4 {
		t.Errorf("ListPods() = %+v, %v; want 4", all, err)
	}
	ns1, err := c.ListPods(ctx, "ns1")
	if err != nil || !reflect.DeepEqual(ns1, []api.Pod{pods[1], pods[0]}) {
		t.Errorf("ListPods(ns1) = %+v, %v", ns1, err)
	}
	// "ns" is a prefix of "ns1", not a namespace with pods.
	if none, err := c.ListPods(ctx, "ns"); err != nil || len(none) != 0 {
		t.Errorf("ListPods(ns) = %+v, %v; want none", none, err)
	}
	if err := c.RemovePod(ctx, "ns1", "web-0"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePod(ctx, "ns1", "web-0"); !api.IsNotFound(err) {
		t.Errorf("second remove: %v, want NotFound", err)
	}
	if _, err := c.GetPod(ctx, "ns1", "web-0"); !api.IsNotFound(err) {
		t.Errorf("get removed: %v, want NotFound", err)
	}

	before := readStore(t, in)
	for _, tc := range []struct{ method, path, body, want string }{
		{"PUT", "/v1/pods/NS/p", `{"tenant":"t","segment":"s"}`, `invalid namespace name "NS"`},
		{"PUT", "/v1/pods/ns/p_1", `{"tenant":"t","segment":"s"}`, `invalid pod name "p_1"`},
		{"PUT", "/v1/pods/ns/p", `{"segment":"s"}`, `pod ns/p: tenant is required`},
		{"PUT", "/v1/pods/ns/p", `{"tenant":"t"}`, `pod ns/p: segment is required`},
		{"PUT", "/v1/pods/ns/p", `{"tenant":"T","segment":"s"}`, `invalid tenant name "T"`},
		{"PUT", "/v1/pods/ns/p", `{"namespace":"ns","name":"q","tenant":"t","segment":"s"}`, `pod body is ns/q but the path names ns/p`},
		{"PUT", "/v1/pods/ns/p", `{"tenant":"t","segment":"s","labels":{}}`, `unknown field "labels"`},
		{"GET", "/v1/pods?ns=x", ``, `unknown query parameter "ns"`},
		{"GET", "/v1/pods?namespace=X", ``, `invalid namespace name "X"`},
	} {
		st, ae, b := rawString(t, in, tc.method, tc.path, tc.body)
		if st != http.StatusBadRequest || ae == nil || !strings.Contains(ae.Message, tc.want) {
			t.Errorf("%s %s %s: %d %s; want 400 mentioning %q", tc.method, tc.path, tc.body, st, b, tc.want)
		}
	}
	if after := readStore(t, in); !after.equal(before) {
		t.Errorf("refused pod writes changed the store")
	}
}

// TestAllocatePod is allocation for a Kubernetes pod: tenant and segment
// come from the pod's record, whether it is there already or written
// while the allocation waits; without a record the allocation fails after
// the bound with a retriable error naming the pod.
func TestAllocatePod(t *testing.T) {
	in := servertest.Start(t, servertest.WithServerConfig(func(c *server.Config) { c.PodWait = time.Minute }))
	c := in.Client
	ctx := context.Background()
	populate(t, c)
	k8s := func(ns, pod string, attrs map[string]string) map[string]string {
		out := maps.Clone(attrs)
		if out == nil {
			out = map[string]string{}
		}
		out[api.AttrK8sNamespace], out[api.AttrK8sPod] = ns, pod
		return out
	}

	// The record is there.
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "shop", Name: "web-1", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	req := api.AddressRequest{Name: "c1:eth0", Host: "h0", Pod: "shop/web-1", Attrs: map[string]string{"owner": "romana-cni"}}
	a, err := c.Allocate(ctx, req)
	if err != nil || a.Tenant != "acme" || a.Segment != "web" || !reflect.DeepEqual(a.Attrs, k8s("shop", "web-1", req.Attrs)) {
		t.Fatalf("Allocate(%+v) = %+v, %v", req, a, err)
	}
	// A retried ADD gets the same address, also once the record is gone.
	if err := c.RemovePod(ctx, "shop", "web-1"); err != nil {
		t.Fatal(err)
	}
	if again, err := c.Allocate(ctx, req); err != nil || again.IP != a.IP {
		t.Errorf("retry without the record: %+v, %v; want %s", again, err, a.IP)
	}

	// Explicit tenant and segment win; the pod's attributes are still set,
	// and the record is still required (it comes after the pod's set
	// memberships).
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "other", Name: "p", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	ex := api.AddressRequest{Name: "c2:eth0", Host: "h1", Tenant: "globex", Segment: "db", Pod: "other/p"}
	if a, err := c.Allocate(ctx, ex); err != nil || a.Tenant != "globex" || a.Segment != "db" || !reflect.DeepEqual(a.Attrs, k8s("other", "p", nil)) {
		t.Errorf("Allocate(%+v) = %+v, %v", ex, a, err)
	}

	// An explicit segment wins; the tenant comes from the record.
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "shop", Name: "mix", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	mix := api.AddressRequest{Name: "c4:eth0", Host: "h3", Segment: "db", Pod: "shop/mix"}
	if a, err := c.Allocate(ctx, mix); err != nil || a.Tenant != "acme" || a.Segment != "db" {
		t.Errorf("Allocate(%+v) = %+v, %v; want acme/db", mix, a, err)
	}

	// The record arrives while the allocation waits for it.
	type result struct {
		a   api.Address
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := c.Allocate(ctx, api.AddressRequest{Name: "c3:eth0", Host: "h2", Pod: "shop/db-1"})
		done <- result{a, err}
	}()
	expect.Eventually(t, "the allocation waits for the pod record", 30*time.Second, func() error {
		if n := in.Registry().Stats().PodWaits; n != 1 {
			return fmt.Errorf("%d waiting", n)
		}
		return nil
	})
	select {
	case r := <-done:
		t.Fatalf("the allocation ended before the record was written: %+v, %v", r.a, r.err)
	default:
	}
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "shop", Name: "db-1", Tenant: "globex", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.a.Tenant != "globex" || r.a.Segment != "web" || r.a.Host != "h2" || !reflect.DeepEqual(r.a.Attrs, k8s("shop", "db-1", nil)) {
		t.Errorf("allocation after the record arrived: %+v, %v", r.a, r.err)
	}
	if n := in.Registry().Stats().PodWaits; n != 0 {
		t.Errorf("%d allocations still waiting", n)
	}

	// The k8s.* attributes are romanad's: a request giving them (with or
	// without a pod) is refused, and allocates nothing.
	for _, r := range []api.AddressRequest{
		{Name: "forged:eth0", Host: "h0", Tenant: "acme", Segment: "web", Attrs: map[string]string{api.AttrK8sNamespace: "shop", api.AttrK8sPod: "web-1"}},
		{Name: "forged:eth0", Host: "h0", Pod: "shop/web-1", Attrs: map[string]string{api.AttrK8sUID: "u"}},
	} {
		if _, err := c.Allocate(ctx, r); api.ReasonOf(err) != api.ReasonInvalid || !strings.Contains(err.Error(), "set by romanad") {
			t.Errorf("Allocate with attrs %v: %v; want Invalid", r.Attrs, err)
		}
	}
	if _, err := c.GetAddress(ctx, "forged:eth0"); !api.IsNotFound(err) {
		t.Errorf("a forged request allocated: %v", err)
	}

	// Bad pod keys are refused at once.
	for _, pod := range []string{"web-1", "shop/", "/web-1", "Shop/web-1", "shop/web_1"} {
		_, err := c.Allocate(ctx, api.AddressRequest{Name: "bad:eth0", Host: "h0", Pod: pod})
		if api.ReasonOf(err) != api.ReasonInvalid {
			t.Errorf("pod %q: %v, want Invalid", pod, err)
		}
	}
}

// TestAllocatePodAbsent: no record within the bound is a retriable
// Unavailable error that names the pod and the controller, and allocates
// nothing.
func TestAllocatePodAbsent(t *testing.T) {
	in := servertest.Start(t, servertest.WithServerConfig(func(c *server.Config) { c.PodWait = 100 * time.Millisecond }))
	c := in.Client
	ctx := context.Background()
	populate(t, c)
	_, err := c.Allocate(ctx, api.AddressRequest{Name: "c9:eth0", Host: "h0", Pod: "shop/ghost"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Reason != api.ReasonUnavailable || ae.Status != http.StatusServiceUnavailable ||
		!strings.Contains(ae.Message, "no pod record for shop/ghost") || !strings.Contains(ae.Message, "is romana-kube running?") {
		t.Fatalf("allocation for a pod without a record: %v; want 503 Unavailable naming the pod", err)
	}
	if _, err := c.GetAddress(ctx, "c9:eth0"); !api.IsNotFound(err) {
		t.Errorf("an address was allocated: %v", err)
	}
	if n := in.Registry().Stats().PodWaits; n != 0 {
		t.Errorf("%d allocations still waiting", n)
	}
}

// TestAllocatePodUID: an allocation naming the pod's UID (the kubelet's
// K8S_POD_UID) waits past a record of an earlier pod of the same name
// until the controller rewrites it, so the address never gets the earlier
// pod's tenant, segment or set memberships; without a rewrite it fails,
// retriable, naming the pod.
func TestAllocatePodUID(t *testing.T) {
	in := servertest.Start(t, servertest.WithServerConfig(func(c *server.Config) { c.PodWait = time.Minute }))
	c := in.Client
	ctx := context.Background()
	populate(t, c)
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "shop", Name: "web-0", UID: "old", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		a   api.Address
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := c.Allocate(ctx, api.AddressRequest{Name: "c1:eth0", Host: "h0", Pod: "shop/web-0", PodUID: "new"})
		done <- result{a, err}
	}()
	expect.Eventually(t, "the allocation waits past the earlier pod's record", 30*time.Second, func() error {
		if n := in.Registry().Stats().PodWaits; n != 1 {
			return fmt.Errorf("%d waiting", n)
		}
		return nil
	})
	select {
	case r := <-done:
		t.Fatalf("allocated with the earlier pod's record: %+v, %v", r.a, r.err)
	default:
	}
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "shop", Name: "web-0", UID: "new", Tenant: "globex", Segment: "db"}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.a.Tenant != "globex" || r.a.Segment != "db" || r.a.Attrs[api.AttrK8sUID] != "new" {
		t.Errorf("allocation after the rewrite: %+v, %v; want globex/db, uid new", r.a, r.err)
	}
	// The record's UID matches, or the record has none: at once.
	if a, err := c.Allocate(ctx, api.AddressRequest{Name: "c2:eth0", Host: "h0", Pod: "shop/web-0", PodUID: "new"}); err != nil || a.Tenant != "globex" {
		t.Errorf("matching uid: %+v, %v", a, err)
	}
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "shop", Name: "nouid", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	if a, err := c.Allocate(ctx, api.AddressRequest{Name: "c3:eth0", Host: "h0", Pod: "shop/nouid", PodUID: "any"}); err != nil || a.Tenant != "acme" {
		t.Errorf("record without a uid: %+v, %v", a, err)
	}
}

// TestAllocatePodUIDStale: a record that stays of another pod fails the
// allocation after the bound, retriable, and allocates nothing.
func TestAllocatePodUIDStale(t *testing.T) {
	in := servertest.Start(t, servertest.WithServerConfig(func(c *server.Config) { c.PodWait = 100 * time.Millisecond }))
	c := in.Client
	ctx := context.Background()
	populate(t, c)
	if _, err := c.PutPod(ctx, api.Pod{Namespace: "shop", Name: "web-0", UID: "old", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Allocate(ctx, api.AddressRequest{Name: "c9:eth0", Host: "h0", Pod: "shop/web-0", PodUID: "new"})
	if api.ReasonOf(err) != api.ReasonUnavailable || !strings.Contains(err.Error(), "of an earlier pod (not uid new)") {
		t.Fatalf("allocation against a stale record: %v; want Unavailable naming the earlier pod", err)
	}
	if _, err := c.GetAddress(ctx, "c9:eth0"); !api.IsNotFound(err) {
		t.Errorf("an address was allocated: %v", err)
	}
}
