package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/access"
	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server"
	"github.com/romana/romana/server/servertest"
)

// TestAuthz is the issue's table over a real romanad with real TLS: every
// API route × every kind of caller → the expected 2xx, 401 or 403. A
// request that is allowed is one that would succeed, and does (its exact
// status is checked; one row, an allocation that names no host, is the
// 400 of a request allowed and invalid); each caller works on objects of
// its own (victims made for it beforehand, names with its slug), so that a
// refused delete would have deleted something. After every refusal the
// store is unchanged (its keys, values and revision), the message says who
// and which rule (403) or why (401), and an audit line names the identity;
// so does one for every write.
func TestAuthz(t *testing.T) {
	logs := &logBuffer{}
	in := servertest.Start(t, servertest.WithLogger(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	w := newAuthzWorld(t, in)
	callers := w.callers(t)
	cases := authzCases()

	// The table covers every route the server registers, and nothing else.
	var covered []string
	for _, c := range cases {
		if !slices.Contains(covered, c.route) {
			covered = append(covered, c.route)
		}
	}
	slices.Sort(covered)
	if registered := server.New(server.Config{}).Routes(); !slices.Equal(covered, registered) {
		t.Fatalf("the table's routes differ from the server's:\nnot in the table: %q\nnot registered:   %q",
			minus(registered, covered), minus(covered, registered))
	}

	for _, tc := range cases {
		for _, c := range callers {
			t.Run(tc.name+"/"+c.name, func(t *testing.T) {
				method, path, body := tc.req(w, c)
				want, why := w.expect(tc, c)
				before := readStore(t, in)
				mark := logs.len()
				status, ae, respBody := c.do(t, in, method, path, body)
				if status != want {
					t.Fatalf("%s %s: status %d, want %d (%s); body %s", method, path, status, want, why, respBody)
				}
				refused := status == http.StatusUnauthorized || status == http.StatusForbidden
				if refused {
					if after := readStore(t, in); !after.equal(before) {
						t.Errorf("%s %s: refused with %d but the store changed (revision %d -> %d)", method, path, status, before.rev, after.rev)
					}
					if ae == nil || !strings.Contains(ae.Message, why) {
						t.Errorf("%s %s: refusal %+v; want a message containing %q", method, path, ae, why)
					}
				}
				if tc.route == "GET /v1/whoami" && status == http.StatusOK {
					var who api.WhoAmI
					if err := json.Unmarshal([]byte(respBody), &who); err != nil || who.Identity != c.name || who.Via != "tls" {
						t.Errorf("whoami as %s: %s", c.name, respBody)
					}
				}
				if refused || method != http.MethodGet {
					checkAudit(t, logs, mark, tc, method, status, c)
				}
			})
		}
	}
}

// authzCase is a row: a route and a request to it.
type authzCase struct {
	name  string
	route string // the mux pattern the request must reach
	// allow names the callers allowed (space separated), which get status;
	// every other caller is refused.
	allow  string
	status int
	req    func(w *authzWorld, c *authzCaller) (method, path, body string)
	// scoped is the refusal of a caller the table allows but the request's
	// host does not (own-host scope); default: access.Own's message.
	scoped func(id pki.Identity, d access.Decision) string
	// inStore: the own-host scope is decided by the registry, in the
	// transaction that deletes; its refusal is not in the audit line.
	inStore bool
}

const (
	onlyAdmin  = "admin"
	kubeAdmin  = "admin kube" // what the Kubernetes controller writes
	readers    = "admin viewer kube"
	h1Writers  = "admin host:h1 cni:h1"
	h2Writers  = "admin host:h2"
	h1Readers  = "admin viewer kube host:h1 cni:h1"
	h2Readers  = "admin viewer kube host:h2"
	agents     = "admin viewer kube host:h1 host:h2"
	everyone   = "admin viewer kube host:h1 host:h2 cni:h1"
	allowAll   = `"direction":["egress"],"appliedTo":[{"all":true}],"rules":[{"peers":[{"cidr":"0.0.0.0/0"}]}]`
	statsEmpty = `{"counters":[]}`
	statusOK   = `{"version":"dev","time":"2025-01-01T00:00:00Z","revision":1,"resyncSeconds":10,"reportSeconds":5}`
)

func getPath(path string) func(*authzWorld, *authzCaller) (string, string, string) {
	return func(*authzWorld, *authzCaller) (string, string, string) { return "GET", path, "" }
}

// slugged builds a request from formats with the caller's slug as %[1]s
// and its index as %[2]d or %[2]x.
func slugged(method, path, body string) func(*authzWorld, *authzCaller) (string, string, string) {
	return func(_ *authzWorld, c *authzCaller) (string, string, string) {
		f := func(s string) string {
			if !strings.Contains(s, "%[1]") {
				return s
			}
			return fmt.Sprintf(s, c.slug, c.index)
		}
		return method, f(path), f(body)
	}
}

func authzCases() []authzCase {
	release := func(owner string) func(id pki.Identity, _ access.Decision) string {
		return func(id pki.Identity, _ access.Decision) string {
			return fmt.Sprintf("belongs to host %s, not %s", owner, id.Host)
		}
	}
	cert := func(want pki.Identity, validity string) func(*authzWorld, *authzCaller) (string, string, string) {
		return func(w *authzWorld, _ *authzCaller) (string, string, string) {
			return "POST", "/v1/certificates", w.certRequest(want, validity)
		}
	}
	mayNotObtain := func(want pki.Identity) func(id pki.Identity, _ access.Decision) string {
		return func(id pki.Identity, _ access.Decision) string {
			return fmt.Sprintf("identity %s may not obtain a certificate for %s", id, want)
		}
	}
	return []authzCase{
		{name: "healthz", route: "GET /healthz", allow: everyone, status: http.StatusOK, req: getPath("/healthz")},
		{name: "metrics", route: "GET /metrics", allow: readers, status: http.StatusOK, req: getPath("/metrics")},

		{name: "networks/list", route: "GET /v1/networks", allow: readers, status: http.StatusOK, req: getPath("/v1/networks")},
		{name: "networks/add", route: "POST /v1/networks", allow: onlyAdmin, status: http.StatusCreated, req: slugged("POST", "/v1/networks",
			`{"name":"nn-%[1]s","cidr":"fd00:2:%[2]x::/48","fields":[{"name":"host","bits":6},{"name":"tenant","bits":8},{"name":"segment","bits":8}]}`)},
		{name: "networks/get", route: "GET /v1/networks/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/networks/net")},
		{name: "networks/remove", route: "DELETE /v1/networks/{name}", allow: onlyAdmin, status: http.StatusNoContent, req: slugged("DELETE", "/v1/networks/vn-%[1]s", "")},

		{name: "hosts/list", route: "GET /v1/hosts", allow: readers, status: http.StatusOK, req: getPath("/v1/hosts")},
		{name: "hosts/add", route: "POST /v1/hosts", allow: kubeAdmin, status: http.StatusCreated, req: slugged("POST", "/v1/hosts", `{"name":"nh-%[1]s","ip":"192.0.2.%[2]d"}`)},
		{name: "hosts/get", route: "GET /v1/hosts/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/hosts/h1")},
		{name: "hosts/remove", route: "DELETE /v1/hosts/{name}", allow: kubeAdmin, status: http.StatusNoContent, req: slugged("DELETE", "/v1/hosts/vh-%[1]s", "")},
		{name: "hosts/release", route: "DELETE /v1/hosts/{name}/addresses", allow: kubeAdmin, status: http.StatusOK, req: slugged("DELETE", "/v1/hosts/vk-%[1]s/addresses", "")},
		{name: "hosts/token", route: "POST /v1/hosts/{name}/token", allow: onlyAdmin, status: http.StatusCreated, req: slugged("POST", "/v1/hosts/h1/token", `{"ttl":"5m"}`)},

		{name: "tenants/list", route: "GET /v1/tenants", allow: readers, status: http.StatusOK, req: getPath("/v1/tenants")},
		{name: "tenants/add", route: "POST /v1/tenants", allow: kubeAdmin, status: http.StatusCreated, req: slugged("POST", "/v1/tenants", `{"name":"nt-%[1]s"}`)},
		{name: "tenants/get", route: "GET /v1/tenants/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/tenants/t")},
		{name: "tenants/remove", route: "DELETE /v1/tenants/{name}", allow: kubeAdmin, status: http.StatusNoContent, req: slugged("DELETE", "/v1/tenants/vt-%[1]s", "")},

		{name: "segments/all", route: "GET /v1/segments", allow: readers, status: http.StatusOK, req: getPath("/v1/segments")},
		{name: "segments/list", route: "GET /v1/tenants/{tenant}/segments", allow: readers, status: http.StatusOK, req: getPath("/v1/tenants/t/segments")},
		{name: "segments/add", route: "POST /v1/tenants/{tenant}/segments", allow: kubeAdmin, status: http.StatusCreated, req: slugged("POST", "/v1/tenants/t/segments", `{"name":"ns-%[1]s"}`)},
		{name: "segments/get", route: "GET /v1/tenants/{tenant}/segments/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/tenants/t/segments/s")},
		{name: "segments/remove", route: "DELETE /v1/tenants/{tenant}/segments/{name}", allow: kubeAdmin, status: http.StatusNoContent, req: slugged("DELETE", "/v1/tenants/tk/segments/vs-%[1]s", "")},

		{name: "addresses/allocate-h1", route: "POST /v1/addresses", allow: h1Writers, status: http.StatusCreated, req: slugged("POST", "/v1/addresses",
			`{"name":"pod1-%[1]s","network":"net","host":"h1","tenant":"t","segment":"s"}`)},
		{name: "addresses/allocate-h2", route: "POST /v1/addresses", allow: h2Writers, status: http.StatusCreated, req: slugged("POST", "/v1/addresses",
			`{"name":"pod2-%[1]s","network":"net","host":"h2","tenant":"t","segment":"s"}`)},
		{name: "addresses/allocate-no-host", route: "POST /v1/addresses", allow: onlyAdmin, status: http.StatusBadRequest, req: slugged("POST", "/v1/addresses",
			`{"name":"pod0-%[1]s","network":"net","tenant":"t","segment":"s"}`),
			scoped: func(id pki.Identity, _ access.Decision) string { return "name host " + id.Host + " in the request" }},
		{name: "addresses/list-h1", route: "GET /v1/addresses", allow: h1Readers, status: http.StatusOK, req: getPath("/v1/addresses?host=h1")},
		{name: "addresses/list-h2", route: "GET /v1/addresses", allow: h2Readers, status: http.StatusOK, req: getPath("/v1/addresses?host=h2")},
		{name: "addresses/list-all", route: "GET /v1/addresses", allow: readers, status: http.StatusOK, req: getPath("/v1/addresses"),
			scoped: func(id pki.Identity, _ access.Decision) string { return "name host " + id.Host + " in the request" }},
		{name: "addresses/get-h1", route: "GET /v1/addresses/{name}", allow: h1Readers, status: http.StatusOK, req: getPath("/v1/addresses/a1")},
		{name: "addresses/get-h2", route: "GET /v1/addresses/{name}", allow: h2Readers, status: http.StatusOK, req: getPath("/v1/addresses/a2")},
		{name: "addresses/release-h1", route: "DELETE /v1/addresses/{name}", allow: h1Writers, status: http.StatusNoContent,
			req: slugged("DELETE", "/v1/addresses/vn1-%[1]s", ""), scoped: release("h1"), inStore: true},
		{name: "addresses/release-h2", route: "DELETE /v1/addresses/{name}", allow: h2Writers, status: http.StatusNoContent,
			req: slugged("DELETE", "/v1/addresses/vn2-%[1]s", ""), scoped: release("h2"), inStore: true},
		{name: "addresses/release-ip-h1", route: "DELETE /v1/addresses", allow: h1Writers, status: http.StatusNoContent,
			req: func(w *authzWorld, c *authzCaller) (string, string, string) {
				return "DELETE", "/v1/addresses?ip=" + w.ips["vi1-"+c.slug].String(), ""
			}, scoped: release("h1"), inStore: true},
		{name: "addresses/release-ip-h2", route: "DELETE /v1/addresses", allow: h2Writers, status: http.StatusNoContent,
			req: func(w *authzWorld, c *authzCaller) (string, string, string) {
				return "DELETE", "/v1/addresses?ip=" + w.ips["vi2-"+c.slug].String(), ""
			}, scoped: release("h2"), inStore: true},
		{name: "decode", route: "GET /v1/decode", allow: readers, status: http.StatusOK, req: func(w *authzWorld, _ *authzCaller) (string, string, string) {
			return "GET", "/v1/decode?ip=" + w.ips["a1"].String(), ""
		}},

		{name: "policies/list", route: "GET /v1/policies", allow: readers, status: http.StatusOK, req: getPath("/v1/policies")},
		{name: "policies/post", route: "POST /v1/policies", allow: kubeAdmin, status: http.StatusCreated, req: slugged("POST", "/v1/policies", `{"name":"pp-%[1]s","priority":1,`+allowAll+`}`)},
		{name: "policies/get", route: "GET /v1/policies/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/policies/p")},
		{name: "policies/put", route: "PUT /v1/policies/{name}", allow: kubeAdmin, status: http.StatusCreated, req: slugged("PUT", "/v1/policies/pu-%[1]s", `{"priority":1,`+allowAll+`}`)},
		{name: "policies/remove", route: "DELETE /v1/policies/{name}", allow: kubeAdmin, status: http.StatusNoContent, req: slugged("DELETE", "/v1/policies/vp-%[1]s", "")},
		{name: "policy/trace", route: "GET /v1/policy/trace", allow: readers, status: http.StatusOK, req: func(w *authzWorld, _ *authzCaller) (string, string, string) {
			return "GET", "/v1/policy/trace?from=" + w.ips["a1"].String() + "&to=" + w.ips["a2"].String() + "&proto=tcp&port=80", ""
		}},
		{name: "policy/stats", route: "GET /v1/policy/stats", allow: readers, status: http.StatusOK, req: getPath("/v1/policy/stats")},
		{name: "policy/stats-h1", route: "PUT /v1/policy/stats/{host}", allow: "admin host:h1", status: http.StatusNoContent, req: slugged("PUT", "/v1/policy/stats/h1", statsEmpty)},
		{name: "policy/stats-h2", route: "PUT /v1/policy/stats/{host}", allow: "admin host:h2", status: http.StatusNoContent, req: slugged("PUT", "/v1/policy/stats/h2", statsEmpty)},
		{name: "status", route: "GET /v1/status", allow: readers, status: http.StatusOK, req: getPath("/v1/status")},
		{name: "status-h1", route: "PUT /v1/status/{host}", allow: "admin host:h1", status: http.StatusNoContent, req: slugged("PUT", "/v1/status/h1", statusOK)},
		{name: "status-h2", route: "PUT /v1/status/{host}", allow: "admin host:h2", status: http.StatusNoContent, req: slugged("PUT", "/v1/status/h2", statusOK)},

		{name: "devices/list", route: "GET /v1/devices", allow: readers, status: http.StatusOK, req: getPath("/v1/devices")},
		{name: "devices/put", route: "POST /v1/devices", allow: onlyAdmin, status: http.StatusCreated, req: slugged("POST", "/v1/devices", `{"name":"nd-%[1]s","kind":"spine","asn":65100}`)},
		{name: "devices/get", route: "GET /v1/devices/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/devices/tor1")},
		{name: "devices/remove", route: "DELETE /v1/devices/{name}", allow: onlyAdmin, status: http.StatusNoContent, req: slugged("DELETE", "/v1/devices/vd-%[1]s", "")},
		{name: "fabric/routes", route: "GET /v1/fabric/routes", allow: readers, status: http.StatusOK, req: getPath("/v1/fabric/routes?device=tor1")},

		{name: "chains/list", route: "GET /v1/chains", allow: readers, status: http.StatusOK, req: getPath("/v1/chains")},
		{name: "chains/add", route: "POST /v1/chains", allow: onlyAdmin, status: http.StatusCreated, req: func(w *authzWorld, c *authzCaller) (string, string, string) {
			return "POST", "/v1/chains", `{"name":"nc-` + c.slug + `","tenant":"t","segment":"s","via":["` + w.ips["fw1"].String() + `"]}`
		}},
		{name: "chains/get", route: "GET /v1/chains/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/chains/c1")},
		{name: "chains/remove", route: "DELETE /v1/chains/{name}", allow: onlyAdmin, status: http.StatusNoContent, req: slugged("DELETE", "/v1/chains/vc-%[1]s", "")},

		{name: "addresssets/list", route: "GET /v1/addresssets", allow: readers, status: http.StatusOK, req: getPath("/v1/addresssets")},
		{name: "addresssets/get", route: "GET /v1/addresssets/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/addresssets/as1")},
		{name: "addresssets/put", route: "PUT /v1/addresssets/{name}", allow: kubeAdmin, status: http.StatusCreated,
			req: slugged("PUT", "/v1/addresssets/nas-%[1]s", `{"description":"by %[1]s","addresses":["10.9.9.%[2]d"]}`)},
		{name: "addresssets/remove", route: "DELETE /v1/addresssets/{name}", allow: kubeAdmin, status: http.StatusNoContent,
			req: slugged("DELETE", "/v1/addresssets/vas-%[1]s", "")},

		{name: "pods/list", route: "GET /v1/pods", allow: readers, status: http.StatusOK, req: getPath("/v1/pods?namespace=ns1")},
		{name: "pods/get", route: "GET /v1/pods/{namespace}/{name}", allow: readers, status: http.StatusOK, req: getPath("/v1/pods/ns1/pod1")},
		{name: "pods/put", route: "PUT /v1/pods/{namespace}/{name}", allow: kubeAdmin, status: http.StatusCreated,
			req: slugged("PUT", "/v1/pods/ns1/npod-%[1]s", `{"tenant":"t","segment":"s"}`)},
		{name: "pods/remove", route: "DELETE /v1/pods/{namespace}/{name}", allow: kubeAdmin, status: http.StatusNoContent,
			req: slugged("DELETE", "/v1/pods/ns1/vpod-%[1]s", "")},

		// A join presents a token instead of a certificate (a fresh one each).
		{name: "join", route: "POST /v1/join", allow: "admin none", status: http.StatusCreated, req: func(w *authzWorld, _ *authzCaller) (string, string, string) {
			return "POST", "/v1/join", w.joinRequest()
		}},
		{name: "certificates/cni-h1", route: "POST /v1/certificates", allow: "admin host:h1 cni:h1", status: http.StatusCreated, req: cert(pki.CNI("h1"), ""),
			scoped: mayNotObtain(pki.CNI("h1"))},
		// Only admin chooses a validity beyond the default.
		{name: "certificates/cni-h1-long", route: "POST /v1/certificates", allow: onlyAdmin, status: http.StatusCreated, req: cert(pki.CNI("h1"), "8760h"),
			scoped: func(id pki.Identity, d access.Decision) string {
				if id.Host != "h1" {
					return mayNotObtain(pki.CNI("h1"))(id, d)
				}
				return fmt.Sprintf("identity %s may ask for at most", id)
			}},
		{name: "certificates/host-h1", route: "POST /v1/certificates", allow: "admin host:h1", status: http.StatusCreated, req: cert(pki.Host("h1"), ""),
			scoped: mayNotObtain(pki.Host("h1"))},
		{name: "certificates/host-h2", route: "POST /v1/certificates", allow: "admin host:h2", status: http.StatusCreated, req: cert(pki.Host("h2"), ""),
			scoped: mayNotObtain(pki.Host("h2"))},
		{name: "certificates/admin", route: "POST /v1/certificates", allow: onlyAdmin, status: http.StatusCreated, req: cert(pki.Admin, ""),
			scoped: mayNotObtain(pki.Admin)},
		{name: "certificates/kube", route: "POST /v1/certificates", allow: onlyAdmin, status: http.StatusCreated, req: cert(pki.Kube, ""),
			scoped: mayNotObtain(pki.Kube)},
		{name: "certificates/list", route: "GET /v1/certificates", allow: "admin viewer", status: http.StatusOK, req: getPath("/v1/certificates")},
		{name: "certificates/revoke", route: "POST /v1/certificates/revoke", allow: onlyAdmin, status: http.StatusOK, req: func(w *authzWorld, c *authzCaller) (string, string, string) {
			return "POST", "/v1/certificates/revoke", `{"serials":["` + w.victimCerts[c.slug] + `"]}`
		}},
		{name: "whoami", route: "GET /v1/whoami", allow: everyone, status: http.StatusOK, req: getPath("/v1/whoami")},
		{name: "snapshot", route: "GET /v1/snapshot", allow: agents, status: http.StatusOK, req: getPath("/v1/snapshot")},
		{name: "watch", route: "GET /v1/watch", allow: agents, status: http.StatusOK, req: getPath("/v1/watch")},
	}
}

