package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/romana/romana/expect"
	"github.com/romana/romana/sim"
)

// TestDemoKeepAndDown: a kept demo prints how to point romana at it, and
// the commands it prints work; a second demo with the same prefix refuses
// to start (saying how to take the first down) and leaves it running;
// --down of a prefix with no demo removes nothing; --down removes exactly
// the namespaces and processes the demo recorded, not a namespace of the
// same prefix it never made.
func TestDemoKeepAndDown(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := binDir(t)
	prefix := labPrefix(t, "romt-dk")
	var out bytes.Buffer
	_, err := Run(ctx, Options{Hosts: 2, Prefix: prefix, BinDir: bin, Out: &out, Keep: true, CLI: "romana"})
	t.Cleanup(func() { Down(prefix) }) // whatever happens below
	if err != nil {
		t.Fatalf("kept demo: %v\n%s", err, out.String())
	}
	st, ok, err := readState(prefix)
	if err != nil || !ok || !st.Kept || len(st.PIDs) == 0 || len(st.Namespaces) == 0 {
		t.Fatalf("state after --keep: %+v, %v, %v", st, ok, err)
	}

	// The export line and three commands, which work from this namespace.
	text := out.String()
	m := regexp.MustCompile(`(?m)^  export ROMANA_SERVER=(unix://\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("--keep printed no export line:\n%s", text)
	}
	server := m[1]
	cmds := regexp.MustCompile(`(?m)^  (romana [^#\n]*?)\s*(#.*)?$`).FindAllStringSubmatch(text[strings.Index(text, "Then try:"):], -1)
	if len(cmds) != 3 {
		t.Fatalf("--keep printed %d commands to try, want 3:\n%s", len(cmds), text)
	}
	romana := func(args ...string) (string, error) {
		c := exec.CommandContext(ctx, filepath.Join(bin, "romana"), args...)
		c.Env = append(os.Environ(), "ROMANA_SERVER="+server, "ROMANA_CONFIG=")
		b, err := c.CombinedOutput()
		return string(b), err
	}
	for _, c := range cmds {
		got, err := romana(strings.Fields(c[1])[1:]...)
		if err != nil || got == "" {
			t.Errorf("printed command %q: %v\n%s", c[1], err, got)
		}
	}
	if !strings.Contains(text, "Take it down with: romana demo --down --prefix "+prefix) {
		t.Errorf("--keep does not say how to take the demo down:\n%s", text)
	}

	// A second demo with the prefix refuses, and the first stays up.
	var out2 bytes.Buffer
	_, err = Run(ctx, Options{Hosts: 2, Prefix: prefix, BinDir: bin, Out: &out2})
	if err == nil || !strings.Contains(err.Error(), "a demo kept with --keep is running with prefix "+prefix) ||
		!strings.Contains(err.Error(), "romana demo --down --prefix "+prefix) {
		t.Fatalf("second demo with prefix %s: %v; want a refusal naming romana demo --down\n%s", prefix, err, out2.String())
	}
	if got, err := romana("host", "list"); err != nil || !strings.Contains(got, "h2") {
		t.Fatalf("the kept demo after a refused second one: host list: %v\n%s", err, got)
	}
	for _, n := range st.Namespaces {
		if !sim.Exists(n) {
			t.Errorf("namespace %s of the kept demo is gone after the refused second demo", n)
		}
	}

	// A namespace with the prefix that the demo never made.
	foreign := prefix + "-notours"
	if b, err := exec.Command("ip", "netns", "add", foreign).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", foreign, err, b)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", foreign).Run() })

	// --down of another prefix: nothing to do, nothing removed.
	other := labPrefix(t, "romt-zq")
	if msg, err := Down(other); err != nil || !strings.Contains(msg, "no demo with prefix "+other+" to take down") {
		t.Errorf("Down(%s): %q, %v", other, msg, err)
	}

	msg, err := Down(prefix)
	if err != nil || !strings.HasPrefix(msg, "demo "+prefix+" taken down: ") {
		t.Fatalf("Down: %q, %v", msg, err)
	}
	for _, n := range st.Namespaces {
		if sim.Exists(n) {
			t.Errorf("recorded namespace %s survived --down", n)
		}
	}
	if !sim.Exists(foreign) {
		t.Errorf("--down deleted %s, which the demo never made", foreign)
	}
	// SIGKILLed; gone once reaped (this test process started them).
	expect.Eventually(t, "the demo's processes gone after --down", 10*time.Second, func() error {
		for _, pid := range st.PIDs {
			if ours(pid) {
				return fmt.Errorf("process %d of the demo survived --down", pid)
			}
		}
		return nil
	})
	if _, err := os.Stat(st.Dir); !os.IsNotExist(err) {
		t.Errorf("state directory %s: %v after --down", st.Dir, err)
	}
	if _, ok, _ := readState(prefix); ok {
		t.Error("state file left after --down")
	}
}
