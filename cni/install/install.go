// Package install puts the romana-cni plugin and its network configuration
// on a node: the agent DaemonSet's init container runs it (romana-agent
// install-cni) with the node's /opt/cni/bin and /etc/cni/net.d mounted.
//
// Every write is a temporary file in the target directory renamed into
// place, so a container runtime never reads half a binary or half a
// config; a file that already has the right contents is left alone, so
// running it again changes nothing. A config file of the same name that is
// not Romana's is never overwritten.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Defaults of the node paths and names.
const (
	DefaultBinDir   = "/opt/cni/bin"
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultConfName = "10-romana.conflist"
	PluginName      = "romana-cni"
	// DefaultPluginSource is where the agent's image keeps the romana-cni
	// binary that romana-agent install-cni copies onto the node.
	DefaultPluginSource = "/opt/romana/bin/romana-cni"
	NetworkName         = "romana"
)

// ErrForeign is returned when the config file to write exists and is not
// Romana's.
var ErrForeign = errors.New("not Romana's")

// Config says what to install where.
type Config struct {
	Plugin   string // the romana-cni binary to copy
	BinDir   string // the node's CNI binary directory
	ConfDir  string // the node's CNI config directory
	ConfName string // file name of the conflist in ConfDir
	Socket   string // the agent's --cni-socket, written as "agentSocket"
	MTU      int    // 0: the agent's default
}

// Result says what Install changed.
type Result struct {
	Binary, Conf  string // the installed paths
	BinaryWritten bool   // false: it was there already, the same
	ConfWritten   bool
	// Before lists config files in ConfDir that sort before Conf: a
	// container runtime uses the first, so Romana's is not used while
	// they are there.
	Before []string
}

// Conflist returns the network configuration list: romana-cni in
// Kubernetes mode (tenant and segment from the pod's record), forwarding
// to socket.
func Conflist(socket string, mtu int) []byte {
	plugin := map[string]any{"type": PluginName, "agentSocket": socket, "kubernetes": true}
	if mtu > 0 {
		plugin["mtu"] = mtu
	}
	// 1.0.0, not 1.1.0: containerd 1.6 and 1.7 (libcni 1.1) refuse a
	// 1.1.0 list ("unsupported CNI result version"), which the kubelets
	// of `make demo-kubernetes` showed; 1.1.0 would add only GC and
	// STATUS, which those runtimes never call.
	b, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       NetworkName,
		"plugins":    []any{plugin},
	}, "", "  ")
	if err != nil {
		panic(err) // plain maps of strings, bools and ints
	}
	return append(b, '\n')
}

// Ours reports whether a config file's contents are Romana's: JSON whose
// plugins include romana-cni (a conflist), or whose type is romana-cni (a
// single config).
func Ours(b []byte) bool {
	var c struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(b, &c) != nil {
		return false
	}
	if c.Type == PluginName {
		return true
	}
	for _, p := range c.Plugins {
		if p.Type == PluginName {
			return true
		}
	}
	return false
}

// Install copies the plugin into BinDir and writes the conflist into
// ConfDir. Both directories must exist (they are the node's, mounted).
func Install(c Config) (Result, error) {
	if c.Plugin == "" || c.BinDir == "" || c.ConfDir == "" || c.ConfName == "" || c.Socket == "" {
		return Result{}, fmt.Errorf("install romana-cni: plugin, bin dir, conf dir, conf name and socket are required")
	}
	if strings.ContainsRune(c.ConfName, '/') || !(strings.HasSuffix(c.ConfName, ".conflist")) {
		return Result{}, fmt.Errorf("install romana-cni: config name %q: want a file name ending in .conflist", c.ConfName)
	}
	r := Result{Binary: filepath.Join(c.BinDir, PluginName), Conf: filepath.Join(c.ConfDir, c.ConfName)}
	bin, err := os.ReadFile(c.Plugin)
	if err != nil {
		return r, fmt.Errorf("install romana-cni: read plugin: %w", err)
	}
	if r.BinaryWritten, err = put(r.Binary, bin, 0o755, nil); err != nil {
		return r, fmt.Errorf("install romana-cni: %w", err)
	}
	conf := Conflist(c.Socket, c.MTU)
	if r.ConfWritten, err = put(r.Conf, conf, 0o644, Ours); err != nil {
		return r, fmt.Errorf("install romana-cni config: %w", err)
	}
	if r.Before, err = before(c.ConfDir, c.ConfName); err != nil {
		return r, fmt.Errorf("install romana-cni config: %w", err)
	}
	return r, nil
}

// put makes path hold data with mode, atomically; it reports whether it
// wrote. With owned set, an existing file it does not accept is refused.
func put(path string, data []byte, mode fs.FileMode, owned func([]byte) bool) (bool, error) {
	switch cur, err := os.ReadFile(path); {
	case err == nil:
		if owned != nil && !owned(cur) {
			return false, fmt.Errorf("%s exists and is %w (it does not use %s): remove or rename it", path, ErrForeign, PluginName)
		}
		if fi, err := os.Stat(path); err == nil && bytes.Equal(cur, data) && fi.Mode().Perm() == mode {
			return false, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing left to remove
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}

// before lists the CNI config files of dir (.conf, .conflist, .json, as
// libcni reads them) that sort before name.
func before(dir, name string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		switch filepath.Ext(n) {
		case ".conf", ".conflist", ".json":
			if n < name && !e.IsDir() {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
