//! The pipeline's stage functions called in process (no binary spawned): each on generated fixtures and a
//! tiny run saved by the library's own trainer.
mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use biaslab::analyze::embed::CropMode;
use biaslab::analyze::embeddings::read_embeddings;
use biaslab::pipeline::{embed, evaluate, EmbedRequest, Env, EvalRequest, Progress, Protocol};
use biaslab::report::io::read_parquet;
use biaslab::run_dir::EmbedLayer;
use biaslab::train::Trainer;
use common::fixtures;
use tch::Device;

/// Counts what a stage reports.
#[derive(Default)]
struct Counted {
    total: usize,
    done: usize,
}

impl Progress for Counted {
    fn start(&mut self, total: usize) {
        self.total += total;
    }
    fn advance(&mut self, n: usize) {
        self.done += n;
    }
}

/// Fixtures under `<tmp>/data` and an untrained (seeded) run saved at `<tmp>/run`.
fn setup(tmp: &Path) -> Env {
    let data = tmp.join("data");
    fixtures(&data);
    Trainer::new(common::tiny_train_config(), Device::Cpu)
        .unwrap()
        .save_checkpoint(&tmp.join("run"))
        .unwrap();
    Env::cpu(&data, 2)
}

fn request(tmp: &Path, out: &str) -> EmbedRequest {
    EmbedRequest {
        run: tmp.join("run"),
        dataset: "stamps".into(),
        crops: CropMode::Image,
        layer: EmbedLayer::Backbone,
        size: None,
        batch_size: 4,
        annotations: None,
        shard: None,
        split: Some("train".into()),
        out: tmp.join(out),
    }
}

#[test]
fn embed_stage_returns_rows_skips_and_k() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let req = request(tmp.path(), "all.parquet");
    let mut progress = Counted::default();
    let r = embed(&env, &req, &mut progress).unwrap();
    // 15 cut-outs read, the broken file skipped and listed beside the output
    assert_eq!((r.rows, r.skipped.len()), (15, 1));
    assert_eq!((progress.total, progress.done), (16, 16));
    assert!(r.skipped[0].path.ends_with("broken.png"));
    let listed = r.skipped_file.as_ref().unwrap();
    assert_eq!(read_parquet(listed).unwrap().height(), 1);
    // the run's largest crop and its K come from the run's config
    assert_eq!((r.size, r.n_prototypes), (24, Some(12)));
    let all = read_embeddings(&r.out).unwrap();
    assert_eq!(all.len(), 15);
    assert!(all.splits.iter().all(|s| s.as_deref() == Some("train")));
    assert!(all.n_prototypes.iter().all(|k| *k == Some(12)));

    // two shards hold the same rows as the whole, embedded alike
    let mut seen = 0;
    for i in 0..2 {
        let shard = EmbedRequest {
            shard: Some((i, 2)),
            ..request(tmp.path(), &format!("shard{i}.parquet"))
        };
        let s = embed(&env, &shard, &mut ()).unwrap();
        let part = read_embeddings(&s.out).unwrap();
        for (j, id) in part.ids.iter().enumerate() {
            let k = all.ids.iter().position(|a| a == id).unwrap();
            assert_eq!(part.row(j), all.row(k), "{id}");
        }
        seen += part.len();
    }
    assert_eq!(seen, all.len());
}

#[test]
fn embed_stage_refuses_shards_of_views_and_missing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let views = EmbedRequest {
        crops: CropMode::Views { n: 2, seed: 0 },
        shard: Some((0, 2)),
        ..request(tmp.path(), "v.parquet")
    };
    let err = embed(&env, &views, &mut ()).unwrap_err().to_string();
    assert!(err.contains("seeded by position"), "{err}");
    assert!(!tmp.path().join("v.parquet").exists());
    let missing = EmbedRequest {
        run: tmp.path().join("no-run"),
        ..request(tmp.path(), "m.parquet")
    };
    let err = embed(&env, &missing, &mut ()).unwrap_err().to_string();
    assert!(err.contains("no-run"), "{err}");
    // a raised stop flag ends the stage before any file is written
    let stop = Env {
        stop: Some(Arc::new(AtomicBool::new(true))),
        ..env.clone()
    };
    let req = request(tmp.path(), "s.parquet");
    let err = embed(&stop, &req, &mut ()).unwrap_err().to_string();
    assert!(err.contains("stopped after 0 of 16"), "{err}");
    assert!(!req.out.exists());
}

fn eval_request(tmp: &Path, protocol: Protocol, out: &str) -> EvalRequest {
    EvalRequest {
        protocol,
        run: tmp.join("run"),
        train_data: "stamps".into(),
        train_annotations: None,
        test_data: None,
        test_annotations: None,
        test_fraction: 0.4,
        crops: CropMode::Image,
        layer: EmbedLayer::Backbone,
        size: None,
        batch_size: 4,
        k: 5,
        seed: 1,
        out: tmp.join(out),
    }
}

/// The value of numeric column `name` in the one-row result file.
fn cell(path: &Path, name: &str) -> f64 {
    let df = read_parquet(path).unwrap();
    df.column(name)
        .unwrap()
        .as_materialized_series()
        .cast(&polars::prelude::DataType::Float64)
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap()
}

#[test]
fn evaluate_stage_returns_the_row_it_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    for (protocol, extra) in [(Protocol::Knn, "k"), (Protocol::Linear, "n_classes")] {
        let req = eval_request(tmp.path(), protocol, &format!("{extra}.parquet"));
        let mut progress = Counted::default();
        let r = evaluate(&env, &req, &mut progress).unwrap();
        // 15 readable images split by image into train and test; the broken one listed
        assert_eq!(r.n_train + r.n_test, 15, "{protocol:?}");
        assert_eq!(r.n_test, 6, "{protocol:?}: 40% of 15 images");
        assert_eq!((progress.total, progress.done), (16, 16));
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped_file.as_ref().unwrap().is_file());
        assert!(r.accuracy_lo <= r.accuracy && r.accuracy <= r.accuracy_hi);
        // the returned numbers are the file's
        for (name, v) in &r.columns {
            assert_eq!(cell(&r.out, name), *v, "{protocol:?} {name}");
        }
        assert_eq!(r.columns["accuracy"], r.accuracy);
        assert!(r.columns.contains_key(extra), "{protocol:?}");
        if protocol == Protocol::Knn {
            assert_eq!(r.columns["k"], 5.0);
        }
    }
    let views = EvalRequest {
        crops: CropMode::Views { n: 2, seed: 0 },
        ..eval_request(tmp.path(), Protocol::Knn, "v.parquet")
    };
    let err = evaluate(&env, &views, &mut ()).unwrap_err().to_string();
    assert!(err.contains("image or boxes"), "{err}");
}
