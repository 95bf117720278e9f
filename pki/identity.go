// Package pki is Romana's public-key infrastructure: the certificate
// authority in romanad's data directory, certificates that name an identity
// (admin, viewer, kube, host:NAME, cni:NAME), certificate requests, single-use join
// tokens, and the credential file that the CLI, the agent and the CNI plugin
// load. Everything is crypto/x509 and crypto/tls from the standard library;
// keys are ECDSA P-256.
package pki

import (
	"fmt"
	"strings"

	"github.com/romana/romana/api"
)

// Role is what an identity is allowed to be.
type Role string

// Roles. An identity's certificate carries "admin", "viewer", "kube",
// "host:NAME" or "cni:NAME" as its subject common name.
const (
	RoleAdmin  Role = "admin"  // everything
	RoleViewer Role = "viewer" // read-only
	RoleKube   Role = "kube"   // the Kubernetes controller (romana-kube)
	RoleHost   Role = "host"   // one host's agent
	RoleCNI    Role = "cni"    // one host's CNI plugin
)

// Identity is who a request comes from. Host is set for RoleHost and RoleCNI.
type Identity struct {
	Role Role
	Host string
}

// Admin, Viewer, Kube, Host and CNI build identities.
var (
	Admin  = Identity{Role: RoleAdmin}
	Viewer = Identity{Role: RoleViewer}
	Kube   = Identity{Role: RoleKube}
)

// Host returns the identity of host name's agent.
func Host(name string) Identity { return Identity{Role: RoleHost, Host: name} }

// CNI returns the identity of host name's CNI plugin.
func CNI(name string) Identity { return Identity{Role: RoleCNI, Host: name} }

// String is the identity's certificate common name.
func (i Identity) String() string {
	if i.Host != "" {
		return string(i.Role) + ":" + i.Host
	}
	return string(i.Role)
}

// IsZero reports whether i is the zero Identity (nobody).
func (i Identity) IsZero() bool { return i.Role == "" }

// ParseIdentity parses a certificate common name.
func ParseIdentity(s string) (Identity, error) {
	role, host, scoped := strings.Cut(s, ":")
	switch Role(role) {
	case RoleAdmin, RoleViewer, RoleKube:
		if scoped {
			return Identity{}, fmt.Errorf("identity %q: %s takes no host name", s, role)
		}
		return Identity{Role: Role(role)}, nil
	case RoleHost, RoleCNI:
		if !scoped || host == "" {
			return Identity{}, fmt.Errorf("identity %q: want %s:HOSTNAME", s, role)
		}
		if err := api.ValidateName("host", host); err != nil {
			return Identity{}, fmt.Errorf("identity %q: %w", s, err)
		}
		return Identity{Role: Role(role), Host: host}, nil
	}
	return Identity{}, fmt.Errorf("identity %q: want admin, viewer, kube, host:NAME or cni:NAME", s)
}
