package kube

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/api"
)

// fakeRomana is a stateful in-memory romanad for the Reconciler: it keeps
// objects, refuses what romanad refuses (a changed host, a tenant that
// exists with other isolation, a host with addresses, a segment with
// addresses, a tenant with segments, the kube identity's removal of a
// tenant it did not create), gives tenants the smallest free id, as
// romanad does, and counts calls.
type fakeRomana struct {
	hosts    map[string]api.Host
	tenants  map[string]api.Tenant
	segments map[[2]string]api.Segment
	addrs    map[string]api.Address
	pods     map[string]api.Pod
	policies map[string]api.Policy
	sets     map[string]api.AddressSet
	calls    int
	count    map[string]int   // method → calls
	failNext map[string]error // method → error returned once
	// writes are the successful puts, in order: "pod NS/NAME", "set NAME",
	// "policy NAME".
	writes []string
}

func newFake() *fakeRomana {
	return &fakeRomana{hosts: map[string]api.Host{}, tenants: map[string]api.Tenant{}, segments: map[[2]string]api.Segment{},
		addrs: map[string]api.Address{}, pods: map[string]api.Pod{}, policies: map[string]api.Policy{}, sets: map[string]api.AddressSet{},
		count: map[string]int{}, failNext: map[string]error{}}
}

func (f *fakeRomana) call(m string) error {
	f.calls++
	f.count[m]++
	if err, ok := f.failNext[m]; ok {
		delete(f.failNext, m)
		return err
	}
	return nil
}

func notFound(format string, a ...any) error { return api.Errorf(api.ReasonNotFound, format, a...) }

func values[K comparable, V any](m map[K]V, less func(a, b V) int) []V {
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, less)
	return out
}

