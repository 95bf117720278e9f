package scale

import "github.com/romana/romana/api"

// The two schemes Romana's design avoids, counted for the same snapshot
// (same hosts, racks, tenants, isolation modes and endpoints). Both
// enforce the same isolation as Romana (tenant or segment, per tenant);
// neither has tenant or segment bits in its addresses, so a rule cannot
// match a tenant by prefix and must list its members. The fixed rules
// every scheme has (established, anti-spoofing, default drop) and
// policies are left out of both models; Romana's counts include its own.
//
// An isolation class is what one endpoint may talk to: its tenant when
// the tenant isolates by tenant, its (tenant, segment) when by segment;
// tenants with isolation "none" form no class.
type class struct{ tenant, segment string }

// classes returns each address's class (ok false: no class) and the
// number of endpoints in each class in the whole cluster.
func classes(snap api.Snapshot) (of func(api.Address) (class, bool), size map[class]int) {
	iso := map[string]string{}
	for _, t := range snap.Tenants {
		iso[t.Name] = t.Isolation
	}
	of = func(a api.Address) (class, bool) {
		switch iso[a.Tenant] {
		case api.IsolationSegment:
			return class{a.Tenant, a.Segment}, true
		case api.IsolationNone:
			return class{}, false
		}
		return class{tenant: a.Tenant}, true // tenant (the default)
	}
	size = map[class]int{}
	for _, a := range snap.Addresses {
		if c, ok := of(a); ok {
			size[c]++
		}
	}
	return of, size
}

// rackOf maps host names to their "rack" label.
func rackOf(snap api.Snapshot) map[string]string {
	m := map[string]string{}
	for _, h := range snap.Hosts {
		m[h.Name] = h.Labels["rack"]
	}
	return m
}

// PerEndpoint counts the per-endpoint scheme (every workload address
// announced and filtered on its own, as Calico does without route
// aggregation), for host on rack:
//
//   - host routes: one /32 per endpoint of the cluster (local ones to
//     their interface, remote ones via their host);
//   - top-of-rack: one /32 per endpoint in the rack, plus a default
//     toward the spine; spine: one /32 per endpoint;
//   - rules: two per local endpoint: its line in the dispatch chain (jump
//     by interface to the endpoint's chain) and, in its chain, one
//     `ip saddr @class accept` for its isolation class;
//   - elements: one set per class with a local endpoint, holding every
//     endpoint of that class in the cluster.
func PerEndpoint(snap api.Snapshot, host, rack string) Counts {
	of, size := classes(snap)
	racks := rackOf(snap)
	var c Counts
	local := map[class]bool{}
	for _, a := range snap.Addresses {
		c.HostRoutes++
		c.SpineRoutes++
		if racks[a.Host] == rack {
			c.ToRRoutes++
		}
		if a.Host == host {
			c.Rules += 2
			if cl, ok := of(a); ok {
				local[cl] = true
			}
		}
	}
	c.ToRRoutes++ // default toward the spine
	for cl := range local {
		c.Elements += size[cl]
	}
	return c
}

// PerBlock counts the per-block scheme (addresses handed to hosts in
// blocks of blockSize, 64 in Calico's IPAM, filled one after the other
// and shared by all tenants: one route per block, no tenant bits), for
// host on rack:
//
//   - blocks: a host with n endpoints holds ceil(n / blockSize) blocks;
//   - host routes: one /32 per local endpoint (to its interface) plus one
//     per block of every other host;
//   - top-of-rack: one per block of the rack's hosts, plus a default
//     toward the spine; spine: one per block (blocks are not aligned with
//     racks, so nothing aggregates);
//   - rules: one verdict-map rule (destination address -> class chain)
//     plus one `ip saddr @class accept` per class with a local endpoint;
//   - elements: the map's one element per local endpoint, plus one set
//     per class with a local endpoint holding every endpoint of that
//     class in the cluster (a block mixes tenants, so the set cannot list
//     blocks).
func PerBlock(snap api.Snapshot, host, rack string, blockSize int) Counts {
	of, size := classes(snap)
	racks := rackOf(snap)
	perHost := map[string]int{}
	local := map[class]bool{}
	var c Counts
	for _, a := range snap.Addresses {
		perHost[a.Host]++
		if a.Host == host {
			c.HostRoutes++
			c.Elements++
			if cl, ok := of(a); ok {
				local[cl] = true
			}
		}
	}
	for h, n := range perHost {
		blocks := (n + blockSize - 1) / blockSize
		c.SpineRoutes += blocks
		if racks[h] == rack {
			c.ToRRoutes += blocks
		}
		if h != host {
			c.HostRoutes += blocks
		}
	}
	c.ToRRoutes++ // default toward the spine
	c.Rules = 1 + len(local)
	for cl := range local {
		c.Elements += size[cl]
	}
	return c
}
