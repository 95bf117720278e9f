#!/usr/bin/env bash
# scripts/event-bench-ab.sh OLD NEW: issue 11's agent event benchmarks, old agent
# (A) against new (B), run alternately A-B-B-A in one session, printed as
# one markdown table (each run's figure, the mean of A and of B, B/A).
#
#   OLD, NEW   two checkouts of romana (paths; may be the same path)
#   BENCH      -bench regexp        (default 'EventCPU|PolicyEnforcement20')
#   BENCHTIME  -benchtime           (default 10x)
#   BENCH_FILE the benchmark file copied into a checkout that lacks
#              agent/event_bench_test.go (default: OLD's, else NEW's); the
#              copy is left there, untracked
#   OUT        directory for the raw outputs (default: a new /tmp/event-bench-ab.XXXX)
#
# Each run is `go test -count=1 -run '^$' -bench "$BENCH" -benchtime
# "$BENCHTIME" -timeout 60m ./agent` in the checkout; loadavg is recorded
# before and after each. Runs one at a time: do not run other benchmarks
# meanwhile.
set -euo pipefail
export PATH=$PATH:/usr/local/go/bin

if [ $# -ne 2 ]; then
	echo "usage: $0 OLD_CHECKOUT NEW_CHECKOUT" >&2
	exit 2
fi
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
BENCH=${BENCH:-'EventCPU|PolicyEnforcement20'}
BENCHTIME=${BENCHTIME:-10x}
REL=agent/event_bench_test.go
OUT=${OUT:-$(mktemp -d /tmp/event-bench-ab.XXXX)}
mkdir -p "$OUT"

src=${BENCH_FILE:-}
if [ -z "$src" ]; then
	for c in "$A/$REL" "$B/$REL"; do
		if [ -f "$c" ]; then src=$c; break; fi
	done
fi
[ -n "$src" ] && [ -f "$src" ] || { echo "no $REL to copy (set BENCH_FILE)" >&2; exit 1; }
for d in "$A" "$B"; do
	[ -d "$d/agent" ] || { echo "$d: no agent/ directory: not a romana checkout" >&2; exit 1; }
	if [ ! -f "$d/$REL" ]; then
		cp "$src" "$d/$REL"
		echo "copied $src to $d/$REL (untracked)" >&2
	fi
done
if ! cmp -s "$A/$REL" "$B/$REL"; then
	echo "warning: $A/$REL and $B/$REL differ" >&2
fi
# Compile both first, so a checkout that does not build fails before any run.
for d in "$A" "$B"; do
	(cd "$d" && go test -count=1 -run '^$' -bench '^$' ./agent >/dev/null) || { echo "$d: ./agent does not build or vet" >&2; exit 1; }
done

run() { # label dir
	local f="$OUT/$1.txt"
	{
		echo "# $1: $2 ($(git -C "$2" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$2" status --porcelain 2>/dev/null | grep -q . && echo ', dirty'))"
		echo "# go test -count=1 -run '^\$' -bench '$BENCH' -benchtime $BENCHTIME -timeout 60m ./agent"
		echo "# loadavg before: $(cat /proc/loadavg)"
		(cd "$2" && go test -count=1 -run '^$' -bench "$BENCH" -benchtime "$BENCHTIME" -timeout 60m ./agent) 2>&1
		echo "# loadavg after: $(cat /proc/loadavg)"
	} >"$f"
	grep -E '^(# loadavg|ok|FAIL|---)' "$f" | sed "s/^/[$1] /" >&2
	grep -q '^ok' "$f" || { echo "$1 failed; see $f" >&2; exit 1; }
}
echo "outputs in $OUT" >&2
run A1 "$A"
run B1 "$B"
run B2 "$B"
run A2 "$A"

echo "A = $A ($(git -C "$A" rev-parse --short HEAD 2>/dev/null || echo '?')), B = $B ($(git -C "$B" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "order A1 B1 B2 A2; go test -run '^\$' -bench '$BENCH' -benchtime $BENCHTIME ./agent; raw outputs in $OUT"
echo
python3 - "$OUT" <<'EOF'
import re, sys, os
out = sys.argv[1]
runs = ["A1", "B1", "B2", "A2"]
vals = {}   # (bench, unit) -> {run: value}
order = []
for r in runs:
    for line in open(os.path.join(out, r + ".txt")):
        m = re.match(r"^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$", line)
        if not m:
            continue
        fields = m.group(4).split()
        for v, unit in zip(fields[0::2], fields[1::2]):
            if unit == "ns/op":
                continue
            k = (m.group(1), unit)
            if k not in vals:
                vals[k] = {}
                order.append(k)
            vals[k][r] = float(v)
def fmt(x):
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"
print("| benchmark | metric | A1 | B1 | B2 | A2 | mean A | mean B | B/A |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for k in order:
    v = vals[k]
    a = [v[r] for r in ("A1", "A2") if r in v]
    b = [v[r] for r in ("B1", "B2") if r in v]
    ma = sum(a) / len(a) if a else None
    mb = sum(b) / len(b) if b else None
    ratio = f"{mb / ma:.2f}" if ma and mb is not None else "-"
    print(f"| {k[0].removeprefix('Benchmark')} | {k[1]} | " + " | ".join(fmt(v.get(r)) for r in runs) + f" | {fmt(ma)} | {fmt(mb)} | {ratio} |")
EOF
for r in A1 B1 B2 A2; do
	grep '^# loadavg' "$OUT/$r.txt" | sed "s/^# /$r /"
done
