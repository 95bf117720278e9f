package firewall

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/romana/romana/sim/simtest"
)

// The real adapter against the kernel in a simulated host.
func TestApplyInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	lab := simtest.New(t)
	h, err := lab.AddHost(ctx, "h1", netip.MustParsePrefix("192.168.60.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(t.TempDir(), "foreign.nft")
	if err := os.WriteFile(foreign, []byte("table ip foreign {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tcounter\n\t}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Exec(ctx, "nft", "-f", foreign); err != nil {
		t.Fatal(err)
	}
	var fw *Firewall
	if err := h.Do(func() (err error) { fw, err = New(nil); return err }); err != nil {
		t.Fatal(err)
	}
	rs := ruleset(t, "acme", "", "beta", "segment", "open", "none")
	apply := func(want bool, what string) {
		t.Helper()
		var changed bool
		if err := h.Do(func() (err error) { changed, err = fw.Apply(ctx, rs); return err }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != want {
			out, _ := h.Exec(ctx, "nft", "list", "table", "inet", "romana")
			t.Fatalf("%s: changed = %v, want %v; live table:\n%s", what, changed, want, out)
		}
	}
	nft := func(args ...string) string {
		t.Helper()
		out, err := h.Exec(ctx, append([]string{"nft"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	apply(true, "first apply")
	apply(false, "second apply (the live table reads as in sync)")
	if out := nft("list", "table", "inet", "romana"); !strings.Contains(out, Stamp(rs)) || !strings.Contains(out, "vmap @tenants-net1") {
		t.Fatalf("live table:\n%s", out)
	}
	for _, damage := range [][]string{
		{"flush", "table", "inet", "romana"},
		{"delete", "table", "inet", "romana"},
		{"delete", "element", "inet", "romana", "tenants-net1", "{ 10.0.16.0 }"},
		{"flush", "chain", "inet", "romana", "segment-2-1"},
		{"add", "rule", "inet", "romana", "tenant-1", "accept"},
	} {
		nft(damage...)
		apply(true, "repair after nft "+strings.Join(damage, " "))
		apply(false, "in sync after repairing "+strings.Join(damage, " "))
	}
	rs = ruleset(t, "acme", "")
	apply(true, "tenants removed")
	if out := nft("list", "chains", "inet"); strings.Contains(out, "segment-2-0") || strings.Contains(out, "tenant-3") {
		t.Fatalf("stale chains:\n%s", out)
	}
	if err := h.Do(func() error { return fw.Cleanup(ctx) }); err != nil {
		t.Fatal(err)
	}
	out := nft("list", "tables")
	if strings.Contains(out, "romana") || !strings.Contains(out, "table ip foreign") {
		t.Fatalf("after Cleanup the tables are:\n%s", out)
	}
}
