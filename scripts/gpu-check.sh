#!/usr/bin/env bash
# The GPU check: install the GPU kit (`make gpu-kit`) beside the machine's own torch, train a
# few small cells and check the values their records hold (scripts/gpu_check.py says which).
#
#   scripts/gpu-check.sh [OUT_DIR]         on a CUDA machine (sized for ~4 min)
#   scripts/gpu-check.sh --cpu [OUT_DIR]   the CPU rehearsal (or BENCH_CHECK_DEVICE=cpu): the
#                                          same install, imports, one tiny cell and parity;
#                                          the GPU-only checks say "skipped: no CUDA"
#
# OUT_DIR (default: $OUT where it is set, else runs/gpu-check) receives checks.txt,
# checks.json and records.tar.gz; cells run in $BENCH_CHECK_WORK (default: /tmp/bench-gpu-check
# under $OUT, so only those files come back; else OUT_DIR/work). The kit is $BENCH_KIT
# (default gpu-kit/): its wheels go into a --target folder with
#   pip install --no-index --find-links KIT/wheels --no-deps --target TARGET <its wheels>
# (never torch, triton, numpy or NVIDIA's libraries), and every process of the check sees
# PYTHONPATH=TARGET:REPO and BENCH_ASSETS=KIT/assets. PY names the interpreter (default: the
# project's .venv where there is one, else python3: on a GPU machine, the one with its torch).
# Exit status 1 when any check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE="${BENCH_CHECK_DEVICE:-cuda}"
if [ "${1:-}" = "--cpu" ]; then DEVICE=cpu; shift; fi
if [ -n "${1:-}" ]; then OUT_DIR="$1"; else OUT_DIR="${OUT:-runs/gpu-check}"; fi
if [ -n "${OUT:-}" ] && [ "$OUT_DIR" = "$OUT" ]; then DEFAULT_WORK=/tmp/bench-gpu-check; else DEFAULT_WORK="$OUT_DIR/work"; fi
WORK="${BENCH_CHECK_WORK:-$DEFAULT_WORK}"
KIT="${BENCH_KIT:-gpu-kit}"
TARGET="${BENCH_KIT_TARGET:-$WORK/site}"
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p "$OUT_DIR" "$WORK"
KIT="$(cd "$(dirname "$KIT")" 2>/dev/null && pwd)/$(basename "$KIT")"
export BENCH_ASSETS="${BENCH_ASSETS:-$KIT/assets}"
export PYTHONPATH="$TARGET:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 DS_BUILD_OPS=0
if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
fi
"$PY" scripts/gpu_check.py --device "$DEVICE" --kit "$KIT" --out "$OUT_DIR" --work "$WORK" \
  --target "$TARGET" 2>&1 | tee "$OUT_DIR/gpu-check.log"
