package install

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func setup(t *testing.T) (Config, string) {
	t.Helper()
	dir := t.TempDir()
	c := Config{Plugin: filepath.Join(dir, "src", "romana-cni"), BinDir: filepath.Join(dir, "bin"), ConfDir: filepath.Join(dir, "net.d"),
		ConfName: DefaultConfName, Socket: "/run/romana-agent/cni.sock"}
	for _, d := range []string{filepath.Dir(c.Plugin), c.BinDir, c.ConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(c.Plugin, []byte("plugin v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestInstall(t *testing.T) {
	c, _ := setup(t)
	r, err := Install(c)
	if err != nil {
		t.Fatal(err)
	}
	if !r.BinaryWritten || !r.ConfWritten || len(r.Before) != 0 {
		t.Fatalf("first install: %+v", r)
	}
	bin, err := os.ReadFile(r.Binary)
	if err != nil || string(bin) != "plugin v1" {
		t.Fatalf("binary: %q, %v", bin, err)
	}
	if fi, _ := os.Stat(r.Binary); fi.Mode().Perm() != 0o755 {
		t.Errorf("binary mode %v", fi.Mode())
	}
	var conf struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	b, _ := os.ReadFile(r.Conf)
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "romana-cni", "agentSocket": "/run/romana-agent/cni.sock", "kubernetes": true}
	if conf.CNIVersion != "1.0.0" || conf.Name != "romana" || len(conf.Plugins) != 1 || !reflect.DeepEqual(conf.Plugins[0], want) {
		t.Fatalf("conflist %s", b)
	}

	// Idempotent: nothing written the second time, no temporary files left.
	st1, _ := os.Stat(r.Conf)
	r2, err := Install(c)
	if err != nil || r2.BinaryWritten || r2.ConfWritten {
		t.Fatalf("second install: %+v, %v", r2, err)
	}
	if st2, _ := os.Stat(r.Conf); !os.SameFile(st1, st2) {
		t.Error("the config was replaced though unchanged")
	}
	if got := entries(t, c.BinDir); !reflect.DeepEqual(got, []string{"romana-cni"}) {
		t.Errorf("bin dir holds %v", got)
	}
	if got := entries(t, c.ConfDir); !reflect.DeepEqual(got, []string{DefaultConfName}) {
		t.Errorf("conf dir holds %v", got)
	}

	// A new plugin and a new socket are written over the old ones (ours).
	os.WriteFile(c.Plugin, []byte("plugin v2"), 0o755)
	c.Socket = "/run/other/cni.sock"
	if r3, err := Install(c); err != nil || !r3.BinaryWritten || !r3.ConfWritten {
		t.Fatalf("upgrade: %+v, %v", r3, err)
	}
	if b, _ := os.ReadFile(r.Binary); string(b) != "plugin v2" {
		t.Errorf("binary not upgraded: %q", b)
	}
	if b, _ := os.ReadFile(r.Conf); !Ours(b) || string(b) != string(Conflist("/run/other/cni.sock", 0)) {
		t.Errorf("conflist not rewritten: %s", b)
	}
}

// TestForeignConfigRefused: a file of the same name that does not use
// romana-cni is left exactly as it was, and Install says why.
func TestForeignConfigRefused(t *testing.T) {
	for name, content := range map[string]string{
		"other plugin": `{"cniVersion":"1.0.0","name":"flannel","plugins":[{"type":"flannel"}]}`,
		"not json":     "# some notes\n",
		"empty":        "",
	} {
		c, _ := setup(t)
		p := filepath.Join(c.ConfDir, c.ConfName)
		os.WriteFile(p, []byte(content), 0o600)
		_, err := Install(c)
		if !errors.Is(err, ErrForeign) {
			t.Errorf("%s: got %v, want ErrForeign", name, err)
		}
		if b, _ := os.ReadFile(p); string(b) != content {
			t.Errorf("%s: foreign file changed to %q", name, b)
		}
		if got := entries(t, c.ConfDir); len(got) != 1 {
			t.Errorf("%s: conf dir holds %v", name, got)
		}
	}
	// A single-plugin config of ours is ours.
	if !Ours([]byte(`{"cniVersion":"0.4.0","name":"romana","type":"romana-cni"}`)) {
		t.Error("a .conf of romana-cni is not taken as ours")
	}
}

func TestBefore(t *testing.T) {
	c, _ := setup(t)
	for _, n := range []string{"05-bridge.conf", "00-loopback.json", "99-late.conflist", "01-notes.txt"} {
		os.WriteFile(filepath.Join(c.ConfDir, n), []byte("{}"), 0o644)
	}
	r, err := Install(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"00-loopback.json", "05-bridge.conf"}; !reflect.DeepEqual(r.Before, want) {
		t.Errorf("Before = %v, want %v", r.Before, want)
	}
}

func TestRefusedConfig(t *testing.T) {
	c, _ := setup(t)
	for _, mod := range []func(*Config){
		func(c *Config) { c.ConfName = "../x.conflist" },
		func(c *Config) { c.ConfName = "10-romana.conf" },
		func(c *Config) { c.Socket = "" },
		func(c *Config) { c.Plugin = filepath.Join(c.BinDir, "missing") },
		func(c *Config) { c.ConfDir = filepath.Join(c.ConfDir, "missing") },
	} {
		cc := c
		mod(&cc)
		if _, err := Install(cc); err == nil {
			t.Errorf("%+v: accepted", cc)
		}
	}
}
