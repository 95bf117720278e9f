package hoststate

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/expect"
)

// withoutFlowtable is rs with its flowtables and offload rules taken out.
func withoutFlowtable(rs Ruleset) Ruleset {
	out := rs
	out.Flowtables = nil
	out.Chains = slices.Clone(rs.Chains)
	for i, c := range out.Chains {
		out.Chains[i].Rules = slices.DeleteFunc(slices.Clone(c.Rules), IsFlowAdd)
	}
	return out
}

// The flowtable, on h1 of the demo lab with the underlay known: the
// devices are the endpoint veths and the uplink (eth0, holding h1's
// address), and the offload rules sit right before the established
// rule, after anti-spoofing.
func TestFlowtableGolden(t *testing.T) {
	l := demoLab(t)
	l.snap.Policies = demoPolicies()
	u := h1Underlay(l.snap, false)
	st, err := Compute(l.snap, "h1", Options{Mode: ModeFlat, Underlay: u, Flowtable: true})
	if err != nil {
		t.Fatal(err)
	}
	expect.Golden(t, "flowtable-h1.txt", st.Firewall.String())
	nftSyntaxCheck(t, st.Firewall)
	if len(st.Firewall.Flowtables) != 1 {
		t.Fatalf("flowtables %v, want one", st.Firewall.Flowtables)
	}
	ft := st.Firewall.Flowtables[0]
	want := []string{"eth0"}
	for _, a := range l.snap.Addresses {
		if a.Host == "h1" {
			want = append(want, a.Interface)
		}
	}
	slices.Sort(want)
	if !slices.Equal(ft.Devices, want) || len(ft.Pending) != 0 {
		t.Errorf("devices %v pending %v, want devices %v", ft.Devices, ft.Pending, want)
	}
	fwd := st.Firewall.Chain(ChainForward)
	first := slices.IndexFunc(fwd.Rules, IsFlowAdd)
	est := slices.IndexFunc(fwd.Rules, func(r Rule) bool { return r.Expr == "ct state established,related accept" })
	if first < 0 || est != first+2 || !IsFlowAdd(fwd.Rules[first+1]) {
		t.Errorf("offload rules at %d, established rule at %d; want two offload rules right before it\n%s", first, est, st.Firewall)
	}
	for _, r := range fwd.Rules[:first] {
		if !strings.Contains(r.Expr, " drop") {
			t.Errorf("rule %q before the offload rules is no anti-spoofing drop", r.Expr)
		}
	}
}

// The evaluator (which knows isolation, not policy chains) gives a new
// connection the same verdict with and without the flowtable.
func TestFlowtableSameVerdicts(t *testing.T) {
	l := demoLab(t)
	u := h1Underlay(l.snap, true)
	off, err := Compute(l.snap, "h1", Options{Underlay: u})
	if err != nil {
		t.Fatal(err)
	}
	on, err := Compute(l.snap, "h1", Options{Underlay: u, Flowtable: true})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	verdicts := map[string]int{}
	for i := 0; i < 2000; i++ {
		s := l.snap.Addresses[r.IntN(len(l.snap.Addresses))].IP
		d := l.snap.Addresses[r.IntN(len(l.snap.Addresses))].IP
		a, b := evaluate(t, on.Firewall, s, d), evaluate(t, off.Firewall, s, d)
		if a != b {
			t.Fatalf("%s -> %s: %s with the flowtable, %s without", s, d, a, b)
		}
		verdicts[a]++
	}
	if verdicts["accept"] == 0 || verdicts["drop"] == 0 {
		t.Errorf("verdicts %v: the test covers no accept or no drop", verdicts)
	}
}

