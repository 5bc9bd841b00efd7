//! End-to-end tests of the `biaslab` binary on generated data: compose a scene set, `train` SwAV with an
//! interruption (`--max-steps`) and `--resume`, `embed` object boxes, whole images and augmented views,
//! `analyze all`, `eval knn|linear` and the `invariance` table; plus
//! the errors a user meets first (unknown dataset, bad config, an existing run without `--resume`).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use biaslab::analyze::embeddings::{COL_PROTOTYPE, COL_SET_ID, COL_SPLIT};
use biaslab::data::coco::CocoDataset;
use biaslab::data::compose::ANNOTATIONS_FILE;
use biaslab::data::index::read_index;
use biaslab::report::io::read_parquet;
use biaslab::train::metrics::{COL_STEP, METRICS_FILE};
use polars::prelude::*;

mod common;
use common::{composed, fixtures};

/// A SwAV run small enough for a test: width-8 ResNet-18, 2×32 + 1×16 crops, 10 prototypes.
const SWAV_TOML: &str = r#"
method = "swav"
nmb_crops = [2, 1]
size_crops = [32, 16]
min_scale_crops = [0.3, 0.1]
max_scale_crops = [1.0, 0.3]
crops_for_assign = [0, 1]
nmb_prototypes = [10]
queue_length = 0
epochs = 2
batch_size = 8
warmup_epochs = 0
freeze_prototypes_niters = 1
width = 8
small_images = true
hidden_mlp = 32
feat_dim = 16
seed = 5
"#;

fn biaslab(args: &[&str], data: &Path) -> Output {
    common::run_biaslab(args, &[("BIASLAB_DATA", p(data))])
}

/// `biaslab embed --run RUN --data t-scenes-test --out OUT EXTRA…`, which must succeed.
fn embed_test_scenes(data: &Path, run: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "embed",
        "--run",
        p(run),
        "--data",
        "t-scenes-test",
        "--out",
        p(out),
    ];
    args.extend_from_slice(extra);
    let o = biaslab(&args, data);
    assert!(o.status.success(), "{}", text(&o));
}

