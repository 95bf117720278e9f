package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/cnirun"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/plan"
	"github.com/romana/romana/server/servertest"
	"github.com/romana/romana/sim"
	"github.com/romana/romana/sim/simtest"
)

const testHost = "h1"

// The tests' underlay: the host and, on a controller machine, romanad, on
// one L2 segment of a lab. The plugin reaches romanad over it with TLS.
var (
	hostAddr       = netip.MustParsePrefix("192.168.77.1/24")
	controllerAddr = netip.MustParsePrefix("192.168.77.250/24")
)

const romanadPort = 9600

// confList is the network config a runtime would load, for the agent
// serving sock (left out when "").
func confList(tb testing.TB, cniVersion, sock string, extra string) *libcni.NetworkConfigList {
	tb.Helper()
	if sock != "" {
		sock = fmt.Sprintf(`"agentSocket":%q,`, sock)
	}
	b := fmt.Sprintf(`{"cniVersion":%q,"name":"romana","plugins":[{"type":"romana-cni",%s"tenant":"default-tenant","segment":"default","mtu":1500%s}]}`,
		cniVersion, sock, extra)
	l, err := libcni.ConfListFromBytes([]byte(b))
	if err != nil {
		tb.Fatalf("parse conf list %s: %v", b, err)
	}
	return l
}

// cniError asserts err is a CNI error with code and a message containing msg.
func cniError(tb testing.TB, err error, code uint, msg string) {
	tb.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		tb.Fatalf("error %v (%T) is not a CNI error; want code %d %q", err, err, code, msg)
	}
	if te.Code != code || !strings.Contains(te.Msg, msg) {
		tb.Fatalf("CNI error %d %q (details %q), want code %d containing %q", te.Code, te.Msg, te.Details, code, msg)
	}
}

func ping(nsName, dst string) error {
	out, err := exec.Command("ip", "netns", "exec", nsName, "ping", "-c1", "-W1", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", dst, nsName, err, out)
	}
	return nil
}

// env1 is one simulated host with a runtime's libcni, the agent's CNI
// server (in the test process, working in the host's namespace, acting as
// host:h1 like the agent), and romanad on a controller of the same lab.
// The real romana-cni binary forwards to the server over its socket.
type env1 struct {
	host, hostPath string // the host's namespace
	lab            *sim.Lab
	ctl            *sim.Host
	romanad        *servertest.Instance
	server         string         // https://192.168.77.250:9600
	rd             *client.Client // admin
	dir            string
	sock           string // the agent's CNI socket
	agent          *agentServer
	cfg            *libcni.CNIConfig
	list           *libcni.NetworkConfigList
}

func newEnv(t *testing.T) *env1 {
	requireRoot(t)
	e := &env1{dir: pluginDir(t), lab: simtest.New(t)}
	e.romanad, e.ctl = startRomanad(t, e.lab)
	e.server, e.rd = e.romanad.URL, e.romanad.Client
	h, err := e.lab.AddHost(context.Background(), testHost, hostAddr)
	if err != nil {
		t.Fatal(err)
	}
	hostGateway(t, h.Namespace.Name)
	e.host, e.hostPath = h.Namespace.Name, h.Path
	e.sock = filepath.Join(t.TempDir(), "agent", "cni.sock")
	e.agent = startAgentServer(t, e.hostPath, e.sock, &Plugin{Romanad: e.romanad.ClientAs(t, pki.Host(testHost)), Host: testHost, Server: e.server})
	e.cfg = libcni.NewCNIConfigWithCacheDir([]string{e.dir}, t.TempDir(), &cnirun.NSExec{HostNS: e.hostPath})
	e.list = confList(t, "1.1.0", e.sock, "")
	return e
}

// container creates a container namespace.
func (e *env1) container(t *testing.T, name string) (string, string) {
	return netnsAdd(t, strings.TrimPrefix(e.host, "romt-")+"-"+name)
}

func (e *env1) add(t *testing.T, cfg *libcni.CNIConfig, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	t.Helper()
	r, err := cfg.AddNetworkList(context.Background(), list, rt)
	if err != nil {
		return nil, err
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatalf("convert result: %v", err)
	}
	return res, nil
}