// The flowtable changes nothing else: without its flowtable and offload
// rules, the ruleset is the one computed without the option, so a new
// connection meets the same policies and isolation (the evaluator, like
// the kernel, sees a first packet as neither established nor invalid).
func TestFlowtableLeavesNewConnectionsAlone(t *testing.T) {
	l := demoLab(t)
	l.snap.Policies = demoPolicies()
	u := h1Underlay(l.snap, true)
	for _, mode := range []Mode{ModeFlat, ModeFabric} {
		off, err := Compute(l.snap, "h1", Options{Mode: mode, Underlay: u})
		if err != nil {
			t.Fatal(err)
		}
		on, err := Compute(l.snap, "h1", Options{Mode: mode, Underlay: u, Flowtable: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(off.Firewall.Flowtables) != 0 || slices.ContainsFunc(off.Firewall.Chain(ChainForward).Rules, IsFlowAdd) {
			t.Fatalf("%s: flowtable without the option:\n%s", mode, off.Firewall)
		}
		if on.Firewall.String() == off.Firewall.String() {
			t.Fatalf("%s: the option changed nothing", mode)
		}
		if got := withoutFlowtable(on.Firewall); !reflect.DeepEqual(got, off.Firewall) {
			t.Fatalf("%s: without the flowtable the ruleset differs:\n%s\nwant\n%s", mode, got, off.Firewall)
		}
		// WithoutPolicies (the agent leaving out policies nft rejects)
		// keeps the flowtable.
		if w := on.Firewall.WithoutPolicies(func(string) bool { return true }); !reflect.DeepEqual(w.Flowtables, on.Firewall.Flowtables) {
			t.Errorf("%s: WithoutPolicies dropped the flowtable", mode)
		}
	}
}

// An endpoint whose veth does not exist yet is pending, not listed (the
// kernel refuses a hook on a missing device); with no underlay known,
// every endpoint device is listed and there is no uplink.
func TestFlowtablePendingDevice(t *testing.T) {
	l := demoLab(t)
	u := h1Underlay(l.snap, false)
	late := l.endpoint(1, 1, 0, 9) // after the underlay was read
	st, err := Compute(l.snap, "h1", Options{Underlay: u, Flowtable: true})
	if err != nil {
		t.Fatal(err)
	}
	ft := st.Firewall.Flowtables[0]
	if slices.Contains(ft.Devices, late.Interface) || !slices.Equal(ft.Pending, []string{late.Interface}) {
		t.Errorf("devices %v pending %v; want %s pending only", ft.Devices, ft.Pending, late.Interface)
	}
	if strings.Contains(st.Firewall.String(), late.Interface) {
		t.Errorf("a pending device is in the nft text")
	}
	st, err = Compute(l.snap, "h1", Options{Flowtable: true})
	if err != nil {
		t.Fatal(err)
	}
	ft = st.Firewall.Flowtables[0]
	if !slices.Contains(ft.Devices, late.Interface) || slices.Contains(ft.Devices, "eth0") || len(ft.Pending) != 0 {
		t.Errorf("no underlay: devices %v pending %v", ft.Devices, ft.Pending)
	}
	// A host without endpoints or uplink: a flowtable without devices.
	l2 := newLab(t, 2)
	st, err = Compute(l2.snap, "h1", Options{Flowtable: true})
	if err != nil {
		t.Fatal(err)
	}
	if ft := st.Firewall.Flowtables[0]; len(ft.Devices) != 0 || strings.Contains(st.Firewall.String(), "devices") {
		t.Errorf("no devices: %v\n%s", ft.Devices, st.Firewall)
	}
}

// nftSyntaxCheck is nftCheck for a ruleset with a flowtable: it runs
// nft -c in an empty network namespace, where the kernel refuses the
// flowtable (its devices do not exist there, and this kernel may lack
// flowtables: CONFIG_NF_FLOW_TABLE), so it accepts "No such file or
// directory" on the flowtable and on the offload rules only. nft parses
// the whole script before asking the kernel, so the syntax is checked.
func nftSyntaxCheck(t *testing.T, rs Ruleset) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	f := filepath.Join(t.TempDir(), "rs.nft")
	os.WriteFile(f, []byte(rs.String()), 0o644)
	out, err := exec.Command("unshare", "-n", "nft", "-c", "-f", f).CombinedOutput()
	if err == nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if !strings.Contains(l, "Error:") {
			continue
		}
		next := ""
		if i+1 < len(lines) {
			next = lines[i+1]
		}
		if !strings.Contains(l, "Could not process rule: No such file or directory") ||
			!(strings.Contains(next, "flowtable "+FlowtableName) || strings.Contains(next, "flow add @"+FlowtableName)) {
			t.Fatalf("nft -c: %v\n%s\n%s", err, out, rs.String())
		}
	}
}
