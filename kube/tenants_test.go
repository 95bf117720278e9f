package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/romana/romana/api"
)

// A deleted namespace's tenant goes once its pods' addresses are released,
// segments first; it waits (and is retried) while romanad refuses; a
// namespace re-created meanwhile keeps it; its id is reused; an operator's
// tenant stays whatever the namespaces.
func TestReconcilerRemovesTenantsOfDeletedNamespaces(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.tenants["ops"] = api.Tenant{Name: "ops", ID: 7, Isolation: api.IsolationTenant}
	f.segments[[2]string{"ops", "default"}] = api.Segment{Tenant: "ops", Name: "default"}
	const retry = 10 * time.Second
	rc := &Reconciler{R: f, Prefix: DefaultPrefix, TenantRetry: retry}
	now := time.Unix(1000, 0)
	st := State{
		Nodes:      []corev1.Node{node("n1", "192.0.2.11", nil)},
		Namespaces: []corev1.Namespace{namespace("lab", nil), namespace("ops", nil), namespace("shop", nil)},
		Pods:       []corev1.Pod{pod("lab", "x", map[string]string{DefaultSegmentLabel: "db"}), pod("shop", "web", nil)},
	}
	sync := func(at time.Time) time.Time {
		t.Helper()
		next, err := rc.Sync(ctx, Desire(Config{}, st, nil), at)
		if err != nil {
			t.Fatal(err)
		}
		return next
	}
	sync(now)
	lab := f.tenants["lab"]
	if lab.ID != 0 || f.tenants["shop"].ID != 1 {
		t.Fatalf("tenants after the first sync:\n%s", f.dump())
	}
	f.addPodAddress("lab-x:eth0", "n1", "10.1.0.5", "lab", "db")

	// lab and ops deleted; lab/x terminating: its address is not released.
	st.Namespaces = []corev1.Namespace{namespace("shop", nil)}
	st.Pods = st.Pods[1:]
	next := sync(now)
	if _, ok := f.pods["lab/x"]; ok {
		t.Errorf("pod record lab/x kept")
	}
	if _, ok := f.tenants["lab"]; !ok {
		t.Fatalf("tenant lab removed while its pod's address is held:\n%s", f.dump())
	}
	if f.segments[[2]string{"lab", "db"}] == (api.Segment{}) {
		t.Errorf("segment lab/db removed while it holds an address")
	}
	if _, ok := f.segments[[2]string{"lab", "default"}]; ok {
		t.Errorf("segment lab/default (no address) kept")
	}
	if w := rc.Waiting()["lab"]; !strings.Contains(w, "lab/db still has 1 allocated address") {
		t.Errorf("Waiting()[lab] = %q, want the segment's refusal", w)
	}
	if !next.Equal(now.Add(retry)) {
		t.Errorf("next %v, want the retry %v", next, now.Add(retry))
	}
	// Syncs before the retry do not ask romanad again (a segment's removal
	// reads every address).
	before := f.count["RemoveSegment"]
	if next := sync(now.Add(time.Second)); !next.Equal(now.Add(retry)) {
		t.Errorf("next %v before the retry, want %v", next, now.Add(retry))
	}
	if f.count["RemoveSegment"] != before {
		t.Errorf("RemoveSegment called before the retry was due")
	}
	// Still held at the retry: still waiting.
	sync(now.Add(retry))
	if _, ok := f.tenants["lab"]; !ok || f.count["RemoveSegment"] == before {
		t.Fatalf("at the retry: RemoveSegment calls %d (were %d):\n%s", f.count["RemoveSegment"], before, f.dump())
	}

	// lab re-created while the old pod still terminates: the tenant stays
	// (same id), no longer waiting; its segment comes back.
	st.Namespaces = append(st.Namespaces, namespace("lab", nil))
	st.Pods = append(st.Pods, pod("lab", "y", nil))
	sync(now.Add(retry + time.Second))
	if got := f.tenants["lab"]; got.ID != lab.ID {
		t.Errorf("re-created namespace lab: tenant %+v, want id %d", got, lab.ID)
	}
	if _, ok := f.segments[[2]string{"lab", "default"}]; !ok {
		t.Errorf("segment lab/default not re-added")
	}
	if len(rc.Waiting()) != 0 {
		t.Errorf("waiting %v after lab came back", rc.Waiting())
	}

	// Deleted again; the old pod's CNI DEL releases its address: the next
	// sync removes the segments, then the tenant.
	st.Namespaces, st.Pods = st.Namespaces[:1], st.Pods[:1]
	delete(f.addrs, "lab-x:eth0")
	sync(now.Add(2 * retry))
	if _, ok := f.tenants["lab"]; ok {
		t.Fatalf("tenant lab kept after its address was released:\n%s", f.dump())
	}
	for k := range f.segments {
		if k[0] == "lab" {
			t.Errorf("segment %v kept", k)
		}
	}
	if len(rc.Waiting()) != 0 {
		t.Errorf("waiting %v", rc.Waiting())
	}
	// The operator's tenant and its segment stay.
	if ops, ok := f.tenants["ops"]; !ok || ops.ID != 7 || f.segments[[2]string{"ops", "default"}] == (api.Segment{}) {
		t.Errorf("the operator's tenant ops touched:\n%s", f.dump())
	}
	if f.count["RemoveTenant"] != 1 {
		t.Errorf("RemoveTenant called %d times, want once (lab)", f.count["RemoveTenant"])
	}

	// A new namespace takes lab's id.
	st.Namespaces = append(st.Namespaces, namespace("next", nil))
	sync(now.Add(2 * retry))
	if got := f.tenants["next"].ID; got != lab.ID {
		t.Errorf("tenant next has id %d, want lab's %d", got, lab.ID)
	}

	// A restarted controller (new reconciler) with nothing to do writes
	// nothing.
	rc2 := &Reconciler{R: f, Prefix: DefaultPrefix}
	if _, err := rc2.Sync(ctx, Desire(Config{}, st, nil), now); err != nil || rc2.Stats.Writes+rc2.Stats.Deletes != 0 {
		t.Errorf("restarted reconciler: %+v, %v", rc2.Stats, err)
	}
}

