#!/usr/bin/env bash
# SwAV throughput and GPU memory at the paper's per-GPU setting (experiments/gpu-check.toml: ResNet-50,
# 2×224 + 6×96 crops, batch 64, fp16) on a GPU machine that has PyTorch 2.11 and no network. It runs the
# binary scripts/gpu-bundle.sh built on a CPU machine, against this machine's PyTorch, on the bundled real
# images, and prints images/s and peak GPU memory. Well under 10 minutes (the training is capped at 6).
#
# Environment: DEVICE (cuda), STEPS (48), BATCH (64), PYTHON (python3 with torch), OUT (results; $OUT of
# the device tool, else ./gpu-check-out). DEVICE=cpu STEPS=1 BATCH=4 runs the same path on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-48}
BATCH=${BATCH:-64}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-check-out}
bundle=gpu-bundle
mkdir -p "$OUT"
rm -rf "$OUT/run"
[ -f "$bundle/biaslab.xz" ] || { echo "gpu-check: no $bundle/biaslab.xz: run scripts/gpu-bundle.sh first" >&2; exit 2; }

torch_lib=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
echo "torch $torch_version at $torch_lib"
bin=$(mktemp -d)/biaslab
# python's lzma, so the check does not depend on xz being installed
"$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$bundle/biaslab.xz" "$bin"
chmod +x "$bin"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export BIASLAB_DATA=$PWD/$bundle/data
"$bin" devices | tee "$OUT/devices.txt"

# GPU memory in use, sampled every 200 ms while training; the peak minus the idle reading is the run's.
mem_log=$OUT/gpu-memory.csv
sampler=
if [ "$DEVICE" != cpu ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader,nounits | tee "$OUT/gpu.txt"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$mem_log" &
    sampler=$!
fi
rc=0
timeout 360 "$bin" train --data gcompris-photos --data memes --config experiments/gpu-check.toml \
    --device "$DEVICE" --batch-size "$BATCH" --max-steps "$STEPS" --threads "$(nproc)" \
    --out "$OUT/run" > "$OUT/train.out" 2>&1 || rc=$?
[ -n "$sampler" ] && kill "$sampler" 2> /dev/null || true
cat "$OUT/run/train.log" 2> /dev/null || tail -n 20 "$OUT/train.out"
# 1: finished with a skipped image (listed in the run); anything else is a failure
if [ "$rc" -gt 1 ]; then
    echo "gpu-check: training failed (exit $rc); see $OUT/train.out" >&2
    tail -n 20 "$OUT/train.out" >&2
    exit "$rc"
fi
{
    echo "device: $DEVICE, batch $BATCH, $STEPS steps, ResNet-50, 2x224 + 6x96, fp16 on CUDA"
    grep -h "^throughput" "$OUT/run/train.log" | tail -n 1
    if [ -s "$mem_log" ]; then
        sort -n "$mem_log" | awk 'NR == 1 { idle = $1 } { peak = $1 } END {
            printf "GPU memory: peak %d MiB in use, %d MiB above the idle reading\n", peak, peak - idle }'
    fi
} | tee "$OUT/summary.txt"
