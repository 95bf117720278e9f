// Package cnirun drives CNI plugins through libcni the way a container
// runtime does, with each plugin process started inside a chosen network
// namespace (the simulated host's), so the host side of a veth lands there.
package cnirun

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// NSExec is an invoke.Exec that forks each plugin from a thread that has
// entered HostNS, so the plugin's current namespace is the host's. Env is
// appended to the plugin's environment.
type NSExec struct {
	HostNS string // path, e.g. /run/netns/romd-h1
	Env    []string
	version.PluginDecoder
}

var _ invoke.Exec = (*NSExec)(nil)

// ExecPlugin runs the plugin inside HostNS.
func (e *NSExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var out []byte
	err := ns.WithNetNSPath(e.HostNS, func(ns.NetNS) error {
		var err error
		out, err = run(exec.CommandContext(ctx, pluginPath), stdin, append(environ, e.Env...))
		return err
	})
	return out, err
}

// FindInPath finds a plugin binary in paths.
func (e *NSExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// run runs a plugin command and turns a failure into the plugin's
// *types.Error, as invoke.RawExec does.
func run(cmd *exec.Cmd, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		e := &types.Error{}
		if stdout.Len() == 0 || json.Unmarshal(stdout.Bytes(), e) != nil {
			e = &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("plugin failed: %v: stdout %q stderr %q", err, stdout.String(), stderr.String())}
		}
		return nil, e
	}
	return stdout.Bytes(), nil
}

// Runtime attaches containers on one host with one network configuration.
type Runtime struct {
	cni  *libcni.CNIConfig
	conf *libcni.NetworkConfigList
}

// New returns a runtime whose plugins (found in pluginDirs) run inside
// hostNS, caching results in cacheDir. confJSON is a network configuration
// or configuration list.
func New(hostNS string, pluginDirs []string, cacheDir string, confJSON []byte, env ...string) (*Runtime, error) {
	// A single plugin's config parses as a list with no plugins: tell them
	// apart by the list's "plugins" key.
	conf, err := libcni.ConfListFromBytes(confJSON)
	if err == nil && len(conf.Plugins) == 0 {
		single, err := libcni.ConfFromBytes(confJSON)
		if err != nil {
			return nil, fmt.Errorf("parse CNI config: %w", err)
		}
		conf, err = libcni.ConfListFromConf(single)
		if err != nil {
			return nil, fmt.Errorf("parse CNI config: %w", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("parse CNI config: %w", err)
	}
	ex := &NSExec{HostNS: hostNS, Env: env}
	return &Runtime{cni: libcni.NewCNIConfigWithCacheDir(pluginDirs, cacheDir, ex), conf: conf}, nil
}

// Attachment names one container interface.
func attachment(containerID, netnsPath, ifName string, args [][2]string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: containerID, NetNS: netnsPath, IfName: ifName, Args: args}
}

// Add runs ADD and returns the result.
func (r *Runtime) Add(ctx context.Context, containerID, netnsPath, ifName string, args [][2]string) (types.Result, error) {
	res, err := r.cni.AddNetworkList(ctx, r.conf, attachment(containerID, netnsPath, ifName, args))
	if err != nil {
		return nil, fmt.Errorf("CNI ADD %s/%s: %w", containerID, ifName, err)
	}
	return res, nil
}

// Check runs CHECK.
func (r *Runtime) Check(ctx context.Context, containerID, netnsPath, ifName string, args [][2]string) error {
	if err := r.cni.CheckNetworkList(ctx, r.conf, attachment(containerID, netnsPath, ifName, args)); err != nil {
		return fmt.Errorf("CNI CHECK %s/%s: %w", containerID, ifName, err)
	}
	return nil
}

// Del runs DEL.
func (r *Runtime) Del(ctx context.Context, containerID, netnsPath, ifName string, args [][2]string) error {
	if err := r.cni.DelNetworkList(ctx, r.conf, attachment(containerID, netnsPath, ifName, args)); err != nil {
		return fmt.Errorf("CNI DEL %s/%s: %w", containerID, ifName, err)
	}
	return nil
}
