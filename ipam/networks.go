package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// hostBatch is how many hosts one placement transaction handles when a
// network is added (etcd limits operations per transaction, 128 by default).
const hostBatch = 16

// normalizeNetwork validates n and returns its canonical stored form.
func normalizeNetwork(n api.Network) (api.Network, *plan.Plan, error) {
	if err := api.ValidateName("network", n.Name); err != nil {
		return api.Network{}, nil, err
	}
	p, err := plan.Parse(n.Spec())
	if err != nil {
		return api.Network{}, nil, api.Errorf(api.ReasonInvalid, "%v", err)
	}
	if err := api.CheckPool(p.Prefix()); err != nil {
		return api.Network{}, nil, api.Errorf(api.ReasonInvalid, "network %s: %v", n.Name, err)
	}
	out := api.Network{Name: n.Name, CIDR: p.Prefix().String(), Fields: p.Spec().Fields, EndpointBits: p.EndpointBits()}
	for i, t := range n.Tenants {
		if err := api.ValidateName("tenant", t); err != nil {
			return api.Network{}, nil, api.Errorf(api.ReasonInvalid, "network %s: tenants[%d]: %v", n.Name, i, err)
		}
		if !slices.Contains(out.Tenants, t) {
			out.Tenants = append(out.Tenants, t)
		}
	}
	sort.Strings(out.Tenants)
	return out, p, nil
}

// planOf parses a stored network's plan.
func planOf(n api.Network) (*plan.Plan, error) {
	p, err := plan.Parse(n.Spec())
	if err != nil {
		return nil, api.Errorf(api.ReasonInternal, "stored network %s: %v", n.Name, err)
	}
	return p, nil
}

// accepts reports whether tenant may allocate from n.
func accepts(n api.Network, tenant string) bool {
	return len(n.Tenants) == 0 || slices.Contains(n.Tenants, tenant)
}

// AddNetwork creates a network and places every host in it. Re-adding an
// identical network succeeds (created is false); a different network of the
// same name, or one whose pool overlaps another's, is refused.
func (r *Registry) AddNetwork(ctx context.Context, n api.Network) (_ api.Network, created bool, _ error) {
	norm, p, err := normalizeNetwork(n)
	if err != nil {
		return api.Network{}, false, err
	}
	out := norm
	err = r.retry(ctx, "add network "+norm.Name, func() error {
		resp, err := r.read(ctx, "add network "+norm.Name,
			clientv3.OpGet(r.k.networks(), clientv3.WithPrefix()),
			clientv3.OpGet(r.k.hosts(), clientv3.WithPrefix()))
		if err != nil {
			return err
		}
		for _, kv := range rangeKVs(resp, 0) {
			other, err := decode[api.Network](kv)
			if err != nil {
				return err
			}
			if other.Name == norm.Name {
				if reflect.DeepEqual(other, norm) {
					out, created = other, false
					return nil
				}
				return api.Errorf(api.ReasonAlreadyExists, "network %s already exists with a different definition (%s); remove it first to change it", norm.Name, describeNetwork(other))
			}
			op, err := planOf(other)
			if err != nil {
				return err
			}
			if op.Overlaps(p) {
				return api.Errorf(api.ReasonConflict, "network %s (%s) overlaps network %s (%s)", norm.Name, norm.CIDR, other.Name, other.CIDR)
			}
		}
		// Dry run: every existing host must fit before anything is written,
		// and none may have its underlay address in the pool (its blocks'
		// routes would lead into the pool). A host that does not decode
		// cannot be placed (placeAttempt skips it too).
		t := newTopo(norm.Name, p)
		for _, h := range decodeList[api.Host](r, rangeKVs(resp, 1)) {
			for _, ip := range []netip.Addr{h.IP, h.IP6} {
				if ip.IsValid() && p.Prefix().Contains(ip) {
					return api.Errorf(api.ReasonInvalid, "network %s (%s) holds the underlay ip %s of host %s; a pool may not contain a host's address", norm.Name, norm.CIDR, ip, h.Name)
				}
			}
			if _, err := t.place(h.Name, h.Labels); err != nil {
				return err
			}
		}
		// A host added after the read could have its address in the pool:
		// the host ip claims must be unchanged too (AddHost, for its part,
		// fails when a network was added after its read).
		_, err = r.commit(ctx, "add network "+norm.Name,
			[]clientv3.Cmp{absent(r.k.network(norm.Name)), quietSince(r.k.networks(), resp.Header.Revision),
				quietSince(r.k.hostIPs(), resp.Header.Revision)},
			[]clientv3.Op{clientv3.OpPut(r.k.network(norm.Name), mustJSON(norm))})
		created = err == nil
		return err
	})
	if err != nil {
		return api.Network{}, false, err
	}
	if err := r.placeAll(ctx, norm.Name); err != nil {
		if created {
			if rerr := r.RemoveNetwork(ctx, norm.Name); rerr != nil {
				r.log.Warn("undo network add", "network", norm.Name, "err", rerr)
			}
		}
		return api.Network{}, false, err
	}
	return out, created, nil
}

