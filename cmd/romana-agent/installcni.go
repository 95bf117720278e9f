package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/cni/install"
)

// installCNI is romana-agent install-cni: package install does the work;
// this prints what it did.
func installCNI(f *cmdline.InstallCNI, stdout io.Writer) error {
	r, err := install.Install(install.Config{Plugin: f.Plugin, BinDir: f.BinDir, ConfDir: f.ConfDir,
		ConfName: f.ConfName, Socket: f.Socket, MTU: f.MTU})
	if err != nil {
		return err
	}
	for _, x := range []struct {
		path    string
		written bool
	}{{r.Binary, r.BinaryWritten}, {r.Conf, r.ConfWritten}} {
		if x.written {
			fmt.Fprintf(stdout, "installed %s\n", x.path)
		} else {
			fmt.Fprintf(stdout, "unchanged %s\n", x.path)
		}
	}
	if len(r.Before) > 0 {
		fmt.Fprintf(stdout, "warning: %s sort before %s: a container runtime uses the first config, so Romana's is not used while they are there\n",
			strings.Join(r.Before, ", "), r.Conf)
	}
	return nil
}