// Namespaces that come and go, each with a pod, never use more tenant ids
// than live at once: 200 of them, two at a time, in a plan whose tenant
// field would hold 16.
func TestReconcilerNamespaceChurnReusesTenantIDs(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	rc := &Reconciler{R: f, Prefix: DefaultPrefix}
	now := time.Unix(1000, 0)
	st := State{Nodes: []corev1.Node{node("n1", "192.0.2.11", nil)}, Namespaces: []corev1.Namespace{namespace("default", nil)}}
	var maxID uint64
	for i := range 200 {
		name := fmt.Sprintf("e2e-%d", i)
		st.Namespaces = append(st.Namespaces, namespace(name, nil))
		st.Pods = append(st.Pods, pod(name, "p", nil))
		if _, err := rc.Sync(ctx, Desire(Config{}, st, nil), now); err != nil {
			t.Fatal(err)
		}
		id := f.tenants[name].ID
		maxID = max(maxID, id)
		f.addPodAddress(name+":eth0", "n1", "10.1.0.5", name, DefaultSegment)
		if len(st.Namespaces) == 3 {
			// The oldest goes: its pod's address released, then it.
			old := st.Namespaces[1].Name
			delete(f.addrs, old+":eth0")
			st.Namespaces = append(st.Namespaces[:1], st.Namespaces[2:]...)
			st.Pods = st.Pods[1:]
			if _, err := rc.Sync(ctx, Desire(Config{}, st, nil), now); err != nil {
				t.Fatal(err)
			}
			if _, ok := f.tenants[old]; ok {
				t.Fatalf("tenant %s kept:\n%s", old, f.dump())
			}
		}
	}
	if maxID > 2 {
		t.Errorf("largest tenant id %d for 3 live namespaces at most", maxID)
	}
	if len(f.tenants) != 2 {
		t.Errorf("tenants left:\n%s", f.dump())
	}
}

// A removal romanad fails (not a refusal) is an error of the sync and is
// retried; a tenant made before the controller labelled its own is left.
func TestReconcilerTenantRemovalErrors(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.tenants["legacy"] = api.Tenant{Name: "legacy", ID: 3, Isolation: api.IsolationNone}
	rc := &Reconciler{R: f, Prefix: DefaultPrefix, TenantRetry: time.Second}
	now := time.Unix(1000, 0)
	st := State{Namespaces: []corev1.Namespace{namespace("a", nil)}}
	if _, err := rc.Sync(ctx, Desire(Config{}, st, nil), now); err != nil {
		t.Fatal(err)
	}
	st.Namespaces = nil
	f.failNext["RemoveTenant"] = api.Errorf(api.ReasonUnavailable, "store down")
	if _, err := rc.Sync(ctx, Desire(Config{}, st, nil), now); err == nil || !strings.Contains(err.Error(), "remove tenant a of deleted namespace(s): store down") {
		t.Fatalf("err %v", err)
	}
	if _, err := rc.Sync(ctx, Desire(Config{}, st, nil), now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.tenants["a"]; ok {
		t.Errorf("tenant a kept after the retry:\n%s", f.dump())
	}
	if _, ok := f.tenants["legacy"]; !ok {
		t.Errorf("an unlabelled tenant was removed")
	}
}
