package policy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

func u8(v uint8) *uint8 { return &v }

func good() api.Policy {
	return api.Policy{
		Name:      "web-in",
		Direction: []string{api.DirectionIngress},
		AppliedTo: []api.Selector{{Tenant: "acme", Segment: "web"}},
		Rules: []api.Rule{
			{Peers: []api.Peer{{Tenant: "acme", Segment: "lb"}}, Protocol: "tcp", Ports: []uint16{80, 443}, PortRanges: []string{"8000-8080"}},
			{Peers: []api.Peer{{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}, Protocol: "icmp", ICMPType: u8(8), ICMPCode: u8(0)},
			{Action: "deny", Peers: []api.Peer{{Any: true}}},
		},
	}
}

func TestValidateAccepts(t *testing.T) {
	for name, p := range map[string]api.Policy{
		"full": good(),
		"tenant that does not exist yet, host selector, both directions": {
			Name: "p", Direction: []string{"ingress", "egress"}, Priority: 65535,
			AppliedTo: []api.Selector{{Host: "h1"}, {All: true}},
			Rules:     []api.Rule{{Peers: []api.Peer{{Tenant: "not-yet"}, {Host: "h2"}}, Protocol: "sctp", Ports: []uint16{1, 65535}}},
		},
		"tiers, pass, address sets (that need not exist yet)": {
			Name: "sets", Tier: api.TierAdmin, Direction: []string{"ingress"},
			AppliedTo: []api.Selector{{Set: "web-pods"}, {All: true, Set: "a"}, {Tenant: "acme", Segment: "web", Set: "b"}},
			Rules:     []api.Rule{{Action: api.ActionPass, Peers: []api.Peer{{Set: "not-yet"}}}},
		},
		"baseline tier": {
			Name: "base", Tier: api.TierBaseline, Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Action: api.ActionDeny}},
		},
		"ipv6 cidr": {
			Name: "p6", Direction: []string{"egress"}, AppliedTo: []api.Selector{{All: true}},
			Rules: []api.Rule{{Peers: []api.Peer{{CIDR: "fd00::/8", Except: []string{"fd00::/16", "fd00::1/128"}}}, Protocol: "udp", PortRanges: []string{"53-53"}}},
		},
	} {
		if err := Validate(p); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*api.Policy)
		want   string
	}{
		{"port 0", func(p *api.Policy) { p.Rules[0].Ports = []uint16{80, 0} }, "rules[0].ports[1]: port 0 is out of range 1-65535"},
		{"ports with any protocol", func(p *api.Policy) { p.Rules[2].Ports = []uint16{22} },
			`rules[2]: ports and portRanges need protocol tcp, udp or sctp (protocol is "any")`},
		{"ports with icmp", func(p *api.Policy) { p.Rules[1].PortRanges = []string{"1-2"} }, "rules[1]: ports and portRanges need protocol tcp, udp or sctp"},
		{"range backwards", func(p *api.Policy) { p.Rules[0].PortRanges = []string{"9000-8000"} }, `rules[0].portRanges[0]: "9000-8000" starts after it ends`},
		{"range syntax", func(p *api.Policy) { p.Rules[0].PortRanges = []string{"80"} }, `rules[0].portRanges[0]: "80" is not a range like 8000-8080`},
		{"range out of range", func(p *api.Policy) { p.Rules[0].PortRanges = []string{"0-10"} }, `rules[0].portRanges[0]: "0-10" is out of range 1-65535`},
		{"icmp type with tcp", func(p *api.Policy) { p.Rules[0].ICMPType = u8(8) }, "rules[0]: icmpType and icmpCode need protocol icmp"},
		{"icmp code without type", func(p *api.Policy) { p.Rules[1].ICMPType = nil }, "rules[1].icmpCode: needs icmpType"},
		{"protocol", func(p *api.Policy) { p.Rules[0].Protocol = "gre" }, `rules[0].protocol: "gre" is not one of tcp, udp, sctp, icmp, any`},
		{"action", func(p *api.Policy) { p.Rules[2].Action = "drop" }, `rules[2].action: "drop" is not allow, deny or pass`},
		{"no direction", func(p *api.Policy) { p.Direction = nil }, "direction: required"},
		{"bad direction", func(p *api.Policy) { p.Direction = []string{"ingress", "in"} }, `direction[1]: "in" is not ingress or egress`},
		{"duplicate direction", func(p *api.Policy) { p.Direction = []string{"egress", "egress"} }, `direction[1]: "egress" appears twice`},
		{"priority", func(p *api.Policy) { p.Priority = 70000 }, "priority: 70000 is out of range 1-65535 (0 or absent means the default, 1000)"},
		{"negative priority", func(p *api.Policy) { p.Priority = -1 }, "priority: -1 is out of range"},
		{"name", func(p *api.Policy) { p.Name = "Web_In" }, `name: invalid policy name "Web_In"`},
		{"no appliedTo", func(p *api.Policy) { p.AppliedTo = nil }, "appliedTo: required"},
		{"appliedTo two kinds", func(p *api.Policy) { p.AppliedTo[0].Host = "h1" }, "appliedTo[0]: set exactly one of all, tenant (optionally with segment), host or set"},
		{"appliedTo empty", func(p *api.Policy) { p.AppliedTo = []api.Selector{{}} }, "appliedTo[0]: set exactly one"},
		{"segment without tenant", func(p *api.Policy) { p.AppliedTo = []api.Selector{{Segment: "web"}} }, "appliedTo[0].segment: needs tenant"},
		{"bad tenant name", func(p *api.Policy) { p.AppliedTo[0].Tenant = "ACME" }, `appliedTo[0].tenant: invalid tenant name "ACME"`},
		{"peer two kinds", func(p *api.Policy) { p.Rules[2].Peers[0].CIDR = "10.0.0.0/8" }, "rules[2].peers[0]: set exactly one of any, cidr"},
		{"peer empty", func(p *api.Policy) { p.Rules[2].Peers = []api.Peer{{}} }, "rules[2].peers[0]: set exactly one"},
		{"cidr syntax", func(p *api.Policy) { p.Rules[1].Peers[0].CIDR = "10.0.0.0" }, `rules[1].peers[0].cidr: "10.0.0.0" is not a CIDR`},
		{"cidr host bits", func(p *api.Policy) { p.Rules[1].Peers[0].CIDR = "10.0.0.1/8" }, "did you mean 10.0.0.0/8?"},
		{"except outside", func(p *api.Policy) { p.Rules[1].Peers[0].Except = []string{"192.168.0.0/16"} }, "rules[1].peers[0].except[0]: 192.168.0.0/16 is not within cidr 10.0.0.0/8"},
		{"except wider", func(p *api.Policy) { p.Rules[1].Peers[0].Except = []string{"0.0.0.0/0"} }, "except[0]: 0.0.0.0/0 is not within cidr 10.0.0.0/8"},
		{"except other family", func(p *api.Policy) { p.Rules[1].Peers[0].Except = []string{"::/128"} }, "except[0]: ::/128 is not within cidr"},
		{"except without cidr", func(p *api.Policy) { p.Rules[0].Peers[0].Except = []string{"10.0.0.0/8"} }, "rules[0].peers[0].except: needs cidr"},
		{"no rules", func(p *api.Policy) { p.Rules = nil }, "rules: required"},
		{"tier", func(p *api.Policy) { p.Tier = "Admin" }, `tier: "Admin" is not admin, baseline or empty (the default tier)`},
		{"set name", func(p *api.Policy) { p.AppliedTo[0].Set = "Web_Pods" }, `appliedTo[0].set: invalid address set name "Web_Pods"`},
		{"set with host", func(p *api.Policy) { p.AppliedTo = []api.Selector{{Host: "h1", Set: "s"}} }, "appliedTo[0]: set narrows all or tenant"},
		{"set with all and tenant", func(p *api.Policy) { p.AppliedTo = []api.Selector{{All: true, Tenant: "acme", Set: "s"}} }, "appliedTo[0]: set narrows all or tenant"},
		{"peer set and tenant", func(p *api.Policy) { p.Rules[0].Peers[0].Set = "s" }, "rules[0].peers[0]: set exactly one of any, cidr (optionally with except), tenant (optionally with segment), host or set"},
		{"peer set name", func(p *api.Policy) { p.Rules[2].Peers = []api.Peer{{Set: "-x"}} }, `rules[2].peers[0].set: invalid address set name "-x"`},
	} {
		p := good()
		tc.mutate(&p)
		err := Validate(p)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if api.ReasonOf(err) != api.ReasonInvalid {
			t.Errorf("%s: reason %q, want Invalid", tc.name, api.ReasonOf(err))
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %s\nwant ...%s...", tc.name, err, tc.want)
		}
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	p := good()
	p.Rules[0].Ports = []uint16{0}
	p.Rules[2].Action = "drop"
	err := Validate(p)
	want := `invalid policy web-in: rules[0].ports[0]: port 0 is out of range 1-65535; rules[2].action: "drop" is not allow, deny or pass`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestNormalize(t *testing.T) {
	p := Normalize(good())
	if p.Priority != api.DefaultPriority {
		t.Errorf("priority %d, want %d", p.Priority, api.DefaultPriority)
	}
	if p.Rules[0].Action != api.ActionAllow || p.Rules[2].Action != api.ActionDeny || p.Rules[2].Protocol != api.ProtoAny {
		t.Errorf("rules not normalised: %+v", p.Rules)
	}
	if err := Validate(p); err != nil {
		t.Errorf("normalised policy invalid: %v", err)
	}
	q := good()
	q.Priority = 7
	if Normalize(q).Priority != 7 {
		t.Error("explicit priority changed")
	}
}

// FuzzValidate checks that Validate never panics and that a policy it
// accepts stays valid and unchanged by a second Normalize.
func FuzzValidate(f *testing.F) {
	b, _ := json.Marshal(good())
	f.Add(b)
	f.Add([]byte(`{"name":"x","direction":["egress"],"appliedTo":[{"all":true}],"rules":[{"portRanges":["1-"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p api.Policy
		if json.Unmarshal(data, &p) != nil {
			return
		}
		if Validate(p) != nil {
			return
		}
		n := Normalize(p)
		if err := Validate(n); err != nil {
			t.Fatalf("normalised valid policy is invalid: %v", err)
		}
		a, _ := json.Marshal(n)
		b, _ := json.Marshal(Normalize(n))
		if string(a) != string(b) {
			t.Fatalf("Normalize is not idempotent:\n%s\n%s", a, b)
		}
	})
}
