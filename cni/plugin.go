package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/romana/romana/api"
	"github.com/romana/romana/cni/forward"
)

// Versions are the CNI spec versions the plugin answers.
var Versions = version.PluginSupports(forward.Versions...)

// Romanad is what the plugin needs from romanad; *client.Client is the
// real one.
type Romanad interface {
	Allocate(ctx context.Context, r api.AddressRequest) (api.Address, error)
	GetAddress(ctx context.Context, name string) (api.Address, error)
	ListAddresses(ctx context.Context, f api.AddressFilter) ([]api.Address, error)
	Release(ctx context.Context, name string) error
	Health(ctx context.Context) error
}

// Plugin runs the CNI commands inside romana-agent, for the thin romana-cni
// binary (package forward) that forwards each invocation to it. It runs in
// the host's network namespace and enters the container's only to create
// and inspect the container side (ns.WithNetNSPath, on a locked thread), so
// any number of commands may run at once.
type Plugin struct {
	Log *slog.Logger
	// Romanad is the agent's own client (identity host:NAME, or the unix
	// socket as root): romanad confines it to this host's addresses.
	Romanad Romanad
	// Host is this host's name at romanad; Server names romanad in
	// messages.
	Host, Server string
	// Timeout bounds each command's calls to romanad.
	Timeout time.Duration
	// Settle, when set, is called by ADD for a Kubernetes pod's attachment
	// (the request names the pod) once romanad allocated its addresses;
	// the host route that makes them reachable is added only after it
	// returned: it returns once this host's firewall enforces the address
	// sets the pod belongs to (agent.Settled.Wait), so the pod's first
	// packet meets its policies. An error fails the ADD (try again later).
	Settle func(ctx context.Context, addrs []api.Address) error
	// failAt, when not empty, is a FailPoints step at which ADD fails on
	// purpose; only this package's tests set it.
	failAt string
	// veths deletes the veths of deleted attachments after DEL returned.
	veths reaper
}

// Wait returns once the veths of deleted attachments are all gone.
func (p *Plugin) Wait() { p.veths.Wait() }

func (p *Plugin) setup(ctx context.Context, args *skel.CmdArgs) (*NetConf, context.Context, context.CancelFunc, error) {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	return conf, ctx, cancel, nil
}

// fail returns the injected failure when step is p.failAt.
func (p *Plugin) fail(step string) error {
	if p.failAt != step {
		return nil
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("injected failure %s", step), "")
}

// attachment names an ADD/CHECK/DEL invocation's allocation and veth, and
// validates them.
func attachment(args *skel.CmdArgs) (name, veth string, err error) {
	name = AllocationName(args.ContainerID, args.IfName)
	if err := api.ValidateAddressName(name); err != nil {
		return "", "", types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_CONTAINERID %q and CNI_IFNAME %q do not make a valid allocation name: %v", args.ContainerID, args.IfName, err), "")
	}
	return name, VethName(name), nil
}

