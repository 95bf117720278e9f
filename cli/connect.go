package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
)

// EnvServer names the environment variable that sets the default --server.
const EnvServer = "ROMANA_SERVER"

// EnvConfig names the environment variable that sets the default --config.
const EnvConfig = pki.ConfigEnv

// noCredentialHint ends every message about a missing credential.
const noCredentialHint = "romanad writes " + pki.DefaultAdminConfig + " on first start; or set --config"

// Connection is where the command line talks to romanad, and as whom.
//
// Resolution (Globals.Connection): a unix:// --server (or ROMANA_SERVER)
// is romanad's socket, which needs no credential (the socket is root's and
// its peers are admin). Otherwise the credential comes from --config, else
// ROMANA_CONFIG, else /etc/romana/admin.conf when that file exists; the
// server is --server/ROMANA_SERVER when given, else the credential's. With
// neither a credential nor a server, the default unix socket.
type Connection struct {
	// Server is "https://HOST:PORT" or "unix:///PATH".
	Server string
	// Credential presents a client certificate to an https:// Server; nil
	// for the unix socket.
	Credential *pki.Credential
	// CredentialPath is the file Credential was read from, and
	// CredentialFrom what named it: "--config", EnvConfig or "default".
	CredentialPath, CredentialFrom string
	// Defaulted is set when nothing named a server or a credential and
	// Server is client.DefaultServer.
	Defaulted bool
}

// Unix reports whether the connection is romanad's unix socket.
func (c Connection) Unix() bool { return strings.HasPrefix(c.Server, "unix://") }

// Connection resolves --server, --config, their environment variables and
// the default admin credential (see type Connection). A malformed or
// plaintext server is a *UsageError; a credential that is missing,
// unreadable or readable by others is an error in the user's terms.
func (g *Globals) Connection() (Connection, error) {
	server := g.Server
	if server == "" {
		server = g.getenv(EnvServer)
	}
	if strings.HasPrefix(server, "unix://") {
		if _, err := client.New(server); err != nil {
			return Connection{}, &UsageError{Err: err}
		}
		return Connection{Server: server}, nil
	}
	if server != "" {
		// Syntax and plaintext http:// are refused before any file is read.
		if _, err := client.New(server); err != nil {
			return Connection{}, &UsageError{Err: err}
		}
	}
	path, from := g.Config, "--config"
	if path == "" {
		path, from = g.getenv(EnvConfig), EnvConfig
	}
	if path == "" {
		if _, err := os.Stat(g.adminConfig); err == nil {
			path, from = g.adminConfig, "default"
		}
	}
	if path == "" {
		if server == "" {
			return Connection{Server: client.DefaultServer, Defaulted: true}, nil
		}
		return Connection{}, fmt.Errorf("no credential for %s: none named by --config or %s, and no %s (%s FILE, e.g. one written by romana cert issue; or use --server %s as root on romanad's machine)",
			server, EnvConfig, g.adminConfig, noCredentialHint, client.DefaultServer)
	}
	cred, err := loadCredential(path, from)
	if err != nil {
		return Connection{}, err
	}
	if server == "" {
		server = cred.Server
	}
	return Connection{Server: server, Credential: cred, CredentialPath: path, CredentialFrom: from}, nil
}

// loadCredential reads a credential file and explains the usual failures.
func loadCredential(path, from string) (*pki.Credential, error) {
	cred, err := pki.LoadCredential(path)
	switch {
	case err == nil:
		return cred, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("no credential: %s (from %s) does not exist (%s)", path, from, noCredentialHint)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%w (the file is not yours: run as its owner, e.g. root for %s, or set --config to a credential of your own)", err, pki.DefaultAdminConfig)
	}
	return nil, err
}

// Client returns a client of the romanad that Connection selects.
func (g *Globals) Client() (*client.Client, error) {
	conn, err := g.Connection()
	if err != nil {
		return nil, err
	}
	g.conn = conn
	if conn.Credential == nil {
		c, err := client.New(conn.Server)
		if err != nil {
			return nil, &UsageError{Err: err}
		}
		return c, nil
	}
	c, _, err := client.FromCredential(conn.Credential, conn.Server)
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", conn.CredentialPath, err)
	}
	return c, nil
}

// explain turns transport failures into a message that says which server
// was tried and what to change; API errors pass through with their own
// message.
func (g *Globals) explain(err error) error {
	var ae *api.Error
	if err == nil || errors.As(err, &ae) {
		return err
	}
	conn := g.conn
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer from romanad at %s within %s (--timeout): %w", conn.Server, g.Timeout, err)
	case conn.Credential != nil && (errors.As(err, &cve) || errors.As(err, &uae)):
		return fmt.Errorf("romanad at %s is not the one credential %s trusts (its certificate does not verify against the credential's CA): %w",
			conn.Server, conn.CredentialPath, err)
	case conn.Unix() && errors.Is(err, syscall.EACCES):
		return fmt.Errorf("cannot reach romanad at %s: the socket is root's (run as root, or use a credential with --config): %w", conn.Server, err)
	case conn.Defaulted && isConnError(err):
		return fmt.Errorf("no credential (no --config, no %s, no %s) and romanad's socket %s does not answer (%s, or --server): %w",
			EnvConfig, g.adminConfig, conn.Server, noCredentialHint, err)
	case isConnError(err):
		return fmt.Errorf("cannot reach romanad at %s (set --server or %s): %w", conn.Server, EnvServer, err)
	}
	return err
}

func isConnError(err error) bool {
	var ue *url.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ue) && !ue.Timeout())
}
