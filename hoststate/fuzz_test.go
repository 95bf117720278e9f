package hoststate

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

// FuzzCompute feeds arbitrary snapshots (as JSON) to Compute: it must
// never panic, and whatever it returns must be well formed: routes sorted
// with unique destinations and a device or a next hop, never into a
// special range, via an address that is no underlay address or to a
// device that is no endpoint interface; every jump/goto and vmap naming an
// existing chain or map, every "@name" an existing map or set.
func FuzzCompute(f *testing.F) {
	l := demoLab(f)
	seed, _ := json.Marshal(l.snap)
	f.Add(seed, false)
	f.Add(seed, true)
	l.snap.Policies = tierPolicies()
	l.snap.AddressSets = []api.AddressSet{{Name: "quarantined", Addresses: []netip.Addr{netip.MustParseAddr("10.1.16.2"), netip.MustParseAddr("fd00::9")}},
		{Name: "db-clients", Addresses: []netip.Addr{netip.MustParseAddr("10.2.16.1")}}}
	tiers, _ := json.Marshal(l.snap)
	f.Add(tiers, false)
	f.Add([]byte(`{"hosts":[{"name":"h1","ip":"192.168.0.1","slots":[{"network":"n","loc":{"host":1},"cidr":"10.1.0.0/16"}]}],
		"networks":[{"name":"n","cidr":"10.0.0.0/8","fields":[{"name":"host","bits":8},{"name":"tenant","bits":8},{"name":"segment","bits":8}]}],
		"tenants":[{"name":"t","id":300,"isolation":"segment"}],"segments":[{"tenant":"t","name":"s","id":1}],
		"addresses":[{"name":"a","ip":"10.1.1.1","network":"n","host":"h1","interface":"x"}]}`), false)
	f.Fuzz(func(t *testing.T, data []byte, fabric bool) {
		var s api.Snapshot
		if err := json.Unmarshal(data, &s); err != nil {
			return
		}
		mode := ModeFlat
		if fabric {
			mode = ModeFabric
		}
		st, err := Compute(s, "h1", Options{Mode: mode})
		if err != nil {
			return
		}
		for i, r := range st.Routes {
			if (r.Dev == "") == !r.Via.IsValid() {
				t.Fatalf("route %s: exactly one of dev and via must be set", r)
			}
			if i > 0 && CompareRoutes(st.Routes[i-1], r) >= 0 {
				t.Fatalf("routes not sorted or not unique: %s, %s", st.Routes[i-1], r)
			}
			if i > 0 && st.Routes[i-1].Dst == r.Dst {
				t.Fatalf("two routes to %s", r.Dst)
			}
			if !r.Dst.IsValid() || r.Dst != r.Dst.Masked() && r.Dev == "" {
				t.Fatalf("route %s: bad destination", r)
			}
			if r.Dev != "" && api.CheckEndpointInterface(r.Dev) != nil {
				t.Fatalf("route %s: not an endpoint interface", r)
			}
			if r.Dev == "" && api.CheckHostIP(r.Via) != nil {
				t.Fatalf("route %s: next hop is no underlay address", r)
			}
			if _, special := api.SpecialRange(r.Dst); special {
				t.Fatalf("route %s: destination in a special range", r)
			}
		}
		if !slices.IsSorted(st.Problems) {
			t.Fatal("problems not sorted")
		}
		chains := map[string]bool{}
		for _, c := range st.Firewall.Chains {
			if chains[c.Name] {
				t.Fatalf("chain %s twice", c.Name)
			}
			chains[c.Name] = true
		}
		maps := map[string]bool{} // and sets
		for _, s := range st.Firewall.Sets {
			maps[s.Name] = true
		}
		for _, m := range st.Firewall.Maps {
			maps[m.Name] = true
			for _, e := range m.Elements {
				if _, err := netip.ParseAddr(e.Key); err != nil {
					t.Fatalf("map %s: key %q", m.Name, e.Key)
				}
				if !chains[strings.TrimPrefix(e.Verdict, "goto ")] {
					t.Fatalf("map %s: verdict %q names no chain", m.Name, e.Verdict)
				}
			}
		}
		for _, c := range st.Firewall.Chains {
			for _, r := range c.Rules {
				f := strings.Fields(r.Expr)
				for i, w := range f {
					switch {
					case (w == "jump" || w == "goto") && i+1 < len(f) && !chains[f[i+1]]:
						t.Fatalf("chain %s: %q names no chain", c.Name, r.Expr)
					case strings.HasPrefix(w, "@") && !maps[w[1:]]:
						t.Fatalf("chain %s: %q names no map or set", c.Name, r.Expr)
					}
				}
				if strings.ContainsAny(r.Comment, "\"\n") || len(r.Comment) > 128 {
					t.Fatalf("chain %s: comment %q is not safe for nft", c.Name, r.Comment)
				}
			}
		}
	})
}
