package cni

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/romana/romana/cnirun"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/sim/simtest"
)

const benchAttachments = 50

// benchPlugin is one plugin set-up under measurement.
type benchPlugin struct {
	name     string
	cfg      *libcni.CNIConfig
	list     *libcni.NetworkConfigList
	add, del []time.Duration
}

// BenchmarkCNIAddDel measures CNI ADD and DEL latency over 50 attachments
// for romana-cni (the thin binary forwarding to the agent's CNI server,
// run warm in the test process as the agent runs it, which reaches a real
// romanad on a controller of a lab over mutual TLS as host:h1) and, in the
// same run, Debian's
// reference plugins ptp + host-local and bridge + host-local. Each plugin
// runs in its own host namespace, entered on a locked thread before the
// fork (no `ip netns exec` in the measured path); the three are interleaved
// attachment by attachment, in A-B-C-C-B-A order (abba), so machine noise
// hits them alike. It also reports the ratios of romana-cni's p50s to
// ptp's. All use CNI
// spec 1.0.0, the newest Debian's plugins answer.
//
//	make bench   (or: go test -run '^$' -bench CNIAddDel -benchtime 1x ./cni)
func BenchmarkCNIAddDel(b *testing.B) {
	requireRoot(b)
	for _, p := range []string{"/usr/lib/cni/ptp", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("reference plugin missing (apt-get install containernetworking-plugins): %v", err)
		}
	}
	lab := simtest.New(b)
	in, _ := startRomanad(b, lab)
	romanaHost, err := lab.AddHost(context.Background(), testHost, hostAddr)
	if err != nil {
		b.Fatal(err)
	}
	hostGateway(b, romanaHost.Namespace.Name)
	sock := filepath.Join(b.TempDir(), "agent", "cni.sock")
	startAgentServer(b, romanaHost.Path, sock, &Plugin{Romanad: in.ClientAs(b, pki.Host(testHost)), Host: testHost, Server: in.URL})
	dir := pluginDir(b)
	id := uniq()
	paths := []string{dir, "/usr/lib/cni"}

	hostNS := func(name string, romana bool) ns.NetNS {
		path := romanaHost.Path
		if !romana {
			_, path = netnsAdd(b, "cnib-"+id+"-"+name)
		}
		h, err := ns.GetNS(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		return h
	}
	mk := func(name string, h ns.NetNS, conf string) *benchPlugin {
		l, err := libcni.ConfListFromBytes([]byte(conf))
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		return &benchPlugin{name: name, cfg: libcni.NewCNIConfigWithCacheDir(paths, b.TempDir(), &cnirun.NSExec{HostNS: h.Path()}), list: l}
	}
	plugins := []*benchPlugin{
		mk("romana-cni", hostNS("romana", true), fmt.Sprintf(
			`{"cniVersion":"1.0.0","name":"bench-romana","plugins":[{"type":"romana-cni","agentSocket":%q,"tenant":"default-tenant","mtu":1500}]}`,
			sock)),
		mk("ptp + host-local", hostNS("ptp", false), fmt.Sprintf(
			`{"cniVersion":"1.0.0","name":"bench-ptp","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.201.0.0/16"}]],"dataDir":%q}}]}`,
			b.TempDir())),
		mk("bridge + host-local", hostNS("bridge", false), fmt.Sprintf(
			`{"cniVersion":"1.0.0","name":"bench-bridge","plugins":[{"type":"bridge","bridge":"cnibench0","isGateway":true,"ipMasq":false,"mtu":1500,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.202.0.0/16"}]],"dataDir":%q}}]}`,
			b.TempDir())),
	}
	// One container namespace per attachment and plugin.
	ctrs := make([][]string, len(plugins))
	for pi := range plugins {
		for i := range benchAttachments {
			_, path := netnsAdd(b, fmt.Sprintf("cnib-%s-%d-%d", id, pi, i))
			ctrs[pi] = append(ctrs[pi], path)
		}
	}
	ctx := context.Background()
	rt := func(pi, i, round int) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%d-%d-%d", pi, round, i), NetNS: ctrs[pi][i], IfName: "eth0"}
	}
	b.ResetTimer()
	for round := range b.N {
		for i := range benchAttachments {
			for _, pi := range abba(len(plugins), i) {
				p := plugins[pi]
				t0 := time.Now()
				if _, err := p.cfg.AddNetworkList(ctx, p.list, rt(pi, i, round)); err != nil {
					b.Fatalf("%s ADD %d: %v", p.name, i, err)
				}
				p.add = append(p.add, time.Since(t0))
			}
		}
		for i := range benchAttachments {
			for _, pi := range abba(len(plugins), i) {
				p := plugins[pi]
				t0 := time.Now()
				if err := p.cfg.DelNetworkList(ctx, p.list, rt(pi, i, round)); err != nil {
					b.Fatalf("%s DEL %d: %v", p.name, i, err)
				}
				p.del = append(p.del, time.Since(t0))
			}
		}
	}
	b.StopTimer()

	var tbl strings.Builder
	fmt.Fprintf(&tbl, "\n| plugin | ADD p50 | ADD p99 | DEL p50 | DEL p99 | attachments |\n|---|---|---|---|---|---|\n")
	for _, p := range plugins {
		short := strings.Fields(p.name)[0]
		fmt.Fprintf(&tbl, "| %s | %s | %s | %s | %s | %d |\n", p.name,
			ms(pct(p.add, 50)), ms(pct(p.add, 99)), ms(pct(p.del, 50)), ms(pct(p.del, 99)), len(p.add))
		b.ReportMetric(pct(p.add, 50).Seconds()*1e3, short+"-add-p50-ms")
		b.ReportMetric(pct(p.add, 99).Seconds()*1e3, short+"-add-p99-ms")
		b.ReportMetric(pct(p.del, 50).Seconds()*1e3, short+"-del-p50-ms")
		b.ReportMetric(pct(p.del, 99).Seconds()*1e3, short+"-del-p99-ms")
	}
	r, ptp := plugins[0], plugins[1]
	addRatio := pct(r.add, 50).Seconds() / pct(ptp.add, 50).Seconds()
	delRatio := pct(r.del, 50).Seconds() / pct(ptp.del, 50).Seconds()
	fmt.Fprintf(&tbl, "\nromana-cni ÷ ptp + host-local, p50: ADD %.2f, DEL %.2f\n", addRatio, delRatio)
	b.ReportMetric(addRatio, "add-p50-ratio")
	b.ReportMetric(delRatio, "del-p50-ratio")
	b.Log(tbl.String())
}

// abba is the order in which attachment i runs the n plugins: forward for
// even i, backward for odd, so that over two attachments each plugin runs
// A-B-C-C-B-A and a drift in machine load hits them alike.
func abba(n, i int) []int {
	out := make([]int, n)
	for k := range out {
		out[k] = k
		if i%2 == 1 {
			out[k] = n - 1 - k
		}
	}
	return out
}

// pct is the nearest-rank percentile of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", d.Seconds()*1e3) }
