package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/romana/romana/api"
)

func TestLoadConf(t *testing.T) {
	tests := []struct {
		name    string
		conf    string
		want    func(*NetConf) string // "" when as expected
		code    uint
		errText string
	}{
		{
			name: "full",
			conf: `{"cniVersion":"1.1.0","name":"romana","type":"romana-cni","agentSocket":"/run/x/cni.sock","network":"net1","tenant":"acme","segment":"web","mtu":1400,"dns":{"nameservers":["10.0.0.10"]}}`,
			want: func(c *NetConf) string {
				if c.AgentSocket != "/run/x/cni.sock" || c.Network != "net1" || c.Tenant != "acme" || c.Segment != "web" || c.MTU != 1400 || len(c.DNS.Nameservers) != 1 {
					return fmt.Sprintf("%+v", c)
				}
				return ""
			},
		},
		{
			name: "defaults",
			conf: `{"cniVersion":"1.1.0","name":"romana","type":"romana-cni"}`,
			want: func(c *NetConf) string {
				if c.AgentSocket != "" || c.MTU != 1500 || c.Tenant != "" || c.Network != "" {
					return fmt.Sprintf("%+v", c)
				}
				return ""
			},
		},
		{
			// A config written for the plugin that talked to romanad itself
			// still loads: the agent's identity and host are used.
			name: "older keys ignored",
			conf: `{"cniVersion":"1.1.0","name":"romana","type":"romana-cni","server":"http://x:1","credential":"/etc/romana/cni.conf","host":"H_1","tenant":"acme"}`,
			want: func(c *NetConf) string {
				if c.Tenant != "acme" {
					return fmt.Sprintf("%+v", c)
				}
				return ""
			},
		},
		{name: "bad json", conf: `{"name":`, code: types.ErrDecodingFailure, errText: "decode network config"},
		{name: "bad tenant", conf: `{"name":"romana","tenant":"Acme"}`, code: types.ErrInvalidNetworkConfig, errText: `invalid tenant name "Acme"`},
		{name: "bad network", conf: `{"name":"romana","network":"N_1"}`, code: types.ErrInvalidNetworkConfig, errText: `invalid network name`},
		{name: "bad mtu", conf: `{"name":"romana","mtu":10}`, code: types.ErrInvalidNetworkConfig, errText: "mtu 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadConf([]byte(tt.conf))
			if tt.errText != "" {
				var te *types.Error
				if !errors.As(err, &te) || te.Code != tt.code || !strings.Contains(te.Msg+te.Details, tt.errText) {
					t.Fatalf("err = %#v, want code %d containing %q", err, tt.code, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := tt.want(c); d != "" {
				t.Errorf("unexpected conf: %s", d)
			}
		})
	}
}

func TestParseCNIArgs(t *testing.T) {
	got, err := ParseCNIArgs("IgnoreUnknown=1;ROMANA_TENANT=acme;;K8S_POD_NAMESPACE=ns1;X=")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"IgnoreUnknown": "1", "ROMANA_TENANT": "acme", "K8S_POD_NAMESPACE": "ns1", "X": ""}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"novalue", "=v", "A=1;B"} {
		if _, err := ParseCNIArgs(bad); err == nil {
			t.Errorf("ParseCNIArgs(%q) succeeded, want error", bad)
		}
	}
}

func FuzzParseCNIArgs(f *testing.F) {
	for _, s := range []string{"", "A=1", "IgnoreUnknown=1;ROMANA_TENANT=acme;ROMANA_SEGMENT=web", ";;=", "a=b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseCNIArgs(s)
		if err != nil {
			return
		}
		// Every parsed pair re-serialises to a string that parses to the same map.
		var parts []string
		for k, v := range m {
			if k == "" || strings.Contains(k, ";") || strings.Contains(k, "=") || strings.Contains(v, ";") {
				t.Fatalf("ParseCNIArgs(%q) = %v: malformed pair %q=%q", s, m, k, v)
			}
			parts = append(parts, k+"="+v)
		}
		m2, err := ParseCNIArgs(strings.Join(parts, ";"))
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip of %q: %v -> %v, %v", s, m, m2, err)
		}
	})
}