func describeNetwork(n api.Network) string {
	s := n.CIDR
	for _, f := range n.Fields {
		s += fmt.Sprintf(" %s:%d", f.Name, f.Bits)
	}
	if len(n.Tenants) > 0 {
		s += fmt.Sprintf(" tenants:%v", n.Tenants)
	}
	return s
}

// placeAll gives every host a slot in network net, a batch of hosts per transaction.
func (r *Registry) placeAll(ctx context.Context, net string) error {
	resp, err := r.cli.Get(ctx, r.k.hosts(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return storeErr("list hosts", err)
	}
	var names []string
	for _, kv := range resp.Kvs {
		names = append(names, string(kv.Key[len(r.k.hosts()):]))
	}
	for len(names) > 0 {
		batch := names[:min(hostBatch, len(names))]
		names = names[len(batch):]
		err := r.retry(ctx, "place hosts in network "+net, func() error {
			ops := []clientv3.Op{clientv3.OpGet(r.k.network(net))}
			for _, h := range batch {
				ops = append(ops, clientv3.OpGet(r.k.host(h)))
			}
			resp, err := r.read(ctx, "place hosts in network "+net, ops...)
			if err != nil {
				return err
			}
			nkv := oneKV(resp, 0)
			if nkv == nil {
				return api.Errorf(api.ReasonNotFound, "network %s was removed while hosts were being placed in it", net)
			}
			in := placeInput{rev: resp.Header.Revision, nets: []*mvccpb.KeyValue{nkv}}
			for i := range batch {
				if kv := oneKV(resp, i+1); kv != nil {
					in.hosts = append(in.hosts, kv)
				}
			}
			_, err = r.placeAttempt(ctx, in)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// GetNetwork returns one network.
func (r *Registry) GetNetwork(ctx context.Context, name string) (api.Network, error) {
	resp, err := r.cli.Get(ctx, r.k.network(name))
	if err != nil {
		return api.Network{}, storeErr("get network "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.Network{}, api.Errorf(api.ReasonNotFound, "network %s not found", name)
	}
	return decode[api.Network](resp.Kvs[0])
}

// ListNetworks returns every network, by name, leaving out any that does
// not decode.
func (r *Registry) ListNetworks(ctx context.Context) ([]api.Network, error) {
	resp, err := r.cli.Get(ctx, r.k.networks(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list networks", err)
	}
	return decodeList[api.Network](r, resp.Kvs), nil
}

// allNetworks returns every network, failing if one does not decode: for
// deciding which network an address is in.
func (r *Registry) allNetworks(ctx context.Context, op string) ([]api.Network, error) {
	resp, err := r.cli.Get(ctx, r.k.networks(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr(op, err)
	}
	return decodeAll[api.Network](resp.Kvs)
}

// RemoveNetwork deletes a network that has no addresses, with its topology
// claims, then drops its slot from every host.
func (r *Registry) RemoveNetwork(ctx context.Context, name string) error {
	op := "remove network " + name
	err := r.retry(ctx, op, func() error {
		resp, err := r.read(ctx, op,
			clientv3.OpGet(r.k.network(name)),
			clientv3.OpGet(r.k.ips(name), clientv3.WithPrefix(), clientv3.WithCountOnly()))
		if err != nil {
			return err
		}
		kv := oneKV(resp, 0)
		if kv == nil {
			return api.Errorf(api.ReasonNotFound, "network %s not found", name)
		}
		if n := resp.Responses[1].GetResponseRange().Count; n > 0 {
			return api.Errorf(api.ReasonConflict, "network %s still has %d allocated address(es); release them first", name, n)
		}
		_, err = r.commit(ctx, op,
			[]clientv3.Cmp{unchanged(r.k.network(name), kv), emptyPrefix(r.k.ips(name))},
			[]clientv3.Op{
				clientv3.OpDelete(r.k.network(name)),
				clientv3.OpDelete(r.k.groups(name), clientv3.WithPrefix()),
				clientv3.OpDelete(r.k.groupIDs(name), clientv3.WithPrefix()),
				clientv3.OpDelete(r.k.slotIDs(name), clientv3.WithPrefix()),
			})
		return err
	})
	if err != nil {
		return err
	}
	return r.dropStaleSlots(ctx)
}
