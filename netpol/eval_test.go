package netpol

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/policy"
)

// verdict decides a new connection from src to dst on probe p under the
// compiled output: the one function every truth table calls. It is
// Romana's own evaluator, policy.Trace (the semantics the agents' nft
// rules are checked against in hoststate); localVerdict, an independent
// reading of docs/policy.md, must agree with it on every cell (check).
func verdict(t *testing.T, c *cluster, out Output, src, dst netip.Addr, p probe) (bool, string) {
	return traceVerdict(t, c, out, src, dst, p)
}

// traceVerdict asks policy.Trace, on the snapshot of c with out's
// policies and sets.
func traceVerdict(t *testing.T, c *cluster, out Output, src, dst netip.Addr, p probe) (bool, string) {
	t.Helper()
	tr, err := policy.Trace(c.snapshot(out), policy.Packet{Src: src, Dst: dst, Proto: p.proto, Port: p.port})
	if err != nil {
		t.Fatalf("trace %s -> %s: %v", src, dst, err)
	}
	return tr.Verdict == api.ActionAllow, tr.Decision.Reason
}

var tierRank = map[string]int{api.TierAdmin: 0, api.TierDefault: 1, api.TierBaseline: 2}

// localVerdict evaluates docs/policy.md: the egress stage of the source,
// then the ingress stage of the destination; in each, policies by tier,
// priority and name, rules in order, the first match decides (pass skips
// the rest of its tier); no ingress match falls to tenant isolation, open
// in Kubernetes mode.
func localVerdict(c *cluster, out Output, src, dst netip.Addr, p probe) (bool, string) {
	sets := map[string]map[netip.Addr]bool{}
	for _, s := range out.Sets {
		sets[s.Name] = map[netip.Addr]bool{}
		for _, a := range s.Addresses {
			sets[s.Name][a] = true
		}
	}
	pols := slices.Clone(out.Policies)
	prio := func(x api.Policy) int {
		if x.Priority == 0 {
			return api.DefaultPriority
		}
		return x.Priority
	}
	slices.SortFunc(pols, func(a, b api.Policy) int {
		return cmp.Or(cmp.Compare(tierRank[a.Tier], tierRank[b.Tier]), cmp.Compare(prio(a), prio(b)), cmp.Compare(a.Name, b.Name))
	})
	inTenant := func(a netip.Addr, tenant, segment string) bool {
		x, ok := c.place(a)
		return ok && x.Tenant == tenant && (segment == "" || x.Segment == segment)
	}
	applies := func(sels []api.Selector, a netip.Addr) bool {
		for _, s := range sels {
			ok := s.All || s.Tenant != "" || s.Set != ""
			if s.Tenant != "" {
				ok = ok && inTenant(a, s.Tenant, s.Segment)
			}
			if s.Set != "" {
				ok = ok && sets[s.Set][a]
			}
			if s.Host != "" {
				ok = false
			}
			if ok {
				return true
			}
		}
		return false
	}
	peerMatch := func(peers []api.Peer, a netip.Addr) bool {
		if len(peers) == 0 {
			return true
		}
		for _, x := range peers {
			switch {
			case x.Any:
				return true
			case x.CIDR != "":
				if netip.MustParsePrefix(x.CIDR).Contains(a) && !slices.ContainsFunc(x.Except, func(e string) bool { return netip.MustParsePrefix(e).Contains(a) }) {
					return true
				}
			case x.Tenant != "":
				if inTenant(a, x.Tenant, x.Segment) {
					return true
				}
			case x.Set != "":
				if sets[x.Set][a] {
					return true
				}
			}
		}
		return false
	}
	portMatch := func(r api.Rule) bool {
		if r.Protocol != api.ProtoAny && r.Protocol != "" && r.Protocol != p.proto {
			return false
		}
		if len(r.Ports) == 0 && len(r.PortRanges) == 0 {
			return true
		}
		if slices.Contains(r.Ports, p.port) {
			return true
		}
		for _, pr := range r.PortRanges {
			a, b, _ := strings.Cut(pr, "-")
			lo, _ := strconv.Atoi(a)
			hi, _ := strconv.Atoi(b)
			if int(p.port) >= lo && int(p.port) <= hi {
				return true
			}
		}
		return false
	}
	stage := func(dir string, self, peer netip.Addr) (string, string) {
		passed := map[string]bool{}
		for _, x := range pols {
			if passed[x.Tier] || !slices.Contains(x.Direction, dir) || !applies(x.AppliedTo, self) {
				continue
			}
			for i, r := range x.Rules {
				if !peerMatch(r.Peers, peer) || !portMatch(r) {
					continue
				}
				a := cmp.Or(r.Action, api.ActionAllow)
				if a == api.ActionPass {
					passed[x.Tier] = true
					break
				}
				return a, fmt.Sprintf("policy %s rule %d", x.Name, i)
			}
		}
		return "", ""
	}
	if a, by := stage(api.DirectionEgress, src, dst); a == api.ActionDeny {
		return false, by
	}
	if a, by := stage(api.DirectionIngress, dst, src); a != "" {
		return a == api.ActionAllow, by
	}
	return true, "tenant isolation: none (open to all)"
}

// usesNewSemantics reports whether out needs what policy.Trace does not
// know yet: tiers, pass, address sets.
func usesNewSemantics(out Output) bool {
	for _, p := range out.Policies {
		if p.Tier != "" {
			return true
		}
		for _, s := range p.AppliedTo {
			if s.Set != "" {
				return true
			}
		}
		for _, r := range p.Rules {
			if r.Action == api.ActionPass {
				return true
			}
			for _, x := range r.Peers {
				if x.Set != "" {
					return true
				}
			}
		}
	}
	return false
}
