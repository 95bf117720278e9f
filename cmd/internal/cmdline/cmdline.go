// Package cmdline is the command line of romanad, romana-agent and
// romana-cni: their cobra commands, flags, help and exit codes, in the style
// of the romana CLI (package cli). What the commands do stays in their main
// packages, which pass it in as a run function; cmd/gendocs builds the same
// commands to write docs/cli and the man pages.
package cmdline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/romana/romana/config"
	"github.com/romana/romana/version"
)

// Exit codes, as the romana CLI's.
const (
	ExitOK    = 0
	ExitError = 1 // the command ran and failed
	ExitUsage = 2 // the command line is wrong (unknown flag, bad flag value, extra arguments)
)

// UsageError is a wrong command line: exit code 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError; a run function returns one for a flag value
// it refuses.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// runError marks an error of the run function (as opposed to one cobra
// raised while parsing the command line).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// newCommand sets what every command of this package shares: --version,
// errors printed by Execute (not cobra), no positional arguments, and a run
// function whose errors exit 1 unless they are *UsageError.
func newCommand(c *cobra.Command, run func(cmd *cobra.Command) error) *cobra.Command {
	c.Version = version.String()
	c.SilenceErrors = true
	c.SilenceUsage = true
	c.DisableAutoGenTag = true
	c.CompletionOptions.DisableDefaultCmd = true // a subcommand (install-cni) would add one
	c.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return &UsageError{Err: fmt.Errorf("unexpected argument %q (%s takes flags only)", args[0], cmd.Name())}
		}
		return nil
	}
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{Err: err} })
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		// A configuration file fills in the flags not on the command line
		// (romanad and romana-agent define --config-file).
		if cmd.Flags().Lookup(config.FlagName) != nil {
			if err := config.Apply(cmd.Flags()); err != nil {
				return &UsageError{Err: err}
			}
		}
		err := run(cmd)
		var u *UsageError
		if err == nil || errors.As(err, &u) {
			return err
		}
		return &runError{err: err}
	}
	return c
}

// Execute runs c with args: nil after --help or --version, a *UsageError
// for a bad command line, else the run function's error. Help and version
// go to stdout, nothing else is printed.
//
// Go's flag package, which these commands used before cobra, also took long
// flags with one dash (-listen); Execute still does, for the command's own
// long flags.
func Execute(ctx context.Context, c *cobra.Command, args []string, stdout, stderr io.Writer) error {
	c.InitDefaultHelpFlag()
	c.InitDefaultVersionFlag()
	c.SetArgs(singleDash(c.Flags(), args))
	c.SetOut(stdout)
	c.SetErr(stderr)
	err := c.ExecuteContext(ctx)
	var re *runError
	if errors.As(err, &re) {
		return re.err
	}
	var u *UsageError
	if err != nil && !errors.As(err, &u) {
		err = &UsageError{Err: err}
	}
	return err
}

// Exit prints err, if any, as "NAME: message" on stderr (with a pointer to
// --help for a usage error) and returns the exit code for it.
func Exit(stderr io.Writer, name string, err error) int {
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "%s: %s\n", name, strings.TrimSpace(err.Error()))
	var u *UsageError
	if errors.As(err, &u) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", name)
		return ExitUsage
	}
	return ExitError
}

// singleDash rewrites -name and -name=value to --name... when name is a long
// flag of fs, up to "--", leaving flag values alone.
func singleDash(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	value := false // args[i] is the value of the flag before it
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if value {
			out = append(out, a)
			value = false
			continue
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if f := fs.Lookup(name); f != nil && len(name) > 1 {
				a = "-" + a
			}
		}
		if strings.HasPrefix(a, "--") {
			name, _, hasValue := strings.Cut(a[2:], "=")
			if f := fs.Lookup(name); f != nil && !hasValue && f.NoOptDefVal == "" {
				value = true
			}
		}
		out = append(out, a)
	}
	return out
}
