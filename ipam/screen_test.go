package ipam_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// TestPoolHostRace adds, at the same time, hosts whose underlay addresses
// are in a pool and the network of that pool, many rounds over: in the
// end either the network exists and no host's address is in it, or the
// network was refused. Neither check (the network's over the hosts, the
// host's over the networks) may miss what the other committed meanwhile.
func TestPoolHostRace(t *testing.T) {
	r, _ := registry(t)
	ctx := context.Background()
	fields := []plan.Field{{Name: "host", Bits: 6}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}
	for round := 0; round < 8; round++ {
		pool := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + round), 0, 0}), 16)
		net := api.Network{Name: fmt.Sprintf("n%d", round), CIDR: pool.String(), Fields: fields}
		var wg sync.WaitGroup
		var netErr error
		wg.Go(func() { _, _, netErr = r.AddNetwork(ctx, net) })
		for i := 0; i < 3; i++ {
			wg.Go(func() {
				ip := netip.AddrFrom4([4]byte{172, byte(16 + round), 0, byte(1 + i)})
				_, _, err := r.AddHost(ctx, api.Host{Name: fmt.Sprintf("r%dh%d", round, i), IP: ip})
				if err != nil && api.ReasonOf(err) != api.ReasonInvalid {
					t.Errorf("add host %s: %v", ip, err)
				}
			})
		}
		wg.Wait()
		if netErr != nil && api.ReasonOf(netErr) != api.ReasonInvalid {
			t.Fatalf("add network %s: %v", pool, netErr)
		}
		hosts, err := r.ListHosts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		nets, err := r.ListNetworks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nets {
			p := netip.MustParsePrefix(n.CIDR)
			for _, h := range hosts {
				if p.Contains(h.IP) {
					t.Fatalf("round %d: host %s (%s) is in network %s (%s)", round, h.Name, h.IP, n.Name, n.CIDR)
				}
			}
		}
	}
}
