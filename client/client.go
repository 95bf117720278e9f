// Package client is the Go client of romanad's /v1 REST API, over HTTPS
// with a client certificate ("https://romanad.example:9600", see
// FromCredential) or, for root on romanad's machine, its unix socket
// ("unix:///run/romana/romanad.sock"). Plaintext http:// is refused.
//
// Routes (all JSON; errors are api.ErrorBody with a 4xx/5xx status):
//
//	GET  /healthz                          200 "ok"
//	GET  /metrics                          Prometheus
//	GET  /v1/networks                      []api.Network
//	POST /v1/networks                      api.Network -> api.Network (201; 200 if identical exists)
//	GET  /v1/networks/{name}               api.Network
//	DEL  /v1/networks/{name}               204 (409 if addresses remain)
//	GET|POST /v1/hosts, GET|DEL /v1/hosts/{name}                         api.Host
//	DEL  /v1/hosts/{name}/addresses        api.ReleasedAddresses (releases every address of the host)
//	GET|POST /v1/tenants, GET|DEL /v1/tenants/{name}                     api.Tenant
//	GET  /v1/segments                      []api.Segment (all tenants)
//	GET|POST /v1/tenants/{tenant}/segments, GET|DEL .../segments/{name} api.Segment
//	POST /v1/addresses                     api.AddressRequest -> api.Address (201; 200 when the name already has one)
//	GET  /v1/addresses?network=&host=&tenant=&segment=   []api.Address
//	GET  /v1/addresses/{name}              api.Address
//	DEL  /v1/addresses/{name}              204 (also when already released; 409 while a chain uses it as a service function)
//	DEL  /v1/addresses?ip=ADDR             204 (also when already released)
//	GET  /v1/decode?ip=ADDR                api.DecodedAddress
//	GET|POST /v1/policies, GET|PUT|DEL /v1/policies/{name}  api.Policy (POST/PUT create or update)
//	GET  /v1/policy/trace?from=&to=&proto=&port=&icmpType=&icmpCode=   api.Trace
//	GET  /v1/policy/stats                  []api.HostPolicyStats; PUT /v1/policy/stats/{host} api.HostPolicyStats (agents; 204)
//	GET  /v1/status                        api.Status (every host's agent: converged, behind, problems, unreachable)
//	PUT  /v1/status/{host}                 api.AgentStatus (agents, own host; 204)
//	GET|POST /v1/devices, GET|DEL /v1/devices/{name}   api.Device (POST creates or replaces)
//	GET  /v1/fabric/routes?device=NAME[&format=ip|bird|frr]   api.FabricRoutes, or text in a format
//	GET|POST /v1/chains, GET|DEL /v1/chains/{name}     api.Chain (POST creates; 200 if identical exists)
//	GET  /v1/addresssets, GET|PUT|DEL /v1/addresssets/{name}   api.AddressSet (PUT creates or replaces)
//	GET  /v1/pods?namespace=NS, GET|PUT|DEL /v1/pods/{namespace}/{name}   api.Pod (PUT creates or replaces)
//	POST /v1/join                          api.JoinRequest -> api.CertResponse (no certificate: the token authenticates)
//	POST /v1/hosts/{name}/token            api.TokenRequest -> api.TokenResponse (201)
//	POST /v1/certificates                  api.CertRequest -> api.CertResponse (renewal, CNI credential, admin issue)
//	GET  /v1/certificates                  []api.CertRecord
//	POST /v1/certificates/revoke           api.RevokeRequest -> []api.CertRecord
//	GET  /v1/whoami                        api.WhoAmI
//	GET  /v1/snapshot                      api.Snapshot
//	GET  /v1/watch?revision=N              NDJSON stream of api.Event from revision N (410 if compacted, 400 if ahead of the store)
//
// # Watch stream
//
// Each line of a watch stream is an api.Event, an empty keepalive line (the
// response header Romana-Watch-Keepalive gives their interval), or, as the
// last line, an error {"error":{...}} saying why romanad ended the stream:
// the watcher fell behind and was cut off (503, Unavailable), romanad is
// shutting down (503), the client certificate was revoked or expired (401),
// the revision was compacted meanwhile (410). The events of one store
// revision come in a row and the last one has RevisionEnd set: only there is
// the watcher's copy of the state whole. After any error but Gone, a watcher
// may watch again from the revision after its last RevisionEnd; after Gone
// (or to be simple) it reads a new snapshot and watches from its
// revision+1. Watch returns these errors as *api.Error.
//
// # Timeouts
//
// A Client gives up on connecting after DialTimeout, on the TLS handshake
// after 10 s and on a response's headers after 60 s; requests have no
// other deadline than their context. Watch ends a stream that has sent no
// line (event or keepalive) for three keepalive intervals (at least
// MinWatchIdle), so that a watcher behind a dead connection or a hung
// romanad notices and reconnects.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
)

