package access_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/access"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server"
)

var (
	h1     = pki.Host("h1")
	h2     = pki.Host("h2")
	cni1   = pki.CNI("h1")
	nobody = pki.Identity{}
)

// TestAccessDecide is the authorization table as a table: every role against
// representative routes, with the rule that decides and its scope.
func TestAccessDecide(t *testing.T) {
	const (
		all = access.AnyObject
		own = access.OwnHost
	)
	type want struct {
		rule  string // "" = refused
		scope access.Scope
	}
	// One column per identity: admin, viewer, host:h1, cni:h1, anonymous.
	for _, tc := range []struct {
		route                               string
		admin, viewer, host, cni, anonymous want
	}{
		{"GET /healthz", want{"admin", all}, want{"viewer", all}, want{"host-read", all}, want{"cni-own", own}, want{}},
		{"GET /metrics", want{"admin", all}, want{"viewer", all}, want{}, want{}, want{}},
		{"GET /v1/whoami", want{"admin", all}, want{"self", all}, want{"self", all}, want{"self", all}, want{}},
		{"GET /v1/snapshot", want{"admin", all}, want{"viewer", all}, want{"host-read", all}, want{}, want{}},
		{"GET /v1/watch", want{"admin", all}, want{"viewer", all}, want{"host-read", all}, want{}, want{}},
		{"GET /v1/networks", want{"admin", all}, want{"viewer", all}, want{}, want{}, want{}},
		{"POST /v1/networks", want{"admin", all}, want{}, want{}, want{}, want{}},
		{"DELETE /v1/hosts/{name}", want{"admin", all}, want{}, want{}, want{}, want{}},
		{"POST /v1/hosts/{name}/token", want{"admin", all}, want{}, want{}, want{}, want{}},
		{"PUT /v1/policies/{name}", want{"admin", all}, want{}, want{}, want{}, want{}},
		{"POST /v1/chains", want{"admin", all}, want{}, want{}, want{}, want{}},
		{"GET /v1/decode", want{"admin", all}, want{"viewer", all}, want{}, want{}, want{}},
		{"POST /v1/addresses", want{"admin", all}, want{}, want{"host-own", own}, want{"cni-own", own}, want{}},
		{"GET /v1/addresses", want{"admin", all}, want{"viewer", all}, want{"host-own", own}, want{"cni-own", own}, want{}},
		{"GET /v1/addresses/{name}", want{"admin", all}, want{"viewer", all}, want{"host-own", own}, want{"cni-own", own}, want{}},
		{"DELETE /v1/addresses/{name}", want{"admin", all}, want{}, want{"host-own", own}, want{"cni-own", own}, want{}},
		{"DELETE /v1/addresses", want{"admin", all}, want{}, want{"host-own", own}, want{"cni-own", own}, want{}},
		{"PUT /v1/policy/stats/{host}", want{"admin", all}, want{}, want{"host-own", own}, want{}, want{}},
		{"GET /v1/policy/stats", want{"admin", all}, want{"viewer", all}, want{}, want{}, want{}},
		{"PUT /v1/status/{host}", want{"admin", all}, want{}, want{"host-own", own}, want{}, want{}},
		{"GET /v1/status", want{"admin", all}, want{"viewer", all}, want{}, want{}, want{}},
		{"POST /v1/certificates", want{"admin", all}, want{}, want{"host-own", own}, want{"cni-own", own}, want{}},
		{"GET /v1/certificates", want{"admin", all}, want{"viewer", all}, want{}, want{}, want{}},
		{"POST /v1/certificates/revoke", want{"admin", all}, want{}, want{}, want{}, want{}},
		// A join presents a token, not a certificate.
		{"POST /v1/join", want{"admin", all}, want{}, want{}, want{}, want{"anonymous", all}},
	} {
		for _, c := range []struct {
			id   pki.Identity
			want want
		}{{pki.Admin, tc.admin}, {pki.Viewer, tc.viewer}, {h1, tc.host}, {cni1, tc.cni}, {nobody, tc.anonymous}} {
			d := access.Decide(c.id, tc.route)
			if d.Allowed != (c.want.rule != "") || d.Rule != c.want.rule || d.Scope != c.want.scope {
				t.Errorf("Decide(%q, %s) = %+v; want rule %q scope %s", c.id, tc.route, d, c.want.rule, c.want.scope)
				continue
			}
			switch {
			case d.Allowed && d.Message != "":
				t.Errorf("Decide(%q, %s) allowed with message %q", c.id, tc.route, d.Message)
			case !d.Allowed && !strings.Contains(d.Message, tc.route):
				t.Errorf("Decide(%q, %s) refusal %q does not name the route", c.id, tc.route, d.Message)
			case !d.Allowed && !c.id.IsZero() && !strings.Contains(d.Message, "identity "+c.id.String()+" "):
				t.Errorf("Decide(%q, %s) refusal %q does not name the identity", c.id, tc.route, d.Message)
			}
		}
	}
}