// assertGone checks that nothing of an attachment is left: no address at
// romanad, no host veth, no interface in the container (once the agent
// finished deleting the veths of the attachments DEL returned for).
func (e *env1) assertGone(t *testing.T, containerID, ifName, ctrNS string) {
	t.Helper()
	e.agent.plugin.Wait()
	name := AllocationName(containerID, ifName)
	if a, err := e.rd.GetAddress(context.Background(), name); !api.IsNotFound(err) {
		t.Errorf("romanad still has %s: %+v, %v", name, a, err)
	}
	addrs, err := e.rd.ListAddresses(context.Background(), api.AddressFilter{Host: testHost})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.Attrs[AttrContainerID] == containerID && a.Attrs[AttrIfName] == ifName {
			t.Errorf("romanad lists an address for %s: %+v", name, a)
		}
	}
	if slices.Contains(links(t, e.host), VethName(name)) {
		t.Errorf("host veth %s of %s left in %s", VethName(name), name, e.host)
	}
	if ctrNS != "" && slices.Contains(links(t, ctrNS), ifName) {
		t.Errorf("%s left in container %s", ifName, ctrNS)
	}
}

// TestLibcni drives the built plugin through libcni the way a container
// runtime does, with the plugin running in a simulated host namespace.
func TestLibcni(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c1, c1Path := e.container(t, "c1")
	c2, c2Path := e.container(t, "c2")
	rt1 := &libcni.RuntimeConf{ContainerID: "ctr1", NetNS: c1Path, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"ROMANA_TENANT", "acme"}, {"ROMANA_SEGMENT", "web"}}}
	rt2 := &libcni.RuntimeConf{ContainerID: "ctr2", NetNS: c2Path, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "acme"}, {"IgnoreUnknown", "1"}}}

	// ADD two containers.
	res1, err := e.add(t, e.cfg, e.list, rt1)
	if err != nil {
		t.Fatalf("ADD ctr1: %v", err)
	}
	res2, err := e.add(t, e.cfg, e.list, rt2)
	if err != nil {
		t.Fatalf("ADD ctr2: %v", err)
	}
	ip1 := checkResult(t, res1, c1Path, "ctr1:eth0")
	ip2 := checkResult(t, res2, c2Path, "ctr2:eth0")
	a1, err := e.rd.GetAddress(ctx, "ctr1:eth0")
	if err != nil {
		t.Fatal(err)
	}
	if a1.IP != ip1 || a1.Tenant != "acme" || a1.Segment != "web" || a1.Host != testHost || a1.Interface != VethName("ctr1:eth0") ||
		a1.Attrs[AttrOwner] != Owner || a1.Attrs[AttrContainerID] != "ctr1" || a1.Attrs[AttrNetNS] != c1Path || a1.Attrs[AttrNetwork] != "romana" {
		t.Errorf("romanad has %+v for ctr1:eth0, result says %s", a1, ip1)
	}
	if a2, err := e.rd.GetAddress(ctx, "ctr2:eth0"); err != nil || a2.Tenant != "acme" || a2.Segment != "default" {
		t.Errorf("ctr2 (tenant from K8S_POD_NAMESPACE): %+v, %v", a2, err)
	}
	if out := run(t, "ip", "-n", e.host, "route", "show", ip1.String()+"/32", "proto", "190", "dev", VethName("ctr1:eth0"), "scope", "link"); !strings.Contains(out, ip1.String()) {
		t.Errorf("host route to %s with proto 190 missing: %q", ip1, out)
	}

	// Real packets: the gateway answers, and the host routes between endpoints.
	if err := ping(c1, Gateway.String()); err != nil {
		t.Error(err)
	}
	if err := ping(c2, ip1.String()); err != nil {
		t.Error(err)
	}
	if err := ping(c1, ip2.String()); err != nil {
		t.Error(err)
	}

	// A second ADD of a live attachment is refused without undoing it.
	_, err = e.cfg.AddNetworkList(ctx, e.list, rt1)
	cniError(t, err, types.ErrInternal, "attachment ctr1:eth0: host interface "+VethName("ctr1:eth0")+" already exists; DEL the attachment first")

	// CHECK passes, then fails when the host route is gone, then passes again.
	if err := e.cfg.CheckNetworkList(ctx, e.list, rt1); err != nil {
		t.Fatalf("CHECK ctr1: %v", err)
	}
	run(t, "ip", "-n", e.host, "route", "del", ip1.String()+"/32")
	cniError(t, e.cfg.CheckNetworkList(ctx, e.list, rt1), types.ErrInternal, "host route "+ip1.String()+"/32 dev "+VethName("ctr1:eth0")+" is missing")
	if err := ping(c2, ip1.String()); err == nil {
		t.Error("ctr2 reaches ctr1 without the host route")
	}
	run(t, "ip", "-n", e.host, "route", "add", ip1.String()+"/32", "dev", VethName("ctr1:eth0"), "proto", "190", "scope", "link")
	if err := e.cfg.CheckNetworkList(ctx, e.list, rt1); err != nil {
		t.Fatalf("CHECK ctr1 after repair: %v", err)
	}
	run(t, "ip", "-n", c1, "route", "del", "default")
	cniError(t, e.cfg.CheckNetworkList(ctx, e.list, rt1), types.ErrInternal, "container route default via 169.254.1.1 dev eth0 is missing")
	run(t, "ip", "-n", c1, "route", "add", "default", "via", Gateway.String(), "dev", "eth0", "onlink")

	// CHECK fails when romanad lost the allocation; DEL then still succeeds.
	if err := e.rd.Release(ctx, "ctr2:eth0"); err != nil {
		t.Fatal(err)
	}
	cniError(t, e.cfg.CheckNetworkList(ctx, e.list, rt2), types.ErrUnknownContainer, "romanad has no address for attachment ctr2:eth0")
	if err := e.cfg.DelNetworkList(ctx, e.list, rt2); err != nil {
		t.Fatalf("DEL ctr2 after its address was released: %v", err)
	}
	e.assertGone(t, "ctr2", "eth0", c2)

	// DEL, and DEL again.
	if err := e.cfg.DelNetworkList(ctx, e.list, rt1); err != nil {
		t.Fatalf("DEL ctr1: %v", err)
	}
	e.assertGone(t, "ctr1", "eth0", c1)
	if err := e.cfg.DelNetworkList(ctx, e.list, rt1); err != nil {
		t.Fatalf("second DEL ctr1: %v", err)
	}
	// DEL without a netns (the runtime lost it) also succeeds.
	if err := e.cfg.DelNetworkList(ctx, e.list, &libcni.RuntimeConf{ContainerID: "ctr1", IfName: "eth0"}); err != nil {
		t.Fatalf("DEL ctr1 without netns: %v", err)
	}

	// ADD right after DEL of the same attachment: the agent deletes the
	// veth after DEL returned, and the ADD waits for it.
	if _, err := e.add(t, e.cfg, e.list, rt1); err != nil {
		t.Fatalf("ADD ctr1 again: %v", err)
	}
	if err := e.cfg.DelNetworkList(ctx, e.list, rt1); err != nil {
		t.Fatalf("DEL ctr1: %v", err)
	}
	if _, err := e.add(t, e.cfg, e.list, rt1); err != nil {
		t.Fatalf("ADD ctr1 right after its DEL: %v", err)
	}
	if err := e.cfg.DelNetworkList(ctx, e.list, rt1); err != nil {
		t.Fatalf("DEL ctr1: %v", err)
	}
	e.assertGone(t, "ctr1", "eth0", c1)

	// STATUS: up while romanad answers; 50 when no agent serves the socket.
	if err := e.cfg.GetStatusNetworkList(ctx, e.list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	nowhere := filepath.Join(t.TempDir(), "no-agent.sock")
	cniError(t, e.cfg.GetStatusNetworkList(ctx, confList(t, "1.1.0", nowhere, "")),
		types.ErrPluginNotAvailable, "romana-agent at "+nowhere+": cannot connect")

	// romanad down: STATUS says so, ADD is "try again later" and leaves
	// nothing, DEL is "try again later" rather than forgetting the address;
	// once romanad is back the retried DEL completes.
	_, c3Path := e.container(t, "c3")
	c4, c4Path := e.container(t, "c4")
	rt3 := &libcni.RuntimeConf{ContainerID: "ctr3", NetNS: c3Path, IfName: "eth0"}
	rt4 := &libcni.RuntimeConf{ContainerID: "ctr4", NetNS: c4Path, IfName: "eth0"}
	if _, err := e.add(t, e.cfg, e.list, rt3); err != nil {
		t.Fatalf("ADD ctr3: %v", err)
	}
	e.romanad.Stop()
	cniError(t, e.cfg.GetStatusNetworkList(ctx, e.list), types.ErrPluginNotAvailable, "does not answer /healthz")
	_, err = e.cfg.AddNetworkList(ctx, e.list, rt4)
	cniError(t, err, types.ErrTryAgainLater, "allocate ctr4:eth0 at romanad "+e.server)
	if slices.Contains(links(t, e.host), VethName("ctr4:eth0")) || slices.Contains(links(t, c4), "eth0") {
		t.Error("ADD with romanad down left an interface")
	}
	cniError(t, e.cfg.DelNetworkList(ctx, e.list, rt3), types.ErrTryAgainLater, "release ctr3:eth0 at romanad "+e.server)
	e.romanad.Restart()
	if err := e.cfg.DelNetworkList(ctx, e.list, rt3); err != nil {
		t.Fatalf("DEL ctr3 after romanad restart: %v", err)
	}
	e.assertGone(t, "ctr3", "eth0", "")
	e.assertGone(t, "ctr4", "eth0", c4)
}

