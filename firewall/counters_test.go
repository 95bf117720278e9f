package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
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
