package server_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// DELETE /v1/hosts/{name}/addresses releases a gone machine's addresses;
// the kube identity may do it only to the hosts it registered.
func TestReleaseHostAddresses(t *testing.T) {
	ctx := context.Background()
	in := servertest.Start(t)
	c := in.Client
	mustDo := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(c.AddNetwork(ctx, api.Network{Name: "net", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}))
	mustDo(c.AddHost(ctx, api.Host{Name: "node1", IP: netip.MustParseAddr("192.0.2.1"), Labels: map[string]string{api.LabelSource: api.SourceKubernetes}}))
	mustDo(c.AddHost(ctx, api.Host{Name: "bare", IP: netip.MustParseAddr("192.0.2.2")}))
	mustDo(c.AddTenant(ctx, api.Tenant{Name: "t"}))
	mustDo(c.AddSegment(ctx, api.Segment{Tenant: "t", Name: "s"}))
	for _, a := range []api.AddressRequest{{Name: "p1", Host: "node1"}, {Name: "p2", Host: "node1"}, {Name: "b1", Host: "bare"}} {
		a.Tenant, a.Segment = "t", "s"
		mustDo(c.Allocate(ctx, a))
	}
	kc, _, err := client.FromCredential(in.Credential(t, pki.Kube), "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := kc.ReleaseHostAddresses(ctx, "node1")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"p1", "p2"}) {
		t.Errorf("released %v, want p1 p2", got)
	}
	left, err := c.ListAddresses(ctx, api.AddressFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Name != "b1" {
		t.Errorf("addresses left: %+v, want only b1", left)
	}
	// Now the host can go.
	if err := kc.RemoveHost(ctx, "node1"); err != nil {
		t.Errorf("remove node1 after releasing: %v", err)
	}
	// Not a host the controller registered: refused, nothing released.
	if _, err := kc.ReleaseHostAddresses(ctx, "bare"); api.ReasonOf(err) != api.ReasonForbidden {
		t.Errorf("kube releasing bare's addresses: %v, want Forbidden", err)
	}
	if _, err := c.GetAddress(ctx, "b1"); err != nil {
		t.Errorf("b1 after the refused release: %v", err)
	}
	// Admin may; an unknown host is NotFound.
	if got, err := c.ReleaseHostAddresses(ctx, "bare"); err != nil || len(got) != 1 {
		t.Errorf("admin release of bare: %v, %v", got, err)
	}
	if _, err := c.ReleaseHostAddresses(ctx, "nope"); !api.IsNotFound(err) {
		t.Errorf("unknown host: %v, want NotFound", err)
	}
}
