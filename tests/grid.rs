//! The grid runner called in process: a tiny grid on composed fixtures, its cells' statuses, numbers that
//! come from the stages' results and are the ones cells.parquet holds, a cell whose training data has an
//! unreadable file, cells that do not apply, and a resume that keeps finished cells.
mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use biaslab::experiment::{Cell, CellResult, CellStatus, ExperimentSpec};
use biaslab::pipeline::grid::{run_grid, GridProgress, GridRequest, CELL_FILE};
use biaslab::pipeline::Env;
use biaslab::report::io::read_parquet;
use polars::prelude::*;

/// The tiny grid, its `[train]` table the shared one.
fn grid_toml() -> String {
    format!(
        r#"
name = "tiny"
description = "stamps (one unreadable file) and composed objects × two methods, one epoch"
[grid]
data = ["stamps", "t-objects-train"]
method = ["swav", "simclr"]
crops = ["mc"]
seed = [0]
{train}[crops.mc]
nmb_crops = [2, 1]
size_crops = [24, 16]
min_scale_crops = [0.3, 0.1]
max_scale_crops = [1.0, 0.3]
crops_for_assign = [0, 1]
[evaluate]
boxes = "t-scenes-test"
knn_train = "t-objects-train"
knn_test = "t-objects-test"
invariance = "t-objects-test"
transforms = ["occlusion"]
max_objects = 5
backgrounds = "t-objects-test"
backgrounds_train = "t-objects-train"
"#,
        train = common::TINY_GRID_TRAIN
    )
}

/// Cells as they finish.
#[derive(Default)]
struct Seen(Mutex<Vec<(usize, usize, String)>>);

impl GridProgress for Seen {
    fn cell_done(&self, finished: usize, total: usize, cell: &Cell, _r: &CellResult) {
        self.0.lock().unwrap().push((finished, total, cell.id()));
    }
}

fn find<'a>(cells: &'a [CellResult], data: &str, method: &str) -> &'a CellResult {
    cells
        .iter()
        .find(|c| c.data == data && c.method == method)
        .unwrap()
}

/// cells.parquet's row of (data, method): column → value, nulls left out.
fn parquet_row(df: &DataFrame, data: &str, method: &str) -> BTreeMap<String, AnyValue<'static>> {
    let i = (0..df.height())
        .find(|&i| {
            df.column("data").unwrap().str().unwrap().get(i) == Some(data)
                && df.column("method").unwrap().str().unwrap().get(i) == Some(method)
        })
        .unwrap();
    df.materialized_column_iter()
        .map(|c| (c.name().to_string(), c.get(i).unwrap().into_static()))
        .filter(|(_, v)| !v.is_null())
        .collect()
}

