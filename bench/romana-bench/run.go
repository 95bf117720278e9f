package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/romana/romana/bench/control"
	"github.com/romana/romana/bench/dataplane"
)

// Parts are what `make bench` runs, in this order; ONLY=part[,part]
// picks some.
var Parts = []string{"dataplane", "control", "scale"}

func runMain(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var f dataplaneFlags
	f.register(fs)
	only := fs.String("only", "", "comma-separated parts ("+strings.Join(Parts, ",")+"); empty: all")
	_ = fs.Parse(args)
	want := map[string]bool{}
	for _, p := range strings.Split(*only, ",") {
		if p = strings.TrimSpace(p); p != "" {
			want[p] = true
		}
	}
	for p := range want {
		if !contains(Parts, p) {
			fmt.Fprintf(os.Stderr, "romana-bench run: unknown part %q (parts: %s)\n", p, strings.Join(Parts, ", "))
			return 2
		}
	}
	command := "make bench"
	if f.quick {
		command += " QUICK=1"
	}
	if *only != "" {
		command += " ONLY=" + *only
	}
	start := time.Now()
	load := loadavg()
	var summaries []string
	failed := false
	for _, part := range Parts {
		if len(want) > 0 && !want[part] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(os.Stderr, "== %s (%.0f s so far)\n", part, time.Since(start).Seconds())
		var (
			sum string
			err error
		)
		switch part {
		case "dataplane":
			if f.flanneld == "" {
				fmt.Fprintln(os.Stderr, "dataplane: building or finding flanneld "+f.flannelVersion+" (scripts/flannel.sh; minutes the first time, then cached)")
				if f.flanneld, err = buildFlannel(ctx, f.flannelVersion); err != nil {
					fmt.Fprintf(os.Stderr, "dataplane: flannel left out: %v\n", err)
				}
			}
			var r dataplane.Results
			if r, err = runDataplane(ctx, f, command); err == nil {
				sum = dataplane.Summary(r)
			}
		case "control":
			sum, err = runControl(ctx, f, command)
		case "scale":
			err = run(ctx, f.dir, f.doc, 5, false) // seconds even in QUICK
			if err == nil {
				sum = "scale: curves written (docs/benchmarks.md, \"Scale curves\")\n"
			}
		}
		if err != nil {
			failed = true
			sum = fmt.Sprintf("%s: FAILED: %v\n", part, err)
			fmt.Fprint(os.Stderr, sum)
		}
		summaries = append(summaries, sum)
	}
	fmt.Fprintf(os.Stderr, "\n== summary of %s (%.0f s; load average %s at the start, %s at the end)\n", command, time.Since(start).Seconds(), load, loadavg())
	for _, s := range summaries {
		fmt.Fprint(os.Stderr, s)
	}
	if failed || ctx.Err() != nil {
		return 1
	}
	return 0
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// runControl runs the control-plane benchmarks (package bench/control)
// and writes docs/bench/control.json and its doc block.
func runControl(ctx context.Context, f dataplaneFlags, command string) (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("the control part needs root (network namespaces)")
	}
	r := control.RunAll(ctx, ".", f.quick, nil, progress("control"))
	endProgress()
	r.Command = command
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return "", err
	}
	if err := control.Write(f.dir, f.doc, r); err != nil {
		return "", err
	}
	return control.Summary(r), nil
}

// buildFlannel runs scripts/flannel.sh (build once, then cached) and
// returns flanneld's path, or "" and why not.
func buildFlannel(ctx context.Context, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "scripts/flannel.sh")
	cmd.Env = append(os.Environ(), "FLANNEL_VERSION="+version)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/flannel.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// controlMain runs the control benchmarks named by -only on their own and
// merges them into dir/control.json (the other benchmarks' results, and
// the run they came from, stay as they were), then regenerates the doc
// block: a benchmark added or changed is measured without running the
// whole control part again.
func controlMain(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("control", flag.ExitOnError)
	dir := fs.String("dir", "docs/bench", "directory holding control.json")
	doc := fs.String("doc", "docs/benchmarks.md", "markdown file whose control block is regenerated (empty: none)")
	only := fs.String("only", "", "comma-separated control benchmarks to run (required)")
	_ = fs.Parse(args)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "romana-bench control:", err)
		return 1
	}
	if *only == "" {
		return fail(fmt.Errorf("-only is required (make bench ONLY=control runs them all)"))
	}
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("needs root (network namespaces)"))
	}
	benches, err := control.Named(strings.Split(*only, ","))
	if err != nil {
		return fail(err)
	}
	old, err := control.ReadJSON(*dir)
	if err != nil {
		return fail(fmt.Errorf("read the results to merge into: %w", err))
	}
	r := control.RunBenches(ctx, ".", benches, false, nil, progress("control"))
	endProgress()
	merged := control.Merge(old, "go run ./bench/romana-bench control "+strings.Join(args, " "), r.Runs)
	if err := control.Write(*dir, *doc, merged); err != nil {
		return fail(err)
	}
	fmt.Fprint(os.Stderr, control.Summary(r))
	for _, run := range r.Runs {
		if run.Error != "" {
			return 1
		}
	}
	return 0
}
