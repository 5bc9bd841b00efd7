//! Background reliance (`biaslab backgrounds`, `pipeline::backgrounds`) on a tiny composed set: an untrained
//! run and a run trained for two steps, in process and through the binary.
mod common;

use std::path::Path;

use biaslab::analyze::backgrounds::{Probe, Variant};
use biaslab::pipeline::backgrounds::{
    backgrounds, matches_path, BackgroundsRequest, BACKGROUNDS_FILE,
};
use biaslab::pipeline::train::fitted_config;
use biaslab::pipeline::{train, Env, TrainRequest};
use biaslab::report::io::read_parquet;
use biaslab::train::Trainer;
use polars::prelude::*;
use tch::Device;

/// The composed fixtures under `<tmp>/data`, an untrained run at `<tmp>/untrained/run` and a run trained
/// for two steps at `<tmp>/trained` (on the composed object-centric train set).
fn setup(tmp: &Path) -> Env {
    let data = tmp.join("data");
    common::composed(&data);
    Trainer::new(common::tiny_train_config(), Device::Cpu)
        .unwrap()
        .save_checkpoint(&tmp.join("untrained").join("run"))
        .unwrap();
    let env = Env::cpu(&data, 2);
    let cfg = biaslab::train::TrainConfig {
        epochs: 1,
        warmup_epochs: 0,
        steps_per_epoch: 2,
        ..common::tiny_train_config()
    };
    let (config, _) = fitted_config(cfg, "test").unwrap();
    let req = TrainRequest {
        data: vec!["t-objects-train".into()],
        out: tmp.join("trained"),
        config,
        compare: None,
        resume: false,
        max_steps: Some(2),
        checkpoint_every: None,
        knn_train: None,
        knn_test: None,
        knn_test_fraction: 0.2,
        object_crops: false,
        max_images: None,
    };
    train(&env, &req, &mut ()).unwrap();
    env
}

fn f64s(df: &DataFrame, name: &str) -> Vec<Option<f64>> {
    let c = df.column(name).unwrap().cast(&DataType::Float64).unwrap();
    let c = c.f64().unwrap();
    (0..c.len()).map(|i| c.get(i)).collect()
}

