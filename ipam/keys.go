package ipam

import (
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// keys is the etcd key layout. Objects (whose changes are watch events):
//
//	networks/NET            api.Network
//	hosts/HOST              api.Host, with its slots
//	tenants/TENANT          api.Tenant
//	segments/TENANT/SEG     api.Segment
//	addresses/NAME          api.Address
//	policies/NAME           api.Policy
//	devices/NAME            api.Device (device.go)
//	chains/NAME             api.Chain (chain.go; claim chainids/ID)
//	addresssets/NAME        api.AddressSet (addressset.go)
//
// Records that are not objects of the watch stream or the snapshot:
//
//	pods/NAMESPACE/NAME     api.Pod (pod.go)
//
// Claims (each makes one id or address unique; created with CreateRevision==0):
//
//	hostips/IP                    host name (for its ip and its ip6)
//	tenantids/ID                  tenant name
//	segmentids/TENANT/ID          segment name
//	groups/NET/LABEL[/LABEL...]   groupRec: a topology group's id and host count
//	groupids/NET/ID[.ID...]       label path of the group with that id path
//	slotids/NET/LOC               host name at that location (LOC = plan.Loc.String())
//	ips/NET/HEX                   address name; HEX is the fixed-width address,
//	                              so any CIDR of the network is one key range
type keys struct{ p string }

func (k keys) networks() string            { return k.p + "networks/" }
func (k keys) network(n string) string     { return k.p + "networks/" + n }
func (k keys) hosts() string               { return k.p + "hosts/" }
func (k keys) host(n string) string        { return k.p + "hosts/" + n }
func (k keys) hostIP(ip netip.Addr) string { return k.p + "hostips/" + ip.String() }
func (k keys) tenants() string             { return k.p + "tenants/" }
func (k keys) tenant(n string) string      { return k.p + "tenants/" + n }
func (k keys) tenantIDs() string           { return k.p + "tenantids/" }
func (k keys) tenantID(id uint64) string   { return k.p + "tenantids/" + strconv.FormatUint(id, 10) }
func (k keys) segments() string            { return k.p + "segments/" }
func (k keys) tenantSegments(t string) string {
	return k.p + "segments/" + t + "/"
}
func (k keys) segment(t, s string) string { return k.p + "segments/" + t + "/" + s }
func (k keys) segmentIDs(t string) string { return k.p + "segmentids/" + t + "/" }
func (k keys) segmentID(t string, id uint64) string {
	return k.p + "segmentids/" + t + "/" + strconv.FormatUint(id, 10)
}
func (k keys) groups(net string) string   { return k.p + "groups/" + net + "/" }
func (k keys) groupIDs(net string) string { return k.p + "groupids/" + net + "/" }
func (k keys) groupID(net string, ids []uint64) string {
	return k.p + "groupids/" + net + "/" + plan.Loc{Groups: ids[:len(ids)-1], Host: ids[len(ids)-1]}.String()
}
func (k keys) slotIDs(net string) string { return k.p + "slotids/" + net + "/" }
func (k keys) slotID(net string, l plan.Loc) string {
	return k.p + "slotids/" + net + "/" + l.String()
}
func (k keys) addresses() string       { return k.p + "addresses/" }
func (k keys) address(n string) string { return k.p + "addresses/" + n }
func (k keys) ips(net string) string   { return k.p + "ips/" + net + "/" }
func (k keys) ip(net string, a netip.Addr) string {
	return k.p + "ips/" + net + "/" + hex.EncodeToString(a.AsSlice())
}
func (k keys) policies() string       { return k.p + "policies/" }
func (k keys) policy(n string) string { return k.p + "policies/" + n }

// ipFromKey parses the address out of an ips/ key.
func ipFromKey(key string) (netip.Addr, bool) {
	i := strings.LastIndexByte(key, '/')
	b, err := hex.DecodeString(key[i+1:])
	if err != nil {
		return netip.Addr{}, false
	}
	return netip.AddrFromSlice(b)
}

// eventKind maps an object key to its kind and name; ok is false for claims.
func (k keys) eventKind(key string) (kind, name string, ok bool) {
	rest, found := strings.CutPrefix(key, k.p)
	if !found {
		return "", "", false
	}
	dir, name, found := strings.Cut(rest, "/")
	if !found {
		return "", "", false
	}
	switch dir {
	case "networks":
		return api.KindNetwork, name, true
	case "hosts":
		return api.KindHost, name, true
	case "tenants":
		return api.KindTenant, name, true
	case "segments":
		return api.KindSegment, name, true
	case "addresses":
		return api.KindAddress, name, true
	case "policies":
		return api.KindPolicy, name, true
	case "devices":
		return api.KindDevice, name, true
	case "chains":
		return api.KindChain, name, true
	case "addresssets":
		return api.KindAddressSet, name, true
	}
	return "", "", false
}
