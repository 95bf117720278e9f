package ipam

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// maxID is the largest tenant or segment id (ids fit in plan.MaxIDBits).
var maxID = plan.MaxID(plan.MaxIDBits)

// usedIDs parses the ids out of id claim keys under prefix.
func usedIDs(prefix string, kvs []*mvccpb.KeyValue) map[uint64]bool {
	used := map[uint64]bool{}
	for _, kv := range kvs {
		if id, err := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), prefix), 10, 64); err == nil {
			used[id] = true
		}
	}
	return used
}

// pickID returns the requested id if it is free, or the smallest free id.
func pickID(kind, name string, want uint64, used map[uint64]bool, takenBy func(uint64) string) (uint64, error) {
	if want != 0 {
		if used[want] {
			return 0, api.Errorf(api.ReasonConflict, "%s id %d for %s is already %s's", kind, want, name, takenBy(want))
		}
		if want > maxID {
			return 0, api.Errorf(api.ReasonInvalid, "%s %s: id %d is above the maximum %d", kind, name, want, maxID)
		}
		return want, nil
	}
	id, ok := smallestFree(used, 0, maxID)
	if !ok {
		return 0, api.Errorf(api.ReasonExhausted, "no free %s id for %s: all %d in use", kind, name, len(used))
	}
	return id, nil
}

// AddTenant creates a tenant with the smallest free id (or the id asked
// for, if free): a removed tenant's id is reused. Re-adding an identical
// tenant succeeds (created is false) and returns the stored one, labels
// included (they are set at creation only).
func (r *Registry) AddTenant(ctx context.Context, t api.Tenant) (_ api.Tenant, created bool, _ error) {
	if err := api.ValidateName("tenant", t.Name); err != nil {
		return api.Tenant{}, false, err
	}
	switch t.Isolation {
	case "":
		t.Isolation = api.IsolationTenant
	case api.IsolationTenant, api.IsolationSegment, api.IsolationNone:
	default:
		return api.Tenant{}, false, api.Errorf(api.ReasonInvalid, "tenant %s: isolation %q is not one of tenant, segment, none", t.Name, t.Isolation)
	}
	for k, v := range t.Labels {
		if len(k) > 253 || !labelKeyRE.MatchString(k) {
			return api.Tenant{}, false, api.Errorf(api.ReasonInvalid, "tenant %s: invalid label key %q", t.Name, k)
		}
		if !labelValueRE.MatchString(v) {
			return api.Tenant{}, false, api.Errorf(api.ReasonInvalid, "tenant %s: label %s: invalid value %q: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", t.Name, k, v)
		}
	}
	op := "add tenant " + t.Name
	var out api.Tenant
	err := r.retry(ctx, op, func() error {
		resp, err := r.read(ctx, op, clientv3.OpGet(r.k.tenant(t.Name)), clientv3.OpGet(r.k.tenantIDs(), clientv3.WithPrefix()))
		if err != nil {
			return err
		}
		if kv := oneKV(resp, 0); kv != nil {
			old, err := decode[api.Tenant](kv)
			if err != nil {
				return err
			}
			if old.Isolation != t.Isolation || (t.ID != 0 && t.ID != old.ID) {
				return api.Errorf(api.ReasonAlreadyExists, "tenant %s already exists with id %d and isolation %s; remove it first to change it", t.Name, old.ID, old.Isolation)
			}
			out, created = old, false
			return nil
		}
		claims := rangeKVs(resp, 1)
		id, err := pickID("tenant", t.Name, t.ID, usedIDs(r.k.tenantIDs(), claims), func(id uint64) string { return claimValue(claims, r.k.tenantID(id)) })
		if err != nil {
			return err
		}
		nt := api.Tenant{Name: t.Name, ID: id, Isolation: t.Isolation}
		if len(t.Labels) > 0 {
			nt.Labels = maps.Clone(t.Labels)
		}
		_, err = r.commit(ctx, op,
			[]clientv3.Cmp{absent(r.k.tenant(t.Name)), absent(r.k.tenantID(id))},
			[]clientv3.Op{clientv3.OpPut(r.k.tenant(t.Name), mustJSON(nt)), clientv3.OpPut(r.k.tenantID(id), t.Name)})
		out, created = nt, true
		return err
	})
	return out, created, err
}

