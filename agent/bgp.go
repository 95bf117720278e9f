package agent

import (
	"context"
	"log/slog"

	"github.com/romana/romana/fabric"
)

// BGP announces the host's blocks to the top-of-rack routers serving it;
// *bgp.Speaker implements it. Apply is idempotent: the agent calls it with
// the decision package fabric computed whenever its inputs change.
type BGP interface {
	Apply(ctx context.Context, d fabric.HostBGP) error
}

// BGPLearner is a BGP speaker that installs the routes its peers offer
// (*bgp.Speaker does): its sessions run in their own goroutines and only
// signal Changed; the loop installs the routes with SyncLearned.
type BGPLearner interface {
	BGP
	// Changed receives a value when a session or a learned route changed.
	Changed() <-chan struct{}
	SyncLearned(ctx context.Context) error
}

// bgpManager hands the speaker what this host announces and to whom, and
// installs learned routes. It runs after routes and firewall, so a block
// is announced only once the host can serve it.
type bgpManager struct {
	b        BGP
	host     string
	log      *slog.Logger
	last     string // HostBGP.String() of the last successful Apply
	problems []string
}

func (*bgpManager) name() string { return "bgp" }

func (*bgpManager) deps() input {
	return inNetwork | inHost | inDevice | inLearned | inResync | inRetry
}

func (m *bgpManager) sync(ctx context.Context, p *pass) (bool, error) {
	d, err := fabric.ForHostModel(p.m, m.host)
	if err != nil {
		return false, err
	}
	logProblems(m.log, "bgp: skipped", d.Problems, &m.problems)
	if err := m.b.Apply(ctx, d); err != nil {
		m.last = ""
		return false, err
	}
	if s := d.String(); s != m.last {
		m.log.Info("bgp desired state applied", "announce", d.Announce, "peers", len(d.Peers))
		m.last = s
	}
	if l, ok := m.b.(BGPLearner); ok {
		return false, l.SyncLearned(ctx)
	}
	return false, nil
}