// authzCaller is one kind of caller, with its own HTTP client.
type authzCaller struct {
	name  string // an identity, or none, other-ca, expired, revoked
	slug  string // in the names of its objects
	index int    // distinct per caller, for CIDRs and addresses
	id    pki.Identity
	hc    *http.Client
	// badCert is why its certificate is refused (401), "" if it is good.
	badCert string
}

// do sends a request and returns its status, its error body (if any) and
// its body. A watch stream that starts is closed at once.
func (c *authzCaller) do(t *testing.T, in *servertest.Instance, method, path, body string) (int, *api.Error, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, in.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s as %s: %v", method, path, c.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(path, "/v1/watch") {
		cancel() // the stream started; that is all we ask of it
		return resp.StatusCode, nil, ""
	}
	b, _ := io.ReadAll(resp.Body)
	var eb api.ErrorBody
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error == nil {
			t.Fatalf("%s %s: status %d with a body that is not a JSON error: %q", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, eb.Error, string(b)
}

// authzWorld is the state the table runs against: network net, hosts h1
// and h2, tenant t with segment s, addresses a1 (h1) and a2 (h2), service
// function fw1, policy p, devices tor1, tor2, spine1, chain c1, address
// set as1, pod ns1/pod1; and for each caller victims to remove: network
// vn-SLUG, host vh-SLUG, host vk-SLUG (labelled as registered by the
// Kubernetes controller) with address vk1-SLUG, tenant vt-SLUG, segment tk/vs-SLUG (both
// tenants labelled as the controller's), addresses
// vn1-SLUG and vi1-SLUG on h1 and vn2-SLUG and vi2-SLUG on h2, policy
// vp-SLUG, device vd-SLUG, chain vc-SLUG, address set vas-SLUG, pod
// ns1/vpod-SLUG and a certificate.
type authzWorld struct {
	in          *servertest.Instance
	ips         map[string]netip.Addr
	victimCerts map[string]string // slug -> serial
}

var authzCallers = []struct{ name, slug string }{
	{"admin", "admin"}, {"viewer", "viewer"}, {"kube", "kube"}, {"host:h1", "h1"}, {"host:h2", "h2"}, {"cni:h1", "cni1"},
	{"none", "none"}, {"other-ca", "otherca"}, {"expired", "expired"}, {"revoked", "revoked"},
}

func newAuthzWorld(t *testing.T, in *servertest.Instance) *authzWorld {
	t.Helper()
	ctx := context.Background()
	c := in.Client
	w := &authzWorld{in: in, ips: map[string]netip.Addr{}, victimCerts: map[string]string{}}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.AddNetwork(ctx, api.Network{Name: "net", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 6}, {Name: "tenant", Bits: 6}, {Name: "segment", Bits: 6}}}))
	must(c.AddHost(ctx, api.Host{Name: "h1", IP: netip.MustParseAddr("192.0.2.11"), Labels: map[string]string{"rack": "r1"}}))
	must(c.AddHost(ctx, api.Host{Name: "h2", IP: netip.MustParseAddr("192.0.2.12"), Labels: map[string]string{"rack": "r2"}}))
	must(c.AddTenant(ctx, api.Tenant{Name: "t"}))
	must(c.AddSegment(ctx, api.Segment{Tenant: "t", Name: "s"}))
	must(c.AddTenant(ctx, api.Tenant{Name: "infra"}))
	// Tenant victims (and tenant tk of the segment victims) labelled as the
	// Kubernetes controller's: kube may remove only those.
	kubeMade := map[string]string{api.LabelSource: api.SourceKubernetes}
	must(c.AddTenant(ctx, api.Tenant{Name: "tk", Labels: kubeMade}))
	must(c.AddSegment(ctx, api.Segment{Tenant: "infra", Name: "fw"}))
	alloc := func(name, host, tenant, segment, iface string) {
		t.Helper()
		a, err := c.Allocate(ctx, api.AddressRequest{Name: name, Network: "net", Host: host, Tenant: tenant, Segment: segment, Interface: iface})
		if err != nil {
			t.Fatal(err)
		}
		w.ips[name] = a.IP
	}
	alloc("a1", "h1", "t", "s", "")
	alloc("a2", "h2", "t", "s", "")
	alloc("fw1", "h1", "infra", "fw", "rv-fw1")
	policy := func(name string) api.Policy {
		return api.Policy{Name: name, Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Peers: []api.Peer{{CIDR: "0.0.0.0/0"}}}}}
	}
	must(c.PutPolicy(ctx, policy("p")))
	for _, d := range fabricDevices() {
		must(c.PutDevice(ctx, d))
	}
	chain := func(name string) api.Chain {
		return api.Chain{Name: name, Tenant: "t", Segment: "s", Via: []netip.Addr{w.ips["fw1"]}}
	}
	must(c.AddChain(ctx, chain("c1")))
	must(c.PutAddressSet(ctx, api.AddressSet{Name: "as1", Addresses: []netip.Addr{w.ips["a1"]}}))
	must(c.PutPod(ctx, api.Pod{Namespace: "ns1", Name: "pod1", Tenant: "t", Segment: "s"}))
	for i, cl := range authzCallers {
		s := cl.slug
		must(c.AddNetwork(ctx, api.Network{Name: "vn-" + s, CIDR: fmt.Sprintf("fd00:1:%x::/48", i),
			Fields: []plan.Field{{Name: "host", Bits: 6}, {Name: "tenant", Bits: 8}, {Name: "segment", Bits: 8}}}))
		must(c.AddHost(ctx, api.Host{Name: "vh-" + s, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)})}))
		must(c.AddHost(ctx, api.Host{Name: "vk-" + s, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(150 + i)}),
			Labels: map[string]string{api.LabelSource: api.SourceKubernetes}}))
		alloc("vk1-"+s, "vk-"+s, "t", "s", "")
		must(c.AddTenant(ctx, api.Tenant{Name: "vt-" + s, Labels: kubeMade}))
		must(c.AddSegment(ctx, api.Segment{Tenant: "tk", Name: "vs-" + s}))
		alloc("vn1-"+s, "h1", "t", "s", "")
		alloc("vi1-"+s, "h1", "t", "s", "")
		alloc("vn2-"+s, "h2", "t", "s", "")
		alloc("vi2-"+s, "h2", "t", "s", "")
		must(c.PutPolicy(ctx, policy("vp-"+s)))
		must(c.PutDevice(ctx, api.Device{Name: "vd-" + s, Kind: api.DeviceSpine, ASN: 65100}))
		must(c.AddChain(ctx, chain("vc-"+s)))
		must(c.PutAddressSet(ctx, api.AddressSet{Name: "vas-" + s}))
		must(c.PutPod(ctx, api.Pod{Namespace: "ns1", Name: "vpod-" + s, Tenant: "t", Segment: "s"}))
		leaf, err := in.Credential(t, pki.Viewer).Leaf()
		if err != nil {
			t.Fatal(err)
		}
		w.victimCerts[s] = pki.Serial(leaf)
	}
	return w
}

