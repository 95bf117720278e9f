package ipam

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

// Address sets are explicit sets of endpoint addresses that policies name
// (addresssets/NAME, watch events of kind api.KindAddressSet). They claim
// nothing: a set may hold any address, allocated or not, and a policy may
// name a set that does not exist yet (agents take it as empty).

func (k keys) addressSets() string        { return k.p + "addresssets/" }
func (k keys) addressSet(n string) string { return k.p + "addresssets/" + n }

// PutAddressSet validates and stores an address set in its canonical form
// (api.AddressSet.Validate), creating it or replacing the set of that
// name. created is false when one was replaced (or an identical one
// existed).
func (r *Registry) PutAddressSet(ctx context.Context, s api.AddressSet) (_ api.AddressSet, created bool, _ error) {
	s, err := s.Validate()
	if err != nil {
		return api.AddressSet{}, false, err
	}
	v := mustJSON(s)
	if len(v) > api.MaxAddressSetBytes {
		return api.AddressSet{}, false, api.Errorf(api.ReasonInvalid,
			"address set %s encodes to %d bytes; the store takes at most %d per set: split it into several sets", s.Name, len(v), api.MaxAddressSetBytes)
	}
	resp, err := r.cli.Put(ctx, r.k.addressSet(s.Name), v, clientv3.WithPrevKV())
	if err != nil {
		return api.AddressSet{}, false, storeErr("put address set "+s.Name, err)
	}
	return s, resp.PrevKv == nil, nil
}

// GetAddressSet returns one address set.
func (r *Registry) GetAddressSet(ctx context.Context, name string) (api.AddressSet, error) {
	resp, err := r.cli.Get(ctx, r.k.addressSet(name))
	if err != nil {
		return api.AddressSet{}, storeErr("get address set "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.AddressSet{}, api.Errorf(api.ReasonNotFound, "address set %s not found", name)
	}
	return decode[api.AddressSet](resp.Kvs[0])
}

// ListAddressSets returns every address set, by name, leaving out any that
// does not decode.
func (r *Registry) ListAddressSets(ctx context.Context) ([]api.AddressSet, error) {
	resp, err := r.cli.Get(ctx, r.k.addressSets(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list address sets", err)
	}
	return decodeList[api.AddressSet](r, resp.Kvs), nil
}

// RemoveAddressSet deletes an address set. Policies that name it stay;
// agents then take the set as empty.
func (r *Registry) RemoveAddressSet(ctx context.Context, name string) error {
	resp, err := r.cli.Delete(ctx, r.k.addressSet(name))
	if err != nil {
		return storeErr("remove address set "+name, err)
	}
	if resp.Deleted == 0 {
		return api.Errorf(api.ReasonNotFound, "address set %s not found", name)
	}
	return nil
}
