package firewall

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/sim/simtest"
)

// mergingFake is knftables' fake with the kernel's behaviour for adding an
// existing flowtable, which the fake ignores: the devices listed are added
// to it. It records the transactions but those that only store listing
// sums.
type mergingFake struct {
	*knftables.Fake
	writes []string
}

func (m *mergingFake) Run(ctx context.Context, tx *knftables.Transaction) error {
	existing := map[string]bool{}
	if m.Table != nil {
		for name := range m.Table.Flowtables {
			existing[name] = true
		}
	}
	s := tx.String()
	if !strings.Contains(s, sumChain) {
		m.writes = append(m.writes, s)
	}
	if err := m.Fake.Run(ctx, tx); err != nil {
		return err
	}
	replaced := strings.Contains(s, "delete table ")
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(line, "add flowtable "+string(Family)+" "+hoststate.Table+" ")
		if !ok || replaced {
			continue
		}
		name, _, _ := strings.Cut(rest, " ")
		if !existing[name] {
			continue
		}
		ft := m.Table.Flowtables[name]
		for _, d := range listedDevices([]string{rest}) {
			q := `"` + d + `"`
			if !slices.Contains(ft.Devices, q) {
				ft.Devices = append(ft.Devices, q)
			}
		}
	}
	return nil
}