// DefaultServer is romanad's unix socket, used when nothing else names a server.
const DefaultServer = "unix:///run/romana/romanad.sock"

// Timeouts (see the package comment).
const (
	DialTimeout           = 10 * time.Second
	TLSHandshakeTimeout   = 10 * time.Second
	ResponseHeaderTimeout = 60 * time.Second
	// MinWatchIdle is the shortest idle deadline of a watch stream.
	MinWatchIdle = time.Second
	// defaultKeepalive is assumed when a stream does not announce its
	// keepalive interval (romanad's default).
	defaultKeepalive = 15 * time.Second
	keepaliveHeader  = "Romana-Watch-Keepalive"
)

// Client talks to one romanad.
type Client struct {
	base string // "https://host:port" or "http://unix"
	hc   *http.Client
	tr   *http.Transport
}

// Option configures New.
type Option func(*http.Transport)

// WithTLS sets the TLS configuration of an https:// server: the CA to trust
// and the client certificate to present (see pki.ClientTLS).
func WithTLS(cfg *tls.Config) Option {
	return func(t *http.Transport) { t.TLSClientConfig = cfg }
}

// New returns a client for server, an https:// URL or unix:///path.
func New(server string, opts ...Option) (*Client, error) {
	if server == "" {
		server = DefaultServer
	}
	dialer := &net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   TLSHandshakeTimeout,
		ResponseHeaderTimeout: ResponseHeaderTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
	}
	for _, o := range opts {
		o(tr)
	}
	if path, ok := strings.CutPrefix(server, "unix://"); ok {
		if path == "" {
			return nil, fmt.Errorf("server %q: empty socket path", server)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		}
		return &Client{base: "http://unix", hc: &http.Client{Transport: tr}, tr: tr}, nil
	}
	u, err := url.Parse(server)
	if err == nil && u.Scheme == "http" {
		return nil, fmt.Errorf("server %q: romanad serves TCP over TLS only: use https://%s with a credential (--config), or unix:///run/romana/romanad.sock as root on romanad's machine", server, u.Host)
	}
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("server %q: want https://HOST:PORT or unix:///PATH", server)
	}
	return &Client{base: strings.TrimRight(server, "/"), hc: &http.Client{Transport: tr}, tr: tr}, nil
}

// FromCredential returns a client for server (default: the credential's)
// that trusts the credential's CA and presents its certificate. The
// returned Keypair may be replaced (renewal) while the client is in use;
// call CloseIdleConnections after replacing it.
func FromCredential(c *pki.Credential, server string) (*Client, *pki.Keypair, error) {
	cfg, kp, err := c.TLS()
	if err != nil {
		return nil, nil, err
	}
	if server == "" {
		server = c.Server
	}
	cl, err := New(server, WithTLS(cfg))
	return cl, kp, err
}

