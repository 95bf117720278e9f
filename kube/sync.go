package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/romana/romana/api"
)

// Romana is what the controller needs of romanad; *client.Client (with
// the "kube" identity) implements it.
type Romana interface {
	ListHosts(ctx context.Context) ([]api.Host, error)
	AddHost(ctx context.Context, h api.Host) (api.Host, error)
	RemoveHost(ctx context.Context, name string) error
	ListTenants(ctx context.Context) ([]api.Tenant, error)
	AddTenant(ctx context.Context, t api.Tenant) (api.Tenant, error)
	RemoveTenant(ctx context.Context, name string) error
	ListSegments(ctx context.Context, tenant string) ([]api.Segment, error)
	AddSegment(ctx context.Context, s api.Segment) (api.Segment, error)
	RemoveSegment(ctx context.Context, tenant, name string) error
	ReleaseHostAddresses(ctx context.Context, host string) ([]string, error)
	ListPods(ctx context.Context, namespace string) ([]api.Pod, error)
	PutPod(ctx context.Context, p api.Pod) (api.Pod, error)
	RemovePod(ctx context.Context, namespace, name string) error
	ListPolicies(ctx context.Context) ([]api.Policy, error)
	PutPolicy(ctx context.Context, p api.Policy) (api.Policy, error)
	RemovePolicy(ctx context.Context, name string) error
	ListAddressSets(ctx context.Context) ([]api.AddressSet, error)
	PutAddressSet(ctx context.Context, s api.AddressSet) (api.AddressSet, error)
	RemoveAddressSet(ctx context.Context, name string) error
}

// Observed is what romanad holds of the objects the controller owns or
// creates: hosts, tenants and segments (all of them: the controller adds
// missing ones, removes only its own hosts and tenants), pod records, and
// the policies and address sets named with the prefix.
type Observed struct {
	Hosts    map[string]api.Host
	Tenants  map[string]api.Tenant
	Segments map[[2]string]bool
	Pods     map[string]api.Pod
	Policies map[string]api.Policy
	Sets     map[string]api.AddressSet
}

// Observe reads romanad's objects.
func Observe(ctx context.Context, r Romana, prefix string) (Observed, error) {
	o := Observed{Hosts: map[string]api.Host{}, Tenants: map[string]api.Tenant{}, Segments: map[[2]string]bool{},
		Pods: map[string]api.Pod{}, Policies: map[string]api.Policy{}, Sets: map[string]api.AddressSet{}}
	hosts, err := r.ListHosts(ctx)
	if err != nil {
		return o, fmt.Errorf("list hosts: %w", err)
	}
	for _, h := range hosts {
		o.Hosts[h.Name] = h
	}
	tenants, err := r.ListTenants(ctx)
	if err != nil {
		return o, fmt.Errorf("list tenants: %w", err)
	}
	for _, t := range tenants {
		o.Tenants[t.Name] = t
	}
	segs, err := r.ListSegments(ctx, "")
	if err != nil {
		return o, fmt.Errorf("list segments: %w", err)
	}
	for _, s := range segs {
		o.Segments[[2]string{s.Tenant, s.Name}] = true
	}
	pods, err := r.ListPods(ctx, "")
	if err != nil {
		return o, fmt.Errorf("list pod records: %w", err)
	}
	for _, p := range pods {
		o.Pods[p.Key()] = p
	}
	pols, err := r.ListPolicies(ctx)
	if err != nil {
		return o, fmt.Errorf("list policies: %w", err)
	}
	for _, p := range pols {
		if hasPrefix(p.Name, prefix) {
			o.Policies[p.Name] = p
		}
	}
	sets, err := r.ListAddressSets(ctx)
	if err != nil {
		return o, fmt.Errorf("list address sets: %w", err)
	}
	for _, s := range sets {
		if hasPrefix(s.Name, prefix) {
			o.Sets[s.Name] = s
		}
	}
	return o, nil
}

func hasPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// Reconciler writes the difference between a Desired and romanad. It is
// used by one goroutine.
type Reconciler struct {
	R      Romana
	Prefix string
	// NodeGrace is how long a host whose node is gone keeps its addresses
	// (a node deleted and re-created keeps its pods' addresses).
	NodeGrace time.Duration
	// TenantRetry is how soon Sync tries again to remove a tenant that
	// romanad refused to remove because its pods' addresses are not all
	// released yet (default DefaultTenantRetry). A release seen on
	// romanad's watch (Controller.Addresses) triggers a sync sooner.
	TenantRetry time.Duration
	// Log, when set, says which tenants of deleted namespaces wait for
	// what, and which were removed.
	Log *slog.Logger

	have    *Observed
	gone    map[string]time.Time  // owned host → when its node was first seen gone
	waiting map[string]tenantWait // owned tenant no namespace maps to, not removed yet
	Stats   Stats
}

