package ipam

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

// Pod records are what romanad knows of Kubernetes pods
// (pods/NAMESPACE/NAME): the tenant and segment an attachment naming the
// pod allocates from. They are not objects of the watch stream or the
// snapshot (keys.eventKind leaves them out): agents do not need them.

func (k keys) pods() string                   { return k.p + "pods/" }
func (k keys) namespacePods(ns string) string { return k.p + "pods/" + ns + "/" }
func (k keys) pod(ns, name string) string     { return k.p + "pods/" + ns + "/" + name }

// PutPod validates and stores a pod record, creating it or replacing the
// record of that namespace and name.
func (r *Registry) PutPod(ctx context.Context, p api.Pod) (_ api.Pod, created bool, _ error) {
	if err := p.Validate(); err != nil {
		return api.Pod{}, false, err
	}
	resp, err := r.cli.Put(ctx, r.k.pod(p.Namespace, p.Name), mustJSON(p), clientv3.WithPrevKV())
	if err != nil {
		return api.Pod{}, false, storeErr("put pod "+p.Key(), err)
	}
	return p, resp.PrevKv == nil, nil
}

// GetPod returns one pod record.
func (r *Registry) GetPod(ctx context.Context, ns, name string) (api.Pod, error) {
	p, _, err := r.getPod(ctx, ns, name)
	return p, err
}

// getPod returns a pod record and the store revision it was read at.
func (r *Registry) getPod(ctx context.Context, ns, name string) (api.Pod, int64, error) {
	resp, err := r.cli.Get(ctx, r.k.pod(ns, name))
	if err != nil {
		return api.Pod{}, 0, storeErr("get pod "+ns+"/"+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.Pod{}, resp.Header.Revision, api.Errorf(api.ReasonNotFound, "pod %s/%s not found", ns, name)
	}
	p, err := decode[api.Pod](resp.Kvs[0])
	return p, resp.Header.Revision, err
}

// ListPods returns the pod records of one namespace, or of every namespace
// when ns is "", by namespace and name, leaving out any that does not
// decode.
func (r *Registry) ListPods(ctx context.Context, ns string) ([]api.Pod, error) {
	prefix := r.k.pods()
	if ns != "" {
		prefix = r.k.namespacePods(ns)
	}
	resp, err := r.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list pods", err)
	}
	return decodeList[api.Pod](r, resp.Kvs), nil
}

// RemovePod deletes a pod record. Addresses allocated for the pod stay
// until their attachment releases them.
func (r *Registry) RemovePod(ctx context.Context, ns, name string) error {
	resp, err := r.cli.Delete(ctx, r.k.pod(ns, name))
	if err != nil {
		return storeErr("remove pod "+ns+"/"+name, err)
	}
	if resp.Deleted == 0 {
		return api.Errorf(api.ReasonNotFound, "pod %s/%s not found", ns, name)
	}
	return nil
}

// WaitPod returns the pod record of ns/name, waiting for it to be written
// when there is none yet: it watches the record's key from the revision
// it read, so a record written meanwhile is never missed. It waits until
// ctx ends, then returns a NotFound error; the caller bounds the wait with
// ctx's deadline.
func (r *Registry) WaitPod(ctx context.Context, ns, name string) (api.Pod, error) {
	return r.WaitPodUID(ctx, ns, name, "")
}

// WaitPodUID is WaitPod for the record of the pod with that UID: a record
// with another UID (of an earlier pod of the same name, not yet rewritten
// by the controller) is waited past like a missing one. uid "" takes any
// record, and so does a record without a UID. When ctx ends first the
// error is NotFound (no record) or Conflict (the record of another pod).
func (r *Registry) WaitPodUID(ctx context.Context, ns, name, uid string) (api.Pod, error) {
	ours := func(p api.Pod) bool { return uid == "" || p.UID == "" || p.UID == uid }
	p, rev, err := r.getPod(ctx, ns, name)
	if err == nil && ours(p) || err != nil && !api.IsNotFound(err) {
		return p, err
	}
	other := err == nil // a record of another pod
	r.podWaits.Add(1)
	defer r.podWaits.Add(-1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := r.k.pod(ns, name)
	for wr := range r.cli.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return api.Pod{}, storeErr("wait for pod "+ns+"/"+name, err)
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				other = false
				continue
			}
			p, err := decode[api.Pod](ev.Kv)
			if err != nil || ours(p) {
				return p, err
			}
			other = true
		}
	}
	if err := ctx.Err(); err != nil && other {
		return api.Pod{}, api.Errorf(api.ReasonConflict, "pod %s/%s: the record is of another pod (not uid %s): waited for its rewrite until %v", ns, name, uid, err)
	}
	if err := ctx.Err(); err != nil {
		return api.Pod{}, api.Errorf(api.ReasonNotFound, "pod %s/%s not found: waited for its record until %v", ns, name, err)
	}
	return api.Pod{}, api.Errorf(api.ReasonUnavailable, "wait for pod %s/%s: the store closed the watch", ns, name)
}
