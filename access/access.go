// Package access is romanad's authorization table: which identity may call
// which API route, and on which host's objects. It is pure: romanad's
// server authenticates the caller, asks Decide, and enforces an own-host
// scope on the objects it touches.
package access

import (
	"fmt"
	"slices"
	"strings"

	"github.com/romana/romana/pki"
)

// Scope limits the objects an allowed route may touch.
type Scope int

const (
	// AnyObject: every object the route serves.
	AnyObject Scope = iota
	// OwnHost: only objects of the caller's own host (Identity.Host): the
	// server compares the host named by the request, or makes the store
	// operation conditional on it.
	OwnHost
)

func (s Scope) String() string {
	if s == OwnHost {
		return "own host"
	}
	return "any object"
}

// Rule grants some roles some routes.
type Rule struct {
	Name  string
	Roles []pki.Role
	// Routes are mux patterns ("GET /v1/snapshot"); "GET *" is every GET
	// route and "*" every route.
	Routes []string
	Scope  Scope
	// Why is the rule in words, for error messages and docs.
	Why string
}

// Anonymous routes need no identity: a join presents a token instead.
var Anonymous = []string{"POST /v1/join"}

// Rules is the table. The first rule that grants a route to the caller's
// role decides; a role with no rule for a route is refused.
var Rules = []Rule{
	{Name: "admin", Roles: []pki.Role{pki.RoleAdmin}, Routes: []string{"*"},
		Why: "admin may do everything"},
	{Name: "self", Roles: []pki.Role{pki.RoleViewer, pki.RoleKube, pki.RoleHost, pki.RoleCNI}, Routes: []string{"GET /v1/whoami"},
		Why: "every identity may ask who it is"},
	{Name: "viewer", Roles: []pki.Role{pki.RoleViewer}, Routes: []string{"GET *"},
		Why: "viewer may only read (GET)"},
	{Name: "kube-read", Roles: []pki.Role{pki.RoleKube}, Routes: KubeReads,
		Why: "the Kubernetes controller may read the whole state (not the certificate inventory)"},
	{Name: "kube-write", Roles: []pki.Role{pki.RoleKube}, Routes: []string{
		"POST /v1/hosts", "DELETE /v1/hosts/{name}", "DELETE /v1/hosts/{name}/addresses",
		"POST /v1/tenants", "DELETE /v1/tenants/{name}",
		"POST /v1/tenants/{tenant}/segments", "DELETE /v1/tenants/{tenant}/segments/{name}",
		"POST /v1/policies", "PUT /v1/policies/{name}", "DELETE /v1/policies/{name}",
		"PUT /v1/addresssets/{name}", "DELETE /v1/addresssets/{name}",
		"PUT /v1/pods/{namespace}/{name}", "DELETE /v1/pods/{namespace}/{name}"},
		Why: "the Kubernetes controller may write hosts (nodes), tenants (namespaces), segments, policies, address sets and pod records; and release the addresses of the hosts it registered (a deleted node's); not networks, devices, chains, other addresses or certificates"},
	{Name: "host-read", Roles: []pki.Role{pki.RoleHost}, Routes: []string{
		"GET /healthz", "GET /v1/snapshot", "GET /v1/watch"},
		Why: "a host's agent may read the whole state (snapshot and watch) it needs to program its host"},
	{Name: "host-own", Roles: []pki.Role{pki.RoleHost}, Scope: OwnHost, Routes: []string{
		"POST /v1/addresses", "GET /v1/addresses", "GET /v1/addresses/{name}",
		"DELETE /v1/addresses/{name}", "DELETE /v1/addresses",
		"PUT /v1/policy/stats/{host}", "PUT /v1/status/{host}", "POST /v1/certificates"},
		Why: "a host's agent may allocate, read and release addresses, report policy counters and its status, and renew certificates only for its own host"},
	{Name: "cni-own", Roles: []pki.Role{pki.RoleCNI}, Scope: OwnHost, Routes: []string{
		"GET /healthz",
		"POST /v1/addresses", "GET /v1/addresses", "GET /v1/addresses/{name}",
		"DELETE /v1/addresses/{name}", "DELETE /v1/addresses",
		"POST /v1/certificates"},
		Why: "a CNI plugin may only allocate, read and release addresses on its own host (and renew its certificate)"},
}

