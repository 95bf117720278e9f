package ipam

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
)

var (
	labelKeyRE   = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
)

// validateHost checks a host and returns its canonical stored form.
func validateHost(h api.Host) (api.Host, error) {
	if err := api.ValidateName("host", h.Name); err != nil {
		return api.Host{}, err
	}
	ip := h.IP.Unmap()
	if err := api.CheckHostIP(ip); err != nil {
		return api.Host{}, api.Errorf(api.ReasonInvalid, "host %s: %v", h.Name, err)
	}
	for k, v := range h.Labels {
		if len(k) > 253 || !labelKeyRE.MatchString(k) {
			return api.Host{}, api.Errorf(api.ReasonInvalid, "host %s: invalid label key %q", h.Name, k)
		}
		if !labelValueRE.MatchString(v) {
			return api.Host{}, api.Errorf(api.ReasonInvalid, "host %s: label %s: invalid value %q: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", h.Name, k, v)
		}
	}
	out := api.Host{Name: h.Name, IP: ip}
	if h.IP6.IsValid() {
		ip6 := h.IP6.Unmap()
		if err := api.CheckHostIP(ip6); err != nil {
			return api.Host{}, api.Errorf(api.ReasonInvalid, "host %s: ip6: %v", h.Name, err)
		}
		if !ip.Is4() || !ip6.Is6() {
			return api.Host{}, api.Errorf(api.ReasonInvalid, "host %s: ip6 %s: a second underlay address must be IPv6 beside an IPv4 ip (ip is %s)", h.Name, ip6, ip)
		}
		out.IP6 = ip6
	}
	if len(h.Labels) > 0 {
		out.Labels = maps.Clone(h.Labels)
	}
	return out, nil
}

// placeInput is what placeAttempt places, as read at revision rev.
type placeInput struct {
	rev     int64
	nets    []*mvccpb.KeyValue // networks to place hosts in
	hosts   []*mvccpb.KeyValue // existing hosts to place
	newHost *api.Host          // a host to create in the same transaction
	// guardNetworks makes the transaction fail if a network was added after
	// rev, so that a new host cannot miss a network added concurrently.
	guardNetworks bool
}

