package ipam

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

// Devices are the fabric's routers, one key each (devices/NAME, watch
// events of kind api.KindDevice). They claim nothing: a device may name
// peers that do not exist yet (package fabric reports those), so devices
// can be added in any order.

func (k keys) devices() string        { return k.p + "devices/" }
func (k keys) device(n string) string { return k.p + "devices/" + n }

// PutDevice validates and stores a device, creating it or replacing the
// device of that name. created is false when one was replaced (or an
// identical one existed).
func (r *Registry) PutDevice(ctx context.Context, d api.Device) (_ api.Device, created bool, _ error) {
	d, err := d.Validate()
	if err != nil {
		return api.Device{}, false, err
	}
	resp, err := r.cli.Put(ctx, r.k.device(d.Name), mustJSON(d), clientv3.WithPrevKV())
	if err != nil {
		return api.Device{}, false, storeErr("put device "+d.Name, err)
	}
	return d, resp.PrevKv == nil, nil
}

// GetDevice returns one device.
func (r *Registry) GetDevice(ctx context.Context, name string) (api.Device, error) {
	resp, err := r.cli.Get(ctx, r.k.device(name))
	if err != nil {
		return api.Device{}, storeErr("get device "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.Device{}, api.Errorf(api.ReasonNotFound, "device %s not found", name)
	}
	return decode[api.Device](resp.Kvs[0])
}

// ListDevices returns every device, by name, leaving out any that does not decode.
func (r *Registry) ListDevices(ctx context.Context) ([]api.Device, error) {
	resp, err := r.cli.Get(ctx, r.k.devices(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list devices", err)
	}
	return decodeList[api.Device](r, resp.Kvs), nil
}

// RemoveDevice deletes a device. Links other devices have to it stay (and
// are reported by package fabric) until they are updated.
func (r *Registry) RemoveDevice(ctx context.Context, name string) error {
	resp, err := r.cli.Delete(ctx, r.k.device(name))
	if err != nil {
		return storeErr("remove device "+name, err)
	}
	if resp.Deleted == 0 {
		return api.Errorf(api.ReasonNotFound, "device %s not found", name)
	}
	return nil
}
