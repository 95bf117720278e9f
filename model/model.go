// Package model is romanad's state as a host needs it: a snapshot indexed
// once (networks with their parsed plans, hosts, tenants, segments,
// addresses by host and by IP, policies, chains, devices) and then kept
// current event by event. It owns the rules every consumer shares: which
// networks and tenants are usable, whether a network admits a tenant, the
// endpoints' gateway. Packages hoststate, policy and fabric compute from a
// *Model instead of indexing the snapshot themselves.
//
// It is pure (no I/O, no clock) and not safe for concurrent use: the agent's
// loop owns its model.
package model

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// The endpoint scheme shared by the CNI plugin and the agent: an endpoint
// has <ip>/32 on its eth0 and "default via Gateway dev eth0 onlink"; the
// host holds Gateway/32 on the link GatewayLink and answers ARP for it on
// every endpoint veth.
var Gateway = netip.MustParseAddr("169.254.1.1")

// Gateway6 is the IPv6 endpoints' gateway. An IPv6 endpoint has <ip>/128
// on its eth0 and "default via Gateway6 dev eth0"; the host side of its
// veth holds Gateway6/64 (link-local, without duplicate address
// detection), so the host answers neighbour solicitations for it on that
// veth itself, as for any of its own addresses. IPv6 neighbour discovery
// is per link: an address on GatewayLink would not be answered on the
// veths (unlike ARP for Gateway), hence one address per veth, the same on
// each, which link-local scope allows.
var Gateway6 = netip.MustParseAddr("fe80::1")

// GatewayLink is the host link holding Gateway (a dummy link, or a
// port-less bridge on kernels without the dummy driver).
const GatewayLink = "romana-gw"

// Network is a usable network: its name is valid, its plan parses and its
// pool passes api.CheckPool.
type Network struct {
	api.Network
	Plan    *plan.Plan
	allowed map[string]bool // nil: every tenant
}

// Admits reports whether tenant may have addresses in n (Network.Tenants
// empty: every tenant).
func (n *Network) Admits(tenant string) bool { return n.allowed == nil || n.allowed[tenant] }

// HostCIDR returns h's block in n, and false when h has no slot in n or
// its slot's CIDR does not match its location in the plan.
func (n *Network) HostCIDR(h api.Host) (netip.Prefix, bool) {
	for _, s := range h.Slots {
		if s.Network != n.Name {
			continue
		}
		if c, err := n.Plan.HostCIDR(s.Loc); err == nil && c == s.CIDR {
			return s.CIDR, true
		}
	}
	return netip.Prefix{}, false
}

// Kinds of change, one per resource kind (api.Kind*). A Change says which
// kind changed and, for addresses, on which hosts.
type Change struct {
	Kind string
	// Hosts are the hosts of the address before and after the event (an
	// address that moved has two); empty for other kinds.
	Hosts []string
	// SetMember is set, for an address, when it is, before or after the
	// event, allocated for a pod that an address set lists
	// (api.AddressSet.Pods) or an address a set lists: the event may
	// change that set's members; for an address set, when the set came,
	// went or its members (AddressSetMembers) changed. A set rewritten
	// with the same members (its writer adding the address of a pod it
	// already listed, which agents have resolved since the allocation)
	// changes nothing an agent enforces.
	SetMember bool
}