func claimValue(kvs []*mvccpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return string(kv.Value)
		}
	}
	return "?"
}

// GetTenant returns one tenant.
func (r *Registry) GetTenant(ctx context.Context, name string) (api.Tenant, error) {
	resp, err := r.cli.Get(ctx, r.k.tenant(name))
	if err != nil {
		return api.Tenant{}, storeErr("get tenant "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.Tenant{}, api.Errorf(api.ReasonNotFound, "tenant %s not found", name)
	}
	return decode[api.Tenant](resp.Kvs[0])
}

// ListTenants returns every tenant, by name, leaving out any that does not decode.
func (r *Registry) ListTenants(ctx context.Context) ([]api.Tenant, error) {
	resp, err := r.cli.Get(ctx, r.k.tenants(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list tenants", err)
	}
	return decodeList[api.Tenant](r, resp.Kvs), nil
}

// RemoveTenant deletes a tenant that has no segments.
func (r *Registry) RemoveTenant(ctx context.Context, name string) error {
	op := "remove tenant " + name
	return r.retry(ctx, op, func() error {
		resp, err := r.read(ctx, op, clientv3.OpGet(r.k.tenant(name)),
			clientv3.OpGet(r.k.tenantSegments(name), clientv3.WithPrefix(), clientv3.WithKeysOnly()))
		if err != nil {
			return err
		}
		kv := oneKV(resp, 0)
		if kv == nil {
			return api.Errorf(api.ReasonNotFound, "tenant %s not found", name)
		}
		if segs := rangeKVs(resp, 1); len(segs) > 0 {
			var names []string
			for _, s := range segs {
				names = append(names, strings.TrimPrefix(string(s.Key), r.k.tenantSegments(name)))
			}
			return api.Errorf(api.ReasonConflict, "tenant %s still has segment(s) %s; remove them first", name, strings.Join(names, ", "))
		}
		t, err := decode[api.Tenant](kv)
		if err != nil {
			return err
		}
		_, err = r.commit(ctx, op,
			[]clientv3.Cmp{unchanged(r.k.tenant(name), kv), emptyPrefix(r.k.tenantSegments(name))},
			[]clientv3.Op{clientv3.OpDelete(r.k.tenant(name)), clientv3.OpDelete(r.k.tenantID(t.ID)),
				clientv3.OpDelete(r.k.segmentIDs(name), clientv3.WithPrefix())})
		return err
	})
}

// AddSegment creates a segment of an existing tenant with the smallest free
// id within the tenant (or the id asked for, if free). Re-adding an
// identical segment succeeds (created is false).
func (r *Registry) AddSegment(ctx context.Context, s api.Segment) (_ api.Segment, created bool, _ error) {
	if err := api.ValidateName("tenant", s.Tenant); err != nil {
		return api.Segment{}, false, err
	}
	if err := api.ValidateName("segment", s.Name); err != nil {
		return api.Segment{}, false, err
	}
	op := "add segment " + s.Tenant + "/" + s.Name
	var out api.Segment
	err := r.retry(ctx, op, func() error {
		resp, err := r.read(ctx, op,
			clientv3.OpGet(r.k.tenant(s.Tenant)),
			clientv3.OpGet(r.k.segment(s.Tenant, s.Name)),
			clientv3.OpGet(r.k.segmentIDs(s.Tenant), clientv3.WithPrefix()))
		if err != nil {
			return err
		}
		tkv := oneKV(resp, 0)
		if tkv == nil {
			return api.Errorf(api.ReasonNotFound, "tenant %s not found", s.Tenant)
		}
		if kv := oneKV(resp, 1); kv != nil {
			old, err := decode[api.Segment](kv)
			if err != nil {
				return err
			}
			if s.ID != 0 && s.ID != old.ID {
				return api.Errorf(api.ReasonAlreadyExists, "segment %s/%s already exists with id %d; remove it first to change it", s.Tenant, s.Name, old.ID)
			}
			out, created = old, false
			return nil
		}
		claims := rangeKVs(resp, 2)
		id, err := pickID("segment", s.Tenant+"/"+s.Name, s.ID, usedIDs(r.k.segmentIDs(s.Tenant), claims),
			func(id uint64) string { return claimValue(claims, r.k.segmentID(s.Tenant, id)) })
		if err != nil {
			return err
		}
		ns := api.Segment{Tenant: s.Tenant, Name: s.Name, ID: id}
		_, err = r.commit(ctx, op,
			[]clientv3.Cmp{unchanged(r.k.tenant(s.Tenant), tkv), absent(r.k.segment(s.Tenant, s.Name)), absent(r.k.segmentID(s.Tenant, id))},
			[]clientv3.Op{clientv3.OpPut(r.k.segment(s.Tenant, s.Name), mustJSON(ns)), clientv3.OpPut(r.k.segmentID(s.Tenant, id), s.Name)})
		out, created = ns, true
		return err
	})
	return out, created, err
}

// GetSegment returns one segment.
func (r *Registry) GetSegment(ctx context.Context, tenant, name string) (api.Segment, error) {
	resp, err := r.read(ctx, "get segment "+tenant+"/"+name, clientv3.OpGet(r.k.segment(tenant, name)), clientv3.OpGet(r.k.tenant(tenant), clientv3.WithCountOnly()))
	if err != nil {
		return api.Segment{}, err
	}
	if resp.Responses[1].GetResponseRange().Count == 0 {
		return api.Segment{}, api.Errorf(api.ReasonNotFound, "tenant %s not found", tenant)
	}
	kv := oneKV(resp, 0)
	if kv == nil {
		return api.Segment{}, api.Errorf(api.ReasonNotFound, "segment %s/%s not found", tenant, name)
	}
	return decode[api.Segment](kv)
}

// ListSegments returns one tenant's segments, or every tenant's if tenant is
// "", leaving out any that does not decode.
func (r *Registry) ListSegments(ctx context.Context, tenant string) ([]api.Segment, error) {
	if tenant == "" {
		resp, err := r.cli.Get(ctx, r.k.segments(), clientv3.WithPrefix())
		if err != nil {
			return nil, storeErr("list segments", err)
		}
		return decodeList[api.Segment](r, resp.Kvs), nil
	}
	resp, err := r.read(ctx, "list segments of "+tenant, clientv3.OpGet(r.k.tenantSegments(tenant), clientv3.WithPrefix()), clientv3.OpGet(r.k.tenant(tenant), clientv3.WithCountOnly()))
	if err != nil {
		return nil, err
	}
	if resp.Responses[1].GetResponseRange().Count == 0 {
		return nil, api.Errorf(api.ReasonNotFound, "tenant %s not found", tenant)
	}
	return decodeList[api.Segment](r, rangeKVs(resp, 0)), nil
}

// segmentRemoval is the key that marks a segment as being removed:
// segmentremovals/TENANT/SEG, value empty. It is a claim, not an object
// (no watch event). While it exists no allocation lands in the segment:
// every allocation's transaction requires it absent.
func (k keys) segmentRemoval(t, s string) string { return k.p + "segmentremovals/" + t + "/" + s }

func (k keys) segmentRemovals() string { return k.p + "segmentremovals/" }

// RemoveSegment deletes a segment that has no addresses, in steps none of
// which conflicts with allocations in other segments:
//
//  1. read the segment and count its addresses: with any, answer Conflict
//     (and write nothing);
//  2. mark it as being removed (segmentRemoval), in a transaction guarded by
//     the segment alone: from the mark on, no allocation can land in it, so
//     its addresses can only go;
//  3. count its addresses again, now that none can come: an allocation may
//     have landed between 1 and 2;
//  4. if there are none, delete the segment, its id claim and the mark, in a
//     transaction guarded by the segment and that very mark; otherwise
//     withdraw the mark and answer Conflict.
//
// (It used to require that no address at all changed between its count and
// its commit: under allocations elsewhere it retried until it gave up.) A
// mark that an interrupted removal left is adopted by the next removal of
// the segment, or withdrawn by Repair.
func (r *Registry) RemoveSegment(ctx context.Context, tenant, name string) error {
	op := "remove segment " + tenant + "/" + name
	segKey, markKey := r.k.segment(tenant, name), r.k.segmentRemoval(tenant, name)
	conflict := func(n int) error {
		return api.Errorf(api.ReasonConflict, "segment %s/%s still has %d allocated address(es); release them first", tenant, name, n)
	}
	return r.retry(ctx, op, func() error {
		resp, err := r.read(ctx, op, clientv3.OpGet(segKey), clientv3.OpGet(markKey), clientv3.OpGet(r.k.addresses(), clientv3.WithPrefix()))
		if err != nil {
			return err
		}
		kv, mark := oneKV(resp, 0), oneKV(resp, 1)
		if kv == nil {
			return api.Errorf(api.ReasonNotFound, "segment %s/%s not found", tenant, name)
		}
		s, err := decode[api.Segment](kv)
		if err != nil {
			return err
		}
		n, err := countSegmentAddresses(rangeKVs(resp, 2), tenant, name)
		if err != nil {
			return err
		}
		if n > 0 && mark == nil {
			return conflict(n)
		}
		if mark == nil {
			cr, err := r.commit(ctx, op, []clientv3.Cmp{unchanged(segKey, kv), absent(markKey)},
				[]clientv3.Op{clientv3.OpPut(markKey, ""), clientv3.OpGet(markKey)})
			if err != nil {
				return err
			}
			mark = cr.Responses[1].GetResponseRange().Kvs[0]
			ar, err := r.cli.Get(ctx, r.k.addresses(), clientv3.WithPrefix())
			if err != nil {
				return storeErr(op, err)
			}
			if n, err = countSegmentAddresses(ar.Kvs, tenant, name); err != nil {
				return err
			}
		}
		if n > 0 {
			if _, err := r.commit(ctx, op, []clientv3.Cmp{unchanged(markKey, mark)}, []clientv3.Op{clientv3.OpDelete(markKey)}); err != nil && !errors.Is(err, errRetry) {
				return err
			}
			return conflict(n)
		}
		_, err = r.commit(ctx, op,
			[]clientv3.Cmp{unchanged(segKey, kv), unchanged(markKey, mark)},
			[]clientv3.Op{clientv3.OpDelete(segKey), clientv3.OpDelete(r.k.segmentID(tenant, s.ID)), clientv3.OpDelete(markKey)})
		return err
	})
}

// countSegmentAddresses counts the addresses of one segment among kvs (all
// addresses: they are keyed by name, not by segment).
func countSegmentAddresses(kvs []*mvccpb.KeyValue, tenant, name string) (int, error) {
	n := 0
	for _, akv := range kvs {
		a, err := decode[api.Address](akv)
		if err != nil {
			return 0, err
		}
		if a.Tenant == tenant && a.Segment == name {
			n++
		}
	}
	return n, nil
}

// withdrawSegmentRemovals deletes every segment removal mark: a removal
// interrupted between its mark and its end must not keep the segment from
// allocating. A removal still running elsewhere finds its mark gone at its
// commit and starts over.
func (r *Registry) withdrawSegmentRemovals(ctx context.Context) error {
	resp, err := r.cli.Delete(ctx, r.k.segmentRemovals(), clientv3.WithPrefix())
	if err != nil {
		return storeErr("withdraw segment removal marks", err)
	}
	if resp.Deleted > 0 {
		r.log.Info("withdrew interrupted segment removals", "count", resp.Deleted)
	}
	return nil
}
