package client

import (
	"context"

	"github.com/romana/romana/api"
)

// Status returns every registered host's agent as romanad judges it.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var out api.Status
	return out, c.do(ctx, "GET", "/v1/status", nil, nil, &out)
}

// PutStatus reports a host agent's status (agents call it, for their own
// host only).
func (c *Client) PutStatus(ctx context.Context, s api.AgentStatus) error {
	return c.do(ctx, "PUT", "/v1/status/"+esc(s.Host), nil, s, nil)
}
