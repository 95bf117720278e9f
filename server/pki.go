package server

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/romana/romana/access"
	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
)

// Join tokens.
const (
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 24 * time.Hour
)

func (s *Server) pkiRoutes() {
	s.handle("POST /v1/join", s.join)
	s.handle("POST /v1/hosts/{name}/token", s.createToken)
	s.handle("POST /v1/certificates", s.issueCert)
	s.handle("GET /v1/certificates", s.listCerts)
	s.handle("POST /v1/certificates/revoke", s.revokeCerts)
	s.handle("GET /v1/whoami", s.whoami)
}

func (s *Server) signer() (*pki.CA, error) {
	if s.tls == nil || s.tls.CA == nil {
		return nil, api.Errorf(api.ReasonInvalid, "romanad has no CA key (it was started with an external CA): issue certificates with that CA")
	}
	return s.tls.CA, nil
}

func (s *Server) hostValidity() time.Duration {
	if s.tls != nil && s.tls.HostValidity > 0 {
		return s.tls.HostValidity
	}
	return pki.HostValidity
}

// createToken makes a single-use join token for an existing host.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.signer()
	if err != nil {
		return err
	}
	host := r.PathValue("name")
	if err := api.ValidateName("host", host); err != nil {
		return err
	}
	var in api.TokenRequest
	if r.ContentLength != 0 {
		if err := s.decodeBody(w, r, &in); err != nil {
			return err
		}
	}
	ttl := DefaultTokenTTL
	if in.TTL != "" {
		if ttl, err = time.ParseDuration(in.TTL); err != nil || ttl <= 0 || ttl > MaxTokenTTL {
			return api.Errorf(api.ReasonInvalid, "token ttl %q: want a duration between 1s and %s, e.g. 15m", in.TTL, MaxTokenTTL)
		}
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		return err
	}
	exp := s.now().Add(ttl).UTC().Truncate(time.Second)
	if err := s.reg.CreateToken(r.Context(), api.JoinToken{ID: tok.ID, Host: host, SecretHash: pki.SecretHash(tok.Secret),
		Expires: exp, CreatedBy: callerOf(r).id.String()}); err != nil {
		return err
	}
	if _, err := s.reg.PruneTokens(r.Context(), s.now()); err != nil {
		s.log.Warn("prune expired join tokens", "err", err)
	}
	writeJSON(w, http.StatusCreated, api.TokenResponse{Host: host, Token: tok.String(), Expires: exp})
	return nil
}

