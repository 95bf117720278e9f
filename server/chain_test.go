package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
)

// chainWorld: network net1, host h1, tenants acme (segments web, db) and
// infra (segment fw), endpoints web1 (acme/web), fw1 and fw2 (infra/fw) and
// an address without an interface.
func chainWorld(t *testing.T) (*servertest.Instance, map[string]netip.Addr) {
	t.Helper()
	in := servertest.Start(t)
	c := in.Client
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}})
	must(err)
	_, err = c.AddHost(ctx, api.Host{Name: "h1", IP: netip.MustParseAddr("192.0.2.1")})
	must(err)
	for _, tn := range []string{"acme", "infra"} {
		_, err = c.AddTenant(ctx, api.Tenant{Name: tn})
		must(err)
	}
	for _, s := range []api.Segment{{Tenant: "acme", Name: "web"}, {Tenant: "acme", Name: "db"}, {Tenant: "infra", Name: "fw"}} {
		_, err = c.AddSegment(ctx, s)
		must(err)
	}
	ips := map[string]netip.Addr{}
	for _, r := range []api.AddressRequest{
		{Name: "web1", Host: "h1", Tenant: "acme", Segment: "web", Interface: "rv-web1"},
		{Name: "fw1", Host: "h1", Tenant: "infra", Segment: "fw", Interface: "rv-fw1"},
		{Name: "fw2", Host: "h1", Tenant: "infra", Segment: "fw", Interface: "rv-fw2"},
		{Name: "bare", Host: "h1", Tenant: "infra", Segment: "fw"},
	} {
		a, err := c.Allocate(ctx, r)
		must(err)
		ips[r.Name] = a.IP
	}
	return in, ips
}