// Add allocates an address and wires the container. On any failure it
// releases the address and deletes the veth before returning.
func (p *Plugin) Add(ctx context.Context, args *skel.CmdArgs) (_ types.Result, retErr error) {
	if p.failAt != "" && !slices.Contains(FailPoints, p.failAt) {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("fail point %q: want one of %s", p.failAt, strings.Join(FailPoints, ", ")), "")
	}
	conf, ctx, cancel, err := p.setup(ctx, args)
	if err != nil {
		return nil, err
	}
	rd := p.Romanad
	defer cancel()
	target, err := Resolve(conf, args.Args)
	if err != nil {
		return nil, err
	}
	name, veth, err := attachment(args)
	if err != nil {
		return nil, err
	}
	if err := ns.IsNSorErr(args.Netns); err != nil {
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q: %v", args.Netns, err), "")
	}
	if own, err := isOwnNetNS(args.Netns); err != nil || own {
		msg := fmt.Sprintf("CNI_NETNS %q is the host's own network namespace, not a container's", args.Netns)
		if err != nil {
			msg = fmt.Sprintf("CNI_NETNS %q: %v", args.Netns, err)
		}
		return nil, types.NewError(types.ErrInvalidNetNS, msg, "")
	}
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("open the host's network namespace: %v", err), "")
	}
	defer hostNS.Close()
	hostNL, err := hostHandle()
	if err != nil {
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}
	defer hostNL.Close()
	// The veth name is derived from the allocation name: if it exists, the
	// attachment is already set up (or a crashed ADD left it; DEL clears it).
	// Refuse before allocating, so the undo below never touches it. A
	// deletion of it that a DEL started is waited for.
	if err := p.veths.wait(ctx, veth); err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("attachment %s: host interface %s is still being deleted: %v", name, veth, err), "")
	}
	if exists, err := linkExists(hostNL, veth); err != nil {
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	} else if exists {
		return nil, types.NewError(types.ErrInternal,
			fmt.Sprintf("attachment %s: host interface %s already exists; DEL the attachment first", name, veth), "")
	}

	names := AllocationNames(args.ContainerID, args.IfName, len(conf.Targets()))
	// The veth pair does not depend on the addresses: create it while
	// romanad allocates (each takes about 1 to 2 ms), and wait for it
	// before returning, whatever happens.
	type made struct {
		*vethPair
		err error
	}
	vethDone := make(chan made, 1)
	go func() {
		v, err := createVeth(hostNL, hostNS, args.Netns, args.IfName, veth, conf.MTU)
		vethDone <- made{v, err}
	}()
	var pair *made
	waitVeth := func() *made {
		if pair == nil {
			m := <-vethDone
			pair = &m
		}
		return pair
	}
	// Its sockets are closed last, after the undo below.
	defer func() {
		if m := waitVeth(); m.err == nil {
			m.close()
		}
	}()
	var allocated []string // names romanad may hold, for the undo
	// Undo on failure: the veth if it was made, and every name from the
	// first request on (an error without an answer, a timeout, may have
	// allocated).
	defer func() {
		if retErr == nil {
			return
		}
		var undo []string
		if waitVeth().err == nil {
			if err := deleteVeth(veth); err != nil {
				undo = append(undo, err.Error())
			}
		}
		if len(allocated) == 0 && len(undo) == 0 {
			return
		}
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), p.Timeout)
		defer ucancel()
		for _, n := range allocated {
			if err := rd.Release(uctx, n); err != nil && !api.IsNotFound(err) {
				undo = append(undo, fmt.Sprintf("release %s: %v", n, err))
			}
		}
		p.Log.Warn("add failed, undone", "allocation", name, "veth", veth, "err", retErr, "undoErrors", undo)
		if len(undo) > 0 {
			te := AsCNIError(retErr, "")
			retErr = types.NewError(te.Code, te.Msg+"; undo failed, leaked: "+strings.Join(undo, "; "), te.Details)
		}
	}()
	var ips []netip.Addr
	var addrs []api.Address
	for i, network := range conf.Targets() {
		req := api.AddressRequest{
			Name: names[i], Host: p.Host, Tenant: target.Tenant, Segment: target.Segment,
			Network: network, Interface: veth, Pod: target.Pod, PodUID: target.PodUID,
			Attrs: map[string]string{
				AttrOwner: Owner, AttrNetwork: conf.Name,
				AttrContainerID: args.ContainerID, AttrIfName: args.IfName, AttrNetNS: args.Netns,
			},
		}
		addr, err := rd.Allocate(ctx, req)
		if err != nil && notSent(err) {
			// romanad answered with an error, or was never reached:
			// nothing was allocated by this request.
			in := ""
			if network != "" {
				in = "network " + network + ", "
			}
			return nil, AsCNIError(err, fmt.Sprintf("allocate %s at romanad %s (%s%s, %s, host %s)",
				names[i], p.Server, in, sourced("tenant", target.Tenant, target.TenantFrom), sourced("segment", target.Segment, target.SegmentFrom), p.Host))
		}
		allocated = append(allocated, names[i])
		if err != nil {
			return nil, AsCNIError(err, fmt.Sprintf("allocate %s at romanad %s", names[i], p.Server))
		}
		ips = append(ips, addr.IP.Unmap())
		addrs = append(addrs, addr)
	}
	if err := CheckFamilies(ips); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("allocate %s: networks %q: %v", name, conf.Networks, err), "")
	}
	if err := p.fail("after-allocate"); err != nil {
		return nil, err
	}
	// The pod's policies first (while the veth and the container side are
	// made): its address must be in its sets before it is routable.
	settled := make(chan error, 1)
	if p.Settle != nil && target.Pod != "" {
		go func() { settled <- p.Settle(ctx, addrs) }()
	} else {
		settled <- nil
	}
	m := waitVeth()
	if m.err != nil {
		return nil, types.NewError(types.ErrInternal, m.err.Error(), "")
	}
	if err := p.fail("after-veth"); err != nil {
		return nil, err
	}
	if err := m.configureContainer(ips); err != nil {
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}
	if err := p.fail("after-container"); err != nil {
		return nil, err
	}
	if err := <-settled; err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("attachment %s of pod %s: %v", name, target.Pod, err), "")
	}
	if err := m.configureHost(ips); err != nil {
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}
	if err := p.fail("after-host-route"); err != nil {
		return nil, err
	}
	p.Log.Info("added", "allocation", name, "ips", ips, "veth", veth, "tenant", target.Tenant, "segment", target.Segment)
	return BuildResult(ips, m.host, m.cont, conf.DNS), nil
}