// flowtableRuleset is h1's ruleset with the flowtable, for endpoints
// with the given veths (tenant acme).
func flowtableRuleset(t testing.TB, flowtable bool, veths ...string) hoststate.Ruleset {
	t.Helper()
	n := api.Network{Name: "net1", CIDR: "10.0.0.0/8", Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		t.Fatal(err)
	}
	snap := api.Snapshot{Networks: []api.Network{n}, Hosts: []api.Host{{Name: "h1", IP: netip.MustParseAddr("192.168.0.1"),
		Slots: []api.HostSlot{{Network: "net1", Loc: plan.Loc{Host: 1}, CIDR: netip.MustParsePrefix("10.1.0.0/16")}}}},
		Tenants:  []api.Tenant{{Name: "acme", ID: 1}},
		Segments: []api.Segment{{Tenant: "acme", Name: "a", ID: 0}}}
	for i, v := range veths {
		ip, err := p.Address(plan.Loc{Host: 1}, 1, 0, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		snap.Addresses = append(snap.Addresses, api.Address{Name: v, IP: ip, Network: "net1", Host: "h1", Tenant: "acme", Segment: "a", Interface: v})
	}
	st, err := hoststate.Compute(snap, "h1", hoststate.Options{Flowtable: flowtable})
	if err != nil || len(st.Problems) > 0 {
		t.Fatal(err, st.Problems)
	}
	return st.Firewall
}

// fakeDevices returns the devices of the fake's flowtable, unquoted, sorted.
func fakeDevices(t *testing.T, fake *knftables.Fake) []string {
	t.Helper()
	ft := fake.Table.Flowtables[hoststate.FlowtableName]
	if ft == nil {
		t.Fatalf("no flowtable:\n%s", fake.Dump())
	}
	var out []string
	for _, d := range ft.Devices {
		out = append(out, strings.Trim(d, `"`))
	}
	slices.Sort(out)
	return out
}

// The flowtable is created with the table; a new endpoint's device is
// added to it without replacing the table (which would drop every
// offloaded flow and rewrite every policy chain); a device already there
// writes nothing; turning the flowtable off replaces the table without it.
func TestFlowtableOnFake(t *testing.T) {
	ctx := context.Background()
	fake := &mergingFake{Fake: knftables.NewFake(Family, hoststate.Table)}
	fw := NewWith(fake, nil)
	apply := func(rs hoststate.Ruleset, want bool, what string) {
		t.Helper()
		fake.writes = nil
		changed, err := fw.Apply(ctx, rs)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != want {
			t.Fatalf("%s: changed = %v, want %v\n%s", what, changed, want, fake.Dump())
		}
	}
	one := flowtableRuleset(t, true, "rv-a")
	apply(one, true, "first apply")
	if got := fakeDevices(t, fake.Fake); !slices.Equal(got, []string{"rv-a"}) {
		t.Fatalf("devices %v", got)
	}
	if d := fake.Dump(); !strings.Contains(d, "flow add @"+hoststate.FlowtableName) {
		t.Fatalf("no offload rule:\n%s", d)
	}
	apply(one, false, "in sync")

	two := flowtableRuleset(t, true, "rv-a", "rv-b")
	if Stamp(two) != Stamp(one) {
		t.Fatalf("a new device changes the stamp")
	}
	apply(two, true, "new endpoint")
	if got := fakeDevices(t, fake.Fake); !slices.Equal(got, []string{"rv-a", "rv-b"}) {
		t.Fatalf("devices %v", got)
	}
	if len(fake.writes) != 1 || strings.Contains(fake.writes[0], "delete table") || strings.Contains(fake.writes[0], "rule") {
		t.Fatalf("new endpoint: writes %q, want one adding the device", fake.writes)
	}
	apply(two, false, "in sync with two devices")
	// An endpoint gone: its device stays (harmless; the kernel unhooks a
	// deleted device), nothing is written.
	apply(one, false, "endpoint removed")

	// The flowtable deleted behind our back is found and the table replaced.
	tx := fake.NewTransaction()
	tx.Delete(&knftables.Flowtable{Name: hoststate.FlowtableName})
	if err := fake.Fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	apply(one, true, "flowtable deleted")
	if len(fake.writes) == 0 || !strings.Contains(fake.writes[0], "delete table") {
		t.Fatalf("flowtable deleted: writes %q, want a replacement", fake.writes)
	}

	off := flowtableRuleset(t, false, "rv-a")
	apply(off, true, "flowtable off")
	if fake.Table.Flowtables[hoststate.FlowtableName] != nil || strings.Contains(fake.Dump(), "flow add") {
		t.Fatalf("flowtable off:\n%s", fake.Dump())
	}
	if ok, err := fw.Apply(ctx, off); err != nil || ok {
		t.Fatalf("flowtable off, again: changed %v err %v", ok, err)
	}
}

func TestListedDevices(t *testing.T) {
	for _, c := range []struct {
		lines []string
		want  []string
	}{
		{[]string{"hook ingress priority filter", "devices = { eth0, rv-a1 }"}, []string{"eth0", "rv-a1"}},
		{[]string{"hook ingress priority filter", "devices = { eth0 }"}, []string{"eth0"}},
		{[]string{"hook ingress priority filter"}, nil},
		{[]string{`{ hook ingress priority filter ; devices = { "rv-b", "eth0" } ; }`}, []string{"eth0", "rv-b"}},
	} {
		if got := listedDevices(c.lines); !slices.Equal(got, c.want) {
			t.Errorf("listedDevices(%q) = %q, want %q", c.lines, got, c.want)
		}
	}
	if got := missingDevices([]string{"a", "b", "c"}, []string{"b", "z"}); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("missingDevices = %q", got)
	}
}

// The probe agrees with the kernel: it reports support exactly when a
// flowtable can really be created (in a scratch namespace).
func TestFlowtableSupportInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	h, err := simtest.New(t).AddHost(ctx, "h1", netip.MustParsePrefix("192.168.62.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	var probe error
	if err := h.Do(func() error {
		fw, err := New(nil)
		if err != nil {
			return err
		}
		probe = fw.FlowtableSupport(ctx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, real := h.Exec(ctx, "nft", "add table inet scratch; add flowtable inet scratch ft { hook ingress priority filter; devices = { lo }; }")
	if (probe == nil) != (real == nil) {
		t.Fatalf("probe says %v, creating a flowtable says %v", probe, real)
	}
	if out, _ := h.Exec(ctx, "nft", "list", "tables"); strings.Contains(out, "romana") {
		t.Fatalf("the probe left a table behind: %s", out)
	}
	t.Logf("flowtable support: %v", probe)
}
