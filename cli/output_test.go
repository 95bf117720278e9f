package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/plan"
)

var (
	sampleNetworks = []api.Network{
		{Name: "main", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 4}}, EndpointBits: 4},
		{Name: "dc1", CIDR: "172.16.0.0/12", Fields: []plan.Field{{Name: "rack", Bits: 4}, {Name: "host", Bits: 6}, {Name: "tenant", Bits: 6}, {Name: "segment", Bits: 2}},
			Tenants: []string{"acme", "globex"}, EndpointBits: 2},
	}
	sampleHosts = []api.Host{
		{Name: "h2", IP: netip.MustParseAddr("192.168.2.12"), Labels: map[string]string{"rack": "r2", "zone": "a"},
			Slots: []api.HostSlot{
				{Network: "main", Loc: plan.Loc{Host: 2}, CIDR: netip.MustParsePrefix("10.2.0.0/16")},
				{Network: "dc1", Loc: plan.Loc{Groups: []uint64{1}, Host: 0}, CIDR: netip.MustParsePrefix("172.17.0.0/16")},
			}},
		{Name: "h1", IP: netip.MustParseAddr("192.168.1.11"),
			Slots: []api.HostSlot{{Network: "main", Loc: plan.Loc{Host: 1}, CIDR: netip.MustParsePrefix("10.1.0.0/16")}}},
	}
	statusTime   = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	sampleStatus = api.Status{Time: statusTime, StoreRevision: 42, Hosts: []api.HostStatus{
		{Host: "h1", State: api.StateConverged, Revision: 42, LastReport: statusTime.Add(-1200 * time.Millisecond),
			LastSync: statusTime.Add(-3 * time.Second), Report: &api.AgentStatus{Version: "v1.2.0 (0123456789ab) go1.26.0"}},
		{Host: "h2", State: api.StateUnreachable, Revision: 40, LastReport: statusTime.Add(-75 * time.Second),
			LastSync: statusTime.Add(-80 * time.Second), Report: &api.AgentStatus{Version: "dev"},
			Reasons: []string{"no report for 1m15s (the agent reports every 5s)"}},
		{Host: "h3", State: api.StateProblems, Revision: 42, LastReport: statusTime.Add(-2 * time.Second),
			Report:  &api.AgentStatus{Version: "dev"},
			Reasons: []string{"last reconciliation failed: routes: permission denied", "problem: address x: unknown tenant t"}},
		{Host: "h4", State: api.StateUnreachable, Reasons: []string{"no report since romanad started 3s ago"}},
	}}
	sampleAddresses = []api.Address{
		{Name: "web-2", IP: netip.MustParseAddr("10.1.1.18"), Network: "main", Host: "h1", Tenant: "acme", Segment: "web"},
		{Name: "db-1", IP: netip.MustParseAddr("10.2.1.33"), Network: "main", Host: "h2", Tenant: "acme", Segment: "db", Interface: "veth1a2b"},
		{Name: "web-1", IP: netip.MustParseAddr("10.1.1.17"), Network: "main", Host: "h1", Tenant: "acme", Segment: "web", Attrs: map[string]string{"pod": "web-1"}},
	}
	sampleDecoded = api.DecodedAddress{IP: netip.MustParseAddr("10.1.1.27"), Network: "main", Loc: plan.Loc{Host: 1}, Host: "h1",
		TenantID: 1, Tenant: "acme", SegmentID: 1, Segment: "web", Endpoint: 11}
	samplePolicies = []api.Policy{
		{Name: "web-from-lb", Description: "lb to web", Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{Tenant: "acme", Segment: "web"}},
			Rules:     []api.Rule{{Peers: []api.Peer{{CIDR: "192.168.0.0/24"}}, Protocol: "tcp", Ports: []uint16{80, 443}}}},
		{Name: "deny-all-egress", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: "deny"}}},
		{Name: "admin", Direction: []string{"ingress", "egress"}, AppliedTo: []api.Selector{{Host: "h1"}, {Tenant: "ops"}},
			Rules: []api.Rule{{}, {}}},
	}
)