// Model is the indexed state. The zero value is not usable: use New.
type Model struct {
	rev int64

	networks  map[string]api.Network
	hosts     map[string]api.Host
	tenants   map[string]api.Tenant
	segments  map[string]api.Segment // "tenant/segment"
	addresses map[string]api.Address
	policies  map[string]api.Policy
	chains    map[string]api.Chain
	devices   map[string]api.Device
	sets      map[string]api.AddressSet

	// dups are the objects a snapshot listed twice, by kind.
	dups map[string][]string

	// Indexes kept current by Apply.
	byHost map[string]map[string]api.Address // host → name → address
	byIP   map[netip.Addr]map[string]bool    // ip → address names
	// byPod: "namespace/name" → the names of the addresses whose
	// attributes (api.AttrK8sNamespace, api.AttrK8sPod) name that pod.
	byPod map[string]map[string]bool
	// setPods: "namespace/name" → how many address sets list the pod;
	// setAddrs: address → how many sets list it in Addresses.
	setPods  map[string]int
	setAddrs map[netip.Addr]int

	// Derived views, rebuilt on first use after a change of their kind.
	nets      *netIndex
	tens      *tenantIndex
	hostList  []api.Host
	policyLst []api.Policy
	// policyLstGen is the policy generation policyLst reflects (when not
	// nil): the policies changed since are the journal's entries after it.
	policyLstGen uint64

	chainLst  []api.Chain
	deviceLst []api.Device
	setLst    []api.AddressSet

	// The policy journal: policyGen counts the policy events applied;
	// policyLog names the policy each of the events policyBase+1 to
	// policyGen changed (a name may repeat). It is trimmed from the front
	// past policyLogMax entries.
	policyGen  uint64
	policyBase uint64
	policyLog  []string
}

type netIndex struct {
	list     []*Network
	byName   map[string]*Network
	problems []string
}

type tenantIndex struct {
	list     []api.Tenant // usable, sorted by ID
	byName   map[string]int
	segments map[string][]api.Segment // usable, by tenant, sorted by ID
	problems []string
}

// New indexes s.
func New(s api.Snapshot) *Model {
	m := &Model{rev: s.Revision,
		networks: map[string]api.Network{}, hosts: map[string]api.Host{}, tenants: map[string]api.Tenant{},
		segments: map[string]api.Segment{}, addresses: map[string]api.Address{}, policies: map[string]api.Policy{},
		chains: map[string]api.Chain{}, devices: map[string]api.Device{}, sets: map[string]api.AddressSet{},
		byHost: map[string]map[string]api.Address{}, byIP: map[netip.Addr]map[string]bool{}, dups: map[string][]string{},
		byPod: map[string]map[string]bool{}, setPods: map[string]int{}, setAddrs: map[netip.Addr]int{}}
	for _, x := range s.Networks {
		addFirst(m, api.KindNetwork, m.networks, x.Name, x)
	}
	for _, x := range s.Hosts {
		addFirst(m, api.KindHost, m.hosts, x.Name, x)
	}
	for _, x := range s.Tenants {
		addFirst(m, api.KindTenant, m.tenants, x.Name, x)
	}
	for _, x := range s.Segments {
		addFirst(m, api.KindSegment, m.segments, x.Tenant+"/"+x.Name, x)
	}
	for _, x := range s.Addresses {
		if _, dup := m.addresses[x.Name]; dup {
			m.dups[api.KindAddress] = append(m.dups[api.KindAddress], fmt.Sprintf("address %q: listed twice; using the first", x.Name))
			continue
		}
		m.putAddress(x.Name, x)
	}
	for _, x := range s.Policies {
		// Of a policy listed twice, the one first in precedence order
		// (earlier tier, then lower priority; 0 counts as the default) is
		// the one enforced.
		if old, dup := m.policies[x.Name]; dup && precedes(x, old) {
			delete(m.policies, x.Name)
		}
		addFirst(m, api.KindPolicy, m.policies, x.Name, x)
	}
	for _, x := range s.Chains {
		addFirst(m, api.KindChain, m.chains, x.Name, x)
	}
	for _, x := range s.Devices {
		addFirst(m, api.KindDevice, m.devices, x.Name, x)
	}
	for _, x := range s.AddressSets {
		addFirst(m, api.KindAddressSet, m.sets, x.Name, x)
	}
	for _, x := range m.sets {
		m.countSetPods(x, 1)
	}
	return m
}

// precedes reports whether a comes before b in precedence order (tier,
// then priority), as package policy sorts them.
func precedes(a, b api.Policy) bool {
	if ra, rb := api.TierRank(a.Tier), api.TierRank(b.Tier); ra != rb {
		return ra < rb
	}
	return effectivePriority(a) < effectivePriority(b)
}

func effectivePriority(p api.Policy) int {
	if p.Priority == 0 {
		return api.DefaultPriority
	}
	return p.Priority
}

