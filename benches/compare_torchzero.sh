#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# zograd vs torchzero on the same machine: times torchzero's MeZO and SPSA steps (PyTorch, CPU)
# on the quadratic f(x) = sum(x^2) (as torch.dot(x, x), which reads x once like zograd's dot) for
# the same n as zograd's bench_report, runs the report on the current wgpu adapter, and prints
# the ratios per step and per loss evaluation (each side's evaluations per step are counted and
# shown). A tool for users and for BENCHMARKS.md; not part of CI.
#
#   benches/compare_torchzero.sh                  # n = 1e3 1e4 1e5 1e6 1.6e7 (a few minutes)
#   benches/compare_torchzero.sh --quick          # n up to 1e6
#   ZOGRAD_SKIP_REPORT=1 benches/compare_torchzero.sh   # reuse target/bench_report/steps.csv
#
# Environment:
#   VENV              the Python virtual environment (default: target/torchzero-venv); created with
#                     `python3 -m venv` and filled with torchzero 0.4.4, torch and scipy from PyPI
#                     on first use (torch from PyPI is a large download, several GB with its CUDA
#                     libraries; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to take
#                     the CPU-only wheel where that index is reachable)
#   PYTHON            the interpreter that creates the venv (default: python3)
#   TORCH_THREADS     torch.set_num_threads for the torchzero timings (default: torch's choice)
#   WGPU_BACKEND      passed through to zograd (vulkan, gl, metal, dx12)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench_report"
VENV="${VENV:-$ROOT/target/torchzero-venv}"
PYTHON="${PYTHON:-python3}"
TORCHZERO_VERSION="0.4.4"

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h|--help) sed -n '3,22p' "$0"; exit 0 ;;
        *) echo "compare_torchzero.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done
if [ "$quick" = 1 ]; then
    SIZES=(1000 10000 100000 1000000)
    REPORT_ARGS=(--quick)
else
    SIZES=(1000 10000 100000 1000000 16000000)
    REPORT_ARGS=()
fi

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'compare_torchzero.sh: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found (install Rust from https://rustup.rs)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python3)"

# --- the Python side ------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtual environment $VENV"
    "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
if ! "$VENV/bin/python" -c "import torchzero, torch, scipy" 2>/dev/null; then
    say "installing torchzero $TORCHZERO_VERSION, torch and scipy into $VENV (torch is large)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip || die "pip could not upgrade itself"
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        "$VENV/bin/python" -m pip install --index-url "$TORCH_INDEX_URL" torch \
            || die "installing torch from $TORCH_INDEX_URL failed"
    fi
    "$VENV/bin/python" -m pip install "torchzero==$TORCHZERO_VERSION" torch scipy \
        || die "pip install torchzero torch scipy failed (is PyPI reachable?)"
fi
"$VENV/bin/python" -c "import torchzero, torch, scipy" || die "the venv cannot import torchzero, torch and scipy"

mkdir -p "$OUT"
say "timing torchzero MeZO and SPSA steps on f(x) = sum(x^2), n = ${SIZES[*]}"
"$VENV/bin/python" benches/torchzero_steps.py ${TORCH_THREADS:+--threads "$TORCH_THREADS"} "${SIZES[@]}" \
    > "$OUT/torchzero.csv" || die "the torchzero timing failed (see above)"

# --- the zograd side ------------------------------------------------------------------------
if [ -n "${ZOGRAD_SKIP_REPORT:-}" ] && [ -f "$OUT/steps.csv" ]; then
    say "reusing $OUT/steps.csv (ZOGRAD_SKIP_REPORT is set)"
else
    say "running zograd's bench_report ${REPORT_ARGS[*]:-}"
    cargo run --release --example bench_report -- "${REPORT_ARGS[@]}" \
        || die "cargo run --release --example bench_report failed (is a wgpu adapter available? try WGPU_BACKEND=vulkan or gl)"
fi
[ -f "$OUT/steps.csv" ] || die "$OUT/steps.csv is missing"