// CloseIdleConnections closes idle connections, so that the next requests
// handshake again (with a renewed certificate).
func (c *Client) CloseIdleConnections() { c.tr.CloseIdleConnections() }

// Join exchanges a join token for a host certificate: server must present a
// certificate signed by the CA the token pins. csrPEM is signed by the new
// key the agent keeps.
func Join(ctx context.Context, server string, tok pki.Token, csrPEM []byte) (api.CertResponse, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return api.CertResponse{}, fmt.Errorf("join: server %q: want https://HOST:PORT", server)
	}
	c, err := New(server, WithTLS(pki.PinnedTLS(tok.CAPin, u.Hostname())))
	if err != nil {
		return api.CertResponse{}, err
	}
	defer c.CloseIdleConnections()
	var out api.CertResponse
	return out, c.do(ctx, "POST", "/v1/join", nil, api.JoinRequest{Token: tok.String(), CSR: string(csrPEM)}, &out)
}

// CreateToken asks for a single-use join token for host (ttl "" = default).
func (c *Client) CreateToken(ctx context.Context, host, ttl string) (api.TokenResponse, error) {
	var out api.TokenResponse
	return out, c.do(ctx, "POST", "/v1/hosts/"+esc(host)+"/token", nil, api.TokenRequest{TTL: ttl}, &out)
}

// RequestCert asks for a certificate (renewal, a CNI credential, or any
// identity for admin).
func (c *Client) RequestCert(ctx context.Context, r api.CertRequest) (api.CertResponse, error) {
	var out api.CertResponse
	return out, c.do(ctx, "POST", "/v1/certificates", nil, r, &out)
}

// ListCerts lists the certificates romanad issued and the revoked ones.
func (c *Client) ListCerts(ctx context.Context) ([]api.CertRecord, error) {
	var out []api.CertRecord
	return out, c.do(ctx, "GET", "/v1/certificates", nil, nil, &out)
}

// Revoke revokes certificates by serial and/or identity.
func (c *Client) Revoke(ctx context.Context, r api.RevokeRequest) ([]api.CertRecord, error) {
	var out []api.CertRecord
	return out, c.do(ctx, "POST", "/v1/certificates/revoke", nil, r, &out)
}

// WhoAmI returns the caller's identity as romanad sees it.
func (c *Client) WhoAmI(ctx context.Context) (api.WhoAmI, error) {
	var out api.WhoAmI
	return out, c.do(ctx, "GET", "/v1/whoami", nil, nil, &out)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	// Read the body to its end (romanad's encoder ends it with a newline
	// the decoder leaves unread): the transport reuses a connection only
	// after that, or every call would open a new one, with a new TLS
	// handshake (TestConnectionReused). Bounded: what follows the value
	// is whitespace.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb api.ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
		if eb.Error.Status == 0 {
			eb.Error.Status = resp.StatusCode
		}
		return eb.Error
	}
	return &api.Error{Status: resp.StatusCode, Reason: http.StatusText(resp.StatusCode),
		Message: fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))}
}

func esc(s string) string { return url.PathEscape(s) }

// Health returns nil when romanad answers /healthz with 200.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, "GET", "/healthz", nil, nil, nil)
}

// Networks.
func (c *Client) AddNetwork(ctx context.Context, n api.Network) (api.Network, error) {
	var out api.Network
	return out, c.do(ctx, "POST", "/v1/networks", nil, n, &out)
}
func (c *Client) GetNetwork(ctx context.Context, name string) (api.Network, error) {
	var out api.Network
	return out, c.do(ctx, "GET", "/v1/networks/"+esc(name), nil, nil, &out)
}
func (c *Client) ListNetworks(ctx context.Context) ([]api.Network, error) {
	var out []api.Network
	return out, c.do(ctx, "GET", "/v1/networks", nil, nil, &out)
}
func (c *Client) RemoveNetwork(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/networks/"+esc(name), nil, nil, nil)
}

