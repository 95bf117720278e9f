// Package client is the Go client of romanad's /v1 REST API, over TCP
// ("http://127.0.0.1:9600") or a unix socket ("unix:///run/romana/romanad.sock").
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
//	GET|POST /v1/tenants, GET|DEL /v1/tenants/{name}                     api.Tenant
//	GET  /v1/segments                      []api.Segment (all tenants)
//	GET|POST /v1/tenants/{tenant}/segments, GET|DEL .../segments/{name} api.Segment
//	POST /v1/addresses                     api.AddressRequest -> api.Address (201; 200 when the name already has one)
//	GET  /v1/addresses?network=&host=&tenant=&segment=   []api.Address
//	GET  /v1/addresses/{name}              api.Address
//	DEL  /v1/addresses/{name}              204 (also when already released)
//	DEL  /v1/addresses?ip=ADDR             204 (also when already released)
//	GET  /v1/decode?ip=ADDR                api.DecodedAddress
//	GET|POST /v1/policies, GET|PUT|DEL /v1/policies/{name}  api.Policy (POST/PUT create or update)
//	GET  /v1/policy/trace?from=&to=&proto=&port=&icmpType=&icmpCode=   api.Trace
//	GET  /v1/policy/stats                  []api.HostPolicyStats; PUT /v1/policy/stats/{host} api.HostPolicyStats (agents; 204)
//	GET|POST /v1/devices, GET|DEL /v1/devices/{name}   api.Device (POST creates or replaces)
//	GET  /v1/fabric/routes?device=NAME[&format=ip|bird|frr]   api.FabricRoutes, or text in a format
//	GET|POST /v1/chains, GET|DEL /v1/chains/{name}     api.Chain (POST creates; 200 if identical exists)
//	GET  /v1/snapshot                      api.Snapshot
//	GET  /v1/watch?revision=N              NDJSON stream of api.Event from revision N (410 if compacted)
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/romana/romana/api"
)

// DefaultServer is used when neither --server nor ROMANA_SERVER is set.
const DefaultServer = "http://127.0.0.1:9600"

// Client talks to one romanad.
type Client struct {
	base string // "http://host:port" or "http://unix"
	hc   *http.Client
}

// New returns a client for server, an http(s):// URL or unix:///path.
func New(server string) (*Client, error) {
	if server == "" {
		server = DefaultServer
	}
	if path, ok := strings.CutPrefix(server, "unix://"); ok {
		if path == "" {
			return nil, fmt.Errorf("server %q: empty socket path", server)
		}
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		return &Client{base: "http://unix", hc: &http.Client{Transport: tr}}, nil
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: want http://HOST:PORT, https://HOST:PORT or unix:///PATH", server)
	}
	return &Client{base: strings.TrimRight(server, "/"), hc: &http.Client{}}, nil
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

// Watch streams events from revision on, calling fn for each, until ctx ends,
// the stream breaks, or fn returns an error. It returns an *api.Error with
// reason Gone when the revision was compacted: take a new Snapshot then.
func (c *Client) Watch(ctx context.Context, revision int64, fn func(api.Event) error) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/watch?revision="+strconv.FormatInt(revision, 10), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("watch from revision %d: %w", revision, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue // keepalive
		}
		var ev api.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("watch: decode event: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("watch: %w", err)
	}
	return ctx.Err()
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
