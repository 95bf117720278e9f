package hoststate

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

var markSet = regexp.MustCompile(`meta mark set (0x[0-9a-f]+)|\| (0x[0-9a-f]+)$`)

// FuzzComputeSteering feeds arbitrary snapshots to ComputeSteering: it must
// never panic, and its output must be consistent: one ip rule per table,
// tables in the chain range, a rule for every route's table and for every
// hop mark the nft rules set, comments and interface names safe for nft.
func FuzzComputeSteering(f *testing.F) {
	for _, host := range []string{"h1", "h2", "h3"} {
		l, _ := chainLab(f)
		seed, _ := json.Marshal(l.snap)
		f.Add(seed, host, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, host string, alive bool) {
		var s api.Snapshot
		if err := json.Unmarshal(data, &s); err != nil {
			return
		}
		st, err := ComputeSteering(s, host, func(netip.Addr) bool { return alive })
		if err != nil {
			return
		}
		ruled := map[int]uint32{}
		marks := map[uint32]bool{}
		for _, r := range st.IPRules {
			if _, dup := ruled[r.Table]; dup {
				t.Fatalf("two ip rules for table %d", r.Table)
			}
			if r.Table < TableBase || r.Table > RouteTable(api.MaxChainID, 15) || r.Mark&MarkMask != r.Mark || r.Mark&MarkBit == 0 {
				t.Fatalf("ip rule %s out of range", r)
			}
			ruled[r.Table] = r.Mark
			marks[r.Mark] = true
		}
		for i, r := range st.Routes {
			if _, ok := ruled[r.Table]; !ok {
				t.Fatalf("route %s: no ip rule looks up its table", r)
			}
			if i > 0 && st.Routes[i-1].Table >= r.Table {
				t.Fatalf("routes not sorted or two in table %d", r.Table)
			}
			if !r.Blackhole && !r.Via.IsValid() {
				t.Fatalf("route %s: no next hop", r)
			}
		}
		if !slices.IsSorted(st.Problems) {
			t.Fatal("problems not sorted")
		}
		for _, r := range append(slices.Clone(st.Rules), st.Raw...) {
			if strings.ContainsAny(r.Comment, "\"\n") || len(r.Comment) > 128 {
				t.Fatalf("comment %q is not safe for nft", r.Comment)
			}
			if i := strings.Index(r.Expr, `iifname "`); i >= 0 {
				name, _, _ := strings.Cut(r.Expr[i+len(`iifname "`):], `"`)
				if !api.IsLinkName(name) {
					t.Fatalf("rule %q: interface %q", r.Expr, name)
				}
			}
			for _, m := range markSet.FindAllStringSubmatch(r.Expr, -1) {
				v := m[1] + m[2]
				x, err := strconv.ParseUint(v, 0, 32)
				if err != nil {
					t.Fatalf("rule %q: mark %q", r.Expr, v)
				}
				if x&0xf != 0 && !marks[uint32(x)] {
					t.Fatalf("rule %q sets mark %#x that no ip rule looks up", r.Expr, x)
				}
			}
		}
	})
}
