// Package cni is the CNI plugin's logic, run inside romana-agent: it gets
// an endpoint address from romanad and wires the container to its host with
// a veth pair, a /32 inside and a host route outside (the routed-endpoint
// scheme shared with the agent). The romana-cni binary is only a forwarder
// (package forward) to the agent's socket, which server.go serves.
//
// The pure parts (configuration, CNI_ARGS, names, results, GC selection and
// error codes) live in this file; the plugin commands in plugin.go, their
// dispatch (what skel does in a plugin binary) in dispatch.go, and the
// netlink side effects in link_linux.go.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/romana/romana/api"
	"github.com/romana/romana/cni/forward"
	"github.com/romana/romana/model"
)

// Gateway is the endpoint's default gateway (package model defines the
// scheme). The agent owns a dummy interface on every host holding
// Gateway/32; endpoints reach it on-link.
var Gateway = model.Gateway

// Gateway6 is the IPv6 endpoints' gateway, a link-local address the
// plugin puts on the host side of each IPv6 endpoint's veth (model.Gateway6).
var Gateway6 = model.Gateway6

// FailPoints are the ADD steps after which a test can inject a failure
// (Plugin.failAt), to prove that a failed ADD leaks nothing.
var FailPoints = []string{"after-allocate", "after-veth", "after-container", "after-host-route"}

// Attrs keys the plugin sets on every address it allocates. AttrOwner and
// AttrNetwork mark the address as this plugin's for GC.
const (
	AttrOwner       = "owner"
	AttrNetwork     = "cniNetwork"
	AttrContainerID = "containerID"
	AttrIfName      = "ifName"
	AttrNetNS       = "netns"

	// Owner is the value of AttrOwner.
	Owner = "romana-cni"
)

// DefaultSegment is used when nothing names a segment.
const DefaultSegment = "default"

// NetConf is the plugin's network configuration (stdin). Keys of older
// plugins that talked to romanad themselves ("server", "credential",
// "host") are ignored: the agent's own identity and host name are used.
type NetConf struct {
	types.PluginConf
	// AgentSocket is the agent's CNI socket (default
	// forward.DefaultSocket); the romana-cni binary reads it, the agent
	// ignores it.
	AgentSocket string `json:"agentSocket,omitempty"`
	// Network is the romanad network to allocate from ("" lets romanad pick).
	Network string `json:"network,omitempty"`
	// Networks, instead of Network, names one or two romanad networks to
	// allocate from, one address each, on the one interface: an IPv4 and
	// an IPv6 network make a dual-stack endpoint (["pods4", "pods6"]).
	// The tenant and segment are the same in both, and so are their ids
	// (romanad numbers tenants and segments once, for every network).
	// Two networks of one family are refused at ADD.
	Networks []string `json:"networks,omitempty"`
	// Tenant and Segment are the defaults when the invocation names none.
	Tenant  string `json:"tenant,omitempty"`
	Segment string `json:"segment,omitempty"`
	MTU     int    `json:"mtu,omitempty"`
	// Kubernetes asks romanad to resolve the tenant and segment of a pod's
	// endpoint from the pod's record (written by romana-kube), named by
	// CNI_ARGS K8S_POD_NAMESPACE and K8S_POD_NAME. A tenant or segment
	// named explicitly in args (args.cni.romana, ROMANA_TENANT,
	// ROMANA_SEGMENT) still wins; "tenant" and "segment" of the config are
	// not used then. Without both pod variables nothing changes.
	Kubernetes bool `json:"kubernetes,omitempty"`
	// Args holds per-invocation arguments (CNI conventions "args" field).
	Args *ConfArgs `json:"args,omitempty"`
}

// ConfArgs is the "args" field of the config: {"cni": {"romana": {...}}}.
type ConfArgs struct {
	CNI struct {
		Romana struct {
			Tenant  string `json:"tenant,omitempty"`
			Segment string `json:"segment,omitempty"`
		} `json:"romana"`
	} `json:"cni"`
}