func TestChainsCRUDAndWatch(t *testing.T) {
	in, ips := chainWorld(t)
	c := in.Client
	ctx := context.Background()
	snap, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan api.Event, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.Watch(wctx, snap.Revision+1, func(ev api.Event) error { events <- ev; return nil })

	body := `{"name":"inspect","tenant":"acme","segment":"web","toTenant":"infra","proto":"tcp","port":80,"via":["` + ips["fw1"].String() + `","` + ips["fw2"].String() + `"]}`
	first, _, b1 := rawString(t, in, "POST", "/v1/chains", body)
	second, _, b2 := rawString(t, in, "POST", "/v1/chains", body)
	if first != http.StatusCreated || second != http.StatusOK || b1 != b2 {
		t.Errorf("POST chain twice: %d then %d (want 201, 200)\n%s%s", first, second, b1, b2)
	}
	var got api.Chain
	json.Unmarshal([]byte(b1), &got)
	if got.ID != 1 || got.Failure != api.FailOpen || len(got.Via) != 2 {
		t.Errorf("created chain = %+v; want id 1, failure defaulted to fail-open", got)
	}
	if _, err := c.AddChain(ctx, api.Chain{Name: "second", Tenant: "acme", Segment: "db", Via: []netip.Addr{ips["fw1"]}, Failure: api.FailClosed}); err != nil {
		t.Fatal(err)
	}
	if g, err := c.GetChain(ctx, "second"); err != nil || g.ID != 2 || g.Failure != api.FailClosed {
		t.Errorf("GetChain(second) = %+v, %v", g, err)
	}
	list, err := c.ListChains(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "inspect" {
		t.Errorf("ListChains = %+v, %v", list, err)
	}
	if snap, err := c.Snapshot(ctx); err != nil || len(snap.Chains) != 2 {
		t.Errorf("snapshot chains = %+v, %v", snap.Chains, err)
	}
	// Same name, different chain: refused.
	if _, err := c.AddChain(ctx, api.Chain{Name: "second", Tenant: "acme", Segment: "db", Via: []netip.Addr{ips["fw2"]}}); api.ReasonOf(err) != api.ReasonAlreadyExists {
		t.Errorf("re-add with other via: %v, want AlreadyExists", err)
	}
	if err := c.RemoveChain(ctx, "inspect"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveChain(ctx, "inspect"); !api.IsNotFound(err) {
		t.Errorf("second remove: %v, want NotFound", err)
	}
	// The id is free again, and its claim gone.
	if n := countPrefix(t, in, "chainids/"); n != 1 {
		t.Errorf("%d chain id claims, want 1", n)
	}
	again, err := c.AddChain(ctx, api.Chain{Name: "third", Tenant: "acme", Segment: "web", Via: []netip.Addr{ips["fw2"]}})
	if err != nil || again.ID != 1 {
		t.Errorf("third chain = %+v, %v; want the freed id 1", again, err)
	}
	var kinds []string
	timeout := time.After(5 * time.Second)
	for len(kinds) < 4 {
		select {
		case ev := <-events:
			if ev.Kind == api.KindChain {
				kinds = append(kinds, ev.Type+" "+ev.Name)
			}
		case <-timeout:
			t.Fatalf("chain events: got %v", kinds)
		}
	}
	if want := "put inspect,put second,delete inspect,put third"; strings.Join(kinds, ",") != want {
		t.Errorf("chain events = %v, want %s", kinds, want)
	}
}

func TestChainValidation(t *testing.T) {
	in, ips := chainWorld(t)
	fw1, fw2 := ips["fw1"].String(), ips["fw2"].String()
	free := netip.MustParseAddr("10.0.48.200") // in infra/fw's block, not allocated
	cases := []struct {
		name, body string
		status     int
		msg        string
	}{
		{"unknown tenant", `{"name":"c","tenant":"nope","segment":"web","via":["` + fw1 + `"]}`, 400, "unknown tenant nope"},
		{"unknown segment", `{"name":"c","tenant":"acme","segment":"nope","via":["` + fw1 + `"]}`, 400, "has no segment nope"},
		{"unknown destination tenant", `{"name":"c","tenant":"acme","segment":"web","toTenant":"nope","via":["` + fw1 + `"]}`, 400, "to: unknown tenant nope"},
		{"unknown destination segment", `{"name":"c","tenant":"acme","segment":"web","toTenant":"infra","toSegment":"nope","via":["` + fw1 + `"]}`, 400, "to: tenant infra has no segment nope"},
		{"via not allocated", `{"name":"c","tenant":"acme","segment":"web","via":["` + free.String() + `"]}`, 400, "is not an allocated endpoint"},
		{"via outside every network", `{"name":"c","tenant":"acme","segment":"web","via":["192.0.2.50"]}`, 400, "no network contains it"},
		{"via without interface", `{"name":"c","tenant":"acme","segment":"web","via":["` + ips["bare"].String() + `"]}`, 400, "not an attached endpoint"},
		{"loop: via in the source segment", `{"name":"c","tenant":"acme","segment":"web","via":["` + fw1 + `","` + ips["web1"].String() + `"]}`, 400, "loop"},
		{"loop: via twice", `{"name":"c","tenant":"acme","segment":"web","via":["` + fw1 + `","` + fw2 + `","` + fw1 + `"]}`, 400, "appears twice"},
		{"no via", `{"name":"c","tenant":"acme","segment":"web","via":[]}`, 400, "at least one service function"},
		{"bad proto", `{"name":"c","tenant":"acme","segment":"web","proto":"sctp","via":["` + fw1 + `"]}`, 400, "proto"},
		{"port without proto", `{"name":"c","tenant":"acme","segment":"web","port":80,"via":["` + fw1 + `"]}`, 400, "needs --proto tcp or udp"},
		{"port out of range", `{"name":"c","tenant":"acme","segment":"web","proto":"tcp","port":70000,"via":["` + fw1 + `"]}`, 400, ""},
		{"bad failure", `{"name":"c","tenant":"acme","segment":"web","failure":"maybe","via":["` + fw1 + `"]}`, 400, "fail-open or fail-closed"},
		{"cidr and tenant", `{"name":"c","tenant":"acme","segment":"web","toCidr":"10.0.0.0/8","toTenant":"infra","via":["` + fw1 + `"]}`, 400, "not both"},
		{"bad name", `{"name":"C!","tenant":"acme","segment":"web","via":["` + fw1 + `"]}`, 400, "invalid chain name"},
		{"functions of two families", `{"name":"c","tenant":"acme","segment":"web","via":["` + fw1 + `","fd00::10"]}`, 400, "different families"},
		{"destination of the other family", `{"name":"c","tenant":"acme","segment":"web","toCidr":"fd00::/64","via":["` + fw1 + `"]}`, 400, "different families"},
		{"id too large", `{"name":"c","id":5000,"tenant":"acme","segment":"web","via":["` + fw1 + `"]}`, 400, "above the maximum"},
	}
	before := readStore(t, in)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, e, body := rawString(t, in, "POST", "/v1/chains", tc.body)
			if st != tc.status || e == nil || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("status %d body %s; want %d with %q", st, body, tc.status, tc.msg)
			}
		})
	}
	if after := readStore(t, in); !after.equal(before) {
		t.Errorf("refused chains changed the store (revision %d -> %d)", before.rev, after.rev)
	}
	if n := countPrefix(t, in, "chains/") + countPrefix(t, in, "chainids/"); n != 0 {
		t.Errorf("%d chain keys stored", n)
	}
}
