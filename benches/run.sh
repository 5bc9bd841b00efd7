#!/usr/bin/env bash
# `make bench`: side-by-side benchmarks that print ratios (never timed assertions: these machines are shared).
# 1. loader: biaslab vs torchvision DataLoader on the same folder, 2 workers each, SwAV 2×224 + 6×96 crops;
#    folder $BENCH_DIR, else the first fetched dataset under ./data (skipped when there is none);
# 2. one SwAV training step, tch vs PyTorch, same model, crops, batch and threads (examples/train_step.rs vs
#    benches/train_step.py), with the share of the step spent in Sinkhorn;
# 3. analyzer scale: collapse and spectrum on 20k and 200k synthetic crops × 128 dims, time and peak memory
#    (one process per run, so each peak is that run's own).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export LIBTORCH_USE_PYTORCH=1
ratio() { python3 -c "import sys; print(f'{sys.argv[1]} = {float(sys.argv[2]) / float(sys.argv[3]):.2f}x')" "$@"; }

DIR="${BENCH_DIR:-}"
if [[ -z "$DIR" ]]; then
  for d in data/mate-backgrounds data/tuxpaint-stamps data/memes; do
    if [[ -d "$d" ]]; then DIR="$d"; break; fi
  done
fi
if [[ -n "$DIR" && -d "$DIR" ]]; then
  EPOCHS="${BENCH_EPOCHS:-2}"
  echo "== loader on $DIR ($EPOCHS epochs, 2 workers each)"
  rust_out=$(cargo bench --bench loader --quiet -- "$DIR" "$EPOCHS" 2 | tail -n 1)
  echo "$rust_out"
  py_out=$("$PY" benches/loader_bench.py "$DIR" --epochs "$EPOCHS" --workers 2 | tail -n 1)
  echo "$py_out"
  rate() { sed -E 's/.*= ([0-9.]+) images\/s.*/\1/' <<<"$1"; }
  ratio "biaslab / torchvision images/s" "$(rate "$rust_out")" "$(rate "$py_out")"
else
  echo "== loader: skipped (set BENCH_DIR or fetch a dataset: biaslab datasets fetch mate-backgrounds)"
fi

echo "== SwAV training step (2 threads, batch 16, 2×32 + 2×16 px, width-16 ResNet-18)"
tch_out=$(cargo run --release --locked --quiet --example train_step -- 2 20 16 | tail -n 1)
echo "$tch_out"
torch_out=$("$PY" benches/train_step.py --threads 2 --steps 20 --batch 16 | tail -n 1)
echo "$torch_out"
ms() { sed -E 's/.*ms_per_step=([0-9.]+).*/\1/' <<<"$1"; }
ratio "tch / PyTorch time per step (target ≤ 1.05)" "$(ms "$tch_out")" "$(ms "$torch_out")"

echo "== analyzer scale (128 dims)"
for which in collapse spectrum; do
  for n in 20000 200000; do
    cargo bench --bench analyze --quiet -- "$which" "$n" 128 | tail -n 1
  done
done