#[test]
fn grid_runner_measures_cells_reports_skips_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::composed(&data);
    let file = tmp.path().join("grid.toml");
    std::fs::write(&file, grid_toml()).unwrap();
    let req = GridRequest {
        spec: ExperimentSpec::read(&file).unwrap(),
        file: file.clone(),
        out: tmp.path().join("grid"),
        resume: false,
        jobs: 1,
    };
    let env = Env::cpu(&data, 2);
    let seen = Seen::default();
    let r = run_grid(&env, &req, &seen).unwrap();
    assert!(!r.interrupted);
    assert_eq!(r.cells.len(), 4);
    assert_eq!(seen.0.lock().unwrap().len(), 4);
    assert!(seen
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|(_, total, _)| *total == 4));

    // stamps holds a truncated PNG: its cell is measured and says it skipped an input
    let stamps = find(&r.cells, "stamps", "swav");
    assert_eq!(stamps.status, CellStatus::DoneWithSkips, "{stamps:?}");
    assert_eq!(stamps.skipped_inputs, 1);
    let objects = find(&r.cells, "t-objects-train", "swav");
    assert_eq!(objects.status, CellStatus::Done, "{objects:?}");
    assert_eq!(objects.skipped_inputs, 0);
    // SimCLR takes two views: its three-crop cells do not apply, and say why
    for d in ["stamps", "t-objects-train"] {
        let c = find(&r.cells, d, "simclr");
        assert_eq!(c.status, CellStatus::NotApplicable);
        assert!(c.reason.as_deref().unwrap().contains("2 views"), "{c:?}");
        assert!(c.metrics.is_empty());
    }
    assert_eq!(
        (
            r.count(CellStatus::Done),
            r.count(CellStatus::DoneWithSkips),
            r.count(CellStatus::NotApplicable)
        ),
        (1, 1, 2)
    );

    // every stage's numbers are in the measured cells
    for c in [stamps, objects] {
        for m in [
            "final_loss_over_ln_k",
            "train_seconds",
            "collapse_index",
            "delta_scene",
            "delta_cat_lo",
            // the composed scenes have masks: context control runs in every cell (issue 20)
            "delta_scene_object_only",
            "context_delta_scene",
            "context_delta_scene_hi",
            "instance_at_1",
            // background reliance (Xiao et al.): every variant, the gap and the match rate
            "bg_original_knn",
            "bg_mixed_rand_linear_hi",
            "bg_gap_knn",
            "bg_gap_linear_lo",
            "bg_match",
            "bg_match_chance",
            "rankme",
            "knn_accuracy",
            "linear_accuracy",
            "probe_chance",
            "invariance_occlusion_top10",
        ] {
            assert!(
                c.metrics.contains_key(m),
                "{m} missing from {:?}",
                c.metrics
            );
        }
    }
    // the kNN number is the eval stage's row, as its file holds it
    let knn = read_parquet(
        &req.out
            .join("cells")
            .join("t-objects-train__swav__mc__base__seed0")
            .join("knn.parquet"),
    )
    .unwrap();
    let acc = knn.column("accuracy").unwrap().f64().unwrap().get(0);
    assert_eq!(acc, Some(objects.metrics["knn_accuracy"]));

    // cells.parquet holds the returned numbers, its status text and the skip count
    let cells = read_parquet(&req.out.join("cells.parquet")).unwrap();
    assert_eq!(cells.height(), 4);
    for c in &r.cells {
        let row = parquet_row(&cells, &c.data, &c.method);
        assert_eq!(
            row["status"],
            AnyValue::String(c.status.as_str()).into_static()
        );
        assert_eq!(
            row["skipped_inputs"],
            AnyValue::UInt32(c.skipped_inputs as u32)
        );
        for (m, v) in &c.metrics {
            assert_eq!(row[m.as_str()], AnyValue::Float64(*v), "{} {m}", c.data);
        }
        // the cell's key and its group (the key without its seed), beside the axes
        assert_eq!(row["cell"], AnyValue::String(&c.cell).into_static());
        assert_eq!(row["group"], AnyValue::String(&c.group()).into_static());
        let metric_columns = row.len() - 9 - usize::from(row.contains_key("reason"));
        assert_eq!(metric_columns, c.metrics.len(), "{row:?}");
    }
    let status: Vec<&str> = cells
        .column("status")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert!(status.contains(&"done with skipped inputs") && status.contains(&"not applicable"));
    let md = std::fs::read_to_string(req.out.join("ablation.md")).unwrap();
    assert_eq!(md, r.markdown);
    assert!(md.contains("## Cells with skipped inputs"), "{md}");
    assert!(
        md.contains("- stamps / swav / mc / base / seed 0: 1 unreadable file(s)"),
        "{md}"
    );
    assert!(md.contains("## Cells without results"), "{md}");

    // a second run without resume is refused; with it, finished cells are kept, not trained again
    assert!(run_grid(&env, &req, &()).is_err());
    let log = req
        .out
        .join("cells/stamps__swav__mc__base__seed0/run/train.log");
    let before = std::fs::read_to_string(&log).unwrap();
    // the objects cell's cell.json as the version before the skip count wrote it
    let json = req
        .out
        .join("cells/t-objects-train__swav__mc__base__seed0")
        .join(CELL_FILE);
    let mut old: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    old.as_object_mut()
        .unwrap()
        .remove("skipped_inputs")
        .unwrap();
    std::fs::write(&json, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    let resumed = run_grid(
        &env,
        &GridRequest {
            resume: true,
            ..req.clone()
        },
        &(),
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before);
    // kept as cell.json holds them (serde_json's default float parser may miss a written value by an ulp)
    for (a, b) in resumed.cells.iter().zip(&r.cells) {
        assert_eq!(
            (&a.data, &a.method, a.status, a.skipped_inputs),
            (&b.data, &b.method, b.status, b.skipped_inputs)
        );
        assert_eq!(a.metrics.len(), b.metrics.len());
        for (m, v) in &b.metrics {
            assert!((a.metrics[m] - v).abs() <= 1e-12 * v.abs().max(1.0), "{m}");
        }
    }
    assert!(resumed.markdown.contains("## Cells with skipped inputs"));
}