// Del deletes the veth and releases the address, both at once: the
// kernel's veth deletion (~20 ms, RCU) dominates, so the release costs no
// time. Releasing before the veth is gone is safe: an ADD that gets the
// address meanwhile replaces the host route onto its own veth, and
// deleting the old veth removes only routes through it. It succeeds when
// both are already gone.
func (p *Plugin) Del(ctx context.Context, args *skel.CmdArgs) error {
	_, ctx, cancel, err := p.setup(ctx, args)
	if err != nil {
		return err
	}
	defer cancel()
	rd := p.Romanad
	name, veth, err := attachment(args)
	if err != nil {
		return err
	}
	// Both possible addresses of the attachment, whatever the config
	// says now: the one it was added with may have named two networks.
	names := AllocationNames(args.ContainerID, args.IfName, 2)
	// Released at once; the error reported is the first name's that
	// failed, in names' order, whichever answer came first.
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			err := rd.Release(ctx, n)
			if err != nil && !api.IsNotFound(err) {
				errs[i] = AsCNIError(err, fmt.Sprintf("release %s at romanad %s", n, p.Server))
			}
		})
	}
	wg.Wait()
	var relErr error
	for _, err := range errs {
		if err != nil {
			relErr = err
			break
		}
	}
	if relErr != nil {
		return relErr
	}
	// The address is free; the veth goes in the background (reaper), in
	// this thread's network namespace (the host's: a test's server serves
	// from a simulated host's), whichever thread the deletion runs on.
	host, err := ns.GetCurrentNS()
	if err != nil {
		if err := deleteVeth(veth); err != nil {
			return types.NewError(types.ErrInternal, err.Error(), "")
		}
	} else {
		if !p.veths.delete(veth, func(veth string) error {
			defer host.Close()
			return host.Do(func(ns.NetNS) error { return deleteVeth(veth) })
		}, p.Log) {
			host.Close()
		}
	}
	p.Log.Info("deleted", "allocation", name, "veth", veth)
	return nil
}

