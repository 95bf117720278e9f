package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Validity defaults.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 365 * 24 * time.Hour
	AdminValidity  = 365 * 24 * time.Hour
	// HostValidity is the default lifetime of host and CNI certificates;
	// agents renew them when two thirds of it have passed.
	HostValidity = 30 * 24 * time.Hour
	// backdate is how far NotBefore lies in the past, for clock skew.
	backdate = 5 * time.Minute
)

// Files of a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CA signs Romana's certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is Cert in PEM form.
	PEM []byte
}

// NewKey returns a new ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// EncodeKey returns key in PEM ("PRIVATE KEY", PKCS #8).
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey parses a PEM private key (PKCS #8, EC or PKCS #1).
func ParseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("parse private key: no PEM block")
	}
	var k any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("parse private key: unexpected PEM block %q", blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse private key: %T cannot sign", k)
	}
	return s, nil
}

// EncodeCert returns der in PEM.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseCerts parses every CERTIFICATE block of b; it fails if there is none.
func ParseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("parse certificate: no CERTIFICATE block")
	}
	return out, nil
}

// Fingerprint is the SHA-256 of a certificate's public key (its
// SubjectPublicKeyInfo), in hex: what a join token pins.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// Serial formats a certificate serial number as revocation lists name it.
func Serial(c *x509.Certificate) string { return SerialString(c.SerialNumber) }

// SerialString formats a serial number in lowercase hex.
func SerialString(n *big.Int) string { return n.Text(16) }

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// LoadOrCreateCA loads the CA in dir (ca.crt, ca.key), creating it (and
// dir, mode 0700) when neither file exists. created reports a new CA.
func LoadOrCreateCA(dir string, now time.Time) (_ *CA, created bool, _ error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, cerr := os.Stat(certPath)
	_, kerr := os.Stat(keyPath)
	if cerr == nil || kerr == nil {
		ca, err := LoadCA(certPath, keyPath)
		return ca, false, err
	}
	if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		return nil, false, fmt.Errorf("CA in %s: %w", dir, errors.Join(cerr, kerr))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create CA directory: %w", err)
	}
	ca, keyPEM, err := NewCA("Romana CA", now)
	if err != nil {
		return nil, false, err
	}
	// Key first: a crash in between leaves a key without a certificate,
	// which LoadCA reports instead of silently making a second CA.
	if err := WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := WriteFile(certPath, ca.PEM, 0o644); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// NewCA returns a new self-signed CA and its key in PEM.
func NewCA(name string, now time.Time) (*CA, []byte, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Romana"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: EncodeCert(der)}, keyPEM, nil
}

// LoadCA loads a CA certificate and its key (for --tls-ca-key style
// external CAs and the data directory's own).
func LoadCA(certPath, keyPath string) (*CA, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	certs, err := ParseCerts(cb)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", certPath, err)
	}
	key, err := ParseKey(kb)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", keyPath, err)
	}
	if !publicKeysEqual(certs[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("load CA: key %s does not belong to certificate %s", keyPath, certPath)
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("load CA: %s is not a CA certificate", certPath)
	}
	return &CA{Cert: certs[0], Key: key, PEM: EncodeCert(certs[0].Raw)}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// Template describes a certificate to issue.
type Template struct {
	// Identity becomes the subject common name. For a serving certificate
	// it is informational ("romanad").
	Identity string
	Validity time.Duration
	// Server makes a serving certificate for DNSNames and IPs; otherwise
	// the certificate is for client authentication only.
	Server   bool
	DNSNames []string
	IPs      []net.IP
}

// Issue signs a certificate for pub and returns it (DER parsed) and in PEM.
func (ca *CA) Issue(pub crypto.PublicKey, t Template, now time.Time) (*x509.Certificate, []byte, error) {
	if t.Identity == "" {
		return nil, nil, errors.New("issue certificate: empty identity")
	}
	if t.Validity <= 0 {
		return nil, nil, fmt.Errorf("issue certificate for %s: validity must be positive", t.Identity)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(t.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: t.Identity, Organization: []string{"Romana"}},
		// Backdated for clock skew, by at most a tenth of the lifetime so that
		// "renew at two thirds" stays in the future for short-lived ones.
		NotBefore:   now.Add(-min(backdate, t.Validity/10)),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if t.Server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = t.DNSNames
		tmpl.IPAddresses = t.IPs
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: %w", t.Identity, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return c, EncodeCert(der), nil
}

// NewCSR returns a PEM certificate request for identity signed by key.
func NewCSR(key crypto.Signer, identity string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: identity},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR parses a PEM certificate request and checks its signature (the
// requester holds the key).
func ParseCSR(b []byte) (*x509.CertificateRequest, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("certificate request: want one PEM block of type CERTIFICATE REQUEST")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("certificate request: unexpected data after the PEM block")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: bad signature: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errors.New("certificate request: ECDSA keys must use P-256 or P-384")
		}
	default:
		return nil, fmt.Errorf("certificate request: %T keys are not accepted (use ECDSA P-256)", k)
	}
	return csr, nil
}

// WriteFile writes data to path atomically with mode perm: a temporary file
// created with that mode in the same directory, synced, then renamed. The
// file never exists with a wider mode, and readers see the old or the new
// content, never a mix.
func WriteFile(path string, data []byte, perm os.FileMode) (retErr error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// CreateTemp makes the file 0600; Chmod only narrows or sets perm before
	// any data is written.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
