package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ServerSetup describes romanad's TLS: where its CA lives (or an external
// one), its serving certificate's names, and where the admin credential goes.
type ServerSetup struct {
	// Dir holds the CA romanad creates on first start (ca.crt, ca.key 0600).
	Dir string
	// CACert and CAKey name an external CA to sign with instead (both or neither).
	CACert, CAKey string
	// ServingCert and ServingKey name an externally issued serving
	// certificate (both or neither); otherwise romanad issues its own.
	ServingCert, ServingKey string
	// ClientCA names extra CA certificates whose client certificates are
	// accepted (PEM bundle), e.g. a corporate CA that issues admin certificates.
	ClientCA string
	// Names are the DNS names and IP addresses of the serving certificate.
	Names []string
	// AdminConfig is where the admin credential is written when absent
	// ("" writes none). Server is the URL written into it.
	AdminConfig string
	Server      string
}

// ServerTLS is what ServerSetup produced.
type ServerTLS struct {
	// CA signs certificates; nil when only an external CA certificate
	// without its key is configured.
	CA        *CA
	Serving   *Keypair
	ClientCAs *x509.CertPool
	// NewCA and AdminWritten report what this start created.
	NewCA        bool
	AdminWritten bool
	// AdminCert is the certificate written into AdminConfig, if any.
	AdminCert *x509.Certificate
}

// Setup loads or creates the CA, issues the serving certificate, and
// writes the admin credential if it does not exist yet.
func (s ServerSetup) Setup(now time.Time) (*ServerTLS, error) {
	out := &ServerTLS{ClientCAs: x509.NewCertPool()}
	var err error
	switch {
	case (s.CACert == "") != (s.CAKey == ""):
		return nil, errors.New("set both --ca-cert and --ca-key, or neither")
	case s.CACert != "":
		if out.CA, err = LoadCA(s.CACert, s.CAKey); err != nil {
			return nil, err
		}
	case s.ServingCert != "" && s.Dir == "":
		// external serving certificate and client CA only: no signing CA
	default:
		if out.CA, out.NewCA, err = LoadOrCreateCA(s.Dir, now); err != nil {
			return nil, err
		}
	}
	if out.CA != nil {
		out.ClientCAs.AddCert(out.CA.Cert)
	}
	if s.ClientCA != "" {
		b, err := os.ReadFile(s.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("--client-ca: %w", err)
		}
		certs, err := ParseCerts(b)
		if err != nil {
			return nil, fmt.Errorf("--client-ca %s: %w", s.ClientCA, err)
		}
		for _, c := range certs {
			out.ClientCAs.AddCert(c)
		}
	}
	if out.CA == nil && s.ClientCA == "" {
		return nil, errors.New("no CA to verify client certificates: give --client-ca, or --ca-cert/--ca-key, or a --pki-dir")
	}
	switch {
	case (s.ServingCert == "") != (s.ServingKey == ""):
		return nil, errors.New("set both --tls-cert and --tls-key, or neither")
	case s.ServingCert != "":
		cb, err := os.ReadFile(s.ServingCert)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert: %w", err)
		}
		kb, err := os.ReadFile(s.ServingKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-key: %w", err)
		}
		if out.Serving, err = NewKeypair(cb, kb); err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
	default:
		if out.Serving, err = s.IssueServing(out.CA, now); err != nil {
			return nil, err
		}
	}
	if s.AdminConfig != "" && out.CA != nil {
		if _, err := os.Stat(s.AdminConfig); errors.Is(err, os.ErrNotExist) {
			if out.AdminCert, err = WriteCredential(s.AdminConfig, out.CA, Admin, AdminValidity, s.Server, now); err != nil {
				return nil, err
			}
			out.AdminWritten = true
		}
	}
	return out, nil
}

// IssueServing issues a serving certificate for s.Names with a new key; the
// chain includes the CA so that a joining agent can pin it.
func (s ServerSetup) IssueServing(ca *CA, now time.Time) (*Keypair, error) {
	if ca == nil {
		return nil, errors.New("no CA to issue romanad's serving certificate: give --tls-cert/--tls-key")
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	t := Template{Identity: "romanad", Validity: ServerValidity, Server: true}
	for _, n := range s.Names {
		if ip := net.ParseIP(n); ip != nil {
			t.IPs = append(t.IPs, ip)
		} else if n != "" {
			t.DNSNames = append(t.DNSNames, n)
		}
	}
	if len(t.IPs)+len(t.DNSNames) == 0 {
		return nil, errors.New("serving certificate: no names or addresses (--advertise)")
	}
	_, certPEM, err := ca.Issue(key.Public(), t, now)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return NewKeypair(append(certPEM, ca.PEM...), keyPEM)
}

// WriteCredential issues a certificate for id and writes a credential file
// for server at path (mode 0600; its directory 0700 when created).
func WriteCredential(path string, ca *CA, id Identity, validity time.Duration, server string, now time.Time) (*x509.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, certPEM, err := ca.Issue(key.Public(), Template{Identity: id.String(), Validity: validity}, now)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("write credential: %w", err)
	}
	c := &Credential{Server: server, Identity: id.String(), CA: string(ca.PEM), Cert: string(certPEM), Key: string(keyPEM)}
	return cert, c.Save(path)
}
