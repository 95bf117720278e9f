package config_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/romana/romana/config"
)

// How romanad and romana-agent wire --config-file into their cobra command:
// AddFlag when defining the flags, Apply first thing in RunE (or PreRunE),
// after cobra parsed the command line.
func Example_cobra() {
	var listen, logLevel string
	cmd := &cobra.Command{
		Use: "romanad",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := config.Apply(cmd.Flags()); err != nil {
				return err
			}
			fmt.Println("listen", listen, "log-level", logLevel)
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9600", "TCP address of the API")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level")
	config.AddFlag(cmd.Flags())

	dir, _ := os.MkdirTemp("", "config-example")
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "romanad.yaml")
	_ = os.WriteFile(file, []byte("listen: 0.0.0.0:9600\nlog-level: debug\n"), 0o644)

	cmd.SetArgs([]string{"--config-file", file, "--log-level", "warn"})
	if err := cmd.Execute(); err != nil {
		fmt.Println(err)
	}

	_ = os.WriteFile(file, []byte("listen: 0.0.0.0:9600\nlisten-addr: x\n"), 0o644)
	cmd.SetArgs([]string{"--config-file", file})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		fmt.Println(filepath.Base(err.Error()))
	}
	// Output:
	// listen 0.0.0.0:9600 log-level warn
	// romanad.yaml:2: key "listen-addr": unknown (no flag --listen-addr)
}