// addFirst adds v to objs unless its name is taken (a snapshot listing
// one object twice, which is a problem of its kind).
func addFirst[T any](m *Model, kind string, objs map[string]T, name string, v T) {
	if _, dup := objs[name]; dup {
		m.dups[kind] = append(m.dups[kind], fmt.Sprintf("%s %q: listed twice; using the first", kind, name))
		return
	}
	objs[name] = v
}

// Revision is the store revision the model reflects.
func (m *Model) Revision() int64 { return m.rev }

// Apply applies one watch event and reports what changed. Events of
// unknown kinds are ignored (a newer romanad may send more; ok is false);
// a put whose object does not decode is an error and leaves the model as
// it was.
func (m *Model) Apply(ev api.Event) (c Change, ok bool, err error) {
	c.Kind = ev.Kind
	switch ev.Kind {
	case api.KindNetwork:
		err = applyTo(m.networks, ev)
		m.nets = nil
	case api.KindHost:
		err = applyTo(m.hosts, ev)
		m.hostList = nil
	case api.KindTenant:
		err = applyTo(m.tenants, ev)
		m.tens = nil
	case api.KindSegment:
		err = applyTo(m.segments, ev)
		m.tens = nil
	case api.KindAddress:
		c.Hosts, c.SetMember, err = m.applyAddress(ev)
	case api.KindPolicy:
		err = applyTo(m.policies, ev)
		if err == nil {
			m.logPolicy(ev.Name)
		}
	case api.KindChain:
		err = applyTo(m.chains, ev)
		m.chainLst = nil
	case api.KindDevice:
		err = applyTo(m.devices, ev)
		m.deviceLst = nil
	case api.KindAddressSet:
		old, had := m.sets[ev.Name]
		var before []netip.Addr
		if had {
			before = m.AddressSetMembers(ev.Name)
		}
		err = applyTo(m.sets, ev)
		if err == nil {
			if had {
				m.countSetPods(old, -1)
			}
			x, has := m.sets[ev.Name]
			if has {
				m.countSetPods(x, 1)
			}
			c.SetMember = had != has || !slices.Equal(before, m.AddressSetMembers(ev.Name))
		}
		m.setLst = nil
	default:
		return Change{}, false, nil
	}
	if err != nil {
		return Change{}, false, err
	}
	m.rev = max(m.rev, ev.Revision)
	return c, true, nil
}

func decodeEvent[T any](ev api.Event) (T, error) {
	var v T
	switch ev.Type {
	case api.EventPut:
		if err := json.Unmarshal(ev.Object, &v); err != nil {
			return v, fmt.Errorf("decode %s %q at revision %d: %w", ev.Kind, ev.Name, ev.Revision, err)
		}
	case api.EventDelete:
	default:
		return v, fmt.Errorf("%s %q at revision %d: unknown event type %q", ev.Kind, ev.Name, ev.Revision, ev.Type)
	}
	return v, nil
}

func applyTo[T any](objs map[string]T, ev api.Event) error {
	v, err := decodeEvent[T](ev)
	if err != nil {
		return err
	}
	if ev.Type == api.EventDelete {
		delete(objs, ev.Name)
	} else {
		objs[ev.Name] = v
	}
	return nil
}

func (m *Model) applyAddress(ev api.Event) (hosts []string, member bool, _ error) {
	v, err := decodeEvent[api.Address](ev)
	if err != nil {
		return nil, false, err
	}
	if old, ok := m.addresses[ev.Name]; ok {
		hosts = append(hosts, old.Host)
		member = m.listed(old)
		m.dropAddress(ev.Name, old)
	}
	if ev.Type == api.EventPut {
		m.putAddress(ev.Name, v)
		if !slices.Contains(hosts, v.Host) {
			hosts = append(hosts, v.Host)
		}
		member = member || m.listed(v)
	}
	return hosts, member, nil
}

// listed reports whether a set lists a's pod or a's IP.
func (m *Model) listed(a api.Address) bool {
	return m.setPods[podOf(a)] > 0 || m.setAddrs[a.IP.Unmap()] > 0
}

