package cli

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

// TestAddressSetAndPodCommands drives address sets and pod records
// through the CLI against a real romanad.
func TestAddressSetAndPodCommands(t *testing.T) {
	srv := servertest.Start(t)
	c := srv.Client
	ctx := context.Background()
	s := adminSession(t, srv)

	out := s.ok("addressset", "apply", "web-pods", "10.1.0.9", "10.1.0.5", "::ffff:10.1.0.5", "--description", "app=web")
	if !strings.Contains(out, "web-pods  2          app=web") {
		t.Errorf("addressset apply output:\n%s", out)
	}
	yaml := `- name: db-pods
  addresses: [10.1.1.3, "fd00::1:3"]
- {name: empty, addresses: []}
`
	if r := s.run(yaml, "addressset", "apply", "-f", "-"); r.code != ExitOK {
		t.Fatalf("addressset apply -f -: exit %d: %s", r.code, r.stderr)
	}
	var sets []api.AddressSet
	s.okJSON(&sets, "addressset", "list")
	if len(sets) != 3 || sets[0].Name != "db-pods" || sets[1].Name != "empty" || sets[2].Name != "web-pods" {
		t.Errorf("addressset list: %+v", sets)
	}
	var web api.AddressSet
	s.okJSON(&web, "addressset", "show", "web-pods")
	want := api.AddressSet{Name: "web-pods", Description: "app=web", Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("10.1.0.9")}}
	if !reflect.DeepEqual(web, want) {
		t.Errorf("addressset show = %+v, want %+v", web, want)
	}
	if out := s.ok("addressset", "show", "db-pods"); !strings.Contains(out, "  10.1.1.3\n  fd00::1:3\n") {
		t.Errorf("addressset show db-pods:\n%s", out)
	}
	// A YAML round trip: list -o yaml feeds apply -f.
	listed := s.ok("addressset", "list", "-o", "yaml")
	if r := s.run(listed, "addressset", "apply", "-f", "-"); r.code != ExitOK {
		t.Fatalf("re-applying the listed sets: exit %d: %s", r.code, r.stderr)
	}
	s.ok("addressset", "delete", "empty")
	_, err := c.GetAddressSet(ctx, "empty")
	s.fails(err, "addressset", "show", "empty")
	_, err = c.PutAddressSet(ctx, api.AddressSet{Name: "Bad_Name"})
	s.fails(err, "addressset", "apply", "Bad_Name", "10.0.0.1")
	if r := s.run("", "addressset", "apply", "x", "10.0.0.300"); r.code != ExitUsage || !strings.Contains(r.stderr, `"10.0.0.300" is not an IP address`) {
		t.Errorf("a bad address argument: exit %d: %s", r.code, r.stderr)
	}
	if r := s.run("- {name: x, members: []}\n", "addressset", "apply", "-f", "-"); r.code == ExitOK || !strings.Contains(r.stderr, "members") {
		t.Errorf("an unknown field: exit %d: %s", r.code, r.stderr)
	}

	// Pod records: written by the Kubernetes controller, read here.
	for _, p := range []api.Pod{{Namespace: "shop", Name: "web-0", Tenant: "shop", Segment: "web"}, {Namespace: "ops", Name: "dns", Tenant: "ops", Segment: "default"}} {
		if _, err := c.PutPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if out := s.ok("pod", "list", "--namespace", "shop"); !strings.Contains(out, "shop       web-0  shop    web") || strings.Contains(out, "dns") {
		t.Errorf("pod list --namespace shop:\n%s", out)
	}
	var p api.Pod
	s.okJSON(&p, "pod", "show", "ops/dns")
	if p.Tenant != "ops" || p.Segment != "default" {
		t.Errorf("pod show ops/dns = %+v", p)
	}
	if r := s.run("", "pod", "show", "dns"); r.code != ExitUsage || !strings.Contains(r.stderr, "want namespace/name") {
		t.Errorf("pod show without a namespace: exit %d: %s", r.code, r.stderr)
	}
}