// callers returns a client for each kind of caller. The revoked one is an
// admin certificate that worked (on the same kept-alive connection) before
// it was revoked.
func (w *authzWorld) callers(t *testing.T) []*authzCaller {
	t.Helper()
	in := w.in
	var out []*authzCaller
	for i, cl := range authzCallers {
		c := &authzCaller{name: cl.name, slug: cl.slug, index: 200 + i}
		switch cl.name {
		case "none":
			c.hc = in.HTTPClient(t, nil)
		case "other-ca":
			c.hc, c.badCert = in.HTTPClient(t, foreignCredential(t, pki.Admin)), "certificate signed by unknown authority"
		case "expired":
			c.hc, c.badCert = in.HTTPClient(t, expiredCredential(t, in, pki.Admin)), "certificate has expired"
		case "revoked":
			cred := in.Credential(t, pki.Admin)
			c.hc, c.badCert = in.HTTPClient(t, cred), "was revoked"
			if st, _, body := c.do(t, in, "GET", "/v1/whoami", ""); st != http.StatusOK {
				t.Fatalf("before revocation: %d %s", st, body)
			}
			leaf, err := cred.Leaf()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := in.Client.Revoke(context.Background(), api.RevokeRequest{Serials: []string{pki.Serial(leaf)}}); err != nil {
				t.Fatal(err)
			}
		default:
			id, err := pki.ParseIdentity(cl.name)
			if err != nil {
				t.Fatal(err)
			}
			c.id, c.hc = id, in.HTTPClient(t, in.Credential(t, id))
		}
		out = append(out, c)
	}
	return out
}