// join exchanges a join token and a CSR for a host certificate. The token
// is deleted before anything is checked, so it is never usable twice.
func (s *Server) join(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.signer()
	if err != nil {
		return err
	}
	var in api.JoinRequest
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	tok, err := pki.ParseToken(in.Token)
	if err != nil {
		return api.Errorf(api.ReasonUnauthorized, "%v", err)
	}
	if tok.CAPin != pki.Fingerprint(ca.Cert) {
		return api.Errorf(api.ReasonUnauthorized, "join token %s pins another CA than this romanad's", tok.ID)
	}
	csr, err := pki.ParseCSR([]byte(in.CSR))
	if err != nil {
		return api.Errorf(api.ReasonInvalid, "%v", err)
	}
	stored, err := s.reg.ConsumeToken(r.Context(), tok.ID)
	if api.IsNotFound(err) {
		return api.Errorf(api.ReasonUnauthorized, "%v", err)
	}
	if err != nil {
		return err
	}
	switch {
	case !pki.SecretMatches(tok.Secret, stored.SecretHash):
		return api.Errorf(api.ReasonUnauthorized, "join token %s: wrong secret (the token is now used up)", tok.ID)
	case s.now().After(stored.Expires):
		return api.Errorf(api.ReasonUnauthorized, "join token %s expired at %s", tok.ID, stored.Expires.Format(time.RFC3339))
	}
	if _, err := s.reg.GetHost(r.Context(), stored.Host); err != nil {
		return api.Errorf(api.ReasonUnauthorized, "join token %s: host %s is no longer registered", tok.ID, stored.Host)
	}
	id := pki.Host(stored.Host)
	if cn := csr.Subject.CommonName; cn != "" && cn != id.String() {
		return api.Errorf(api.ReasonInvalid, "certificate request is for %q but the join token is for %s", cn, id)
	}
	out, err := s.sign(r, ca, csr.PublicKey, id, s.hostValidity(), "join token "+tok.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// issueCert signs a certificate request: renewal of the caller's own
// identity, a host's CNI credential, or anything for admin.
func (s *Server) issueCert(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.signer()
	if err != nil {
		return err
	}
	var in api.CertRequest
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	want, err := pki.ParseIdentity(in.Identity)
	if err != nil {
		return api.Errorf(api.ReasonInvalid, "%v", err)
	}
	c := callerOf(r)
	if err := mayRequest(r, want); err != nil {
		return err
	}
	if err := own(r, want.Host); err != nil {
		return err
	}
	csr, err := pki.ParseCSR([]byte(in.CSR))
	if err != nil {
		return api.Errorf(api.ReasonInvalid, "%v", err)
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != want.String() {
		return api.Errorf(api.ReasonInvalid, "certificate request is for %q but identity %s was asked for", cn, want)
	}
	validity := s.hostValidity()
	if want.Role == pki.RoleAdmin || want.Role == pki.RoleViewer || want.Role == pki.RoleKube {
		validity = pki.AdminValidity
	}
	if in.Validity != "" {
		d, err := time.ParseDuration(in.Validity)
		if err != nil || d < time.Second {
			return api.Errorf(api.ReasonInvalid, "validity %q: want a duration such as 720h", in.Validity)
		}
		if c.id.Role != pki.RoleAdmin && d > validity {
			return refuse(r, api.Errorf(api.ReasonForbidden, "identity %s may ask for at most %s of validity", c.id, validity))
		}
		validity = d
	}
	if want.Host != "" {
		if _, err := s.reg.GetHost(r.Context(), want.Host); err != nil {
			return err
		}
	}
	out, err := s.sign(r, ca, csr.PublicKey, want, validity, "request by "+c.id.String())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) sign(r *http.Request, ca *pki.CA, pub any, id pki.Identity, validity time.Duration, why string) (api.CertResponse, error) {
	cert, certPEM, err := ca.Issue(pub, pki.Template{Identity: id.String(), Validity: validity}, s.now())
	if err != nil {
		return api.CertResponse{}, err
	}
	rec := api.CertRecord{Serial: pki.Serial(cert), Identity: id.String(), NotAfter: cert.NotAfter.UTC(), IssuedBy: why}
	if err := s.reg.RecordCert(r.Context(), rec); err != nil {
		return api.CertResponse{}, err
	}
	s.log.Info("certificate issued", "identity", id.String(), "serial", rec.Serial, "notAfter", rec.NotAfter, "by", why)
	return api.CertResponse{Identity: id.String(), Serial: rec.Serial, NotAfter: rec.NotAfter, Cert: string(certPEM), CA: string(ca.PEM)}, nil
}

func (s *Server) listCerts(w http.ResponseWriter, r *http.Request) error {
	out, err := s.reg.ListCerts(r.Context())
	if err != nil {
		return err
	}
	slices.SortFunc(out, func(a, b api.CertRecord) int {
		if c := strings.Compare(a.Identity, b.Identity); c != 0 {
			return c
		}
		return a.NotAfter.Compare(b.NotAfter)
	})
	if out == nil {
		out = []api.CertRecord{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeCerts(w http.ResponseWriter, r *http.Request) error {
	var in api.RevokeRequest
	if err := s.decodeBody(w, r, &in); err != nil {
		return err
	}
	if len(in.Serials) == 0 && len(in.Identities) == 0 {
		return api.Errorf(api.ReasonInvalid, "name serials or identities to revoke")
	}
	for _, sn := range in.Serials {
		if sn == "" || strings.Trim(strings.ToLower(sn), "0123456789abcdef") != "" {
			return api.Errorf(api.ReasonInvalid, "serial %q: want lowercase hex as romana cert list prints it", sn)
		}
	}
	for _, id := range in.Identities {
		if _, err := pki.ParseIdentity(id); err != nil {
			return api.Errorf(api.ReasonInvalid, "%v", err)
		}
	}
	out, err := s.revoke(r, in.Serials, in.Identities, in.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revoke revokes and applies the revocations locally at once (the watch
// brings them to other romanads).
func (s *Server) revoke(r *http.Request, serials, identities []string, reason string) ([]api.CertRecord, error) {
	if reason == "" {
		reason = "revoked by " + callerOf(r).id.String()
	}
	out, err := s.reg.Revoke(r.Context(), serials, identities, reason, s.now().UTC())
	for _, c := range out {
		s.revoked.set(c.Serial, c, true)
		s.log.Info("certificate revoked", "serial", c.Serial, "identity", c.Identity, "reason", reason)
	}
	if out == nil {
		out = []api.CertRecord{}
	}
	return out, err
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	out := api.WhoAmI{Identity: c.id.String(), Via: c.via}
	if c.cert != nil {
		na := c.cert.NotAfter.UTC()
		out.Serial, out.NotAfter = pki.Serial(c.cert), &na
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// mayRequest checks that r's caller may obtain a certificate for want.
func mayRequest(r *http.Request, want pki.Identity) error {
	if err := access.MayRequest(callerOf(r).id, want); err != nil {
		return refuse(r, api.Errorf(api.ReasonForbidden, "%v", err))
	}
	return nil
}