fn strs(df: &DataFrame, name: &str) -> Vec<String> {
    let c = df.column(name).unwrap().str().unwrap();
    (0..c.len())
        .map(|i| c.get(i).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn backgrounds_stage_scores_every_variant_of_a_composed_set_per_run_and_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let mut req = BackgroundsRequest::new(
        vec![tmp.path().join("untrained/run"), tmp.path().join("trained")],
        "t-objects-test",
        &tmp.path().join("bg"),
    );
    req.train_data = Some("t-objects-train".into());
    req.batch_size = 8;
    req.seed = 5;
    let r = backgrounds(&env, &req, &mut ()).unwrap();
    eprintln!("{r:#?}");
    assert!(r.skipped.is_empty(), "composed images all have masks");
    assert!(r.scored >= 3, "{} scored images", r.scored);
    assert_eq!(r.size, 24, "the first run's largest training crop");
    // one row per run × variant × probe (Mixed-Same needs a second image of the label: present here)
    let variants = |run: &str, p: Probe| -> Vec<Variant> {
        r.rows
            .iter()
            .filter(|x| x.run == run && x.probe == p)
            .map(|x| x.variant)
            .collect()
    };
    for run in ["untrained", "trained"] {
        for p in Probe::ALL {
            assert_eq!(variants(run, p), Variant::ALL.to_vec(), "{run} {p:?}");
        }
    }
    assert_eq!(r.rows.len(), 2 * 5 * 2);
    for x in &r.rows {
        assert!((0.0..=1.0).contains(&x.accuracy), "{x:?}");
        assert!(
            x.accuracy_lo <= x.accuracy && x.accuracy <= x.accuracy_hi,
            "{x:?}"
        );
        if matches!(
            x.variant,
            Variant::Original | Variant::OnlyFg | Variant::OnlyBgT
        ) {
            assert_eq!(x.n_queries, r.scored);
        }
        // composed sets record each image's background in the index: the rate is measured
        let m = x.bg_match.expect("composed images name their background");
        assert_eq!(m.n, r.scored);
        assert!((0.0..=1.0).contains(&m.chance));
        let g = x.bg_gap.expect("some image has both mixed variants");
        assert!(g.lo <= g.gain && g.gain <= g.hi);
    }
    // the file holds the rows, number for number, with provenance
    let t = read_parquet(&req.out.join(BACKGROUNDS_FILE)).unwrap();
    assert_eq!(t.height(), r.rows.len());
    let acc = f64s(&t, "accuracy");
    for (i, x) in r.rows.iter().enumerate() {
        assert_eq!(acc[i], Some(x.accuracy));
    }
    assert_eq!(
        strs(&t, "variant")[..5],
        [
            "original",
            "only-fg",
            "only-bg-t",
            "mixed-same",
            "mixed-rand"
        ]
    );
    assert!(strs(&t, "train_data")
        .iter()
        .all(|s| s == "t-objects-train"));
    assert!(strs(&t, "dataset").iter().all(|s| s == "t-objects-test"));
    for c in [
        "run_dir",
        "step",
        "seed",
        "layer",
        "size",
        "bg_gap_lo",
        "bg_match_chance",
        "note",
    ] {
        assert!(t.column(c).is_ok(), "column {c}");
    }
    // per run, which images matched: the rate is their share, over the same images for both runs (so a
    // grid can pair a run's rate with its untrained network's, issue 20)
    let mut images = Vec::new();
    for run in ["untrained", "trained"] {
        let m = r
            .rows
            .iter()
            .find(|x| x.run == run)
            .unwrap()
            .bg_match
            .unwrap();
        let path = matches_path(&req.out, run);
        assert!(r.written.contains(&path), "{path:?} in {:?}", r.written);
        let t = read_parquet(&path).unwrap();
        assert_eq!(
            t.get_column_names()
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            ["image_id", "background", "matched"]
        );
        assert_eq!(t.height(), m.n);
        let hits = t.column("matched").unwrap().bool().unwrap().sum().unwrap() as f64;
        assert!((hits / m.n as f64 - m.rate).abs() < 1e-12, "{run}");
        images.push(strs(&t, "image_id"));
    }
    assert_eq!(images[0], images[1]);
    assert!(!images[0].iter().any(|i| i.is_empty()));
    let summary = std::fs::read_to_string(req.out.join("summary.md")).unwrap();
    assert!(summary.contains("## Background reliance"), "{summary}");
    assert!(summary.contains("BG-gap (knn)"), "{summary}");
    // the same request gives the same numbers (seeded donors, deterministic probes)
    let again = backgrounds(&env, &req, &mut ()).unwrap();
    assert_eq!(again.rows, r.rows);
}

#[test]
fn backgrounds_cli_lists_images_without_a_mask_and_exits_1_and_refuses_multi_label_scenes() {
    let tmp = tempfile::tempdir().unwrap();
    let _env = setup(tmp.path());
    let data = tmp.path().join("data");
    // a copy of the object-centric train set with one annotation's segmentation removed
    let src = data.join("t-objects-train");
    let dst = data.join("nomask");
    copy_dir(&src, &dst);
    let ann = dst.join("annotations.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ann).unwrap()).unwrap();
    json["annotations"][0]
        .as_object_mut()
        .unwrap()
        .remove("segmentation");
    std::fs::write(&ann, serde_json::to_string(&json).unwrap()).unwrap();
    let out = tmp.path().join("report");
    let untrained = tmp.path().join("untrained/run");
    let args = [
        "backgrounds",
        "--run",
        untrained.to_str().unwrap(),
        "--data",
        "nomask",
        "--train-data",
        "t-objects-train",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--threads",
        "2",
        "--batch-size",
        "8",
    ];
    let o = common::run_biaslab(&args, &[("BIASLAB_DATA", data.to_str().unwrap())]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("skipped"), "{stderr}");
    let skipped = read_parquet(&out.join("skipped.parquet")).unwrap();
    // every image of `nomask` is scored (the probes train on `t-objects-train`): the one is listed
    assert_eq!(skipped.height(), 1);
    let t = read_parquet(&out.join(BACKGROUNDS_FILE)).unwrap();
    assert_eq!(t.height() % 5, 0, "five variants per probe");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("mixed-rand"), "{stdout}");

    // scenes hold objects of several labels: no image qualifies
    let o = common::run_biaslab(
        &[
            "backgrounds",
            "--run",
            untrained.to_str().unwrap(),
            "--data",
            "t-scenes-test",
            "--out",
            tmp.path().join("scenes").to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &[("BIASLAB_DATA", data.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(stderr.contains("one label"), "{stderr}");
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}