/// `biaslab train --data DATASET --out RUN EXTRA…`; each test asserts the exit status it expects.
fn train(data: &Path, dataset: &str, run: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--data", dataset, "--out", p(run)];
    args.extend_from_slice(extra);
    biaslab(&args, data)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn train_interrupt_resume_embed_analyze() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    composed(&data);
    let train_dir = data.join("t-scenes-train");
    let n_train = read_index(&train_dir).unwrap().len();
    assert!(
        n_train >= 16,
        "{n_train} scene images: too few for two batches"
    );
    let steps_per_epoch = n_train / 8; // the loader drops the last partial batch, as SwAV's does

    // One image the loader cannot decode: training skips it and lists it, and still finishes.
    let first = read_index(&train_dir).unwrap()[0].path.clone();
    let broken: PathBuf = train_dir.join(&first);
    std::fs::write(&broken, b"not a jpeg at all").unwrap();

    let config = tmp.path().join("swav.toml");
    std::fs::write(&config, SWAV_TOML).unwrap();
    let run = tmp.path().join("run");

    // Interrupted after 2 steps: a checkpoint and a note on how to continue.
    let o = train(
        &data,
        "t-scenes-train",
        &run,
        &["--config", p(&config), "--max-steps", "2", "--threads", "2"],
    );
    // exit status 1: finished, but with an input skipped
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("stopped at step 2"), "{}", text(&o));
    assert!(run.join("latest").is_file());
    assert_eq!(read_parquet(&run.join(METRICS_FILE)).unwrap().height(), 2);

    // The same command again must not overwrite the run.
    let o = train(&data, "t-scenes-train", &run, &["--config", p(&config)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--resume"), "{}", text(&o));

    // Resume to the end: every step exactly once in the metrics.
    let o = train(
        &data,
        "t-scenes-train",
        &run,
        &["--resume", "--threads", "2"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let total = 2 * steps_per_epoch;
    assert!(
        text(&o).contains(&format!("done: {total} steps")),
        "{}",
        text(&o)
    );
    let metrics = read_parquet(&run.join(METRICS_FILE)).unwrap();
    let steps: Vec<i64> = metrics
        .column(COL_STEP)
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let expected: Vec<i64> = (0..total as i64).collect();
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "metrics steps after resume");
    let loss = metrics.column("loss").unwrap().f64().unwrap().clone();
    assert!(loss.into_no_null_iter().all(f64::is_finite));

    // The broken image is listed (path and reason) in skipped.parquet.
    let skipped = read_parquet(&run.join("skipped.parquet")).unwrap();
    assert!(skipped.height() >= 1);
    let paths: BTreeSet<String> = skipped
        .column("path")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    assert!(paths.contains(&broken.display().to_string()), "{paths:?}");

    // Object boxes of the held-out scenes: one row per COCO annotation, grouped by pasted cut-out.
    let test_dir = data.join("t-scenes-test");
    let coco = CocoDataset::read(&test_dir.join(ANNOTATIONS_FILE)).unwrap();
    let boxes = tmp.path().join("boxes.parquet");
    embed_test_scenes(&data, &run, &boxes, &["--crops", "boxes"]);
    let df = read_parquet(&boxes).unwrap();
    assert_eq!(df.height(), coco.annotations.len());
    assert_eq!(df.column(COL_SET_ID).unwrap().null_count(), 0);
    let protos: Vec<i32> = df
        .column(COL_PROTOTYPE)
        .unwrap()
        .i32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert!(protos.iter().all(|&k| (0..10).contains(&k)), "{protos:?}");
    let emb = biaslab::analyze::embeddings::read_embeddings(&boxes).unwrap();
    assert_eq!(emb.ids.len(), coco.annotations.len());

    // Two shards of the boxes: disjoint, and together the unsharded run.
    let mut sharded: Vec<(String, Vec<f32>)> = Vec::new();
    for shard in ["0/2", "1/2"] {
        let f = tmp.path().join(format!("shard{}.parquet", &shard[..1]));
        embed_test_scenes(&data, &run, &f, &["--crops", "boxes", "--shard", shard]);
        let e = biaslab::analyze::embeddings::read_embeddings(&f).unwrap();
        sharded.extend((0..e.len()).map(|i| (e.ids[i].clone(), e.row(i).to_vec())));
    }
    sharded.sort_by(|a, b| a.0.cmp(&b.0));
    let mut whole: Vec<(String, Vec<f32>)> = (0..emb.len())
        .map(|i| (emb.ids[i].clone(), emb.row(i).to_vec()))
        .collect();
    whole.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(sharded.len(), whole.len());
    for ((ia, va), (ib, vb)) in sharded.iter().zip(&whole) {
        assert_eq!(ia, ib);
        // another batch composition may change the last bits of a convolution, nothing more
        assert!(va.iter().zip(vb).all(|(a, b)| (a - b).abs() < 1e-4), "{ia}");
    }

    // Whole images with a split column.
    let images = tmp.path().join("images.parquet");
    embed_test_scenes(&data, &run, &images, &["--split", "test"]);
    let df = read_parquet(&images).unwrap();
    assert_eq!(df.height(), read_index(&test_dir).unwrap().len());
    let split = df.column(COL_SPLIT).unwrap().str().unwrap().clone();
    assert!(split.iter().all(|s| s == Some("test")));

    // Augmented views: `--views` rows per readable image, grouped by image; same seed, same bytes.
    let views = tmp.path().join("views.parquet");
    let views_again = tmp.path().join("views-again.parquet");
    for out in [&views, &views_again] {
        embed_test_scenes(
            &data,
            &run,
            out,
            &["--crops", "views", "--views", "3", "--seed", "9"],
        );
    }
    let v = biaslab::analyze::embeddings::read_embeddings(&views).unwrap();
    assert_eq!(v.ids.len(), 3 * read_index(&test_dir).unwrap().len());
    assert!(v.set_ids.iter().all(Option::is_some));
    assert!(read_parquet(&views)
        .unwrap()
        .equals_missing(&read_parquet(&views_again).unwrap()));

    // Every analysis over the boxes; 1 = an analysis did not apply (one dataset: no name-that-dataset).
    let report = tmp.path().join("report");
    let o = biaslab(
        &[
            "analyze",
            "all",
            "--embeddings",
            p(&boxes),
            "--seed",
            "0",
            "--out",
            p(&report),
        ],
        &data,
    );
    let code = o.status.code();
    assert!(code == Some(0) || code == Some(1), "{}", text(&o));
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(summary.contains("collapse"), "{summary}");
    // Issue 12: prototype usage is measured against the run's K (10), which embed writes beside the codes.
    let b = biaslab::analyze::embeddings::read_embeddings(&boxes).unwrap();
    assert!(b.n_prototypes.iter().all(|k| *k == Some(10)));
    let protos = read_parquet(&report.join("prototypes.parquet")).unwrap();
    assert_eq!(
        protos.column("n_prototypes").unwrap().i64().unwrap().get(0),
        Some(10)
    );
    assert_eq!(
        protos.column("k_source").unwrap().str().unwrap().get(0),
        Some("column n_prototypes")
    );

    // Frozen-feature evaluation, object-centric train → test: one result row each.
    let n_objects_test = read_index(&data.join("t-objects-test")).unwrap().len();
    for protocol in ["knn", "linear"] {
        let f = tmp.path().join(format!("{protocol}.parquet"));
        let o = biaslab(
            &[
                "eval",
                protocol,
                "--run",
                p(&run),
                "--train-data",
                "t-objects-train",
                "--test-data",
                "t-objects-test",
                "--out",
                p(&f),
            ],
            &data,
        );
        assert!(o.status.success(), "{}", text(&o));
        let df = read_parquet(&f).unwrap();
        assert_eq!(df.height(), 1);
        let acc = df
            .column("accuracy")
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
            .unwrap();
        assert!((0.0..=1.0).contains(&acc), "{protocol} accuracy {acc}");
        let n_test = df.column("n_test").unwrap().f64().unwrap().get(0).unwrap();
        assert_eq!(n_test as usize, n_objects_test, "{protocol}");
        // Chance and the 95% interval beside every accuracy.
        let get = |c: &str| df.column(c).unwrap().f64().unwrap().get(0).unwrap();
        assert!(
            get("accuracy_lo") <= acc && acc <= get("accuracy_hi"),
            "{protocol}"
        );
        assert!((0.0..=1.0).contains(&get("chance")), "{protocol}");
    }

    // Purushwalkam-style invariance table over synthesised transformations of the test objects.
    let inv = tmp.path().join("invariance");
    let o = biaslab(
        &[
            "invariance",
            "--run",
            p(&run),
            "--data",
            "t-objects-test",
            "--transforms",
            "occlusion,illumination-color,viewpoint",
            "--out",
            p(&inv),
        ],
        &data,
    );
    let code = o.status.code();
    assert!(code == Some(0) || code == Some(1), "{}", text(&o));
    let table = read_parquet(&inv.join("invariance.parquet")).unwrap();
    let transforms: BTreeSet<String> = table
        .column("transform")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = ["illumination-color", "occlusion", "viewpoint"]
        .map(String::from)
        .into();
    assert_eq!(transforms, expected);
    let scores = table.column("score").unwrap().f64().unwrap().clone();
    assert!(scores.iter().flatten().all(|s| (0.0..=100.0).contains(&s)));
}

#[test]
fn simclr_baseline_trains_from_flags_with_knn_after_every_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    composed(&data);
    let config = tmp.path().join("simclr.toml");
    std::fs::write(
        &config,
        "method = \"simclr\"\nnmb_crops = [2]\nsize_crops = [32]\nmin_scale_crops = [0.2]\n\
         max_scale_crops = [1.0]\ncrops_for_assign = [0, 1]\nwidth = 8\nsmall_images = true\n\
         hidden_mlp = 32\nfeat_dim = 16\nwarmup_epochs = 0\n",
    )
    .unwrap();
    let run = tmp.path().join("simclr");
    let o = train(
        &data,
        "t-scenes-train",
        &run,
        &[
            "--config",
            p(&config),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--knn-train",
            "t-objects-train",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("done:"), "{}", text(&o));
    let saved = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(saved.contains("\"simclr\""), "{saved}");
    // kNN after every epoch: accuracy against epoch and train seconds (the convergence curve).
    let knn = read_parquet(&run.join("knn_epochs.parquet")).unwrap();
    let epochs: Vec<u32> = knn
        .column("epoch")
        .unwrap()
        .u32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(epochs, vec![0, 1]);
    let secs: Vec<f64> = knn
        .column("train_seconds")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert!(secs[0] > 0.0 && secs[1] > secs[0], "{secs:?}");
    let acc = knn.column("accuracy").unwrap().f64().unwrap().clone();
    assert!(acc.into_no_null_iter().all(|a| (0.0..=1.0).contains(&a)));

    // Issue 12: a SimCLR run's prototypes are never trained: embed writes no codes and no K, and the
    // report has no prototype row for it.
    let emb = tmp.path().join("simclr.parquet");
    embed_test_scenes(&data, &run, &emb, &[]);
    let e = biaslab::analyze::embeddings::read_embeddings(&emb).unwrap();
    assert!(e.prototypes.iter().all(Option::is_none) && e.n_prototypes.iter().all(Option::is_none));
    let report = tmp.path().join("report");
    let o = biaslab(
        &[
            "analyze",
            "prototypes",
            "--embeddings",
            p(&emb),
            "--out",
            p(&report),
        ],
        &data,
    );
    // All-null codes are an absent column: the analysis is skipped by name (exit 1), no table is written.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!report.join("prototypes.parquet").exists());
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        summary.contains("prototypes skipped: needs column `prototype`"),
        "{summary}"
    );
}

#[test]
fn errors_name_the_input_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();

    let o = train(&data, "no-such-set", &tmp.path().join("r"), &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no-such-set"), "{}", text(&o));

    fixtures(&data);
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "nmb_crops = [2, 2]\nsize_crops = [32]\n").unwrap();
    let o = train(
        &data,
        "stamps",
        &tmp.path().join("r"),
        &["--config", p(&bad)],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("bad.toml") && t.contains("size_crops"), "{t}");

    let o = biaslab(
        &[
            "embed",
            "--run",
            p(&tmp.path().join("nothing")),
            "--data",
            "stamps",
            "--out",
            "x.parquet",
        ],
        &data,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("nothing"), "{}", text(&o));
}