/// `knn_every_epoch` holds out the grid's own `test_fraction`: the last epoch's kNN row (with its Wilson
/// interval and chance) is the cell's final kNN accuracy, measured on the same images. The probes keep their
/// per-query predictions, and the trained cell's gain over its seed's untrained cell is their paired
/// difference.
#[test]
fn per_epoch_knn_uses_the_grids_held_out_share_and_gains_are_paired() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::composed(&data);
    let file = tmp.path().join("grid.toml");
    let toml = format!(
        r#"
name = "curve"
description = "one SwAV cell with kNN after every epoch"
[grid]
data = ["t-objects-train"]
method = ["swav"]
crops = ["mc"]
seed = [0]
{train}{crops}[evaluate]
untrained = true
knn_train = "t-objects-train"
test_fraction = 0.5
knn_every_epoch = true
backgrounds = "t-objects-test"
backgrounds_train = "t-objects-train"
"#,
        train = common::TINY_GRID_TRAIN,
        crops = common::TINY_TWO_VIEWS
    );
    std::fs::write(&file, toml).unwrap();
    let req = GridRequest {
        spec: ExperimentSpec::read(&file).unwrap(),
        file,
        out: tmp.path().join("grid"),
        resume: false,
        jobs: 1,
    };
    let r = run_grid(&Env::cpu(&data, 2), &req, &()).unwrap();
    let cell = find(&r.cells, "t-objects-train", "swav");
    let floor = find(&r.cells, "t-objects-train", "untrained");
    assert_eq!(cell.status, CellStatus::Done, "{cell:?}");
    let dir = req.out.join("cells/t-objects-train__swav__mc__base__seed0");
    let run = dir.join("run");
    let knn = read_parquet(&run.join("knn_epochs.parquet")).unwrap();
    let last = knn.height() - 1;
    let get = |c: &str| knn.column(c).unwrap().f64().unwrap().get(last).unwrap();
    assert_eq!(get("accuracy"), cell.metrics["knn_accuracy"]);
    assert_eq!(get("accuracy_lo"), cell.metrics["knn_accuracy_lo"]);
    assert_eq!(get("accuracy_hi"), cell.metrics["knn_accuracy_hi"]);
    assert_eq!(get("chance"), cell.metrics["probe_chance"]);
    // half of the images are queries, half the bank (not the CLI's default fifth)
    let n = |c: &str| knn.column(c).unwrap().u32().unwrap().get(last).unwrap() as i64;
    assert!((n("n_test") - n("n_train")).abs() <= 1, "{knn}");

    // per-query predictions beside each probe's row; the gain is the paired difference on the same queries
    for probe in ["knn", "linear"] {
        let preds = read_parquet(&dir.join(format!("{probe}.predictions.parquet"))).unwrap();
        assert_eq!(
            preds
                .get_column_names()
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            ["id", "image_id", "label", "predicted", "correct"]
        );
        let right = preds
            .column("correct")
            .unwrap()
            .bool()
            .unwrap()
            .sum()
            .unwrap() as f64;
        let acc = format!("{probe}_accuracy");
        assert!((right / preds.height() as f64 - cell.metrics[&acc]).abs() < 1e-12);
        let gain = cell.metrics[&format!("{probe}_gain")];
        assert!((gain - (cell.metrics[&acc] - floor.metrics[&acc])).abs() < 1e-12);
        let (lo, hi) = (
            cell.metrics[&format!("{probe}_gain_lo")],
            cell.metrics[&format!("{probe}_gain_hi")],
        );
        assert!(lo <= gain && gain <= hi, "{lo} {gain} {hi}");
        assert!(!floor.metrics.contains_key(&format!("{probe}_gain")));
    }
    // the background-match rate likewise, paired over the same images (each cell's matches file)
    let gain = cell.metrics["bg_match_gain"];
    assert!((gain - (cell.metrics["bg_match"] - floor.metrics["bg_match"])).abs() < 1e-12);
    let (lo, hi) = (
        cell.metrics["bg_match_gain_lo"],
        cell.metrics["bg_match_gain_hi"],
    );
    assert!(lo <= gain && gain <= hi, "{lo} {gain} {hi}");
    assert!(!floor.metrics.contains_key("bg_match_gain"));
    assert!(dir
        .join("backgrounds/matches-t-objects-train__swav__mc__base__seed0.parquet")
        .is_file());
    let md = std::fs::read_to_string(req.out.join("ablation.md")).unwrap();
    assert!(md.contains("knn_gain"), "{md}");
    assert!(md.contains("bg_match_gain"), "{md}");
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    // hostile bytes in the floor's kNN predictions: that gain is left out with a note naming the file, the
    // table is still written, and the linear gain is still there
    let broken = req
        .out
        .join("cells/untrained__seed0/knn.predictions.parquet");
    std::fs::write(&broken, b"PAR1 not parquet").unwrap();
    let again = run_grid(
        &Env::cpu(&data, 2),
        &GridRequest {
            resume: true,
            ..req.clone()
        },
        &(),
    )
    .unwrap();
    let cell = find(&again.cells, "t-objects-train", "swav");
    assert!(!cell.metrics.contains_key("knn_gain"));
    assert!(cell.metrics.contains_key("linear_gain"));
    assert_eq!(again.notes.len(), 1, "{:?}", again.notes);
    assert!(
        again.notes[0].contains("knn.predictions.parquet")
            && again.notes[0].contains("no knn_gain"),
        "{:?}",
        again.notes
    );
    assert!(req.out.join("ablation.md").is_file());
}