// expect returns the status tc must get for c, and what the refusal
// message must contain (or why the request is allowed).
func (w *authzWorld) expect(tc authzCase, c *authzCaller) (int, string) {
	switch {
	case c.badCert != "":
		return http.StatusUnauthorized, c.badCert
	case slices.Contains(strings.Fields(tc.allow), c.name):
		return tc.status, "allowed"
	case c.id.IsZero():
		return http.StatusUnauthorized, tc.route + " needs a client certificate signed by Romana's CA"
	}
	d := access.Decide(c.id, tc.route)
	if !d.Allowed {
		return http.StatusForbidden, fmt.Sprintf("identity %s may not call %s (rule ", c.id, tc.route)
	}
	if tc.scoped != nil {
		return http.StatusForbidden, tc.scoped(c.id, d)
	}
	return http.StatusForbidden, fmt.Sprintf("identity %s may act only on host %s's objects (rule %q)", c.id, c.id.Host, d.Rule)
}

// certRequest is the body of a certificate request for want with a new key.
func (w *authzWorld) certRequest(want pki.Identity, validity string) string {
	key, err := pki.NewKey()
	if err != nil {
		panic(err)
	}
	csr, err := pki.NewCSR(key, want.String())
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(api.CertRequest{Identity: want.String(), CSR: string(csr), Validity: validity})
	return string(b)
}

