package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

func TestPolicyTraceAndStats(t *testing.T) {
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	populate(t, c)
	acme, err := c.Allocate(ctx, api.AddressRequest{Name: "a", Host: "h0", Tenant: "acme", Segment: "web"})
	if err != nil {
		t.Fatal(err)
	}
	globex, err := c.Allocate(ctx, api.AddressRequest{Name: "g", Host: "h3", Tenant: "globex", Segment: "db"})
	if err != nil {
		t.Fatal(err)
	}
	req := api.TraceRequest{From: acme.IP, To: globex.IP, Proto: "tcp", Port: 5432}
	tr, err := c.PolicyTrace(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Verdict != "deny" || tr.Decision.Reason != "tenant isolation of globex" || tr.Decision.Host != "h3" {
		t.Fatalf("before the policy: %+v", tr)
	}
	if _, err := c.PutPolicy(ctx, api.Policy{Name: "pg", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "globex", Segment: "db"}},
		Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "acme", Segment: "web"}}, Protocol: "tcp", Ports: []uint16{5432}}}}); err != nil {
		t.Fatal(err)
	}
	tr, err = c.PolicyTrace(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Verdict != "allow" || tr.Decision.Policy != "pg" || tr.Decision.Rule == nil || *tr.Decision.Rule != 0 || !strings.Contains(tr.Decision.RuleNFT, "tcp dport 5432") {
		t.Fatalf("with the policy: %+v", tr)
	}
	req.Port = 22
	if tr, err = c.PolicyTrace(ctx, req); err != nil || tr.Verdict != "deny" {
		t.Fatalf("port 22: %+v %v", tr, err)
	}

	if err := c.PutPolicyStats(ctx, api.HostPolicyStats{Host: "h3", Counters: []api.RuleCounter{{Policy: "pg", Rule: 0, Stage: "ingress", Packets: 3, Bytes: 180}}}); err != nil {
		t.Fatal(err)
	}
	st, err := c.PolicyStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Host != "h3" || st[0].Counters[0].Packets != 3 || st[0].Time.IsZero() {
		t.Fatalf("stats: %+v", st)
	}
}
