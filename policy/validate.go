// Package policy validates and normalises Romana network policies: the
// syntax and field rules of api.Policy, before romanad stores one.
package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/romana/romana/api"
)

// MaxPriority is the largest policy priority.
const MaxPriority = 65535

// Validate checks a policy and returns an *api.Error with reason Invalid
// listing every problem with its field path, for example
// `rules[1].ports[0]: port 0 is out of range 1-65535`. Names of tenants,
// segments, hosts and address sets are checked for syntax only: a policy
// may name a tenant or a set that does not exist yet and takes effect when
// it appears (agents treat a missing set as empty).
func Validate(p api.Policy) error {
	var v validator
	if err := api.ValidateName("policy", p.Name); err != nil {
		v.add("name", "%v", err)
	}
	if p.Priority < 0 || p.Priority > MaxPriority {
		v.add("priority", "%d is out of range 1-%d (0 or absent means the default, %d)", p.Priority, MaxPriority, api.DefaultPriority)
	}
	if len(p.Description) > 1024 {
		v.add("description", "longer than 1024 characters")
	}
	switch p.Tier {
	case api.TierAdmin, api.TierDefault, api.TierBaseline:
	default:
		v.add("tier", "%q is not admin, baseline or empty (the default tier)", p.Tier)
	}
	if len(p.Direction) == 0 {
		v.add("direction", "required: ingress, egress or both")
	}
	seen := map[string]bool{}
	for i, d := range p.Direction {
		f := fmt.Sprintf("direction[%d]", i)
		switch {
		case d != api.DirectionIngress && d != api.DirectionEgress:
			v.add(f, "%q is not ingress or egress", d)
		case seen[d]:
			v.add(f, "%q appears twice", d)
		}
		seen[d] = true
	}
	if len(p.AppliedTo) == 0 {
		v.add("appliedTo", "required: at least one selector (all, tenant, tenant+segment or host)")
	}
	for i, s := range p.AppliedTo {
		v.selector(fmt.Sprintf("appliedTo[%d]", i), s)
	}
	if len(p.Rules) == 0 {
		v.add("rules", "required: at least one rule")
	}
	for i, r := range p.Rules {
		v.rule(fmt.Sprintf("rules[%d]", i), r)
	}
	if len(v.errs) == 0 {
		return nil
	}
	name := p.Name
	if name == "" {
		name = "(unnamed)"
	}
	return api.Errorf(api.ReasonInvalid, "invalid policy %s: %s", name, strings.Join(v.errs, "; "))
}

// Normalize returns p with defaults filled in: priority 0 becomes
// api.DefaultPriority and an empty action becomes allow, an empty protocol any.
func Normalize(p api.Policy) api.Policy {
	if p.Priority == 0 {
		p.Priority = api.DefaultPriority
	}
	rules := make([]api.Rule, len(p.Rules))
	for i, r := range p.Rules {
		if r.Action == "" {
			r.Action = api.ActionAllow
		}
		if r.Protocol == "" {
			r.Protocol = api.ProtoAny
		}
		rules[i] = r
	}
	p.Rules = rules
	return p
}

type validator struct{ errs []string }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, field+": "+fmt.Sprintf(format, args...))
}

func (v *validator) name(field, kind, name string) {
	if err := api.ValidateName(kind, name); err != nil {
		v.add(field, "%v", err)
	}
}

// endpoints checks the fields selectors and peers share (all/any, tenant
// with an optional segment, host) and returns how many of the alternatives
// all/any, tenant and host are set.
func (v *validator) endpoints(f string, all bool, tenant, segment, host string) int {
	n := 0
	if all {
		n++
	}
	if tenant != "" {
		n++
		v.name(f+".tenant", "tenant", tenant)
	}
	if host != "" {
		n++
		v.name(f+".host", "host", host)
	}
	if segment != "" {
		if tenant == "" {
			v.add(f+".segment", "needs tenant: a segment is named within its tenant")
		} else {
			v.name(f+".segment", "segment", segment)
		}
	}
	return n
}

func (v *validator) selector(f string, s api.Selector) {
	n := v.endpoints(f, s.All, s.Tenant, s.Segment, s.Host)
	if s.Set == "" {
		if n != 1 {
			v.add(f, "set exactly one of all, tenant (optionally with segment), host or set")
		}
		return
	}
	v.name(f+".set", "address set", s.Set)
	if n > 1 || s.Host != "" {
		v.add(f, "set narrows all or tenant (optionally with segment), or stands alone; not with host")
	}
}

