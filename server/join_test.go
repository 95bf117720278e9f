package server_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server/servertest"
)

// joinWorld starts romanad with host h1 registered.
func joinWorld(t *testing.T) *servertest.Instance {
	t.Helper()
	in := servertest.Start(t)
	if _, err := in.Client.AddHost(context.Background(), api.Host{Name: "h1", IP: netip.MustParseAddr("192.0.2.11")}); err != nil {
		t.Fatal(err)
	}
	return in
}

// newToken asks romanad (as admin) for a join token for host.
func newToken(t *testing.T, in *servertest.Instance, host, ttl string) (pki.Token, api.TokenResponse) {
	t.Helper()
	resp, err := in.Client.CreateToken(context.Background(), host, ttl)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.ParseToken(resp.Token)
	if err != nil {
		t.Fatal(err)
	}
	return tok, resp
}

// joinAs runs an agent's join: a new key, a CSR for id, the token. It
// returns the credential made of the answer and the new key.
func joinAs(ctx context.Context, server string, tok pki.Token, id string) (*pki.Credential, crypto.Signer, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		return nil, nil, err
	}
	resp, err := client.Join(ctx, server, tok, csr)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return &pki.Credential{Kind: pki.CredentialKind, Server: server, Identity: resp.Identity, CA: resp.CA, Cert: resp.Cert, Key: string(keyPEM)}, key, nil
}

// wantStatus asserts that err is an API error with status and a message
// containing want.
func wantStatus(t *testing.T, what string, err error, status int, want string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != status || !strings.Contains(ae.Message, want) {
		t.Errorf("%s: %v; want status %d mentioning %q", what, err, status, want)
	}
}

// TestJoinTokenWorksOnce: a token gets one host:h1 certificate for the key
// of the CSR; a second use, and a use with a wrong secret, are 401 and
// change nothing but the used-up token.
func TestJoinTokenWorksOnce(t *testing.T) {
	ctx := context.Background()
	in := joinWorld(t)
	tok, tr := newToken(t, in, "h1", "")
	if tr.Host != "h1" || time.Until(tr.Expires) < 55*time.Minute || time.Until(tr.Expires) > time.Hour {
		t.Errorf("token response %+v: want host h1, expiring in an hour (the default)", tr)
	}
	cred, key, err := joinAs(ctx, in.URL, tok, "host:h1")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := cred.Leaf()
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "host:h1" || !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Errorf("joined certificate %q does not certify the agent's key as host:h1", leaf.Subject.CommonName)
	}
	if err := leaf.CheckSignatureFrom(in.CA.Cert); err != nil {
		t.Errorf("joined certificate is not signed by romanad's CA: %v", err)
	}
	hc, _, err := client.FromCredential(cred, "")
	if err != nil {
		t.Fatal(err)
	}
	who, err := hc.WhoAmI(ctx)
	if err != nil || who.Identity != "host:h1" || who.Via != "tls" || who.Serial != pki.Serial(leaf) {
		t.Errorf("whoami with the joined certificate: %+v, %v", who, err)
	}
	if _, err := hc.Snapshot(ctx); err != nil {
		t.Errorf("the joined host cannot read the snapshot: %v", err)
	}
	certs, err := in.Client.ListCerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recorded := false
	for _, c := range certs {
		recorded = recorded || (c.Serial == pki.Serial(leaf) && c.Identity == "host:h1" && c.IssuedBy == "join token "+tok.ID)
	}
	if !recorded {
		t.Errorf("joined certificate %s is not on record: %+v", pki.Serial(leaf), certs)
	}

	before := readStore(t, in)
	_, _, err = joinAs(ctx, in.URL, tok, "host:h1")
	wantStatus(t, "second use of the token", err, http.StatusUnauthorized, "join token "+tok.ID+" not found (already used")
	if !readStore(t, in).equal(before) {
		t.Error("the refused second join changed the store")
	}

	// A wrong secret uses the token up: it cannot be guessed twice.
	tok2, _ := newToken(t, in, "h1", "")
	bad := tok2
	bad.Secret = strings.Repeat("0", 32)
	_, _, err = joinAs(ctx, in.URL, bad, "host:h1")
	wantStatus(t, "wrong secret", err, http.StatusUnauthorized, "wrong secret")
	_, _, err = joinAs(ctx, in.URL, tok2, "host:h1")
	wantStatus(t, "the right secret after a wrong one", err, http.StatusUnauthorized, "not found")

	// A CSR for another identity than the token's host is refused.
	tok3, _ := newToken(t, in, "h1", "")
	_, _, err = joinAs(ctx, in.URL, tok3, "admin")
	wantStatus(t, "CSR for admin", err, http.StatusBadRequest, `certificate request is for "admin" but the join token is for host:h1`)
}

