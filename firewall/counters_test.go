package firewall

import (
	"reflect"
	"testing"

	"github.com/romana/romana/api"
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
