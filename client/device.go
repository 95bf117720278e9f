package client

import (
	"context"
	"net/url"

	"github.com/romana/romana/api"
)

// PutDevice creates a device or replaces the device of that name.
func (c *Client) PutDevice(ctx context.Context, d api.Device) (api.Device, error) {
	var out api.Device
	return out, c.do(ctx, "POST", "/v1/devices", nil, d, &out)
}

// GetDevice returns one device.
func (c *Client) GetDevice(ctx context.Context, name string) (api.Device, error) {
	var out api.Device
	return out, c.do(ctx, "GET", "/v1/devices/"+esc(name), nil, nil, &out)
}

// ListDevices returns every device, by name.
func (c *Client) ListDevices(ctx context.Context) ([]api.Device, error) {
	var out []api.Device
	return out, c.do(ctx, "GET", "/v1/devices", nil, nil, &out)
}

// RemoveDevice deletes a device.
func (c *Client) RemoveDevice(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/devices/"+esc(name), nil, nil, nil)
}

// FabricRoutes returns the static routes romanad computes for a device.
func (c *Client) FabricRoutes(ctx context.Context, device string) (api.FabricRoutes, error) {
	var out api.FabricRoutes
	return out, c.do(ctx, "GET", "/v1/fabric/routes", url.Values{"device": {device}}, nil, &out)
}
