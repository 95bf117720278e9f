package api

import (
	"net/netip"
	"strings"
)

// KindChain is the kind of chain objects in the watch stream.
const KindChain = "chain"

// Failure modes of a chain: what happens to its traffic while a service
// function is down.
const (
	FailOpen   = "fail-open"   // bypass the dead function (normal routing)
	FailClosed = "fail-closed" // drop the chain's new traffic
)

// MaxChainHops is the largest number of service functions in a chain.
const MaxChainHops = 8

// MaxChainID is the largest chain id (ids select packet marks and route
// tables on hosts; see package hoststate).
const MaxChainID = 4095

// Chain steers the traffic of a segment through service functions: the
// packets its source endpoints send that match To, Proto and Port are
// routed to Via[0], then from it to Via[1], ..., then normally. Replies go
// back directly (see docs/chains.md). ID is assigned by romanad.
type Chain struct {
	Name string `json:"name"`
	ID   uint64 `json:"id,omitempty"`
	// Tenant and Segment select the source endpoints.
	Tenant  string `json:"tenant"`
	Segment string `json:"segment"`
	// The destination: a CIDR, or a tenant (and optionally one of its
	// segments); none of them: any destination.
	ToCIDR    netip.Prefix `json:"toCidr,omitzero"`
	ToTenant  string       `json:"toTenant,omitempty"`
	ToSegment string       `json:"toSegment,omitempty"`
	// Proto is "", "tcp", "udp" or "icmp"; Port (tcp or udp only) the
	// destination port (0: any).
	Proto string `json:"proto,omitempty"`
	Port  uint16 `json:"port,omitempty"`
	// Via are the service functions, in order: addresses of allocated
	// endpoints that forward packets.
	Via []netip.Addr `json:"via"`
	// Failure is FailOpen (default) or FailClosed.
	Failure string `json:"failure,omitempty"`
}

// From returns "tenant/segment".
func (c Chain) From() string { return c.Tenant + "/" + c.Segment }

// To returns the destination as the CLI writes it ("" for any).
func (c Chain) To() string {
	switch {
	case c.ToCIDR.IsValid():
		return c.ToCIDR.String()
	case c.ToSegment != "":
		return c.ToTenant + "/" + c.ToSegment
	}
	return c.ToTenant
}

// ParseChainTo parses a destination "CIDR", "TENANT" or "TENANT/SEGMENT"
// into c.
func ParseChainTo(c *Chain, s string) error {
	if s == "" {
		return nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		c.ToCIDR = p
		return nil
	}
	if strings.ContainsAny(s, ".:") && !strings.Contains(s, "/") {
		if _, err := netip.ParseAddr(s); err == nil {
			return Errorf(ReasonInvalid, "chain %s: to %q: give a CIDR (e.g. %s/32) or TENANT[/SEGMENT]", c.Name, s, s)
		}
	}
	t, seg, _ := strings.Cut(s, "/")
	c.ToTenant, c.ToSegment = t, seg
	return nil
}

// Validate checks a chain's syntax and returns its canonical form
// (addresses unmapped, CIDR masked, failure defaulted). Whether the named
// tenants, segments and endpoints exist is romanad's check. Errors are
// ReasonInvalid.
func (c Chain) Validate() (Chain, error) {
	if err := ValidateName("chain", c.Name); err != nil {
		return Chain{}, err
	}
	if c.Tenant == "" || c.Segment == "" {
		return Chain{}, Errorf(ReasonInvalid, "chain %s: give the source as TENANT/SEGMENT", c.Name)
	}
	if err := ValidateName("tenant", c.Tenant); err != nil {
		return Chain{}, Errorf(ReasonInvalid, "chain %s: from: %v", c.Name, err)
	}
	if err := ValidateName("segment", c.Segment); err != nil {
		return Chain{}, Errorf(ReasonInvalid, "chain %s: from: %v", c.Name, err)
	}
	out := c
	out.Via = nil
	if c.ID > MaxChainID {
		return Chain{}, Errorf(ReasonInvalid, "chain %s: id %d is above the maximum %d", c.Name, c.ID, MaxChainID)
	}
	switch {
	case c.ToCIDR.IsValid():
		if c.ToTenant != "" || c.ToSegment != "" {
			return Chain{}, Errorf(ReasonInvalid, "chain %s: to: give a CIDR or a tenant, not both", c.Name)
		}
		a := c.ToCIDR.Addr().Unmap()
		bits := c.ToCIDR.Bits()
		if c.ToCIDR.Addr().Is4In6() {
			bits -= 96
		}
		if bits < 0 || a.Zone() != "" {
			return Chain{}, Errorf(ReasonInvalid, "chain %s: to: invalid CIDR %s", c.Name, c.ToCIDR)
		}
		out.ToCIDR = netip.PrefixFrom(a, bits).Masked()
	case c.ToTenant != "":
		if err := ValidateName("tenant", c.ToTenant); err != nil {
			return Chain{}, Errorf(ReasonInvalid, "chain %s: to: %v", c.Name, err)
		}
		if c.ToSegment != "" {
			if err := ValidateName("segment", c.ToSegment); err != nil {
				return Chain{}, Errorf(ReasonInvalid, "chain %s: to: %v", c.Name, err)
			}
		}
	case c.ToSegment != "":
		return Chain{}, Errorf(ReasonInvalid, "chain %s: to: a segment needs its tenant (TENANT/SEGMENT)", c.Name)
	}
	switch c.Proto {
	case "", "tcp", "udp", "icmp":
	default:
		return Chain{}, Errorf(ReasonInvalid, "chain %s: proto %q: use tcp, udp or icmp", c.Name, c.Proto)
	}
	if c.Port != 0 && c.Proto != "tcp" && c.Proto != "udp" {
		return Chain{}, Errorf(ReasonInvalid, "chain %s: port %d needs --proto tcp or udp", c.Name, c.Port)
	}
	switch c.Failure {
	case "":
		out.Failure = FailOpen
	case FailOpen, FailClosed:
	default:
		return Chain{}, Errorf(ReasonInvalid, "chain %s: failure %q: use %s or %s", c.Name, c.Failure, FailOpen, FailClosed)
	}
	if len(c.Via) == 0 {
		return Chain{}, Errorf(ReasonInvalid, "chain %s: give at least one service function (--via ADDR)", c.Name)
	}
	if len(c.Via) > MaxChainHops {
		return Chain{}, Errorf(ReasonInvalid, "chain %s: %d service functions; at most %d", c.Name, len(c.Via), MaxChainHops)
	}
	seen := map[netip.Addr]bool{}
	for _, v := range c.Via {
		a := v.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			return Chain{}, Errorf(ReasonInvalid, "chain %s: via %q is not an endpoint address", c.Name, v)
		}
		if seen[a] {
			return Chain{}, Errorf(ReasonInvalid, "chain %s: loop: service function %s appears twice in via", c.Name, a)
		}
		seen[a] = true
		if len(out.Via) > 0 && a.Is4() != out.Via[0].Is4() {
			return Chain{}, Errorf(ReasonInvalid, "chain %s: via %s and %s are of different families: a chain steers one family (add one chain per family)", c.Name, out.Via[0], a)
		}
		out.Via = append(out.Via, a)
	}
	if out.ToCIDR.IsValid() && out.ToCIDR.Addr().Is4() != out.Via[0].Is4() {
		return Chain{}, Errorf(ReasonInvalid, "chain %s: to %s and via %s are of different families: a chain steers one family", c.Name, out.ToCIDR, out.Via[0])
	}
	return out, nil
}
