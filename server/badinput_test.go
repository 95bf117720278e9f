package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

const okPolicy = `"direction":["ingress"],"appliedTo":[{"tenant":"acme"}]`

// TestBadInput sends invalid requests and checks each gets the right status,
// reason and message, and leaves the store exactly as it was: same keys,
// same values, same revision (nothing written, not even transiently).
func TestBadInput(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	populate(t, c)
	if _, err := c.Allocate(ctx, api.AddressRequest{Name: "a1", Host: "h0", Tenant: "acme", Segment: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddTenant(ctx, api.Tenant{Name: "big", ID: 40}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddSegment(ctx, api.Segment{Tenant: "big", Name: "s"}); err != nil {
		t.Fatal(err)
	}
	huge := `{"name":"` + strings.Repeat("a", 1<<20) + `"}`
	fields := func(f string) string { return `"fields":[` + f + `]` }
	std := fields(`{"name":"host","bits":8},{"name":"tenant","bits":4},{"name":"segment","bits":4}`)

	for _, tc := range []struct {
		name, method, path, body string
		chunked                  bool
		status                   int
		reason, msg              string
	}{
		{"overlapping network", "POST", "/v1/networks", `{"name":"red","cidr":"10.16.0.0/12",` + std + `}`,
			false, 409, api.ReasonConflict, "network red (10.16.0.0/12) overlaps network blue (10.0.0.0/8)"},
		{"same name, other definition", "POST", "/v1/networks", `{"name":"blue","cidr":"10.0.0.0/8",` + std + `}`,
			false, 409, api.ReasonAlreadyExists, "network blue already exists with a different definition"},
		{"layout does not fit", "POST", "/v1/networks", `{"name":"small","cidr":"192.168.0.0/16",` + std + `}`,
			false, 400, api.ReasonInvalid, "fields need 16 bits but 192.168.0.0/16 leaves 16: no bits remain for endpoints"},
		{"layout out of order", "POST", "/v1/networks", `{"name":"small","cidr":"192.168.0.0/16",` +
			fields(`{"name":"host","bits":2},{"name":"segment","bits":2},{"name":"tenant","bits":2}`) + `}`,
			false, 400, api.ReasonInvalid, `field 1 is "segment", expected "tenant"`},
		{"cidr with host bits", "POST", "/v1/networks", `{"name":"small","cidr":"192.168.1.0/16",` + std + `}`,
			false, 400, api.ReasonInvalid, "did you mean 192.168.0.0/16?"},
		{"hosts lack the level's label", "POST", "/v1/networks", `{"name":"green","cidr":"172.16.0.0/12",` +
			fields(`{"name":"zone","bits":2},{"name":"host","bits":2},{"name":"tenant","bits":4},{"name":"segment","bits":4}`) + `}`,
			false, 400, api.ReasonInvalid, `host h0 has no label "zone", which network green needs to place it`},
		{"existing hosts do not fit", "POST", "/v1/networks", `{"name":"green","cidr":"172.16.0.0/12",` +
			fields(`{"name":"host","bits":1},{"name":"tenant","bits":4},{"name":"segment","bits":4}`) + `}`,
			false, 409, api.ReasonExhausted, "network green is full: 2 of 2 host ids in use"},
		{"invalid network name", "POST", "/v1/networks", `{"name":"Blue!","cidr":"172.16.0.0/12",` + std + `}`,
			false, 400, api.ReasonInvalid, `invalid network name "Blue!"`},
		{"network tenant name", "POST", "/v1/networks", `{"name":"green","cidr":"172.16.0.0/12",` + std + `,"tenants":["ACME"]}`,
			false, 400, api.ReasonInvalid, `network green: tenants[0]: invalid tenant name "ACME"`},

		{"host without rack label", "POST", "/v1/hosts", `{"name":"h9","ip":"192.0.2.99"}`,
			false, 400, api.ReasonInvalid, `host h9 has no label "rack", which network blue needs to place it`},
		{"host ip taken", "POST", "/v1/hosts", `{"name":"h9","ip":"192.0.2.10","labels":{"rack":"r1"}}`,
			false, 409, api.ReasonConflict, "ip 192.0.2.10 is already the address of host h0"},
		{"host ip invalid", "POST", "/v1/hosts", `{"name":"h9","ip":"192.0.2.999","labels":{"rack":"r1"}}`,
			false, 400, api.ReasonInvalid, "192.0.2.999"},
		{"host ip missing", "POST", "/v1/hosts", `{"name":"h9","labels":{"rack":"r1"}}`,
			false, 400, api.ReasonInvalid, "is not a usable underlay address"},
		{"host exists with other labels", "POST", "/v1/hosts", `{"name":"h0","ip":"192.0.2.10","labels":{"rack":"r2"}}`,
			false, 409, api.ReasonAlreadyExists, "host h0 already exists with ip 192.0.2.10"},
		{"invalid host name", "POST", "/v1/hosts", `{"name":"h_9","ip":"192.0.2.99","labels":{"rack":"r1"}}`,
			false, 400, api.ReasonInvalid, `invalid host name "h_9"`},
		{"invalid label value", "POST", "/v1/hosts", `{"name":"h9","ip":"192.0.2.99","labels":{"rack":"r/1"}}`,
			false, 400, api.ReasonInvalid, `host h9: label rack: invalid value "r/1"`},
		{"rack ids exhausted", "POST", "/v1/hosts", `{"name":"h9","ip":"192.0.2.99","labels":{"rack":"r3"}}`,
			false, 409, api.ReasonExhausted, `network blue: no free rack id for rack "r3": all 2 in use`},

		{"invalid tenant name", "POST", "/v1/tenants", `{"name":"Acme Corp"}`,
			false, 400, api.ReasonInvalid, `invalid tenant name "Acme Corp"`},
		{"bad isolation", "POST", "/v1/tenants", `{"name":"t2","isolation":"strict"}`,
			false, 400, api.ReasonInvalid, `tenant t2: isolation "strict" is not one of tenant, segment, none`},
		{"tenant id taken", "POST", "/v1/tenants", `{"name":"t2","id":1}`,
			false, 409, api.ReasonConflict, "tenant id 1 for t2 is already globex's"},
		{"segment of unknown tenant", "POST", "/v1/tenants/nope/segments", `{"name":"web"}`,
			false, 404, api.ReasonNotFound, "tenant nope not found"},
		{"segment body names another tenant", "POST", "/v1/tenants/acme/segments", `{"tenant":"globex","name":"x"}`,
			false, 400, api.ReasonInvalid, `segment body names tenant "globex" but the path names tenant "acme"`},
		{"invalid segment name", "POST", "/v1/tenants/acme/segments", `{"name":"-web"}`,
			false, 400, api.ReasonInvalid, `invalid segment name "-web"`},

		{"unknown tenant", "POST", "/v1/addresses", `{"name":"x1","host":"h0","tenant":"nope","segment":"web"}`,
			false, 404, api.ReasonNotFound, "tenant nope not found"},
		{"unknown segment", "POST", "/v1/addresses", `{"name":"x1","host":"h0","tenant":"acme","segment":"nope"}`,
			false, 404, api.ReasonNotFound, "segment acme/nope not found"},
		{"unknown host", "POST", "/v1/addresses", `{"name":"x1","host":"nope","tenant":"acme","segment":"web"}`,
			false, 404, api.ReasonNotFound, "host nope not found"},
		{"unknown network", "POST", "/v1/addresses", `{"name":"x1","network":"nope","host":"h0","tenant":"acme","segment":"web"}`,
			false, 404, api.ReasonNotFound, "network nope not found"},
		{"invalid address name", "POST", "/v1/addresses", `{"name":"../x","host":"h0","tenant":"acme","segment":"web"}`,
			false, 400, api.ReasonInvalid, `invalid address name "../x"`},
		{"missing segment", "POST", "/v1/addresses", `{"name":"x1","host":"h0","tenant":"acme"}`,
			false, 400, api.ReasonInvalid, "address x1: segment is required"},
		{"invalid interface", "POST", "/v1/addresses", `{"name":"x1","host":"h0","tenant":"acme","segment":"web","interface":"veth/0"}`,
			false, 400, api.ReasonInvalid, `interface "veth/0" is not a valid Linux interface name`},
		{"name already allocated elsewhere", "POST", "/v1/addresses", `{"name":"a1","host":"h0","tenant":"acme","segment":"db"}`,
			false, 409, api.ReasonAlreadyExists, "address a1 is already allocated (10.0.0.1 in network blue, host h0, segment acme/web)"},
		{"tenant id does not fit", "POST", "/v1/addresses", `{"name":"x1","host":"h0","tenant":"big","segment":"s"}`,
			false, 409, api.ReasonExhausted, "tenant big has id 40, which does not fit the 4 tenant bits of network blue (ids 0-15)"},

		{"1 MiB body", "POST", "/v1/networks", huge, false, 413, api.ReasonTooLarge, "request body is 1048587 bytes; the limit is 65536"},
		{"1 MiB chunked body", "POST", "/v1/tenants", huge, true, 413, api.ReasonTooLarge, "request body exceeds the limit of 65536 bytes"},
		{"malformed JSON, truncated", "POST", "/v1/tenants", `{"name":"x",`, false, 400, api.ReasonInvalid, "malformed JSON in request body"},
		{"malformed JSON, syntax", "POST", "/v1/tenants", `{"name" "x"}`, false, 400, api.ReasonInvalid, "malformed JSON in request body at byte 9"},
		{"wrong type", "POST", "/v1/tenants", `{"name":5}`, false, 400, api.ReasonInvalid, "field name: expected string, got JSON number"},
		{"not an object", "POST", "/v1/tenants", `["x"]`, false, 400, api.ReasonInvalid, "expected a JSON object, got array"},
		{"unknown field", "POST", "/v1/tenants", `{"name":"t3","colour":"red"}`, false, 400, api.ReasonInvalid, `unknown field "colour"`},
		{"empty body", "POST", "/v1/tenants", ``, false, 400, api.ReasonInvalid, "request body is empty"},
		{"trailing data", "POST", "/v1/tenants", `{"name":"t3"} {"name":"t4"}`, false, 400, api.ReasonInvalid, "request body has data after the JSON object"},

		{"invalid policy", "PUT", "/v1/policies/p1", `{` + okPolicy + `,"rules":[{"protocol":"tcp","ports":[80]},{"protocol":"tcp","ports":[443,0]}]}`,
			false, 400, api.ReasonInvalid, "invalid policy p1: rules[1].ports[1]: port 0 is out of range 1-65535"},
		{"invalid policy peers", "POST", "/v1/policies", `{"name":"p1",` + okPolicy + `,"rules":[{"peers":[{"any":true,"tenant":"x"}]}]}`,
			false, 400, api.ReasonInvalid, "rules[0].peers[0]: set exactly one of any, cidr"},
		{"policy name mismatch", "PUT", "/v1/policies/p1", `{"name":"p2",` + okPolicy + `,"rules":[{}]}`,
			false, 400, api.ReasonInvalid, `policy body is named "p2" but the path names "p1"`},

		{"policy priority out of range", "PUT", "/v1/policies/p1", `{"priority":70000,` + okPolicy + `,"rules":[{}]}`,
			false, 400, api.ReasonInvalid, "priority: 70000 is out of range 1-65535 (0 or absent means the default, 1000)"},
		{"policy except outside cidr", "PUT", "/v1/policies/p1", `{` + okPolicy + `,"rules":[{"peers":[{"cidr":"10.0.0.0/16","except":["10.1.0.0/24"]}]}]}`,
			false, 400, api.ReasonInvalid, "rules[0].peers[0].except[0]: 10.1.0.0/24 is not within cidr 10.0.0.0/16"},
		{"policy icmp type on tcp", "PUT", "/v1/policies/p1", `{` + okPolicy + `,"rules":[{"protocol":"tcp","icmpType":8}]}`,
			false, 400, api.ReasonInvalid, `rules[0]: icmpType and icmpCode need protocol icmp (protocol is "tcp")`},
		{"policy reversed port range", "PUT", "/v1/policies/p1", `{` + okPolicy + `,"rules":[{"protocol":"udp","portRanges":["9000-8000"]}]}`,
			false, 400, api.ReasonInvalid, `rules[0].portRanges[0]: "9000-8000" starts after it ends`},
		{"policy segment without tenant", "PUT", "/v1/policies/p1", `{"direction":["egress"],"appliedTo":[{"segment":"web"}],"rules":[{}]}`,
			false, 400, api.ReasonInvalid, "appliedTo[0].segment: needs tenant"},
		{"trace without from", "GET", "/v1/policy/trace?to=10.0.0.1&proto=tcp&port=80", "", false, 400, api.ReasonInvalid, "query parameter from is required"},
		{"trace bad address", "GET", "/v1/policy/trace?from=x&to=10.0.0.1&port=80", "", false, 400, api.ReasonInvalid, `query parameter from: "x" is not an IP address`},
		{"trace bad port", "GET", "/v1/policy/trace?from=10.0.0.1&to=10.0.0.2&port=70000", "", false, 400, api.ReasonInvalid, `query parameter port: "70000" is not a number in 0-65535`},
		{"trace tcp without port", "GET", "/v1/policy/trace?from=10.0.0.1&to=10.0.0.2&proto=tcp", "", false, 400, api.ReasonInvalid, "trace: proto tcp needs a port"},
		{"trace unknown proto", "GET", "/v1/policy/trace?from=10.0.0.1&to=10.0.0.2&proto=gre", "", false, 400, api.ReasonInvalid, `trace: proto "gre" is not one of tcp, udp, sctp, icmp`},
		{"trace mixed families", "GET", "/v1/policy/trace?from=10.0.0.1&to=fd00::1&proto=icmp", "", false, 400, api.ReasonInvalid, "must be addresses of one family"},
		{"stats of unknown host", "PUT", "/v1/policy/stats/nope", `{"counters":[]}`, false, 404, api.ReasonNotFound, "host nope not found"},
		{"stats host mismatch", "PUT", "/v1/policy/stats/h0", `{"host":"h1","counters":[]}`, false, 400, api.ReasonInvalid, `host: "h1" does not match the path's host "h0"`},
		{"stats bad stage", "PUT", "/v1/policy/stats/h0", `{"counters":[{"policy":"p","rule":0,"stage":"up","packets":1,"bytes":1}]}`,
			false, 400, api.ReasonInvalid, `counters[0].stage: "up" is not ingress or egress`},

		{"remove host with addresses", "DELETE", "/v1/hosts/h0", "", false, 409, api.ReasonConflict,
			"host h0 still has 1 allocated address(es) in network blue; release them first"},
		{"remove network with addresses", "DELETE", "/v1/networks/blue", "", false, 409, api.ReasonConflict,
			"network blue still has 1 allocated address(es); release them first"},
		{"remove segment with addresses", "DELETE", "/v1/tenants/acme/segments/web", "", false, 409, api.ReasonConflict,
			"segment acme/web still has 1 allocated address(es)"},
		{"remove tenant with segments", "DELETE", "/v1/tenants/acme", "", false, 409, api.ReasonConflict,
			"tenant acme still has segment(s) db, web; remove them first"},
		{"remove unknown host", "DELETE", "/v1/hosts/nope", "", false, 404, api.ReasonNotFound, "host nope not found"},
		{"remove unknown network", "DELETE", "/v1/networks/nope", "", false, 404, api.ReasonNotFound, "network nope not found"},
		{"remove unknown policy", "DELETE", "/v1/policies/nope", "", false, 404, api.ReasonNotFound, "policy nope not found"},
		{"get unknown segment", "GET", "/v1/tenants/acme/segments/nope", "", false, 404, api.ReasonNotFound, "segment acme/nope not found"},
		{"list segments of unknown tenant", "GET", "/v1/tenants/nope/segments", "", false, 404, api.ReasonNotFound, "tenant nope not found"},
		{"get unknown address", "GET", "/v1/addresses/nope", "", false, 404, api.ReasonNotFound, "address nope not found"},

		{"decode bad ip", "GET", "/v1/decode?ip=x", "", false, 400, api.ReasonInvalid, `query parameter ip: "x" is not an IP address`},
		{"decode outside networks", "GET", "/v1/decode?ip=8.8.8.8", "", false, 404, api.ReasonNotFound, "address 8.8.8.8 is not in any network"},
		{"release bad ip", "DELETE", "/v1/addresses?ip=nope", "", false, 400, api.ReasonInvalid, "is not an IP address"},
		{"release without ip", "DELETE", "/v1/addresses", "", false, 400, api.ReasonInvalid, "query parameter ip is required"},
		{"unknown list filter", "GET", "/v1/addresses?colour=red", "", false, 400, api.ReasonInvalid, `unknown query parameter "colour"`},
		{"watch bad revision", "GET", "/v1/watch?revision=-3", "", false, 400, api.ReasonInvalid, `query parameter revision: "-3" is not a revision number`},
		{"unknown route", "GET", "/v1/nothing", "", false, 404, api.ReasonNotFound, "no route GET /v1/nothing"},
		{"method not allowed", "PATCH", "/v1/networks", `{}`, false, 405, api.ReasonInvalid, "method PATCH is not allowed on /v1/networks (allowed: GET, HEAD, POST)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := readStore(t, in)
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
				if tc.chunked {
					body = io.MultiReader(body) // hides the length: sent chunked
				}
			}
			var cl int64
			if tc.chunked {
				cl = -1
			}
			status, e, raw := raw(t, in, tc.method, tc.path, body, cl)
			if status != tc.status {
				t.Fatalf("status %d, want %d; body %.300s", status, tc.status, raw)
			}
			if e.Reason != tc.reason || e.Status != tc.status || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("error %+v\nwant reason %s, message containing %q", e, tc.reason, tc.msg)
			}
			if after := readStore(t, in); !after.equal(before) {
				t.Errorf("the store changed: revision %d -> %d, %d -> %d keys", before.rev, after.rev, len(before.kvs), len(after.kvs))
			}
		})
	}
	if status, _, _ := raw(t, in, "GET", "/healthz", nil, 0); status != http.StatusOK {
		t.Fatalf("healthz after bad input: %d", status)
	}
}
