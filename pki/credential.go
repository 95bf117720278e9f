package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// Default credential paths.
const (
	// DefaultAdminConfig is where romanad writes the admin credential on
	// first start and where the CLI looks for one by default.
	DefaultAdminConfig = "/etc/romana/admin.conf"
	// ConfigEnv overrides the CLI's credential path.
	ConfigEnv = "ROMANA_CONFIG"
)

// Credential is a credential file in the spirit of a kubeconfig: where
// romanad is, the CA that signed its serving certificate, and a client
// certificate with its key. The file is YAML with the PEM blocks inline; it
// is written with mode 0600 and refused when group or others may read it.
type Credential struct {
	Kind     string `json:"kind"`               // "RomanaCredential"
	Server   string `json:"server"`             // https://HOST:PORT
	Identity string `json:"identity,omitempty"` // informational: the certificate's identity
	CA       string `json:"certificateAuthority"`
	Cert     string `json:"clientCertificate"`
	Key      string `json:"clientKey"`
}

// CredentialKind is Credential.Kind.
const CredentialKind = "RomanaCredential"

// LoadCredential reads and checks a credential file.
func LoadCredential(path string) (*Credential, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credential %s: mode %04o lets other users read the private key; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", path, err)
	}
	var c Credential
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("credential %s: %w", path, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("credential %s: %w", path, err)
	}
	return &c, nil
}

func (c *Credential) check() error {
	if c.Kind != CredentialKind {
		return fmt.Errorf("kind %q: want %s", c.Kind, CredentialKind)
	}
	if !strings.HasPrefix(c.Server, "https://") {
		return fmt.Errorf("server %q: want https://HOST:PORT", c.Server)
	}
	if _, err := ParseCerts([]byte(c.CA)); err != nil {
		return fmt.Errorf("certificateAuthority: %w", err)
	}
	if _, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key)); err != nil {
		return fmt.Errorf("clientCertificate/clientKey: %w", err)
	}
	return nil
}

// Save writes c to path atomically with mode 0600.
func (c *Credential) Save(path string) error {
	c.Kind = CredentialKind
	if err := c.check(); err != nil {
		return fmt.Errorf("credential %s: %w", path, err)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return WriteFile(path, b, 0o600)
}

// Leaf returns the client certificate.
func (c *Credential) Leaf() (*x509.Certificate, error) {
	certs, err := ParseCerts([]byte(c.Cert))
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// Keypair is a client certificate that can be replaced while connections
// use it: renewal swaps it, new TLS handshakes pick the new one. Safe for
// concurrent use.
type Keypair struct {
	mu   sync.RWMutex
	cert *tls.Certificate
}

// NewKeypair parses a PEM certificate and key.
func NewKeypair(certPEM, keyPEM []byte) (*Keypair, error) {
	k := &Keypair{}
	return k, k.Set(certPEM, keyPEM)
}

// Set replaces the certificate and key.
func (k *Keypair) Set(certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	k.mu.Lock()
	k.cert = &c
	k.mu.Unlock()
	return nil
}

// Swap takes o's certificate.
func (k *Keypair) Swap(o *Keypair) {
	o.mu.RLock()
	c := o.cert
	o.mu.RUnlock()
	k.mu.Lock()
	k.cert = c
	k.mu.Unlock()
}

// Leaf returns the current certificate.
func (k *Keypair) Leaf() *x509.Certificate {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cert.Leaf
}

// GetClientCertificate is tls.Config.GetClientCertificate.
func (k *Keypair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cert, nil
}

// GetCertificate is tls.Config.GetCertificate (a serving certificate).
func (k *Keypair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cert, nil
}

// ClientTLS returns the TLS configuration of a client that trusts caPEM
// and presents kp (nil: no client certificate).
func ClientTLS(caPEM []byte, kp *Keypair) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("certificate authority: no usable PEM certificate")
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if kp != nil {
		cfg.GetClientCertificate = kp.GetClientCertificate
	}
	return cfg, nil
}

// TLS returns the credential's client TLS configuration and its keypair
// (which a renewer may replace).
func (c *Credential) TLS() (*tls.Config, *Keypair, error) {
	kp, err := NewKeypair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		return nil, nil, err
	}
	cfg, err := ClientTLS([]byte(c.CA), kp)
	return cfg, kp, err
}

// PinnedTLS returns a client TLS configuration for a first contact, before
// the client has the CA: the server's chain must contain a CA certificate
// whose public key has the SHA-256 fingerprint pin, and the server's
// certificate must verify against that CA for serverName. This is how a
// join token authenticates romanad (kubeadm's discovery-token-ca-cert-hash).
func PinnedTLS(pin, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The standard verification is replaced, not skipped: VerifyConnection
		// below runs on every handshake and fails it unless the chain verifies
		// against the pinned CA.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs.PeerCertificates, pin, serverName, time.Now())
		},
	}
}

func verifyPinned(chain []*x509.Certificate, pin, serverName string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("server sent no certificate")
	}
	var ca *x509.Certificate
	for _, c := range chain[1:] {
		if c.IsCA && Fingerprint(c) == pin {
			ca = c
		}
	}
	if ca == nil {
		return fmt.Errorf("server's certificate chain has no CA with fingerprint %s (the join token's): wrong server, or a man in the middle", pin)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: serverName, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	return nil
}
