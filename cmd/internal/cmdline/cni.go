package cmdline

import (
	"github.com/spf13/cobra"

	"github.com/romana/romana/cni/forward"
)

// CNICommandEnv is the environment variable a container runtime sets when it
// runs romana-cni as a CNI plugin; without it romana-cni is being run by
// hand and takes the command line of NewCNI.
const CNICommandEnv = "CNI_COMMAND"

// NewCNI returns romana-cni's command line for a person: --help and
// --version, as cmd/gendocs documents it. The binary itself does not use
// it (it stays free of cobra to start fast) but prints the same texts.
// Run with no arguments it calls about.
func NewCNI(about func() error) *cobra.Command {
	c := &cobra.Command{Use: "romana-cni", Short: forward.Short, Long: forward.Long, Example: forward.Example}
	return newCommand(c, func(*cobra.Command) error { return about() })
}