// Check verifies that romanad still holds the attachment's address, that it
// matches the previous result, and that the container interface, its
// address and default route, the host veth and the host route are in place.
func (p *Plugin) Check(ctx context.Context, args *skel.CmdArgs) error {
	conf, ctx, cancel, err := p.setup(ctx, args)
	if err != nil {
		return err
	}
	defer cancel()
	rd := p.Romanad
	name, veth, err := attachment(args)
	if err != nil {
		return err
	}
	var ips []netip.Addr
	for i, n := range AllocationNames(args.ContainerID, args.IfName, len(conf.Targets())) {
		addr, err := rd.GetAddress(ctx, n)
		if api.IsNotFound(err) {
			return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("check: romanad has no address for attachment %s (network %q)", n, conf.Targets()[i]), "")
		}
		if err != nil {
			return AsCNIError(err, "check: get address "+n)
		}
		ips = append(ips, addr.IP.Unmap())
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return types.NewError(types.ErrDecodingFailure, "check: parse prevResult: "+err.Error(), "")
		}
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "check: convert prevResult: "+err.Error(), "")
		}
		var prevIPs []netip.Addr
		for _, c := range prev.IPs {
			if a, ok := netip.AddrFromSlice(c.Address.IP); ok {
				prevIPs = append(prevIPs, a.Unmap())
			}
		}
		for _, ip := range ips {
			if !slices.Contains(prevIPs, ip) {
				return types.NewError(types.ErrInternal, fmt.Sprintf("check: romanad has %s for %s but the previous result has %v", ip, name, prevIPs), "")
			}
		}
	}
	if err := checkContainer(args.Netns, args.IfName, ips); err != nil {
		return types.NewError(types.ErrInternal, "check: "+err.Error(), "")
	}
	if err := checkHost(veth, ips); err != nil {
		return types.NewError(types.ErrInternal, "check: "+err.Error(), "")
	}
	return nil
}

// GC releases every address this plugin allocated on this host for this CNI
// network whose attachment is not in cni.dev/valid-attachments (absent
// means none is valid, as libcni sends it), deletes their veths, and
// deletes veths of ours that no address of this host owns.
func (p *Plugin) GC(ctx context.Context, args *skel.CmdArgs) error {
	conf, ctx, cancel, err := p.setup(ctx, args)
	if err != nil {
		return err
	}
	defer cancel()
	rd := p.Romanad
	// Links first: every veth's address is allocated before the veth is
	// created, so an address list read afterwards covers them all.
	links, err := listLinks()
	if err != nil {
		return types.NewError(types.ErrInternal, "gc: "+err.Error(), "")
	}
	addrs, err := rd.ListAddresses(ctx, api.AddressFilter{Host: p.Host})
	if err != nil {
		return AsCNIError(err, "gc: list addresses of host "+p.Host)
	}
	var errs []string
	for _, a := range SelectGC(addrs, conf.Name, conf.ValidAttachments) {
		veth := VethName(a.Name)
		if IsVethName(a.Interface) {
			veth = a.Interface // a dual-stack attachment's second address
		}
		if err := deleteVeth(veth); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if err := rd.Release(ctx, a.Name); err != nil && !api.IsNotFound(err) {
			errs = append(errs, fmt.Sprintf("release %s: %v", a.Name, err))
			continue
		}
		p.Log.Info("gc released", "allocation", a.Name, "ip", a.IP)
	}
	for _, l := range StaleVeths(links, addrs) {
		if err := deleteVeth(l); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		p.Log.Info("gc deleted stale veth", "veth", l)
	}
	if len(errs) > 0 {
		return types.NewError(types.ErrTryAgainLater, "gc: "+strings.Join(errs, "; "), "")
	}
	return nil
}

// Status succeeds iff romanad answers /healthz.
func (p *Plugin) Status(ctx context.Context, args *skel.CmdArgs) error {
	_, ctx, cancel, err := p.setup(ctx, args)
	if err != nil {
		return err
	}
	defer cancel()
	rd := p.Romanad
	ctx, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	if err := rd.Health(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("romanad at %s does not answer /healthz: %v", p.Server, err), "")
	}
	return nil
}

// notSent reports whether a failed request certainly allocated nothing:
// romanad answered with an error, or the connection was never made.
func notSent(err error) bool {
	var apiErr *api.Error
	var opErr *net.OpError
	return errors.As(err, &apiErr) || (errors.As(err, &opErr) && opErr.Op == "dial")
}

// sourced describes a tenant or segment with where it came from ("tenant
// acme from CNI_ARGS ROMANA_TENANT"); one left to romanad has no value yet.
func sourced(kind, v, from string) string {
	if v == "" {
		return kind + " from " + from
	}
	return kind + " " + v + " from " + from
}
