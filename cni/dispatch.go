package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/romana/romana/cni/forward"
)

// Handle runs one forwarded invocation (the CNI_* environment and stdin)
// and returns what the plugin binary prints: what skel.PluginMainFuncs does
// in a plugin that does the work itself. Required variables are checked
// per command, the container id and interface name validated, the config's
// cniVersion reconciled with Versions (CHECK needs 0.4.0, GC and STATUS
// 1.1.0), and an ADD result converted to the config's version.
func (p *Plugin) Handle(ctx context.Context, env map[string]string, stdin []byte) forward.Response {
	out, err := p.handle(ctx, env, stdin)
	if err != nil {
		return errorResponse(err)
	}
	return forward.Response{Output: out}
}

// errorResponse is a failed answer printing err as a CNI error.
func errorResponse(err error) forward.Response {
	b, _ := json.MarshalIndent(AsCNIError(err, ""), "", "    ")
	return forward.Response{Failed: true, Output: append(b, '\n')}
}

// required lists, per command, the CNI_* variables it must have (as skel).
var required = map[string][]string{
	"ADD":    {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
	"CHECK":  {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
	"DEL":    {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"},
	"GC":     {"CNI_PATH"},
	"STATUS": {"CNI_PATH"},
}

// minVersion is the least config cniVersion a command needs.
var minVersion = map[string]string{"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

func (p *Plugin) handle(ctx context.Context, env map[string]string, stdin []byte) ([]byte, error) {
	cmd := env["CNI_COMMAND"]
	if cmd == "VERSION" { // the binary answers it; answer it here too
		var b bytes.Buffer
		err := Versions.Encode(&b)
		return b.Bytes(), err
	}
	req, ok := required[cmd]
	if !ok {
		if cmd == "" {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "required env variables [CNI_COMMAND] missing", "")
		}
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND: %v", cmd), "")
	}
	var missing []string
	for _, k := range req {
		if env[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("required env variables [%s] missing", strings.Join(missing, ",")), "")
	}
	args := &skel.CmdArgs{ContainerID: env["CNI_CONTAINERID"], Netns: env["CNI_NETNS"], IfName: env["CNI_IFNAME"],
		Args: env["CNI_ARGS"], Path: env["CNI_PATH"], NetnsOverride: env["CNI_NETNS_OVERRIDE"], StdinData: stdin}
	if args.ContainerID != "" {
		if err := utils.ValidateContainerID(args.ContainerID); err != nil {
			return nil, err
		}
	}
	if args.IfName != "" {
		if err := utils.ValidateInterfaceName(args.IfName); err != nil {
			return nil, err
		}
	}
	var conf struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("error unmarshall network config: %v", err), "")
	}
	if conf.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "missing network name", "")
	}
	if err := utils.ValidateNetworkName(conf.Name); err != nil {
		return nil, err
	}
	confVersion, err := (&version.ConfigDecoder{}).Decode(stdin)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if least := minVersion[cmd]; least != "" {
		if ok, err := version.GreaterThanOrEqualTo(confVersion, least); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
		} else if !ok {
			return nil, types.NewError(types.ErrIncompatibleCNIVersion, "config version does not allow "+cmd, "")
		}
	}
	if verErr := (&version.Reconciler{}).Check(confVersion, Versions); verErr != nil {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, "incompatible CNI versions", verErr.Details())
	}
	switch cmd {
	case "ADD":
		res, err := p.Add(ctx, args)
		if err != nil {
			return nil, err
		}
		conv, err := res.GetAsVersion(confVersion)
		if err != nil {
			return nil, types.NewError(types.ErrIncompatibleCNIVersion, "convert result to "+confVersion+": "+err.Error(), "")
		}
		var b bytes.Buffer
		if err := conv.PrintTo(&b); err != nil {
			return nil, types.NewError(types.ErrIOFailure, "print result: "+err.Error(), "")
		}
		return b.Bytes(), nil
	case "DEL":
		return nil, p.Del(ctx, args)
	case "CHECK":
		return nil, p.Check(ctx, args)
	case "GC":
		return nil, p.GC(ctx, args)
	case "STATUS":
		return nil, p.Status(ctx, args)
	}
	return nil, errors.New("unreachable")
}
