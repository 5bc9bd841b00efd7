#!/usr/bin/env bash
# Executes every notebook in notebooks/ against reports produced from fixtures, so the notebooks cannot rot.
# Fixture: a small embeddings Parquet with two "scenes" per image and a planted scene effect, analysed by the
# real binary; and a metrics.parquet shaped like the trainer's. Run by `make test` after the cargo tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BIN=target/release/biaslab
work=$(mktemp -d)
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT

"$PY" - "$work" <<'PY'
import sys, pathlib, random, math
import polars as pl
work = pathlib.Path(sys.argv[1])
rng = random.Random(7)
labels = ["fridge", "chair", "lamp", "dog"]
rows = []
dim = 16
centres = {l: [rng.gauss(0, 1) for _ in range(dim)] for l in labels}
for img in range(40):
    scene = [rng.gauss(0, 1) for _ in range(dim)]
    for j, l in enumerate(rng.sample(labels, 3)):
        v = [c + 0.8 * s + rng.gauss(0, 0.3) for c, s in zip(centres[l], scene)]
        rows.append(dict(id=f"im{img}#{j}", image_id=f"im{img}", label=l, dataset=f"fixture{img % 2}", kind="scene",
                         set_id=f"{l}-{img % 5}", prototype=rng.randrange(8), embedding=v))
df = pl.DataFrame(rows, schema_overrides={"prototype": pl.Int32, "embedding": pl.List(pl.Float32)})
df = df.with_columns(pl.lit(None, dtype=pl.Struct({"x": pl.Float32, "y": pl.Float32, "w": pl.Float32, "h": pl.Float32})).alias("bbox"))
df.write_parquet(work / "emb.parquet")
# Two experiment cells, each with its run in cells/<cell>/run as `experiment run` lays them out.
n = 30
for cell, slope in [("objects__swav__multicrop__base__seed0", 0.02), ("scenes__simclr__two-large__base__seed0", 0.01)]:
    run = work / "cells" / cell / "run"
    run.mkdir(parents=True)
    pl.DataFrame(dict(step=list(range(n)), epoch=[s // 10 for s in range(n)],
                      loss=[math.log(8) * (1 - slope * s) for s in range(n)],
                      loss_over_ln_k=[1 - slope * s for s in range(n)], lr=[0.01] * n,
                      proto_entropy=[1.5] * n, seconds=[0.1] * n)).write_parquet(run / "metrics.parquet")
    # kNN after every epoch: the newer file with its interval and chance, and an older one without them
    knn = dict(epoch=[0, 1, 2], step=[10, 20, 30], train_seconds=[1.0, 2.0, 3.0], accuracy=[0.3, 0.4 + slope, 0.5],
               n_train=[20] * 3, n_test=[20] * 3, knn_data=["fixture"] * 3)
    if slope > 0.015:
        knn.update(accuracy_lo=[0.2, 0.3, 0.4], accuracy_hi=[0.4, 0.5, 0.6], chance=[0.25] * 3)
    pl.DataFrame(knn, schema_overrides={"epoch": pl.UInt32, "step": pl.UInt64, "n_train": pl.UInt32,
                                        "n_test": pl.UInt32}).write_parquet(run / "knn_epochs.parquet")
PY

"$BIN" analyze all --embeddings "$work/emb.parquet" --out "$work/report" --seed 1 > "$work/analyze.log"
runs="$work/cells/objects__swav__multicrop__base__seed0/run,$work/cells/scenes__simclr__two-large__base__seed0/run"
export BIASLAB_REPORTS="$work/report" BIASLAB_RUNS="$runs" BIASLAB_FIGURES="$work/figures"
passed=0 failed=0
for nb in notebooks/*.ipynb; do
  if "$PY" -m nbconvert --to notebook --execute --output-dir "$work/executed" "$nb" > "$work/nb.log" 2>&1; then
    echo "notebook $nb: ok"; passed=$((passed + 1))
  else
    echo "notebook $nb: FAILED"; cat "$work/nb.log"; failed=$((failed + 1))
  fi
done
ls "$work/figures"
# Issue 12: the convergence figure has one series per cell, named by the cell (it labelled every run `run`).
for cell in objects__swav__multicrop__base__seed0 scenes__simclr__two-large__base__seed0; do
  if ! grep -q "$cell" "$work/executed/convergence.ipynb"; then
    echo "convergence notebook: no series named $cell"; failed=$((failed + 1))
  fi
done
# The kNN-against-wall-time figure is drawn from both cells' knn_epochs.parquet (one without intervals).
if [ ! -s "$work/figures/convergence_knn.png" ]; then
  echo "convergence notebook: no convergence_knn.png"; failed=$((failed + 1))
fi
echo "notebooks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
