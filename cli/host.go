package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
)

func newHostCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "host",
		Aliases: []string{"hosts"},
		Short:   "Manage hosts: the machines that run endpoints",
		Long: `A host has an underlay IP (the next hop other hosts use for its CIDRs) and
labels. In a network with topology levels, a host is placed by the label named
like each level (e.g. rack=r1 for a "rack" level). romanad gives every host a
block (CIDR) in every network. A host's agent joins romanad with a single-use
token that "host add" and "host token" print.`,
	}
	cmd.AddCommand(newHostAddCmd(g), newHostTokenCmd(g), newHostListCmd(g), newHostShowCmd(g), newHostRemoveCmd(g))
	return cmd
}

func newHostAddCmd(g *Globals) *cobra.Command {
	var (
		ip       string
		ip6      string
		labels   map[string]string
		noToken  bool
		tokenTTL string
	)
	cmd := &cobra.Command{
		Use:   "add NAME --ip IP [--ip6 IP6] [--label KEY=VALUE]... [--no-token | --token-ttl D]",
		Short: "Add a host, and print the command that joins its agent",
		Long: `Adds a host. Then, when romanad holds its CA key, it prints a single-use join
token and the command that starts the host's agent with it:
  romana-agent --join TOKEN --server https://ROMANAD:9600 --host NAME
The agent exchanges the token for its certificate (identity host:NAME). The
server is the https:// address this command used; over the unix socket it is
the placeholder https://ROMANAD:9600, to replace with romanad's address as
the host reaches it. "romana host token NAME" makes another token.

A dual-stack underlay: --ip is the host's IPv4 address and --ip6 its IPv6
address, the next hop of its blocks in IPv6 networks (fabric routes, BGP over
IPv6).

With -o json or -o yaml the output is the host plus, when a token was made,
"join": {host, token, expires, server, command, note}.`,
		Example: `  romana host add h1 --ip 192.168.1.11
  romana host add h2 --ip 192.168.2.12 --label rack=r2 --label zone=a --token-ttl 15m
  romana host add h3 --ip 192.168.2.13 --no-token
  romana host add h5 --ip 192.168.1.15 --ip6 fd00:1::15 --label rack=r1
  romana host add h4 --ip 192.168.2.14 -o json | jq -r .join.command`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ip == "" {
				return usagef("need --ip, the host's underlay address")
			}
			addr, err := parseAddrFlag("--ip", ip)
			if err != nil {
				return err
			}
			var addr6 netip.Addr
			if ip6 != "" {
				if addr6, err = parseAddrFlag("--ip6", ip6); err != nil {
					return err
				}
			}
			if !noToken {
				if err := checkTTL("--token-ttl", tokenTTL); err != nil {
					return err
				}
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			h, err := c.AddHost(ctx, api.Host{Name: args[0], IP: addr, IP6: addr6, Labels: labels})
			if err != nil {
				return err
			}
			out := hostAdded{Host: h}
			var tokenErr error
			noCA := false
			if !noToken {
				t, err := c.CreateToken(ctx, h.Name, tokenTTL)
				switch {
				case err == nil:
					j := g.join(t)
					out.Join = &j
				case isNoCAKey(err):
					noCA = true
				default:
					tokenErr = fmt.Errorf("host %s was added, but no join token was made: %w (romana host token %s makes one)", h.Name, err, h.Name)
				}
			}
			if err := g.Emit(cmd, out, func(w io.Writer) { writeHosts(w, []api.Host{h}) }); err != nil {
				return err
			}
			switch {
			case out.Join != nil:
				g.Say(cmd, "")
				if g.Output == OutputTable {
					writeJoin(cmd.OutOrStdout(), *out.Join)
				}
			case noCA:
				g.Say(cmd, "\nNo join token: romanad has no CA key (an external CA); issue %s's certificate with that CA.", pki.Host(h.Name))
			}
			return tokenErr
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "the host's underlay IP address")
	cmd.Flags().StringVar(&ip6, "ip6", "", "the host's IPv6 underlay address, beside an IPv4 --ip (dual-stack)")
	cmd.Flags().StringToStringVar(&labels, "label", nil, "label KEY=VALUE (repeatable); a topology level matches the label of its name")
	cmd.Flags().BoolVar(&noToken, "no-token", false, "do not make a join token")
	cmd.Flags().StringVar(&tokenTTL, "token-ttl", "1h", "how long the join token may be used (at most 24h)")
	return cmd
}

// hostAdded is what host add prints with -o json|yaml: the host's fields,
// and the join token when one was made.
type hostAdded struct {
	api.Host
	Join *joinInfo `json:"join,omitempty"`
}

// joinInfo is a join token and the agent command line that uses it.
type joinInfo struct {
	Host    string    `json:"host"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	// Server is romanad's https:// address for the agent, or
	// agentServerPlaceholder when romana used the unix socket.
	Server  string `json:"server"`
	Command string `json:"command"`
	// Note says what to check or replace in Command, if anything.
	Note string `json:"note,omitempty"`
}

// agentServerPlaceholder stands for romanad's TLS address in the agent's
// command line when romana itself used the unix socket.
const agentServerPlaceholder = "https://ROMANAD:9600"

// join describes a token with the agent command line that uses it, for
// the server this command used.
func (g *Globals) join(t api.TokenResponse) joinInfo {
	j := joinInfo{Host: t.Host, Token: t.Token, Expires: t.Expires, Server: g.conn.Server}
	if !strings.HasPrefix(j.Server, "https://") {
		j.Server = agentServerPlaceholder
		j.Note = fmt.Sprintf("this command used the unix socket: replace %s with romanad's TLS address as %s reaches it", agentServerPlaceholder, t.Host)
	} else if u, err := url.Parse(j.Server); err == nil {
		if a, err := netip.ParseAddr(u.Hostname()); (err == nil && a.IsLoopback()) || u.Hostname() == "localhost" {
			j.Note = fmt.Sprintf("%s is a loopback address: replace it with romanad's address as %s reaches it", u.Hostname(), t.Host)
		}
	}
	j.Command = fmt.Sprintf("romana-agent --join %s --server %s --host %s", j.Token, j.Server, j.Host)
	return j
}

func writeJoin(w io.Writer, j joinInfo) {
	fmt.Fprintf(w, "Join token for host %s (single use, expires %s):\n  %s\n", j.Host, j.Expires.UTC().Format(time.RFC3339), j.Token)
	fmt.Fprintf(w, "Start its agent as root on %s with:\n  %s\n", j.Host, j.Command)
	if j.Note != "" {
		fmt.Fprintf(w, "(%s)\n", j.Note)
	}
}

// isNoCAKey reports whether romanad refused to sign because it has no CA
// key (an external CA): there are no join tokens to print then.
func isNoCAKey(err error) bool {
	return api.ReasonOf(err) == api.ReasonInvalid && strings.Contains(err.Error(), "no CA key")
}

// checkTTL checks a duration flag's syntax; romanad checks its range.
func checkTTL(flag, v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return usagef("%s %q: want a positive duration, e.g. 15m or 1h", flag, v)
	}
	return nil
}

func newHostTokenCmd(g *Globals) *cobra.Command {
	var ttl string
	cmd := &cobra.Command{
		Use:   "token NAME [--ttl D]",
		Short: "Make a new single-use join token for a host's agent",
		Long: `Prints a new single-use join token for an existing host and the command that
starts the host's agent with it (see "romana host add --help"). Earlier
tokens stay valid until used or expired.

With -o json or -o yaml: {host, token, expires, server, command, note}.`,
		Example: `  romana host token h1
  romana host token h1 --ttl 15m -o json | jq -r .token`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTTL("--ttl", ttl); err != nil {
				return err
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			t, err := c.CreateToken(ctx, args[0], ttl)
			if err != nil {
				return err
			}
			j := g.join(t)
			return g.Emit(cmd, j, func(w io.Writer) { writeJoin(w, j) })
		},
	}
	cmd.Flags().StringVar(&ttl, "ttl", "1h", "how long the token may be used (at most 24h)")
	return cmd
}

func newHostListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List hosts with their blocks and their agents' status",
		Long: `Lists hosts with their blocks and, in the table, their agents' status as
"romana status" shows it: STATUS (converged, behind, problems, unreachable),
REVISION (the store revision the agent applied) and LAST-SYNC (how long ago
its last fully successful reconciliation ended). With -o json or -o yaml
the output is the hosts only; "romana status -o json" has the status.`,
		Example: `  romana host list
  romana host list -o json`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			hs, err := c.ListHosts(ctx)
			if err != nil {
				return err
			}
			hs = sortHosts(hs)
			if g.Output != OutputTable || len(hs) == 0 {
				return g.EmitList(cmd, hs, len(hs), "no hosts", nil)
			}
			st, err := c.Status(ctx)
			if err != nil {
				// The hosts are worth printing without it (an older romanad).
				fmt.Fprintf(cmd.ErrOrStderr(), "romana: the agents' status is unavailable: %v\n", err)
			}
			return g.Emit(cmd, hs, func(w io.Writer) { writeHostList(w, hs, st) })
		}),
	}
}

// writeHostList is writeHosts with each host's agent status.
func writeHostList(w io.Writer, hs []api.Host, st api.Status) {
	byHost := map[string]api.HostStatus{}
	for _, h := range st.Hosts {
		byHost[h.Host] = h
	}
	row(w, "NAME", "IP", "LABELS", "BLOCKS", "STATUS", "REVISION", "LAST-SYNC")
	for _, h := range hs {
		var blocks []string
		for _, s := range sortedSlots(h.Slots) {
			blocks = append(blocks, fmt.Sprintf("%s:%s", s.Network, s.CIDR))
		}
		s, rev := byHost[h.Name], ""
		if s.Report != nil {
			rev = fmt.Sprint(s.Revision)
		}
		row(w, h.Name, h.IP, labelString(h.Labels), strings.Join(blocks, ","), s.State, rev, ago(st.Time, s.LastSync))
	}
}

func newHostShowCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a host, its labels and its block in each network",
		Example: `  romana host show h1 -o yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			h, err := c.GetHost(ctx, args[0])
			if err != nil {
				return err
			}
			return g.Emit(cmd, h, func(w io.Writer) { writeHost(w, h) })
		}),
	}
}

func newHostRemoveCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm", "delete"},
		Short:   "Remove a host and revoke its agent's and CNI plugin's certificates",
		Long: `Removes a host. romanad revokes the certificates of identities host:NAME and
cni:NAME at once, so the host's agent and CNI plugin can no longer talk to it;
to bring the host back, add it again and join its agent with a new token.`,
		Example: `  romana host remove h1`,
		Args:    cobra.ExactArgs(1),
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			if err := c.RemoveHost(ctx, args[0]); err != nil {
				return err
			}
			g.Say(cmd, "host %s removed; certificates of %s and %s revoked", args[0], pki.Host(args[0]), pki.CNI(args[0]))
			return nil
		}),
	}
}

func sortHosts(hs []api.Host) []api.Host {
	hs = append([]api.Host{}, hs...)
	slices.SortFunc(hs, func(a, b api.Host) int { return strings.Compare(a.Name, b.Name) })
	return hs
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

func sortedSlots(s []api.HostSlot) []api.HostSlot {
	s = append([]api.HostSlot{}, s...)
	slices.SortFunc(s, func(a, b api.HostSlot) int { return strings.Compare(a.Network, b.Network) })
	return s
}

func writeHosts(w io.Writer, hs []api.Host) {
	row(w, "NAME", "IP", "LABELS", "BLOCKS")
	for _, h := range hs {
		var blocks []string
		for _, s := range sortedSlots(h.Slots) {
			blocks = append(blocks, fmt.Sprintf("%s:%s", s.Network, s.CIDR))
		}
		ips := h.IP.String()
		if h.IP6.IsValid() {
			ips += "," + h.IP6.String()
		}
		row(w, h.Name, ips, labelString(h.Labels), strings.Join(blocks, ","))
	}
}

func writeHost(w io.Writer, h api.Host) {
	row(w, "Name:", h.Name)
	row(w, "IP:", h.IP)
	if h.IP6.IsValid() {
		row(w, "IP6:", h.IP6)
	}
	row(w, "Labels:", labelString(h.Labels))
	fmt.Fprintln(w)
	row(w, "NETWORK", "LOCATION", "BLOCK")
	for _, s := range sortedSlots(h.Slots) {
		row(w, s.Network, s.Loc, s.CIDR)
	}
}
