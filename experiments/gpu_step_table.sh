#!/usr/bin/env bash
# The "speed" issue's H100 table in one command: ResNet-50 + 8192-8192-8192 expander,
# bfloat16 model, 224 px, 256 view pairs per device. In order, each under `timeout`:
#   1. nvidia-smi and versions; imports everything the benchmarks need (stops if one fails)
#   2. benchmark_step.py, one pass vs two passes, JAX's compilation cache in an empty folder
#      (cold compile, pairs/s pipelined and blocking, augmentation share)
#   3. benchmark_step.py again, one pass, same cache (cached compile), then a jax.profiler
#      trace of a few steps
#   4. benchmark_loss.py at n=2048, d=8192, precisions highest and bf16_3x
#   5. summarize_trace.py on the trace of 3. (device time by kernel category and part)
# Everything is teed to $OUT/gpu_step_table.log ($OUT defaults to ./gpu_out); the perfetto
# trace and the step's HLO text (gzipped) are copied there when under the size limit.
# No network, no TensorFlow. The timeouts below add up to 530 s (8.8 min); an estimate
# (not a run) from the 44 s ResNet-50 compile measured on an H100 before puts it at 4-5.
#
# Wheels the device needs beyond jax, jaxlib, flax and their hard dependencies (optax and
# orbax-checkpoint among them), into the git-ignored .whl/ of the repository root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --abi cp312 --platform manylinux2014_x86_64 -d .whl \
#     ml_collections==1.1.0 safetensors==0.8.0
# Device command (repository root, with .whl carried along):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash experiments/gpu_step_table.sh
#
# Smoke test of the same sequence with tiny shapes on the CPU (a minute or two):
#   bash experiments/gpu_step_table.sh --smoke      (or SMOKE=1; PYTHON=... picks python)

set -u -o pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 1
PYTHON="${PYTHON:-python3}"
SMOKE="${SMOKE:-0}"
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
OUT="${OUT:-$ROOT/gpu_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_step_table.log"
: > "$LOG"
WORK="$(mktemp -d)"  # compilation cache and profile: large, not returned
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$ROOT"

# Seconds per command; a command still running then gets SIGTERM, and SIGKILL after
# KILL_AFTER_S more (an XLA autotuning run once hung past 500 s). In all 530 s, under the
# device tool's 600 s per command.
KILL_AFTER_S=10
NVIDIA_SMI_S=20
IMPORTS_S=45
COLD_S=240
WARM_S=120
LOSS_S=60
SUMMARY_S=25
MAX_RETURNED_BYTES=$((16 * 1024 * 1024))  # per file under $OUT

if [[ "$SMOKE" == 1 ]]; then
  export JAX_PLATFORMS=cpu
  MODEL=(--config configs/demo.py:tiny --batch_per_device 8)
  TIMING=(--steps 2 --rounds 2)
  PROFILE_STEPS=2
  LOSS_GRID=256x512
  LOSS_REPEATS=3
else
  MODEL=(--config configs/imagenet_resnet50.py:ep100 --arch resnet50
         --expander 8192-8192-8192 --dtype bfloat16 --image_size 224 --batch_per_device 256)
  TIMING=(--steps 10 --rounds 3)
  PROFILE_STEPS=3
  LOSS_GRID=2048x8192
  LOSS_REPEATS=20
fi

SUMMARY=()
log() { echo "$*" | tee -a "$LOG"; }

# run NAME SECONDS COMMAND...: runs COMMAND under timeout, teed to the log; records its status.
run() {
  local name="$1" limit="$2" start rc
  shift 2
  log ""
  log "=== $name (limit ${limit} s): $*"
  start=$SECONDS
  timeout -k "$KILL_AFTER_S" "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  [[ $rc == 124 || $rc == 137 ]] && log "=== $name: TIMED OUT after $limit s"
  SUMMARY+=("$(printf '%-26s rc %3d  %4d s' "$name" "$rc" $((SECONDS - start)))")
  return "$rc"
}

# copy_back FILE NAME: FILE into $OUT as NAME when it is under the size limit.
copy_back() {
  if [[ ! -f "$1" ]]; then
    log "not returned: $2 (not written)"
  elif (($(stat -c %s "$1") > MAX_RETURNED_BYTES)); then
    log "not returned: $2 ($(stat -c %s "$1") bytes, over $MAX_RETURNED_BYTES)"
  else
    cp "$1" "$OUT/$2" && log "returned: $OUT/$2"
  fi
}

log "gpu_step_table.sh  smoke=$SMOKE  $(date -u +%FT%TZ)  $(uname -n)  cpus $(nproc)"
if command -v nvidia-smi > /dev/null; then
  run "nvidia-smi" "$NVIDIA_SMI_S" nvidia-smi -L
  run "nvidia-smi query" "$NVIDIA_SMI_S" nvidia-smi \
    --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
else
  log "nvidia-smi: not found"
fi

if ! run "versions and imports" "$IMPORTS_S" "$PYTHON" - << 'EOF'
import importlib.metadata
import sys

import jax

print("python", sys.version.split()[0])
for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
             "ml_collections", "safetensors"):
  try:
    print(f"{dist} {importlib.metadata.version(dist)}")
  except importlib.metadata.PackageNotFoundError:
    print(f"{dist} (no metadata)")
print("backend", jax.default_backend(), jax.devices())
sys.path.insert(0, "experiments")
import benchmark_loss, benchmark_step, summarize_trace  # noqa: E401,F401  (vicreg_jax too)
print("imports ok")
EOF
then
  log "stopping: a package is missing (see above); add its wheel to .whl/"
  exit 1
fi

CACHE="$WORK/xla_cache"
PROFILE="$WORK/profile"
run "step, cold cache" "$COLD_S" "$PYTHON" experiments/benchmark_step.py "${MODEL[@]}" \
  "${TIMING[@]}" --view_batching one_pass,two_pass --compilation_cache_dir "$CACHE"
run "step, warm cache + profile" "$WARM_S" "$PYTHON" experiments/benchmark_step.py \
  "${MODEL[@]}" "${TIMING[@]}" --view_batching one_pass --compilation_cache_dir "$CACHE" \
  --profile_dir "$PROFILE" --profile_steps "$PROFILE_STEPS"
run "loss" "$LOSS_S" "$PYTHON" experiments/benchmark_loss.py --grid "$LOSS_GRID" \
  --precision highest,bf16_3x --repeats "$LOSS_REPEATS"
run "profile summary" "$SUMMARY_S" "$PYTHON" experiments/summarize_trace.py "$PROFILE"

log ""
copy_back "$(find "$PROFILE" -name perfetto_trace.json.gz 2> /dev/null | sort | tail -n 1)" \
  perfetto_trace.json.gz
HLO="$(find "$PROFILE" -maxdepth 1 -name '*.hlo.txt' 2> /dev/null | head -n 1)"
if [[ -n "$HLO" ]]; then
  gzip -c "$HLO" > "$WORK/step.hlo.txt.gz"
  copy_back "$WORK/step.hlo.txt.gz" "$(basename "$HLO").gz"
fi
log ""
log "=== summary (rc 124/137: timed out)"
for line in "${SUMMARY[@]}"; do log "$line"; done
rm -rf "$WORK"
