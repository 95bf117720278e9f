package cli

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

func TestPolicyTraceAndStatsCommands(t *testing.T) {
	srv := servertest.Start(t)
	c := srv.Client
	ctx := context.Background()
	s := adminSession(t, srv)
	if _, err := c.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}); err != nil {
		t.Fatal(err)
	}
	for i, h := range []string{"h1", "h2"} {
		if _, err := c.AddHost(ctx, api.Host{Name: h, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tn := range []string{"acme", "beta"} {
		if _, err := c.AddTenant(ctx, api.Tenant{Name: tn}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddSegment(ctx, api.Segment{Tenant: tn, Name: "web"}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := c.Allocate(ctx, api.AddressRequest{Name: "a", Host: "h1", Tenant: "acme", Segment: "web"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Allocate(ctx, api.AddressRequest{Name: "b", Host: "h2", Tenant: "beta", Segment: "web"})
	if err != nil {
		t.Fatal(err)
	}
	trace := []string{"policy", "trace", "--from", a.IP.String(), "--to", b.IP.String(), "--proto", "tcp", "--port", "80"}
	if out := s.ok(trace...); !strings.HasPrefix(out, "DENY: tenant isolation of beta\n") {
		t.Fatalf("before the policy:\n%s", out)
	}
	if r := s.run("name: web\ndirection: [ingress]\nappliedTo: [{tenant: beta}]\nrules:\n- {action: deny, protocol: tcp, ports: [22]}\n- {peers: [{tenant: acme}], protocol: tcp, portRanges: [80-90]}\n",
		"policy", "add", "-f", "-"); r.code != ExitOK {
		t.Fatalf("policy add: %s", r.stderr)
	}
	out := s.ok(trace...)
	if !strings.HasPrefix(out, "ALLOW: policy web rule 1\n") || !strings.Contains(out, "tcp dport 80-90 counter accept") {
		t.Fatalf("with the policy:\n%s", out)
	}
	var tr api.Trace
	s.okJSON(&tr, "policy", "trace", "--from", a.IP.String(), "--to", b.IP.String(), "--port", "22")
	if tr.Verdict != "deny" || tr.Decision.Policy != "web" || *tr.Decision.Rule != 0 {
		t.Fatalf("port 22: %+v", tr)
	}
	if r := s.run("", "policy", "trace", "--from", "x", "--to", b.IP.String()); r.code != ExitUsage {
		t.Fatalf("bad --from: exit %d %s", r.code, r.stderr)
	}
	if err := c.PutPolicyStats(ctx, api.HostPolicyStats{Host: "h2", Counters: []api.RuleCounter{{Policy: "web", Rule: 1, Stage: "ingress", Packets: 7, Bytes: 420}}}); err != nil {
		t.Fatal(err)
	}
	if out := s.ok("policy", "stats"); !strings.Contains(out, "web     1     ingress  h2    7        420") {
		t.Fatalf("stats:\n%s", out)
	}
}

// policy trace --from NAMESPACE/POD --to NAMESPACE/POD resolves the pods'
// addresses (allocated for pod records) and names the Kubernetes object
// behind the deciding policy.
func TestPolicyTracePods(t *testing.T) {
	srv := servertest.Start(t)
	c := srv.Client
	ctx := context.Background()
	s := adminSession(t, srv)
	if _, err := c.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddHost(ctx, api.Host{Name: "n1", IP: netip.MustParseAddr("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"x", "y"} {
		if _, err := c.AddTenant(ctx, api.Tenant{Name: ns, Isolation: api.IsolationNone}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddSegment(ctx, api.Segment{Tenant: ns, Name: "default"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutPod(ctx, api.Pod{Namespace: ns, Name: "a", Tenant: ns, Segment: "default"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Allocate(ctx, api.AddressRequest{Name: "c-" + ns + ":eth0", Host: "n1", Pod: ns + "/a"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.PutPolicy(ctx, api.Policy{Name: "k8s.npi.x.deny", Description: "Kubernetes NetworkPolicy x/deny (ingress)",
		Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "x"}}, Rules: []api.Rule{{Action: api.ActionDeny, Peers: []api.Peer{{Tenant: "y"}}}}}); err != nil {
		t.Fatal(err)
	}
	out := s.ok("policy", "trace", "--from", "y/a", "--to", "x/a", "--port", "80")
	if !strings.HasPrefix(out, "DENY: policy k8s.npi.x.deny rule 0: Kubernetes NetworkPolicy x/deny (ingress)\n") {
		t.Errorf("trace y/a → x/a:\n%s", out)
	}
	if out := s.ok("policy", "trace", "--from", "x/a", "--to", "y/a", "--port", "80"); !strings.HasPrefix(out, "ALLOW: ") {
		t.Errorf("trace x/a → y/a:\n%s", out)
	}
	r := s.run("", "policy", "trace", "--from", "x/nope", "--to", "x/a", "--port", "80")
	if r.code == ExitOK || !strings.Contains(r.stderr, "no address allocated to pod nope in namespace x") {
		t.Errorf("unknown pod: code %d, %s", r.code, r.stderr)
	}
}
