package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/server/servertest"
	"github.com/romana/romana/store"
)

func TestExternal(t *testing.T) {
	e := servertest.StartEtcd(t, nil)
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{Endpoints: []string{e.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Embedded() {
		t.Fatal("external store reports embedded")
	}
	if _, err := s.Client.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
}

func TestExternalTLS(t *testing.T) {
	dir := t.TempDir()
	files := writePKI(t, dir)
	e := servertest.StartEtcd(t, &servertest.EtcdTLS{CertFile: files["server.crt"], KeyFile: files["server.key"], CAFile: files["ca.crt"]})
	if !strings.HasPrefix(e.Endpoint, "https://") {
		t.Fatalf("endpoint %s is not https", e.Endpoint)
	}
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{Endpoints: []string{e.Endpoint},
		CertFile: files["client.crt"], KeyFile: files["client.key"], CAFile: files["ca.crt"]})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Client.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}

	// Without a client certificate the server refuses us.
	ctx2, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if s2, err := store.Open(ctx2, store.Config{Endpoints: []string{e.Endpoint}, CAFile: files["ca.crt"], DialTimeout: 2 * time.Second}); err == nil {
		s2.Close()
		t.Fatal("connected without a client certificate")
	}
	// A certificate without its key is a configuration error.
	if _, err := store.Open(ctx, store.Config{Endpoints: []string{e.Endpoint}, CertFile: files["client.crt"]}); err == nil ||
		!strings.Contains(err.Error(), "--etcd-key") {
		t.Fatalf("cert without key: %v", err)
	}
}

func TestOpenNeedsDataDirOrEndpoints(t *testing.T) {
	if _, err := store.Open(context.Background(), store.Config{}); err == nil {
		t.Fatal("no error")
	}
}

// writePKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, and returns their paths by name.
func writePKI(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	write := func(name, typ string, der []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = p
	}
	newKey := func(name string) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(name, "EC PRIVATE KEY", der)
		return k
	}
	now := time.Now()
	caKey := newKey("ca.key")
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "romt-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.crt", "CERTIFICATE", caDER)
	ca, _ := x509.ParseCertificate(caDER)
	for i, name := range []string{"server", "client"} {
		k := newKey(name + ".key")
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "romt-" + name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".crt", "CERTIFICATE", der)
	}
	return files
}