// podOf is the "namespace/name" of the pod an address was allocated for
// (its attributes api.AttrK8sNamespace and api.AttrK8sPod), or "".
func podOf(a api.Address) string {
	ns, name := a.Attrs[api.AttrK8sNamespace], a.Attrs[api.AttrK8sPod]
	if ns == "" || name == "" {
		return ""
	}
	return ns + "/" + name
}

// countSetPods adds d to the count of sets listing each of s's pods and
// addresses.
func (m *Model) countSetPods(s api.AddressSet, d int) {
	for _, p := range s.Pods {
		if n := m.setPods[p] + d; n > 0 {
			m.setPods[p] = n
		} else {
			delete(m.setPods, p)
		}
	}
	for _, a := range s.Addresses {
		a = a.Unmap()
		if n := m.setAddrs[a] + d; n > 0 {
			m.setAddrs[a] = n
		} else {
			delete(m.setAddrs, a)
		}
	}
}

func (m *Model) putAddress(name string, a api.Address) {
	m.addresses[name] = a
	h := m.byHost[a.Host]
	if h == nil {
		h = map[string]api.Address{}
		m.byHost[a.Host] = h
	}
	h[name] = a
	ip := a.IP.Unmap()
	if m.byIP[ip] == nil {
		m.byIP[ip] = map[string]bool{}
	}
	m.byIP[ip][name] = true
	if p := podOf(a); p != "" {
		if m.byPod[p] == nil {
			m.byPod[p] = map[string]bool{}
		}
		m.byPod[p][name] = true
	}
}

func (m *Model) dropAddress(name string, a api.Address) {
	delete(m.addresses, name)
	if h := m.byHost[a.Host]; h != nil {
		delete(h, name)
		if len(h) == 0 {
			delete(m.byHost, a.Host)
		}
	}
	ip := a.IP.Unmap()
	if s := m.byIP[ip]; s != nil {
		delete(s, name)
		if len(s) == 0 {
			delete(m.byIP, ip)
		}
	}
	if p := podOf(a); p != "" {
		if s := m.byPod[p]; s != nil {
			delete(s, name)
			if len(s) == 0 {
				delete(m.byPod, p)
			}
		}
	}
}

// Snapshot returns the model as a snapshot, every list sorted by name.
func (m *Model) Snapshot() api.Snapshot {
	return api.Snapshot{
		Revision:    m.rev,
		Networks:    sortedValues(m.networks),
		Hosts:       slices.Clone(m.Hosts()),
		Tenants:     sortedValues(m.tenants),
		Segments:    sortedValues(m.segments),
		Addresses:   sortedValues(m.addresses),
		Policies:    slices.Clone(m.Policies()),
		Chains:      slices.Clone(m.Chains()),
		Devices:     slices.Clone(m.Devices()),
		AddressSets: slices.Clone(m.AddressSets()),
	}
}

// patched returns lst, objs' values sorted by name except perhaps for the
// object called name, with that object as objs holds it now (put or
// gone). It modifies lst's array: the caller owns it.
func patched[T any](lst []T, objs map[string]T, name string, nameOf func(T) string) []T {
	i, found := slices.BinarySearchFunc(lst, name, func(x T, n string) int { return strings.Compare(nameOf(x), n) })
	v, ok := objs[name]
	switch {
	case ok && found:
		lst[i] = v
	case ok:
		lst = slices.Insert(lst, i, v)
	case found:
		lst = slices.Delete(lst, i, i+1)
	}
	return lst
}

func sortedValues[T any](objs map[string]T) []T {
	if len(objs) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(objs))
	out := make([]T, len(keys))
	for i, k := range keys {
		out[i] = objs[k]
	}
	return out
}

// Problems are the objects the indexes skipped or corrected (an invalid
// network, two tenants with one ID, ...), sorted. They never stop the rest
// from being used.
func (m *Model) Problems() []string {
	out := slices.Concat(m.netIdx().problems, m.tenantIdx().problems)
	for _, d := range m.dups {
		out = append(out, d...)
	}
	slices.Sort(out)
	return out
}

// DuplicateProblems are the objects of kind the snapshot listed twice.
func (m *Model) DuplicateProblems(kind string) []string { return m.dups[kind] }