func TestResolve(t *testing.T) {
	base := func(mod func(*NetConf)) *NetConf {
		c := &NetConf{Tenant: "default-tenant", Segment: "default"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	kube := func(c *NetConf) { c.Kubernetes = true }
	withArgs := func(tenant, segment string) func(*NetConf) {
		return func(c *NetConf) {
			c.Args = &ConfArgs{}
			c.Args.CNI.Romana.Tenant = tenant
			c.Args.CNI.Romana.Segment = segment
		}
	}
	tests := []struct {
		name     string
		conf     *NetConf
		cniArgs  string
		tenant   string
		tenFrom  string
		segment  string
		segFrom  string
		pod      string
		podUID   string
		errCode  uint
		errMatch string
	}{
		{name: "config defaults", conf: base(nil), tenant: "default-tenant", tenFrom: `config "tenant"`, segment: "default", segFrom: `config "segment"`},
		{name: "CNI_ARGS", conf: base(nil), cniArgs: "IgnoreUnknown=1;ROMANA_TENANT=acme;ROMANA_SEGMENT=web",
			tenant: "acme", tenFrom: "CNI_ARGS ROMANA_TENANT", segment: "web", segFrom: "CNI_ARGS ROMANA_SEGMENT"},
		{name: "config args beat CNI_ARGS", conf: base(withArgs("blue", "db")), cniArgs: "ROMANA_TENANT=acme;ROMANA_SEGMENT=web",
			tenant: "blue", tenFrom: "config args.cni.romana.tenant", segment: "db", segFrom: "config args.cni.romana.segment"},
		{name: "tenant and segment from different sources", conf: base(withArgs("", "db")), cniArgs: "ROMANA_TENANT=acme",
			tenant: "acme", tenFrom: "CNI_ARGS ROMANA_TENANT", segment: "db", segFrom: "config args.cni.romana.segment"},
		{name: "kubernetes namespace", conf: base(nil), cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1",
			tenant: "shop", tenFrom: "CNI_ARGS K8S_POD_NAMESPACE", segment: "default", segFrom: `config "segment"`},
		{name: "ROMANA_TENANT beats namespace", conf: base(nil), cniArgs: "K8S_POD_NAMESPACE=shop;ROMANA_TENANT=acme",
			tenant: "acme", tenFrom: "CNI_ARGS ROMANA_TENANT", segment: "default", segFrom: `config "segment"`},
		{name: "segment defaults", conf: &NetConf{Tenant: "t"}, tenant: "t", tenFrom: `config "tenant"`, segment: "default", segFrom: "default"},
		{name: "no tenant", conf: &NetConf{}, errCode: types.ErrInvalidNetworkConfig, errMatch: "no tenant for this endpoint"},
		{name: "bad tenant from args", conf: base(nil), cniArgs: "ROMANA_TENANT=Bad_Name",
			errCode: types.ErrInvalidNetworkConfig, errMatch: "tenant from CNI_ARGS ROMANA_TENANT"},
		{name: "bad segment", conf: base(nil), cniArgs: "ROMANA_SEGMENT=-x",
			errCode: types.ErrInvalidNetworkConfig, errMatch: "segment from CNI_ARGS ROMANA_SEGMENT"},
		{name: "malformed CNI_ARGS", conf: base(nil), cniArgs: "ROMANA_TENANT",
			errCode: types.ErrInvalidEnvironmentVariables, errMatch: "not KEY=VALUE"},
		// Kubernetes mode: romanad resolves what args leave out from the pod's record.
		{name: "kubernetes mode", conf: base(kube), cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=u",
			tenFrom: "pod shop/web-1's record at romanad", segFrom: "pod shop/web-1's record at romanad", pod: "shop/web-1", podUID: "u"},
		{name: "kubernetes mode, explicit segment", conf: base(kube), cniArgs: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;ROMANA_SEGMENT=db",
			tenFrom: "pod shop/web-1's record at romanad", segment: "db", segFrom: "CNI_ARGS ROMANA_SEGMENT", pod: "shop/web-1"},
		{name: "kubernetes mode, explicit tenant and segment win", conf: base(func(c *NetConf) { kube(c); withArgs("blue", "")(c) }),
			cniArgs: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;ROMANA_SEGMENT=db",
			tenant:  "blue", tenFrom: "config args.cni.romana.tenant", segment: "db", segFrom: "CNI_ARGS ROMANA_SEGMENT", pod: "shop/web-1"},
		{name: "kubernetes mode without a pod name", conf: base(kube), cniArgs: "K8S_POD_NAMESPACE=shop",
			tenant: "shop", tenFrom: "CNI_ARGS K8S_POD_NAMESPACE", segment: "default", segFrom: `config "segment"`},
		{name: "kubernetes mode, bad pod name", conf: base(kube), cniArgs: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=Web_1",
			errCode: types.ErrInvalidEnvironmentVariables, errMatch: `invalid pod name "Web_1"`},
		{name: "kubernetes mode, bad explicit segment", conf: base(kube), cniArgs: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=w;ROMANA_SEGMENT=DB",
			errCode: types.ErrInvalidNetworkConfig, errMatch: "segment from CNI_ARGS ROMANA_SEGMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(tt.conf, tt.cniArgs)
			if tt.errMatch != "" {
				var te *types.Error
				if !errors.As(err, &te) || te.Code != tt.errCode || !strings.Contains(te.Msg, tt.errMatch) {
					t.Fatalf("err = %v, want code %d containing %q", err, tt.errCode, tt.errMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Target{Tenant: tt.tenant, TenantFrom: tt.tenFrom, Segment: tt.segment, SegmentFrom: tt.segFrom, Pod: tt.pod, PodUID: tt.podUID}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestConfArgsJSON(t *testing.T) {
	c, err := LoadConf([]byte(`{"name":"romana","args":{"cni":{"romana":{"tenant":"acme","segment":"web"}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Resolve(c, "")
	if err != nil || got.Tenant != "acme" || got.Segment != "web" {
		t.Fatalf("Resolve = %+v, %v", got, err)
	}
}

func TestVethName(t *testing.T) {
	// Golden: the name is part of the contract with existing hosts.
	if got := VethName("c1:eth0"); got != "romana18b8fe0ca" || !IsVethName(got) {
		t.Fatalf("VethName(c1:eth0) = %q", got)
	}
	seen := map[string]string{}
	for i := range 2000 {
		n := fmt.Sprintf("container-%d:eth0", i)
		v := VethName(n)
		if len(v) > 15 || !IsVethName(v) {
			t.Fatalf("VethName(%q) = %q", n, v)
		}
		if o, dup := seen[v]; dup {
			t.Fatalf("VethName collision: %q and %q -> %q", o, n, v)
		}
		seen[v] = n
	}
	for _, n := range []string{"romana-gw", "romana", "romana0123456789", "romanaABCDEF123", "eth0"} {
		if IsVethName(n) {
			t.Errorf("IsVethName(%q) = true", n)
		}
	}
}

func TestBuildResult(t *testing.T) {
	host := &current.Interface{Name: "romana123456789", Mac: "aa:bb:cc:dd:ee:01", Mtu: 1500}
	cont := &current.Interface{Name: "eth0", Mac: "aa:bb:cc:dd:ee:02", Mtu: 1500, Sandbox: "/var/run/netns/c1"}
	res := BuildResult([]netip.Addr{netip.MustParseAddr("10.1.1.27")}, host, cont, types.DNS{Nameservers: []string{"10.0.0.10"}})
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cniVersion":"1.1.0","dns":{"nameservers":["10.0.0.10"]},` +
		`"interfaces":[{"mac":"aa:bb:cc:dd:ee:01","mtu":1500,"name":"romana123456789"},` +
		`{"mac":"aa:bb:cc:dd:ee:02","mtu":1500,"name":"eth0","sandbox":"/var/run/netns/c1"}],` +
		`"ips":[{"address":"10.1.1.27/32","gateway":"169.254.1.1","interface":1}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}]}`
	if string(b) != want {
		t.Errorf("result JSON\n got %s\nwant %s", b, want)
	}
	// Every version the plugin answers can carry the result.
	for _, v := range Versions.SupportedVersions() {
		r, err := res.GetAsVersion(v)
		if err != nil {
			t.Fatalf("as %s: %v", v, err)
		}
		b, _ := json.Marshal(r)
		if !strings.Contains(string(b), `"10.1.1.27/32"`) || !strings.Contains(string(b), `"cniVersion":"`+v+`"`) {
			t.Errorf("as %s: %s", v, b)
		}
	}
}

// A dual-stack result has both addresses, each with its gateway, and a
// default route per family; CNI versions before 1.0 carry the family as
// "version" in each address.
func TestBuildResultDualStack(t *testing.T) {
	host := &current.Interface{Name: "romana123456789", Mac: "aa:bb:cc:dd:ee:01", Mtu: 1500}
	cont := &current.Interface{Name: "eth0", Mac: "aa:bb:cc:dd:ee:02", Mtu: 1500, Sandbox: "/var/run/netns/c1"}
	res := BuildResult([]netip.Addr{netip.MustParseAddr("10.1.1.27"), netip.MustParseAddr("fd00:1234:5678:100:1000::1b")}, host, cont, types.DNS{})
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `"ips":[{"address":"10.1.1.27/32","gateway":"169.254.1.1","interface":1},` +
		`{"address":"fd00:1234:5678:100:1000::1b/128","gateway":"fe80::1","interface":1}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"::/0","gw":"fe80::1"}]}`
	if !strings.HasSuffix(string(b), want) {
		t.Errorf("result JSON\n got %s\nwant suffix %s", b, want)
	}
	r, err := res.GetAsVersion("0.4.0")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(r); !strings.Contains(string(b), `"version":"6","interface":1,"address":"fd00:1234:5678:100:1000::1b/128"`) {
		t.Errorf("as 0.4.0: %s", b)
	}
}

// "networks" names one or two networks, never with "network", never one
// twice; the families of what romanad returns are checked at ADD.
func TestLoadConfNetworks(t *testing.T) {
	for _, tc := range []struct {
		conf, err string
		targets   []string
	}{
		{`{"networks":["pods4","pods6"]}`, "", []string{"pods4", "pods6"}},
		{`{"networks":["pods6"]}`, "", []string{"pods6"}},
		{`{"network":"pods4"}`, "", []string{"pods4"}},
		{`{}`, "", []string{""}},
		{`{"network":"pods4","networks":["pods6"]}`, "not both", nil},
		{`{"networks":["a","b","c"]}`, "at most two", nil},
		{`{"networks":["a","a"]}`, "listed twice", nil},
		{`{"networks":["a",""]}`, "networks[1]", nil},
	} {
		c, err := LoadConf([]byte(tc.conf))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.conf, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.conf, err)
		}
		if got := c.Targets(); !slices.Equal(got, tc.targets) {
			t.Errorf("%s: targets %q, want %q", tc.conf, got, tc.targets)
		}
	}
	a4, a6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	if err := CheckFamilies([]netip.Addr{a4, a6}); err != nil {
		t.Error(err)
	}
	if err := CheckFamilies([]netip.Addr{a6, netip.MustParseAddr("fd00::2")}); err == nil {
		t.Error("two IPv6 addresses accepted")
	}
	if got := AllocationNames("c1", "eth0", 2); !slices.Equal(got, []string{"c1:eth0", "c1:eth0:1"}) {
		t.Errorf("AllocationNames = %q", got)
	}
}

func TestSelectGC(t *testing.T) {
	mk := func(name, netName, cid, ifn string, owned bool) api.Address {
		a := api.Address{Name: name, IP: netip.MustParseAddr("10.0.0.1"), Attrs: map[string]string{
			AttrNetwork: netName, AttrContainerID: cid, AttrIfName: ifn}}
		if owned {
			a.Attrs[AttrOwner] = Owner
		}
		return a
	}
	addrs := []api.Address{
		mk("c3:eth0", "romana", "c3", "eth0", true),
		mk("c1:eth0", "romana", "c1", "eth0", true),
		mk("c1:eth1", "romana", "c1", "eth1", true),
		mk("c2:eth0", "romana", "c2", "eth0", true),
		mk("c4:eth0", "other", "c4", "eth0", true),          // another CNI network
		mk("vm-7", "romana", "vm", "eth0", false),           // not ours
		{Name: "bare", IP: netip.MustParseAddr("10.0.0.9")}, // no attrs at all
	}
	valid := []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}, {ContainerID: "c2", IfName: "eth0"}}
	var got []string
	for _, a := range SelectGC(addrs, "romana", valid) {
		got = append(got, a.Name)
	}
	if want := []string{"c1:eth1", "c3:eth0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("SelectGC = %v, want %v", got, want)
	}
	if n := len(SelectGC(addrs, "romana", nil)); n != 4 {
		t.Errorf("SelectGC with no valid attachments selected %d, want 4", n)
	}
}

func TestStaleVeths(t *testing.T) {
	addrs := []api.Address{{Name: "c1:eth0"}, {Name: "c2:eth0", Interface: "romanaabcdef012"}}
	links := []string{"lo", "romana-gw", VethName("c1:eth0"), "romanaabcdef012", VethName("c2:eth0"), VethName("gone:eth0"), "vethabc"}
	got := StaleVeths(links, addrs)
	// c2's derived name is not owned via Interface but via its name: also kept.
	if want := []string{VethName("gone:eth0")}; !reflect.DeepEqual(got, want) {
		t.Errorf("StaleVeths = %v, want %v", got, want)
	}
}

func TestErrCode(t *testing.T) {
	tests := []struct {
		err  error
		want uint
	}{
		{api.Errorf(api.ReasonInvalid, "bad"), types.ErrInvalidNetworkConfig},
		{fmt.Errorf("allocate: %w", api.Errorf(api.ReasonNotFound, "no tenant")), types.ErrInvalidNetworkConfig},
		{api.Errorf(api.ReasonUnavailable, "etcd down"), types.ErrTryAgainLater},
		{api.Errorf(api.ReasonConflict, "changed"), types.ErrTryAgainLater},
		{api.Errorf(api.ReasonExhausted, "full"), types.ErrInternal},
		{fmt.Errorf("POST /v1/addresses: %w", &net.OpError{Op: "dial", Net: "unix", Err: errors.New("connection refused")}), types.ErrTryAgainLater},
		{types.NewError(types.ErrInvalidNetNS, "x", ""), types.ErrInvalidNetNS},
		{errors.New("other"), types.ErrInternal},
	}
	for _, tt := range tests {
		if got := ErrCode(tt.err); got != tt.want {
			t.Errorf("ErrCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
	e := AsCNIError(api.Errorf(api.ReasonNotFound, `tenant "x" not found`), "allocate c1:eth0")
	if e.Code != types.ErrInvalidNetworkConfig || e.Msg != `allocate c1:eth0: tenant "x" not found` {
		t.Errorf("AsCNIError = %#v", e)
	}
}
