package bird

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"testing"

	"github.com/romana/romana/expect"
)

func requireBird(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(Daemon); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs %s (Debian bird2): %v", Daemon, err)
		}
		t.Skipf("needs %s (Debian bird2): %v", Daemon, err)
	}
}

func torConfig() Config {
	pools := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	return Config{
		RouterID:   netip.MustParseAddr("172.31.255.1"),
		ASN:        65101,
		Aggregates: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/12")},
		Neighbors: []Neighbor{
			{Name: "h1", Local: netip.MustParseAddr("192.168.1.1"), Addr: netip.MustParseAddr("192.168.1.11"), ASN: 64512,
				Import: "where net ~ " + PrefixSet(pools, 16), Export: "none", Password: "s3cret", GracefulRestart: true, HoldTime: 9, ConnectRetry: 1},
			{Name: "spine1", Addr: netip.MustParseAddr("172.16.0.0"), ASN: 65100,
				Import: "where net ~ " + PrefixSet(pools, 12), Export: `where proto = "romana_aggr"`},
		},
		Extra: "protocol static romana_static4 {\n\tipv4;\n\troute 10.0.0.0/8 via 172.16.0.0;\n}",
	}
}

func TestConfigGoldenAndParses(t *testing.T) {
	conf := torConfig().Render()
	expect.Golden(t, "tor.conf", conf)
	requireBird(t)
	if err := Check(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
}

func TestParseNetworks(t *testing.T) {
	out := `BIRD 2.0.12 ready.
Table master4:
10.1.0.0/16          unicast [h2 15:31:02.441] * (100) [AS64512i]
	via 192.168.1.12 on eth0
10.0.0.0/16          unicast [h1 15:31:02.440] * (100) [AS64512i]
	via 192.168.1.11 on eth0
                     unicast [h1b 15:31:02.440] (100) [AS64512i]
	via 192.168.1.11 on eth0
10.0.0.0/12          blackhole [romana_aggr 15:31:01.000] * (200)
`
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/12"), netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("10.1.0.0/16")}
	if got := parseNetworks(out); !reflect.DeepEqual(got, want) {
		t.Errorf("parseNetworks = %v, want %v", got, want)
	}
}

// A dual-stack top-of-rack: one session per family with the host and with
// the spine, an aggregate in each family (romana_aggr, romana_aggr6).
func TestDualStackConfigGoldenAndParses(t *testing.T) {
	pool4 := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	pool6 := []netip.Prefix{netip.MustParsePrefix("fd00:1234:5678::/48")}
	c := Config{
		RouterID:   netip.MustParseAddr("192.168.1.1"),
		ASN:        65101,
		Aggregates: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/12"), netip.MustParsePrefix("fd00:1234:5678::/52")},
		Neighbors: []Neighbor{
			{Name: "h1", Local: netip.MustParseAddr("192.168.1.1"), Addr: netip.MustParseAddr("192.168.1.11"), ASN: 64512,
				Import: "where net ~ " + PrefixSet(pool4, 16), Export: "none"},
			{Name: "h1v6", Local: netip.MustParseAddr("fd00:1::1"), Addr: netip.MustParseAddr("fd00:1::11"), ASN: 64512,
				Import: "where net ~ " + PrefixSet(pool6, 64), Export: "where source = RTS_BGP", NextHopSelf: true},
			{Name: "spine1", Local: netip.MustParseAddr("172.16.0.1"), Addr: netip.MustParseAddr("172.16.0.0"), ASN: 65100,
				Import: "where net ~ " + PrefixSet(pool4, 12), Export: `where proto = "romana_aggr"`},
			{Name: "spine1v6", Local: netip.MustParseAddr("fd00:ff::1"), Addr: netip.MustParseAddr("fd00:ff::"), ASN: 65100,
				Import: "where net ~ " + PrefixSet(pool6, 52), Export: `where proto = "romana_aggr6"`},
		},
	}
	conf := c.Render()
	expect.Golden(t, "tor-dualstack.conf", conf)
	requireBird(t)
	if err := Check(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
}