func (f *fakeRomana) ListHosts(context.Context) ([]api.Host, error) {
	return values(f.hosts, func(a, b api.Host) int { return strings.Compare(a.Name, b.Name) }), f.call("ListHosts")
}
func (f *fakeRomana) AddHost(_ context.Context, h api.Host) (api.Host, error) {
	if err := f.call("AddHost"); err != nil {
		return api.Host{}, err
	}
	if old, ok := f.hosts[h.Name]; ok {
		if !sameHost(old, h) {
			return api.Host{}, api.Errorf(api.ReasonAlreadyExists, "host %s exists", h.Name)
		}
		return old, nil
	}
	f.hosts[h.Name] = h
	return h, nil
}
func (f *fakeRomana) RemoveHost(_ context.Context, name string) error {
	if err := f.call("RemoveHost"); err != nil {
		return err
	}
	if _, ok := f.hosts[name]; !ok {
		return notFound("host %s not found", name)
	}
	for _, a := range f.addrs {
		if a.Host == name {
			return api.Errorf(api.ReasonConflict, "host %s has addresses", name)
		}
	}
	delete(f.hosts, name)
	return nil
}
func (f *fakeRomana) ListTenants(context.Context) ([]api.Tenant, error) {
	return values(f.tenants, func(a, b api.Tenant) int { return strings.Compare(a.Name, b.Name) }), f.call("ListTenants")
}
func (f *fakeRomana) AddTenant(_ context.Context, t api.Tenant) (api.Tenant, error) {
	if err := f.call("AddTenant"); err != nil {
		return api.Tenant{}, err
	}
	if old, ok := f.tenants[t.Name]; ok {
		if old.Isolation != t.Isolation {
			return api.Tenant{}, api.Errorf(api.ReasonAlreadyExists, "tenant %s exists", t.Name)
		}
		return old, nil
	}
	used := map[uint64]bool{}
	for _, o := range f.tenants {
		used[o.ID] = true
	}
	for t.ID = 0; used[t.ID]; t.ID++ {
	}
	t.Labels = maps.Clone(t.Labels)
	f.tenants[t.Name] = t
	return t, nil
}
func (f *fakeRomana) RemoveTenant(_ context.Context, name string) error {
	if err := f.call("RemoveTenant"); err != nil {
		return err
	}
	t, ok := f.tenants[name]
	if !ok {
		return notFound("tenant %s not found", name)
	}
	if t.Labels[api.LabelSource] != api.SourceKubernetes {
		return api.Errorf(api.ReasonForbidden, "tenant %s is not kube's", name)
	}
	for k := range f.segments {
		if k[0] == name {
			return api.Errorf(api.ReasonConflict, "tenant %s still has segment(s)", name)
		}
	}
	delete(f.tenants, name)
	return nil
}
func (f *fakeRomana) RemoveSegment(_ context.Context, tenant, name string) error {
	if err := f.call("RemoveSegment"); err != nil {
		return err
	}
	if _, ok := f.segments[[2]string{tenant, name}]; !ok {
		return notFound("segment %s/%s not found", tenant, name)
	}
	if f.tenants[tenant].Labels[api.LabelSource] != api.SourceKubernetes {
		return api.Errorf(api.ReasonForbidden, "tenant %s is not kube's", tenant)
	}
	n := 0
	for _, a := range f.addrs {
		if a.Tenant == tenant && a.Segment == name {
			n++
		}
	}
	if n > 0 {
		return api.Errorf(api.ReasonConflict, "segment %s/%s still has %d allocated address(es); release them first", tenant, name, n)
	}
	delete(f.segments, [2]string{tenant, name})
	return nil
}
func (f *fakeRomana) ListSegments(_ context.Context, tenant string) ([]api.Segment, error) {
	var out []api.Segment
	for _, s := range values(f.segments, func(a, b api.Segment) int { return strings.Compare(a.Tenant+"/"+a.Name, b.Tenant+"/"+b.Name) }) {
		if tenant == "" || s.Tenant == tenant {
			out = append(out, s)
		}
	}
	return out, f.call("ListSegments")
}
func (f *fakeRomana) AddSegment(_ context.Context, s api.Segment) (api.Segment, error) {
	if err := f.call("AddSegment"); err != nil {
		return api.Segment{}, err
	}
	if _, ok := f.tenants[s.Tenant]; !ok {
		return api.Segment{}, notFound("tenant %s not found", s.Tenant)
	}
	f.segments[[2]string{s.Tenant, s.Name}] = s
	return s, nil
}
func (f *fakeRomana) ReleaseHostAddresses(_ context.Context, host string) ([]string, error) {
	if err := f.call("ReleaseHostAddresses"); err != nil {
		return nil, err
	}
	h, ok := f.hosts[host]
	if !ok {
		return nil, notFound("host %s not found", host)
	}
	if h.Labels[api.LabelSource] != api.SourceKubernetes {
		return nil, api.Errorf(api.ReasonForbidden, "host %s not registered by the controller", host)
	}
	var out []string
	for name, a := range f.addrs {
		if a.Host == host {
			delete(f.addrs, name)
			out = append(out, name)
		}
	}
	return out, nil
}
func (f *fakeRomana) ListPods(_ context.Context, ns string) ([]api.Pod, error) {
	var out []api.Pod
	for _, p := range values(f.pods, func(a, b api.Pod) int { return strings.Compare(a.Key(), b.Key()) }) {
		if ns == "" || p.Namespace == ns {
			out = append(out, p)
		}
	}
	return out, f.call("ListPods")
}
func (f *fakeRomana) PutPod(_ context.Context, p api.Pod) (api.Pod, error) {
	if err := f.call("PutPod"); err != nil {
		return api.Pod{}, err
	}
	f.pods[p.Key()] = p
	f.writes = append(f.writes, "pod "+p.Key())
	return p, nil
}
func (f *fakeRomana) RemovePod(_ context.Context, ns, name string) error {
	if err := f.call("RemovePod"); err != nil {
		return err
	}
	if _, ok := f.pods[ns+"/"+name]; !ok {
		return notFound("pod %s/%s not found", ns, name)
	}
	delete(f.pods, ns+"/"+name)
	return nil
}
func (f *fakeRomana) ListPolicies(context.Context) ([]api.Policy, error) {
	return values(f.policies, func(a, b api.Policy) int { return strings.Compare(a.Name, b.Name) }), f.call("ListPolicies")
}
func (f *fakeRomana) PutPolicy(_ context.Context, p api.Policy) (api.Policy, error) {
	if err := f.call("PutPolicy"); err != nil {
		return api.Policy{}, err
	}
	// romanad fills defaults: the reconciler must not take them for a
	// difference.
	p = normPolicy(p)
	f.policies[p.Name] = p
	f.writes = append(f.writes, "policy "+p.Name)
	return p, nil
}
func (f *fakeRomana) RemovePolicy(_ context.Context, name string) error {
	if err := f.call("RemovePolicy"); err != nil {
		return err
	}
	if _, ok := f.policies[name]; !ok {
		return notFound("policy %s not found", name)
	}
	delete(f.policies, name)
	return nil
}
func (f *fakeRomana) ListAddressSets(context.Context) ([]api.AddressSet, error) {
	return values(f.sets, func(a, b api.AddressSet) int { return strings.Compare(a.Name, b.Name) }), f.call("ListAddressSets")
}
func (f *fakeRomana) PutAddressSet(_ context.Context, s api.AddressSet) (api.AddressSet, error) {
	if err := f.call("PutAddressSet"); err != nil {
		return api.AddressSet{}, err
	}
	f.sets[s.Name] = s
	f.writes = append(f.writes, "set "+s.Name)
	return s, nil
}
func (f *fakeRomana) RemoveAddressSet(_ context.Context, name string) error {
	if err := f.call("RemoveAddressSet"); err != nil {
		return err
	}
	if _, ok := f.sets[name]; !ok {
		return notFound("address set %s not found", name)
	}
	delete(f.sets, name)
	return nil
}

