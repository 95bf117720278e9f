package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	nft    knftables.Interface
	lister lister
	log    *slog.Logger
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
	return &Steer{nft: nft, lister: newLister(nft, Family, hoststate.SteerTable), log: log}
}

// steerStamp is the comment of the base chain: a hash of the rules.
func steerStamp(st hoststate.Steering) string {
	sum := sha256.Sum256([]byte(st.Script()))
	return stampPrefix + hex.EncodeToString(sum[:8])
}

// Apply makes the table equal to st's rules (or absent when st has none).
// It reports whether it changed anything. The live table is taken as in
// sync, from one nft listing, when its chains have the wanted rule counts
// and comments (the last rule's comment is a hash of the whole script) and
// its listing hashes to what it did right after our last write (a rule
// edited in place, comment kept, is found: listing.go).
func (s *Steer) Apply(ctx context.Context, st hoststate.Steering) (bool, error) {
	live, err := s.lister.list(ctx)
	missing := errors.Is(err, errTableMissing)
	if err != nil && !missing {
		return false, fmt.Errorf("list table %s %s: %w", Family, hoststate.SteerTable, err)
	}
	if len(st.Rules) == 0 {
		if missing {
			return false, nil
		}
		return true, s.Cleanup(ctx)
	}
	want := slices.Clone(st.Rules)
	want[len(want)-1].Comment = steerStamp(st)
	wantChains := map[string][]hoststate.Rule{hoststate.SteerChain: want}
	if len(st.Raw) > 0 {
		wantChains[hoststate.SteerRawChain] = st.Raw
	}
	if !missing && s.inSync(live, wantChains) {
		return false, nil
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
	// Store the hash of the listing, to find later edits.
	live, err = s.lister.list(ctx)
	if err != nil {
		return true, fmt.Errorf("list table %s %s after writing it: %w", Family, hoststate.SteerTable, err)
	}
	tx = s.nft.NewTransaction()
	sumsTx(tx, map[string]string{"steering": live.sum(steerBlocks(wantChains))})
	if err := s.nft.Run(ctx, tx); err != nil {
		return true, fmt.Errorf("store listing sums in table %s %s: %w", Family, hoststate.SteerTable, err)
	}
	s.log.Info("steering table replaced", "table", string(Family)+" "+hoststate.SteerTable, "rules", len(st.Rules)+len(st.Raw))
	return true, nil
}

// inSync reports whether live has exactly the wanted chains (and the sums
// chain), each with the wanted rule count and comments, and whether its
// listing hashes to what it did after our last write.
func (s *Steer) inSync(live *listing, want map[string][]hoststate.Rule) bool {
	for name, lc := range live.chains {
		if _, ok := want[name]; !ok && name != sumChain {
			return false
		}
		if len(lc.rules) != len(want[name]) && name != sumChain {
			return false
		}
		for i, r := range want[name] {
			if l := lc.rules[i]; l.hasComment != (r.Comment != "") || l.comment != r.Comment {
				return false
			}
		}
	}
	for name := range want {
		if live.chains[name] == nil {
			return false
		}
	}
	return live.sum(steerBlocks(want)) == live.sums()["steering"]
}

// steerBlocks names the listing's blocks of the wanted chains, sorted.
func steerBlocks(want map[string][]hoststate.Rule) []string {
	var out []string
	for _, name := range sortedKeys(want) {
		out = append(out, "chain "+name)
	}
	return out
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