// LoadConf parses and validates the network config. Errors are
// *types.Error with code ErrDecodingFailure or ErrInvalidNetworkConfig.
func LoadConf(stdin []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network config", err.Error())
	}
	for _, f := range []struct{ kind, v string }{{"network", c.Network}, {"tenant", c.Tenant}, {"segment", c.Segment}} {
		if f.v == "" {
			continue
		}
		if err := api.ValidateName(f.kind, f.v); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network config: "+err.Error(), "")
		}
	}
	if c.Network != "" && len(c.Networks) > 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `invalid network config: set "network" or "networks", not both`, "")
	}
	if len(c.Networks) > 2 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`invalid network config: "networks" names %d networks; at most two (an IPv4 and an IPv6 one)`, len(c.Networks)), "")
	}
	for i, n := range c.Networks {
		if err := api.ValidateName("network", n); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network config: networks[%d]: %v", i, err), "")
		}
		if slices.Contains(c.Networks[:i], n) {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network config: networks[%d]: %q is listed twice", i, n), "")
		}
	}
	if c.MTU == 0 {
		c.MTU = 1500
	}
	if c.MTU < 68 || c.MTU > 65535 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network config: mtu %d out of range 68-65535", c.MTU), "")
	}
	return &c, nil
}

// ParseCNIArgs parses CNI_ARGS ("K1=V1;K2=V2"). Empty pairs are skipped; a
// pair without '=' or with an empty key is an error.
func ParseCNIArgs(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("CNI_ARGS %q: pair %q is not KEY=VALUE", s, pair)
		}
		out[k] = v
	}
	return out, nil
}

// Target is where an endpoint's address comes from: a tenant and segment,
// with where each was found (for error messages), or a Kubernetes pod
// ("namespace/name") whose record at romanad names them.
type Target struct {
	Tenant, TenantFrom   string
	Segment, SegmentFrom string
	// Pod is "namespace/name" in Kubernetes mode (NetConf.Kubernetes).
	// With Tenant and Segment empty, romanad resolves both from the pod's
	// record; either way the address is marked with the pod.
	Pod string
	// PodUID is the pod's UID (CNI_ARGS K8S_POD_UID) when Pod is set and
	// the runtime gives it: romanad allocates only once the pod's record
	// is of this pod, not of an earlier one of the same name.
	PodUID string
}