// TestAccessRefusalNamesRules: a refusal lists every rule of the role, so
// that the message says what the identity may do instead.
func TestAccessRefusalNamesRules(t *testing.T) {
	for _, tc := range []struct {
		id    pki.Identity
		route string
		rules []string
	}{
		{h1, "DELETE /v1/hosts/{name}", []string{`rule "self"`, `rule "host-read"`, `rule "host-own"`}},
		{cni1, "GET /v1/snapshot", []string{`rule "self"`, `rule "cni-own"`}},
		{pki.Viewer, "POST /v1/networks", []string{`rule "self"`, `rule "viewer"`, "only read"}},
		{pki.Identity{Role: "bogus"}, "GET /healthz", []string{"no rule grants role bogus anything"}},
		{nobody, "GET /v1/snapshot", []string{"needs a client certificate"}},
	} {
		d := access.Decide(tc.id, tc.route)
		if d.Allowed {
			t.Errorf("Decide(%q, %s) allowed", tc.id, tc.route)
			continue
		}
		for _, r := range tc.rules {
			if !strings.Contains(d.Message, r) {
				t.Errorf("Decide(%q, %s) = %q; want it to mention %s", tc.id, tc.route, d.Message, r)
			}
		}
	}
}

// TestAccessExactRoutes: a rule names whole routes; a prefix, another
// method or a route without a method matches nothing.
func TestAccessExactRoutes(t *testing.T) {
	for _, route := range []string{"GET /v1/snapshot/", "GET /v1/snapshot/x", "POST /v1/snapshot", "/v1/snapshot", "", "GET", "HEAD /v1/snapshot"} {
		if d := access.Decide(h1, route); d.Allowed {
			t.Errorf("Decide(host:h1, %q) = %+v; want refused", route, d)
		}
	}
	if d := access.Decide(pki.Viewer, "/v1/snapshot"); d.Allowed {
		t.Errorf("viewer: a route without a method matched %q", d.Rule)
	}
	if d := access.Decide(nobody, "POST /v1/join/x"); d.Allowed {
		t.Error("anonymous: a prefix of the join route matched")
	}
}

// TestAccessOwn is the own-host scope: an OwnHost decision confines the
// caller to its host's objects; an AnyObject decision (admin) does not.
func TestAccessOwn(t *testing.T) {
	hostOwn := access.Decide(h1, "POST /v1/addresses")
	cniOwn := access.Decide(cni1, "DELETE /v1/addresses/{name}")
	adminAny := access.Decide(pki.Admin, "POST /v1/addresses")
	hostRead := access.Decide(h1, "GET /v1/snapshot")
	for _, tc := range []struct {
		id   pki.Identity
		d    access.Decision
		host string
		want string // "" = allowed, else a substring of the refusal
	}{
		{h1, hostOwn, "h1", ""},
		{h1, hostOwn, "h2", `identity host:h1 may act only on host h1's objects (rule "host-own"), not on host h2's`},
		{h1, hostOwn, "", "name host h1 in the request"},
		{h2, access.Decide(h2, "POST /v1/addresses"), "h1", "identity host:h2 may act only on host h2's objects"},
		{cni1, cniOwn, "h1", ""},
		{cni1, cniOwn, "h2", `identity cni:h1 may act only on host h1's objects (rule "cni-own")`},
		{pki.Admin, adminAny, "h2", ""},
		{pki.Admin, adminAny, "", ""},
		{h1, hostRead, "h2", ""}, // the whole snapshot is the host's to read
	} {
		err := access.Own(tc.id, tc.d, tc.host)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Own(%s, rule %q, %q) = %v; want nil", tc.id, tc.d.Rule, tc.host, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Own(%s, rule %q, %q) = %v; want an error containing %q", tc.id, tc.d.Rule, tc.host, err, tc.want)
		}
	}
}