// Hosts.
func (c *Client) AddHost(ctx context.Context, h api.Host) (api.Host, error) {
	var out api.Host
	return out, c.do(ctx, "POST", "/v1/hosts", nil, h, &out)
}
func (c *Client) GetHost(ctx context.Context, name string) (api.Host, error) {
	var out api.Host
	return out, c.do(ctx, "GET", "/v1/hosts/"+esc(name), nil, nil, &out)
}
func (c *Client) ListHosts(ctx context.Context) ([]api.Host, error) {
	var out []api.Host
	return out, c.do(ctx, "GET", "/v1/hosts", nil, nil, &out)
}

// ReleaseHostAddresses releases every address of a host (a machine that
// is gone) and returns their names.
func (c *Client) ReleaseHostAddresses(ctx context.Context, name string) ([]string, error) {
	var out api.ReleasedAddresses
	err := c.do(ctx, "DELETE", "/v1/hosts/"+esc(name)+"/addresses", nil, nil, &out)
	return out.Released, err
}

func (c *Client) RemoveHost(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/hosts/"+esc(name), nil, nil, nil)
}

// Tenants.
func (c *Client) AddTenant(ctx context.Context, t api.Tenant) (api.Tenant, error) {
	var out api.Tenant
	return out, c.do(ctx, "POST", "/v1/tenants", nil, t, &out)
}
func (c *Client) GetTenant(ctx context.Context, name string) (api.Tenant, error) {
	var out api.Tenant
	return out, c.do(ctx, "GET", "/v1/tenants/"+esc(name), nil, nil, &out)
}
func (c *Client) ListTenants(ctx context.Context) ([]api.Tenant, error) {
	var out []api.Tenant
	return out, c.do(ctx, "GET", "/v1/tenants", nil, nil, &out)
}
func (c *Client) RemoveTenant(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/tenants/"+esc(name), nil, nil, nil)
}

// Segments.
func (c *Client) AddSegment(ctx context.Context, s api.Segment) (api.Segment, error) {
	var out api.Segment
	return out, c.do(ctx, "POST", "/v1/tenants/"+esc(s.Tenant)+"/segments", nil, s, &out)
}
func (c *Client) GetSegment(ctx context.Context, tenant, name string) (api.Segment, error) {
	var out api.Segment
	return out, c.do(ctx, "GET", "/v1/tenants/"+esc(tenant)+"/segments/"+esc(name), nil, nil, &out)
}

// ListSegments lists one tenant's segments, or every tenant's when tenant is "".
func (c *Client) ListSegments(ctx context.Context, tenant string) ([]api.Segment, error) {
	var out []api.Segment
	path := "/v1/segments"
	if tenant != "" {
		path = "/v1/tenants/" + esc(tenant) + "/segments"
	}
	return out, c.do(ctx, "GET", path, nil, nil, &out)
}
func (c *Client) RemoveSegment(ctx context.Context, tenant, name string) error {
	return c.do(ctx, "DELETE", "/v1/tenants/"+esc(tenant)+"/segments/"+esc(name), nil, nil, nil)
}

// Addresses.
func (c *Client) Allocate(ctx context.Context, r api.AddressRequest) (api.Address, error) {
	var out api.Address
	return out, c.do(ctx, "POST", "/v1/addresses", nil, r, &out)
}
func (c *Client) GetAddress(ctx context.Context, name string) (api.Address, error) {
	var out api.Address
	return out, c.do(ctx, "GET", "/v1/addresses/"+esc(name), nil, nil, &out)
}
func (c *Client) ListAddresses(ctx context.Context, f api.AddressFilter) ([]api.Address, error) {
	q := url.Values{}
	for k, v := range map[string]string{"network": f.Network, "host": f.Host, "tenant": f.Tenant, "segment": f.Segment} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var out []api.Address
	return out, c.do(ctx, "GET", "/v1/addresses", q, nil, &out)
}

