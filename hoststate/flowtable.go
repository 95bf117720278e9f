package hoststate

import (
	"fmt"
	"slices"
	"strings"
)

// FlowtableName is the software flowtable of table inet romana
// (Options.Flowtable).
const FlowtableName = "fastpath"

// Flowtable is an nftables software flowtable: connections the forward
// chain offloads to it ("flow add") are forwarded, from their next packet
// on, by a lookup at the ingress hook of the devices listed, skipping the
// forward hook (every table's forward chain, conntrack's per-packet
// window tracking) until the connection ends, idles out or the flowtable
// is deleted. A packet is taken by the fast path only when it arrives on
// the same device as the connection's packets did when offloaded (the
// lookup key holds the input interface), so anti-spoofing by reverse path
// still holds for it.
//
// Devices are sorted. Only devices that exist may be listed (the kernel
// refuses a hook on a missing device); the firewall adapter keeps the
// live device list a superset of Devices without replacing the table.
type Flowtable struct {
	Name    string
	Devices []string
	// Pending are endpoint devices that do not exist yet (their routes
	// wait for them too): not listed, and not part of the nft text.
	Pending []string
}

func (ft Flowtable) String() string {
	var quoted []string
	for _, d := range ft.Devices {
		quoted = append(quoted, fmt.Sprintf("%q", d))
	}
	devices := ""
	if len(quoted) > 0 {
		devices = fmt.Sprintf("\t\tdevices = { %s }\n", strings.Join(quoted, ", "))
	}
	return fmt.Sprintf("flowtable %s {\n\t\thook ingress priority filter\n%s\t}\n", ft.Name, devices)
}

// flowAddComment marks the forward chain's offload rules.
const flowAddComment = "fast path: offload established connections"

// IsFlowAdd reports whether a rule of the forward chain is an offload rule
// of the flowtable.
func IsFlowAdd(r Rule) bool { return strings.HasSuffix(r.Expr, " flow add @"+FlowtableName) }

// addFlowtable adds the flowtable and its offload rules to rs: for each
// network with a block on this host, an established TCP or UDP connection
// from or to the block is offloaded, in the forward chain right before
// "ct state established,related accept". Only established connections are
// offloaded, and a connection is established only if its first packet
// went through the policy chains and isolation and was accepted (a
// dropped first packet leaves no confirmed conntrack entry; the kernel
// offloads only confirmed ones, and TCP only once its handshake is done),
// so the flowtable holds exactly the connections that rule accepts
// today. New connections meet the policies as before.
//
// Devices are the endpoint veths of this host's endpoint routes and the
// uplink (the links holding the host's underlay address). With an
// underlay known, devices that do not exist yet are left out and
// listed as Pending; without one (tests of the snapshot alone), every
// endpoint route's device is listed and there is no uplink.
func addFlowtable(rs *Ruleset, in *inputs, routes []Route) {
	fwd := rs.Chain(ChainForward)
	if fwd == nil {
		return
	}
	var devs, pending []string
	for _, r := range routes {
		if r.Dev == "" {
			continue
		}
		if in.underlay != nil {
			if _, ok := in.underlay.links[r.Dev]; !ok {
				pending = append(pending, r.Dev)
				continue
			}
		}
		devs = append(devs, r.Dev)
	}
	devs = append(devs, uplinks(in)...)
	slices.Sort(devs)
	devs = slices.Compact(devs)
	slices.Sort(pending)
	rs.Flowtables = []Flowtable{{Name: FlowtableName, Devices: devs, Pending: pending}}
	var offload []Rule
	for _, n := range in.networks {
		if !n.mine.IsValid() {
			continue
		}
		proto, _ := family(n)
		for _, dir := range []string{"saddr", "daddr"} {
			offload = append(offload, Rule{
				Expr:    fmt.Sprintf("ct state established %s %s %s meta l4proto { tcp, udp } flow add @%s", proto, dir, n.mine, FlowtableName),
				Comment: flowAddComment,
			})
		}
	}
	i := slices.IndexFunc(fwd.Rules, func(r Rule) bool { return r.Expr == "ct state established,related accept" })
	if i < 0 {
		i = len(fwd.Rules)
	}
	fwd.Rules = slices.Concat(fwd.Rules[:i:i], offload, fwd.Rules[i:])
}

// uplinks are the links holding this host's underlay address: what
// packets from and to other hosts cross (none when the underlay is
// unknown).
func uplinks(in *inputs) []string {
	if in.underlay == nil || !in.host.IP.IsValid() {
		return nil
	}
	var out []string
	for name, l := range in.underlay.links {
		for _, a := range l.Addrs {
			if a.Addr().Unmap() == in.host.IP.Unmap() {
				out = append(out, name)
			}
		}
	}
	return out
}
