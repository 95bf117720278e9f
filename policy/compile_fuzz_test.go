package policy

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/romana/romana/api"
)

// FuzzCompileTrace: any policy JSON compiles without panicking on the
// trace snapshot; every compiled rule renders to one line naming its
// policy, and Trace answers allow or deny for a few packets.
func FuzzCompileTrace(f *testing.F) {
	f.Add(`{"name":"p","direction":["ingress","egress"],"appliedTo":[{"tenant":"acme"}],"rules":[{"peers":[{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}],"protocol":"tcp","ports":[80,443],"portRanges":["8000-8080"]}]}`)
	f.Add(`{"name":"q","priority":5,"direction":["egress"],"appliedTo":[{"all":true},{"host":"h2"}],"rules":[{"action":"deny","peers":[{"host":"h3"},{"tenant":"beta","segment":"db"}],"protocol":"icmp","icmpType":8,"icmpCode":0}]}`)
	f.Add(`{"name":"r","direction":["ingress"],"appliedTo":[{"tenant":"nobody","segment":"x"}],"rules":[{"peers":[{"any":true}],"protocol":"udp","ports":[1,2,3,4,5,6]}]}`)
	f.Fuzz(func(t *testing.T, js string) {
		var p api.Policy
		if json.Unmarshal([]byte(js), &p) != nil {
			return
		}
		snap := traceSnap(t, p)
		for _, h := range []string{"h1", "h2", "h3"} {
			c := Compile(snap, h)
			for _, r := range append(c.Egress, c.Ingress...) {
				e := r.Expr()
				if strings.Contains(e, "\n") || !strings.HasPrefix(r.Comment(), "policy "+p.Name+" rule ") {
					t.Fatalf("rule %q comment %q", e, r.Comment())
				}
			}
		}
		for _, pk := range []Packet{
			{Src: netip.MustParseAddr("10.1.16.1"), Dst: netip.MustParseAddr("10.2.32.1"), Proto: "tcp", Port: 80},
			{Src: netip.MustParseAddr("10.3.33.1"), Dst: netip.MustParseAddr("10.1.16.1"), Proto: "icmp", ICMPType: 8},
			{Src: netip.MustParseAddr("192.168.0.3"), Dst: netip.MustParseAddr("10.2.48.1"), Proto: "udp", Port: 3},
		} {
			tr, err := Trace(snap, pk)
			if err != nil || (tr.Verdict != "allow" && tr.Verdict != "deny") {
				t.Fatalf("trace %+v: %+v %v", pk, tr, err)
			}
		}
	})
}