func render(t *testing.T, format string, v any, table func(io.Writer)) string {
	t.Helper()
	var b bytes.Buffer
	if err := emit(&b, format, v, table); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestTables: the table form of each object kind, sorted as the list
// commands sort, with aligned columns.
func TestTables(t *testing.T) {
	var b strings.Builder
	section := func(title string, table func(io.Writer)) {
		b.WriteString("== " + title + "\n")
		b.WriteString(render(t, OutputTable, nil, table))
		b.WriteString("\n")
	}
	ns := sortNetworks(sampleNetworks)
	section("network list", func(w io.Writer) { writeNetworks(w, ns) })
	section("network show dc1", func(w io.Writer) { writeNetwork(w, sampleNetworks[1]) })
	section("host list", func(w io.Writer) { writeHostList(w, sortHosts(sampleHosts), sampleStatus) })
	section("host add", func(w io.Writer) { writeHosts(w, sampleHosts[1:]) })
	section("status", func(w io.Writer) { writeStatus(w, sampleStatus) })
	section("host show h2", func(w io.Writer) { writeHost(w, sampleHosts[0]) })
	section("tenant list", func(w io.Writer) {
		writeTenants(w, []api.Tenant{{Name: "acme", ID: 1}, {Name: "shared", ID: 2, Isolation: "none"}})
	})
	section("segment list", func(w io.Writer) {
		writeSegments(w, []api.Segment{{Tenant: "acme", Name: "db", ID: 2}, {Tenant: "acme", Name: "web", ID: 1}})
	})
	as := sortAddresses(sampleAddresses)
	section("address list", func(w io.Writer) { writeAddresses(w, as) })
	section("address decode", func(w io.Writer) { writeDecoded(w, sampleDecoded) })
	section("address decode (free, unknown ids)", func(w io.Writer) {
		writeDecoded(w, api.DecodedAddress{IP: netip.MustParseAddr("10.9.7.33"), Network: "main", Loc: plan.Loc{Host: 9}, TenantID: 7, SegmentID: 2, Endpoint: 1})
	})
	ps := sortPolicies(samplePolicies)
	section("policy list", func(w io.Writer) { writePolicies(w, ps) })
	expect.Golden(t, "tables.txt", b.String())

	// Sorting is by IP, and by evaluation order for policies.
	if as[0].Name != "web-1" || as[1].Name != "web-2" || as[2].Name != "db-1" {
		t.Errorf("addresses not sorted by IP: %v", as)
	}
	if ps[0].Name != "deny-all-egress" || ps[1].Name != "admin" || ps[2].Name != "web-from-lb" {
		t.Errorf("policies not in evaluation order: %v", ps)
	}
}

// TestJSONAndYAML: -o json and -o yaml print the API objects themselves, so
// that they decode back to what the server sent.
func TestJSONAndYAML(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		back func() any
	}{
		{"networks", sampleNetworks, func() any { return &[]api.Network{} }},
		{"hosts", sampleHosts, func() any { return &[]api.Host{} }},
		{"addresses", sampleAddresses, func() any { return &[]api.Address{} }},
		{"decoded", sampleDecoded, func() any { return &api.DecodedAddress{} }},
		{"policies", samplePolicies, func() any { return &[]api.Policy{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := render(t, OutputJSON, tc.v, nil)
			got := tc.back()
			if err := json.Unmarshal([]byte(j), got); err != nil {
				t.Fatalf("json output does not decode: %v\n%s", err, j)
			}
			if !reflect.DeepEqual(reflect.ValueOf(got).Elem().Interface(), tc.v) {
				t.Errorf("json round trip differs:\n%s", j)
			}
			y := render(t, OutputYAML, tc.v, nil)
			got = tc.back()
			if err := yaml.UnmarshalStrict([]byte(y), got); err != nil {
				t.Fatalf("yaml output does not decode: %v\n%s", err, y)
			}
			if !reflect.DeepEqual(reflect.ValueOf(got).Elem().Interface(), tc.v) {
				t.Errorf("yaml round trip differs:\n%s", y)
			}
		})
	}
	// An empty list is [] in JSON, not null.
	if got := render(t, OutputJSON, sortAddresses(nil), nil); got != "[]\n" {
		t.Errorf("empty list as JSON: %q", got)
	}
	if got := render(t, OutputYAML, sortNetworks(nil), nil); got != "[]\n" {
		t.Errorf("empty list as YAML: %q", got)
	}
	expect.Golden(t, "address.yaml", render(t, OutputYAML, sampleAddresses[1], nil))
}

func TestReadPolicies(t *testing.T) {
	one := api.Policy{Name: "p1", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
		Rules: []api.Rule{{Protocol: "tcp", Ports: []uint16{80}}}}
	two := api.Policy{Name: "p2", Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}}, Rules: []api.Rule{{Action: "deny"}}}
	for _, tc := range []struct {
		name, in string
		want     []api.Policy
		err      string
	}{
		{"json object", `{"name":"p1","direction":["ingress"],"appliedTo":[{"tenant":"acme"}],"rules":[{"protocol":"tcp","ports":[80]}]}`,
			[]api.Policy{one}, ""},
		{"yaml object", "name: p1\ndirection: [ingress]\nappliedTo:\n- tenant: acme\nrules:\n- protocol: tcp\n  ports: [80]\n",
			[]api.Policy{one}, ""},
		{"json list", `[{"name":"p1","direction":["ingress"],"appliedTo":[{"tenant":"acme"}],"rules":[{"protocol":"tcp","ports":[80]}]},
			{"name":"p2","direction":["egress"],"appliedTo":[{"all":true}],"rules":[{"action":"deny"}]}]`, []api.Policy{one, two}, ""},
		{"yaml list", "- name: p1\n  direction: [ingress]\n  appliedTo: [{tenant: acme}]\n  rules: [{protocol: tcp, ports: [80]}]\n" +
			"- name: p2\n  direction: [egress]\n  appliedTo: [{all: true}]\n  rules: [{action: deny}]\n", []api.Policy{one, two}, ""},
		// Errors say what is wrong in the file's terms, where: no Go
		// function, type or package names.
		{"unknown field", "name: p1\ndirections: [ingress]\n", nil, `f.yaml: line 2, column 1: unknown field "directions" (did you mean "direction"?)`},
		{"unknown nested field", "name: p1\nrules: [{proto: tcp}]\n", nil, `f.yaml: line 2, column 10: unknown field "proto" in rules[0] (did you mean "protocol"?)`},
		{"misspelt field in a list", "- name: p1\n  rules:\n  - protocl: tcp\n", nil, `f.yaml: line 3, column 5: unknown field "protocl" in [0].rules[0] (did you mean "protocol"?)`},
		{"unknown field far from any", "name: p1\ncolour: red\n", nil,
			`f.yaml: line 2, column 1: unknown field "colour" (known fields: appliedTo, description, direction, log, name, priority, rules, tier)`},
		{"json unknown field", "{\n  \"name\": \"p1\",\n  \"rules\": [{\"protocl\": \"tcp\"}]\n}", nil,
			`f.yaml: line 3, column 14: unknown field "protocl" in rules[0] (did you mean "protocol"?)`},
		{"empty list", "[]", nil, "f.yaml: empty list of policies"},
		{"bad port", "name: p1\nrules: [{ports: [70000]}]\n", nil,
			"f.yaml: line 2, column 18: rules[0].ports[0]: want a whole number from 0 to 65535, got the number 70000"},
		{"quoted port", "name: p1\nrules:\n- ports: [\"80\"]\n", nil,
			`f.yaml: line 3, column 11: rules[0].ports[0]: want a whole number from 0 to 65535, got "80"`},
		{"string for a list", "name: p1\ndirection: ingress\n", nil, `f.yaml: line 2, column 12: direction: want a list, got "ingress"`},
		{"number for a string", "name: 42\n", nil, `f.yaml: line 1, column 7: name: want text, got the number 42 (quote it: "42")`},
		{"json type", `{"name": "p1", "priority": "high"}`, nil, `f.yaml: line 1, column 28: priority: want a whole number, got "high"`},
		{"twice", "name: p1\nname: p2\n", nil, `f.yaml: line 2, column 1: field "name" given twice (also on line 1)`},
		{"syntax", "name: p1\n  rules: [\n", nil, `f.yaml: not valid JSON or YAML: line 2: mapping values are not allowed in this context`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readPolicies("f.yaml", []byte(tc.in))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseLoc(t *testing.T) {
	for in, want := range map[string]plan.Loc{
		"7":     {Host: 7},
		"2.7":   {Groups: []uint64{2}, Host: 7},
		"1.2.3": {Groups: []uint64{1, 2}, Host: 3},
	} {
		got, err := parseLoc(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseLoc(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1..2", "-1", "x", "1.2."} {
		if _, err := parseLoc(bad); err == nil {
			t.Errorf("parseLoc(%q) accepted", bad)
		}
	}
}
