package pki

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCAFilesAndIssue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	now := time.Now()
	ca, created, err := LoadOrCreateCA(dir, now)
	if err != nil || !created {
		t.Fatalf("create CA: %v created=%v", err, created)
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v mode %v, want %v", name, err, fi.Mode().Perm(), want)
		}
	}
	again, created, err := LoadOrCreateCA(dir, now)
	if err != nil || created || Fingerprint(again.Cert) != Fingerprint(ca.Cert) {
		t.Fatalf("reload CA: %v created=%v", err, created)
	}
	// A key without its certificate is reported, never replaced by a new CA.
	os.Remove(filepath.Join(dir, CACertFile))
	if _, _, err := LoadOrCreateCA(dir, now); err == nil {
		t.Fatal("a CA directory with a key but no certificate was accepted")
	}

	key, _ := NewKey()
	cert, _, err := ca.Issue(key.Public(), Template{Identity: "host:h1", Validity: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "host:h1" || cert.IsCA || len(cert.ExtKeyUsage) != 1 {
		t.Fatalf("issued %+v", cert.Subject)
	}
	if skew := now.Sub(cert.NotBefore); skew > 6*time.Minute || skew < 5*time.Second {
		t.Errorf("NotBefore backdated by %s, want a tenth of the lifetime (6m)", skew)
	}
}

func TestIdentity(t *testing.T) {
	for _, s := range []string{"admin", "viewer", "kube", "host:h1", "cni:h-2.x"} {
		id, err := ParseIdentity(s)
		if err != nil || id.String() != s {
			t.Errorf("ParseIdentity(%q) = %v, %v", s, id, err)
		}
	}
	for _, s := range []string{"", "root", "admin:x", "host", "host:", "host:H1", "cni:a/b", "viewer:", "kube:x", "Kube"} {
		if _, err := ParseIdentity(s); err == nil {
			t.Errorf("ParseIdentity(%q) accepted", s)
		}
	}
}

func TestToken(t *testing.T) {
	ca, _, err := NewCA("t", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseToken(" " + tok.String() + "\n")
	if err != nil || got != tok {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if !SecretMatches(tok.Secret, SecretHash(tok.Secret)) || SecretMatches("x"+tok.Secret[1:], SecretHash(tok.Secret)) {
		t.Fatal("SecretMatches")
	}
	for _, bad := range []string{"", "rmn1", "rmn2." + tok.ID + "." + tok.Secret + "." + tok.CAPin,
		"rmn1.XYZ." + tok.Secret + "." + tok.CAPin, "rmn1." + tok.ID + ".short." + tok.CAPin, "rmn1." + tok.ID + "." + tok.Secret + ".00"} {
		_, err := ParseToken(bad)
		if err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		} else if strings.Contains(err.Error(), tok.Secret) {
			t.Errorf("ParseToken error echoes the secret: %v", err)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("rmn1.0123abcd.0123456789abcdef0123456789abcdef." + strings.Repeat("ab", 32))
	f.Add("rmn1...")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("%q parsed to %+v, which does not round-trip: %v", s, tok, err)
		}
	})
}

func TestCredentialFile(t *testing.T) {
	ca, _, _ := NewCA("t", time.Now())
	path := filepath.Join(t.TempDir(), "admin.conf")
	if _, err := WriteCredential(path, ca, Admin, time.Hour, "https://127.0.0.1:9600", time.Now()); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCredential(path)
	if err != nil || c.Identity != "admin" || c.Server != "https://127.0.0.1:9600" {
		t.Fatalf("load: %+v %v", c, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCredential(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable credential: %v, want refused", err)
	}
}

// TestPinnedTLS: a first contact succeeds only with the server whose chain
// holds the pinned CA.
func TestPinnedTLS(t *testing.T) {
	now := time.Now()
	ca, _, _ := NewCA("romana", now)
	other, _, _ := NewCA("other", now)
	serve := func(ca *CA) string {
		kp, err := ServerSetup{Names: []string{"127.0.0.1"}}.IssueServing(ca, now)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: kp.GetCertificate})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { c.(*tls.Conn).Handshake(); c.Close() }()
			}
		}()
		return ln.Addr().String()
	}
	good, bad := serve(ca), serve(other)
	dial := func(addr string) error {
		c, err := tls.Dial("tcp", addr, PinnedTLS(Fingerprint(ca.Cert), "127.0.0.1"))
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(good); err != nil {
		t.Fatalf("pinned CA: %v", err)
	}
	if err := dial(bad); err == nil || !strings.Contains(err.Error(), "man in the middle") {
		t.Fatalf("another CA: %v, want refused", err)
	}
}
