package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/romana/romana/api"
	"github.com/romana/romana/hoststate"
	"github.com/romana/romana/route"
	"github.com/romana/romana/sim"
)

// hostReport reads what the agent programmed on one host, with the same
// commands an operator would type: `ip route show proto 190` and
// `nft -j list table inet romana`.
func (d *run) hostReport(ctx context.Context, h api.Host) (HostReport, error) {
	r := HostReport{Name: h.Name, IP: h.IP.String()}
	if len(h.Slots) > 0 {
		r.CIDR = h.Slots[0].CIDR.String()
	}
	nsName := d.o.Prefix + "-" + h.Name
	out, err := exec.CommandContext(ctx, "ip", "-n", nsName, "-4", "route", "show", "proto", strconv.Itoa(route.Protocol)).Output()
	if err != nil {
		return r, fmt.Errorf("host %s: ip route: %w", h.Name, err)
	}
	if d.routes6 {
		out6, err := exec.CommandContext(ctx, "ip", "-n", nsName, "-6", "route", "show", "proto", strconv.Itoa(route.Protocol)).Output()
		if err != nil {
			return r, fmt.Errorf("host %s: ip -6 route: %w", h.Name, err)
		}
		out = append(out, out6...)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		r.Routes = append(r.Routes, l)
		if strings.Contains(l, " via ") {
			r.RemoteRoutes++
		}
	}
	out, err = exec.CommandContext(ctx, "ip", "netns", "exec", nsName, "nft", "-j", "list", "table", "inet", hoststate.Table).Output()
	if err != nil {
		return r, fmt.Errorf("host %s: no nftables table inet %s yet", h.Name, hoststate.Table)
	}
	r.NftRules, r.NftElements, err = countNft(out)
	if err != nil {
		return r, fmt.Errorf("host %s: %w", h.Name, err)
	}
	return r, nil
}

// countNft counts rules and map/set elements in `nft -j` output.
func countNft(js []byte) (rules, elements int, err error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return 0, 0, fmt.Errorf("parse nft -j output: %w", err)
	}
	for _, o := range doc.Nftables {
		if _, ok := o["rule"]; ok {
			rules++
		}
		for _, k := range []string{"map", "set"} {
			if raw, ok := o[k]; ok {
				var s struct {
					Elem []json.RawMessage `json:"elem"`
				}
				if err := json.Unmarshal(raw, &s); err == nil {
					elements += len(s.Elem)
				}
			}
		}
	}
	return rules, elements, nil
}

// The state file records what a demo made, as it makes it: its
// directory, the PIDs it started and the namespaces (each recorded before it
// is created), so that `romana demo --down` removes exactly those, also
// after a hard kill, and a second demo with the same prefix can tell that
// one is there.
func statePath(prefix string) string {
	return filepath.Join(os.TempDir(), "romana-demo-"+prefix+".state")
}

type state struct {
	Dir        string   `json:"dir"`
	Owner      int      `json:"owner"` // the demo's own PID
	Kept       bool     `json:"kept"`  // left running by --keep
	PIDs       []int    `json:"pids"`
	Namespaces []string `json:"namespaces"`
}

// stateMu serializes the read-modify-write of state files.
var stateMu sync.Mutex

// readState reads prefix's state; ok is false when there is none.
func readState(prefix string) (s state, ok bool, err error) {
	b, err := os.ReadFile(statePath(prefix))
	if errors.Is(err, os.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, false, fmt.Errorf("%s: %w", statePath(prefix), err)
	}
	return s, true, nil
}

func saveState(prefix string, s state) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := statePath(prefix) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(prefix))
}

// updateState applies f to prefix's state and saves it.
func updateState(prefix string, f func(*state)) error {
	stateMu.Lock()
	defer stateMu.Unlock()
	s, _, err := readState(prefix)
	if err != nil {
		return err
	}
	f(&s)
	return saveState(prefix, s)
}

func writeState(prefix, dir string) error {
	stateMu.Lock()
	defer stateMu.Unlock()
	return saveState(prefix, state{Dir: dir, Owner: os.Getpid()})
}

