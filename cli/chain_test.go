package cli

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/server/servertest"
)

// TestChainCommands drives romana chain add|list|show|remove against a real romanad.
func TestChainCommands(t *testing.T) {
	srv := servertest.Start(t)
	c := srv.Client
	ctx := context.Background()
	s := adminSession(t, srv)
	s.ok("network", "add", "pods", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=4", "--field", "segment=4")
	s.ok("host", "add", "h1", "--ip", "192.168.1.11")
	s.ok("tenant", "add", "acme")
	s.ok("tenant", "add", "infra", "--isolation", "none")
	s.ok("segment", "add", "acme", "web")
	s.ok("segment", "add", "infra", "fw")
	var fws []string
	for _, n := range []string{"fw1", "fw2"} {
		a, err := c.Allocate(ctx, api.AddressRequest{Name: n, Host: "h1", Tenant: "infra", Segment: "fw", Interface: "rv-" + n})
		if err != nil {
			t.Fatal(err)
		}
		fws = append(fws, a.IP.String())
	}
	out := s.ok("chain", "add", "inspect", "--from", "acme/web", "--to", "infra", "--proto", "tcp", "--port", "80", "--via", strings.Join(fws, ","), "--failure", "fail-closed")
	if !strings.Contains(out, "inspect  1   acme/web  infra tcp:80  "+strings.Join(fws, ",")+"  fail-closed") {
		t.Errorf("chain add output:\n%s", out)
	}
	s.ok("chain", "add", "all", "--from", "acme/web", "--to", "10.0.0.0/8", "--via", fws[1])
	var list []api.Chain
	s.okJSON(&list, "chain", "list")
	if len(list) != 2 || list[0].Name != "all" || list[0].ToCIDR != netip.MustParsePrefix("10.0.0.0/8") || list[0].Failure != api.FailOpen {
		t.Errorf("chain list: %+v", list)
	}
	var ch api.Chain
	s.okJSON(&ch, "chain", "show", "inspect")
	if ch.ID != 1 || ch.Port != 80 || len(ch.Via) != 2 || ch.ToTenant != "infra" {
		t.Errorf("chain show: %+v", ch)
	}
	// API errors come through verbatim; nothing is stored.
	_, err := c.AddChain(ctx, api.Chain{Name: "bad", Tenant: "acme", Segment: "nope", Via: []netip.Addr{netip.MustParseAddr(fws[0])}})
	s.fails(err, "chain", "add", "bad", "--from", "acme/nope", "--via", fws[0])
	if r := s.run("", "chain", "add", "bad", "--from", "acme", "--via", fws[0]); r.code != ExitUsage || !strings.Contains(r.stderr, "want TENANT/SEGMENT") {
		t.Errorf("--from without segment: exit %d %s", r.code, r.stderr)
	}
	if r := s.run("", "chain", "add", "bad", "--from", "acme/web", "--via", "nope"); r.code != ExitUsage {
		t.Errorf("bad --via: exit %d %s", r.code, r.stderr)
	}
	if out := s.ok("chain", "remove", "inspect"); !strings.Contains(out, "chain inspect removed") {
		t.Errorf("remove output: %q", out)
	}
	if l, _ := c.ListChains(ctx); len(l) != 1 {
		t.Errorf("after remove: %+v", l)
	}
}
