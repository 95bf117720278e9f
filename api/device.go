package api

import (
	"net/netip"
	"regexp"
)

// Kinds of fabric devices.
const (
	DeviceToR   = "tor"   // a top-of-rack (leaf) router: the first hop of its hosts
	DeviceSpine = "spine" // a spine router: connects top-of-rack routers
)

// KindDevice is the kind of device objects in the watch stream.
const KindDevice = "device"

// Device is a router of the physical fabric (the underlay), described so
// that Romana can compute the routes it needs (package fabric) and tell
// each host which routers to peer with over BGP.
//
// A top-of-rack serves the hosts whose labels contain every pair of Group
// (e.g. {"rack": "r1"}); it reaches them directly on the subnets of its
// host links. A spine serves no group; it reaches top-of-rack routers
// over device links.
type Device struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // DeviceToR or DeviceSpine
	// Group selects the hosts a top-of-rack serves by label. Required for a
	// top-of-rack, empty for a spine. Naming a topology level of the
	// address plan (e.g. "rack") lets the fabric aggregate the group's
	// hosts into the group's CIDR.
	Group map[string]string `json:"group,omitempty"`
	// ASN is the device's BGP autonomous system number (0: no BGP).
	ASN uint32 `json:"asn,omitempty"`
	// RouterID is the device's loopback address, used as its BGP router id.
	RouterID netip.Addr   `json:"routerId,omitzero"`
	Links    []DeviceLink `json:"links,omitempty"`
}

// DeviceLink is one L3 link of a device.
//
// A host link (Peer "") is a subnet of the device's hosts: Local is the
// device's address on it with the subnet's length ("192.168.1.1/24"); a
// host of the device's group whose IP is in that subnet routes through
// Local and peers with it over BGP.
//
// A device link (Peer names another device) carries routes between
// routers: Local is this device's end ("172.16.0.1/31") and Remote the
// peer's end, the next hop toward it. Remote may be left out when the peer
// describes the same link from its side (its Local in the same subnet,
// Peer naming this device).
type DeviceLink struct {
	Peer   string       `json:"peer,omitempty"`
	Local  netip.Prefix `json:"local"`
	Remote netip.Addr   `json:"remote,omitzero"`
}

// Validate checks a device and returns its canonical form (addresses
// unmapped, links in the order given). Errors are ReasonInvalid.
func (d Device) Validate() (Device, error) {
	if err := ValidateName("device", d.Name); err != nil {
		return Device{}, err
	}
	out := Device{Name: d.Name, Kind: d.Kind, ASN: d.ASN, RouterID: d.RouterID.Unmap()}
	switch d.Kind {
	case DeviceToR:
		if len(d.Group) == 0 {
			return Device{}, Errorf(ReasonInvalid, "device %s: a top-of-rack needs a group: the host labels it serves, e.g. rack=r1", d.Name)
		}
	case DeviceSpine:
		if len(d.Group) > 0 {
			return Device{}, Errorf(ReasonInvalid, "device %s: a spine serves no group of hosts; remove the group", d.Name)
		}
	default:
		return Device{}, Errorf(ReasonInvalid, "device %s: kind %q: use %q or %q", d.Name, d.Kind, DeviceToR, DeviceSpine)
	}
	for k, v := range d.Group {
		if !groupKeyRE.MatchString(k) || len(k) > 253 {
			return Device{}, Errorf(ReasonInvalid, "device %s: invalid group label key %q", d.Name, k)
		}
		if !groupValueRE.MatchString(v) || v == "" {
			return Device{}, Errorf(ReasonInvalid, "device %s: group label %s: invalid value %q", d.Name, k, v)
		}
		if out.Group == nil {
			out.Group = map[string]string{}
		}
		out.Group[k] = v
	}
	if d.RouterID.IsValid() && (out.RouterID.IsUnspecified() || out.RouterID.Zone() != "") {
		return Device{}, Errorf(ReasonInvalid, "device %s: router id %s is not a usable address", d.Name, d.RouterID)
	}
	seen := map[netip.Addr]bool{}
	for i, l := range d.Links {
		where := func() string {
			if l.Peer == "" {
				return "host link " + l.Local.String()
			}
			return "link to " + l.Peer
		}
		a := l.Local.Addr().Unmap()
		if !l.Local.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			return Device{}, Errorf(ReasonInvalid, "device %s: link %d: local %q: want this device's address with the link's prefix length, e.g. 192.168.1.1/24", d.Name, i, l.Local)
		}
		local := netip.PrefixFrom(a, l.Local.Bits())
		if local.Bits() == a.BitLen() {
			return Device{}, Errorf(ReasonInvalid, "device %s: %s: local %s: give the link's prefix length (a /%d holds no peer)", d.Name, where(), local, a.BitLen())
		}
		if seen[a] {
			return Device{}, Errorf(ReasonInvalid, "device %s: address %s is on two links", d.Name, a)
		}
		seen[a] = true
		nl := DeviceLink{Peer: l.Peer, Local: local}
		switch {
		case l.Peer == "":
			if d.Kind != DeviceToR {
				return Device{}, Errorf(ReasonInvalid, "device %s: %s: only a top-of-rack has host links; name the peer device", d.Name, where())
			}
			if l.Remote.IsValid() {
				return Device{}, Errorf(ReasonInvalid, "device %s: %s: a host link has no remote address (each host's own ip is its next hop)", d.Name, where())
			}
		case l.Peer == d.Name:
			return Device{}, Errorf(ReasonInvalid, "device %s: link %d: a device cannot link to itself", d.Name, i)
		default:
			if err := ValidateName("device", l.Peer); err != nil {
				return Device{}, Errorf(ReasonInvalid, "device %s: link %d: peer: %v", d.Name, i, err)
			}
			if r := l.Remote.Unmap(); r.IsValid() {
				if !local.Contains(r) || r == a {
					return Device{}, Errorf(ReasonInvalid, "device %s: %s: remote %s is not another address of the link's subnet %s", d.Name, where(), r, local.Masked())
				}
				nl.Remote = r
			}
		}
		out.Links = append(out.Links, nl)
	}
	return out, nil
}

var (
	groupKeyRE   = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	groupValueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
)
