package agent

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
)

// An address set's events alone (put, members changed, deleted) make the
// agent rewrite the set's elements: nothing else changes meanwhile.
func TestAddressSetEventsApplied(t *testing.T) {
	w := newWorld()
	w.snap.Policies = []api.Policy{{Name: "web", Direction: []string{"ingress"}, AppliedTo: []api.Selector{{Tenant: "acme", Set: "web"}},
		Rules: []api.Rule{{Peers: []api.Peer{{Set: "clients"}}, Protocol: "tcp", Ports: []uint16{80}}}}}
	r := newRig(t, w.snap)
	r.run(time.Hour) // no resync: only events drive it
	expect.Eventually(t, "initial", within, r.converged)
	set := func(name string, members ...string) {
		s := api.AddressSet{Name: name}
		for _, m := range members {
			s.Addresses = append(s.Addresses, netip.MustParseAddr(m))
		}
		r.src.put(api.KindAddressSet, name, s)
	}
	// has reports whether the agent converged and the table holds (or,
	// with "!", lacks) each of want.
	has := func(want ...string) func() error {
		return func() error {
			if err := r.converged(); err != nil {
				return err
			}
			d := r.nft.Dump()
			for _, w := range want {
				present := !strings.HasPrefix(w, "!")
				w = strings.TrimPrefix(w, "!")
				if strings.Contains(d, w) != present {
					return fmt.Errorf("want %q present=%v; table:\n%s", w, present, d)
				}
			}
			return nil
		}
	}
	set("web", "10.1.16.1")
	expect.Eventually(t, "set put", within, has("as-web-4 { 10.1.16.1 }"))
	set("clients", "10.2.32.1", "10.2.32.2")
	expect.Eventually(t, "other set put", within, has("as-clients-4 { 10.2.32.1 }", "as-clients-4 { 10.2.32.2 }"))
	set("web", "10.1.16.2")
	expect.Eventually(t, "members changed", within, has("as-web-4 { 10.1.16.2 }", "!10.1.16.1"))
	r.src.del(api.KindAddressSet, "clients")
	expect.Eventually(t, "set deleted: empty", within, has("!10.2.32.1", "!10.2.32.2", "as-web-4 { 10.1.16.2 }"))
}
