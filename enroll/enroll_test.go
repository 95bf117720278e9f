package enroll

import (
	"context"
	"net/netip"
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

// TestJoinRenewAndCNI joins with a token against a real romanad over TLS,
// then renews the host certificate (short-lived here) and keeps the CNI
// credential, and checks that every certificate works and the old token
// cannot be used again.
func TestJoinRenewAndCNI(t *testing.T) {
	srv := servertest.Start(t, servertest.WithHostCertValidity(9*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := srv.Client.AddHost(ctx, api.Host{Name: "h1", IP: netip.MustParseAddr("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	tok, err := srv.Client.CreateToken(ctx, "h1", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := Config{Server: srv.URL, Path: filepath.Join(dir, "host.conf"), Token: tok.Token, Host: "h1",
		CNIPath: filepath.Join(dir, "cni", "cni.conf")}

	e, err := Load(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e.Identity != pki.Host("h1") {
		t.Fatalf("identity %s, want host:h1", e.Identity)
	}
	for _, p := range []string{cfg.Path} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", p, err, fi.Mode())
		}
	}
	who, err := e.Client.WhoAmI(ctx)
	if err != nil || who.Identity != "host:h1" {
		t.Fatalf("whoami = %+v, %v", who, err)
	}

	// The token is used up: a second enrollment with it fails.
	if _, err := Load(ctx, Config{Server: srv.URL, Path: filepath.Join(dir, "again.conf"), Token: tok.Token}); err == nil ||
		!strings.Contains(err.Error(), "not found") {
		t.Fatalf("second join with the same token: %v, want refused (token not found)", err)
	}
	// A credential that exists wins over a token; a mismatching --host is refused.
	if _, err := Load(ctx, Config{Path: cfg.Path, Token: tok.Token, Host: "h1"}); err != nil {
		t.Fatalf("reload with an existing credential: %v", err)
	}
	if _, err := Load(ctx, Config{Path: cfg.Path, Host: "h2"}); err == nil || !strings.Contains(err.Error(), "not --host h2") {
		t.Fatalf("credential for h1 with --host h2: %v", err)
	}
	if _, err := Load(ctx, Config{Path: filepath.Join(dir, "none.conf")}); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Fatalf("no credential and no token: %v", err)
	}

	first := pki.Serial(e.Leaf())
	e.Prepare(ctx) // writes the CNI credential now
	cni, err := pki.LoadCredential(cfg.CNIPath)
	if err != nil {
		t.Fatal(err)
	}
	if cni.Identity != "cni:h1" {
		t.Fatalf("CNI credential identity %q", cni.Identity)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.Run(rctx) }()
	defer func() { stop(); <-done }()
	select {
	case <-e.Renewed():
	case <-ctx.Done():
		t.Fatal("host certificate not renewed before the test deadline")
	}
	if pki.Serial(e.Leaf()) == first {
		t.Fatal("renewal kept the same certificate")
	}
	onDisk, err := pki.LoadCredential(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if leaf, _ := onDisk.Leaf(); pki.Serial(leaf) != pki.Serial(e.Leaf()) {
		t.Fatal("the renewed certificate was not written to the credential file")
	}
	// The same client keeps working with the renewed certificate.
	who, err = e.Client.WhoAmI(ctx)
	if err != nil || who.Serial != pki.Serial(e.Leaf()) {
		t.Fatalf("whoami after renewal = %+v, %v; want serial %s", who, err, pki.Serial(e.Leaf()))
	}

	// Removing the host revokes host:h1 and cni:h1 at once.
	if err := srv.Client.RemoveHost(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.WhoAmI(ctx); api.ReasonOf(err) != api.ReasonUnauthorized || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("whoami after host removal: %v, want 401 revoked", err)
	}
	cniClient, _, err := client.FromCredential(cni, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cniClient.WhoAmI(ctx); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Fatalf("CNI credential after host removal: %v, want 401 revoked", err)
	}
}
