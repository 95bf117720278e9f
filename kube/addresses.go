package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/romana/romana/api"
)

// Why the controller follows romanad's addresses: a policy that selects
// pods by label gets a pod's address through an address set, and the pod's
// status names its IP only once the kubelet reports it, after the sandbox
// and the containers have started (5 to 18 s after the CNI ADD under load,
// in the real-node benchmark of docs/benchmarks.md). Until then a new pod
// was missing from its sets: open to peers the policy denies. romanad
// knows the address from the CNI ADD on (its attributes name the pod), so
// the controller takes it from there when the status has none yet.

// PodAddresses are the addresses romanad allocated for pods, by the
// attributes api.AttrK8sNamespace and api.AttrK8sPod (and api.AttrK8sUID
// when the pod's record had its UID). It is pure data: the follower
// (FollowAddresses) fills it from romanad's snapshot and watch.
type PodAddresses struct {
	byName map[string]api.Address // address name → address, pods' only
}

// Put records a (or forgets it when it names no pod).
func (p *PodAddresses) Put(a api.Address) {
	if p.byName == nil {
		p.byName = map[string]api.Address{}
	}
	if a.Attrs[api.AttrK8sNamespace] == "" || a.Attrs[api.AttrK8sPod] == "" {
		delete(p.byName, a.Name)
		return
	}
	p.byName[a.Name] = a
}

// Delete forgets the address named name.
func (p *PodAddresses) Delete(name string) { delete(p.byName, name) }

// Len is the number of pods' addresses known.
func (p *PodAddresses) Len() int { return len(p.byName) }

// For returns the addresses allocated for the pod: those whose attributes
// name it, on its node (the host of the same name), and, where romanad
// recorded a UID, of this pod (not an earlier one of the same name whose
// address is not released yet). Sorted, at most one per family (the
// lowest), as a pod's status lists them.
func (p *PodAddresses) For(pod *corev1.Pod) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, a := range p.byName {
		if a.Attrs[api.AttrK8sNamespace] != pod.Namespace || a.Attrs[api.AttrK8sPod] != pod.Name || a.Host != pod.Spec.NodeName {
			continue
		}
		if uid := a.Attrs[api.AttrK8sUID]; uid != "" && uid != string(pod.UID) {
			continue
		}
		if a.IP.Is4() {
			v4 = append(v4, a.IP)
		} else {
			v6 = append(v6, a.IP)
		}
	}
	var out []netip.Addr
	for _, f := range [][]netip.Addr{v4, v6} {
		if len(f) > 0 {
			out = append(out, slices.MinFunc(f, netip.Addr.Compare))
		}
	}
	return out
}

// WithAllocatedIPs returns pods with the status IPs of those that have
// none filled in from romanad's allocations (p.For): scheduled pods, not
// finished, not being deleted. Pods with a status IP are left as they are:
// the kubelet's word wins. The input is not modified (informers' objects
// are shared).
func WithAllocatedIPs(pods []corev1.Pod, p *PodAddresses) []corev1.Pod {
	if p == nil || p.Len() == 0 {
		return pods
	}
	out := slices.Clone(pods)
	for i := range out {
		pod := &out[i]
		if pod.Status.PodIP != "" || len(pod.Status.PodIPs) > 0 || pod.Spec.NodeName == "" || pod.Spec.HostNetwork ||
			pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		ips := p.For(pod)
		if len(ips) == 0 {
			continue
		}
		st := pod.Status.DeepCopy()
		st.PodIP = ips[0].String()
		for _, ip := range ips {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.String()})
		}
		pod.Status = *st
	}
	return out
}

// AddressSource is romanad's snapshot and watch (*client.Client with the
// "kube" identity).
type AddressSource interface {
	Snapshot(ctx context.Context) (api.Snapshot, error)
	Watch(ctx context.Context, revision int64, fn func(api.Event) error) error
}

// addressFollower keeps PodAddresses in step with romanad: a snapshot,
// then the watch from the revision after it; when the watch breaks, a new
// snapshot (the index is small: pods' addresses only). changed is called
// after the snapshot and after each whole revision that touched a pod's
// address.
type addressFollower struct {
	src     AddressSource
	log     *slog.Logger
	changed func()

	mu    sync.Mutex
	addrs PodAddresses
	ready bool // a snapshot was read
}

// pods returns a copy of the index, and whether a snapshot was read.
func (f *addressFollower) pods() (*PodAddresses, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cp := &PodAddresses{byName: make(map[string]api.Address, len(f.addrs.byName))}
	for k, v := range f.addrs.byName {
		cp.byName[k] = v
	}
	return cp, f.ready
}

func (f *addressFollower) run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := f.once(ctx)
		if ctx.Err() != nil {
			return
		}
		f.log.Warn("following romanad's addresses failed; reading a new snapshot", "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// once reads a snapshot and follows the watch until it breaks.
func (f *addressFollower) once(ctx context.Context) error {
	snap, err := f.src.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	var fresh PodAddresses
	for _, a := range snap.Addresses {
		fresh.Put(a)
	}
	f.mu.Lock()
	f.addrs, f.ready = fresh, true
	f.mu.Unlock()
	f.changed()
	touched := false
	return f.src.Watch(ctx, snap.Revision+1, func(ev api.Event) error {
		if ev.Kind == api.KindAddress {
			f.mu.Lock()
			switch ev.Type {
			case api.EventDelete:
				_, had := f.addrs.byName[ev.Name]
				f.addrs.Delete(ev.Name)
				touched = touched || had
			case api.EventPut:
				var a api.Address
				if err := json.Unmarshal(ev.Object, &a); err != nil {
					f.mu.Unlock()
					return fmt.Errorf("decode address %s at revision %d: %w", ev.Name, ev.Revision, err)
				}
				_, had := f.addrs.byName[a.Name]
				f.addrs.Put(a)
				_, has := f.addrs.byName[a.Name]
				touched = touched || had || has
			}
			f.mu.Unlock()
		}
		if ev.RevisionEnd && touched {
			touched = false
			f.changed()
		}
		return nil
	})
}
