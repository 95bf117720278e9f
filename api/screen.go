package api

import (
	"net/netip"
	"regexp"
	"strings"
)

// Screening: what may be a pool (a network's CIDR), a host's underlay
// address and an endpoint's interface. romanad refuses anything else with
// 400; the agent (package hoststate) applies the same rules to what it reads
// from a snapshot, so that a bad store cannot get past them either. These
// functions are the one owner of each rule.

// Pool size limits: a pool is at most a /8 in IPv4 (the size of 10.0.0.0/8,
// the largest private range) and at most a /32 in IPv6 (the smallest block
// a registry allocates to an operator: anything wider necessarily holds
// other organisations' addresses). Every route and firewall match of a
// network covers its whole pool, so a wider pool would capture traffic
// that is not Romana's.
const (
	MinPoolBits4 = 8
	MinPoolBits6 = 32
)

// special is a range no pool may overlap and no host or next hop may be in.
type special struct {
	prefix netip.Prefix
	what   string
}

// specials are the ranges with a fixed meaning that Romana may neither
// allocate from nor route to: a host's routes and its endpoints' gateway
// (169.254.1.1) depend on them.
var specials = []special{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" 0.0.0.0/8 (the unspecified address)`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback 127.0.0.0/8"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local 169.254.0.0/16 (the endpoints' gateway 169.254.1.1)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast 224.0.0.0/4"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved 240.0.0.0/4 (the broadcast address 255.255.255.255)"},
	{netip.MustParsePrefix("::/128"), "the unspecified address ::"},
	{netip.MustParsePrefix("::1/128"), "loopback ::1"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped ::ffff:0:0/96"},
	{netip.MustParsePrefix("fe80::/10"), "link-local fe80::/10"},
	{netip.MustParsePrefix("ff00::/8"), "multicast ff00::/8"},
}

// SpecialRange returns the special range p overlaps, described, if any.
func SpecialRange(p netip.Prefix) (string, bool) {
	for _, s := range specials {
		if s.prefix.Overlaps(p) {
			return s.what, true
		}
	}
	return "", false
}

// CheckPool reports why p may not be a pool: too wide, or overlapping a
// special range. The message names p. p must be valid and masked (plan.Parse
// ensures both).
func CheckPool(p netip.Prefix) error {
	bits, fam := MinPoolBits4, "IPv4"
	if p.Addr().Is6() {
		bits, fam = MinPoolBits6, "IPv6"
	}
	if p.Bits() < bits {
		return Errorf(ReasonInvalid, "pool %s is too wide: an %s pool may be at most a /%d (%s)", p, fam, bits, widest(p.Addr().Is6()))
	}
	if what, ok := SpecialRange(p); ok {
		return Errorf(ReasonInvalid, "pool %s overlaps %s, which no pool may use", p, what)
	}
	return nil
}

func widest(v6 bool) string {
	if v6 {
		return "for example fd00:1::/32"
	}
	return "for example 10.0.0.0/8"
}

// CheckHostIP reports why ip may not be a host's underlay address (the next
// hop other hosts route its blocks through): invalid, zoned, IPv4-mapped
// IPv6, or in a special range (unspecified, loopback, link-local,
// multicast, broadcast). The caller checks that it is in no pool.
func CheckHostIP(ip netip.Addr) error {
	why := ""
	switch {
	case !ip.IsValid():
		return Errorf(ReasonInvalid, `ip "" is not a usable underlay address: missing`)
	case ip.Zone() != "":
		why = "it has a zone (an underlay address must be routable without one)"
	case ip.Is4In6():
		why = "it is IPv4-mapped (use " + ip.Unmap().String() + ")"
	default:
		if what, ok := SpecialRange(netip.PrefixFrom(ip, ip.BitLen())); ok {
			why = "it is in " + what
		}
	}
	if why != "" {
		return Errorf(ReasonInvalid, "ip %s is not a usable underlay address: %s", ip, why)
	}
	return nil
}

// Endpoint interfaces. The host side of an endpoint's veth is named by
// whoever attaches the endpoint: the CNI plugin ("romana" and 9 hex
// digits), the lab simulator and tests ("rv-..."), other tools and the
// kernel's own default ("veth..."). An address's interface must have one
// of these prefixes: the agent routes the address to it, so it must never
// be a device of the host itself (lo, eth0, a bond, a bridge, Romana's own
// gateway link). The agent also checks the device it finds (a veth without
// addresses and without a master; see docs/agent.md), since a veth of
// another plugin may have such a name too.
var (
	EndpointInterfacePrefixes = []string{"romana", "rv-", "veth"}
	// linkNameRE is what the kernel accepts as an interface name
	// (IFNAMSIZ-1 bytes, no '/', ':' or whitespace), in a safe alphabet.
	linkNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)
)

// reservedLinkPrefix starts the names of Romana's own host links (the
// gateway link "romana-gw"), which are never an endpoint's.
const reservedLinkPrefix = "romana-"

// IsLinkName reports whether name is a valid Linux interface name in the
// safe alphabet: 1-15 characters from A-Z a-z 0-9 _ . -, starting with a
// letter or digit.
func IsLinkName(name string) bool { return linkNameRE.MatchString(name) }

// CheckEndpointInterface reports why name may not be the host-side
// interface of an endpoint.
func CheckEndpointInterface(name string) error {
	if !IsLinkName(name) {
		return Errorf(ReasonInvalid, "interface %q is not a valid Linux interface name (1-15 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit)", name)
	}
	if strings.HasPrefix(name, reservedLinkPrefix) {
		return Errorf(ReasonInvalid, "interface %q: names starting with %q are Romana's own host links, never an endpoint's", name, reservedLinkPrefix)
	}
	for _, p := range EndpointInterfacePrefixes {
		if strings.HasPrefix(name, p) && len(name) > len(p) {
			return nil
		}
	}
	return Errorf(ReasonInvalid, "interface %q is not an endpoint interface: its name must start with one of %s followed by more characters (a host link such as lo or eth0 is never an endpoint's)",
		name, strings.Join(EndpointInterfacePrefixes, ", "))
}