func (v *validator) peer(f string, p api.Peer) {
	n := v.endpoints(f, p.Any, p.Tenant, p.Segment, p.Host)
	var cidr netip.Prefix
	if p.CIDR != "" {
		n++
		var err error
		cidr, err = netip.ParsePrefix(p.CIDR)
		switch {
		case err != nil:
			v.add(f+".cidr", "%q is not a CIDR such as 10.0.0.0/8", p.CIDR)
		case cidr.Addr().Zone() != "" || cidr.Addr().Is4In6():
			v.add(f+".cidr", "%q: use a plain IPv4 or IPv6 prefix", p.CIDR)
		case cidr.Masked() != cidr:
			v.add(f+".cidr", "%q has bits set below the prefix length; did you mean %s?", p.CIDR, cidr.Masked())
		}
	}
	if p.Set != "" {
		n++
		v.name(f+".set", "address set", p.Set)
	}
	if len(p.Except) > 0 && p.CIDR == "" {
		v.add(f+".except", "needs cidr: except carves holes out of a cidr peer")
	}
	for i, e := range p.Except {
		ef := fmt.Sprintf("%s.except[%d]", f, i)
		x, err := netip.ParsePrefix(e)
		switch {
		case err != nil:
			v.add(ef, "%q is not a CIDR such as 10.1.0.0/16", e)
		case x.Masked() != x:
			v.add(ef, "%q has bits set below the prefix length; did you mean %s?", e, x.Masked())
		case cidr.IsValid() && (x.Addr().Is4() != cidr.Addr().Is4() || x.Bits() < cidr.Bits() || !cidr.Contains(x.Addr())):
			v.add(ef, "%s is not within cidr %s", x, cidr)
		}
	}
	if n != 1 {
		v.add(f, "set exactly one of any, cidr (optionally with except), tenant (optionally with segment), host or set")
	}
}

func (v *validator) rule(f string, r api.Rule) {
	switch r.Action {
	case "", api.ActionAllow, api.ActionDeny, api.ActionPass:
	default:
		v.add(f+".action", "%q is not allow, deny or pass", r.Action)
	}
	for i, p := range r.Peers {
		v.peer(fmt.Sprintf("%s.peers[%d]", f, i), p)
	}
	proto := r.Protocol
	switch proto {
	case "", api.ProtoAny, api.ProtoTCP, api.ProtoUDP, api.ProtoSCTP, api.ProtoICMP:
	default:
		v.add(f+".protocol", "%q is not one of tcp, udp, sctp, icmp, any", proto)
	}
	hasPorts := proto == api.ProtoTCP || proto == api.ProtoUDP || proto == api.ProtoSCTP
	if !hasPorts && (len(r.Ports) > 0 || len(r.PortRanges) > 0) {
		v.add(f, "ports and portRanges need protocol tcp, udp or sctp (protocol is %q)", orAny(proto))
	}
	for i, p := range r.Ports {
		if p == 0 {
			v.add(fmt.Sprintf("%s.ports[%d]", f, i), "port 0 is out of range 1-65535")
		}
	}
	for i, pr := range r.PortRanges {
		pf := fmt.Sprintf("%s.portRanges[%d]", f, i)
		a, b, ok := strings.Cut(pr, "-")
		lo, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
		hi, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
		switch {
		case !ok || err1 != nil || err2 != nil:
			v.add(pf, "%q is not a range like 8000-8080", pr)
		case lo < 1 || hi > 65535:
			v.add(pf, "%q is out of range 1-65535", pr)
		case lo > hi:
			v.add(pf, "%q starts after it ends", pr)
		}
	}
	if proto != api.ProtoICMP && (r.ICMPType != nil || r.ICMPCode != nil) {
		v.add(f, "icmpType and icmpCode need protocol icmp (protocol is %q)", orAny(proto))
	}
	if r.ICMPCode != nil && r.ICMPType == nil {
		v.add(f+".icmpCode", "needs icmpType")
	}
}

func orAny(p string) string {
	if p == "" {
		return api.ProtoAny
	}
	return p
}
