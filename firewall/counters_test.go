package firewall

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/sim/simtest"
)

func TestParseCounters(t *testing.T) {
	data := []byte(`{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "romana"}},
{"rule": {"chain": "policy-ingress", "comment": "policy web rule 1", "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 180}}, {"accept": null}]}},
{"rule": {"chain": "policy-ingress", "comment": "policy web rule 1", "expr": [{"counter": {"packets": 2, "bytes": 120}}, {"accept": null}]}},
{"rule": {"chain": "policy-ingress", "comment": "policy web rule 1 log", "expr": [{"log": {}}]}},
{"rule": {"chain": "policy-egress", "comment": "policy deny rule 0", "expr": [{"counter": {"packets": 9, "bytes": 900}}, {"drop": null}]}},
{"rule": {"chain": "policy-ingress.net1.t1.s0", "comment": "policy web rule 1", "expr": [{"counter": {"packets": 10, "bytes": 600}}, {"accept": null}]}},
{"rule": {"chain": "policy-egress.rest", "comment": "policy deny rule 0", "expr": [{"counter": {"packets": 1, "bytes": 100}}, {"drop": null}]}},
{"rule": {"chain": "policies", "comment": "policy x rule 0", "expr": [{"counter": {"packets": 1, "bytes": 1}}]}},
{"rule": {"chain": "tenant-1", "comment": "tenant acme: isolation", "expr": [{"counter": {"packets": 1, "bytes": 1}}]}}]}`)
	got, err := ParseCounters(data)
	if err != nil {
		t.Fatal(err)
	}
	// Rules repeated in target and rest chains (the dispatch) are summed.
	want := []api.RuleCounter{{Policy: "deny", Rule: 0, Stage: "egress", Packets: 10, Bytes: 1000}, {Policy: "web", Rule: 1, Stage: "ingress", Packets: 15, Bytes: 900}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// The netlink dump and nft's JSON listing give the same policy counters
// for a table holding preset counter values: rules in target and rest
// chains summed, log rules, rules without a counter and rules outside the
// policy chains left out, a rule with two counters counted twice.
func TestPolicyCountersNetlinkInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	h, err := simtest.New(t).AddHost(ctx, "h1", netip.MustParsePrefix("192.168.66.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	script := `table inet romana {
	chain policy-ingress.net1.t1 {
		tcp dport 80 counter packets 3 bytes 180 accept comment "policy web rule 1"
		tcp dport 81 counter packets 2 bytes 120 counter packets 1 bytes 10 accept comment "policy web rule 1"
		limit rate 10/second log prefix "x" comment "policy web rule 1 log"
		tcp dport 82 accept comment "policy web rule 2"
		tcp dport 83 counter packets 4 bytes 40 accept
	}
	chain policy-ingress.rest {
		tcp dport 80 counter packets 10 bytes 600 accept comment "policy web rule 1"
	}
	chain policy-egress {
		counter packets 9 bytes 900 drop comment "policy deny rule 0"
	}
	chain tenant-1 {
		counter packets 1 bytes 1 accept comment "policy web rule 1"
	}
	chain listing-sums {
		counter comment "romana listing table 0123"
	}
}
`
	var got, viaNft []api.RuleCounter
	if err := h.Do(func() error {
		cmd := h.Command(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft -f: %w: %s", err, out)
		}
		fw, err := New(nil)
		if err != nil {
			return err
		}
		if got, err = fw.PolicyCounters(ctx); err != nil {
			return err
		}
		viaNft, err = fw.nftCounters(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := []api.RuleCounter{{Policy: "deny", Rule: 0, Stage: "egress", Packets: 9, Bytes: 900}, {Policy: "web", Rule: 1, Stage: "ingress", Packets: 16, Bytes: 910}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("netlink counters %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(viaNft, want) {
		t.Fatalf("nft -j counters %+v\nwant %+v", viaNft, want)
	}
}

// A missing table gives no counters and no error.
func TestPolicyCountersNoTableInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	h, err := simtest.New(t).AddHost(ctx, "h1", netip.MustParsePrefix("192.168.66.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Do(func() error {
		fw, err := New(nil)
		if err != nil {
			return err
		}
		cs, err := fw.PolicyCounters(ctx)
		if err == nil && len(cs) != 0 {
			err = fmt.Errorf("counters %+v without a table", cs)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// A policy rule's comment: four fields, "policy NAME rule I".
func TestPolicyRuleComment(t *testing.T) {
	for _, c := range []struct {
		comment, name string
		idx           int
		ok            bool
	}{
		{"policy web rule 1", "web", 1, true},
		{"policy  p00017\trule 12", "p00017", 12, true},
		{"policy web rule 1 log", "", 0, false},
		{"policy web rule x", "", 0, false},
		{"policy web rule", "", 0, false},
		{"tenant acme: isolation", "", 0, false},
		{"", "", 0, false},
		{"policy web rules 1", "", 0, false},
	} {
		name, idx, ok := policyRule([]byte(c.comment))
		if string(name) != c.name || idx != c.idx || ok != c.ok {
			t.Errorf("%q: %q %d %v, want %q %d %v", c.comment, name, idx, ok, c.name, c.idx, c.ok)
		}
	}
}

// Reading the counters allocates nothing per rule: 1,000 counted rules
// (40 policies of 25 rules, in 4 chains) are read with fewer than 1,000
// allocations, and summed right. (The netlink library's parser took about
// 40 allocations per rule.)
func TestPolicyCountersAllocsInNamespace(t *testing.T) {
	simtest.Require(t, "nft")
	ctx := context.Background()
	h, err := simtest.New(t).AddHost(ctx, "h1", netip.MustParsePrefix("192.168.66.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("table inet romana {\n")
	var want []api.RuleCounter
	for c := range 4 {
		fmt.Fprintf(&script, "chain policy-ingress.net1.t%d {\n", c)
		for p := range 10 {
			name := fmt.Sprintf("p%02d", c*10+p)
			for r := range 25 {
				fmt.Fprintf(&script, "tcp dport %d counter packets %d bytes %d accept comment \"policy %s rule %d\"\n", 1000+r, r+1, 100*(r+1), name, r)
				want = append(want, api.RuleCounter{Policy: name, Rule: r, Stage: "ingress", Packets: uint64(r + 1), Bytes: uint64(100 * (r + 1))})
			}
		}
		script.WriteString("}\n")
	}
	script.WriteString("}\n")
	slices.SortFunc(want, func(a, b api.RuleCounter) int {
		return cmp.Or(strings.Compare(a.Policy, b.Policy), cmp.Compare(a.Rule, b.Rule))
	})
	if err := h.Do(func() error {
		cmd := h.Command(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft -f: %w: %s", err, out)
		}
		fw, err := New(nil)
		if err != nil {
			return err
		}
		got, err := fw.PolicyCounters(ctx)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("counters %d, want %d: %+v", len(got), len(want), got[:min(5, len(got))])
		}
		allocs := testing.AllocsPerRun(5, func() {
			if _, err := fw.PolicyCounters(ctx); err != nil {
				t.Error(err)
			}
		})
		t.Logf("%.0f allocations per read of 1,000 rules", allocs)
		if allocs >= 1000 {
			return fmt.Errorf("%.0f allocations per read of 1,000 rules: some per rule", allocs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