// Resolve picks the tenant and segment of an invocation. Each is taken from
// the first source that sets it: the config's args.cni.romana, CNI_ARGS
// ROMANA_TENANT/ROMANA_SEGMENT, (tenant only) K8S_POD_NAMESPACE, then the
// config's "tenant"/"segment"; the segment finally defaults to "default".
// A missing or malformed tenant is an ErrInvalidNetworkConfig error.
//
// In Kubernetes mode (c.Kubernetes) with K8S_POD_NAMESPACE and
// K8S_POD_NAME set, the target names the pod, and only an explicit tenant
// or segment (args.cni.romana, ROMANA_TENANT, ROMANA_SEGMENT) is taken:
// romanad fills in what is left empty from the pod's record, written by
// romana-kube (the namespace's tenant, the pod's segment label), instead
// of K8S_POD_NAMESPACE and the config's defaults.
func Resolve(c *NetConf, cniArgs string) (Target, error) {
	args, err := ParseCNIArgs(cniArgs)
	if err != nil {
		return Target{}, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	var ca ConfArgs
	if c.Args != nil {
		ca = *c.Args
	}
	type src struct{ v, from string }
	first := func(ss ...src) (string, string) {
		for _, s := range ss {
			if s.v != "" {
				return s.v, s.from
			}
		}
		return "", ""
	}
	var t Target
	if c.Kubernetes && args["K8S_POD_NAMESPACE"] != "" && args["K8S_POD_NAME"] != "" {
		t.Pod = args["K8S_POD_NAMESPACE"] + "/" + args["K8S_POD_NAME"]
		if _, _, err := api.ParsePodKey(t.Pod); err != nil {
			return Target{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS K8S_POD_NAMESPACE/K8S_POD_NAME: %v", err), "")
		}
		if uid := args["K8S_POD_UID"]; uid != "" && len(uid) <= 128 {
			t.PodUID = uid
		}
		fromPod := "pod " + t.Pod + "'s record at romanad"
		t.Tenant, t.TenantFrom = first(
			src{ca.CNI.Romana.Tenant, "config args.cni.romana.tenant"},
			src{args["ROMANA_TENANT"], "CNI_ARGS ROMANA_TENANT"})
		t.Segment, t.SegmentFrom = first(
			src{ca.CNI.Romana.Segment, "config args.cni.romana.segment"},
			src{args["ROMANA_SEGMENT"], "CNI_ARGS ROMANA_SEGMENT"})
		if t.Tenant == "" {
			t.TenantFrom = fromPod
		}
		if t.Segment == "" {
			t.SegmentFrom = fromPod
		}
		for _, f := range []struct{ kind, v, from string }{{"tenant", t.Tenant, t.TenantFrom}, {"segment", t.Segment, t.SegmentFrom}} {
			if f.v == "" {
				continue
			}
			if err := api.ValidateName(f.kind, f.v); err != nil {
				return Target{}, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("%s from %s: %v", f.kind, f.from, err), "")
			}
		}
		return t, nil
	}
	t.Tenant, t.TenantFrom = first(
		src{ca.CNI.Romana.Tenant, "config args.cni.romana.tenant"},
		src{args["ROMANA_TENANT"], "CNI_ARGS ROMANA_TENANT"},
		src{args["K8S_POD_NAMESPACE"], "CNI_ARGS K8S_POD_NAMESPACE"},
		src{c.Tenant, `config "tenant"`})
	t.Segment, t.SegmentFrom = first(
		src{ca.CNI.Romana.Segment, "config args.cni.romana.segment"},
		src{args["ROMANA_SEGMENT"], "CNI_ARGS ROMANA_SEGMENT"},
		src{c.Segment, `config "segment"`},
		src{DefaultSegment, "default"})
	if t.Tenant == "" {
		return Target{}, types.NewError(types.ErrInvalidNetworkConfig,
			`no tenant for this endpoint: set ROMANA_TENANT in CNI_ARGS, args.cni.romana.tenant or "tenant" in the network config (Kubernetes: K8S_POD_NAMESPACE)`, "")
	}
	if err := api.ValidateName("tenant", t.Tenant); err != nil {
		return Target{}, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("tenant from %s: %v", t.TenantFrom, err), "")
	}
	if err := api.ValidateName("segment", t.Segment); err != nil {
		return Target{}, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("segment from %s: %v", t.SegmentFrom, err), "")
	}
	return t, nil
}

// AllocationName is the romanad idempotency key of an attachment (of
// its first address, for a dual-stack one).
func AllocationName(containerID, ifName string) string { return containerID + ":" + ifName }

// AllocationNames are the romanad names of an attachment's addresses, one
// per network it allocates from (at least one: romanad may pick the
// network): AllocationName, then AllocationName with ":1" (a container
// id holds no colon). DEL releases both, whatever the config says.
func AllocationNames(containerID, ifName string, networks int) []string {
	base := AllocationName(containerID, ifName)
	out := []string{base}
	for i := 1; i < networks; i++ {
		out = append(out, fmt.Sprintf("%s:%d", base, i))
	}
	return out
}

// Targets are the networks an ADD allocates from, in order: "networks",
// or "network" ("" lets romanad pick).
func (c *NetConf) Targets() []string {
	if len(c.Networks) > 0 {
		return c.Networks
	}
	return []string{c.Network}
}

// CheckFamilies verifies an attachment's addresses: at most one of each
// family.
func CheckFamilies(addrs []netip.Addr) error {
	var n4, n6 int
	for _, a := range addrs {
		if a.Unmap().Is4() {
			n4++
		} else {
			n6++
		}
	}
	if n4 > 1 || n6 > 1 {
		return fmt.Errorf("addresses %v: want at most one IPv4 and one IPv6 address; name networks of different families", addrs)
	}
	return nil
}

// vethRE matches the names VethName makes; the agent's "romana-gw" does
// not match it.
var vethRE = regexp.MustCompile(`^romana[0-9a-f]{9}$`)

