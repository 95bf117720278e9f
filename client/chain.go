package client

import (
	"context"

	"github.com/romana/romana/api"
)

// AddChain creates a service chain (romanad assigns its id).
func (c *Client) AddChain(ctx context.Context, ch api.Chain) (api.Chain, error) {
	var out api.Chain
	return out, c.do(ctx, "POST", "/v1/chains", nil, ch, &out)
}

// GetChain returns one chain.
func (c *Client) GetChain(ctx context.Context, name string) (api.Chain, error) {
	var out api.Chain
	return out, c.do(ctx, "GET", "/v1/chains/"+esc(name), nil, nil, &out)
}

// ListChains returns every chain, by name.
func (c *Client) ListChains(ctx context.Context) ([]api.Chain, error) {
	var out []api.Chain
	return out, c.do(ctx, "GET", "/v1/chains", nil, nil, &out)
}

// RemoveChain deletes a chain.
func (c *Client) RemoveChain(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/chains/"+esc(name), nil, nil, nil)
}
