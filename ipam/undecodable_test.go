package ipam_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// TestUndecodableValues stores values that do not decode next to good
// objects of every kind: listings, the snapshot (over the API too) and a
// restart's repair leave them out and count them; getting one by name is an
// Internal error naming its key; everything else keeps working.
func TestUndecodableValues(t *testing.T) {
	var logs lockedBuffer
	in := servertest.Start(t, servertest.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	c := in.Client
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.AddNetwork(ctx, api.Network{Name: "blue", CIDR: "10.0.0.0/8", Fields: rackFields})
	must(err)
	for i := range 2 {
		_, err = c.AddHost(ctx, host(i, "ra"))
		must(err)
	}
	_, err = c.AddTenant(ctx, api.Tenant{Name: "t1"})
	must(err)
	_, err = c.AddSegment(ctx, api.Segment{Tenant: "t1", Name: "s1"})
	must(err)
	for i := range 2 {
		_, err = c.Allocate(ctx, api.AddressRequest{Name: fmt.Sprintf("a%d", i), Host: "h00", Tenant: "t1", Segment: "s1"})
		must(err)
	}
	var p api.Policy
	must(json.Unmarshal([]byte(`{"name":"p1","direction":["egress"],"appliedTo":[{"all":true}],"rules":[{"peers":[{"cidr":"0.0.0.0/0"}]}]}`), &p))
	_, err = c.PutPolicy(ctx, p)
	must(err)

	// Not JSON, and JSON of the wrong shape.
	bad := map[string]string{
		"networks/bad":    `{"name":`,
		"hosts/bad":       `not json`,
		"tenants/bad":     `{"name":"bad","id":"seven"}`,
		"segments/t1/bad": `[]`,
		"addresses/bad":   "\x00\xff",
		"policies/bad":    `{"name":"bad","rules":{}}`,
		"devices/bad":     `{`,
		"chains/bad":      `"x"`,
		"addresssets/bad": `{"name":"bad","addresses":["x"]}`,
		"pods/ns1/bad":    `nope`, // not in the snapshot
	}
	for k, v := range bad {
		_, err := in.Etcd().Put(ctx, in.Prefix+k, v)
		must(err)
	}
	reg := in.Registry()
	skipped := func(before uint64) uint64 { return reg.Stats().Undecodable - before }

	names := func(list any) string {
		var out []string
		b, _ := json.Marshal(list)
		var objs []struct {
			Name string `json:"name"`
		}
		must(json.Unmarshal(b, &objs))
		for _, o := range objs {
			out = append(out, o.Name)
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	n0 := reg.Stats().Undecodable
	for _, tc := range []struct {
		kind string
		list func() (any, error)
		want string
	}{
		{"networks", func() (any, error) { return c.ListNetworks(ctx) }, "blue"},
		{"hosts", func() (any, error) { return c.ListHosts(ctx) }, "h00 h01"},
		{"tenants", func() (any, error) { return c.ListTenants(ctx) }, "t1"},
		{"segments", func() (any, error) { return c.ListSegments(ctx, "") }, "s1"},
		{"segments of t1", func() (any, error) { return c.ListSegments(ctx, "t1") }, "s1"},
		{"addresses", func() (any, error) { return c.ListAddresses(ctx, api.AddressFilter{}) }, "a0 a1"},
		{"policies", func() (any, error) { return c.ListPolicies(ctx) }, "p1"},
		{"devices", func() (any, error) { return reg.ListDevices(ctx) }, ""},
		{"chains", func() (any, error) { return reg.ListChains(ctx) }, ""},
		{"address sets", func() (any, error) { return c.ListAddressSets(ctx) }, ""},
		{"pods", func() (any, error) { return c.ListPods(ctx, "") }, ""},
	} {
		before := reg.Stats().Undecodable
		list, err := tc.list()
		if err != nil {
			t.Errorf("list %s: %v", tc.kind, err)
			continue
		}
		if got := names(list); got != tc.want {
			t.Errorf("list %s = %q, want %q", tc.kind, got, tc.want)
		}
		if n := skipped(before); n != 1 {
			t.Errorf("list %s: Undecodable grew by %d, want 1", tc.kind, n)
		}
	}

	before := reg.Stats().Undecodable
	snap, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if n := skipped(before); n != uint64(len(bad)-1) {
		t.Errorf("snapshot: Undecodable grew by %d, want %d (every bad value but the pod record's)", n, len(bad)-1)
	}
	for kind, got := range map[string]string{
		"networks": names(snap.Networks), "hosts": names(snap.Hosts), "tenants": names(snap.Tenants),
		"segments": names(snap.Segments), "addresses": names(snap.Addresses), "policies": names(snap.Policies),
		"devices": names(snap.Devices), "chains": names(snap.Chains), "address sets": names(snap.AddressSets),
	} {
		want := map[string]string{"networks": "blue", "hosts": "h00 h01", "tenants": "t1", "segments": "s1",
			"addresses": "a0 a1", "policies": "p1"}[kind]
		if got != want {
			t.Errorf("snapshot %s = %q, want %q", kind, got, want)
		}
	}

	for k := range bad {
		if want := "key=" + in.Prefix + k; !strings.Contains(logs.String(), want) {
			t.Errorf("no warning with %s in the log:\n%s", want, logs.String())
		}
	}

	// One object by name: an Internal error that names the key.
	for _, get := range []struct {
		key string
		err error
	}{
		{"hosts/bad", func() error { _, err := c.GetHost(ctx, "bad"); return err }()},
		{"tenants/bad", func() error { _, err := c.GetTenant(ctx, "bad"); return err }()},
		{"addresses/bad", func() error { _, err := c.GetAddress(ctx, "bad"); return err }()},
		{"policies/bad", func() error { _, err := c.GetPolicy(ctx, "bad"); return err }()},
		{"addresssets/bad", func() error { _, err := c.GetAddressSet(ctx, "bad"); return err }()},
		{"pods/ns1/bad", func() error { _, err := c.GetPod(ctx, "ns1", "bad"); return err }()},
	} {
		if api.ReasonOf(get.err) != api.ReasonInternal || !strings.Contains(get.err.Error(), in.Prefix+get.key) {
			t.Errorf("get %s: %v, want an Internal error naming %s", get.key, get.err, in.Prefix+get.key)
		}
	}

	// romanad's /metrics has the counter.
	resp, err := in.HTTP.Get(in.URL + "/metrics")
	must(err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^romana_store_undecodable_values_total (\d+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics lacks romana_store_undecodable_values_total")
	}
	if v, _ := strconv.ParseUint(string(m[1]), 10, 64); v < n0+11+uint64(len(bad)-1) {
		t.Errorf("/metrics: romana_store_undecodable_values_total %d, want at least %d", v, n0+11+uint64(len(bad)-1))
	}

	// A request that names its network allocates despite the bad one.
	if _, err := c.Allocate(ctx, api.AddressRequest{Name: "a2", Network: "blue", Host: "h01", Tenant: "t1", Segment: "s1"}); err != nil {
		t.Errorf("allocate in a named network: %v", err)
	}

	// A restart repairs around the bad host and network (romanad starts).
	in.Restart()
	c = in.Client
	// A new network must not overlap any: with one unreadable, adding is
	// refused, naming the key, until that network is removed.
	v6 := api.Network{Name: "v6", CIDR: "fd00::/48", Fields: []plan.Field{{Name: "rack", Bits: 2}, {Name: "host", Bits: 6},
		{Name: "tenant", Bits: 8}, {Name: "segment", Bits: 8}}}
	if _, err := c.AddNetwork(ctx, v6); api.ReasonOf(err) != api.ReasonInternal || !strings.Contains(err.Error(), in.Prefix+"networks/bad") {
		t.Fatalf("add a network next to an undecodable one: %v, want an Internal error naming it", err)
	}
	must(c.RemoveNetwork(ctx, "bad"))
	// The new network places every good host, skipping the bad one.
	_, err = c.AddNetwork(ctx, v6)
	must(err)
	for _, h := range []string{"h00", "h01"} {
		got, err := c.GetHost(ctx, h)
		must(err)
		if len(got.Slots) != 2 {
			t.Errorf("host %s slots %+v, want blue and v6", h, got.Slots)
		}
	}
	if _, err := c.Allocate(ctx, api.AddressRequest{Name: "a3", Network: "v6", Host: "h01", Tenant: "t1", Segment: "s1"}); err != nil {
		t.Errorf("allocate in the new network: %v", err)
	}
}

// lockedBuffer is a log destination safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