// addAddress allocates an address on a host (what the CNI does).
func (f *fakeRomana) addAddress(name, host string, ip string) {
	f.addrs[name] = api.Address{Name: name, Host: host, IP: netip.MustParseAddr(ip)}
}

// addPodAddress allocates an address on a host in a tenant's segment.
func (f *fakeRomana) addPodAddress(name, host, ip, tenant, segment string) {
	f.addrs[name] = api.Address{Name: name, Host: host, IP: netip.MustParseAddr(ip), Tenant: tenant, Segment: segment}
}

// dump renders the fake's objects, one per line, for comparisons.
func (f *fakeRomana) dump() string {
	var b strings.Builder
	for _, h := range values(f.hosts, func(a, b api.Host) int { return strings.Compare(a.Name, b.Name) }) {
		fmt.Fprintf(&b, "host %s %s %s %v\n", h.Name, h.IP, h.IP6, h.Labels)
	}
	for _, t := range values(f.tenants, func(a, b api.Tenant) int { return strings.Compare(a.Name, b.Name) }) {
		fmt.Fprintf(&b, "tenant %s %d %s %v\n", t.Name, t.ID, t.Isolation, t.Labels)
	}
	for _, s := range values(f.segments, func(a, b api.Segment) int { return strings.Compare(a.Tenant+"/"+a.Name, b.Tenant+"/"+b.Name) }) {
		fmt.Fprintf(&b, "segment %s/%s\n", s.Tenant, s.Name)
	}
	for _, p := range values(f.pods, func(a, b api.Pod) int { return strings.Compare(a.Key(), b.Key()) }) {
		fmt.Fprintf(&b, "pod %s %s/%s\n", p.Key(), p.Tenant, p.Segment)
	}
	for _, p := range values(f.policies, func(a, b api.Policy) int { return strings.Compare(a.Name, b.Name) }) {
		fmt.Fprintf(&b, "policy %s tier=%q prio=%d rules=%d\n", p.Name, p.Tier, p.Priority, len(p.Rules))
	}
	for _, s := range values(f.sets, func(a, b api.AddressSet) int { return strings.Compare(a.Name, b.Name) }) {
		fmt.Fprintf(&b, "set %s %v\n", s.Name, s.Addresses)
	}
	for _, a := range values(f.addrs, func(a, b api.Address) int { return strings.Compare(a.Name, b.Name) }) {
		fmt.Fprintf(&b, "address %s %s %s\n", a.Name, a.Host, a.IP)
	}
	return b.String()
}

type netipAddr = netip.Addr

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
