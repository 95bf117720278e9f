// Command romana-bench runs Romana's benchmark suite (issue 14) and writes
// its results (JSON), plots and doc sections. Parts: "scale", scale curves
// from the pure code (no root, no network); "dataplane", Romana beside the
// no-rule routed path, flannel (vxlan, host-gw), a kernel VXLAN overlay and
// the ptp CNI on simulated hosts (root; package bench/dataplane); "run",
// the parts `make bench` runs one after another, with one summary of ratios
// at the end; "control", some control-plane benchmarks on their own,
// merged into the committed results.
//
//	go run ./bench/romana-bench scale [-dir docs/bench] [-doc docs/benchmarks.md] [-runs 5] [-render]
//	go run ./bench/romana-bench dataplane [-dir docs/bench] [-doc docs/benchmarks.md] [-quick] [-flanneld PATH] [-only CONDS] [-render]
//	go run ./bench/romana-bench run [-quick] [-only PARTS] [-flanneld PATH]
//	go run ./bench/romana-bench control -only NAMES [-dir docs/bench] [-doc docs/benchmarks.md]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"

	"github.com/romana/romana/bench/scale"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "scale":
	case "dataplane":
		os.Exit(dataplaneMain(ctx, os.Args[2:]))
	case "run":
		os.Exit(runMain(ctx, os.Args[2:]))
	case "control":
		os.Exit(controlMain(ctx, os.Args[2:]))
	default:
		usage()
	}
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	dir := fs.String("dir", "docs/bench", "directory for scale.json and the plots")
	doc := fs.String("doc", "docs/benchmarks.md", "markdown file whose scale block is regenerated (empty: none)")
	runs := fs.Int("runs", 5, "hoststate.Compute runs per point (the median is reported)")
	render := fs.Bool("render", false, "measure nothing: regenerate the plots and the doc from dir/scale.json")
	_ = fs.Parse(os.Args[2:])
	if err := run(ctx, *dir, *doc, *runs, *render); err != nil {
		fmt.Fprintln(os.Stderr, "romana-bench scale:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, doc string, runs int, render bool) error {
	var r scale.Results
	if render {
		var err error
		if r, err = scale.ReadJSON(dir); err != nil {
			return err
		}
	} else {
		r = scale.Results{
			Command: "go run ./bench/romana-bench " + strings.Join(os.Args[1:], " "),
			Machine: scale.Machine{Cores: runtime.NumCPU(), CPU: cpuModel(), Go: runtime.Version(), OSArch: runtime.GOOS + "/" + runtime.GOARCH, LoadBefore: loadavg()},
			Plan:    scale.Network.CIDR + ": " + planFields(), Racks: scale.Racks, Hosts: scale.Racks * scale.HostsPerRack,
			BlockSize: scale.BlockSize, Runs: runs,
		}
		tty := isTerminal(os.Stderr)
		start := time.Now()
		curves, err := scale.Run(ctx, scale.Sweeps(), runs, func(i, n int, what string) {
			line := fmt.Sprintf("scale: case %d/%d (%d left after it), %s, %.0f s so far", i, n, n-i, what, time.Since(start).Seconds())
			if tty {
				fmt.Fprintf(os.Stderr, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(os.Stderr, line)
			}
		})
		if tty {
			fmt.Fprintln(os.Stderr)
		}
		if err != nil {
			return err
		}
		r.Curves, r.Seconds = curves, time.Since(start).Seconds()
		r.Machine.LoadAfter = loadavg()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := scale.WriteJSON(dir, r); err != nil {
			return err
		}
	}
	if err := scale.WritePlots(dir, r); err != nil {
		return err
	}
	if doc != "" {
		if err := scale.UpdateDoc(doc, dir, r); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "scale: wrote %s/%s, %s/*.png", dir, scale.JSONFile, dir)
	if doc != "" {
		fmt.Fprintf(os.Stderr, " and the scale block of %s", doc)
	}
	fmt.Fprintln(os.Stderr)
	return nil
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: romana-bench scale|dataplane|run|control [flags] (romana-bench PART -h for the flags)")
	os.Exit(2)
}

func planFields() string {
	var parts []string
	for _, f := range scale.Network.Fields {
		parts = append(parts, fmt.Sprintf("%s %d", f.Name, f.Bits))
	}
	return strings.Join(parts, " | ") + " | endpoint rest"
}

// loadavg is the 1, 5 and 15 minute load averages, "" when unknown.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// cpuModel is the first "model name" of /proc/cpuinfo, "" when unknown.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