// VethName is the host-side veth of an allocation: "romana" and the first 9
// hex digits of the name's SHA-256 (15 characters, the kernel's limit).
// The forwarder computes the same name (forward.VethName) to tell whether
// a DEL has anything to do while the agent is down.
func VethName(allocation string) string { return forward.VethName(allocation) }

// IsVethName reports whether a link name has the form VethName produces.
func IsVethName(name string) bool { return vethRE.MatchString(name) }

// GatewayFor is the gateway of an endpoint address: Gateway for IPv4,
// Gateway6 (link-local) for IPv6.
func GatewayFor(ip netip.Addr) netip.Addr {
	if ip.Unmap().Is4() {
		return Gateway
	}
	return Gateway6
}

// BuildResult is the ADD result: the host and container interfaces, each
// address (/32 or /128) with its gateway, one default route per family,
// and DNS when configured.
func BuildResult(ips []netip.Addr, host, cont *current.Interface, dns types.DNS) *current.Result {
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{host, cont},
		DNS:        dns,
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		gw := net.IP(GatewayFor(ip).AsSlice())
		r.IPs = append(r.IPs, &current.IPConfig{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())},
			Gateway:   gw,
		})
		r.Routes = append(r.Routes, &types.Route{
			Dst: net.IPNet{IP: net.IP(netip.IPv6Unspecified().AsSlice()), Mask: net.CIDRMask(0, 128)},
			GW:  gw,
		})
		if ip.Is4() {
			r.Routes[len(r.Routes)-1].Dst = net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		}
	}
	return r
}

// SelectGC returns the addresses GC must release: those this plugin
// allocated for CNI network netName (by their Attrs) whose attachment is not
// in valid. The result is sorted by name.
func SelectGC(addrs []api.Address, netName string, valid []types.GCAttachment) []api.Address {
	keep := map[types.GCAttachment]bool{}
	for _, v := range valid {
		keep[v] = true
	}
	var out []api.Address
	for _, a := range addrs {
		if a.Attrs[AttrOwner] != Owner || a.Attrs[AttrNetwork] != netName {
			continue
		}
		if keep[types.GCAttachment{ContainerID: a.Attrs[AttrContainerID], IfName: a.Attrs[AttrIfName]}] {
			continue
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// StaleVeths returns the links (from a listing taken BEFORE addrs was read)
// that look like ours but belong to no address of this host, in any CNI
// network: leftovers of a crashed plugin. Sorted.
func StaleVeths(links []string, addrs []api.Address) []string {
	owned := map[string]bool{}
	for _, a := range addrs {
		owned[VethName(a.Name)] = true
		if a.Interface != "" {
			owned[a.Interface] = true
		}
	}
	var out []string
	for _, l := range links {
		if IsVethName(l) && !owned[l] {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// ErrCode maps an error from romanad (or the way to it) to a CNI error code:
// a request romanad rejects as invalid or naming something unknown is a
// config problem (7); an unreachable or unavailable romanad, or a conflict
// that a retry may resolve, is "try again later" (11); the rest is 999.
func ErrCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	switch api.ReasonOf(err) {
	case api.ReasonInvalid, api.ReasonNotFound:
		return types.ErrInvalidNetworkConfig
	case api.ReasonUnavailable, api.ReasonConflict:
		return types.ErrTryAgainLater
	case "":
		var ne net.Error
		var oe *net.OpError
		if errors.As(err, &oe) || errors.As(err, &ne) {
			return types.ErrTryAgainLater
		}
	}
	return types.ErrInternal
}

// AsCNIError turns err into a *types.Error (kept as is when it already is
// one) with message msg: err's text.
func AsCNIError(err error, msg string) *types.Error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		if msg == "" {
			return te
		}
		return types.NewError(te.Code, msg+": "+te.Msg, te.Details)
	}
	if msg != "" {
		return types.NewError(ErrCode(err), msg+": "+err.Error(), "")
	}
	return types.NewError(ErrCode(err), err.Error(), "")
}