# --- the comparison ---------------------------------------------------------------------------
say "comparison"
"$VENV/bin/python" - "$OUT/steps.csv" "$OUT/torchzero.csv" "$OUT/comparison.md" <<'PY'
import csv
import sys

zograd_csv, torch_csv, out_md = sys.argv[1:4]

def load(path):
    rows = {}
    with open(path) as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            evals = int(row.get("evaluations_per_step") or 0)
            rows[(int(row["n"]), row["method"])] = (float(row["seconds_per_step"]), evals)
    return rows

zg_rows, tz_rows = load(zograd_csv), load(torch_csv)
zg = {k: v[0] for k, v in zg_rows.items()}
tz = {k: v[0] for k, v in tz_rows.items()}

def fmt(s):
    return f"{s * 1e3:.3f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"

# Per step, each side pays its own evaluation count (torchzero's closure target evaluates f(x)
# once more after a central-difference estimate: 3 per MeZO/SPSA step against zograd's 2). The
# last column divides each side's time by its own evaluations, comparing the cost of one
# evaluation (perturb + loss + bookkeeping) alone.
lines = [
    "| n | zograd | time per step | evaluations | torchzero | time per step | evaluations | speed-up per step | speed-up per evaluation |",
    "|---|---|---|---|---|---|---|---|---|",
]
pairs = [
    ("mezo", "mezo", "mezo"),
    ("spsa1", "spsa1", "spsa1"),
    ("spsa16", "spsa16", "spsa16"),
    ("mezo", "spsa1", "mezo"),
    # Not like with like: a hand-written WGSL loss that evaluates both points in one pass over x
    # (BatchObjective), against torchzero's generic closure path. Shown for what fusing buys.
    ("mezo_virtual", "mezo", "mezo, hand-fused batched loss (not like with like)"),
]
sizes = sorted({n for n, _ in tz})
for n in sizes:
    for zm, tm, label in pairs:
        if (n, zm) in zg_rows and (n, tm) in tz_rows:
            (a, ea), (b, eb) = zg_rows[(n, zm)], tz_rows[(n, tm)]
            per_eval = f"{(b / eb) / (a / ea):.1f}x" if ea and eb else "-"
            lines.append(
                f"| {n} | {label} | {fmt(a)} | {ea} | {tm} | {fmt(b)} | {eb} | {b / a:.1f}x | {per_eval} |"
            )

targets = []
def check(label, ok_value, goal, higher_is_better=True):
    ok = ok_value >= goal if higher_is_better else ok_value <= goal
    targets.append(f"- {label}: {ok_value:.2f} (goal {'>=' if higher_is_better else '<='} {goal}) {'met' if ok else 'MISSED'}")

big = max(n for n, _ in tz)
if (big, "mezo") in zg and (big, "mezo") in tz:
    check(f"MeZo at n = {big}, closure loss: speed-up over torchzero MeZO", tz[(big, "mezo")] / zg[(big, "mezo")], 5)
if (big, "mezo") in zg and (big, "spsa1") in tz:
    check(f"MeZo at n = {big}, closure loss: speed-up over torchzero SPSA", tz[(big, "spsa1")] / zg[(big, "mezo")], 2)
if (big, "mezo_virtual") in zg and (big, "mezo") in tz:
    check(f"MeZo at n = {big}, hand-fused batched loss (BatchObjective): speed-up over torchzero MeZO's generic closure", tz[(big, "mezo")] / zg[(big, "mezo_virtual")], 10)
if (big, "mezo_virtual") in zg and (big, "floor") in zg:
    check(f"MeZo at n = {big}, virtual loss: time / memory-traffic floor", zg[(big, "mezo_virtual")] / zg[(big, "floor")], 1.3, higher_is_better=False)
if (1000, "mezo") in zg and (1000, "mezo") in tz:
    check("MeZo at n = 1000: zograd steps/s / torchzero steps/s", tz[(1000, "mezo")] / zg[(1000, "mezo")], 0.5)

text = "\n".join(lines) + "\n\nTargets (issue 6):\n" + "\n".join(targets) + "\n"
print(text)
with open(out_md, "w") as f:
    f.write(text)
print(f"wrote {out_md}", file=sys.stderr)
PY
