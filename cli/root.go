// Package cli is the `romana` command line: cobra commands that talk to
// romanad through package client, plus `romana plan`, an offline address plan
// calculator.
//
// Other packages' commands attach in one of two ways: a file of this package
// (for example cli/demo.go) calls register from an init function, so every
// root built by NewRoot carries the command:
//
//	func init() { register(newDemoCmd) }
//	func newDemoCmd(g *Globals) *cobra.Command { ... }
//
// or a caller adds to a root it built: root := cli.NewRoot(); root.AddCommand(c).
// Commands use g.Client(), g.Context(cmd) and g.Emit so that --server,
// --config, --timeout and -o behave alike everywhere (connect.go resolves
// the server and the credential); an error they return is printed
// as "Error: <message>" and exits 1, a *UsageError exits 2 (and `romana
// status` exits 3 when some host is not converged).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/version"
)

// Exit codes of Main.
const (
	ExitOK    = 0
	ExitError = 1 // the command ran and failed (API error, unreachable server, invalid plan)
	ExitUsage = 2 // the command line is wrong (unknown command or flag, wrong arguments)
	// ExitNotConverged (3, status.go): romana status printed the status,
	// and some host's agent is not converged.
)

// Output formats of -o.
const (
	OutputTable = "table"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// DefaultTimeout bounds each command's requests to romanad.
const DefaultTimeout = 30 * time.Second

// Globals are the persistent flags every command sees.
type Globals struct {
	Server  string
	Config  string
	Output  string
	Timeout time.Duration

	getenv      func(string) string
	adminConfig string     // pki.DefaultAdminConfig, or a test's
	conn        Connection // what Client connected to, for explain
}

// Context returns the command's context bounded by --timeout.
func (g *Globals) Context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if g.Timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, g.Timeout)
}

// UsageError is a wrong command line; Main exits with ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// runError marks an error returned by a command's RunE (as opposed to one
// cobra raised while parsing the command line).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// Option configures NewRoot.
type Option func(*Globals)

// WithGetenv replaces os.Getenv (for tests).
func WithGetenv(f func(string) string) Option { return func(g *Globals) { g.getenv = f } }

// WithAdminConfig replaces the default credential path
// pki.DefaultAdminConfig (for tests, which must not find the machine's).
func WithAdminConfig(path string) Option { return func(g *Globals) { g.adminConfig = path } }

// registered holds constructors of commands that files of this package add
// to every root (see the package comment).
var registered []func(*Globals) *cobra.Command

// register adds a command constructor to every root NewRoot builds. Call it
// from an init function.
func register(f func(*Globals) *cobra.Command) { registered = append(registered, f) }

// NewRoot builds the `romana` command tree.
func NewRoot(opts ...Option) *cobra.Command {
	_, root := newRoot(opts...)
	return root
}

