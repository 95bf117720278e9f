package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/hoststate"
)

// Steer keeps the table inet hoststate.SteerTable (service chain steering)
// equal to a desired hoststate.Steering, replacing it atomically when it
// differs and deleting it when no chain concerns the host.
type Steer struct {
	nft knftables.Interface
	log *slog.Logger
}

// NewSteer returns a Steer using the nft binary in the calling process's
// network namespace.
func NewSteer(log *slog.Logger) (*Steer, error) {
	nft, err := knftables.New(Family, hoststate.SteerTable)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return NewSteerWith(nft, log), nil
}

// NewSteerWith returns a Steer on any knftables.Interface bound to inet
// hoststate.SteerTable (knftables.NewFake for tests).
func NewSteerWith(nft knftables.Interface, log *slog.Logger) *Steer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Steer{nft: nft, log: log}
}

// steerStamp is the comment of the base chain: a hash of the rules.
func steerStamp(st hoststate.Steering) string {
	sum := sha256.Sum256([]byte(st.Script()))
	return stampPrefix + hex.EncodeToString(sum[:8])
}

// Apply makes the table equal to st's rules (or absent when st has none).
// It reports whether it changed anything.
func (s *Steer) Apply(ctx context.Context, st hoststate.Steering) (bool, error) {
	chains, err := s.nft.List(ctx, "chain")
	missing := knftables.IsNotFound(err)
	if err != nil && !missing {
		return false, fmt.Errorf("list table %s %s: %w", Family, hoststate.SteerTable, err)
	}
	if len(st.Rules) == 0 {
		if missing {
			return false, nil
		}
		return true, s.Cleanup(ctx)
	}
	// The last rule's comment carries a hash of the whole script: equal
	// rule counts and comments mean the live table is the one we wrote.
	want := slices.Clone(st.Rules)
	want[len(want)-1].Comment = steerStamp(st)
	wantChains := []string{hoststate.SteerChain}
	if len(st.Raw) > 0 {
		wantChains = append(wantChains, hoststate.SteerRawChain)
	}
	if !missing && len(chains) == len(wantChains) {
		same := true
		for _, name := range wantChains {
			rs := want
			if name == hoststate.SteerRawChain {
				rs = st.Raw
			}
			rules, err := s.nft.ListRules(ctx, name)
			if err != nil || len(rules) != len(rs) {
				same = false
				break
			}
			for i, r := range rules {
				if c := rs[i].Comment; (r.Comment == nil) != (c == "") || (r.Comment != nil && *r.Comment != c) {
					same = false
				}
			}
		}
		if same {
			return false, nil
		}
	}
	tx := s.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Chain{Name: hoststate.SteerChain,
		Type: knftables.PtrTo(knftables.FilterType), Hook: knftables.PtrTo(knftables.PreroutingHook),
		Priority: knftables.PtrTo(knftables.ManglePriority), Policy: knftables.PtrTo(knftables.AcceptPolicy)})
	if len(st.Raw) > 0 {
		tx.Add(&knftables.Chain{Name: hoststate.SteerRawChain,
			Type: knftables.PtrTo(knftables.FilterType), Hook: knftables.PtrTo(knftables.PreroutingHook),
			Priority: knftables.PtrTo(knftables.RawPriority), Policy: knftables.PtrTo(knftables.AcceptPolicy)})
	}
	add := func(chain string, rs []hoststate.Rule) {
		for _, r := range rs {
			kr := &knftables.Rule{Chain: chain, Rule: r.Expr}
			if r.Comment != "" {
				kr.Comment = knftables.PtrTo(r.Comment)
			}
			tx.Add(kr)
		}
	}
	add(hoststate.SteerChain, want)
	add(hoststate.SteerRawChain, st.Raw)
	if err := s.nft.Run(ctx, tx); err != nil {
		return false, fmt.Errorf("replace table %s %s (%d rules): %w", Family, hoststate.SteerTable, len(st.Rules), err)
	}
	s.log.Info("steering table replaced", "table", string(Family)+" "+hoststate.SteerTable, "rules", len(st.Rules)+len(st.Raw))
	return true, nil
}

// Cleanup deletes the table; a missing table is not an error.
func (s *Steer) Cleanup(ctx context.Context) error {
	tx := s.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := s.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("delete table %s %s: %w", Family, hoststate.SteerTable, err)
	}
	s.log.Info("steering table deleted", "table", string(Family)+" "+hoststate.SteerTable)
	return nil
}