// DefaultTenantRetry is Reconciler.TenantRetry's default.
const DefaultTenantRetry = 5 * time.Second

// tenantWait is why a tenant of deleted namespaces is still there, and
// when to try its removal again.
type tenantWait struct {
	why   string
	retry time.Time
}

// Stats counts the writes of a Reconciler.
type Stats struct{ Writes, Deletes, Errors int }

// Waiting returns the tenants the controller made whose namespaces are
// gone but which romanad still holds, each with the reason (addresses of
// their pods not released yet), by name.
func (rc *Reconciler) Waiting() map[string]string {
	out := map[string]string{}
	for name, w := range rc.waiting {
		out[name] = w.why
	}
	return out
}

// Sync makes romanad's objects what want says, in dependency order
// (tenants and segments, hosts, address sets, policies, pod records; then
// deletions of policies, sets and pod records). It returns the first errors met,
// joined; what succeeded stays done, and the next Sync re-reads romanad
// and retries the rest. next is when Sync must run again (a node's grace
// period ending), zero when it need not.
func (rc *Reconciler) Sync(ctx context.Context, want Desired, now time.Time) (next time.Time, _ error) {
	if rc.have == nil {
		o, err := Observe(ctx, rc.R, rc.Prefix)
		if err != nil {
			return time.Time{}, err
		}
		rc.have = &o
	}
	if rc.gone == nil {
		rc.gone = map[string]time.Time{}
	}
	if rc.waiting == nil {
		rc.waiting = map[string]tenantWait{}
	}
	h := rc.have
	var errs []error
	fail := func(err error) {
		rc.Stats.Errors++
		errs = append(errs, err)
	}
	for _, t := range want.Tenants {
		if _, ok := h.Tenants[t.Name]; ok {
			continue // a tenant's isolation is the operator's once it exists
		}
		out, err := rc.R.AddTenant(ctx, t)
		if err != nil {
			fail(fmt.Errorf("add tenant %s: %w", t.Name, err))
			continue
		}
		rc.Stats.Writes++
		h.Tenants[t.Name] = out
	}
	for _, s := range want.Segments {
		k := [2]string{s.Tenant, s.Name}
		if h.Segments[k] {
			continue
		}
		if _, ok := h.Tenants[s.Tenant]; !ok {
			continue
		}
		if _, err := rc.R.AddSegment(ctx, s); err != nil {
			fail(fmt.Errorf("add segment %s/%s: %w", s.Tenant, s.Name, err))
			continue
		}
		rc.Stats.Writes++
		h.Segments[k] = true
	}
	wantHosts := map[string]bool{}
	for _, w := range want.Hosts {
		wantHosts[w.Name] = true
		delete(rc.gone, w.Name)
		old, ok := h.Hosts[w.Name]
		if ok {
			if !sameHost(old, w) && old.Labels[api.LabelSource] == api.SourceKubernetes {
				// A host's place in the plan is fixed while it holds
				// addresses: a node whose address or topology labels
				// changed keeps its host until the node is re-created.
				fail(fmt.Errorf("node %s changed (host %s, node %s): a host cannot move while it exists; delete and re-create the node", w.Name, hostString(old), hostString(w)))
			}
			continue
		}
		out, err := rc.R.AddHost(ctx, w)
		if err != nil {
			fail(fmt.Errorf("add host %s: %w", w.Name, err))
			continue
		}
		rc.Stats.Writes++
		h.Hosts[w.Name] = out
	}
	unlisted := map[string]bool{} // pods of sets not written: no new record yet
	for _, s := range want.Sets {
		if old, ok := h.Sets[s.Name]; ok && sameSet(old, s) {
			continue
		}
		if _, err := rc.R.PutAddressSet(ctx, s); err != nil {
			fail(fmt.Errorf("put address set %s: %w", s.Name, err))
			for _, p := range s.Pods {
				unlisted[p] = true
			}
			continue
		}
		rc.Stats.Writes++
		h.Sets[s.Name] = s
	}
	for _, p := range want.Policies {
		if old, ok := h.Policies[p.Name]; ok && reflect.DeepEqual(normPolicy(old), normPolicy(p)) {
			continue
		}
		if _, err := rc.R.PutPolicy(ctx, p); err != nil {
			fail(fmt.Errorf("put policy %s: %w", p.Name, err))
			continue
		}
		rc.Stats.Writes++
		// What was written, not romanad's answer: the next comparison is
		// with the desired form (romanad fills defaults).
		h.Policies[p.Name] = p
	}
	// Pod records after the sets and policies: an allocation for a pod
	// needs its record, so a pod that can get an address is already in
	// the sets that list it (api.AddressSet.Pods).
	for _, p := range want.Pods {
		old, ok := h.Pods[p.Key()]
		if ok && old == p || !ok && unlisted[p.Key()] {
			continue
		}
		if _, err := rc.R.PutPod(ctx, p); err != nil {
			fail(fmt.Errorf("put pod record %s: %w", p.Key(), err))
			continue
		}
		rc.Stats.Writes++
		h.Pods[p.Key()] = p
	}
	// Deletions: policies before the sets they name.
	wantPol := map[string]bool{}
	for _, p := range want.Policies {
		wantPol[p.Name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(h.Policies)) {
		if wantPol[name] {
			continue
		}
		if err := rc.R.RemovePolicy(ctx, name); err != nil && !isNotFound(err) {
			fail(fmt.Errorf("remove policy %s: %w", name, err))
			continue
		}
		rc.Stats.Deletes++
		delete(h.Policies, name)
	}
	wantSet := map[string]bool{}
	for _, s := range want.Sets {
		wantSet[s.Name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(h.Sets)) {
		if wantSet[name] {
			continue
		}
		if err := rc.R.RemoveAddressSet(ctx, name); err != nil && !isNotFound(err) {
			fail(fmt.Errorf("remove address set %s: %w", name, err))
			continue
		}
		rc.Stats.Deletes++
		delete(h.Sets, name)
	}
	wantPod := map[string]bool{}
	for _, p := range want.Pods {
		wantPod[p.Key()] = true
	}
	for _, key := range slices.Sorted(maps.Keys(h.Pods)) {
		if wantPod[key] {
			continue
		}
		p := h.Pods[key]
		if err := rc.R.RemovePod(ctx, p.Namespace, p.Name); err != nil && !isNotFound(err) {
			fail(fmt.Errorf("remove pod record %s: %w", key, err))
			continue
		}
		rc.Stats.Deletes++
		delete(h.Pods, key)
	}
	next = rc.removeTenants(ctx, want, now, next, fail)
	// Hosts of deleted nodes: after the grace period, release their
	// addresses (pods on a deleted node are gone) and remove them.
	for _, name := range slices.Sorted(maps.Keys(h.Hosts)) {
		old := h.Hosts[name]
		if wantHosts[name] || old.Labels[api.LabelSource] != api.SourceKubernetes {
			continue
		}
		since, ok := rc.gone[name]
		if !ok {
			since = now
			rc.gone[name] = now
		}
		if due := since.Add(rc.NodeGrace); now.Before(due) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		if err := rc.removeHost(ctx, name); err != nil {
			fail(err)
			continue
		}
		rc.Stats.Deletes++
		delete(h.Hosts, name)
		delete(rc.gone, name)
	}
	if len(errs) > 0 {
		rc.have = nil // re-read romanad before the next attempt
	}
	return next, errors.Join(errs...)
}

// removeTenants removes the tenants the controller made (labelled
// api.LabelSource) that no namespace maps to any more: first their
// segments, then the tenant, each once romanad agrees. romanad refuses
// (Conflict) to remove a segment that still has addresses, or a tenant
// that still has segments: the pods of a deleted namespace may still be
// terminating, their CNI DEL not done. Such a tenant waits and is tried
// again TenantRetry later (returned as next when sooner; not at every
// sync: a segment's removal reads every address). Its id is free again
// once it is removed (romanad gives the smallest free id), so churn of
// namespaces never exhausts the plan's tenant bits. A namespace
// re-created while its tenant waits finds the tenant still there (its
// segments re-added if they went). Tenants an operator made, and tenants
// made before the controller labelled its own, are never removed.
func (rc *Reconciler) removeTenants(ctx context.Context, want Desired, now, next time.Time, fail func(error)) time.Time {
	h := rc.have
	wanted := map[string]bool{}
	for _, t := range want.Tenants {
		wanted[t.Name] = true
	}
	for name := range rc.waiting {
		if _, ok := h.Tenants[name]; !ok || wanted[name] {
			delete(rc.waiting, name)
		}
	}
	records := map[string]bool{} // tenants of pod records still held
	for _, p := range h.Pods {
		records[p.Tenant] = true
	}
	retry := cmp.Or(rc.TenantRetry, DefaultTenantRetry)
	later := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	wait := func(name, why string) {
		if rc.waiting[name].why != why && rc.Log != nil {
			rc.Log.Info("the tenant of deleted namespace(s) waits before its removal", "tenant", name, "for", why)
		}
		rc.waiting[name] = tenantWait{why: why, retry: now.Add(retry)}
		later(now.Add(retry))
	}
	for _, name := range slices.Sorted(maps.Keys(h.Tenants)) {
		t := h.Tenants[name]
		if wanted[name] || t.Labels[api.LabelSource] != api.SourceKubernetes {
			continue
		}
		if w, ok := rc.waiting[name]; ok && now.Before(w.retry) {
			later(w.retry)
			continue
		}
		if records[name] {
			wait(name, "its pod records' removal")
			continue
		}
		var busy []string
		for _, k := range slices.SortedFunc(maps.Keys(h.Segments), func(a, b [2]string) int { return cmp.Compare(a[1], b[1]) }) {
			if k[0] != name {
				continue
			}
			err := rc.R.RemoveSegment(ctx, name, k[1])
			switch {
			case err == nil || isNotFound(err):
				rc.Stats.Deletes++
				delete(h.Segments, k)
			case isConflict(err):
				busy = append(busy, err.Error())
			default:
				busy = append(busy, "segment "+k[1]+": "+err.Error())
				fail(fmt.Errorf("remove segment %s/%s of deleted namespace(s): %w", name, k[1], err))
			}
		}
		if len(busy) > 0 {
			wait(name, strings.Join(busy, "; "))
			continue
		}
		err := rc.R.RemoveTenant(ctx, name)
		switch {
		case err == nil || isNotFound(err):
			rc.Stats.Deletes++
			delete(h.Tenants, name)
			delete(rc.waiting, name)
			if rc.Log != nil {
				rc.Log.Info("removed the tenant of deleted namespace(s)", "tenant", name, "id", t.ID)
			}
		case isConflict(err):
			// A segment added meanwhile: romanad is read anew next time.
			wait(name, err.Error())
			rc.have = nil
		default:
			wait(name, err.Error())
			fail(fmt.Errorf("remove tenant %s of deleted namespace(s): %w", name, err))
		}
	}
	return next
}

// removeHost releases a host's addresses and removes it.
func (rc *Reconciler) removeHost(ctx context.Context, name string) error {
	if _, err := rc.R.ReleaseHostAddresses(ctx, name); err != nil && !isNotFound(err) {
		return fmt.Errorf("release the addresses of deleted node %s: %w", name, err)
	}
	if err := rc.R.RemoveHost(ctx, name); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove host %s: %w", name, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Reason == api.ReasonNotFound
}

func isConflict(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Reason == api.ReasonConflict
}

func sameHost(a, b api.Host) bool {
	return a.IP == b.IP && a.IP6 == b.IP6 && maps.Equal(a.Labels, b.Labels)
}

func hostString(h api.Host) string {
	s := h.IP.String()
	if h.IP6.IsValid() {
		s += "," + h.IP6.String()
	}
	return fmt.Sprintf("%s %v", s, h.Labels)
}

func sameSet(a, b api.AddressSet) bool {
	return a.Description == b.Description && slices.Equal(a.Addresses, b.Addresses) && slices.Equal(a.Pods, b.Pods)
}

// normPolicy is p as romanad stores it, for comparing a desired policy
// with a stored one (romanad fills defaults).
func normPolicy(p api.Policy) api.Policy {
	if p.Priority == 0 {
		p.Priority = api.DefaultPriority
	}
	if len(p.Rules) == 0 {
		p.Rules = nil
	}
	p.Rules = slices.Clone(p.Rules)
	for i := range p.Rules {
		if p.Rules[i].Action == "" {
			p.Rules[i].Action = api.ActionAllow
		}
	}
	return p
}
