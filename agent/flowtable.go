package agent

import (
	"context"
	"log/slog"

	"github.com/romana/romana/hoststate"
)

// FlowtableSupporter is implemented by a Firewall that can tell whether
// the kernel holds software flowtables (firewall.Firewall does, by an
// nft --check).
type FlowtableSupporter interface {
	FlowtableSupport(ctx context.Context) error
}

// flowtableState is the firewall manager's view of Config.Flowtable: the
// kernel's support is probed once, at the first sync (on the loop's
// goroutine, in the agent's namespace). A kernel without flowtables (or a
// firewall that cannot say) means running without one, as if the flag
// were off, with a problem saying why: isolation and policies are applied
// either way, never left out because the fast path cannot be.
type flowtableState struct {
	probed      bool
	unsupported string // why the flowtable is not used; "" when it is
}

// use reports whether this sync's ruleset has the flowtable.
func (s *flowtableState) use(ctx context.Context, cfg *Config, log *slog.Logger) bool {
	if !cfg.Flowtable {
		return false
	}
	if !s.probed {
		s.probed = true
		fs, ok := cfg.Firewall.(FlowtableSupporter)
		switch {
		case !ok:
			s.unsupported = "the firewall adapter cannot hold a flowtable"
		default:
			if err := fs.FlowtableSupport(ctx); err != nil {
				s.unsupported = err.Error()
			}
		}
		if s.unsupported != "" {
			log.Error("--flowtable: running without the flowtable", "reason", s.unsupported)
		} else {
			log.Info("--flowtable: established connections of local endpoints are offloaded to a software flowtable")
		}
	}
	return s.unsupported == ""
}

func (s *flowtableState) problems() []string {
	if s.unsupported == "" {
		return nil
	}
	return []string{"flowtable requested (--flowtable) but not in use: " + s.unsupported}
}

// pending reports whether an endpoint's veth is not in the flowtable yet
// because it does not exist yet: worth a retry before the next resync.
func (s *flowtableState) pending(rs hoststate.Ruleset) bool {
	for _, ft := range rs.Flowtables {
		if len(ft.Pending) > 0 {
			return true
		}
	}
	return false
}