#[test]
fn experiment_grid_runs_every_cell_and_resume_keeps_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    composed(&data);
    let spec = tmp.path().join("grid.toml");
    std::fs::write(
        &spec,
        r#"
name = "tiny"
description = "two data × two methods × two seeds, one epoch"
[grid]
data = ["t-objects-train", "t-scenes-train"]
method = ["swav", "simclr"]
crops = ["mc"]
seed = [0, 1]
[train]
epochs = 1
batch_size = 8
warmup_epochs = 0
nmb_prototypes = [10]
queue_length = 0
width = 8
small_images = true
hidden_mlp = 32
feat_dim = 16
[crops.mc]
nmb_crops = [2, 1]
size_crops = [32, 16]
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
untrained = true
"#,
    )
    .unwrap();
    let out = tmp.path().join("grid");
    let args = ["experiment", "run", p(&spec), "--out", p(&out)];
    let o = biaslab(&args, &data);
    assert!(o.status.success(), "{}", text(&o));

    let cells = read_parquet(&out.join("cells.parquet")).unwrap();
    // 8 grid cells + the untrained floor at each of the 2 seeds.
    assert_eq!(cells.height(), 10);
    let status: Vec<String> = cells
        .column("status")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    // SimCLR takes exactly two views: its three-crop cells do not apply, and say so.
    assert_eq!(
        status.iter().filter(|s| *s == "done").count(),
        6,
        "{status:?}"
    );
    assert_eq!(status.iter().filter(|s| *s == "not applicable").count(), 4);
    let md = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    assert!(md.contains("simclr uses exactly 2 views"), "{md}");
    // Issue 12: the untrained floor, chance and intervals in the table, and the same table as CSV and LaTeX.
    assert!(md.contains("| — | untrained | — | base | 2 |"), "{md}");
    assert!(
        md.contains("probe_chance") && md.contains("knn_accuracy"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.starts_with("data,method,crops,variant,seeds,")
            && header.contains("knn_accuracy,knn_accuracy_lo,knn_accuracy_hi"),
        "{header}"
    );
    assert_eq!(
        csv.lines().count(),
        1 + 3,
        "2 SwAV cell groups + the floor: {csv}"
    );
    let tex = std::fs::read_to_string(out.join("ablation.tex")).unwrap();
    assert!(
        tex.contains("\\toprule") && tex.contains("--- & untrained & ---"),
        "{tex}"
    );

    // Two seeds per (data, method, crops, variant): every metric is summarised over both.
    let ablation = read_parquet(&out.join("ablation_long.parquet")).unwrap();
    let metrics: BTreeSet<String> = ablation
        .column("metric")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    for m in [
        "collapse_index",
        "knn_accuracy",
        "invariance_occlusion_top10",
        "train_seconds",
    ] {
        assert!(metrics.contains(m), "{m} missing from {metrics:?}");
    }
    let n = ablation.column("n_seeds").unwrap().u32().unwrap().clone();
    assert!(n.iter().all(|v| v == Some(2)));

    // ablation.parquet is the table in wide form, keyed by `group`, which cells.parquet carries beside each
    // cell's `cell` (its directory): a notebook joins the three without parsing names.
    let wide = read_parquet(&out.join("ablation.parquet")).unwrap();
    let cells = read_parquet(&out.join("cells.parquet")).unwrap();
    let strs = |df: &polars::prelude::DataFrame, c: &str| -> Vec<String> {
        df.column(c)
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect()
    };
    for c in [
        "group",
        "knn_accuracy",
        "knn_accuracy_lo",
        "knn_accuracy_hi",
        "seeds",
    ] {
        assert!(
            wide.column(c).is_ok(),
            "{c} missing from {:?}",
            wide.get_column_names()
        );
    }
    let groups: BTreeSet<String> = strs(&wide, "group").into_iter().collect();
    assert!(groups.contains("untrained"), "{groups:?}");
    let status = strs(&cells, "status");
    for ((cell, group), status) in strs(&cells, "cell")
        .iter()
        .zip(strs(&cells, "group"))
        .zip(status)
    {
        // a cell that does not apply has a key but no directory and no row in the table
        if status == "not applicable" {
            continue;
        }
        assert!(out.join("cells").join(cell).is_dir(), "{cell}");
        assert!(
            cell.starts_with(&group) && groups.contains(&group),
            "{cell} {group} {groups:?}"
        );
    }

    // Same command again: refused, the experiment is kept.
    let o = biaslab(&args, &data);
    assert!(!o.status.success());
    assert!(text(&o).contains("--resume"), "{}", text(&o));

    // --resume: finished cells are not trained again (their logs do not grow).
    let log = out.join("cells/t-objects-train__swav__mc__base__seed0/run/train.log");
    let before = std::fs::read_to_string(&log).unwrap();
    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = biaslab(&resume, &data);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before);
    assert_eq!(
        read_parquet(&out.join("cells.parquet")).unwrap().height(),
        10
    );
}

