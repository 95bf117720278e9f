package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/romana/romana/bench/dataplane"
)

// dataplaneFlags are the dataplane part's settings, shared with "run".
type dataplaneFlags struct {
	dir, doc, flanneld, flannelVersion, only string
	quick, render, verbose                   bool
}

func (f *dataplaneFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "dir", "docs/bench", "directory for dataplane.json and the plots")
	fs.StringVar(&f.doc, "doc", "docs/benchmarks.md", "markdown file whose dataplane block is regenerated (empty: none)")
	fs.StringVar(&f.flanneld, "flanneld", "", "flanneld binary (scripts/flannel.sh builds and caches it); empty leaves flannel out, and says so")
	fs.StringVar(&f.flannelVersion, "flannel-version", "v0.28.10", "flannel version, for the report")
	fs.BoolVar(&f.quick, "quick", false, "1 s per measurement, A-B-B-A once (under 3 minutes)")
	fs.BoolVar(&f.verbose, "v", false, "debug log on stderr")
}

func dataplaneMain(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("dataplane", flag.ExitOnError)
	var f dataplaneFlags
	f.register(fs)
	fs.StringVar(&f.only, "only", "", "comma-separated conditions besides the routed baseline ("+strings.Join(dataplane.Conditions[1:], ",")+"); empty: all")
	fs.BoolVar(&f.render, "render", false, "measure nothing: regenerate the plots and the doc from dir/dataplane.json")
	_ = fs.Parse(args)
	r, err := runDataplane(ctx, f, "go run ./bench/romana-bench dataplane "+strings.Join(args, " "))
	if err != nil {
		fmt.Fprintln(os.Stderr, "romana-bench dataplane:", err)
		return 1
	}
	fmt.Fprint(os.Stderr, dataplane.Summary(r))
	return 0
}

// runDataplane measures (or reads, with render) and writes the JSON, the
// plots and the doc block.
func runDataplane(ctx context.Context, f dataplaneFlags, command string) (dataplane.Results, error) {
	var r dataplane.Results
	if f.render {
		var err error
		if r, err = dataplane.ReadJSON(f.dir); err != nil {
			return r, err
		}
	} else {
		if os.Geteuid() != 0 {
			return r, fmt.Errorf("the dataplane part needs root (network namespaces)")
		}
		log := slog.New(slog.DiscardHandler)
		if f.verbose {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		var only []string
		if f.only != "" {
			only = strings.Split(f.only, ",")
		}
		var err error
		r, err = dataplane.Run(ctx, dataplane.Config{Quick: f.quick, Flanneld: f.flanneld, FlannelVersion: f.flannelVersion,
			Only: only, Log: log, Progress: progress("dataplane")})
		endProgress()
		if err != nil {
			return r, err
		}
		r.Command = command
		r.Machine.Cores, r.Machine.CPU, r.Machine.Go, r.Machine.Kernel = runtime.NumCPU(), cpuModel(), runtime.Version(), kernel()
		if err := os.MkdirAll(f.dir, 0o755); err != nil {
			return r, err
		}
		if err := dataplane.WriteJSON(f.dir, r); err != nil {
			return r, err
		}
	}
	if err := dataplane.WritePlots(f.dir, r); err != nil {
		return r, err
	}
	if f.doc != "" {
		if err := dataplane.UpdateDoc(f.doc, f.dir, r); err != nil {
			return r, err
		}
	}
	return r, nil
}

var progressStart = time.Now()

// progress returns a progress callback printing one line: the part, which
// case, how many are left, time so far (rewritten in place on a terminal).
func progress(part string) func(i, n int, what string) {
	tty := isTerminal(os.Stderr)
	start := time.Now()
	return func(i, n int, what string) {
		line := fmt.Sprintf("%s: %s, %.0f s so far", part, what, time.Since(start).Seconds())
		if n > 0 {
			line = fmt.Sprintf("%s: case %d/%d (%d left after it), %s, %.0f s so far", part, i, n, n-i, what, time.Since(start).Seconds())
		}
		if tty {
			fmt.Fprintf(os.Stderr, "\r\033[K%s", line)
		} else {
			fmt.Fprintln(os.Stderr, line)
		}
	}
}

func endProgress() {
	if isTerminal(os.Stderr) {
		fmt.Fprintln(os.Stderr)
	}
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
