package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// state is what the demo could leave behind on the machine: its network
// namespaces (named labPrefix-...), processes and mounts naming one of its
// temporary directories or namespaces, the nodes' cgroups. Not containerd
// shim sockets: the nodes' shims put theirs in the node's own /run (an
// overlay), so /run/containerd/s changes only by other users (the Makefile
// target counts its entries before and after).
type state struct {
	netns, procs, cgroups []string
	mounts                int
}

// tempMark is in the name of every temporary directory of the demo (the
// stack's, kubenode.NewStack's name).
const tempMark = "romana-kdemo-"

func snapshot() state {
	var s state
	for _, n := range names("/run/netns") {
		if strings.HasPrefix(n, labPrefix+"-") {
			s.netns = append(s.netns, n)
		}
	}
	for _, n := range names("/sys/fs/cgroup/cpu") {
		if strings.HasPrefix(n, fmt.Sprintf("romana-kn-%d-", os.Getpid())) {
			s.cgroups = append(s.cgroups, n)
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, tempMark) || strings.Contains(l, "/"+labPrefix+"-") {
				s.mounts++
			}
		}
	}
	self := os.Getpid()
	for _, e := range names("/proc") {
		pid, err := strconv.Atoi(e)
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e, "cmdline"))
		if err == nil && strings.Contains(string(b), tempMark) {
			s.procs = append(s.procs, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")))
		}
	}
	return s
}

func names(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// minus is what s has that before had not.
func (s state) minus(before state) state {
	diff := func(a, b []string) []string {
		var out []string
		for _, x := range a {
			if !slices.Contains(b, x) {
				out = append(out, x)
			}
		}
		return out
	}
	return state{netns: diff(s.netns, before.netns), procs: diff(s.procs, before.procs),
		cgroups: diff(s.cgroups, before.cgroups), mounts: max(0, s.mounts-before.mounts)}
}

func (s state) empty() bool {
	return len(s.netns)+len(s.procs)+len(s.cgroups)+s.mounts == 0
}

func (s state) String() string {
	var parts []string
	if len(s.netns) > 0 {
		parts = append(parts, "network namespaces "+strings.Join(s.netns, ", "))
	}
	if len(s.procs) > 0 {
		parts = append(parts, "processes "+strings.Join(s.procs, "; "))
	}
	if len(s.cgroups) > 0 {
		parts = append(parts, "cgroups "+strings.Join(s.cgroups, ", "))
	}
	if s.mounts > 0 {
		parts = append(parts, fmt.Sprintf("%d more mounts", s.mounts))
	}
	return strings.Join(parts, "; ")
}

func (s state) err() error {
	if s.empty() {
		return nil
	}
	return errors.New("left behind: " + s.String())
}
