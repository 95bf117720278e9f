package client

import (
	"context"
	"net/url"
	"strconv"

	"github.com/romana/romana/api"
)

// PolicyTrace asks romanad whether a new connection is allowed and what
// decides it (a policy rule or tenant isolation).
func (c *Client) PolicyTrace(ctx context.Context, req api.TraceRequest) (api.Trace, error) {
	q := url.Values{"from": {req.From.String()}, "to": {req.To.String()}, "proto": {req.Proto}}
	if req.Port != 0 {
		q.Set("port", strconv.Itoa(int(req.Port)))
	}
	if req.Proto == api.ProtoICMP {
		q.Set("icmpType", strconv.Itoa(int(req.ICMPType)))
		q.Set("icmpCode", strconv.Itoa(int(req.ICMPCode)))
	}
	var out api.Trace
	return out, c.do(ctx, "GET", "/v1/policy/trace", q, nil, &out)
}

// PolicyStats returns every host's last reported policy rule counters.
func (c *Client) PolicyStats(ctx context.Context) ([]api.HostPolicyStats, error) {
	var out []api.HostPolicyStats
	return out, c.do(ctx, "GET", "/v1/policy/stats", nil, nil, &out)
}

// PutPolicyStats reports a host's policy rule counters (agents call it).
func (c *Client) PutPolicyStats(ctx context.Context, s api.HostPolicyStats) error {
	return c.do(ctx, "PUT", "/v1/policy/stats/"+esc(s.Host), nil, s, nil)
}
