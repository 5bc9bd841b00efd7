#!/usr/bin/env bash
# Prepares, on a CPU machine with network, what scripts/gpu-check.sh needs on a GPU machine without it:
#   gpu-bundle/biaslab.xz   the release binary, stripped and xz-compressed (the device tool carries ≤ 64 MiB);
#                           it is linked against PyTorch 2.11 and finds the GPU machine's copy at run time;
#   gpu-bundle/data/        two small real datasets as fetched (GCompris photos, memes: 399 images, ~33 MB).
# Then run the check with the bundle carried along, e.g. `run --carry gpu-bundle -- bash scripts/gpu-check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
make build
export BIASLAB_DATA=${BIASLAB_DATA:-$PWD/data}
target/release/biaslab datasets fetch gcompris-photos memes
out=gpu-bundle
rm -rf "$out"
mkdir -p "$out/data"
strip -o "$out/biaslab" target/release/biaslab
xz -T0 -6 "$out/biaslab"
for ds in gcompris-photos memes; do
    mkdir -p "$out/data/$ds"
    cp -r "$BIASLAB_DATA/$ds/images" "$BIASLAB_DATA/$ds/index.parquet" "$out/data/$ds/"
done
du -sh "$out"
