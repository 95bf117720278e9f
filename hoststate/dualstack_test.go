package hoststate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// familySnapshot is demoLab's layout (3 hosts; acme tenant mode, beta
// segment mode with web and db, open none; one endpoint of each segment on
// each host) in one network per CIDR given, all with the same fields, plus
// a policy with ports and one with ICMP. Hosts have an IPv4 ip and an ip6.
// Every endpoint of a host shares one veth across the networks, as a
// dual-stack attachment does.
func familySnapshot(t testing.TB, cidrs ...string) api.Snapshot {
	t.Helper()
	var snap api.Snapshot
	fields := []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}
	plans := map[string]*plan.Plan{}
	for i, c := range cidrs {
		n := api.Network{Name: fmt.Sprintf("n%d", i), CIDR: c, Fields: fields}
		p, err := plan.Parse(n.Spec())
		if err != nil {
			t.Fatal(err)
		}
		plans[n.Name] = p
		snap.Networks = append(snap.Networks, n)
	}
	snap.Tenants = []api.Tenant{{Name: "acme", ID: 1}, {Name: "beta", ID: 2, Isolation: api.IsolationSegment}, {Name: "open", ID: 3, Isolation: api.IsolationNone}}
	snap.Segments = []api.Segment{{Tenant: "acme", Name: "default"}, {Tenant: "beta", Name: "web"}, {Tenant: "beta", Name: "db", ID: 1}, {Tenant: "open", Name: "default"}}
	eps := []struct {
		tenant, segment string
		tid, sid        uint64
	}{{"acme", "default", 1, 0}, {"beta", "web", 2, 0}, {"beta", "db", 2, 1}, {"open", "default", 3, 0}}
	for h := uint64(1); h <= 3; h++ {
		host := api.Host{Name: fmt.Sprintf("h%d", h), IP: netip.AddrFrom4([4]byte{192, 168, 0, byte(h)}),
			IP6: netip.MustParseAddr(fmt.Sprintf("fd77::%d", h))}
		for _, n := range snap.Networks {
			c, err := plans[n.Name].HostCIDR(plan.Loc{Host: h})
			if err != nil {
				t.Fatal(err)
			}
			host.Slots = append(host.Slots, api.HostSlot{Network: n.Name, Loc: plan.Loc{Host: h}, CIDR: c})
			for _, e := range eps {
				ip, err := plans[n.Name].Address(plan.Loc{Host: h}, e.tid, e.sid, 1)
				if err != nil {
					t.Fatal(err)
				}
				snap.Addresses = append(snap.Addresses, api.Address{
					Name: fmt.Sprintf("c%d-%s-%s:eth0/%s", h, e.tenant, e.segment, n.Name), IP: ip, Network: n.Name,
					Host: host.Name, Tenant: e.tenant, Segment: e.segment,
					Interface: fmt.Sprintf("romana%09x", h<<8|e.tid<<4|e.sid),
				})
			}
		}
		snap.Hosts = append(snap.Hosts, host)
	}
	snap.Policies = []api.Policy{
		{Name: "acme-to-web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "beta", Segment: "web"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "acme"}}, Protocol: "tcp", Ports: []uint16{8081}, PortRanges: []string{"9000-9010"}}}},
		{Name: "open-pings-acme", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Peers: []api.Peer{{Tenant: "open"}}, Protocol: "icmp", ICMPType: new(uint8(128))}}},
		{Name: "acme-no-open-tcp", Priority: 10, Direction: []string{"egress"}, AppliedTo: []api.Selector{{Tenant: "acme"}},
			Rules: []api.Rule{{Action: "deny", Peers: []api.Peer{{Tenant: "open"}}, Protocol: "tcp"}}},
	}
	return snap
}

// perChain counts the rules of each chain.
func perChain(rs Ruleset) map[string]int {
	out := map[string]int{}
	for _, c := range rs.Chains {
		out[c.Name] = len(c.Rules)
	}
	return out
}

