package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/expect"
	"github.com/romana/romana/fabric"
)

// fakeBGP remembers the last decision it was given.
type fakeBGP struct {
	mu   sync.Mutex
	last fabric.HostBGP
	n    int
}

func (f *fakeBGP) Apply(_ context.Context, d fabric.HostBGP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last, f.n = d, f.n+1
	return nil
}

func (f *fakeBGP) peers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.last.Peers {
		out = append(out, p.String())
	}
	return out
}

func tor(name, local string) api.Device {
	return api.Device{Name: name, Kind: api.DeviceToR, Group: map[string]string{"rack": "r1"}, ASN: 65101,
		Links: []api.DeviceLink{{Local: netip.MustParsePrefix(local)}}}
}

// The agent hands BGP what package fabric decides from the devices it
// follows in the watch stream.
func TestAgentDrivesBGP(t *testing.T) {
	w := newWorld()
	w.snap.Hosts[0].Labels = map[string]string{"rack": "r1"}
	w.snap.Devices = []api.Device{tor("tor1", "192.168.0.254/24")}
	r := newRig(t, w.snap)
	b := &fakeBGP{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Underlay: newFakeUnderlay(), Host: "h1", Mode: "fabric", Resync: time.Hour, Source: r.src, Routes: r.routes, Firewall: r.fw,
			BGP: b, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	wait := func(want ...string) {
		t.Helper()
		expect.Eventually(t, fmt.Sprintf("bgp peers %q", want), within, func() error {
			if got := b.peers(); !slices.Equal(got, want) {
				return fmt.Errorf("bgp peers = %q, want %q", got, want)
			}
			return nil
		})
	}
	wait("tor1 192.168.0.254 as 65101")
	b.mu.Lock()
	if fmt.Sprint(b.last.Announce) != "[10.1.0.0/16]" {
		t.Errorf("announce = %v", b.last.Announce)
	}
	b.mu.Unlock()
	r.src.put(api.KindDevice, "tor2", tor("tor2", "192.168.0.253/24"))
	wait("tor2 192.168.0.253 as 65101", "tor1 192.168.0.254 as 65101")
	r.src.del(api.KindDevice, "tor1")
	wait("tor2 192.168.0.253 as 65101")
}
