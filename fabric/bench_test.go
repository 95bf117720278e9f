package fabric

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// scaleSnapshot is a leaf-spine fabric of racks x hostsPerRack hosts, one
// top-of-rack per rack and one spine, with endpoints spread evenly over
// the hosts in network "pods" (10.0.0.0/8: rack 4 | host 4 | tenant 4 |
// segment 4 | endpoint 8).
func scaleSnapshot(tb testing.TB, racks, hostsPerRack, endpoints int) api.Snapshot {
	b := newBuilder(tb).network("pods", "10.0.0.0/8", plan.Field{Name: "rack", Bits: 4}, plan.Field{Name: "host", Bits: 4},
		plan.Field{Name: "tenant", Bits: 4}, plan.Field{Name: "segment", Bits: 4})
	spine := api.Device{Name: "spine1", Kind: api.DeviceSpine, ASN: 65100}
	for r := 0; r < racks; r++ {
		rack := fmt.Sprintf("r%d", r+1)
		for h := 0; h < hostsPerRack; h++ {
			b.host(fmt.Sprintf("h%d-%d", r+1, h+1), fmt.Sprintf("192.168.%d.%d", r+1, h+11), "rack", rack)
		}
		tor := fmt.Sprintf("tor%d", r+1)
		b.device(api.Device{Name: tor, Kind: api.DeviceToR, Group: map[string]string{"rack": rack}, ASN: uint32(65101 + r),
			Links: []api.DeviceLink{link("", fmt.Sprintf("192.168.%d.1/24", r+1), ""),
				link("spine1", fmt.Sprintf("172.16.%d.%d/31", r/128, 2*(r%128)+1), fmt.Sprintf("172.16.%d.%d", r/128, 2*(r%128)))}})
	}
	b.device(spine)
	hosts := racks * hostsPerRack
	b.endpoints("pods", (endpoints+hosts-1)/hosts)
	b.snap.Addresses = roundRobin(b.snap.Addresses, hosts, endpoints)
	return b.snap
}

// roundRobin keeps n addresses taking one per host in turn (the builder
// lists perHost addresses for each host, host after host).
func roundRobin(addrs []api.Address, hosts, n int) []api.Address {
	per := len(addrs) / hosts
	out := make([]api.Address, 0, n)
	for i := 0; len(out) < n; i++ {
		out = append(out, addrs[(i%hosts)*per+i/hosts])
	}
	return out
}

// alternatives counts the routes other schemes would need for the same
// endpoints: per-endpoint (/32 host routes) and per-block (/26 blocks of
// 64 addresses handed to hosts on demand, not aligned with the topology,
// as Calico's IPAM does). A top-of-rack needs its rack's routes plus one
// default toward the spine; a spine needs every route.
func alternatives(snap api.Snapshot, rack string) (torEP, spineEP, torBlk, spineBlk int) {
	inRack := map[string]bool{}
	for _, h := range snap.Hosts {
		inRack[h.Name] = h.Labels["rack"] == rack
	}
	blocks := map[netip.Prefix]string{}
	for _, a := range snap.Addresses {
		spineEP++
		if inRack[a.Host] {
			torEP++
		}
		blocks[netip.PrefixFrom(a.IP, 26).Masked()] = a.Host
	}
	for _, h := range blocks {
		spineBlk++
		if inRack[h] {
			torBlk++
		}
	}
	return torEP + 1, spineEP, torBlk + 1, spineBlk
}

// BenchmarkRouteScale computes the tables of a top-of-rack and the spine as
// endpoints and hosts grow, and reports route counts next to what the
// per-endpoint and per-block schemes would need. Run:
//
//	go test ./fabric -run '^$' -bench RouteScale -benchtime 1x
func BenchmarkRouteScale(b *testing.B) {
	for _, sz := range []struct{ racks, hostsPerRack, endpoints int }{
		{4, 4, 100}, {4, 4, 1000}, {4, 4, 10000},
		{8, 8, 10000}, {16, 16, 10000}, {16, 16, 100000},
	} {
		name := fmt.Sprintf("racks=%d/hosts=%d/endpoints=%d", sz.racks, sz.racks*sz.hostsPerRack, sz.endpoints)
		b.Run(name, func(b *testing.B) {
			snap := scaleSnapshot(b, sz.racks, sz.hostsPerRack, sz.endpoints)
			if len(snap.Addresses) != sz.endpoints {
				b.Fatalf("%d addresses, want %d", len(snap.Addresses), sz.endpoints)
			}
			var tor, spine Table
			for b.Loop() {
				var err error
				if tor, err = Compute(snap, "tor1"); err != nil {
					b.Fatal(err)
				}
				if spine, err = Compute(snap, "spine1"); err != nil {
					b.Fatal(err)
				}
			}
			if len(tor.Problems)+len(spine.Problems) > 0 {
				b.Fatalf("problems: %q %q", tor.Problems, spine.Problems)
			}
			torEP, spineEP, torBlk, spineBlk := alternatives(snap, "r1")
			b.ReportMetric(float64(len(tor.Routes)), "tor-routes")
			b.ReportMetric(float64(len(spine.Routes)), "spine-routes")
			b.ReportMetric(float64(torBlk), "tor-per-block")
			b.ReportMetric(float64(spineBlk), "spine-per-block")
			b.ReportMetric(float64(torEP), "tor-per-endpoint")
			b.ReportMetric(float64(spineEP), "spine-per-endpoint")
		})
	}
}