// An IPv6 network costs a host as many nft rules (and set and map
// elements) as an IPv4 network with the same fields and tenants, chain by
// chain, in both modes; a dual-stack host has both, with each rule's
// counterpart of the other family.
func TestV6RuleCountEqualsV4(t *testing.T) {
	v4 := familySnapshot(t, "10.0.0.0/8")
	v6 := familySnapshot(t, "fd00:1234:5678::/48")
	dual := familySnapshot(t, "10.0.0.0/8", "fd00:1234:5678::/48")
	for _, mode := range []Mode{ModeFlat, ModeFabric} {
		for _, host := range []string{"h1", "h2", "h3"} {
			get := func(s api.Snapshot) Ruleset {
				st, err := Compute(s, host, Options{Mode: mode})
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Problems) > 0 {
					t.Fatalf("%s %s: problems %v", host, mode, st.Problems)
				}
				return st.Firewall
			}
			r4, r6, rd := get(v4), get(v6), get(dual)
			if r4.RuleCount() == 0 || r4.RuleCount() != r6.RuleCount() || r4.ElementCount() != r6.ElementCount() {
				t.Errorf("%s %s: v4 %d rules %d elements, v6 %d rules %d elements", host, mode, r4.RuleCount(), r4.ElementCount(), r6.RuleCount(), r6.ElementCount())
			}
			if c4, c6 := perChain(r4), perChain(r6); fmt.Sprint(c4) != fmt.Sprint(c6) {
				t.Errorf("%s %s: rules per chain: v4 %v, v6 %v", host, mode, c4, c6)
			}
			// The dual-stack ruleset has every v4 rule and, for each
			// family-specific one, a v6 counterpart: no more.
			v4only := 0
			for _, c := range r4.Chains {
				for _, r := range c.Rules {
					if strings.Contains(r.Expr, "ip ") {
						v4only++
					}
				}
			}
			if want := r4.RuleCount() + v4only; rd.RuleCount() != want {
				t.Errorf("%s %s: dual-stack %d rules, want %d (v4 %d, of which %d name an address)", host, mode, rd.RuleCount(), want, r4.RuleCount(), v4only)
			}
			if rd.ElementCount() != r4.ElementCount()+r6.ElementCount() {
				t.Errorf("%s %s: dual-stack %d elements, want %d + %d", host, mode, rd.ElementCount(), r4.ElementCount(), r6.ElementCount())
			}
		}
	}
}

// A dual-stack host routes its endpoints' two addresses to the one veth,
// lets IPv6 be forwarded from that veth only (force_forwarding, never
// all.forwarding), and in flat mode routes remote IPv6 blocks via the
// remote hosts' ip6, IPv4 blocks via their ip.
func TestDualStackRoutes(t *testing.T) {
	st, err := Compute(familySnapshot(t, "10.0.0.0/8", "fd00:1234:5678::/48"), "h1", Options{Mode: ModeFlat})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Problems) > 0 {
		t.Fatalf("problems: %v", st.Problems)
	}
	var remote []string
	devs := map[string][]string{}
	for _, r := range st.Routes {
		if r.Dev != "" {
			devs[r.Dev] = append(devs[r.Dev], r.Dst.String())
			continue
		}
		remote = append(remote, r.String())
	}
	wantRemote := []string{"10.2.0.0/16 via 192.168.0.2", "10.3.0.0/16 via 192.168.0.3",
		"fd00:1234:5678:200::/56 via fd77::2", "fd00:1234:5678:300::/56 via fd77::3"}
	if !slices.Equal(remote, wantRemote) {
		t.Errorf("remote routes %q, want %q", remote, wantRemote)
	}
	if len(devs) != 4 {
		t.Errorf("veths %v, want 4", devs)
	}
	for dev, dsts := range devs {
		if len(dsts) != 2 || !strings.Contains(dsts[0]+dsts[1], ":") {
			t.Errorf("veth %s routes %v, want one IPv4 and one IPv6 address", dev, dsts)
		}
		if !slices.Contains(st.Sysctls, Sysctl{"net/ipv6/conf/" + dev + "/force_forwarding", "1"}) {
			t.Errorf("no force_forwarding for %s in %v", dev, st.Sysctls)
		}
	}
	for _, s := range st.Sysctls {
		if strings.Contains(s.Key, "all") || strings.Contains(s.Key, "default") {
			t.Errorf("sysctl %s touches every interface", s)
		}
	}
}
