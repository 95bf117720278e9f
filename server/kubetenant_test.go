package server_test

import (
	"context"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// Tenants carry labels from their creation; the kube identity may remove
// only the tenants labelled as its own, and segments only in those; a
// removed tenant's id is the next one given.
func TestKubeRemovesOnlyItsTenants(t *testing.T) {
	ctx := context.Background()
	in := servertest.Start(t)
	c := in.Client
	kc, _, err := client.FromCredential(in.Credential(t, pki.Kube), "")
	if err != nil {
		t.Fatal(err)
	}
	kubeMade := map[string]string{api.LabelSource: api.SourceKubernetes}
	ops, err := c.AddTenant(ctx, api.Tenant{Name: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := kc.AddTenant(ctx, api.Tenant{Name: "ns1", Isolation: api.IsolationNone, Labels: kubeMade})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetTenant(ctx, "ns1"); err != nil || got.Labels[api.LabelSource] != api.SourceKubernetes {
		t.Fatalf("tenant ns1 read back: %+v, %v", got, err)
	}
	// Re-adding returns the stored tenant, labels included.
	if got, err := kc.AddTenant(ctx, api.Tenant{Name: "ops", Isolation: api.IsolationTenant, Labels: kubeMade}); err != nil || len(got.Labels) != 0 {
		t.Errorf("re-add ops with labels: %+v, %v; want the stored one, unlabelled", got, err)
	}
	if _, err := c.AddTenant(ctx, api.Tenant{Name: "bad", Labels: map[string]string{"romana.io/source": "not ok!"}}); api.ReasonOf(err) != api.ReasonInvalid {
		t.Errorf("invalid label value: %v, want Invalid", err)
	}
	for _, s := range []api.Segment{{Tenant: "ops", Name: "s"}, {Tenant: "ns1", Name: "s"}} {
		if _, err := c.AddSegment(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// The operator's tenant: refused to kube, and left as it was.
	if err := kc.RemoveSegment(ctx, "ops", "s"); api.ReasonOf(err) != api.ReasonForbidden {
		t.Errorf("kube removing segment ops/s: %v, want Forbidden", err)
	}
	if err := kc.RemoveTenant(ctx, "ops"); api.ReasonOf(err) != api.ReasonForbidden {
		t.Errorf("kube removing tenant ops: %v, want Forbidden", err)
	}
	if _, err := c.GetSegment(ctx, "ops", "s"); err != nil {
		t.Errorf("segment ops/s after the refusals: %v", err)
	}
	// Its own: segment, then tenant (a tenant with segments is Conflict).
	if err := kc.RemoveTenant(ctx, "ns1"); api.ReasonOf(err) != api.ReasonConflict {
		t.Errorf("kube removing ns1 with a segment: %v, want Conflict", err)
	}
	if err := kc.RemoveSegment(ctx, "ns1", "s"); err != nil {
		t.Fatal(err)
	}
	if err := kc.RemoveTenant(ctx, "ns1"); err != nil {
		t.Fatal(err)
	}
	// Its id is the next one given.
	next, err := kc.AddTenant(ctx, api.Tenant{Name: "ns2", Isolation: api.IsolationNone, Labels: kubeMade})
	if err != nil || next.ID != ns.ID {
		t.Errorf("next tenant %+v, %v; want ns1's id %d (ops has %d)", next, err, ns.ID, ops.ID)
	}
	// Admin may remove any.
	if err := c.RemoveSegment(ctx, "ops", "s"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveTenant(ctx, "ops"); err != nil {
		t.Errorf("admin removing ops: %v", err)
	}
}