// KubeReads are the routes the Kubernetes controller (pki.RoleKube) may
// read: every GET route but the certificate inventory. They are listed
// rather than "GET *" so that a new read route is granted by decision
// (access_test checks that every GET route is either here or refused on
// purpose).
var KubeReads = []string{
	"GET /healthz", "GET /metrics", "GET /v1/snapshot", "GET /v1/watch",
	"GET /v1/networks", "GET /v1/networks/{name}",
	"GET /v1/hosts", "GET /v1/hosts/{name}",
	"GET /v1/tenants", "GET /v1/tenants/{name}",
	"GET /v1/segments", "GET /v1/tenants/{tenant}/segments", "GET /v1/tenants/{tenant}/segments/{name}",
	"GET /v1/addresses", "GET /v1/addresses/{name}", "GET /v1/decode",
	"GET /v1/policies", "GET /v1/policies/{name}", "GET /v1/policy/trace", "GET /v1/policy/stats",
	"GET /v1/addresssets", "GET /v1/addresssets/{name}",
	"GET /v1/pods", "GET /v1/pods/{namespace}/{name}",
	"GET /v1/devices", "GET /v1/devices/{name}", "GET /v1/fabric/routes",
	"GET /v1/chains", "GET /v1/chains/{name}",
	"GET /v1/status",
}

// Decision is Decide's answer.
type Decision struct {
	Allowed bool
	Rule    string // the rule that allowed, or "" when refused
	Scope   Scope
	// Message explains a refusal, naming the identity and the route.
	Message string
}

// Decide returns whether id may call route (a mux pattern such as
// "DELETE /v1/addresses/{name}"). An OwnHost decision still requires the
// server to confine the request to id.Host (see Own).
func Decide(id pki.Identity, route string) Decision {
	if id.IsZero() {
		if slices.Contains(Anonymous, route) {
			return Decision{Allowed: true, Rule: "anonymous"}
		}
		return Decision{Message: fmt.Sprintf("%s needs a client certificate signed by Romana's CA", route)}
	}
	method, _, _ := strings.Cut(route, " ")
	for _, r := range Rules {
		if !slices.Contains(r.Roles, id.Role) {
			continue
		}
		for _, p := range r.Routes {
			if p == "*" || p == route || (p == method+" *" && method != "") {
				return Decision{Allowed: true, Rule: r.Name, Scope: r.Scope}
			}
		}
	}
	// Refused: name every rule of the role, so the caller sees what it may do.
	var why []string
	for _, r := range Rules {
		if slices.Contains(r.Roles, id.Role) {
			why = append(why, fmt.Sprintf("rule %q: %s", r.Name, r.Why))
		}
	}
	if len(why) == 0 {
		why = []string{"no rule grants role " + string(id.Role) + " anything"}
	}
	return Decision{Message: fmt.Sprintf("identity %s may not call %s (%s)", id, route, strings.Join(why, "; "))}
}

// Own checks an OwnHost-scoped request against the host it names: nil when
// id may act on host's objects.
func Own(id pki.Identity, d Decision, host string) error {
	if d.Scope != OwnHost || id.Host == host {
		return nil
	}
	if host == "" {
		return fmt.Errorf("identity %s may act only on host %s's objects (rule %q): name host %s in the request", id, id.Host, d.Rule, id.Host)
	}
	return fmt.Errorf("identity %s may act only on host %s's objects (rule %q), not on host %s's", id, id.Host, d.Rule, host)
}

// MayRequest reports whether id may obtain a certificate for want: admin
// any; a host its own identity or its own CNI identity; a CNI plugin only
// its own identity.
func MayRequest(id, want pki.Identity) error {
	switch {
	case id.Role == pki.RoleAdmin:
		return nil
	case id.Role == pki.RoleHost && (want == id || want == pki.CNI(id.Host)):
		return nil
	case id.Role == pki.RoleCNI && want == id:
		return nil
	}
	return fmt.Errorf("identity %s may not obtain a certificate for %s (a host may renew its own and obtain its CNI plugin's; a CNI plugin only its own)", id, want)
}
