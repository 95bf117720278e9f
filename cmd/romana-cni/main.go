// Command romana-cni is Romana's CNI plugin (spec 1.1.0, also 0.4.0 and
// 1.0.0): a container runtime runs it to attach containers to the routed
// Romana network. It only forwards each request to the host's romana-agent
// (package forward), and imports nothing outside the standard library and
// this module's stdlib-only packages, so it stays small and starts fast.
// Run by hand, without CNI_COMMAND, it takes --help and --version.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/romana/romana/cni/forward"
	"github.com/romana/romana/version"
)

// main installs no signal handler up front: that starts a thread and cost
// about 0.3 ms of every run. The plugin asks for SIGINT and SIGTERM only
// while it waits for an agent that is not there (forward.Plugin.Interrupted).
func main() {
	var code int
	if os.Getenv("CNI_COMMAND") != "" {
		code = forward.New().Run(context.Background()) // a container runtime: arguments ignored
	} else {
		code = byHand(os.Args[1:], os.Stdout, os.Stderr)
	}
	os.Exit(code)
}

// byHand is the command line for a person: --help, --version, or nothing
// (a note on stderr, as CNI plugins print). Exit codes as romanad's: 2 for
// a wrong command line.
func byHand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "CNI plugin romana-cni %s\nCNI protocol versions supported: %s\n", version.String(), strings.Join(forward.Versions, ", "))
		return 0
	}
	switch args[0] {
	case "-h", "--help", "-help":
		fmt.Fprintf(stdout, "%s\n\nUsage:\n  romana-cni [flags]\n\nExamples:\n%s\n\nFlags:\n  -h, --help      help for romana-cni\n  -v, --version   version for romana-cni\n", forward.Long, forward.Example)
		return 0
	case "-v", "--version", "-version":
		fmt.Fprintf(stdout, "romana-cni version %s\n", version.String())
		return 0
	}
	fmt.Fprintf(stderr, "romana-cni: unknown argument %q (without CNI_COMMAND romana-cni takes --help and --version only)\nRun 'romana-cni --help' for usage.\n", args[0])
	return 2
}