// NetworkProblems are the networks the index skipped, sorted.
func (m *Model) NetworkProblems() []string {
	return slices.Concat(m.dups[api.KindNetwork], m.netIdx().problems)
}

// Networks returns the usable networks, sorted by name.
func (m *Model) Networks() []*Network { return m.netIdx().list }

// Network returns the usable network called name, or nil.
func (m *Model) Network(name string) *Network { return m.netIdx().byName[name] }

func (m *Model) netIdx() *netIndex {
	if m.nets != nil {
		return m.nets
	}
	ix := &netIndex{byName: map[string]*Network{}}
	for _, n := range sortedValues(m.networks) {
		if err := api.ValidateName("network", n.Name); err != nil {
			ix.problems = append(ix.problems, fmt.Sprintf("%v; skipped", err)) // the name goes into nft identifiers
			continue
		}
		p, err := plan.Parse(n.Spec())
		if err != nil {
			ix.problems = append(ix.problems, err.Error()) // plan errors name the network
			continue
		}
		if err := api.CheckPool(p.Prefix()); err != nil {
			ix.problems = append(ix.problems, fmt.Sprintf("network %q: %v; skipped", n.Name, err))
			continue
		}
		nw := &Network{Network: n, Plan: p}
		if len(n.Tenants) > 0 {
			nw.allowed = map[string]bool{}
			for _, t := range n.Tenants {
				nw.allowed[t] = true
			}
		}
		ix.list = append(ix.list, nw)
		ix.byName[n.Name] = nw
	}
	m.nets = ix
	return ix
}

// The lists the model returns are shared: callers must not modify them.

// Hosts returns every host, sorted by name.
func (m *Model) Hosts() []api.Host {
	if m.hostList == nil {
		m.hostList = sortedValues(m.hosts)
	}
	return m.hostList
}

// Host returns the host called name.
func (m *Model) Host(name string) (api.Host, bool) {
	h, ok := m.hosts[name]
	return h, ok
}

// Tenants returns the usable tenants sorted by ID: names valid, IDs
// unique (the first by name keeps a shared ID), an unknown isolation
// corrected to api.IsolationTenant.
func (m *Model) Tenants() []api.Tenant { return m.tenantIdx().list }

// Tenant returns the usable tenant called name.
func (m *Model) Tenant(name string) (api.Tenant, bool) {
	ix := m.tenantIdx()
	i, ok := ix.byName[name]
	if !ok {
		return api.Tenant{}, false
	}
	return ix.list[i], true
}

// Segments returns tenant's usable segments sorted by ID.
func (m *Model) Segments(tenant string) []api.Segment { return m.tenantIdx().segments[tenant] }

// Segment returns tenant's usable segment called name.
func (m *Model) Segment(tenant, name string) (api.Segment, bool) {
	for _, s := range m.Segments(tenant) {
		if s.Name == name {
			return s, true
		}
	}
	return api.Segment{}, false
}

func (m *Model) tenantIdx() *tenantIndex {
	if m.tens != nil {
		return m.tens
	}
	ix := &tenantIndex{byName: map[string]int{}, segments: map[string][]api.Segment{}}
	problem := func(format string, args ...any) { ix.problems = append(ix.problems, fmt.Sprintf(format, args...)) }
	tenants := sortedValues(m.tenants)
	slices.SortStableFunc(tenants, func(a, b api.Tenant) int { return cmp.Compare(a.ID, b.ID) })
	seenID := map[uint64]string{}
	for _, t := range tenants {
		if err := api.ValidateName("tenant", t.Name); err != nil {
			problem("%v; skipped", err) // the name goes into nft comments
			continue
		}
		if other, dup := seenID[t.ID]; dup {
			problem("tenant %q: id %d is also tenant %q's; skipped", t.Name, t.ID, other)
			continue
		}
		switch t.Isolation {
		case "", api.IsolationTenant, api.IsolationSegment, api.IsolationNone:
		default:
			problem("tenant %q: unknown isolation %q; enforcing %q", t.Name, t.Isolation, api.IsolationTenant)
			t.Isolation = api.IsolationTenant
		}
		seenID[t.ID] = t.Name
		ix.byName[t.Name] = len(ix.list)
		ix.list = append(ix.list, t)
	}
	for _, s := range sortedValues(m.segments) {
		if err := api.ValidateName("segment", s.Name); err != nil {
			problem("tenant %q: %v; skipped", s.Tenant, err)
			continue
		}
		if _, known := ix.byName[s.Tenant]; !known {
			problem("segment %q of tenant %q: unknown tenant; skipped", s.Name, s.Tenant)
			continue
		}
		ix.segments[s.Tenant] = append(ix.segments[s.Tenant], s)
	}
	for t, ss := range ix.segments {
		slices.SortStableFunc(ss, func(a, b api.Segment) int { return cmp.Compare(a.ID, b.ID) })
		out := ss[:0]
		for i, s := range ss {
			if i > 0 && ss[i-1].ID == s.ID {
				problem("segment %q of tenant %q: id %d is also segment %q's; skipped", s.Name, t, s.ID, ss[i-1].Name)
				continue
			}
			out = append(out, s)
		}
		ix.segments[t] = out
	}
	m.tens = ix
	return ix
}