// TestAccessMayRequest: which certificates an identity may obtain.
func TestAccessMayRequest(t *testing.T) {
	ids := []pki.Identity{pki.Admin, pki.Viewer, h1, h2, cni1, pki.CNI("h2")}
	allowed := map[pki.Identity][]pki.Identity{
		pki.Admin:     ids,
		h1:            {h1, cni1},
		h2:            {h2, pki.CNI("h2")},
		cni1:          {cni1},
		pki.CNI("h2"): {pki.CNI("h2")},
		// viewer: nothing, not even its own renewal (it has no route to ask).
	}
	for _, id := range ids {
		for _, want := range ids {
			err := access.MayRequest(id, want)
			ok := slices.Contains(allowed[id], want)
			if ok != (err == nil) {
				t.Errorf("MayRequest(%s, %s) = %v; want allowed=%v", id, want, err, ok)
			}
			if err != nil && (!strings.Contains(err.Error(), "identity "+id.String()+" ") || !strings.Contains(err.Error(), want.String())) {
				t.Errorf("MayRequest(%s, %s) = %q: name both identities", id, want, err)
			}
		}
	}
}

// TestAccessEveryServerRoute checks the table against every route package
// server registers: admin reaches each, viewer exactly the GET routes, and
// no route is open without a certificate except the join.
func TestAccessEveryServerRoute(t *testing.T) {
	routes := server.New(server.Config{}).Routes()
	if len(routes) < 40 || !slices.Contains(routes, "GET /v1/snapshot") || !slices.Contains(routes, "POST /v1/join") {
		t.Fatalf("found %d server routes, fewer than expected: %q", len(routes), routes)
	}
	for _, r := range routes {
		method, path, ok := strings.Cut(r, " ")
		if !ok || !strings.HasPrefix(path, "/") || method != strings.ToUpper(method) {
			t.Errorf("route %q: want METHOD /path (a route without a method would accept any)", r)
			continue
		}
		if d := access.Decide(pki.Admin, r); !d.Allowed || d.Scope != access.AnyObject {
			t.Errorf("admin: %s = %+v; want allowed on any object", r, d)
		}
		if d := access.Decide(pki.Viewer, r); d.Allowed != (method == "GET") || (d.Allowed && d.Scope != access.AnyObject) {
			t.Errorf("viewer: %s = %+v; want allowed iff GET", r, d)
		}
		if d := access.Decide(nobody, r); d.Allowed != (r == "POST /v1/join") {
			t.Errorf("anonymous: %s = %+v", r, d)
		}
	}
	// Every route a rule names exists: a typo in the table grants nothing
	// and would go unnoticed.
	for _, rule := range access.Rules {
		for _, p := range rule.Routes {
			if p == "*" || strings.HasSuffix(p, " *") {
				continue
			}
			if !slices.Contains(routes, p) {
				t.Errorf("rule %q names %q, which the server does not register", rule.Name, p)
			}
		}
	}
	for _, p := range access.Anonymous {
		if !slices.Contains(routes, p) {
			t.Errorf("anonymous route %q is not registered", p)
		}
	}
}

// TestAccessKube is the Kubernetes controller's least privilege over every
// route the server registers: it reads every GET route but the
// certificate inventory, and writes exactly hosts, tenants, segments,
// policies, address sets and pod records, and releases the addresses of
// hosts (the server confines that to the hosts it registered).
func TestAccessKube(t *testing.T) {
	writes := []string{
		"POST /v1/hosts", "DELETE /v1/hosts/{name}", "DELETE /v1/hosts/{name}/addresses",
		"POST /v1/tenants", "DELETE /v1/tenants/{name}",
		"POST /v1/tenants/{tenant}/segments", "DELETE /v1/tenants/{tenant}/segments/{name}",
		"POST /v1/policies", "PUT /v1/policies/{name}", "DELETE /v1/policies/{name}",
		"PUT /v1/addresssets/{name}", "DELETE /v1/addresssets/{name}",
		"PUT /v1/pods/{namespace}/{name}", "DELETE /v1/pods/{namespace}/{name}",
	}
	for _, r := range server.New(server.Config{}).Routes() {
		method, path, _ := strings.Cut(r, " ")
		want := slices.Contains(writes, r) || (method == "GET" && !strings.HasPrefix(path, "/v1/certificates"))
		d := access.Decide(pki.Kube, r)
		if d.Allowed != want || (d.Allowed && d.Scope != access.AnyObject) {
			t.Errorf("kube: %s = %+v; want allowed=%v", r, d, want)
		}
		if !d.Allowed && !strings.Contains(d.Message, `rule "kube-write"`) {
			t.Errorf("kube: refusal of %s does not name what kube may write: %q", r, d.Message)
		}
	}
	for _, id := range []pki.Identity{pki.Kube, pki.Viewer, h1, cni1} {
		if err := access.MayRequest(id, pki.Kube); err == nil && id != pki.Admin {
			t.Errorf("MayRequest(%s, kube) allowed: only admin issues the controller's certificate", id)
		}
	}
	if err := access.MayRequest(pki.Admin, pki.Kube); err != nil {
		t.Errorf("MayRequest(admin, kube) = %v", err)
	}
}