// TestJoinExpiredToken: a token used after its expiry is 401.
func TestJoinExpiredToken(t *testing.T) {
	ctx := context.Background()
	in := joinWorld(t)
	tok, tr := newToken(t, in, "h1", "1s")
	if d := time.Until(tr.Expires); d > time.Second {
		t.Fatalf("a 1s token expires in %s", d)
	}
	expect.Eventually(t, "the token expires", 5*time.Second, func() error {
		if now := time.Now(); !now.After(tr.Expires) {
			return fmt.Errorf("token still not expired at %s (expires %s)", now, tr.Expires)
		}
		return nil
	})
	_, _, err := joinAs(ctx, in.URL, tok, "host:h1")
	wantStatus(t, "expired token", err, http.StatusUnauthorized, "join token "+tok.ID+" expired at")
	for _, ttl := range []string{"0s", "25h", "soon"} {
		_, err := in.Client.CreateToken(ctx, "h1", ttl)
		wantStatus(t, "ttl "+ttl, err, http.StatusBadRequest, "token ttl")
	}
	_, err = in.Client.CreateToken(ctx, "h9", "")
	wantStatus(t, "token for an unknown host", err, http.StatusNotFound, "h9")
}

// TestJoinWrongCAPin: the agent refuses a server whose CA is not the one
// its token pins, before it sends the token: a wrong pin, or another
// server (a man in the middle). The token stays usable.
func TestJoinWrongCAPin(t *testing.T) {
	ctx := context.Background()
	in := joinWorld(t)
	tok, _ := newToken(t, in, "h1", "")
	other, _, err := pki.NewCA("Romana CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wrong := tok
	wrong.CAPin = pki.Fingerprint(other.Cert)
	before := readStore(t, in)
	_, _, err = joinAs(ctx, in.URL, wrong, "host:h1")
	var ae *api.Error
	if err == nil || errors.As(err, &ae) || !strings.Contains(err.Error(), "no CA with fingerprint "+wrong.CAPin) {
		t.Errorf("join with a wrong CA pin: %v; want a handshake error naming the fingerprint", err)
	}

	var reached atomic.Bool
	mitm := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Store(true) }))
	mitm.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	mitm.StartTLS()
	defer mitm.Close()
	_, _, err = joinAs(ctx, mitm.URL, tok, "host:h1")
	if err == nil || !strings.Contains(err.Error(), "fingerprint "+tok.CAPin) || !strings.Contains(err.Error(), "man in the middle") {
		t.Errorf("join against another server: %v; want a handshake error naming the fingerprint", err)
	}
	if reached.Load() {
		t.Error("the agent sent its join request to a server its token does not pin")
	}
	if !readStore(t, in).equal(before) {
		t.Error("the store changed")
	}
	if _, _, err := joinAs(ctx, in.URL, tok, "host:h1"); err != nil {
		t.Errorf("the token, never sent, no longer works: %v", err)
	}
}

// TestJoinRemoveHostCutsOff: removing a host makes its joined certificate
// and its CNI plugin's useless at once, also on kept-alive connections,
// and ends the watch stream the agent has open.
func TestJoinRemoveHostCutsOff(t *testing.T) {
	ctx := context.Background()
	in := joinWorld(t)
	tok, _ := newToken(t, in, "h1", "")
	cred, _, err := joinAs(ctx, in.URL, tok, "host:h1")
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := client.FromCredential(cred, "")
	if err != nil {
		t.Fatal(err)
	}
	// The agent gets its CNI plugin a credential of its own.
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "cni:h1")
	if err != nil {
		t.Fatal(err)
	}
	cr, err := host.RequestCert(ctx, api.CertRequest{Identity: "cni:h1", CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := pki.EncodeKey(key)
	cni, _, err := client.FromCredential(&pki.Credential{Kind: pki.CredentialKind, Server: in.URL, CA: cr.CA, Cert: cr.Cert, Key: string(keyPEM)}, "")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client.Client{"host:h1": host, "cni:h1": cni} {
		if who, err := c.WhoAmI(ctx); err != nil || who.Identity != name {
			t.Fatalf("whoami as %s: %+v, %v", name, who, err)
		}
	}

	snap, err := host.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan api.Event, 16)
	ended := make(chan error, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		ended <- host.Watch(wctx, snap.Revision+1, func(ev api.Event) error { events <- ev; return nil })
	}()
	if _, err := in.Client.AddTenant(ctx, api.Tenant{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	select { // the stream is open: it delivered an event
	case ev := <-events:
		if ev.Kind != api.KindTenant || ev.Name != "t" {
			t.Fatalf("first event %+v, want tenant t", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the host's watch stream delivered nothing")
	}

	if err := in.Client.RemoveHost(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if wctx.Err() != nil {
			t.Fatalf("watch ended by the test, not by the server: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the removed host's watch stream is still open")
	}
	for name, c := range map[string]*client.Client{"host:h1": host, "cni:h1": cni} {
		_, err := c.WhoAmI(ctx) // on the kept-alive connection
		wantStatus(t, name+" after host remove", err, http.StatusUnauthorized, "was revoked")
		wantStatus(t, name+" after host remove", err, http.StatusUnauthorized, "(host h1 removed)")
		c.CloseIdleConnections()
		_, err = c.Snapshot(ctx) // on a new connection
		wantStatus(t, name+" after host remove, new connection", err, http.StatusUnauthorized, "was revoked")
	}
	_, err = in.Client.CreateToken(ctx, "h1", "")
	wantStatus(t, "token for the removed host", err, http.StatusNotFound, "h1")
}