// placeAttempt gives each host a slot in each network where it has no valid
// one, in one transaction. It returns the host records it wrote, or errRetry.
// A host whose value does not decode is skipped: it cannot be placed, and
// must not keep every other host out of a network.
func (r *Registry) placeAttempt(ctx context.Context, in placeInput) (map[string]api.Host, error) {
	var reads []clientv3.Op
	var nets []api.Network
	for _, kv := range in.nets {
		n, err := decode[api.Network](kv)
		if err != nil {
			return nil, err
		}
		nets = append(nets, n)
		reads = append(reads, r.topoReads(n.Name, in.rev)...)
	}
	topos := make([]*topo, len(nets))
	if len(reads) > 0 {
		resp, err := r.read(ctx, "read topology", reads...)
		if err != nil {
			return nil, err
		}
		for i, n := range nets {
			p, err := planOf(n)
			if err != nil {
				return nil, err
			}
			if topos[i], err = r.loadTopo(n.Name, p, rangeKVs(resp, 2*i), rangeKVs(resp, 2*i+1)); err != nil {
				return nil, err
			}
		}
	}
	type rec struct {
		h       api.Host
		kv      *mvccpb.KeyValue
		changed bool
	}
	var recs []*rec
	for _, kv := range in.hosts {
		h, err := decode[api.Host](kv)
		if err != nil {
			r.skipUndecodable(kv, err)
			continue
		}
		recs = append(recs, &rec{h: h, kv: kv})
	}
	if in.newHost != nil {
		recs = append(recs, &rec{h: *in.newHost, changed: true})
	}
	for _, rc := range recs {
		for _, t := range topos {
			i := slices.IndexFunc(rc.h.Slots, func(s api.HostSlot) bool { return s.Network == t.net })
			if i >= 0 && t.slotHost(rc.h.Slots[i].Loc) == rc.h.Name {
				continue
			}
			if i >= 0 { // stale: the network was re-created since
				rc.h.Slots = slices.Delete(rc.h.Slots, i, i+1)
			}
			l, err := t.place(rc.h.Name, rc.h.Labels)
			if err != nil {
				return nil, err
			}
			cidr, err := t.plan.HostCIDR(l)
			if err != nil {
				return nil, api.Errorf(api.ReasonInternal, "host %s in network %s: %v", rc.h.Name, t.net, err)
			}
			rc.h.Slots = append(rc.h.Slots, api.HostSlot{Network: t.net, Loc: l, CIDR: cidr})
			sort.Slice(rc.h.Slots, func(a, b int) bool { return rc.h.Slots[a].Network < rc.h.Slots[b].Network })
			rc.changed = true
		}
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for i, n := range nets {
		cmps = append(cmps, unchanged(r.k.network(n.Name), in.nets[i]))
		c, o := r.topoTxn(topos[i])
		cmps, ops = append(cmps, c...), append(ops, o...)
	}
	if in.guardNetworks {
		cmps = append(cmps, quietSince(r.k.networks(), in.rev))
	}
	if in.newHost != nil {
		h := in.newHost
		cmps = append(cmps, absent(r.k.host(h.Name)), absent(r.k.hostIP(h.IP)))
		ops = append(ops, clientv3.OpPut(r.k.hostIP(h.IP), h.Name))
		if h.IP6.IsValid() { // claimed like ip: one host receives a v6 block's routes
			cmps = append(cmps, absent(r.k.hostIP(h.IP6)))
			ops = append(ops, clientv3.OpPut(r.k.hostIP(h.IP6), h.Name))
		}
	}
	out := map[string]api.Host{}
	for _, rc := range recs {
		if !rc.changed {
			continue
		}
		if rc.kv != nil {
			cmps = append(cmps, unchanged(r.k.host(rc.h.Name), rc.kv))
		}
		ops = append(ops, clientv3.OpPut(r.k.host(rc.h.Name), mustJSON(rc.h)))
		out[rc.h.Name] = rc.h
	}
	if len(ops) == 0 {
		return out, nil
	}
	if _, err := r.commit(ctx, "place hosts", cmps, ops); err != nil {
		return nil, err
	}
	return out, nil
}

// AddHost creates a host and places it in every network, in one
// transaction. Re-adding an identical host succeeds (created is false).
func (r *Registry) AddHost(ctx context.Context, h api.Host) (_ api.Host, created bool, _ error) {
	h, err := validateHost(h)
	if err != nil {
		return api.Host{}, false, err
	}
	op := "add host " + h.Name
	var out api.Host
	err = r.retry(ctx, op, func() error {
		reads := []clientv3.Op{
			clientv3.OpGet(r.k.host(h.Name)),
			clientv3.OpGet(r.k.hostIP(h.IP)),
			clientv3.OpGet(r.k.networks(), clientv3.WithPrefix())}
		if h.IP6.IsValid() {
			reads = append(reads, clientv3.OpGet(r.k.hostIP(h.IP6)))
		}
		resp, err := r.read(ctx, op, reads...)
		if err != nil {
			return err
		}
		if kv := oneKV(resp, 0); kv != nil {
			old, err := decode[api.Host](kv)
			if err != nil {
				return err
			}
			if old.IP != h.IP || old.IP6 != h.IP6 || !maps.Equal(old.Labels, h.Labels) {
				return api.Errorf(api.ReasonAlreadyExists, "host %s already exists with ip %s, ip6 %s and labels %v; remove it first to change it", h.Name, old.IP, old.IP6, old.Labels)
			}
			// Identical: complete its placement if a network was added meanwhile.
			in := placeInput{rev: resp.Header.Revision, nets: rangeKVs(resp, 2), hosts: []*mvccpb.KeyValue{kv}}
			done, err := r.placeAttempt(ctx, in)
			if err != nil {
				return err
			}
			out, created = old, false
			if n, ok := done[h.Name]; ok {
				out = n
			}
			return nil
		}
		if kv := oneKV(resp, 1); kv != nil {
			return api.Errorf(api.ReasonConflict, "ip %s is already the address of host %s", h.IP, kv.Value)
		}
		if h.IP6.IsValid() {
			if kv := oneKV(resp, 3); kv != nil {
				return api.Errorf(api.ReasonConflict, "ip6 %s is already the address of host %s", h.IP6, kv.Value)
			}
		}
		if err := outsidePools(h, rangeKVs(resp, 2)); err != nil {
			return err
		}
		nh := h
		done, err := r.placeAttempt(ctx, placeInput{rev: resp.Header.Revision, nets: rangeKVs(resp, 2), newHost: &nh, guardNetworks: true})
		if err != nil {
			return err
		}
		out, created = done[h.Name], true
		return nil
	})
	return out, created, err
}

// outsidePools fails when h's underlay address is in one of the networks
// (read with h's placement, whose transaction fails if a network is added
// after that read). Other hosts would route h's blocks into a pool.
func outsidePools(h api.Host, nets []*mvccpb.KeyValue) error {
	for _, kv := range nets {
		n, err := decode[api.Network](kv)
		if err != nil {
			return err
		}
		for _, ip := range []netip.Addr{h.IP, h.IP6} {
			if pfx, err := netip.ParsePrefix(n.CIDR); err == nil && ip.IsValid() && pfx.Contains(ip) {
				return api.Errorf(api.ReasonInvalid, "host %s: ip %s is in network %s (%s); a host's underlay address may not be in a pool", h.Name, ip, n.Name, n.CIDR)
			}
		}
	}
	return nil
}

// hostIPs is the prefix of the hostips/ claims (keys.go lists the layout).
func (k keys) hostIPs() string { return k.p + "hostips/" }

// GetHost returns one host with its slots.
func (r *Registry) GetHost(ctx context.Context, name string) (api.Host, error) {
	resp, err := r.cli.Get(ctx, r.k.host(name))
	if err != nil {
		return api.Host{}, storeErr("get host "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.Host{}, api.Errorf(api.ReasonNotFound, "host %s not found", name)
	}
	return decode[api.Host](resp.Kvs[0])
}

// ListHosts returns every host, by name, leaving out any that does not decode.
func (r *Registry) ListHosts(ctx context.Context) ([]api.Host, error) {
	resp, err := r.cli.Get(ctx, r.k.hosts(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list hosts", err)
	}
	return decodeList[api.Host](r, resp.Kvs), nil
}

// RemoveHost deletes a host that has no addresses and frees its slots.
func (r *Registry) RemoveHost(ctx context.Context, name string) error {
	op := "remove host " + name
	return r.retry(ctx, op, func() error {
		resp, err := r.read(ctx, op, clientv3.OpGet(r.k.host(name)), clientv3.OpGet(r.k.networks(), clientv3.WithPrefix()))
		if err != nil {
			return err
		}
		kv := oneKV(resp, 0)
		if kv == nil {
			return api.Errorf(api.ReasonNotFound, "host %s not found", name)
		}
		rev := resp.Header.Revision
		h, err := decode[api.Host](kv)
		if err != nil {
			return err
		}
		// The ip6 claim is released when it is this host's. A host added
		// before ip6 was claimed has none (and another host may hold it).
		var ip6Claim *mvccpb.KeyValue
		if h.IP6.IsValid() {
			cr, err := r.read(ctx, op, clientv3.OpGet(r.k.hostIP(h.IP6)))
			if err != nil {
				return err
			}
			ip6Claim = oneKV(cr, 0)
		}
		nets := map[string]api.Network{}
		for _, nkv := range rangeKVs(resp, 1) {
			n, err := decode[api.Network](nkv)
			if err != nil {
				return err
			}
			nets[n.Name] = n
		}
		var slots []api.HostSlot
		var reads []clientv3.Op
		for _, s := range h.Slots {
			if _, ok := nets[s.Network]; !ok {
				continue
			}
			slots = append(slots, s)
			reads = append(reads, r.topoReads(s.Network, rev)...)
			lo, hi := r.k.ip(s.Network, s.CIDR.Masked().Addr()), r.k.ip(s.Network, lastAddr(s.CIDR))+"\x00"
			reads = append(reads, clientv3.OpGet(lo, clientv3.WithRange(hi), clientv3.WithCountOnly(), clientv3.WithRev(rev)))
		}
		cmps := []clientv3.Cmp{unchanged(r.k.host(name), kv), clientv3.Compare(clientv3.Value(r.k.hostIP(h.IP)), "=", name)}
		ops := []clientv3.Op{clientv3.OpDelete(r.k.host(name)), clientv3.OpDelete(r.k.hostIP(h.IP))}
		if h.IP6.IsValid() {
			cmps = append(cmps, unchanged(r.k.hostIP(h.IP6), ip6Claim))
			if ip6Claim != nil && string(ip6Claim.Value) == name {
				ops = append(ops, clientv3.OpDelete(r.k.hostIP(h.IP6)))
			}
		}
		if len(reads) > 0 {
			tr, err := r.read(ctx, op, reads...)
			if err != nil {
				return err
			}
			for i, s := range slots {
				p, err := planOf(nets[s.Network])
				if err != nil {
					return err
				}
				t, err := r.loadTopo(s.Network, p, rangeKVs(tr, 3*i), rangeKVs(tr, 3*i+1))
				if err != nil {
					return err
				}
				if t.slotHost(s.Loc) != name {
					continue // stale: the network was re-created since
				}
				if n := tr.Responses[3*i+2].GetResponseRange().Count; n > 0 {
					return api.Errorf(api.ReasonConflict, "host %s still has %d allocated address(es) in network %s; release them first", name, n, s.Network)
				}
				t.unplace(name, s.Loc)
				c, o := r.topoTxn(t)
				lo, hi := r.k.ip(s.Network, s.CIDR.Masked().Addr()), r.k.ip(s.Network, lastAddr(s.CIDR))+"\x00"
				cmps = append(append(cmps, c...), clientv3.Compare(clientv3.CreateRevision(lo), "=", 0).WithRange(hi))
				ops = append(ops, o...)
			}
		}
		_, err = r.commit(ctx, op, cmps, ops)
		return err
	})
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := len(b)*8 - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// dropStaleSlots removes, from every host, slots of networks that no longer
// exist. Hosts that do not decode are skipped.
func (r *Registry) dropStaleSlots(ctx context.Context) error {
	return r.retry(ctx, "drop stale host slots", func() error {
		resp, err := r.read(ctx, "drop stale host slots",
			clientv3.OpGet(r.k.networks(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
			clientv3.OpGet(r.k.hosts(), clientv3.WithPrefix()))
		if err != nil {
			return err
		}
		live := map[string]bool{}
		for _, kv := range rangeKVs(resp, 0) {
			live[string(kv.Key[len(r.k.networks()):])] = true
		}
		for _, kv := range rangeKVs(resp, 1) {
			h, err := decode[api.Host](kv)
			if err != nil {
				r.skipUndecodable(kv, err)
				continue
			}
			n := len(h.Slots)
			h.Slots = slices.DeleteFunc(h.Slots, func(s api.HostSlot) bool { return !live[s.Network] })
			if len(h.Slots) == n {
				continue
			}
			if len(h.Slots) == 0 {
				h.Slots = nil
			}
			if _, err := r.commit(ctx, "drop stale slots of host "+h.Name,
				[]clientv3.Cmp{unchanged(r.k.host(h.Name), kv)},
				[]clientv3.Op{clientv3.OpPut(r.k.host(h.Name), mustJSON(h))}); err != nil {
				return err
			}
		}
		return nil
	})
}

// Repair finishes work an interrupted romanad may have left: slots of
// removed networks are dropped, every host is placed in every network,
// segment removals left half-done are withdrawn, and address claims are
// reconciled with the addresses (reconcileClaims). Networks and hosts that
// do not decode are skipped, so that one bad value does not keep romanad
// from starting.
func (r *Registry) Repair(ctx context.Context) error {
	if err := r.dropStaleSlots(ctx); err != nil {
		return err
	}
	if err := r.withdrawSegmentRemovals(ctx); err != nil {
		return err
	}
	if err := r.reconcileClaims(ctx); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	nets, err := r.ListNetworks(ctx)
	if err != nil {
		return err
	}
	for _, n := range nets {
		if err := r.placeAll(ctx, n.Name); err != nil {
			return fmt.Errorf("repair: %w", err)
		}
	}
	return nil
}
