package client

import (
	"context"
	"net/url"

	"github.com/romana/romana/api"
)

// PutAddressSet creates an address set or replaces the set of that name;
// it returns the set as stored (addresses unmapped, sorted, distinct).
func (c *Client) PutAddressSet(ctx context.Context, s api.AddressSet) (api.AddressSet, error) {
	var out api.AddressSet
	return out, c.do(ctx, "PUT", "/v1/addresssets/"+esc(s.Name), nil, s, &out)
}

// GetAddressSet returns one address set.
func (c *Client) GetAddressSet(ctx context.Context, name string) (api.AddressSet, error) {
	var out api.AddressSet
	return out, c.do(ctx, "GET", "/v1/addresssets/"+esc(name), nil, nil, &out)
}

// ListAddressSets returns every address set, by name.
func (c *Client) ListAddressSets(ctx context.Context) ([]api.AddressSet, error) {
	var out []api.AddressSet
	return out, c.do(ctx, "GET", "/v1/addresssets", nil, nil, &out)
}

// RemoveAddressSet deletes an address set.
func (c *Client) RemoveAddressSet(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/addresssets/"+esc(name), nil, nil, nil)
}

// PutPod creates or replaces a pod record (what romanad resolves
// api.AddressRequest.Pod with).
func (c *Client) PutPod(ctx context.Context, p api.Pod) (api.Pod, error) {
	var out api.Pod
	return out, c.do(ctx, "PUT", "/v1/pods/"+esc(p.Namespace)+"/"+esc(p.Name), nil, p, &out)
}

// GetPod returns one pod record.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (api.Pod, error) {
	var out api.Pod
	return out, c.do(ctx, "GET", "/v1/pods/"+esc(namespace)+"/"+esc(name), nil, nil, &out)
}

// ListPods returns the pod records of a namespace, or of every namespace
// when namespace is "", by namespace and name.
func (c *Client) ListPods(ctx context.Context, namespace string) ([]api.Pod, error) {
	var q url.Values
	if namespace != "" {
		q = url.Values{"namespace": {namespace}}
	}
	var out []api.Pod
	return out, c.do(ctx, "GET", "/v1/pods", q, nil, &out)
}

// RemovePod deletes a pod record.
func (c *Client) RemovePod(ctx context.Context, namespace, name string) error {
	return c.do(ctx, "DELETE", "/v1/pods/"+esc(namespace)+"/"+esc(name), nil, nil, nil)
}
