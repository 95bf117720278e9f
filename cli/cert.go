package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/client"
	"github.com/romana/romana/pki"
)

func newCertCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "cert",
		Aliases: []string{"certs", "certificate", "certificates"},
		Short:   "Manage client certificates: list, revoke, issue credentials",
		Long: `Every client of romanad presents a certificate signed by Romana's CA, whose
common name is its identity:
  admin      everything
  viewer     read only
  kube       the Kubernetes controller: reads everything but certificates;
             writes hosts, tenants, segments, policies, address sets, pods
  host:NAME  host NAME's agent (joined with a token from "romana host add")
  cni:NAME   host NAME's CNI plugin
romanad records every certificate it issues; a revoked certificate is refused
at once by every romanad.`,
	}
	cmd.AddCommand(newCertListCmd(g), newCertRevokeCmd(g), newCertIssueCmd(g))
	return cmd
}

func newCertListCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the certificates romanad issued, and the revoked ones",
		Example: `  romana cert list
  romana cert list -o json | jq -r '.[] | select(.revoked == null) | .serial'`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			cs, err := c.ListCerts(ctx)
			if err != nil {
				return err
			}
			cs = sortCerts(cs)
			return g.EmitList(cmd, cs, len(cs), "no certificates", func(w io.Writer) { writeCerts(w, cs) })
		}),
	}
}

func newCertRevokeCmd(g *Globals) *cobra.Command {
	var serials, identities []string
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke --serial S... | --identity ID... [--reason TEXT]",
		Short: "Revoke certificates by serial or by identity",
		Long: `Revokes certificates: each --serial (as "romana cert list" prints it), and
every certificate issued for each --identity. Every romanad refuses them at
once. Naming only certificates that are already revoked is not an error; the
command says that nothing was revoked. Removing a host ("romana host remove")
revokes its host: and cni: certificates by itself.

With -o json or -o yaml: the certificates revoked now (a list, [] if none).`,
		Example: `  romana cert revoke --identity viewer
  romana cert revoke --serial 5f3a9c0d21e4b7a8 --reason "laptop lost"
  romana cert revoke --identity host:h1 --identity cni:h1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(serials) == 0 && len(identities) == 0 {
				return usagef("name what to revoke: --serial S or --identity ID (repeatable)")
			}
			for _, id := range identities {
				if _, err := pki.ParseIdentity(id); err != nil {
					return usagef("--identity: %v", err)
				}
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			out, err := c.Revoke(ctx, api.RevokeRequest{Serials: serials, Identities: identities, Reason: reason})
			if err != nil {
				return err
			}
			out = sortCerts(out)
			return g.Emit(cmd, out, func(w io.Writer) {
				if len(out) == 0 {
					fmt.Fprintf(w, "nothing revoked: the certificates named (%s) are already revoked or were never issued\n", revokeTarget(serials, identities))
					return
				}
				for _, r := range out {
					fmt.Fprintf(w, "revoked certificate %s (%s)\n", r.Serial, orDash(r.Identity))
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&serials, "serial", nil, "serial number to revoke, hex as cert list prints it (repeatable)")
	f.StringSliceVar(&identities, "identity", nil, "revoke every certificate of this identity: viewer, admin, kube, host:NAME, cni:NAME (repeatable)")
	f.StringVar(&reason, "reason", "", `why, recorded with the revocation (default "revoked by IDENTITY")`)
	return cmd
}

// revokeTarget names what a revocation asked for, in words.
func revokeTarget(serials, identities []string) string {
	var parts []string
	for _, id := range identities {
		parts = append(parts, "identity "+id)
	}
	for _, s := range serials {
		parts = append(parts, "serial "+s)
	}
	return strings.Join(parts, ", ")
}

// issued is what cert issue prints with -o json|yaml.
type issued struct {
	Identity string    `json:"identity"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"notAfter"`
	File     string    `json:"file"`
	Server   string    `json:"server"`
}

func newCertIssueCmd(g *Globals) *cobra.Command {
	var identity, out, validity, credServer string
	cmd := &cobra.Command{
		Use:   "issue --identity ID --out FILE [--validity D] [--credential-server URL]",
		Short: "Issue a certificate and write a credential file for it",
		Long: `Makes a new key on this machine, has romanad sign a certificate for --identity
(admin only, except that an identity may renew its own), and writes a
credential file (mode 0600) with romanad's address, its CA, the certificate
and the key. The key never leaves this machine. Give the file to its user,
who points --config or ROMANA_CONFIG at it.

The credential's server is the https:// address this command uses; over the
unix socket give it with --credential-server. --out must not exist yet.

With -o json or -o yaml: {identity, serial, notAfter, file, server}.`,
		Example: `  romana cert issue --identity viewer --out viewer.conf
  romana cert issue --identity admin --out alice.conf --validity 720h
  romana cert issue --identity kube --out romana-kube.conf
  romana --server unix:///run/romana/romanad.sock cert issue --identity viewer \
    --out viewer.conf --credential-server https://romanad.example:9600`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if identity == "" || out == "" {
				return usagef("need --identity and --out")
			}
			id, err := pki.ParseIdentity(identity)
			if err != nil {
				return usagef("--identity: %v", err)
			}
			if validity != "" {
				if err := checkTTL("--validity", validity); err != nil {
					return err
				}
			}
			if credServer != "" && !strings.HasPrefix(credServer, "https://") {
				return usagef("--credential-server %q: want https://HOST:PORT", credServer)
			}
			if _, err := os.Lstat(out); err == nil {
				return usagef("--out %s exists: remove it first or choose another file", out)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("--out %s: %w", out, err)
			}
			if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
				return fmt.Errorf("--out %s: directory %s does not exist", out, filepath.Dir(out))
			}
			c, err := g.Client()
			if err != nil {
				return err
			}
			server := credServer
			if server == "" {
				if g.conn.Unix() {
					return usagef("this command uses the unix socket: give romanad's address for the credential with --credential-server https://HOST:PORT")
				}
				server = g.conn.Server
			}
			key, err := pki.NewKey()
			if err != nil {
				return err
			}
			csr, err := pki.NewCSR(key, id.String())
			if err != nil {
				return err
			}
			keyPEM, err := pki.EncodeKey(key)
			if err != nil {
				return err
			}
			ctx, cancel := g.Context(cmd)
			defer cancel()
			resp, err := c.RequestCert(ctx, api.CertRequest{Identity: id.String(), CSR: string(csr), Validity: validity})
			if err != nil {
				return err
			}
			cred := pki.Credential{Server: server, Identity: resp.Identity, CA: resp.CA, Cert: resp.Cert, Key: string(keyPEM)}
			if err := cred.Save(out); err != nil {
				return fmt.Errorf("certificate %s for %s was issued but not saved (revoke it with romana cert revoke --serial %s): %w",
					resp.Serial, resp.Identity, resp.Serial, err)
			}
			res := issued{Identity: resp.Identity, Serial: resp.Serial, NotAfter: resp.NotAfter, File: out, Server: server}
			return g.Emit(cmd, res, func(w io.Writer) {
				fmt.Fprintf(w, "credential for %s written to %s (serial %s, valid until %s, server %s)\n",
					res.Identity, res.File, res.Serial, res.NotAfter.UTC().Format(time.RFC3339), res.Server)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&identity, "identity", "", "who the certificate is for: viewer, admin, kube, host:NAME or cni:NAME")
	f.StringVar(&out, "out", "", "credential `FILE` to write (mode 0600; must not exist)")
	f.StringVar(&validity, "validity", "", "lifetime, e.g. 720h (default romanad's for the identity)")
	f.StringVar(&credServer, "credential-server", "", "romanad's https:// address to write into the credential (default: the server this command uses)")
	return cmd
}

func newWhoAmICmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who romanad takes you for, and how romana connected",
		Long: `Asks romanad which identity this command presents (its certificate's, or
admin over the unix socket), and prints the server and the credential file
romana used.

With -o json or -o yaml: romanad's answer, {identity, via, serial, notAfter}.`,
		Example: `  romana whoami
  ROMANA_CONFIG=viewer.conf romana whoami`,
		Args: cobra.NoArgs,
		RunE: g.call(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			me, err := c.WhoAmI(ctx)
			if err != nil {
				return err
			}
			return g.Emit(cmd, me, func(w io.Writer) {
				row(w, "Identity:", me.Identity)
				row(w, "Via:", me.Via)
				row(w, "Server:", g.conn.Server)
				if g.conn.CredentialPath != "" {
					row(w, "Credential:", g.conn.CredentialPath)
				}
				if me.Serial != "" {
					row(w, "Serial:", me.Serial)
				}
				if me.NotAfter != nil {
					row(w, "Not after:", me.NotAfter.UTC().Format(time.RFC3339))
				}
			})
		}),
	}
}

func sortCerts(cs []api.CertRecord) []api.CertRecord {
	cs = append([]api.CertRecord{}, cs...)
	slices.SortStableFunc(cs, func(a, b api.CertRecord) int {
		if c := strings.Compare(a.Identity, b.Identity); c != 0 {
			return c
		}
		if c := a.NotAfter.Compare(b.NotAfter); c != 0 {
			return c
		}
		return strings.Compare(a.Serial, b.Serial)
	})
	return cs
}

func writeCerts(w io.Writer, cs []api.CertRecord) {
	row(w, "IDENTITY", "SERIAL", "NOT-AFTER", "REVOKED", "REASON")
	for _, c := range cs {
		notAfter, revoked := "", ""
		if !c.NotAfter.IsZero() {
			notAfter = c.NotAfter.UTC().Format(time.RFC3339)
		}
		if c.Revoked != nil {
			revoked = c.Revoked.UTC().Format(time.RFC3339)
		}
		row(w, c.Identity, c.Serial, notAfter, revoked, c.Reason)
	}
}
