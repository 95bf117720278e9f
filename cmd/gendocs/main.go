// Command gendocs writes the command-line reference of Romana's four
// binaries from their cobra commands (package cli for romana, package
// cmdline for romanad, romana-agent and romana-cni): Markdown in DIR/cli
// and man pages in DIR/man. `make docs` runs it on docs/; `make test`
// regenerates into a temporary directory and fails if docs/ differs.
//
//	go run ./cmd/gendocs [-out DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/romana/romana/cli"
	"github.com/romana/romana/cmd/internal/cmdline"
)

// manDate is the date in the man pages' header. It is fixed, not today's,
// so that generating twice gives the same files; change it when the pages
// change in a way worth dating (a release).
var manDate = time.Date(2026, time.November, 30, 0, 0, 0, 0, time.UTC)

func main() {
	out := flag.String("out", "docs", "`directory` to write cli/*.md and man/*.1 under")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "gendocs: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if err := Generate(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

// Commands returns the root command of each binary, as the binaries build
// them (their run functions are never called).
func Commands() []*cobra.Command {
	never := func(context.Context) error { return fmt.Errorf("gendocs: not run") }
	agent := cmdline.NewAgent(func(ctx context.Context, _ *cmdline.Agent) error { return never(ctx) })
	agent.AddCommand(cmdline.NewInstallCNI(func(ctx context.Context, _ *cmdline.InstallCNI) error { return never(ctx) }))
	kube := cmdline.NewKube(func(ctx context.Context, _ *cmdline.Kube) error { return never(ctx) })
	kube.AddCommand(cmdline.NewKubeBootstrap(func(ctx context.Context, _ *cmdline.KubeBootstrap) error { return never(ctx) }))
	return []*cobra.Command{
		cli.NewRoot(),
		cmdline.NewRomanad(func(ctx context.Context, _ *cmdline.Romanad) error { return never(ctx) }),
		agent,
		cmdline.NewCNI(func() error { return never(context.Background()) }),
		kube,
	}
}

// Generate writes dir/cli/*.md and dir/man/*.1, removing files of those
// kinds that no command writes any more.
func Generate(dir string) error {
	mdDir, manDir := filepath.Join(dir, "cli"), filepath.Join(dir, "man")
	for _, d := range []struct{ dir, ext string }{{mdDir, ".md"}, {manDir, ".1"}} {
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			return err
		}
		old, err := filepath.Glob(filepath.Join(d.dir, "*"+d.ext))
		if err != nil {
			return err
		}
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				return err
			}
		}
	}
	for _, root := range Commands() {
		prepare(root)
		if err := doc.GenMarkdownTree(root, mdDir); err != nil {
			return err
		}
		header := &doc.GenManHeader{Section: "1", Date: &manDate, Source: "Romana", Manual: "Romana Manual"}
		if err := doc.GenManTree(root, header, manDir); err != nil {
			return err
		}
	}
	return nil
}

// prepare makes the output the same on every machine (no "Auto generated
// ... on DATE" lines) and adds what cobra adds when a command runs: the
// --version flag and the completion command.
func prepare(c *cobra.Command) {
	c.InitDefaultVersionFlag()
	c.InitDefaultHelpCmd()
	c.InitDefaultCompletionCmd()
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.DisableAutoGenTag = true
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(c)
}
