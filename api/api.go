// Package api holds the JSON wire types of romanad's /v1 REST API, shared by
// the server, its Go client, the CLI, the agent and the CNI plugin.
package api

import (
	"encoding/json"
	"net/netip"

	"github.com/romana/romana/plan"
)

// Isolation modes of a tenant.
const (
	IsolationTenant  = "tenant"  // only the tenant's own endpoints may connect to it (default)
	IsolationSegment = "segment" // only endpoints of the same segment may connect
	IsolationNone    = "none"    // anyone may connect
)

// Network is an address pool with its layout. Tenants, when set, restricts
// which tenants may allocate from it.
type Network struct {
	Name    string       `json:"name"`
	CIDR    string       `json:"cidr"`
	Fields  []plan.Field `json:"fields"`
	Tenants []string     `json:"tenants,omitempty"`
	// Read-only: the bits that remain for endpoints.
	EndpointBits int `json:"endpointBits,omitempty"`
}

// Spec returns the network's plan spec.
func (n Network) Spec() plan.Spec { return plan.Spec{Name: n.Name, CIDR: n.CIDR, Fields: n.Fields} }

// Host is a machine that runs endpoints. IP is its underlay address (the next
// hop other hosts use for its CIDRs). Labels name its topology groups: a
// network with a "rack" level places the host by its "rack" label.
type Host struct {
	Name string     `json:"name"`
	IP   netip.Addr `json:"ip"`
	// IP6 is an optional second underlay address, IPv6, for a host whose IP
	// is IPv4 (a dual-stack underlay): the next hop of the host's blocks in
	// IPv6 networks and its address on IPv6 BGP sessions. Use UnderlayIP.
	IP6    netip.Addr        `json:"ip6,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Read-only: where the host sits in each network.
	Slots []HostSlot `json:"slots,omitempty"`
}

// UnderlayIP returns the host's underlay address of one family (IPv4 when
// is4), unmapped: IP when it is of that family, else IP6 when it is; the
// zero Addr when the host has none. It is the one rule for which address
// carries a host's blocks of a network of that family.
func (h Host) UnderlayIP(is4 bool) netip.Addr {
	for _, a := range []netip.Addr{h.IP.Unmap(), h.IP6.Unmap()} {
		if a.IsValid() && a.Is4() == is4 {
			return a
		}
	}
	return netip.Addr{}
}

// HostSlot is a host's position and block in one network.
type HostSlot struct {
	Network string       `json:"network"`
	Loc     plan.Loc     `json:"loc"`
	CIDR    netip.Prefix `json:"cidr"`
}

// Tenant is an isolation domain. ID is assigned by romanad (smallest free:
// the id of a removed tenant is the next one given). Labels are set when
// the tenant is created and never change (re-adding a tenant returns the
// stored one, whatever labels it asks for); LabelSource names who created
// it (the Kubernetes controller removes only its own).
type Tenant struct {
	Name      string            `json:"name"`
	ID        uint64            `json:"id"`
	Isolation string            `json:"isolation,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Segment is a part of a tenant (a microservice boundary). ID is assigned by
// romanad, smallest free within the tenant.
type Segment struct {
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	ID     uint64 `json:"id"`
}

// AddressRequest asks for an address. Name is the idempotency key: the same
// name always returns the same address until it is released. Network may be
// empty when exactly one network accepts the tenant.
//
// Pod ("namespace/name") names the Kubernetes pod the address is for.
// romanad needs the pod's record (KindPod), waiting a bounded time for it
// to appear, and takes the Tenant or Segment left empty from it; the
// address gets the attributes AttrK8sNamespace and AttrK8sPod (and
// AttrK8sUID), which make it a member of the address sets that list the
// pod (AddressSet.Pods). PodUID, when given (the kubelet's K8S_POD_UID),
// must be the record's UID: a record of an earlier pod of the same name
// is waited on until the controller rewrites it.
type AddressRequest struct {
	Name      string            `json:"name"`
	Network   string            `json:"network,omitempty"`
	Host      string            `json:"host"`
	Tenant    string            `json:"tenant"`
	Segment   string            `json:"segment"`
	Interface string            `json:"interface,omitempty"`
	Attrs     map[string]string `json:"attrs,omitempty"`
	Pod       string            `json:"pod,omitempty"`
	PodUID    string            `json:"podUID,omitempty"`
}

// Address is an allocated endpoint address. Interface is the host-side
// interface the endpoint hangs off (set by the CNI plugin), which the agent
// uses for the endpoint's host route.
type Address struct {
	Name      string            `json:"name"`
	IP        netip.Addr        `json:"ip"`
	Network   string            `json:"network"`
	Host      string            `json:"host"`
	Tenant    string            `json:"tenant"`
	Segment   string            `json:"segment"`
	Interface string            `json:"interface,omitempty"`
	Attrs     map[string]string `json:"attrs,omitempty"`
}

// AddressFilter selects addresses in a list; empty fields match everything.
type AddressFilter struct {
	Network string `json:"network,omitempty"`
	Host    string `json:"host,omitempty"`
	Tenant  string `json:"tenant,omitempty"`
	Segment string `json:"segment,omitempty"`
}

// Snapshot is the whole desired state at one store revision. An agent reads
// a snapshot, then watches from Revision+1.
type Snapshot struct {
	Revision  int64     `json:"revision"`
	Networks  []Network `json:"networks"`
	Hosts     []Host    `json:"hosts"`
	Tenants   []Tenant  `json:"tenants"`
	Segments  []Segment `json:"segments"`
	Addresses []Address `json:"addresses"`
	Policies  []Policy  `json:"policies"`
	// Devices are the fabric's routers (package fabric, BGP peers of hosts).
	Devices []Device `json:"devices,omitempty"`
	// Chains steer segments' traffic through service functions (chain.go).
	Chains []Chain `json:"chains,omitempty"`
	// AddressSets are explicit sets of addresses that policies name
	// (addressset.go).
	AddressSets []AddressSet `json:"addressSets,omitempty"`
}

// Kinds of objects in events.
const (
	KindNetwork = "network"
	KindHost    = "host"
	KindTenant  = "tenant"
	KindSegment = "segment"
	KindAddress = "address"
	KindPolicy  = "policy"
)

// Event types.
const (
	EventPut    = "put"
	EventDelete = "delete"
)

// Event is one change in the watch stream. Object is the new value for a put
// and the last value for a delete. Name is the object's key within its kind
// ("tenant/segment" for segments).
//
// One store revision can change several objects (adding a network rewrites
// the hosts it places, several in one transaction): its events come in a
// row, and the last of them has RevisionEnd set. After an event with
// RevisionEnd the watcher has seen the store's state at Revision; before
// it, only part of a change. A watch resumed after an error starts from the
// revision after the last RevisionEnd received.
type Event struct {
	Revision    int64           `json:"revision"`
	Type        string          `json:"type"`
	Kind        string          `json:"kind"`
	Name        string          `json:"name"`
	Object      json.RawMessage `json:"object,omitempty"`
	RevisionEnd bool            `json:"revisionEnd,omitempty"`
}

// DecodedAddress is an address taken apart, with ids resolved to names where
// the objects exist.
type DecodedAddress struct {
	IP        netip.Addr `json:"ip"`
	Network   string     `json:"network"`
	Loc       plan.Loc   `json:"loc"`
	Host      string     `json:"host,omitempty"`
	TenantID  uint64     `json:"tenantId"`
	Tenant    string     `json:"tenant,omitempty"`
	SegmentID uint64     `json:"segmentId"`
	Segment   string     `json:"segment,omitempty"`
	Endpoint  uint64     `json:"endpoint"`
	// Allocation is the address's allocation name, if it is allocated.
	Allocation string `json:"allocation,omitempty"`
}
