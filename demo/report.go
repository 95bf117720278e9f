package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// The state file records a kept demo's directory and the PIDs the demo
// started, so `romana demo --down` stops exactly those processes.
func statePath(prefix string) string {
	return filepath.Join(os.TempDir(), "romana-demo-"+prefix+".state")
}

type state struct {
	Dir  string `json:"dir"`
	PIDs []int  `json:"pids"`
}

func readState(prefix string) (state, error) {
	var s state
	b, err := os.ReadFile(statePath(prefix))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

func saveState(prefix string, s state) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(statePath(prefix), b, 0o600)
}

func writeState(prefix, dir string) error { return saveState(prefix, state{Dir: dir}) }

func (d *run) recordPID(p *proc) {
	s, err := readState(d.o.Prefix)
	if err != nil {
		return
	}
	s.PIDs = append(s.PIDs, p.cmd.Process.Pid)
	_ = saveState(d.o.Prefix, s)
}

func clearState(prefix string) error {
	if err := os.Remove(statePath(prefix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Down tears down a demo left running (--keep) or killed hard: it stops the
// processes the demo recorded (each is the leader of its own process group,
// which the demo created), deletes namespaces with the demo's prefix and the
// state directory.
func Down(prefix string) error {
	s, err := readState(prefix)
	if err != nil {
		return fmt.Errorf("read demo state: %w", err)
	}
	for _, pid := range s.PIDs {
		// Signal the process group the demo created for this child only if
		// the process still leads it (it is still ours).
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	var errs []error
	errs = append(errs, sim.CleanupStale(prefix))
	if s.Dir != "" && strings.HasPrefix(filepath.Base(s.Dir), "romana-demo-") {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	errs = append(errs, clearState(prefix))
	return errors.Join(errs...)
}
