package cmdline

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/config"
	"github.com/romana/romana/ipam"
	"github.com/romana/romana/pki"
	"github.com/romana/romana/server"
)

// Romanad holds romanad's flags.
type Romanad struct {
	Listen, Socket, SocketGroup    string
	PKIDir, Advertise, AdminConfig string
	CACert, CAKey                  string
	TLSCert, TLSKey, ClientCA      string
	HostCertValidity               time.Duration
	DataDir, EtcdEndpoints         string
	EtcdCert, EtcdKey, EtcdCA      string
	EtcdPrefix                     string
	LogLevel                       string
	MaxConnections                 int
	WatchBacklog, WatchHistory     int
}

// NewRomanad returns the romanad command; run is what it does with the flags.
func NewRomanad(run func(ctx context.Context, f *Romanad) error) *cobra.Command {
	f := &Romanad{}
	c := &cobra.Command{
		Use:   "romanad [flags]",
		Short: "Romana control-plane daemon: keeps the network's state in etcd and serves the /v1 API",
		Long: `romanad stores Romana's state (networks, hosts, tenants, segments, addresses,
policies) in etcd and serves the /v1 REST API that the romana CLI, the host
agents and the CNI plugin use. Only romanad talks to etcd.

By default it runs an embedded single-member etcd in --data-dir, reachable
only by romanad (mutual TLS with a certificate in the data dir); give
--etcd-endpoints to use an external etcd cluster instead.

Security: TCP is served over TLS 1.3 only and every request needs a client
certificate signed by Romana's CA (identities admin, viewer, kube, host:NAME,
cni:NAME; see docs/security.md). On first start romanad creates the CA in
--pki-dir, a serving certificate for --advertise, and the admin credential
--admin-config that the romana CLI reads by default. The unix socket is for
root on this machine (mode 0600) and is admin. Hosts join with a one-time
token: "romana host add NAME --ip IP" prints it, then on the host
"romana-agent --join TOKEN --server https://ROMANAD:9600 --host NAME".

Exit codes: 0 stopped by SIGINT or SIGTERM; 1 failed (store, TLS, listen);
2 the command line is wrong.`,
		Example: `  # embedded store, API on loopback TLS and the default unix socket
  romanad

  # reachable by agents on other hosts at 10.0.0.5
  romanad --listen 0.0.0.0:9600 --advertise romanad.example,10.0.0.5

  # external etcd over TLS and an external CA
  romanad --listen 0.0.0.0:9600 --ca-cert /etc/romana/ca.crt --ca-key /etc/romana/ca.key \
    --etcd-endpoints https://10.0.0.5:2379,https://10.0.0.6:2379 \
    --etcd-cert /etc/romana/etcd.crt --etcd-key /etc/romana/etcd.key --etcd-ca /etc/romana/etcd-ca.crt`,
	}
	fs := c.Flags()
	config.AddFlag(fs) // --config-file: YAML of flag names and values; flags given win
	fs.StringVar(&f.Listen, "listen", "127.0.0.1:9600", "TCP `address` of the API, served over mutual TLS (\"\" disables TCP)")
	fs.StringVar(&f.Socket, "socket", "/run/romana/romanad.sock", "unix socket `path` of the API for root, mode 0600 (\"\" disables it); its directory is created and a stale socket removed")
	fs.StringVar(&f.SocketGroup, "socket-group", "", "`group` allowed to use the unix socket too (mode 0660); its members are admin")
	fs.StringVar(&f.PKIDir, "pki-dir", "/var/lib/romana/pki", "`directory` of Romana's CA (created on first start, key mode 0600)")
	fs.StringVar(&f.Advertise, "advertise", "", "comma-separated DNS `names` and IPs of the serving certificate (default: the hostname, localhost, 127.0.0.1, ::1 and the --listen host); the first is the URL written into --admin-config")
	fs.StringVar(&f.AdminConfig, "admin-config", pki.DefaultAdminConfig, "`file` to write the admin credential to when it does not exist (\"\" writes none)")
	fs.StringVar(&f.CACert, "ca-cert", "", "external CA certificate `file` to sign with instead of --pki-dir's (with --ca-key)")
	fs.StringVar(&f.CAKey, "ca-key", "", "external CA key `file` (with --ca-cert)")
	fs.StringVar(&f.TLSCert, "tls-cert", "", "externally issued serving certificate `file` (with --tls-key); default: issued by the CA")
	fs.StringVar(&f.TLSKey, "tls-key", "", "serving key `file` (with --tls-cert)")
	fs.StringVar(&f.ClientCA, "client-ca", "", "extra CA certificates `file` (PEM) whose client certificates are accepted")
	fs.DurationVar(&f.HostCertValidity, "host-cert-validity", pki.HostValidity, "lifetime of host and CNI certificates; agents renew at two thirds")
	fs.StringVar(&f.DataDir, "data-dir", "/var/lib/romana/etcd", "`directory` of the embedded etcd (unused with --etcd-endpoints)")
	fs.StringVar(&f.EtcdEndpoints, "etcd-endpoints", "", "comma-separated `URLs` of an external etcd cluster; empty runs the embedded etcd")
	fs.StringVar(&f.EtcdCert, "etcd-cert", "", "client certificate `file` for the external etcd")
	fs.StringVar(&f.EtcdKey, "etcd-key", "", "client key `file` for the external etcd")
	fs.StringVar(&f.EtcdCA, "etcd-ca", "", "CA certificate `file` that signed the external etcd's certificates")
	fs.StringVar(&f.EtcdPrefix, "etcd-prefix", ipam.DefaultPrefix, "etcd key `prefix` of Romana's state")
	fs.StringVar(&f.LogLevel, "log-level", "info", "log `level`: debug (logs every request), info, warn or error")
	fs.IntVar(&f.MaxConnections, "max-connections", server.DefaultMaxConns, "open connections each listener holds at most (`n`); further clients wait until one closes")
	fs.IntVar(&f.WatchBacklog, "watch-backlog", ipam.DefaultWatchBacklog, "`bytes` of events a watch stream may fall behind before it is cut off (the client resumes)")
	fs.IntVar(&f.WatchHistory, "watch-history", 0, "`bytes` of recent events kept in memory for watch streams to start or resume from without an etcd watch of their own (0: twice --watch-backlog)")
	return newCommand(c, func(cmd *cobra.Command) error { return run(cmd.Context(), f) })
}
