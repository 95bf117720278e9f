// Go 1.24+ makes listeners MPTCP, which refuses TCP MD5 signatures: BGP
// sessions accepted with --bgp-listen-port and --bgp-password need plain TCP.
//go:debug multipathtcp=0

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/romana/romana/agent"
	"github.com/romana/romana/api"
	"github.com/romana/romana/bgp"
	"github.com/romana/romana/client"
	"github.com/romana/romana/cmd/internal/cmdline"
	"github.com/romana/romana/fabric"
)

// bgpFlags are the --bgp* flags: BGP announcements to the top-of-rack
// routers (package bgp) for routed fabrics.
type bgpFlags struct {
	enabled      *bool
	asn          *uint
	routerID     *string
	passwordFile *string
	gr           *time.Duration
	accept       *bool
	hold, retry  *time.Duration
	listenPort   *int
}

// bgpFlagsOf points at the --bgp* flags' values.
func bgpFlagsOf(b *cmdline.BGP) *bgpFlags {
	return &bgpFlags{enabled: &b.Enabled, asn: &b.ASN, routerID: &b.RouterID, passwordFile: &b.PasswordFile,
		gr: &b.GracefulRestart, accept: &b.Accept, hold: &b.HoldTime, retry: &b.ConnectRetry, listenPort: &b.ListenPort}
}

func (f *bgpFlags) config(log *slog.Logger) (bgp.Config, error) {
	c := bgp.Config{ASN: uint32(*f.asn), GracefulRestart: *f.gr, Accept: *f.accept, HoldTime: *f.hold,
		ConnectRetry: *f.retry, ListenPort: *f.listenPort, Log: log}
	if *f.asn == 0 || *f.asn > 1<<32-1 {
		return c, fmt.Errorf("--bgp-asn %d: use 1 to 4294967295", *f.asn)
	}
	if *f.routerID != "" {
		a, err := netip.ParseAddr(*f.routerID)
		if err != nil {
			return c, fmt.Errorf("--bgp-router-id: %w", err)
		}
		c.RouterID = a
	}
	if *f.passwordFile != "" {
		b, err := os.ReadFile(*f.passwordFile)
		if err != nil {
			return c, fmt.Errorf("--bgp-password-file: %w", err)
		}
		c.Password = strings.TrimRight(string(b), "\r\n")
	}
	k, err := bgp.NewKernel()
	if err != nil {
		return c, err
	}
	c.Kernel = k
	return c, nil
}

// speaker returns the BGP component for agent.Config (nil without --bgp)
// and the function to call when the agent stops.
func (f *bgpFlags) speaker(log *slog.Logger) (agent.BGP, func(), error) {
	if !*f.enabled {
		return nil, func() {}, nil
	}
	c, err := f.config(log)
	if err != nil {
		return nil, nil, err
	}
	s, err := bgp.New(c)
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		if c.GracefulRestart > 0 {
			log.Info("bgp: graceful restart: sessions end with the process; peers keep this host's routes for the restart time",
				"restartTime", c.GracefulRestart)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			log.Error("bgp stop", "err", err)
		}
	}
	return s, stop, nil
}

// cleanup removes the routes BGP installed (proto 191) and, with --bgp,
// withdraws what a previous run left at the peers under graceful restart:
// it connects with nothing to announce, so each peer flushes the stale
// routes at the End-of-RIB, then closes the sessions.
func (f *bgpFlags) cleanup(ctx context.Context, log *slog.Logger, connect func(context.Context) (*client.Client, string, error)) error {
	k, err := bgp.NewKernel()
	if err != nil {
		return err
	}
	errs := []error{bgp.Cleanup(ctx, k)}
	if !*f.enabled {
		return errors.Join(errs...)
	}
	c, err := f.config(log)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	cl, host, err := connect(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	snap, err := cl.Snapshot(wctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("bgp cleanup: read the peers from romanad: %w", err))...)
	}
	d, err := fabric.ForHost(snap, host)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("bgp cleanup: %w", err))...)
	}
	d.Announce = nil
	s, err := bgp.New(c)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := s.Apply(wctx, d); err != nil {
		errs = append(errs, err)
	} else if err := s.WaitEstablished(wctx); err != nil {
		errs = append(errs, err)
	} else {
		time.Sleep(time.Second) // let the End-of-RIB reach the peers
	}
	errs = append(errs, s.Stop(ctx))
	log.Info("bgp: withdrew everything at the peers", "peers", len(d.Peers))
	return errors.Join(errs...)
}

// bgpSessions reads the speaker's sessions for the agent's status report
// (nil without --bgp).
func bgpSessions(b agent.BGP) func(ctx context.Context) ([]api.BGPSession, error) {
	s, ok := b.(*bgp.Speaker)
	if !ok || s == nil {
		return nil
	}
	return func(ctx context.Context) ([]api.BGPSession, error) {
		st, err := s.Status(ctx)
		out := make([]api.BGPSession, 0, len(st.Peers))
		for _, p := range st.Peers {
			out = append(out, api.BGPSession{Device: p.Device, Peer: p.Addr, ASN: p.ASN, State: p.State,
				Established: p.Established, Received: p.Received})
		}
		return out, err
	}
}
