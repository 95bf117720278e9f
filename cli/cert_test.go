package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// joinWith joins host's agent with a token as romana-agent --join does: a
// new key, a CSR for host:NAME, POST /v1/join pinned to the token's CA.
func joinWith(t *testing.T, server, token, host string) (api.CertResponse, error) {
	t.Helper()
	tok, err := pki.ParseToken(token)
	if err != nil {
		t.Fatalf("token %q printed by romana: %v", token, err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, pki.Host(host).String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return client.Join(ctx, server, tok, csr)
}

// TestHostAddPrintsJoinToken: host add prints a single-use token and the
// agent's command line; the token joins once, a second use is refused 401.
func TestHostAddPrintsJoinToken(t *testing.T) {
	srv := servertest.Start(t)
	s := adminSession(t, srv)
	s.ok("network", "add", "pods", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=4", "--field", "segment=4")

	out := s.ok("host", "add", "h1", "--ip", "192.168.1.11")
	lines := strings.Split(out, "\n")
	var token, command string
	for i, l := range lines {
		if strings.HasPrefix(l, "Join token for host h1 (single use, expires ") && i+1 < len(lines) {
			token = strings.TrimSpace(lines[i+1])
		}
		if c, ok := strings.CutPrefix(l, "  romana-agent "); ok {
			command = "romana-agent " + c
		}
	}
	if want := "romana-agent --join " + token + " --server " + srv.URL + " --host h1"; token == "" || command != want {
		t.Fatalf("host add output lacks the token or the command %q:\n%s", want, out)
	}
	if !strings.HasPrefix(out, "NAME  IP            LABELS  BLOCKS\nh1    192.168.1.11  -       pods:10.0.0.0/16\n\n") {
		t.Errorf("host add output does not start with the host:\n%s", out)
	}
	if !strings.Contains(out, "(127.0.0.1 is a loopback address: replace it with romanad's address as h1 reaches it)\n") {
		t.Errorf("no note about the loopback address:\n%s", out)
	}
	cert, err := joinWith(t, srv.URL, token, "h1")
	if err != nil || cert.Identity != "host:h1" {
		t.Fatalf("first join with the printed token: %+v, %v", cert, err)
	}
	if _, err := joinWith(t, srv.URL, token, "h1"); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Fatalf("second join with the same token: %v; want 401 Unauthorized", err)
	}

	// -o json: the host's fields and the join block.
	var added struct {
		api.Host
		Join joinInfo `json:"join"`
	}
	s.okJSON(&added, "host", "add", "h2", "--ip", "192.168.1.12", "--token-ttl", "15m")
	if added.Name != "h2" || len(added.Slots) != 1 || added.Join.Host != "h2" || added.Join.Server != srv.URL ||
		added.Join.Command != "romana-agent --join "+added.Join.Token+" --server "+srv.URL+" --host h2" {
		t.Fatalf("host add -o json: %+v", added)
	}
	if left := time.Until(added.Join.Expires); left > 15*time.Minute || left < 13*time.Minute {
		t.Errorf("--token-ttl 15m: the token expires in %s", left)
	}
	if _, err := joinWith(t, srv.URL, added.Join.Token, "h2"); err != nil {
		t.Fatalf("join with the token of host add -o json: %v", err)
	}

	// --no-token: nothing but the host.
	if out := s.ok("host", "add", "h3", "--ip", "192.168.1.13", "--no-token"); strings.Contains(out, "rmn1.") || strings.Count(out, "\n") != 2 {
		t.Errorf("host add --no-token:\n%s", out)
	}
	var plain map[string]any
	s.okJSON(&plain, "host", "add", "h4", "--ip", "192.168.1.14", "--no-token")
	if _, ok := plain["join"]; ok || plain["name"] != "h4" {
		t.Errorf("host add --no-token -o json: %v", plain)
	}

	// host token: a new token for an existing host, usable once.
	var j joinInfo
	s.okJSON(&j, "host", "token", "h3", "--ttl", "5m")
	if _, err := joinWith(t, srv.URL, j.Token, "h3"); err != nil {
		t.Fatalf("join with host token's token: %v", err)
	}
	out = s.ok("host", "token", "h4")
	if !strings.Contains(out, "Join token for host h4 (single use, expires ") || !strings.Contains(out, "  romana-agent --join rmn1.") {
		t.Errorf("host token h4:\n%s", out)
	}
	_, err = srv.Client.CreateToken(context.Background(), "h4", "48h")
	s.fails(err, "host", "token", "h4", "--ttl", "48h")
	_, err = srv.Client.CreateToken(context.Background(), "nosuch", "")
	s.fails(err, "host", "token", "nosuch")

	// Over the unix socket romana does not know romanad's TLS address.
	us := cliSession{t: t, env: map[string]string{EnvServer: "unix://" + srv.Socket}}
	out = us.ok("host", "add", "h5", "--ip", "192.168.1.15")
	if !strings.Contains(out, " --server https://ROMANAD:9600 --host h5\n") ||
		!strings.Contains(out, "(this command used the unix socket: replace https://ROMANAD:9600 with romanad's TLS address as h5 reaches it)\n") {
		t.Errorf("host add over the unix socket:\n%s", out)
	}

	// Removing a host revokes its certificates: h1's agent is refused.
	if out := s.ok("host", "remove", "h1"); out != "host h1 removed; certificates of host:h1 and cni:h1 revoked\n" {
		t.Errorf("host remove: %q", out)
	}
	var certs []api.CertRecord
	s.okJSON(&certs, "cert", "list")
	for _, c := range certs {
		if c.Identity == "host:h1" && c.Revoked == nil {
			t.Errorf("host:h1's certificate %s not revoked after host remove", c.Serial)
		}
	}
}

// TestCertIssueRevokeWhoAmI: an admin issues a viewer credential; it reads
// but may not write (403 naming viewer); once revoked it is refused (401).
func TestCertIssueRevokeWhoAmI(t *testing.T) {
	srv := servertest.Start(t)
	s := adminSession(t, srv)
	ctx := context.Background()

	me := s.ok("whoami")
	for _, want := range []string{"Identity:    admin\n", "Via:         tls\n", "Server:      " + srv.URL + "\n", "Credential:  " + s.env[EnvConfig] + "\n", "Serial:  "} {
		if !strings.Contains(me, want) {
			t.Errorf("whoami lacks %q:\n%s", want, me)
		}
	}
	us := cliSession{t: t, env: map[string]string{EnvServer: "unix://" + srv.Socket}}
	var w api.WhoAmI
	us.okJSON(&w, "whoami")
	if w.Identity != "admin" || w.Via != "unix" || w.Serial != "" {
		t.Errorf("whoami over the unix socket: %+v", w)
	}

	dir := t.TempDir()
	viewerConf := filepath.Join(dir, "viewer.conf")
	out := s.ok("cert", "issue", "--identity", "viewer", "--out", viewerConf, "--validity", "2h")
	if !strings.HasPrefix(out, "credential for viewer written to "+viewerConf+" (serial ") || !strings.HasSuffix(out, ", server "+srv.URL+")\n") {
		t.Errorf("cert issue output: %q", out)
	}
	fi, err := os.Stat(viewerConf)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credential file: %v, mode %v", err, fi.Mode())
	}
	cred, err := pki.LoadCredential(viewerConf)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := cred.Leaf()
	if err != nil || leaf.Subject.CommonName != "viewer" || cred.Server != srv.URL || cred.Identity != "viewer" {
		t.Fatalf("credential: %+v, leaf %v, %v", cred, leaf, err)
	}
	if left := time.Until(leaf.NotAfter); left > 2*time.Hour || left < 110*time.Minute {
		t.Errorf("--validity 2h: the certificate expires in %s", left)
	}
	if r := s.run("", "cert", "issue", "--identity", "viewer", "--out", viewerConf); r.code != ExitUsage ||
		!strings.HasPrefix(r.stderr, "Error: --out "+viewerConf+" exists: remove it first or choose another file\n") {
		t.Errorf("cert issue over an existing file: exit %d %q", r.code, r.stderr)
	}

	// The viewer reads, and may not write.
	s.ok("tenant", "add", "acme")
	viewer := cliSession{t: t, env: map[string]string{EnvConfig: viewerConf}}
	if out := viewer.ok("tenant", "list"); !strings.Contains(out, "acme") {
		t.Errorf("viewer's tenant list:\n%s", out)
	}
	if out := viewer.ok("whoami"); !strings.Contains(out, "Identity:    viewer\n") {
		t.Errorf("viewer's whoami:\n%s", out)
	}
	vc, _, err := client.FromCredential(cred, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = vc.AddTenant(ctx, api.Tenant{Name: "evil"})
	if api.ReasonOf(err) != api.ReasonForbidden || !strings.Contains(err.Error(), "identity viewer ") {
		t.Fatalf("viewer adding a tenant: %v; want 403 naming identity viewer", err)
	}
	viewer.fails(err, "tenant", "add", "evil")

	// The Kubernetes controller's credential: it writes tenants and
	// address sets, and may not touch networks.
	kubeConf := filepath.Join(dir, "kube.conf")
	if out := s.ok("cert", "issue", "--identity", "kube", "--out", kubeConf); !strings.HasPrefix(out, "credential for kube written to "+kubeConf) {
		t.Errorf("cert issue --identity kube: %q", out)
	}
	kube := cliSession{t: t, env: map[string]string{EnvConfig: kubeConf}}
	if out := kube.ok("whoami"); !strings.Contains(out, "Identity:    kube\n") {
		t.Errorf("kube's whoami:\n%s", out)
	}
	kube.ok("tenant", "add", "shop")
	kube.ok("addressset", "apply", "web-pods", "10.1.0.5")
	if r := kube.run("", "network", "add", "n", "--cidr", "10.0.0.0/8", "--field", "host=8", "--field", "tenant=8", "--field", "segment=4"); r.code != ExitError ||
		!strings.Contains(r.stderr, "identity kube may not call POST /v1/networks") {
		t.Errorf("kube adding a network: exit %d %q", r.code, r.stderr)
	}
	if r := kube.run("", "cert", "list"); r.code != ExitError || !strings.Contains(r.stderr, "identity kube may not call GET /v1/certificates") {
		t.Errorf("kube listing certificates: exit %d %q", r.code, r.stderr)
	}

	// Revoke by identity: the viewer is refused with 401 at once.
	var listed []api.CertRecord
	s.okJSON(&listed, "cert", "list")
	var serial string
	for _, c := range listed {
		if c.Identity == "viewer" {
			serial = c.Serial
		}
	}
	if serial != pki.Serial(leaf) {
		t.Fatalf("cert list has no viewer certificate with serial %s: %+v", pki.Serial(leaf), listed)
	}
	out = s.ok("cert", "revoke", "--identity", "viewer")
	if out != "revoked certificate "+serial+" (viewer)\n" {
		t.Errorf("cert revoke --identity viewer: %q", out)
	}
	_, err = vc.ListTenants(ctx)
	if api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Fatalf("revoked viewer listing tenants: %v; want 401", err)
	}
	viewer.fails(err, "tenant", "list")
	if out := s.ok("cert", "revoke", "--identity", "viewer"); out != "nothing revoked: the certificates named (identity viewer) are already revoked or were never issued\n" {
		t.Errorf("revoking again: %q", out)
	}
	if out := s.ok("cert", "revoke", "--serial", serial, "-o", "json"); out != "[]\n" {
		t.Errorf("revoking again by serial, -o json: %q", out)
	}
	out = s.ok("cert", "list")
	// Columns are aligned to the widest cell, and serials differ in width:
	// compare the viewer's row field by field.
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == serial {
			row = f
		}
	}
	if !strings.HasPrefix(out, "IDENTITY  SERIAL") || len(row) < 4 || row[0] != "viewer" ||
		row[2] != leaf.NotAfter.UTC().Format(time.RFC3339) || !strings.HasSuffix(strings.Join(row, " "), "revoked by admin") {
		t.Errorf("cert list (viewer's row %q):\n%s", row, out)
	}

	// Over the unix socket the credential's server must be given.
	adminConf := filepath.Join(dir, "alice.conf")
	us.ok("cert", "issue", "--identity", "admin", "--out", adminConf, "--credential-server", srv.URL)
	alice := cliSession{t: t, env: map[string]string{EnvConfig: adminConf}}
	alice.ok("tenant", "add", "globex")
}

// TestNoCAKey: host add recognises romanad's refusal to sign without a CA
// key (an external CA) and skips the token; other errors are not skipped.
func TestNoCAKey(t *testing.T) {
	noKey := api.Errorf(api.ReasonInvalid, "romanad has no CA key (it was started with an external CA): issue certificates with that CA")
	if !isNoCAKey(fmt.Errorf("POST /v1/hosts/h1/token: %w", noKey)) {
		t.Errorf("not recognised: %v", noKey)
	}
	for _, err := range []error{
		api.Errorf(api.ReasonInvalid, `token ttl "48h": want a duration between 1s and 24h0m0s, e.g. 15m`),
		api.Errorf(api.ReasonForbidden, "identity viewer may not call POST /v1/hosts/{name}/token"),
		errors.New("no CA key"),
	} {
		if isNoCAKey(err) {
			t.Errorf("taken for a missing CA key: %v", err)
		}
	}
}