#[test]
fn object_crops_train_on_the_coco_boxes_and_need_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    composed(&data);
    let config = tmp.path().join("swav.toml");
    std::fs::write(&config, SWAV_TOML).unwrap();
    let boxes = CocoDataset::read(&data.join("t-scenes-train").join(ANNOTATIONS_FILE))
        .unwrap()
        .annotations
        .len();
    let run = tmp.path().join("run");
    let o = train(
        &data,
        "t-scenes-train",
        &run,
        &["--object-crops", "--config", p(&config), "--max-steps", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    // one sample per object box, not per scene
    assert!(
        text(&o).contains(&format!("({boxes} images,")),
        "{}",
        text(&o)
    );

    let r2 = tmp.path().join("r2");
    let o = train(
        &data,
        "stamps",
        &r2,
        &["--object-crops", "--config", p(&config)],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("annotations.json"), "{}", text(&o));
}

/// Regression (found running the demo after issue 12): a SimCLR cell writes no prototype codes, so its
/// analysis has no prototypes table, and the grid runner failed the cell reading it. The cell must finish
/// with its collapse and probe numbers and no prototype number.
#[test]
fn experiment_simclr_cell_without_prototype_table_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    composed(&data);
    let spec = tmp.path().join("grid.toml");
    std::fs::write(
        &spec,
        r#"
name = "simclr-only"
[grid]
data = ["t-scenes-train"]
method = ["simclr"]
crops = ["two"]
seed = [0]
[train]
epochs = 1
batch_size = 8
warmup_epochs = 0
width = 8
small_images = true
hidden_mlp = 32
feat_dim = 16
[crops.two]
nmb_crops = [2]
size_crops = [32]
min_scale_crops = [0.3]
max_scale_crops = [1.0]
crops_for_assign = [0, 1]
[evaluate]
boxes = "t-scenes-test"
knn_train = "t-objects-train"
knn_test = "t-objects-test"
invariance = "t-objects-test"
transforms = ["occlusion"]
max_objects = 5
"#,
    )
    .unwrap();
    let out = tmp.path().join("grid");
    let o = biaslab(&["experiment", "run", p(&spec), "--out", p(&out)], &data);
    assert!(o.status.success(), "{}", text(&o));
    let cell = out.join("cells/t-scenes-train__simclr__two__base__seed0");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cell.join("cell.json")).unwrap()).unwrap();
    assert_eq!(json["status"], "done", "{json}");
    let metrics = json["metrics"].as_object().unwrap();
    for m in ["collapse_index", "rankme", "knn_accuracy"] {
        assert!(metrics.contains_key(m), "{m} missing: {json}");
    }
    assert!(!metrics.contains_key("perplexity_ratio"), "{json}");
    assert!(!cell.join("analysis/prototypes.parquet").exists());
    // The invariance table and plot name the run by its cell, not by the directory name `run`.
    let inv = read_parquet(&cell.join("invariance/invariance.parquet")).unwrap();
    let names: BTreeSet<String> = inv
        .column("dataset")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["t-scenes-train__simclr__two__base__seed0".to_string()])
    );
}

// A cell that skipped an unreadable training image is finished, says so, and the run exits 1 ("finished,
// but something was skipped"), as every other command does; a clean grid exits 0 (the tests above).
#[test]
fn experiment_cell_with_a_skipped_input_exits_one_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fixtures(&data);
    let spec = tmp.path().join("grid.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "skips"
[grid]
data = ["stamps"]
method = ["swav"]
crops = ["mc"]
seed = [0]
{train}{crops}"#,
            train = common::TINY_GRID_TRAIN,
            crops = common::TINY_TWO_VIEWS
        ),
    )
    .unwrap();
    let out = tmp.path().join("grid");
    let o = biaslab(&["experiment", "run", p(&spec), "--out", p(&out)], &data);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("1 with skipped inputs"), "{}", text(&o));
    let cells = read_parquet(&out.join("cells.parquet")).unwrap();
    let status = cells.column("status").unwrap().str().unwrap().get(0);
    assert_eq!(status, Some("done with skipped inputs"));
}
