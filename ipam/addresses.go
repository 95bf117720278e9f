package ipam

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// validateRequest checks an address request's syntax.
func validateRequest(req api.AddressRequest) error {
	if err := api.ValidateAddressName(req.Name); err != nil {
		return err
	}
	if req.Network != "" {
		if err := api.ValidateName("network", req.Network); err != nil {
			return err
		}
	}
	for _, f := range []struct{ kind, v string }{{"host", req.Host}, {"tenant", req.Tenant}, {"segment", req.Segment}} {
		if f.v == "" {
			return api.Errorf(api.ReasonInvalid, "address %s: %s is required", req.Name, f.kind)
		}
		if err := api.ValidateName(f.kind, f.v); err != nil {
			return err
		}
	}
	if req.Interface != "" {
		if err := api.CheckEndpointInterface(req.Interface); err != nil {
			return api.Errorf(api.ReasonInvalid, "address %s: %v", req.Name, err)
		}
	}
	for k := range req.Attrs {
		if k == "" || len(k) > 253 {
			return api.Errorf(api.ReasonInvalid, "address %s: attribute names must have 1-253 characters", req.Name)
		}
	}
	return nil
}

// Allocate returns the address named req.Name, allocating the smallest free
// endpoint of the segment's block on the host if the name has none yet
// (created is true then). The same name with a different host, tenant,
// segment or network is a conflict.
func (r *Registry) Allocate(ctx context.Context, req api.AddressRequest) (_ api.Address, created bool, _ error) {
	if err := validateRequest(req); err != nil {
		return api.Address{}, false, err
	}
	var out api.Address
	timeouts := 0
	err := r.retry(ctx, "allocate "+req.Name, func() error {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		var err error
		out, created, err = r.allocateAttempt(actx, req)
		if err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) && timeouts < maxAttemptTimeouts {
			timeouts++
			r.log.Warn("allocation attempt timed out; retrying", "name", req.Name, "after", attemptTimeout, "err", err)
			return errAttemptTimeout
		}
		return err
	})
	if err == nil && created {
		r.allocations.Add(1)
	}
	return out, created, err
}

// An allocation attempt holds its block's in-process lock across its store
// calls. A transaction that an etcd follower forwarded to a leader that has
// just died is failed by etcd only after its request timeout (7 s by
// default), and every allocation in that block waits behind it meanwhile
// (TestFaultsAllocations saw acknowledgements pause 4 to 6 s after a leader
// kill, with the new leader elected in 1 to 2.5 s). So each attempt gets
// attemptTimeout, and one that runs out is retried, up to
// maxAttemptTimeouts times: allocation by name is idempotent, and a
// transaction that did commit is found by name on the retry.
const (
	attemptTimeout     = 2 * time.Second
	maxAttemptTimeouts = 3
)

