package main

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
)

// externalPKI is an operator's own CA and what it issued, written to files.
type externalPKI struct {
	ca                            *pki.CA
	caCert, caKey, cert, key, dir string
}

func newExternalPKI(t *testing.T) *externalPKI {
	t.Helper()
	dir := t.TempDir()
	ca, caKeyPEM, err := pki.NewCA("corp CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := &externalPKI{ca: ca, dir: dir, caCert: filepath.Join(dir, "ca.crt"), caKey: filepath.Join(dir, "ca.key"),
		cert: filepath.Join(dir, "romanad.crt"), key: filepath.Join(dir, "romanad.key")}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, certPEM, err := ca.Issue(key.Public(), pki.Template{Identity: "romanad", Validity: time.Hour, Server: true,
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for p, b := range map[string][]byte{e.caCert: ca.PEM, e.caKey: caKeyPEM, e.cert: certPEM, e.key: keyPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// credential is a credential for id issued by the external CA.
func (e *externalPKI) credential(t *testing.T, id pki.Identity, server string) *pki.Credential {
	t.Helper()
	key, _ := pki.NewKey()
	_, certPEM, err := e.ca.Issue(key.Public(), pki.Template{Identity: id.String(), Validity: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := pki.EncodeKey(key)
	return &pki.Credential{Kind: pki.CredentialKind, Server: server, CA: string(e.ca.PEM), Cert: string(certPEM), Key: string(keyPEM)}
}

// startRomanad runs romanad with args until the test ends and returns an
// admin client over its unix socket.
func startRomanad(t *testing.T, args ...string) *client.Client {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "romt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "r.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	args = append([]string{"--socket", sock, "--data-dir", t.TempDir(), "--log-level", "warn"}, args...)
	go func() { done <- run(ctx, args, &logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("romanad: %v\n%s", err, logs.String())
		}
	})
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	return c
}

// TestExternalCA: romanad signs with an operator's CA (--ca-cert/--ca-key)
// instead of creating one, and its admin credential and joined hosts chain
// to that CA.
func TestExternalCA(t *testing.T) {
	e := newExternalPKI(t)
	listen := freePort(t)
	adminConf := filepath.Join(t.TempDir(), "admin.conf")
	pkiDir := filepath.Join(t.TempDir(), "unused")
	root := startRomanad(t, "--listen", listen, "--advertise", "127.0.0.1", "--ca-cert", e.caCert, "--ca-key", e.caKey,
		"--pki-dir", pkiDir, "--admin-config", adminConf)
	if _, err := os.Stat(pkiDir); !os.IsNotExist(err) {
		t.Errorf("--pki-dir %s was created although --ca-cert was given: %v", pkiDir, err)
	}
	cred, err := pki.LoadCredential(adminConf)
	if err != nil {
		t.Fatal(err)
	}
	if cred.CA != string(e.ca.PEM) {
		t.Fatal("the admin credential does not trust the external CA")
	}
	admin, _, err := client.FromCredential(cred, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if me, err := admin.WhoAmI(ctx); err != nil || me.Identity != "admin" || me.Via != "tls" {
		t.Fatalf("admin over TLS: %+v, %v", me, err)
	}
	if _, err := root.AddHost(ctx, api.Host{Name: "h1", IP: mustAddr("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CreateToken(ctx, "h1", "")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := pki.ParseToken(tok.Token)
	if err != nil || parsed.CAPin != pki.Fingerprint(e.ca.Cert) {
		t.Fatalf("token %v pins %s, want the external CA", err, parsed.CAPin)
	}
}

// TestClientCAOnly: with an externally issued serving certificate and only
// a client CA (no CA key, no --pki-dir), romanad accepts that CA's client
// certificates and refuses to sign (tokens, joins, certificate requests)
// with an error that says why.
func TestClientCAOnly(t *testing.T) {
	e := newExternalPKI(t)
	listen := freePort(t)
	adminConf := filepath.Join(t.TempDir(), "admin.conf")
	startRomanad(t, "--listen", listen, "--tls-cert", e.cert, "--tls-key", e.key, "--client-ca", e.caCert,
		"--pki-dir", "", "--admin-config", adminConf)
	if _, err := os.Stat(adminConf); !os.IsNotExist(err) {
		t.Errorf("an admin credential was written without a CA key: %v", err)
	}
	ctx := context.Background()
	admin, _, err := client.FromCredential(e.credential(t, pki.Admin, "https://"+listen), "")
	if err != nil {
		t.Fatal(err)
	}
	if me, err := admin.WhoAmI(ctx); err != nil || me.Identity != "admin" {
		t.Fatalf("an external CA's admin certificate: %+v, %v", me, err)
	}
	if _, err := admin.AddHost(ctx, api.Host{Name: "h1", IP: mustAddr("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateToken(ctx, "h1", ""); err == nil || !strings.Contains(err.Error(), "no CA key") {
		t.Fatalf("a join token without a CA key: %v, want refused (no CA key)", err)
	}
	// A certificate of yet another CA is refused.
	stranger := other(t, e, listen)
	if _, err := stranger.WhoAmI(ctx); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Fatalf("a certificate of another CA: %v, want 401", err)
	}
}

// other returns a client that trusts e's CA (romanad's serving
// certificate) and presents an admin certificate of another CA.
func other(t *testing.T, e *externalPKI, listen string) *client.Client {
	t.Helper()
	c := newExternalPKI(t).credential(t, pki.Admin, "https://"+listen)
	c.CA = string(e.ca.PEM)
	cl, _, err := client.FromCredential(c, "")
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
