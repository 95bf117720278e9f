package agent

import (
	"context"
	"fmt"
	"slices"

	"github.com/romana/romana/api"
	"github.com/romana/romana/fabric"
)

// BGP announces the host's blocks to the top-of-rack routers serving it;
// *bgp.Speaker implements it. Apply is idempotent: the agent calls it at
// every reconciliation with the decision package fabric computed.
type BGP interface {
	Apply(ctx context.Context, d fabric.HostBGP) error
}

// bgpState is the reconciler's memory of what it last told BGP.
type bgpState struct {
	last     string // HostBGP.String() of the last successful Apply
	problems []string
}

// applyBGP computes what this host announces and to whom (package fabric,
// from the devices in the snapshot) and hands it to the speaker. It runs
// after routes and firewall, so a block is announced only once the host
// can serve it.
func (a *agent) applyBGP(ctx context.Context, snap api.Snapshot) error {
	if a.cfg.BGP == nil {
		return nil
	}
	d, err := fabric.ForHost(snap, a.cfg.Host)
	if err != nil {
		return fmt.Errorf("bgp: %w", err)
	}
	if !slices.Equal(d.Problems, a.bgp.problems) {
		for _, p := range d.Problems {
			a.log.Warn("bgp: skipped", "problem", p)
		}
		a.bgp.problems = d.Problems
	}
	if err := a.cfg.BGP.Apply(ctx, d); err != nil {
		a.bgp.last = ""
		return err
	}
	if s := d.String(); s != a.bgp.last {
		a.log.Info("bgp desired state applied", "announce", d.Announce, "peers", len(d.Peers))
		a.bgp.last = s
	}
	return nil
}