// checkResult checks an ADD result's shape and returns its address.
func checkResult(t *testing.T, res *current.Result, sandbox, allocation string) netip.Addr {
	t.Helper()
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != VethName(allocation) || res.Interfaces[0].Sandbox != "" ||
		res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != sandbox || res.Interfaces[1].Mac == "" {
		t.Fatalf("result interfaces: %v", res.Interfaces)
	}
	if len(res.IPs) != 1 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 || res.IPs[0].Gateway.String() != Gateway.String() {
		t.Fatalf("result ips: %v", res.IPs)
	}
	ones, bits := res.IPs[0].Address.Mask.Size()
	ip, ok := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if !ok || ones != 32 || bits != 32 {
		t.Fatalf("result address %v, want an IPv4 /32", res.IPs[0].Address)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW.String() != Gateway.String() {
		t.Fatalf("result routes: %v", res.Routes)
	}
	return ip
}

// TestLibcniVersions runs ADD, CHECK and DEL under every spec version the
// plugin answers; the result comes back in the config's version.
func TestLibcniVersions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, v := range Versions.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			list := confList(t, v, e.sock, "")
			c, cPath := e.container(t, "v"+strings.ReplaceAll(v, ".", ""))
			rt := &libcni.RuntimeConf{ContainerID: "ver-" + strings.ReplaceAll(v, ".", "-"), NetNS: cPath, IfName: "eth0"}
			r, err := e.cfg.AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if r.Version() != v {
				t.Errorf("result version %s, want %s", r.Version(), v)
			}
			res, err := current.NewResultFromResult(r)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.IPs) != 1 {
				t.Fatalf("result %v", res)
			}
			if err := ping(c, Gateway.String()); err != nil {
				t.Error(err)
			}
			if err := e.cfg.CheckNetworkList(ctx, list, rt); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := e.cfg.DelNetworkList(ctx, list, rt); err != nil {
				t.Errorf("DEL: %v", err)
			}
			e.assertGone(t, rt.ContainerID, "eth0", c)
		})
	}
}