func (d *run) recordPID(p *proc) {
	_ = updateState(d.o.Prefix, func(s *state) { s.PIDs = append(s.PIDs, p.cmd.Process.Pid) })
}

// newLab creates the demo's lab, recording each namespace in the state
// file before it is created.
func (d *run) newLab(ctx context.Context) (*sim.Lab, error) {
	return sim.NewRecorded(ctx, d.o.Prefix, d.o.Log, func(ns string) error {
		return updateState(d.o.Prefix, func(s *state) { s.Namespaces = append(s.Namespaces, ns) })
	})
}

func clearState(prefix string) error {
	if err := os.Remove(statePath(prefix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ours reports whether pid still leads the process group the demo created
// for it (so it is still our child's, not a reused PID).
func ours(pid int) bool {
	pgid, err := syscall.Getpgid(pid)
	return err == nil && pgid == pid
}

// alive reports whether anything the state records is still there.
func (s state) alive() bool {
	return slices.ContainsFunc(s.PIDs, ours) || slices.ContainsFunc(s.Namespaces, sim.Exists)
}

// downCommand is the command that takes down the demo with prefix.
func downCommand(prefix string) string {
	if prefix == DefaultPrefix {
		return "romana demo --down"
	}
	return "romana demo --down --prefix " + prefix
}

// checkFree refuses to start a demo over one with the same prefix that is
// still there (kept, running, or left behind by a hard kill); a state file
// whose processes and namespaces are all gone is cleared.
func checkFree(prefix string) error {
	s, ok, err := readState(prefix)
	if err != nil {
		return fmt.Errorf("read demo state: %w", err)
	}
	if !ok {
		return nil
	}
	if !s.alive() {
		_, err := Down(prefix)
		return err
	}
	switch {
	case s.Kept:
		return fmt.Errorf("a demo kept with --keep is running with prefix %s (state in %s): take it down first with: %s (or use another --prefix)",
			prefix, s.Dir, downCommand(prefix))
	case s.Owner != 0 && syscall.Kill(s.Owner, 0) == nil:
		return fmt.Errorf("another demo (pid %d) is running with prefix %s: wait for it, or use another --prefix", s.Owner, prefix)
	default:
		return fmt.Errorf("a demo with prefix %s was stopped before it could clean up (state in %s): remove what it left with: %s (or use another --prefix)",
			prefix, s.Dir, downCommand(prefix))
	}
}

// Down tears down a demo left running (--keep) or killed hard: it stops
// the processes the demo recorded (each is the leader of its own process
// group, which the demo created), deletes the namespaces it recorded and
// its state directory, and says what it did. Nothing else is touched: with
// no state for prefix, it removes nothing.
func Down(prefix string) (string, error) {
	stateMu.Lock()
	defer stateMu.Unlock()
	s, ok, err := readState(prefix)
	if err != nil {
		return "", fmt.Errorf("read demo state: %w", err)
	}
	if !ok {
		return fmt.Sprintf("no demo with prefix %s to take down (no state file %s); nothing removed", prefix, statePath(prefix)), nil
	}
	stopped := 0
	for _, pid := range s.PIDs {
		// Signal the process group the demo created for this child only if
		// the process still leads it (it is still ours).
		if ours(pid) && syscall.Kill(-pid, syscall.SIGKILL) == nil {
			stopped++
		}
	}
	deleted := 0
	for _, n := range s.Namespaces {
		if sim.Exists(n) {
			deleted++
		}
	}
	var errs []error
	errs = append(errs, sim.DeleteRecorded(prefix, s.Namespaces))
	if s.Dir != "" && strings.HasPrefix(filepath.Base(s.Dir), "romana-demo-") {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	errs = append(errs, clearState(prefix))
	return fmt.Sprintf("demo %s taken down: %d processes stopped, %d namespaces deleted, %s removed", prefix, stopped, deleted, s.Dir), errors.Join(errs...)
}
