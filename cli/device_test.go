package cli

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

// TestDeviceAndFabricRoutes drives devices and fabric routes through the
// CLI against a real romanad.
func TestDeviceAndFabricRoutes(t *testing.T) {
	srv := servertest.Start(t)
	c := srv.Client
	ctx := context.Background()
	s := adminSession(t, srv)

	s.ok("network", "add", "pods", "--cidr", "10.0.0.0/8", "--field", "rack=4", "--field", "host=4", "--field", "tenant=4", "--field", "segment=4")
	s.ok("host", "add", "h1", "--ip", "192.168.1.11", "--label", "rack=r1")
	s.ok("host", "add", "h2", "--ip", "192.168.1.12", "--label", "rack=r1")
	s.ok("host", "add", "h3", "--ip", "192.168.2.13", "--label", "rack=r2")

	out := s.ok("device", "add", "tor1", "--kind", "tor", "--group", "rack=r1", "--asn", "65101", "--router-id", "172.31.255.1",
		"--host-link", "192.168.1.1/24", "--link", "spine1=172.16.0.1/31,172.16.0.0", "--link", "spine2=172.16.1.1/31")
	if !strings.Contains(out, "tor1  tor   rack=r1  65101  172.31.255.1  hosts@192.168.1.1/24,spine1@172.16.0.1/31>172.16.0.0,spine2@172.16.1.1/31") {
		t.Errorf("device add output:\n%s", out)
	}
	yaml := `- name: tor2
  kind: tor
  group: {rack: r2}
  asn: 65102
  links:
  - {local: 192.168.2.1/24}
  - {peer: spine1, local: 172.16.0.3/31, remote: 172.16.0.2}
- {name: spine1, kind: spine, asn: 65100}
- {name: spine2, kind: spine, asn: 65100, links: [{peer: tor1, local: 172.16.1.0/31}]}
`
	if r := s.run(yaml, "device", "add", "-f", "-"); r.code != ExitOK {
		t.Fatalf("device add -f -: exit %d: %s", r.code, r.stderr)
	}
	var devs []api.Device
	s.okJSON(&devs, "device", "list")
	if len(devs) != 4 || devs[0].Name != "spine1" || devs[3].Name != "tor2" {
		t.Errorf("device list: %+v", devs)
	}
	var tor1 api.Device
	s.okJSON(&tor1, "device", "show", "tor1")
	want := api.Device{Name: "tor1", Kind: "tor", Group: map[string]string{"rack": "r1"}, ASN: 65101, RouterID: netip.MustParseAddr("172.31.255.1"),
		Links: []api.DeviceLink{{Local: netip.MustParsePrefix("192.168.1.1/24")},
			{Peer: "spine1", Local: netip.MustParsePrefix("172.16.0.1/31"), Remote: netip.MustParseAddr("172.16.0.0")},
			{Peer: "spine2", Local: netip.MustParsePrefix("172.16.1.1/31")}}}
	if !reflect.DeepEqual(tor1, want) {
		t.Errorf("device show tor1 = %+v\nwant %+v", tor1, want)
	}
	// A YAML round trip: list -o yaml feeds add -f.
	listed := s.ok("device", "list", "-o", "yaml")
	if r := s.run(listed, "device", "add", "-f", "-"); r.code != ExitOK {
		t.Fatalf("re-adding the listed devices: exit %d: %s", r.code, r.stderr)
	}

	// Static routes in the three syntaxes.
	ip := s.ok("fabric", "routes", "--device", "tor1")
	for _, l := range []string{
		"ip route replace 10.0.0.0/8 proto static nexthop via 172.16.0.0 nexthop via 172.16.1.0  # pool pods via spine1,spine2",
		"ip route replace 10.0.0.0/16 proto static via 192.168.1.11  # host h1",
		"ip route replace 10.1.0.0/16 proto static via 192.168.1.12  # host h2",
	} {
		if !strings.Contains(ip, l+"\n") {
			t.Errorf("fabric routes --device tor1 lacks %q:\n%s", l, ip)
		}
	}
	bird := s.ok("fabric", "routes", "--device", "spine1", "--format", "bird")
	if !strings.Contains(bird, "\troute 10.0.0.0/12 via 172.16.0.1; # rack=r1 via tor1\n\troute 10.16.0.0/12 via 172.16.0.3; # rack=r2 via tor2\n") {
		t.Errorf("spine1 bird:\n%s", bird)
	}
	frr := s.ok("fabric", "routes", "--device", "spine2", "--format", "frr")
	if !strings.Contains(frr, "! rack=r1 via tor1\nip route 10.0.0.0/12 172.16.1.1\n") || strings.Contains(frr, "10.16.0.0") {
		t.Errorf("spine2 frr (only rack r1 is linked):\n%s", frr)
	}
	var tab api.FabricRoutes
	s.okJSON(&tab, "fabric", "routes", "--device", "spine1")
	if len(tab.Routes) != 2 || tab.Kind != "spine" {
		t.Errorf("fabric routes -o json: %+v", tab)
	}

	// Problems are warnings on stderr; the routes still print.
	s.ok("device", "add", "tor9", "--kind", "tor", "--group", "rack=r9")
	r := s.run("", "fabric", "routes", "--device", "tor9")
	if r.code != ExitOK || r.stderr != "warning: device \"tor9\": no host has the labels rack=r9\n" {
		t.Errorf("tor9: exit %d stderr %q", r.code, r.stderr)
	}

	// Errors: API messages with exit 1, usage with exit 2.
	_, err := c.FabricRoutes(ctx, "nope")
	s.fails(err, "fabric", "routes", "--device", "nope")
	_, err = c.GetDevice(ctx, "nope")
	s.fails(err, "device", "show", "nope")
	// A file's bad kind is the API's to refuse; --kind leaf is a bad
	// command line (exit 2, below).
	_, err = c.PutDevice(ctx, api.Device{Name: "x", Kind: "leaf"})
	r = s.run("name: x\nkind: leaf\n", "device", "add", "-f", "-")
	if want := "Error: " + err.Error() + "\n"; r.code != ExitError || r.stderr != want {
		t.Errorf("device add -f - (kind leaf): exit %d, stderr %q; want exit 1, %q", r.code, r.stderr, want)
	}
	for _, args := range [][]string{
		{"device", "add", "x", "--kind", "leaf"},
		{"fabric", "routes"},
		{"fabric", "routes", "--device", "tor1", "--format", "cisco"},
		{"device", "add", "x"},
		{"device", "add", "x", "--kind", "tor", "--link", "spine1"},
		{"device", "add", "x", "--kind", "tor", "--host-link", "192.168.1.1"},
		{"device", "add"},
	} {
		if r := s.run("", args...); r.code != ExitUsage {
			t.Errorf("romana %s: exit %d (want %d): %s", strings.Join(args, " "), r.code, ExitUsage, r.stderr)
		}
	}
	s.ok("device", "remove", "tor9")
	if _, err := c.GetDevice(ctx, "tor9"); !api.IsNotFound(err) {
		t.Errorf("tor9 after remove: %v", err)
	}

	// A file of one device.
	f := filepath.Join(t.TempDir(), "d.json")
	if err := os.WriteFile(f, []byte(`{"name":"spine3","kind":"spine"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var one api.Device
	s.okJSON(&one, "device", "add", "-f", f)
	if one.Name != "spine3" {
		t.Errorf("device add -f FILE: %+v", one)
	}
}

// TestDualStackHostFabricRoutes: a host added with --ip6 carries its IPv6
// block on the IPv6 underlay address, and romanad refuses a second address
// of the same family or inside a pool.
func TestDualStackHostFabricRoutes(t *testing.T) {
	srv := servertest.Start(t)
	c := srv.Client
	ctx := context.Background()
	s := adminSession(t, srv)
	s.ok("network", "add", "pods6", "--cidr", "fd00:1234:5678::/48", "--field", "rack=4", "--field", "host=12", "--field", "tenant=8", "--field", "segment=8")
	out := s.ok("host", "add", "h1", "--ip", "192.168.1.11", "--ip6", "fd00:1::11", "--label", "rack=r1", "--no-token")
	if !strings.Contains(out, "192.168.1.11,fd00:1::11") {
		t.Errorf("host add output:\n%s", out)
	}
	if out := s.ok("host", "show", "h1"); !strings.Contains(out, "IP6:") || !strings.Contains(out, "fd00:1::11") {
		t.Errorf("host show:\n%s", out)
	}
	s.ok("device", "add", "tor1", "--kind", "tor", "--group", "rack=r1", "--host-link", "192.168.1.1/24", "--host-link", "fd00:1::1/64")
	out = s.ok("fabric", "routes", "--device", "tor1")
	if !strings.Contains(out, "ip route replace fd00:1234:5678::/64 proto static via fd00:1::11  # host h1") {
		t.Errorf("fabric routes:\n%s", out)
	}
	_, err := c.AddHost(ctx, api.Host{Name: "h2", IP: netip.MustParseAddr("192.168.1.12"), IP6: netip.MustParseAddr("192.168.1.13")})
	s.fails(err, "host", "add", "h2", "--ip", "192.168.1.12", "--ip6", "192.168.1.13", "--no-token")
	_, err = c.AddHost(ctx, api.Host{Name: "h3", IP: netip.MustParseAddr("192.168.1.14"), IP6: netip.MustParseAddr("fd00:1234:5678::1")})
	s.fails(err, "host", "add", "h3", "--ip", "192.168.1.14", "--ip6", "fd00:1234:5678::1", "--no-token")
}