func (r *Registry) allocateAttempt(ctx context.Context, req api.AddressRequest) (api.Address, bool, error) {
	op := "allocate " + req.Name
	resp, err := r.read(ctx, op,
		clientv3.OpGet(r.k.address(req.Name)),
		clientv3.OpGet(r.k.host(req.Host)),
		clientv3.OpGet(r.k.tenant(req.Tenant)),
		clientv3.OpGet(r.k.segment(req.Tenant, req.Segment)),
		clientv3.OpGet(r.k.networks(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.segmentRemoval(req.Tenant, req.Segment), clientv3.WithCountOnly()))
	if err != nil {
		return api.Address{}, false, err
	}
	if kv := oneKV(resp, 0); kv != nil {
		a, err := decode[api.Address](kv)
		if err != nil {
			return api.Address{}, false, err
		}
		if a.Host != req.Host || a.Tenant != req.Tenant || a.Segment != req.Segment || (req.Network != "" && req.Network != a.Network) {
			return api.Address{}, false, api.Errorf(api.ReasonAlreadyExists,
				"address %s is already allocated (%s in network %s, host %s, segment %s/%s); release it first to move it",
				req.Name, a.IP, a.Network, a.Host, a.Tenant, a.Segment)
		}
		return a, false, nil
	}
	hkv, tkv, skv := oneKV(resp, 1), oneKV(resp, 2), oneKV(resp, 3)
	switch {
	case hkv == nil:
		return api.Address{}, false, api.Errorf(api.ReasonNotFound, "host %s not found", req.Host)
	case tkv == nil:
		return api.Address{}, false, api.Errorf(api.ReasonNotFound, "tenant %s not found", req.Tenant)
	case skv == nil:
		return api.Address{}, false, api.Errorf(api.ReasonNotFound, "segment %s/%s not found", req.Tenant, req.Segment)
	case resp.Responses[5].GetResponseRange().Count > 0:
		return api.Address{}, false, api.Errorf(api.ReasonConflict, "segment %s/%s is being removed", req.Tenant, req.Segment)
	}
	h, err := decode[api.Host](hkv)
	if err != nil {
		return api.Address{}, false, err
	}
	t, err := decode[api.Tenant](tkv)
	if err != nil {
		return api.Address{}, false, err
	}
	s, err := decode[api.Segment](skv)
	if err != nil {
		return api.Address{}, false, err
	}
	nkv, n, err := r.chooseNetwork(rangeKVs(resp, 4), req)
	if err != nil {
		return api.Address{}, false, err
	}
	p, err := planOf(n)
	if err != nil {
		return api.Address{}, false, err
	}
	var slot *api.HostSlot
	for i := range h.Slots {
		if h.Slots[i].Network == n.Name {
			slot = &h.Slots[i]
		}
	}
	if slot == nil { // an interrupted network add: place the host now
		if _, err := r.placeAttempt(ctx, placeInput{rev: resp.Header.Revision, nets: []*mvccpb.KeyValue{nkv}, hosts: []*mvccpb.KeyValue{hkv}}); err != nil {
			return api.Address{}, false, err
		}
		return api.Address{}, false, errRetry
	}
	if t.ID > plan.MaxID(p.TenantBits()) {
		return api.Address{}, false, api.Errorf(api.ReasonExhausted,
			"tenant %s has id %d, which does not fit the %d tenant bits of network %s (ids 0-%d)", t.Name, t.ID, p.TenantBits(), n.Name, plan.MaxID(p.TenantBits()))
	}
	if s.ID > plan.MaxID(p.SegmentBits()) {
		return api.Address{}, false, api.Errorf(api.ReasonExhausted,
			"segment %s/%s has id %d, which does not fit the %d segment bits of network %s (ids 0-%d)", t.Name, s.Name, s.ID, p.SegmentBits(), n.Name, plan.MaxID(p.SegmentBits()))
	}
	first, last := p.EndpointRange()
	lo, err := p.Address(slot.Loc, t.ID, s.ID, first)
	if err != nil {
		return api.Address{}, false, api.Errorf(api.ReasonInternal, "host %s in network %s: %v", h.Name, n.Name, err)
	}
	hi, _ := p.Address(slot.Loc, t.ID, s.ID, last)

	// Serialise this process's allocations in one block: they would only
	// conflict in etcd. Other processes are kept apart by the transaction.
	mu := r.stripeFor(n.Name + "/" + lo.String())
	mu.Lock()
	defer mu.Unlock()
	slotKey := r.k.slotID(n.Name, slot.Loc)
	blk := block{net: n.Name, plan: p, loc: slot.Loc, tenant: t.ID, segment: s.ID, first: first, last: last, lo: lo}
	br, err := r.read(ctx, op,
		clientv3.OpGet(slotKey),
		clientv3.OpGet(r.k.ipNext(n.Name, lo)),
		clientv3.OpGet(r.k.ipFree(n.Name, lo), clientv3.WithRange(r.k.ipFree(n.Name, hi)+"\x00"), clientv3.WithLimit(1), clientv3.WithKeysOnly()))
	if err != nil {
		return api.Address{}, false, err
	}
	skv0 := oneKV(br, 0)
	if skv0 == nil || string(skv0.Value) != h.Name { // stale slot: re-place
		if _, err := r.placeAttempt(ctx, placeInput{rev: br.Header.Revision, nets: []*mvccpb.KeyValue{nkv}, hosts: []*mvccpb.KeyValue{hkv}}); err != nil {
			return api.Address{}, false, err
		}
		return api.Address{}, false, errRetry
	}
	blk.slotRev = skv0.CreateRevision
	next := blk.cursor(oneKV(br, 1))
	// The smallest free endpoint is the smaller of the first free hint and
	// the cursor (every unclaimed endpoint below the cursor has a hint).
	ep, fromCursor := next, true
	if kv := oneKV(br, 2); kv != nil {
		if e, ok := blk.endpointOf(ipFromKey(string(kv.Key))); ok && e < next {
			ep, fromCursor = e, false
		}
	}
	if fromCursor && next > last { // no fresh space and no hint: look for a hole the hints missed
		e, ok, used, err := r.findHole(ctx, op, blk, first, last)
		if err != nil {
			return api.Address{}, false, err
		}
		if !ok {
			return api.Address{}, false, api.Errorf(api.ReasonExhausted, "segment %s/%s on host %s is full: %d of %d addresses in use",
				t.Name, s.Name, h.Name, used, p.EndpointsPerSegment())
		}
		ep = e
	}
	ip, err := p.Address(slot.Loc, t.ID, s.ID, ep)
	if err != nil {
		return api.Address{}, false, api.Errorf(api.ReasonInternal, "%v", err)
	}
	a := api.Address{Name: req.Name, IP: ip, Network: n.Name, Host: h.Name, Tenant: t.Name, Segment: s.Name,
		Interface: req.Interface, Attrs: req.Attrs}
	ipKey := r.k.ip(n.Name, ip)
	ops := []clientv3.Op{clientv3.OpPut(r.k.address(req.Name), mustJSON(a)), clientv3.OpPut(ipKey, req.Name),
		clientv3.OpDelete(r.k.ipFree(n.Name, ip))}
	if ep >= next {
		ops = append(ops, clientv3.OpPut(r.k.ipNext(n.Name, lo), blk.cursorValue(ep+1)))
	}
	resp, err = r.cli.Txn(ctx).If(
		absent(r.k.address(req.Name)), absent(ipKey),
		unchanged(r.k.host(h.Name), hkv), unchanged(r.k.tenant(t.Name), tkv),
		unchanged(r.k.segment(t.Name, s.Name), skv), absent(r.k.segmentRemoval(t.Name, s.Name)), unchanged(r.k.network(n.Name), nkv),
		clientv3.Compare(clientv3.Value(slotKey), "=", h.Name),
	).Then(ops...).Else(clientv3.OpGet(ipKey, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return api.Address{}, false, storeErr(op, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count > 0 { // the hint named a claimed endpoint
			if err := r.dropHint(ctx, op, blk, ep, next, fromCursor); err != nil {
				return api.Address{}, false, err
			}
		}
		return api.Address{}, false, errRetry
	}
	return a, true, nil
}

// Finding a free endpoint without reading the block. Each segment block
// (network, host slot, tenant, segment) has two kinds of hint keys beside
// its ips/ claims:
//
//	ipnext/NET/HEX(first address)  "SLOTREV NEXT": every endpoint from NEXT
//	                               on is unclaimed as far as allocations
//	                               know (SLOTREV: the slot claim's create
//	                               revision, so that a re-created network
//	                               or re-placed host starts afresh)
//	ipfree/NET/HEX(address)        "": released, probably free
//
// Allocation takes the smaller of the first ipfree key in the block's range
// and NEXT, which is the smallest free endpoint while the hints are right:
// one bounded read, whatever the block holds. The claim (ips/, created with
// CreateRevision == 0) stays the only truth: a hint that names a claimed
// endpoint (written by an older romanad, or a release racing) fails the
// claim's compare, and is dropped or moved past before the retry. Releases
// by an older romanad write no ipfree key: such holes are found when the
// block looks full (findHole), and by Repair.
func (k keys) ipNext(net string, lo netip.Addr) string {
	return k.p + "ipnext/" + net + "/" + hex.EncodeToString(lo.AsSlice())
}
func (k keys) ipFree(net string, a netip.Addr) string {
	return k.p + "ipfree/" + net + "/" + hex.EncodeToString(a.AsSlice())
}

// block is one segment block of one host slot.
type block struct {
	net             string
	plan            *plan.Plan
	loc             plan.Loc
	tenant, segment uint64
	first, last     uint64     // endpoint range
	lo              netip.Addr // its first address (its cursor's key)
	slotRev         int64      // the slot claim's create revision
}

// cursor returns the block's NEXT from its ipnext key (first when absent
// or written for an earlier slot).
func (b block) cursor(kv *mvccpb.KeyValue) uint64 {
	if kv == nil {
		return b.first
	}
	rev, next, ok := strings.Cut(string(kv.Value), " ")
	if !ok || rev != strconv.FormatInt(b.slotRev, 10) {
		return b.first
	}
	n, err := strconv.ParseUint(next, 10, 64)
	if err != nil || n < b.first {
		return b.first
	}
	return n
}

func (b block) cursorValue(next uint64) string {
	return strconv.FormatInt(b.slotRev, 10) + " " + strconv.FormatUint(next, 10)
}

// endpointOf returns the endpoint of a, if a is in the block.
func (b block) endpointOf(a netip.Addr, ok bool) (uint64, bool) {
	if !ok {
		return 0, false
	}
	d, err := b.plan.Decode(a)
	if err != nil || d.Tenant != b.tenant || d.Segment != b.segment || d.Loc.Host != b.loc.Host || !slices.Equal(d.Loc.Groups, b.loc.Groups) || d.Endpoint < b.first || d.Endpoint > b.last {
		return 0, false
	}
	return d.Endpoint, true
}

// scanPage is how many claims one read of a block's key range returns.
const scanPage = 256

// firstUnclaimed returns the first endpoint in [from, to] without a claim,
// reading the claims from from on a page at a time; it also counts the
// claims it read.
func (r *Registry) firstUnclaimed(ctx context.Context, op string, b block, from, to uint64) (ep uint64, found bool, claims int, _ error) {
	hi, err := b.plan.Address(b.loc, b.tenant, b.segment, to)
	if err != nil {
		return 0, false, 0, api.Errorf(api.ReasonInternal, "%v", err)
	}
	end := r.k.ip(b.net, hi) + "\x00"
	expect := from
	for expect <= to {
		a, err := b.plan.Address(b.loc, b.tenant, b.segment, expect)
		if err != nil {
			return 0, false, claims, api.Errorf(api.ReasonInternal, "%v", err)
		}
		resp, err := r.cli.Get(ctx, r.k.ip(b.net, a), clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(scanPage))
		if err != nil {
			return 0, false, claims, storeErr(op, err)
		}
		for _, kv := range resp.Kvs {
			e, ok := b.endpointOf(ipFromKey(string(kv.Key)))
			if !ok {
				continue
			}
			claims++
			if e > expect {
				return expect, true, claims, nil
			}
			expect = e + 1
		}
		if !resp.More {
			break
		}
	}
	return expect, expect <= to, claims, nil
}

// findHole looks through the whole block for an unclaimed endpoint that no
// hint names (released by an older romanad): only when the block looks
// full, so the block's size is paid only then. It returns the claims it
// counted for the exhaustion message.
func (r *Registry) findHole(ctx context.Context, op string, b block, first, last uint64) (uint64, bool, int, error) {
	return r.firstUnclaimed(ctx, op, b, first, last)
}

// dropHint corrects a hint that named the claimed endpoint ep: a stale
// ipfree key is deleted; a cursor at ep is moved past the claimed run that
// starts there. Either is a hint, written without a guard: a wrong one
// costs a retry, never a duplicate.
func (r *Registry) dropHint(ctx context.Context, op string, b block, ep, next uint64, fromCursor bool) error {
	a, err := b.plan.Address(b.loc, b.tenant, b.segment, ep)
	if err != nil {
		return api.Errorf(api.ReasonInternal, "%v", err)
	}
	if !fromCursor {
		_, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(r.k.ip(b.net, a)), ">", 0)).
			Then(clientv3.OpDelete(r.k.ipFree(b.net, a))).Commit()
		return storeErr(op, err)
	}
	e, found, _, err := r.firstUnclaimed(ctx, op, b, next, b.last)
	if err != nil {
		return err
	}
	if !found {
		e = b.last + 1
	}
	_, err = r.cli.Put(ctx, r.k.ipNext(b.net, b.lo), b.cursorValue(e))
	return storeErr(op, err)
}

// chooseNetwork picks the network of a request: the one named, or the only
// one that accepts the tenant. A request that names its network reads only
// that network's value, so another network's undecodable value does not
// stop it; choosing among all networks needs every one to decode.
func (r *Registry) chooseNetwork(kvs []*mvccpb.KeyValue, req api.AddressRequest) (*mvccpb.KeyValue, api.Network, error) {
	var names []string
	var pick *mvccpb.KeyValue
	var pickN api.Network
	for _, kv := range kvs {
		if req.Network != "" && string(kv.Key) != r.k.network(req.Network) {
			continue
		}
		n, err := decode[api.Network](kv)
		if err != nil {
			return nil, api.Network{}, err
		}
		if req.Network != "" {
			if n.Name != req.Network {
				continue
			}
			if !accepts(n, req.Tenant) {
				return nil, api.Network{}, api.Errorf(api.ReasonInvalid, "network %s does not accept tenant %s (it is restricted to %s)", n.Name, req.Tenant, strings.Join(n.Tenants, ", "))
			}
			return kv, n, nil
		}
		if accepts(n, req.Tenant) {
			names = append(names, n.Name)
			pick, pickN = kv, n
		}
	}
	switch {
	case req.Network != "":
		return nil, api.Network{}, api.Errorf(api.ReasonNotFound, "network %s not found", req.Network)
	case len(names) == 0:
		return nil, api.Network{}, api.Errorf(api.ReasonInvalid, "no network accepts tenant %s; add a network first", req.Tenant)
	case len(names) > 1:
		return nil, api.Network{}, api.Errorf(api.ReasonInvalid, "networks %s all accept tenant %s: name one in the request", strings.Join(names, ", "), req.Tenant)
	}
	return pick, pickN, nil
}

// GetAddress returns the address allocated under name.
func (r *Registry) GetAddress(ctx context.Context, name string) (api.Address, error) {
	resp, err := r.cli.Get(ctx, r.k.address(name))
	if err != nil {
		return api.Address{}, storeErr("get address "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return api.Address{}, api.Errorf(api.ReasonNotFound, "address %s not found", name)
	}
	return decode[api.Address](resp.Kvs[0])
}

// ListAddresses returns the addresses that match f, by name, leaving out
// any that does not decode.
func (r *Registry) ListAddresses(ctx context.Context, f api.AddressFilter) ([]api.Address, error) {
	resp, err := r.cli.Get(ctx, r.k.addresses(), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list addresses", err)
	}
	all := decodeList[api.Address](r, resp.Kvs)
	out := all[:0]
	for _, a := range all {
		if (f.Network == "" || f.Network == a.Network) && (f.Host == "" || f.Host == a.Host) &&
			(f.Tenant == "" || f.Tenant == a.Tenant) && (f.Segment == "" || f.Segment == a.Segment) {
			out = append(out, a)
		}
	}
	return out, nil
}

// Release frees the address allocated under name. An unknown name is not an error.
func (r *Registry) Release(ctx context.Context, name string) error {
	return r.ReleaseOwned(ctx, name, "")
}

// ReleaseOwned is Release confined to host's addresses (host "": any):
// an address of another host is Forbidden, decided in the same transaction
// that deletes it.
func (r *Registry) ReleaseOwned(ctx context.Context, name, host string) error {
	if err := api.ValidateAddressName(name); err != nil {
		return err
	}
	op := "release " + name
	return r.retry(ctx, op, func() error {
		resp, err := r.cli.Get(ctx, r.k.address(name))
		if err != nil {
			return storeErr(op, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		return r.releaseKV(ctx, op, resp.Kvs[0], nil, host)
	})
}

// releaseKV deletes the address in kv and its ip claim; ipKV, when set, is
// the claim as read; host, when set, must be the address's host.
func (r *Registry) releaseKV(ctx context.Context, op string, kv, ipKV *mvccpb.KeyValue, host string) error {
	a, err := decode[api.Address](kv)
	if err != nil {
		return err
	}
	if host != "" && a.Host != host {
		return api.Errorf(api.ReasonForbidden, "%s: address %s (%s) belongs to host %s, not %s", op, a.Name, a.IP, a.Host, host)
	}
	// A service function's address stays while a chain steers through it:
	// released, the next allocation would get the same IP at once and the
	// chain would steer a segment's traffic to an unrelated endpoint.
	chains, err := r.cli.Get(ctx, r.k.chains(), clientv3.WithPrefix())
	if err != nil {
		return storeErr(op, err)
	}
	var users []string
	for _, ckv := range chains.Kvs {
		c, err := decode[api.Chain](ckv)
		if err != nil {
			continue // an undecodable chain steers nothing
		}
		if slices.Contains(c.Via, a.IP.Unmap()) {
			users = append(users, c.Name)
		}
	}
	if len(users) > 0 {
		return api.Errorf(api.ReasonConflict, "%s: address %s (%s) is a service function of chain %s; remove the chain first", op, a.Name, a.IP, strings.Join(users, ", "))
	}
	ipKey := r.k.ip(a.Network, a.IP)
	cmps := []clientv3.Cmp{unchanged(string(kv.Key), kv), clientv3.Compare(clientv3.Value(ipKey), "=", a.Name),
		// no chain was added or changed since they were read (AddChain in
		// turn compares the via addresses unchanged): no window between them
		clientv3.Compare(clientv3.ModRevision(r.k.chains()).WithPrefix(), "<", chains.Header.Revision+1)}
	if ipKV != nil {
		cmps = append(cmps, unchanged(ipKey, ipKV))
	}
	ops := []clientv3.Op{clientv3.OpDelete(string(kv.Key)), clientv3.OpDelete(ipKey), clientv3.OpPut(r.k.ipFree(a.Network, a.IP), "")}
	if _, err := r.commit(ctx, op, cmps, ops); err != nil {
		return err
	}
	r.releases.Add(1)
	return nil
}

// ReleaseIP frees an address by IP. A free or unknown address is not an error.
func (r *Registry) ReleaseIP(ctx context.Context, ip netip.Addr) error {
	return r.ReleaseIPOwned(ctx, ip, "")
}

// ReleaseIPOwned is ReleaseIP confined to host's addresses (host "": any).
func (r *Registry) ReleaseIPOwned(ctx context.Context, ip netip.Addr, host string) error {
	ip = ip.Unmap()
	op := "release " + ip.String()
	return r.retry(ctx, op, func() error {
		nets, err := r.allNetworks(ctx, op)
		if err != nil {
			return err
		}
		n, ok := networkOf(nets, ip)
		if !ok {
			return nil
		}
		ipKey := r.k.ip(n.Name, ip)
		resp, err := r.cli.Get(ctx, ipKey)
		if err != nil {
			return storeErr(op, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		ipKV := resp.Kvs[0]
		ar, err := r.cli.Get(ctx, r.k.address(string(ipKV.Value)))
		if err != nil {
			return storeErr(op, err)
		}
		var akv *mvccpb.KeyValue
		if len(ar.Kvs) > 0 {
			akv = ar.Kvs[0]
			if a, err := decode[api.Address](akv); err != nil || (a.Network == n.Name && a.IP == ip) {
				return r.releaseKV(ctx, op, akv, ipKV, host)
			}
		}
		// The claim names no address, or one with another IP: it is stray
		// (written by hand, or a bug). Unless it changed since it was read
		// (released and claimed again in between), drop it: the IP is free.
		if host != "" {
			h, err := r.GetHost(ctx, host)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(h.Slots, func(s api.HostSlot) bool { return s.CIDR.Contains(ip) }) {
				return api.Errorf(api.ReasonForbidden, "%s: %s is not in a block of host %s", op, ip, host)
			}
		}
		if _, err := r.commit(ctx, op, []clientv3.Cmp{unchanged(ipKey, ipKV), unchanged(r.k.address(string(ipKV.Value)), akv)},
			[]clientv3.Op{clientv3.OpDelete(ipKey), clientv3.OpPut(r.k.ipFree(n.Name, ip), "")}); err != nil {
			return err
		}
		r.log.Warn("dropped a stray address claim", "ip", ip, "network", n.Name, "claimedBy", string(ipKV.Value))
		return nil
	})
}

// reconcileClaims makes the ips/ claims and the addresses agree, and drops
// hints that are wrong (Repair): a claim that names no address, or an
// address with another IP, is deleted; an address whose claim is missing
// gets it back (its IP would be handed out again otherwise); an ipfree hint
// for a claimed address or a removed network is deleted. Each change is
// guarded by what it was decided on. Two addresses with one IP are
// reported, not touched. Undecodable addresses keep their claims.
func (r *Registry) reconcileClaims(ctx context.Context) error {
	const op = "reconcile address claims"
	resp, err := r.read(ctx, op,
		clientv3.OpGet(r.k.addresses(), clientv3.WithPrefix()),
		clientv3.OpGet(r.k.p+"ips/", clientv3.WithPrefix()),
		clientv3.OpGet(r.k.networks(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(r.k.p+"ipfree/", clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	if err != nil {
		return err
	}
	type addr struct {
		a  api.Address
		kv *mvccpb.KeyValue
		ok bool // decoded
	}
	addrs := map[string]addr{}
	for _, kv := range rangeKVs(resp, 0) {
		a, err := decode[api.Address](kv)
		addrs[string(kv.Key[len(r.k.addresses()):])] = addr{a, kv, err == nil}
	}
	claims := map[string]*mvccpb.KeyValue{}
	for _, kv := range rangeKVs(resp, 1) {
		claims[string(kv.Key)] = kv
	}
	nets := map[string]bool{}
	for _, kv := range rangeKVs(resp, 2) {
		nets[string(kv.Key[len(r.k.networks()):])] = true
	}
	var stray, restored, hints int
	fix := func(cmps []clientv3.Cmp, ops ...clientv3.Op) (bool, error) {
		tr, err := r.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return false, storeErr(op, err)
		}
		return tr.Succeeded, nil
	}
	for key, kv := range claims {
		net, ip, ok := r.k.parseIPKey(key, "ips/")
		name := string(kv.Value)
		ad, exists := addrs[name]
		if exists && (!ad.ok || (ok && ad.a.Network == net && ad.a.IP == ip)) {
			continue
		}
		var akv *mvccpb.KeyValue
		if exists {
			akv = ad.kv
		}
		done, err := fix([]clientv3.Cmp{unchanged(key, kv), unchanged(r.k.address(name), akv)}, clientv3.OpDelete(key))
		if err != nil {
			return err
		}
		if done {
			stray++
			r.log.Warn("repair: dropped a stray address claim", "key", key, "claimedBy", name)
		}
	}
	for name, ad := range addrs {
		if !ad.ok {
			continue
		}
		key := r.k.ip(ad.a.Network, ad.a.IP)
		switch kv := claims[key]; {
		case kv == nil:
			done, err := fix([]clientv3.Cmp{absent(key), unchanged(r.k.address(name), ad.kv)},
				clientv3.OpPut(key, name), clientv3.OpDelete(r.k.ipFree(ad.a.Network, ad.a.IP)))
			if err != nil {
				return err
			}
			if done {
				restored++
				r.log.Warn("repair: restored the missing claim of an address", "address", name, "ip", ad.a.IP)
			}
		case string(kv.Value) != name:
			r.log.Error("repair: two addresses hold one IP; release one of them", "ip", ad.a.IP, "addresses", []string{name, string(kv.Value)})
		}
	}
	for _, kv := range rangeKVs(resp, 3) {
		key := string(kv.Key)
		net, ip, ok := r.k.parseIPKey(key, "ipfree/")
		var cmps []clientv3.Cmp
		switch {
		case !ok: // not a key this code writes
		case !nets[net]:
			cmps = []clientv3.Cmp{absent(r.k.network(net))}
		case claims[r.k.ip(net, ip)] != nil:
			cmps = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(r.k.ip(net, ip)), ">", 0)}
		default:
			continue
		}
		done, err := fix(cmps, clientv3.OpDelete(key))
		if err != nil {
			return err
		}
		if done {
			hints++
		}
	}
	if stray+restored+hints > 0 {
		r.log.Info("repair: reconciled address claims", "strayClaimsDropped", stray, "claimsRestored", restored, "hintsDropped", hints)
	}
	return nil
}

// parseIPKey splits an ips/ or ipfree/ key (dir) into network and address.
func (k keys) parseIPKey(key, dir string) (net string, ip netip.Addr, ok bool) {
	rest, found := strings.CutPrefix(key, k.p+dir)
	if !found {
		return "", netip.Addr{}, false
	}
	net, hx, found := strings.Cut(rest, "/")
	if !found {
		return net, netip.Addr{}, false
	}
	b, err := hex.DecodeString(hx)
	if err != nil {
		return net, netip.Addr{}, false
	}
	ip, ok = netip.AddrFromSlice(b)
	return net, ip, ok
}

func networkOf(nets []api.Network, ip netip.Addr) (api.Network, bool) {
	for _, n := range nets {
		if p, err := netip.ParsePrefix(n.CIDR); err == nil && p.Contains(ip) {
			return n, true
		}
	}
	return api.Network{}, false
}

// Decode takes an address apart and names the objects its fields refer to.
func (r *Registry) Decode(ctx context.Context, ip netip.Addr) (api.DecodedAddress, error) {
	ip = ip.Unmap()
	nets, err := r.allNetworks(ctx, "decode "+ip.String())
	if err != nil {
		return api.DecodedAddress{}, err
	}
	n, ok := networkOf(nets, ip)
	if !ok {
		return api.DecodedAddress{}, api.Errorf(api.ReasonNotFound, "address %s is not in any network", ip)
	}
	p, err := planOf(n)
	if err != nil {
		return api.DecodedAddress{}, err
	}
	d, err := p.Decode(ip)
	if err != nil {
		return api.DecodedAddress{}, api.Errorf(api.ReasonInternal, "%v", err)
	}
	out := api.DecodedAddress{IP: ip, Network: n.Name, Loc: d.Loc, TenantID: d.Tenant, SegmentID: d.Segment, Endpoint: d.Endpoint}
	op := fmt.Sprintf("decode %s", ip)
	resp, err := r.read(ctx, op,
		clientv3.OpGet(r.k.slotID(n.Name, d.Loc)),
		clientv3.OpGet(r.k.tenantID(d.Tenant)),
		clientv3.OpGet(r.k.ip(n.Name, ip)))
	if err != nil {
		return api.DecodedAddress{}, err
	}
	if kv := oneKV(resp, 0); kv != nil {
		out.Host = string(kv.Value)
	}
	if kv := oneKV(resp, 2); kv != nil {
		out.Allocation = string(kv.Value)
	}
	if kv := oneKV(resp, 1); kv != nil {
		out.Tenant = string(kv.Value)
		sr, err := r.cli.Get(ctx, r.k.segmentID(out.Tenant, d.Segment), clientv3.WithRev(resp.Header.Revision))
		if err != nil {
			return api.DecodedAddress{}, storeErr(op, err)
		}
		if len(sr.Kvs) > 0 {
			out.Segment = string(sr.Kvs[0].Value)
		}
	}
	return out, nil
}
