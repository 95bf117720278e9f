package ipam

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/policy"
)

// PutPolicy validates and stores a policy, creating or replacing it.
func (r *Registry) PutPolicy(ctx context.Context, p api.Policy) (_ api.Policy, created bool, _ error) {
	if err := policy.Validate(p); err != nil {
		return api.Policy{}, false, err
	}
	p = policy.Normalize(p)
	resp, err := r.cli.Put(ctx, r.k.policy(p.Name), mustJSON(p), clientv3.WithPrevKV())
	if err != nil {
		return api.Policy{}, false, storeErr("put policy "+p.Name, err)
	}
	return p, resp.PrevKv == nil, nil
}

// GetPolicy returns one policy.
func (r *Registry) GetPolicy(ctx context.Context, name string) (api.Policy, error) {
	resp, err := r.cli.Get(ctx, r.k.policy(name))
	if err != nil {
		return api.Policy{}, storeErr("get policy "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.Policy{}, api.Errorf(api.ReasonNotFound, "policy %s not found", name)
	}
	return decode[api.Policy](resp.Kvs[0])
}

// ListPolicies returns every policy, by name, leaving out any that does not decode.
func (r *Registry) ListPolicies(ctx context.Context) ([]api.Policy, error) {
	resp, err := r.cli.Get(ctx, r.k.policies(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list policies", err)
	}
	return decodeList[api.Policy](r, resp.Kvs), nil
}

// RemovePolicy deletes a policy.
func (r *Registry) RemovePolicy(ctx context.Context, name string) error {
	resp, err := r.cli.Delete(ctx, r.k.policy(name))
	if err != nil {
		return storeErr("remove policy "+name, err)
	}
	if resp.Deleted == 0 {
		return api.Errorf(api.ReasonNotFound, "policy %s not found", name)
	}
	return nil
}