// TestLibcniBadConfig: configuration errors are CNI errors with code 7 (or 4
// for the environment) and a message that says what to fix; nothing is
// allocated.
func TestLibcniBadConfig(t *testing.T) {
	e := newEnv(t)
	_, cPath := e.container(t, "bad")
	rt := &libcni.RuntimeConf{ContainerID: "bad1", NetNS: cPath, IfName: "eth0"}
	tests := []struct {
		name string
		list *libcni.NetworkConfigList
		args [][2]string
		code uint
		msg  string
	}{
		{"bad mtu", confList(t, "1.1.0", e.sock, `,"mtu":20`), nil, types.ErrInvalidNetworkConfig, "mtu 20 out of range"},
		{"bad tenant name", confList(t, "1.1.0", e.sock, ""), [][2]string{{"ROMANA_TENANT", "Not_A_Name"}}, types.ErrInvalidNetworkConfig,
			`tenant from CNI_ARGS ROMANA_TENANT: invalid tenant name "Not_A_Name"`},
		{"no tenant", confListNoTenant(t, e.sock), nil, types.ErrInvalidNetworkConfig, "no tenant for this endpoint"},
		{"unknown tenant", confList(t, "1.1.0", e.sock, ""), [][2]string{{"ROMANA_TENANT", "nosuch"}}, types.ErrInvalidNetworkConfig,
			`(tenant nosuch from CNI_ARGS ROMANA_TENANT, segment default from config "segment", host h1): tenant nosuch not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := *rt
			rt.Args = tt.args
			_, err := e.cfg.AddNetworkList(context.Background(), tt.list, &rt)
			cniError(t, err, tt.code, tt.msg)
			e.assertGone(t, rt.ContainerID, "eth0", "")
		})
	}
	// The host's own namespace as the container's is code 8: the agent
	// would otherwise give the host the container's address and route.
	_, err := e.cfg.AddNetworkList(context.Background(), e.list, &libcni.RuntimeConf{ContainerID: "bad3", NetNS: e.hostPath, IfName: "eth9"})
	cniError(t, err, types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q is the host's own network namespace", e.hostPath))
	e.assertGone(t, "bad3", "eth0", "")
	if slices.Contains(links(t, e.host), "eth9") {
		t.Error("ADD into the host's namespace created eth9 there")
	}
	// A missing container namespace is code 8 and allocates nothing.
	rt2 := &libcni.RuntimeConf{ContainerID: "bad2", NetNS: "/var/run/netns/romt-does-not-exist", IfName: "eth0"}
	_, err = e.cfg.AddNetworkList(context.Background(), e.list, rt2)
	cniError(t, err, types.ErrInvalidNetNS, "CNI_NETNS")
	e.assertGone(t, "bad2", "eth0", "")
}

func confListNoTenant(tb testing.TB, sock string) *libcni.NetworkConfigList {
	b := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"romana","plugins":[{"type":"romana-cni","agentSocket":%q}]}`, sock)
	l, err := libcni.ConfListFromBytes([]byte(b))
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// TestLibcniFailMidAdd injects a failure after each ADD step (the agent
// restarted with a fail point set): the ADD fails with the injected error
// and nothing is left behind. The romana-cni binary forwards CNI_*
// variables only, so nothing in the runtime's environment can set one.
func TestLibcniFailMidAdd(t *testing.T) {
	e := newEnv(t)
	failAt := func(step string) {
		e.agent.Stop()
		e.agent.plugin.failAt = step
		e.agent.Start()
	}
	for i, step := range FailPoints {
		t.Run(step, func(t *testing.T) {
			c, cPath := e.container(t, fmt.Sprintf("f%d", i))
			rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("fail%d", i), NetNS: cPath, IfName: "eth0"}
			failAt(step)
			_, err := e.cfg.AddNetworkList(context.Background(), e.list, rt)
			cniError(t, err, types.ErrInternal, "injected failure "+step)
			e.assertGone(t, rt.ContainerID, "eth0", c)
			// The same attachment can then be added for real.
			failAt("")
			if _, err := e.add(t, e.cfg, e.list, rt); err != nil {
				t.Fatalf("ADD after the failed one: %v", err)
			}
			if err := e.cfg.DelNetworkList(context.Background(), e.list, rt); err != nil {
				t.Fatal(err)
			}
			e.assertGone(t, rt.ContainerID, "eth0", c)
		})
	}
	failAt("after-lunch")
	_, cPath := e.container(t, "fx")
	_, err := e.cfg.AddNetworkList(context.Background(), e.list, &libcni.RuntimeConf{ContainerID: "failx", NetNS: cPath, IfName: "eth0"})
	cniError(t, err, types.ErrInvalidEnvironmentVariables, `fail point "after-lunch": want one of`)
	failAt("")

	// The variable the plugin binary once read is not forwarded.
	env := libcni.NewCNIConfigWithCacheDir([]string{e.dir}, t.TempDir(), &cnirun.NSExec{HostNS: e.hostPath, Env: []string{"ROMANA_CNI_FAIL_AT=after-allocate"}})
	rt := &libcni.RuntimeConf{ContainerID: "failr", NetNS: cPath, IfName: "eth0"}
	if _, err := env.AddNetworkList(context.Background(), e.list, rt); err != nil {
		t.Fatalf("ADD with ROMANA_CNI_FAIL_AT=after-allocate in the plugin's environment: %v", err)
	}
	if err := env.DelNetworkList(context.Background(), e.list, rt); err != nil {
		t.Fatal(err)
	}
}

// TestLibcniGC: GC releases the plugin's attachments that are not in the
// valid list (found at romanad, not in the runtime's cache), deletes their
// veths and stale veths of ours, and keeps valid attachments and addresses
// it does not own.
func TestLibcniGC(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var rts []*libcni.RuntimeConf
	var nss []string
	for i := range 3 {
		c, cPath := e.container(t, fmt.Sprintf("g%d", i))
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("gc%d", i), NetNS: cPath, IfName: "eth0"}
		if _, err := e.add(t, e.cfg, e.list, rt); err != nil {
			t.Fatalf("ADD %s: %v", rt.ContainerID, err)
		}
		rts = append(rts, rt)
		nss = append(nss, c)
	}
	// An address someone else allocated on this host, and a veth of ours
	// whose address is gone (a crashed plugin's leftover).
	foreign, err := e.rd.Allocate(ctx, api.AddressRequest{Name: "vm-1", Host: testHost, Tenant: "default-tenant", Segment: "default"})
	if err != nil {
		t.Fatal(err)
	}
	ghost := VethName("ghost:eth0")
	run(t, "ip", "-n", e.host, "link", "add", ghost, "type", "veth", "peer", "name", "romt-ghostpeer")

	// A runtime with an empty cache (e.g. restarted) garbage-collects with
	// gc0 and gc2 valid: only the plugin's own GC can find gc1.
	fresh := libcni.NewCNIConfigWithCacheDir([]string{e.dir}, t.TempDir(), &cnirun.NSExec{HostNS: e.hostPath})
	err = fresh.GCNetworkList(ctx, e.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{
		{ContainerID: "gc0", IfName: "eth0"}, {ContainerID: "gc2", IfName: "eth0"}}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	e.assertGone(t, "gc1", "eth0", nss[1])
	if slices.Contains(links(t, e.host), ghost) {
		t.Errorf("stale veth %s survived GC", ghost)
	}
	for _, i := range []int{0, 2} {
		if err := e.cfg.CheckNetworkList(ctx, e.list, rts[i]); err != nil {
			t.Errorf("valid attachment %s broken by GC: %v", rts[i].ContainerID, err)
		}
	}
	if _, err := e.rd.GetAddress(ctx, "vm-1"); err != nil {
		t.Errorf("GC released an address it does not own (%s): %v", foreign.IP, err)
	}
	if !slices.Contains(links(t, e.host), "romana-gw") {
		t.Error("GC deleted romana-gw")
	}

	// GC with nothing valid through the runtime's own libcni: all gone.
	if err := e.cfg.GCNetworkList(ctx, e.list, &libcni.GCArgs{}); err != nil {
		t.Fatalf("GC all: %v", err)
	}
	for i, rt := range rts {
		e.assertGone(t, rt.ContainerID, "eth0", nss[i])
	}
	if _, err := e.rd.GetAddress(ctx, "vm-1"); err != nil {
		t.Errorf("GC released an address it does not own: %v", err)
	}
}

// TestCnitool drives the plugin with cnitool, as an operator would.
func TestCnitool(t *testing.T) {
	e := newEnv(t)
	tool, err := exec.LookPath("cnitool")
	if err != nil {
		for _, p := range []string{"/root/go/bin/cnitool", "/usr/local/bin/cnitool"} {
			if _, err2 := exec.LookPath(p); err2 == nil {
				tool, err = p, nil
				break
			}
		}
	}
	if err != nil {
		if isCI() {
			t.Fatal("cnitool not installed (scripts/install-deps.sh installs it)")
		}
		t.Skip("cnitool not installed; run scripts/install-deps.sh")
	}
	confDir := t.TempDir()
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"romana-cnitool-%s","plugins":[{"type":"romana-cni","agentSocket":%q,"tenant":"default-tenant"}]}`,
		strings.TrimPrefix(e.host, "romt-"), e.sock)
	writeFile(t, confDir+"/10-romana.conflist", conf)
	netName := "romana-cnitool-" + strings.TrimPrefix(e.host, "romt-")
	c, cPath := e.container(t, "tool")
	containerID := cnitoolContainerID(cPath)
	t.Cleanup(func() { removeCnitoolCache(netName, containerID) })

	tool1 := func(args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", e.host, tool}, args...)...)
		cmd.Env = append(cmd.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+e.dir, "CNI_ARGS=ROMANA_SEGMENT=tools")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := tool1("add", netName, cPath)
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s", err, out)
	}
	a, err := e.rd.GetAddress(context.Background(), AllocationName(containerID, "eth0"))
	if err != nil || a.Segment != "tools" || !strings.Contains(out, a.IP.String()+"/32") {
		t.Fatalf("cnitool add printed %s; romanad has %+v, %v", out, a, err)
	}
	if err := ping(c, Gateway.String()); err != nil {
		t.Error(err)
	}
	for _, cmd := range [][]string{{"check", netName, cPath}, {"status", netName, cPath}, {"del", netName, cPath}, {"del", netName, cPath}} {
		if out, err := tool1(cmd...); err != nil {
			t.Errorf("cnitool %s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
	}
	e.assertGone(t, containerID, "eth0", c)
	// cnitool gc passes no valid list: everything of this network goes.
	if out, err := tool1("add", netName, cPath); err != nil {
		t.Fatalf("cnitool add: %v\n%s", err, out)
	}
	if out, err := tool1("gc", netName, cPath); err != nil {
		t.Fatalf("cnitool gc: %v\n%s", err, out)
	}
	e.assertGone(t, containerID, "eth0", c)
}

// startRomanad starts a real romanad for a test on a controller machine of
// lab, serving TLS at controllerAddr:romanadPort (its harness clients dial
// from inside the controller), and seeds it with a network, the test host,
// and the tenants and segments the tests use. The plugin reaches it over
// the lab's underlay as host:h1, the agent's identity.
func startRomanad(tb testing.TB, lab *sim.Lab) (*servertest.Instance, *sim.Host) {
	tb.Helper()
	ctl, err := lab.AddController(context.Background(), "ctl", controllerAddr)
	if err != nil {
		tb.Fatal(err)
	}
	addr := netip.AddrPortFrom(controllerAddr.Addr(), romanadPort).String()
	in := servertest.Start(tb,
		servertest.WithListener(func() (net.Listener, error) { return ctl.Listen("tcp", addr) }, controllerAddr.Addr().String()),
		servertest.WithDialer(dialIn(ctl.Namespace)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := in.Client
	if _, err := c.AddNetwork(ctx, api.Network{Name: "net1", CIDR: "10.0.0.0/8",
		Fields: []plan.Field{{Name: "host", Bits: 8}, {Name: "tenant", Bits: 4}, {Name: "segment", Bits: 4}}}); err != nil {
		tb.Fatalf("seed romanad: %v", err)
	}
	if _, err := c.AddHost(ctx, api.Host{Name: testHost, IP: hostAddr.Addr()}); err != nil {
		tb.Fatalf("seed romanad: %v", err)
	}
	for _, ts := range [][2]string{{"default-tenant", "default"}, {"default-tenant", "tools"}, {"acme", "default"}, {"acme", "web"}} {
		if _, err := c.GetTenant(ctx, ts[0]); api.IsNotFound(err) {
			if _, err := c.AddTenant(ctx, api.Tenant{Name: ts[0]}); err != nil {
				tb.Fatalf("seed romanad: %v", err)
			}
		}
		if _, err := c.AddSegment(ctx, api.Segment{Tenant: ts[0], Name: ts[1]}); err != nil {
			tb.Fatalf("seed romanad: %v", err)
		}
	}
	return in, ctl
}

// TestLibcniParallel runs ADDs and then DELs concurrently, as a kubelet
// starting several pods does: every endpoint gets its own address and
// reaches the others through the host.
func TestLibcniParallel(t *testing.T) {
	e := newEnv(t)
	const n = 6
	nss := make([]string, n)
	rts := make([]*libcni.RuntimeConf, n)
	for i := range n {
		var path string
		nss[i], path = e.container(t, fmt.Sprintf("p%d", i))
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("par%d", i), NetNS: path, IfName: "eth0"}
	}
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := e.cfg.AddNetworkList(context.Background(), e.list, rts[i])
			if err != nil {
				errs[i] = err
				return
			}
			res, err := current.NewResultFromResult(r)
			if err != nil || len(res.IPs) != 1 {
				errs[i] = fmt.Errorf("result %v: %v", r, err)
				return
			}
			ips[i], _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD %s: %v", rts[i].ContainerID, err)
		}
		if seen[ips[i]] {
			t.Fatalf("address %s handed out twice: %v", ips[i], ips)
		}
		seen[ips[i]] = true
	}
	for i := range n {
		if err := ping(nss[i], ips[(i+1)%n].String()); err != nil {
			t.Error(err)
		}
	}
	for i := range n {
		wg.Go(func() { errs[i] = e.cfg.DelNetworkList(context.Background(), e.list, rts[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL %s: %v", rts[i].ContainerID, err)
		}
		e.assertGone(t, rts[i].ContainerID, "eth0", nss[i])
	}
}
