package api

import "time"

// JoinToken is a stored join token: the secret itself is never stored.
type JoinToken struct {
	ID         string    `json:"id"`
	Host       string    `json:"host"`
	SecretHash string    `json:"secretHash"`
	Expires    time.Time `json:"expires"`
	CreatedBy  string    `json:"createdBy"`
}

// TokenRequest asks romanad for a join token for a host (admin only).
type TokenRequest struct {
	// TTL is how long the token may be used, e.g. "15m" (default 1h, at most 24h).
	TTL string `json:"ttl,omitempty"`
}

// TokenResponse carries a join token's text form; it is shown once.
type TokenResponse struct {
	Host    string    `json:"host"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// JoinRequest is what an agent sends to join with a token.
type JoinRequest struct {
	Token string `json:"token"`
	// CSR is a PEM certificate request signed by the agent's new key.
	CSR string `json:"csr"`
}

// CertRequest asks for a certificate for Identity (renewal, a CNI
// credential, or an admin issuing one).
type CertRequest struct {
	Identity string `json:"identity"`
	CSR      string `json:"csr"`
	// Validity, e.g. "720h"; default is romanad's for the identity's role.
	Validity string `json:"validity,omitempty"`
}

// CertResponse is an issued certificate.
type CertResponse struct {
	Identity string    `json:"identity"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"notAfter"`
	Cert     string    `json:"certificate"`          // PEM
	CA       string    `json:"certificateAuthority"` // PEM
}

// CertRecord is a certificate romanad issued (or a revoked serial).
type CertRecord struct {
	Serial   string     `json:"serial"`
	Identity string     `json:"identity,omitempty"`
	NotAfter time.Time  `json:"notAfter,omitzero"`
	IssuedBy string     `json:"issuedBy,omitempty"`
	Revoked  *time.Time `json:"revoked,omitempty"`
	Reason   string     `json:"reason,omitempty"`
}

// RevokeRequest revokes certificates by serial and/or identity (admin only).
type RevokeRequest struct {
	Serials    []string `json:"serials,omitempty"`
	Identities []string `json:"identities,omitempty"`
	Reason     string   `json:"reason,omitempty"`
}

// WhoAmI is the caller's identity as romanad sees it.
type WhoAmI struct {
	Identity string     `json:"identity"`
	Via      string     `json:"via"` // "tls" or "unix"
	Serial   string     `json:"serial,omitempty"`
	NotAfter *time.Time `json:"notAfter,omitempty"`
}