// Release releases an address by name; releasing an unknown name succeeds.
func (c *Client) Release(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/addresses/"+esc(name), nil, nil, nil)
}

// ReleaseIP releases an address by IP; releasing a free address succeeds.
func (c *Client) ReleaseIP(ctx context.Context, ip netip.Addr) error {
	return c.do(ctx, "DELETE", "/v1/addresses", url.Values{"ip": {ip.String()}}, nil, nil)
}

// Decode takes an address apart into network, host, tenant, segment and endpoint.
func (c *Client) Decode(ctx context.Context, ip netip.Addr) (api.DecodedAddress, error) {
	var out api.DecodedAddress
	return out, c.do(ctx, "GET", "/v1/decode", url.Values{"ip": {ip.String()}}, nil, &out)
}

// Policies.
func (c *Client) PutPolicy(ctx context.Context, p api.Policy) (api.Policy, error) {
	var out api.Policy
	return out, c.do(ctx, "PUT", "/v1/policies/"+esc(p.Name), nil, p, &out)
}
func (c *Client) GetPolicy(ctx context.Context, name string) (api.Policy, error) {
	var out api.Policy
	return out, c.do(ctx, "GET", "/v1/policies/"+esc(name), nil, nil, &out)
}
func (c *Client) ListPolicies(ctx context.Context) ([]api.Policy, error) {
	var out []api.Policy
	return out, c.do(ctx, "GET", "/v1/policies", nil, nil, &out)
}
func (c *Client) RemovePolicy(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/policies/"+esc(name), nil, nil, nil)
}

// Snapshot returns the whole state at one revision.
func (c *Client) Snapshot(ctx context.Context) (api.Snapshot, error) {
	var out api.Snapshot
	return out, c.do(ctx, "GET", "/v1/snapshot", nil, nil, &out)
}

// Watch streams events from revision on, calling fn for each, until ctx
// ends, the stream breaks, or fn returns an error (returned as is). It
// returns the error line that ended the stream as an *api.Error (see the
// package comment): reason Gone when the revision was compacted (take a
// new Snapshot then), Invalid when it is ahead of the store, Unavailable
// when romanad cut the watcher off or shut down. A stream that sends no
// line for three keepalive intervals, or ends without an error line, is an
// error too. When ctx ends, Watch returns ctx.Err().
func (c *Client) Watch(ctx context.Context, revision int64, fn func(api.Event) error) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/watch?revision="+strconv.FormatInt(revision, 10), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("watch from revision %d: %w", revision, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	keepalive := defaultKeepalive
	if d, err := time.ParseDuration(resp.Header.Get(keepaliveHeader)); err == nil && d > 0 {
		keepalive = d
	}
	idle := max(3*keepalive, MinWatchIdle)
	var idled atomic.Bool
	timer := time.AfterFunc(idle, func() { idled.Store(true); resp.Body.Close() })
	defer timer.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for {
		// The idle deadline runs while waiting for a line, not while fn works.
		timer.Reset(idle)
		more := sc.Scan()
		timer.Stop()
		if !more {
			break
		}
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue // keepalive
		}
		var l struct {
			api.Event
			Error *api.Error `json:"error"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			return fmt.Errorf("watch: decode event: %w", err)
		}
		if l.Error != nil {
			return l.Error
		}
		if err := fn(l.Event); err != nil {
			return err
		}
	}
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case idled.Load():
		return fmt.Errorf("watch: no event or keepalive line from romanad for %s (it sends one every %s): the stream is taken for dead", idle, keepalive)
	case sc.Err() != nil:
		return fmt.Errorf("watch: %w", sc.Err())
	}
	return fmt.Errorf("watch: %w: the stream ended without an error line", io.ErrUnexpectedEOF)
}

// WaitHealthy polls /healthz until it answers or timeout passes.
func (c *Client) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := c.Health(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("romanad not healthy after %s: %w", timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