// TenantMatch is the masked match of a tenant (segment "") or of a
// tenant's segment in network n; ok is false when they do not exist, n
// does not admit the tenant or the IDs do not fit n's plan.
func (m *Model) TenantMatch(n *Network, tenant, segment string) (plan.Match, bool) {
	t, ok := m.Tenant(tenant)
	if !ok || !n.Admits(tenant) {
		return plan.Match{}, false
	}
	if segment == "" {
		x, err := n.Plan.TenantMatch(t.ID)
		return x, err == nil
	}
	s, ok := m.Segment(tenant, segment)
	if !ok {
		return plan.Match{}, false
	}
	x, err := n.Plan.SegmentMatch(t.ID, s.ID)
	return x, err == nil
}

// Address returns the address called name.
func (m *Model) Address(name string) (api.Address, bool) {
	a, ok := m.addresses[name]
	return a, ok
}

// AddressesOn returns host's addresses, sorted by name.
func (m *Model) AddressesOn(host string) []api.Address { return sortedValues(m.byHost[host]) }

// AddressAt returns the address holding ip (the first by name if several
// do).
func (m *Model) AddressAt(ip netip.Addr) (api.Address, bool) {
	names := m.byIP[ip.Unmap()]
	if len(names) == 0 {
		return api.Address{}, false
	}
	return m.addresses[slices.Min(slices.Collect(maps.Keys(names)))], true
}

// Policies returns every policy, sorted by name. The list is the
// model's: callers must not modify it, and the model never does (a policy
// event makes the next call return a new list).
func (m *Model) Policies() []api.Policy {
	if m.policyLst != nil && m.policyLstGen == m.policyGen {
		return m.policyLst
	}
	if changed, ok := m.PolicyChanges(m.policyLstGen); m.policyLst != nil && ok && len(changed) <= policyPatchMax {
		// A few policies changed: a copy of the list with them put in
		// place instead of sorting every name again (3 ms at 10,000
		// policies).
		lst := make([]api.Policy, len(m.policyLst), len(m.policyLst)+len(changed))
		copy(lst, m.policyLst)
		for _, name := range changed {
			lst = patched(lst, m.policies, name, func(p api.Policy) string { return p.Name })
		}
		if len(lst) == 0 {
			lst = nil
		}
		m.policyLst = lst
	} else {
		m.policyLst = sortedValues(m.policies)
	}
	m.policyLstGen = m.policyGen
	return m.policyLst
}

// policyPatchMax is the most policies changed since the last list that
// Policies puts in place in a copy rather than sorting them all again.
const policyPatchMax = 64

// policyLogMax bounds the policy journal: past it, its older half is
// dropped (a consumer further behind reads the whole list again).
const policyLogMax = 4096

// PolicyGeneration counts the policy events the model applied: it changes
// when, and only when, a policy is put or deleted. With PolicyChanges it
// lets a consumer that keeps what it derived from the policies (hoststate's
// Compiler) look at the policies that changed only. A new model (New)
// starts again from 0: a consumer must also tell models apart.
func (m *Model) PolicyGeneration() uint64 { return m.policyGen }

