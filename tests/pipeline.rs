//! The pipeline's stage functions called in process (no binary spawned): each on generated fixtures and a
//! tiny run saved by the library's own trainer.
mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use biaslab::analyze::embed::CropMode;
use biaslab::analyze::embeddings::read_embeddings;
use biaslab::analyze::invariance_sets::Transform;
use biaslab::pipeline::train::{fitted_config, KNN_FILE, LOG_FILE};
use biaslab::pipeline::{
    embed, evaluate, invariance, train, EmbedRequest, Env, EvalRequest, InvarianceRequest,
    Progress, Protocol, TrainRequest,
};
use biaslab::report::io::read_parquet;
use biaslab::run_dir::EmbedLayer;
use biaslab::train::Trainer;
use common::fixtures;
use tch::Device;

/// Counts what a stage reports, and keeps its log lines.
#[derive(Default)]
struct Counted {
    total: usize,
    done: usize,
    lines: Vec<String>,
}

impl Progress for Counted {
    fn start(&mut self, total: usize) {
        self.total += total;
    }
    fn advance(&mut self, n: usize) {
        self.done += n;
    }
    fn line(&mut self, text: &str) {
        self.lines.push(text.to_string());
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

fn train_request(tmp: &Path, epochs: usize) -> TrainRequest {
    let cfg = biaslab::train::TrainConfig {
        epochs,
        warmup_epochs: 0,
        ..common::tiny_train_config()
    };
    let (config, _) = fitted_config(cfg, "test").unwrap();
    TrainRequest {
        data: vec!["stamps".into()],
        out: tmp.join("trained"),
        config,
        compare: None,
        resume: false,
        max_steps: None,
        checkpoint_every: None,
        knn_train: Some("stamps".into()),
        knn_test: None,
        knn_test_fraction: 0.2,
        object_crops: false,
        max_images: None,
    }
}

#[test]
fn train_stage_returns_steps_loss_knn_and_skips_and_resumes_after_a_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let req = train_request(tmp.path(), 2);
    // A raised stop flag: the run checkpoints before its first step and says it was stopped.
    let stopped = Env {
        stop: Some(Arc::new(AtomicBool::new(true))),
        ..env.clone()
    };
    let r = train(&stopped, &req, &mut ()).unwrap();
    assert!(r.signalled && r.interrupted && !r.resumed, "{r:?}");
    assert_eq!(r.step, 0);
    assert!(r.final_loss_over_ln_k.is_none());
    let met_before_the_stop = r.skipped.len();

    // Resumed without the flag: both epochs, 16 samples (the broken one among them) in batches of 6.
    let resume = TrainRequest {
        resume: true,
        ..req.clone()
    };
    let mut progress = Counted::default();
    let r = train(&env, &resume, &mut progress).unwrap();
    assert!(r.resumed && !r.interrupted && !r.signalled, "{r:?}");
    assert_eq!((r.steps_per_epoch, r.images), (2, 16));
    assert_eq!(r.step, 4);
    assert_eq!(r.epochs.len(), 2);
    assert_eq!((progress.total, progress.done), (4, 4));
    // the broken file is met once per epoch: one file, two skips, appended to the run's list
    assert_eq!((r.skipped_files(), r.skipped.len()), (1, 2));
    assert!(r.skipped[0].1.path.ends_with("broken.png"));
    assert_eq!(
        read_parquet(&r.skipped_file).unwrap().height(),
        met_before_the_stop + 2
    );
    // the log's lines, as train.log holds them
    let log = std::fs::read_to_string(r.run.join(LOG_FILE)).unwrap();
    for line in &progress.lines {
        assert!(log.contains(line.as_str()), "{line}");
    }
    assert!(progress.lines.last().unwrap().starts_with("done: 4 steps"));
    // the numbers are the run's files': the last epoch's mean loss / ln K, the seconds, kNN per epoch
    let metrics = read_parquet(&r.run.join("metrics.parquet")).unwrap();
    let epoch = metrics
        .column("epoch")
        .unwrap()
        .cast(&polars::prelude::DataType::Float64)
        .unwrap();
    let ratio = metrics
        .column("loss_over_ln_k")
        .unwrap()
        .cast(&polars::prelude::DataType::Float64)
        .unwrap();
    let last: Vec<f64> = (0..metrics.height())
        .filter(|&i| epoch.f64().unwrap().get(i) == Some(1.0))
        .map(|i| ratio.f64().unwrap().get(i).unwrap())
        .collect();
    let mean = last.iter().sum::<f64>() / last.len() as f64;
    let got = r.final_loss_over_ln_k.unwrap();
    assert!((got - mean).abs() < 1e-12, "{got} vs {mean}");
    assert_eq!(r.epochs[1].mean_loss_over_ln_k, got);
    assert!(r.train_seconds > 0.0);
    let knn = read_parquet(&r.run.join(KNN_FILE)).unwrap();
    let acc: Vec<f64> = knn
        .column("accuracy")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(r.knn.iter().map(|k| k.1).collect::<Vec<_>>(), acc);
    assert_eq!(r.knn.iter().map(|k| k.0).collect::<Vec<_>>(), vec![0, 1]);

    // A resume that asks for another recipe is refused, naming the setting.
    let other = TrainRequest {
        config: biaslab::train::TrainConfig {
            epochs: 3,
            ..resume.config.clone()
        },
        compare: Some(vec!["epochs"]),
        ..resume.clone()
    };
    let err = train(&env, &other, &mut ()).unwrap_err().to_string();
    assert!(err.contains("epochs"), "{err}");
    // A fresh run over a finished one is refused too.
    let err = train(&env, &req, &mut ()).unwrap_err().to_string();
    assert!(err.contains("holds a run already"), "{err}");
}

#[test]
fn invariance_stage_returns_the_table_it_writes_and_the_skipped_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());
    let req = InvarianceRequest {
        runs: vec![tmp.path().join("run")],
        data: "stamps".into(),
        transforms: vec![Transform::Occlusion, Transform::Instance],
        out: tmp.path().join("inv"),
        size: None,
        max_objects: 100,
        seed: 2,
        layer: EmbedLayer::Backbone,
        batch_size: 8,
    };
    let mut progress = Counted::default();
    let r = invariance(&env, &req, &mut progress).unwrap();
    // 16 labelled objects, the broken one skipped and listed
    assert_eq!(r.objects, 15);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(
        read_parquet(r.skipped_file.as_ref().unwrap())
            .unwrap()
            .height(),
        1
    );
    assert_eq!(r.size, 24, "the run's largest training crop");
    assert_eq!((progress.total, progress.done), (r.views, r.views));
    // a run directory called `run` is named by its parent (as an experiment cell's is)
    let label = tmp.path().file_name().unwrap().to_str().unwrap();
    assert_eq!(r.embeddings.len(), 1);
    assert!(r.embeddings[0].ends_with(format!("embeddings/{label}.parquet")));
    // the rows are the table's, number for number
    let t = read_parquet(&req.out.join("invariance.parquet")).unwrap();
    assert_eq!(t.height(), r.rows.len());
    assert!(!r.rows.is_empty());
    let score = t
        .column("score")
        .unwrap()
        .cast(&polars::prelude::DataType::Float64)
        .unwrap();
    for (i, row) in r.rows.iter().enumerate() {
        assert_eq!(score.f64().unwrap().get(i), row.score, "{row:?}");
        assert_eq!(row.run, label);
    }
    assert!(r.rows.iter().any(|x| x.transform == "occlusion"));
    // a raised stop flag writes no table
    let stop = Env {
        stop: Some(Arc::new(AtomicBool::new(true))),
        ..env.clone()
    };
    let again = InvarianceRequest {
        out: tmp.path().join("inv2"),
        ..req.clone()
    };
    assert!(invariance(&stop, &again, &mut ()).is_err());
    assert!(!again.out.join("invariance.parquet").exists());
}
