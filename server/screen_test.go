package server_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// TestScreening sends pools, host addresses, endpoint interfaces and JSON
// bodies that could take over a host if accepted, and checks that each is
// refused with the right status and a message naming the rule, leaving the
// store untouched.
func TestScreening(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	populate(t, c) // network blue 10.0.0.0/8; hosts h0..h3 at 192.0.2.10-13
	small := `"fields":[{"name":"host","bits":4},{"name":"tenant","bits":2},{"name":"segment","bits":2}]`
	std := `"fields":[{"name":"host","bits":4},{"name":"tenant","bits":4},{"name":"segment","bits":4}]`
	wide := `"fields":[{"name":"host","bits":32},{"name":"tenant","bits":16},{"name":"segment","bits":16}]`
	addr := func(iface string) string {
		return `{"name":"x1","host":"h0","tenant":"acme","segment":"web","interface":"` + iface + `"}`
	}
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		reason, msg              string
	}{
		{"pool half of IPv4", "POST", "/v1/networks", `{"name":"n","cidr":"128.0.0.0/1",` + std + `}`,
			400, api.ReasonInvalid, "pool 128.0.0.0/1 is too wide: an IPv4 pool may be at most a /8"},
		{"pool everything v4", "POST", "/v1/networks", `{"name":"n","cidr":"0.0.0.0/0",` + std + `}`,
			400, api.ReasonInvalid, "pool 0.0.0.0/0 is too wide"},
		{"pool everything v6", "POST", "/v1/networks", `{"name":"n","cidr":"::/0",` + wide + `}`,
			400, api.ReasonInvalid, "pool ::/0 is too wide: an IPv6 pool may be at most a /32"},
		{"pool ula /8", "POST", "/v1/networks", `{"name":"n","cidr":"fd00::/8",` + wide + `}`,
			400, api.ReasonInvalid, "pool fd00::/8 is too wide"},
		{"pool loopback", "POST", "/v1/networks", `{"name":"n","cidr":"127.0.0.0/8",` + std + `}`,
			400, api.ReasonInvalid, "pool 127.0.0.0/8 overlaps loopback 127.0.0.0/8"},
		{"pool link-local", "POST", "/v1/networks", `{"name":"n","cidr":"169.254.0.0/16",` + small + `}`,
			400, api.ReasonInvalid, "pool 169.254.0.0/16 overlaps link-local 169.254.0.0/16 (the endpoints' gateway 169.254.1.1)"},
		{"pool multicast", "POST", "/v1/networks", `{"name":"n","cidr":"239.0.0.0/8",` + std + `}`,
			400, api.ReasonInvalid, "pool 239.0.0.0/8 overlaps multicast 224.0.0.0/4"},
		{"pool broadcast", "POST", "/v1/networks", `{"name":"n","cidr":"255.255.0.0/16",` + small + `}`,
			400, api.ReasonInvalid, "the broadcast address 255.255.255.255"},
		{"pool zero", "POST", "/v1/networks", `{"name":"n","cidr":"0.0.0.0/8",` + std + `}`,
			400, api.ReasonInvalid, "the unspecified address"},
		{"pool v6 link-local", "POST", "/v1/networks", `{"name":"n","cidr":"fe80::/64",` + std + `}`,
			400, api.ReasonInvalid, "overlaps link-local fe80::/10"},
		{"pool v6 multicast", "POST", "/v1/networks", `{"name":"n","cidr":"ff02::/64",` + std + `}`,
			400, api.ReasonInvalid, "overlaps multicast ff00::/8"},
		{"pool v6 loopback", "POST", "/v1/networks", `{"name":"n","cidr":"::/64",` + std + `}`,
			400, api.ReasonInvalid, "overlaps the unspecified address ::"},
		{"pool holds a host's underlay ip", "POST", "/v1/networks", `{"name":"n","cidr":"192.0.0.0/16",` + std + `}`,
			400, api.ReasonInvalid, "network n (192.0.0.0/16) holds the underlay ip 192.0.2.10 of host h0"},

		{"host loopback", "POST", "/v1/hosts", `{"name":"h9","ip":"127.0.0.1","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "host h9: ip 127.0.0.1 is not a usable underlay address: it is in loopback 127.0.0.0/8"},
		{"host multicast", "POST", "/v1/hosts", `{"name":"h9","ip":"224.0.0.1","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "it is in multicast 224.0.0.0/4"},
		{"host broadcast", "POST", "/v1/hosts", `{"name":"h9","ip":"255.255.255.255","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "the broadcast address 255.255.255.255"},
		{"host gateway", "POST", "/v1/hosts", `{"name":"h9","ip":"169.254.1.1","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "it is in link-local 169.254.0.0/16"},
		{"host unspecified", "POST", "/v1/hosts", `{"name":"h9","ip":"0.0.0.0","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "is not a usable underlay address"},
		{"host v6 loopback", "POST", "/v1/hosts", `{"name":"h9","ip":"::1","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "it is in loopback ::1"},
		{"host v6 link-local", "POST", "/v1/hosts", `{"name":"h9","ip":"fe80::1","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "it is in link-local fe80::/10"},
		{"host v6 multicast", "POST", "/v1/hosts", `{"name":"h9","ip":"ff02::1","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "it is in multicast ff00::/8"},
		{"host inside a pool", "POST", "/v1/hosts", `{"name":"h9","ip":"10.1.2.3","labels":{"rack":"r1"}}`,
			400, api.ReasonInvalid, "host h9: ip 10.1.2.3 is in network blue (10.0.0.0/8)"},

		{"interface eth0", "POST", "/v1/addresses", addr("eth0"), 400, api.ReasonInvalid, `interface "eth0" is not an endpoint interface`},
		{"interface lo", "POST", "/v1/addresses", addr("lo"), 400, api.ReasonInvalid, `interface "lo" is not an endpoint interface`},
		{"interface gateway link", "POST", "/v1/addresses", addr("romana-gw"), 400, api.ReasonInvalid, `are Romana's own host links`},
		{"interface prefix only", "POST", "/v1/addresses", addr("veth"), 400, api.ReasonInvalid, `interface "veth" is not an endpoint interface`},
		{"interface bridge", "POST", "/v1/addresses", addr("docker0"), 400, api.ReasonInvalid, "must start with one of romana, rv-, veth"},

		{"duplicate key", "POST", "/v1/tenants", `{"name":"t3","name":"t4"}`, 400, api.ReasonInvalid, `request body: duplicate key "name"`},
		{"duplicate key, other case", "POST", "/v1/tenants", `{"name":"t3","NAME":"t4"}`, 400, api.ReasonInvalid, `request body: duplicate key "NAME"`},
		{"duplicate key, nested", "POST", "/v1/hosts", `{"name":"h9","ip":"192.0.2.99","labels":{"rack":"r1","rack":"r2"}}`,
			400, api.ReasonInvalid, `duplicate key "rack"`},
		{"duplicate key, in an array", "PUT", "/v1/policies/p1", `{` + okPolicy + `,"rules":[{"protocol":"tcp","protocol":"udp"}]}`,
			400, api.ReasonInvalid, `duplicate key "protocol"`},
		{"null body", "POST", "/v1/tenants", `null`, 400, api.ReasonInvalid, "request body is null: expected a JSON object"},
		{"null body, spaced", "POST", "/v1/networks", " null\n", 400, api.ReasonInvalid, "request body is null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := readStore(t, in)
			status, e, body := rawString(t, in, tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d; body %.300s", status, tc.status, body)
			}
			if e.Reason != tc.reason || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("error %+v\nwant reason %s, message containing %q", e, tc.reason, tc.msg)
			}
			if after := readStore(t, in); !after.equal(before) {
				t.Errorf("the store changed: revision %d -> %d", before.rev, after.rev)
			}
		})
	}

	// What must still be accepted: the names the CNI plugin, the lab and
	// other tools give endpoint veths, hosts outside every pool, and a
	// pool that holds no host.
	for _, iface := range []string{"romana18b8fe0ca", "rv-a1", "veth1a2b"} {
		if _, err := c.Allocate(ctx, api.AddressRequest{Name: "ok-" + iface, Host: "h0", Tenant: "acme", Segment: "web", Interface: iface}); err != nil {
			t.Errorf("allocate with interface %s: %v", iface, err)
		}
	}
	if _, err := c.AddNetwork(ctx, api.Network{Name: "v6", CIDR: "fd00:1::/32", Fields: []plan.Field{{Name: "host", Bits: 16}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 8}}}); err != nil {
		t.Errorf("add a /32 IPv6 pool: %v", err)
	}
	if _, err := c.AddHost(ctx, api.Host{Name: "h9", IP: netip.MustParseAddr("192.0.2.99"), Labels: map[string]string{"rack": "r1"}}); err != nil {
		t.Errorf("add a host outside every pool: %v", err)
	}
}