func newRoot(opts ...Option) (*Globals, *cobra.Command) {
	g := &Globals{Output: OutputTable, Timeout: DefaultTimeout, getenv: os.Getenv, adminConfig: pki.DefaultAdminConfig}
	for _, o := range opts {
		o(g)
	}
	root := &cobra.Command{
		Use:   "romana",
		Short: "Manage a Romana network: address plans, hosts, tenants, segments, addresses, policies",
		Long: `romana is the command line of Romana, an overlay-free layer-3 network controller.

An endpoint address is built from bit fields of a network's pool:
  pool prefix | topology levels (e.g. rack) | host | tenant | segment | endpoint
so each host, each tenant on a host and each segment of a tenant owns a CIDR.
Every command except "romana plan" talks to romanad.

Connecting to romanad: romanad serves TCP over mutual TLS only, so romana
presents a client certificate from a credential file:
  --config FILE, else $ROMANA_CONFIG, else /etc/romana/admin.conf
  (admin; romanad writes it on first start; "romana cert issue" writes others).
The credential names romanad's https:// address; --server https://HOST:PORT
(or $ROMANA_SERVER) overrides it. As root on romanad's machine,
--server unix:///run/romana/romanad.sock uses romanad's unix socket as admin
with no credential; with neither a credential nor a server, romana tries
that socket.`,
		Example: `  # What does a layout give? (offline)
  romana plan --cidr 10.0.0.0/8 --field host=8 --field tenant=8 --field segment=4

  # As root on romanad's machine: /etc/romana/admin.conf is found by itself
  romana network add main --cidr 10.0.0.0/8 --field host=8 --field tenant=8 --field segment=4
  romana host add h1 --ip 192.168.1.11      # prints the agent's join command
  romana tenant add acme
  romana segment add acme web
  romana address allocate web-1 --host h1 --tenant acme --segment web

  # Elsewhere: a credential of your own, issued by an admin
  romana cert issue --identity viewer --out viewer.conf
  export ROMANA_CONFIG=$PWD/viewer.conf
  romana address list -o json

  # Root on romanad's machine, over the unix socket
  romana --server unix:///run/romana/romanad.sock whoami`,
		Version:       version.String(),
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch g.Output {
			case OutputTable, OutputJSON, OutputYAML:
			default:
				return usagef("invalid output format %q: use table, json or yaml", g.Output)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.Server, "server", "", fmt.Sprintf("romanad `URL`: https://HOST:PORT (default: the credential's), or unix:///PATH as root on romanad's machine (no credential) (env %s)", EnvServer))
	pf.StringVar(&g.Config, "config", "", fmt.Sprintf("credential `FILE`: romanad's address, its CA and a client certificate (env %s; default %s if it exists, else the socket %s)", EnvConfig, pki.DefaultAdminConfig, client.DefaultServer))
	pf.StringVarP(&g.Output, "output", "o", OutputTable, "output format: table, json or yaml")
	pf.DurationVar(&g.Timeout, "timeout", DefaultTimeout, "time limit for the command's requests to romanad (0: none)")

	root.AddCommand(
		newNetworkCmd(g),
		newHostCmd(g),
		newTenantCmd(g),
		newSegmentCmd(g),
		newAddressCmd(g),
		newPolicyCmd(g),
		newPlanCmd(g),
		newCertCmd(g),
		newWhoAmICmd(g),
	)
	for _, f := range registered {
		root.AddCommand(f(g))
	}
	wireCompletion(g, root) // complete.go
	finish(root)
	return g, root
}

// finish walks the tree: flag and argument errors become UsageErrors, RunE
// errors are marked as run errors, and group commands reject unknown
// subcommands instead of printing help and succeeding.
func finish(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{Err: flagError(err)} })
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				var u *UsageError
				if errors.As(err, &u) {
					return err
				}
				return &UsageError{Err: err}
			}
			return nil
		}
	}
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, a []string) error {
			err := run(cmd, a)
			var u *UsageError
			if err == nil || errors.As(err, &u) {
				return err
			}
			return &runError{err: err}
		}
	} else if c.Run == nil && c.HasSubCommands() && c.HasParent() {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if len(a) > 0 {
				return usagef("unknown command %q for %q", a[0], cmd.CommandPath())
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	for _, sub := range c.Commands() {
		finish(sub)
	}
}

// Main runs the romana command line with args (without the program name) and
// returns the process exit code. Errors print as "Error: <message>" on stderr.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, opts ...Option) int {
	g, root := newRoot(opts...)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintf(stderr, "%s\n", ee.msg)
		return ee.code
	}
	var re *runError
	if errors.As(err, &re) {
		fmt.Fprintf(stderr, "Error: %s\n", strings.TrimSpace(g.explain(re.err).Error()))
		return ExitError
	}
	fmt.Fprintf(stderr, "Error: %s\n", strings.TrimSpace(err.Error()))
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return ExitUsage
}

// call adapts the body of a command that talks to romanad: it builds the
// client (--server) and the request context (--timeout) before running fn.
func (g *Globals) call(fn func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := g.Client()
		if err != nil {
			return err
		}
		ctx, cancel := g.Context(cmd)
		defer cancel()
		return fn(ctx, c, cmd, args)
	}
}

// removeCmd builds the "remove NAME" command of an object kind; remove is
// the client method that deletes one by name.
func removeCmd(g *Globals, noun, short, example string, remove func(*client.Client, context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm", "delete"},
		Short:   short,
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			if err := remove(c, ctx, args[0]); err != nil {
				return err
			}
			g.Say(cmd, "%s %s removed", noun, args[0])
			return nil
		}),
	}
}
