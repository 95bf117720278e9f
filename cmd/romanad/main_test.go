package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/pki"
)

// freePort returns a loopback address:port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRunServesOnSocketAndStops: romanad bootstraps its CA and the admin
// credential in the directories it is given (never the system's), serves
// the unix socket (root: admin) and mutual TLS on --listen (the admin
// credential works there, plaintext does not), stops, and starts again on
// the same data and CA.
func TestRunServesOnSocketAndStops(t *testing.T) {
	sockDir, err := os.MkdirTemp("", "romt-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "r.sock")
	dataDir, pkiDir := t.TempDir(), t.TempDir()
	adminConf := filepath.Join(t.TempDir(), "admin.conf")
	listen := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	args := []string{"--listen", listen, "--socket", sock, "--data-dir", dataDir, "--pki-dir", pkiDir,
		"--admin-config", adminConf, "--log-level", "warn"}
	go func() { done <- run(ctx, args, &logs) }()
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		cancel()
		t.Fatalf("%v (run: %v)", err, <-done)
	}
	if _, err := c.AddTenant(ctx, api.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	if me, err := c.WhoAmI(ctx); err != nil || me.Identity != "admin" || me.Via != "unix" {
		t.Errorf("whoami on the socket: %+v, %v; want admin via unix", me, err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: %v, %v; want mode 0600", sock, fi.Mode(), err)
	}

	// The admin credential: in --admin-config, 0600, for --listen's
	// address; it works over TLS there.
	fi, err := os.Stat(adminConf)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin credential %s: %v, %v; want mode 0600", adminConf, fi, err)
	}
	cred, err := pki.LoadCredential(adminConf)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Server != "https://"+listen {
		t.Errorf("admin credential names %s, want https://%s", cred.Server, listen)
	}
	for _, f := range []string{pki.CACertFile, pki.CAKeyFile} {
		if _, err := os.Stat(filepath.Join(pkiDir, f)); err != nil {
			t.Errorf("CA in --pki-dir: %v", err)
		}
	}
	tc, _, err := client.FromCredential(cred, "")
	if err != nil {
		t.Fatal(err)
	}
	defer tc.CloseIdleConnections()
	if me, err := tc.WhoAmI(ctx); err != nil || me.Identity != "admin" || me.Via != "tls" {
		t.Errorf("whoami over TLS with the admin credential: %+v, %v; want admin via tls", me, err)
	}
	if _, err := tc.GetTenant(ctx, "acme"); err != nil {
		t.Errorf("admin over TLS: %v", err)
	}
	// Plaintext on the TLS port gets no API answer.
	if resp, err := http.Get("http://" + listen + "/v1/tenants"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || strings.Contains(string(body), "acme") {
			t.Errorf("plaintext GET /v1/tenants: %s %s", resp.Status, body)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind after stop: %v", sock, err)
	}
	first, err := os.ReadFile(adminConf)
	if err != nil {
		t.Fatal(err)
	}

	// A second run on the same data dir (the socket directory exists now)
	// sees the tenant, keeps the CA, and leaves the admin credential alone.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- run(ctx, args, &logs) }()
	if err := c.WaitHealthy(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if again, err := os.ReadFile(adminConf); err != nil || !bytes.Equal(again, first) {
		t.Errorf("the second start rewrote the admin credential (%v)", err)
	}
	tc.CloseIdleConnections()
	if _, err := tc.GetTenant(ctx, "acme"); err != nil {
		t.Errorf("the admin credential after a restart: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"Usage:\n  romanad [flags]", "--data-dir", "--etcd-endpoints", "Examples:", "--version"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"--version"}, &out); err != nil || !strings.HasPrefix(out.String(), "romanad version ") {
		t.Errorf("--version: %v, %q", err, out.String())
	}
	// A bad command line is a usage error (exit 2), before anything starts.
	for _, args := range [][]string{
		{"--log-level", "loud"},
		{"--listen", "", "--socket", ""},
		{"extra"},
		{"--bogus"},
		{"--max-connections", "many"},
		{"--watch-history", "10"},
	} {
		err := run(context.Background(), args, &out)
		var u *cmdline.UsageError
		if !errors.As(err, &u) {
			t.Errorf("run %q: %v, want a usage error", args, err)
		}
		if code := cmdline.Exit(io.Discard, "romanad", err); code != cmdline.ExitUsage {
			t.Errorf("run %q: exit code %d, want %d", args, code, cmdline.ExitUsage)
		}
	}
}
