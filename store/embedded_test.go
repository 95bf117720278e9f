package store

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/romana/romana/sim/simtest"
)

func openEmbedded(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{DataDir: dir, UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tlsFrom is a client TLS config with the certificate pair certDir/name.crt,
// name.key ("" for none), trusting caDir's CA.
func tlsFrom(t *testing.T, certDir, name, caDir string) *tls.Config {
	t.Helper()
	info := transport.TLSInfo{TrustedCAFile: filepath.Join(caDir, caCertFile)}
	if name != "" {
		info.CertFile = filepath.Join(certDir, name+".crt")
		info.KeyFile = filepath.Join(certDir, name+".key")
	}
	c, err := info.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refused asserts that a client with tc can neither read nor write at endpoint.
func refused(t *testing.T, what, endpoint string, tc *tls.Config) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc,
		DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return // refused at dial
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "/romana/v1/", clientv3.WithPrefix()); err == nil {
		t.Errorf("%s: Get succeeded", what)
	}
	if _, err := cli.Put(ctx, "/romana/v1/x", "y"); err == nil {
		t.Errorf("%s: Put succeeded", what)
	}
}

func TestEmbeddedRequiresClientCertificate(t *testing.T) {
	dir := t.TempDir()
	s := openEmbedded(t, dir)
	ctx := context.Background()
	if !strings.HasPrefix(s.Endpoint, "https://127.0.0.1:") {
		t.Fatalf("Endpoint = %q, want https://127.0.0.1:PORT", s.Endpoint)
	}
	if _, err := s.Client.Put(ctx, "/romana/v1/good", "v"); err != nil {
		t.Fatalf("romanad's own client: %v", err)
	}
	tdir := TLSDir(dir)

	// A CA of its own, with a client certificate of the same name as romanad's.
	other := t.TempDir()
	if err := ensureTLS(other, time.Now(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	refused(t, "no TLS", "http://"+strings.TrimPrefix(s.Endpoint, "https://"), nil)
	refused(t, "TLS without a client certificate", s.Endpoint, tlsFrom(t, "", "", tdir))
	refused(t, "TLS without a client certificate, not verifying the server", s.Endpoint, &tls.Config{InsecureSkipVerify: true})
	refused(t, "client certificate from another CA", s.Endpoint, tlsFrom(t, other, "client", tdir))
	refused(t, "the server's own certificate", s.Endpoint, tlsFrom(t, tdir, "server", tdir))

	// The peer listener: without a certificate of the CA, nothing; with the
	// server's (the peer certificate), the members list.
	peer := "https://" + s.embedded.Peers[0].Addr().String() + "/members"
	get := func(tc *tls.Config) error {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(peer)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return &url.Error{Op: "GET", URL: peer, Err: os.ErrInvalid}
		}
		return nil
	}
	if err := get(&tls.Config{InsecureSkipVerify: true}); err == nil {
		t.Error("peer listener answered a client without a certificate")
	}
	if err := get(tlsFrom(t, other, "server", tdir)); err == nil {
		t.Error("peer listener answered a certificate from another CA")
	}
	if err := get(tlsFrom(t, tdir, "server", tdir)); err != nil {
		t.Errorf("peer listener refused the peer certificate (the checks above prove nothing): %v", err)
	}

	r, err := s.Client.Get(ctx, "/romana/v1/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Key) != "/romana/v1/good" {
		t.Fatalf("store holds %v, want only /romana/v1/good", r.Kvs)
	}
}

func TestEmbeddedTLSFiles(t *testing.T) {
	dir := t.TempDir()
	openEmbedded(t, dir)
	tdir := TLSDir(dir)
	fi, err := os.Stat(tdir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("%s mode %v, want 0700", tdir, fi.Mode().Perm())
	}
	for _, f := range []string{caKeyFile, serverKeyFile, clientKeyFile} {
		fi, err := os.Stat(filepath.Join(tdir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	ca, _, err := loadCA(tdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{caCertFile, serverCertFile, clientCertFile} {
		b, err := os.ReadFile(filepath.Join(tdir, f))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", f, c.PublicKey)
		}
		if f != caCertFile && c.CheckSignatureFrom(ca) != nil {
			t.Errorf("%s is not signed by %s", f, caCertFile)
		}
	}
	entries, err := os.ReadDir(tdir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "ca.crt ca.key client.crt client.key server.crt server.key" {
		t.Errorf("%s holds %s", tdir, got)
	}
}

func TestEmbeddedRestartKeepsDataAndCertificates(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.Put(ctx, "/k", "v1"); err != nil {
		t.Fatal(err)
	}
	read := func() map[string][]byte {
		m := map[string][]byte{}
		for _, f := range []string{caCertFile, caKeyFile, serverCertFile, serverKeyFile, clientCertFile, clientKeyFile} {
			b, err := os.ReadFile(filepath.Join(TLSDir(dir), f))
			if err != nil {
				t.Fatal(err)
			}
			m[f] = b
		}
		return m
	}
	before := read()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openEmbedded(t, dir)
	r, err := s.Client.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart /k = %v", r.Kvs)
	}
	for f, b := range read() {
		if !bytes.Equal(b, before[f]) {
			t.Errorf("restart replaced %s", f)
		}
	}
}

// A data dir made before the store required TLS (plain http URLs, same
// member name and token) opens, with its data.
func TestEmbeddedOpensPlainHTTPDataDir(t *testing.T) {
	dir := t.TempDir()
	ec := embed.NewConfig()
	ec.Name = "romanad"
	ec.Dir = dir
	loop := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{loop}, []url.URL{loop}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{loop}, []url.URL{loop}
	ec.InitialCluster = ec.Name + "=" + loop.String()
	ec.InitialClusterToken = "romanad"
	ec.ListenMetricsUrls = nil
	ec.UnsafeNoFsync = true
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("plain etcd not ready")
	}
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + e.Clients[0].Addr().String()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/old", "v"); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	e.Close()

	s := openEmbedded(t, dir)
	r, err := s.Client.Get(ctx, "/old")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 {
		t.Fatalf("/old after the switch to TLS: %v", r.Kvs)
	}
}

func TestEnsureTLSRenews(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := ensureTLS(dir, t0, log); err != nil {
		t.Fatal(err)
	}
	serials := func() map[string]string {
		m := map[string]string{}
		for _, f := range []string{caCertFile, serverCertFile, clientCertFile} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode(b)
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			m[f] = c.SerialNumber.String()
		}
		return m
	}
	steps := []struct {
		name    string
		at      time.Time
		mangle  string // file to corrupt first
		renewed string // certificates that must change, space separated
	}{
		{"same day", t0, "", ""},
		{"leaves 31 days from expiry", t0.Add(leafValidity - 31*24*time.Hour), "", ""},
		{"leaves 29 days from expiry", t0.Add(leafValidity - 29*24*time.Hour), "", "client.crt server.crt"},
		{"corrupt client key", t0.Add(leafValidity), clientKeyFile, "client.crt"},
		{"CA 29 days from expiry", t0.Add(caValidity - 29*24*time.Hour), "", "ca.crt client.crt server.crt"},
		{"corrupt CA key", t0.Add(caValidity), caKeyFile, "ca.crt client.crt server.crt"},
	}
	for _, st := range steps {
		before := serials()
		if st.mangle != "" {
			if err := os.WriteFile(filepath.Join(dir, st.mangle), []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := ensureTLS(dir, st.at, log); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		after := serials()
		var changed []string
		for _, f := range []string{caCertFile, clientCertFile, serverCertFile} {
			if before[f] != after[f] {
				changed = append(changed, f)
			}
		}
		if got := strings.Join(changed, " "); got != st.renewed {
			t.Errorf("%s: renewed %q, want %q", st.name, got, st.renewed)
		}
		ca, _, err := loadCA(dir)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for _, l := range leaves {
			if err := checkLeaf(dir, l, ca, st.at); err != nil {
				t.Errorf("%s: %s: %v", st.name, l.cert, err)
			}
		}
	}
}

// TestEmbeddedRefusesUnprivilegedUser runs etcdctl as nobody against the
// embedded etcd, as any local user could: every attempt must fail, and so
// must reading the key files. The data dir is opened to all (it is 0700 in
// use) so that only the TLS directory's own permissions and mutual TLS are
// tested.
func TestEmbeddedRefusesUnprivilegedUser(t *testing.T) {
	simtest.Need(t, os.Geteuid() == 0, "needs root to run commands as nobody")
	etcdctl, err := exec.LookPath("etcdctl")
	simtest.Need(t, err == nil, "needs etcdctl (Debian package etcd-client)")
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "data")
	s := openEmbedded(t, dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tdir := TLSDir(dir)
	run := func(asNobody bool, name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.Env = []string{"ETCDCTL_API=3", "PATH=/usr/bin:/bin", "HOME=/"}
		if asNobody {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		}
		out, err := cmd.CombinedOutput()
		t.Logf("%s (nobody=%v): err=%v\n%s", strings.Join(cmd.Args, " "), asNobody, err, out)
		return err
	}
	for _, f := range []string{caKeyFile, serverKeyFile, clientKeyFile, caCertFile} {
		if err := run(true, "/bin/cat", filepath.Join(tdir, f)); err == nil {
			t.Errorf("nobody read %s", f)
		}
	}
	ep := "--endpoints=" + s.Endpoint
	common := []string{ep, "--dial-timeout=2s", "--command-timeout=3s"}
	creds := []string{"--cacert=" + filepath.Join(tdir, caCertFile),
		"--cert=" + filepath.Join(tdir, clientCertFile), "--key=" + filepath.Join(tdir, clientKeyFile)}
	for _, extra := range [][]string{
		nil,
		{"--insecure-skip-tls-verify"},
		creds,
	} {
		args := append(append(append([]string{}, common...), extra...), "put", "/romana/v1/x", "y")
		if err := run(true, etcdctl, args...); err == nil {
			t.Errorf("nobody: etcdctl %v succeeded", extra)
		}
	}
	// The same etcdctl, as nobody, with a copy of romanad's certificate
	// works: the refusals above are about credentials only.
	stolen := filepath.Join(base, "stolen")
	if err := os.Mkdir(stolen, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{caCertFile, clientCertFile, clientKeyFile} {
		b, err := os.ReadFile(filepath.Join(tdir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stolen, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copied := []string{"--cacert=" + filepath.Join(stolen, caCertFile),
		"--cert=" + filepath.Join(stolen, clientCertFile), "--key=" + filepath.Join(stolen, clientKeyFile)}
	if err := run(true, etcdctl, append(append(common, copied...), "put", "/romana/v1/control", "y")...); err != nil {
		t.Fatalf("nobody with a copy of romanad's certificate: %v", err)
	}
	r, err := s.Client.Get(context.Background(), "/romana/v1/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Key) != "/romana/v1/control" {
		t.Fatalf("store holds %v, want only /romana/v1/control", r.Kvs)
	}
}