// PolicyChanges returns the names of the policies put or deleted since
// the generation since (PolicyGeneration at that time), in the order of
// the events, a name possibly more than once; ok is false when the model
// no longer remembers that far back (the caller must then compare every
// policy). Look a name up with Policy. The slice is the model's: do not
// modify or keep it.
func (m *Model) PolicyChanges(since uint64) (names []string, ok bool) {
	if since < m.policyBase || since > m.policyGen {
		return nil, false
	}
	return m.policyLog[since-m.policyBase:], true
}

// Policy returns the policy of that name.
func (m *Model) Policy(name string) (api.Policy, bool) {
	p, ok := m.policies[name]
	return p, ok
}

// PolicyCount returns the number of policies.
func (m *Model) PolicyCount() int { return len(m.policies) }

// logPolicy records an event on policy name in the journal.
func (m *Model) logPolicy(name string) {
	if len(m.policyLog) >= policyLogMax {
		drop := len(m.policyLog) / 2
		m.policyLog = slices.Clone(m.policyLog[drop:])
		m.policyBase += uint64(drop)
	}
	m.policyLog = append(m.policyLog, name)
	m.policyGen++
}

// Chains returns every service chain, sorted by name.
func (m *Model) Chains() []api.Chain {
	if m.chainLst == nil {
		m.chainLst = sortedValues(m.chains)
	}
	return m.chainLst
}

// Devices returns every fabric device, sorted by name.
func (m *Model) Devices() []api.Device {
	if m.deviceLst == nil {
		m.deviceLst = sortedValues(m.devices)
	}
	return m.deviceLst
}

// AddressSets returns every address set, sorted by name.
func (m *Model) AddressSets() []api.AddressSet {
	if m.setLst == nil {
		m.setLst = sortedValues(m.sets)
	}
	return m.setLst
}

// AddressSet returns the address set of that name.
func (m *Model) AddressSet(name string) (api.AddressSet, bool) {
	s, ok := m.sets[name]
	return s, ok
}

// AddressSetMembers returns the members of the address set of that name:
// its addresses and the addresses allocated for its pods (those whose
// attributes name one of s.Pods), unmapped, sorted and distinct. A set
// that does not exist has none.
//
// A set that lists pods is its writer's word on which pods are members:
// an address of its Addresses that is now allocated for a pod it does
// not list (the address of a deleted member, released and given to
// another pod before the writer caught up) is not a member. Addresses no
// pod holds (host-network pods, other CNIs, not allocated) are.
func (m *Model) AddressSetMembers(name string) []netip.Addr {
	s, ok := m.sets[name]
	if !ok {
		return nil
	}
	out := make([]netip.Addr, 0, len(s.Addresses)+len(s.Pods))
	var pods map[string]bool
	if len(s.Pods) > 0 {
		pods = make(map[string]bool, len(s.Pods))
		for _, p := range s.Pods {
			pods[p] = true
		}
	}
	for _, a := range s.Addresses {
		a = a.Unmap()
		if pods == nil || m.heldByListed(a, pods) {
			out = append(out, a)
		}
	}
	for _, p := range s.Pods {
		for n := range m.byPod[p] {
			out = append(out, m.addresses[n].IP.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// heldByListed reports whether ip is held by no pod's address, or by one
// of a pod in pods.
func (m *Model) heldByListed(ip netip.Addr, pods map[string]bool) bool {
	held := false
	for n := range m.byIP[ip] {
		if p := podOf(m.addresses[n]); p != "" {
			if pods[p] {
				return true
			}
			held = true
		}
	}
	return !held
}

// PodAddresses returns the addresses allocated for the pod
// "namespace/name" (by their attributes), sorted by name.
func (m *Model) PodAddresses(pod string) []api.Address {
	names := slices.Sorted(maps.Keys(m.byPod[pod]))
	out := make([]api.Address, len(names))
	for i, n := range names {
		out[i] = m.addresses[n]
	}
	return out
}

// HasChains reports whether any service chain exists (the firewall then
// depends on where service functions run, so on addresses).
func (m *Model) HasChains() bool { return len(m.chains) > 0 }