// joinRequest makes a fresh join token for h1 and returns a join body.
func (w *authzWorld) joinRequest() string {
	tok, err := w.in.Client.CreateToken(context.Background(), "h1", "")
	if err != nil {
		panic(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		panic(err)
	}
	csr, err := pki.NewCSR(key, "")
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(api.JoinRequest{Token: tok.Token, CSR: string(csr)})
	return string(b)
}

// foreignCredential is a certificate for id from another CA with the same
// name as Romana's: what a forger could make.
func foreignCredential(t testing.TB, id pki.Identity) *pki.Credential {
	t.Helper()
	ca, _, err := pki.NewCA("Romana CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return issueCredential(t, ca, id, time.Hour, time.Now())
}

// expiredCredential is a certificate for id from the instance's CA that
// expired an hour ago.
func expiredCredential(t testing.TB, in *servertest.Instance, id pki.Identity) *pki.Credential {
	t.Helper()
	return issueCredential(t, in.CA, id, time.Hour, time.Now().Add(-2*time.Hour))
}

func issueCredential(t testing.TB, ca *pki.CA, id pki.Identity, validity time.Duration, now time.Time) *pki.Credential {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, certPEM, err := ca.Issue(key.Public(), pki.Template{Identity: id.String(), Validity: validity}, now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Credential{Kind: pki.CredentialKind, Identity: id.String(), CA: string(ca.PEM), Cert: string(certPEM), Key: string(keyPEM)}
}

// logBuffer collects a JSON slog handler's lines; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// audits returns the audit records logged after offset from.
func (l *logBuffer) audits(from int) []map[string]any {
	l.mu.Lock()
	text := string(l.b.Bytes()[from:])
	l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(text, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "audit" {
			out = append(out, rec)
		}
	}
	return out
}

// checkAudit waits for the one audit line of the request just made and
// checks that it names the caller, the route and the status.
func checkAudit(t *testing.T, logs *logBuffer, from int, tc authzCase, method string, status int, c *authzCaller) {
	t.Helper()
	route := tc.route
	var recs []map[string]any
	expect.Poll(5*time.Second, func() error { // if none comes, the count below fails
		if recs = logs.audits(from); len(recs) == 0 {
			return errors.New("no audit line")
		}
		return nil
	})
	if len(recs) != 1 {
		t.Errorf("%d audit lines for %s as %s, want 1: %v", len(recs), route, c.name, recs)
		return
	}
	rec := recs[0]
	who := c.name
	if c.id.IsZero() {
		who = "anonymous"
	}
	if rec["identity"] != who || rec["route"] != route || rec["method"] != method || rec["status"] != float64(status) || rec["via"] != "tls" {
		t.Errorf("audit line %v; want identity %s, route %s, status %d", rec, who, route, status)
	}
	// An agent's periodic reports about itself are audited at debug level
	// when they succeed; every other audit line is at info.
	level := "INFO"
	if (route == "PUT /v1/status/{host}" || route == "PUT /v1/policy/stats/{host}") && status < 400 {
		level = "DEBUG"
	}
	if rec["level"] != level {
		t.Errorf("audit line %v at level %v, want %s", rec, rec["level"], level)
	}
	refused := status == http.StatusUnauthorized || status == http.StatusForbidden
	if e, _ := rec["error"].(string); refused && e == "" && !(tc.inStore && access.Decide(c.id, route).Allowed) {
		t.Errorf("audit line of a refusal without its error: %v", rec)
	}
	if c.badCert != "" {
		// The refused certificate is named in the error: its common name and serial.
		if e, _ := rec["error"].(string); !strings.Contains(e, `client certificate "admin" (serial `) {
			t.Errorf("audit line of a bad certificate does not name it: %v", rec)
		}
	}
}

// minus returns the elements of a not in b.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
