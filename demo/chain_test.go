package demo

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemoChain runs the chain scenario: the firewall's counter must rise
// only while the chain is in place, every probe must succeed in every
// phase, and nothing may be left behind.
func TestDemoChain(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	prefix := labPrefix(t, "romt-dc")
	res, err := RunChain(ctx, Options{Hosts: 3, Prefix: prefix, BinDir: binDir(t), Out: &out})
	if err != nil {
		t.Fatalf("chain demo: %v\n%s", err, out.String())
	}
	phases := map[string]int{}
	for _, r := range res.Rounds {
		phases[r.Phase]++
		if r.Reached != r.Probes {
			t.Errorf("round %+v: not every probe reached the target", r)
		}
		if through := r.Phase == "chained"; through != (r.Delta > 0) {
			t.Errorf("round %+v: firewall delta does not match the phase", r)
		}
	}
	if !res.OK || phases["direct"] == 0 || phases["chained"] == 0 || phases["removed"] == 0 {
		t.Fatalf("chain demo result: %+v\n%s", res, out.String())
	}
	noSecrets(t, out.String())
	if b, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(b), prefix+"-") {
		t.Errorf("namespaces left behind:\n%s", b)
	}
}
