package ipam

import (
	"context"
	"fmt"
	"reflect"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

// Chains steer a segment's traffic through service functions, one key each
// (chains/NAME, watch events of kind api.KindChain), with a claim on their
// id (chainids/ID -> chain name): the id selects the packet mark and route
// tables of the chain on every host, so it must be unique.

func (k keys) chains() string           { return k.p + "chains/" }
func (k keys) chain(n string) string    { return k.p + "chains/" + n }
func (k keys) chainIDs() string         { return k.p + "chainids/" }
func (k keys) chainID(id uint64) string { return k.p + "chainids/" + fmt.Sprint(id) }

// AddChain validates and stores a chain with the smallest free id. The
// source tenant and segment (and the destination tenant and segment, if
// named) must exist; every via address must be an allocated endpoint with
// an interface, outside the source segment (a function steering its own
// traffic to itself loops). Re-adding an identical chain succeeds (created
// is false); a different chain of that name is AlreadyExists. On any error
// nothing is stored.
func (r *Registry) AddChain(ctx context.Context, c api.Chain) (_ api.Chain, created bool, _ error) {
	c, err := c.Validate()
	if err != nil {
		return api.Chain{}, false, err
	}
	op := "add chain " + c.Name
	var out api.Chain
	err = r.retry(ctx, op, func() error {
		nets, err := r.allNetworks(ctx, op)
		if err != nil {
			return err
		}
		ops := []clientv3.Op{
			clientv3.OpGet(r.k.chain(c.Name)),
			clientv3.OpGet(r.k.chainIDs(), clientv3.WithPrefix()),
			clientv3.OpGet(r.k.tenant(c.Tenant)),
			clientv3.OpGet(r.k.segment(c.Tenant, c.Segment)),
		}
		var keys []string // compared unchanged at commit, by index in ops from 2
		keys = append(keys, r.k.tenant(c.Tenant), r.k.segment(c.Tenant, c.Segment))
		if c.ToTenant != "" {
			ops = append(ops, clientv3.OpGet(r.k.tenant(c.ToTenant)))
			keys = append(keys, r.k.tenant(c.ToTenant))
			if c.ToSegment != "" {
				ops = append(ops, clientv3.OpGet(r.k.segment(c.ToTenant, c.ToSegment)))
				keys = append(keys, r.k.segment(c.ToTenant, c.ToSegment))
			}
		}
		viaAt := len(ops)
		for _, v := range c.Via {
			n, ok := networkOf(nets, v)
			if !ok {
				return api.Errorf(api.ReasonInvalid, "chain %s: via %s is not an endpoint: no network contains it", c.Name, v)
			}
			ops = append(ops, clientv3.OpGet(r.k.ip(n.Name, v)))
			keys = append(keys, r.k.ip(n.Name, v))
		}
		resp, err := r.read(ctx, op, ops...)
		if err != nil {
			return err
		}
		if kv := oneKV(resp, 0); kv != nil {
			old, err := decode[api.Chain](kv)
			if err != nil {
				return err
			}
			want := c
			want.ID = old.ID
			if (c.ID != 0 && c.ID != old.ID) || !reflect.DeepEqual(old, want) {
				return api.Errorf(api.ReasonAlreadyExists, "chain %s already exists (from %s via %v); remove it first to change it", c.Name, old.From(), old.Via)
			}
			out, created = old, false
			return nil
		}
		if oneKV(resp, 2) == nil {
			return api.Errorf(api.ReasonInvalid, "chain %s: from: unknown tenant %s", c.Name, c.Tenant)
		}
		if oneKV(resp, 3) == nil {
			return api.Errorf(api.ReasonInvalid, "chain %s: from: tenant %s has no segment %s", c.Name, c.Tenant, c.Segment)
		}
		if c.ToTenant != "" {
			if oneKV(resp, 4) == nil {
				return api.Errorf(api.ReasonInvalid, "chain %s: to: unknown tenant %s", c.Name, c.ToTenant)
			}
			if c.ToSegment != "" && oneKV(resp, 5) == nil {
				return api.Errorf(api.ReasonInvalid, "chain %s: to: tenant %s has no segment %s", c.Name, c.ToTenant, c.ToSegment)
			}
		}
		cmps := []clientv3.Cmp{absent(r.k.chain(c.Name))}
		for i, key := range keys {
			cmps = append(cmps, unchanged(key, oneKV(resp, 2+i)))
		}
		// Each via must be an allocated, attached endpoint outside the source segment.
		var addrOps []clientv3.Op
		var addrKeys []string
		for i, v := range c.Via {
			kv := oneKV(resp, viaAt+i)
			if kv == nil {
				return api.Errorf(api.ReasonInvalid, "chain %s: via %s is not an allocated endpoint address", c.Name, v)
			}
			addrKeys = append(addrKeys, r.k.address(string(kv.Value)))
			addrOps = append(addrOps, clientv3.OpGet(r.k.address(string(kv.Value))))
		}
		aresp, err := r.read(ctx, op, addrOps...)
		if err != nil {
			return err
		}
		hostSeen, prevHost := map[string]bool{}, ""
		for i, v := range c.Via {
			kv := oneKV(aresp, i)
			if kv == nil {
				return errRetry // released in between
			}
			a, err := decode[api.Address](kv)
			if err != nil {
				return err
			}
			if a.IP.Unmap() != v {
				return errRetry
			}
			if a.Tenant == c.Tenant && a.Segment == c.Segment {
				return api.Errorf(api.ReasonInvalid, "chain %s: loop: via %s (endpoint %s) is in the source segment %s: its own forwarded packets would be steered back to it", c.Name, v, a.Name, c.From())
			}
			if a.Interface == "" {
				return api.Errorf(api.ReasonInvalid, "chain %s: via %s (address %s) is not an attached endpoint: it has no interface", c.Name, v, a.Name)
			}
			if i > 0 && hostSeen[a.Host] && prevHost != a.Host {
				return api.Errorf(api.ReasonInvalid, "chain %s: loop: the chain leaves host %s and comes back to it (via %s); order the functions so that those of one host are consecutive", c.Name, a.Host, v)
			}
			hostSeen[a.Host], prevHost = true, a.Host
			cmps = append(cmps, unchanged(addrKeys[i], kv))
		}
		claims := rangeKVs(resp, 1)
		id, err := pickChainID(c, claims, r.k.chainIDs())
		if err != nil {
			return err
		}
		nc := c
		nc.ID = id
		cmps = append(cmps, absent(r.k.chainID(id)))
		_, err = r.commit(ctx, op, cmps, []clientv3.Op{
			clientv3.OpPut(r.k.chain(c.Name), mustJSON(nc)),
			clientv3.OpPut(r.k.chainID(id), c.Name),
		})
		out, created = nc, true
		return err
	})
	return out, created, err
}

func pickChainID(c api.Chain, claims []*mvccpb.KeyValue, prefix string) (uint64, error) {
	used := usedIDs(prefix, claims)
	if c.ID != 0 {
		if used[c.ID] {
			return 0, api.Errorf(api.ReasonConflict, "chain %s: id %d is already chain %s's", c.Name, c.ID, claimValue(claims, prefix+fmt.Sprint(c.ID)))
		}
		return c.ID, nil
	}
	id, ok := smallestFree(used, 1, api.MaxChainID)
	if !ok {
		return 0, api.Errorf(api.ReasonExhausted, "chain %s: all %d chain ids in use", c.Name, api.MaxChainID)
	}
	return id, nil
}

// GetChain returns one chain.
func (r *Registry) GetChain(ctx context.Context, name string) (api.Chain, error) {
	resp, err := r.cli.Get(ctx, r.k.chain(name))
	if err != nil {
		return api.Chain{}, storeErr("get chain "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.Chain{}, api.Errorf(api.ReasonNotFound, "chain %s not found", name)
	}
	return decode[api.Chain](resp.Kvs[0])
}

// ListChains returns every chain, by name, leaving out any that does not decode.
func (r *Registry) ListChains(ctx context.Context) ([]api.Chain, error) {
	resp, err := r.cli.Get(ctx, r.k.chains(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list chains", err)
	}
	return decodeList[api.Chain](r, resp.Kvs), nil
}

// RemoveChain deletes a chain and its id claim.
func (r *Registry) RemoveChain(ctx context.Context, name string) error {
	op := "remove chain " + name
	return r.retry(ctx, op, func() error {
		resp, err := r.cli.Get(ctx, r.k.chain(name))
		if err != nil {
			return storeErr(op, err)
		}
		if len(resp.Kvs) == 0 {
			return api.Errorf(api.ReasonNotFound, "chain %s not found", name)
		}
		kv := resp.Kvs[0]
		c, err := decode[api.Chain](kv)
		if err != nil {
			return err
		}
		ops := []clientv3.Op{clientv3.OpDelete(r.k.chain(name))}
		if c.ID != 0 {
			ops = append(ops, clientv3.OpDelete(r.k.chainID(c.ID)))
		}
		_, err = r.commit(ctx, op, []clientv3.Cmp{unchanged(r.k.chain(name), kv)}, ops)
		return err
	})
}
