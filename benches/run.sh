#!/usr/bin/env bash
# `make bench`: the loader benchmark, biaslab vs torchvision on the same folder, 2 workers each (SwAV 2×224 +
# 6×96 multi-crop). Folder: $BENCH_DIR, else the first fetched dataset found under ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${BENCH_DIR:-}"
if [[ -z "$DIR" ]]; then
  for d in data/mate-backgrounds data/tuxpaint-stamps data/memes; do
    if [[ -d "$d" ]]; then DIR="$d"; break; fi
  done
fi
if [[ -z "$DIR" || ! -d "$DIR" ]]; then
  echo "no benchmark folder: set BENCH_DIR or fetch a dataset (biaslab datasets fetch mate-backgrounds)" >&2
  exit 2
fi
EPOCHS="${BENCH_EPOCHS:-2}"
PY="${PYTHON:-.venv/bin/python}"
export LIBTORCH_USE_PYTORCH=1
echo "loader benchmark on $DIR ($EPOCHS epochs, 2 workers each)"
rust_out=$(cargo bench --bench loader --quiet -- "$DIR" "$EPOCHS" 2 | tail -n 1)
echo "$rust_out"
py_out=$("$PY" benches/loader_bench.py "$DIR" --epochs "$EPOCHS" --workers 2 | tail -n 1)
echo "$py_out"
rate() { sed -E 's/.*= ([0-9.]+) images\/s.*/\1/' <<<"$1"; }
python3 -c "import sys; r, p = float(sys.argv[1]), float(sys.argv[2]); print(f'biaslab / torchvision = {r / p:.2f}x')" \
  "$(rate "$rust_out")" "$(rate "$py_out")"
