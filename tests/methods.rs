//! MoCo v2 and DINO beside SwAV and SimCLR: the momentum encoder follows the student by its EMA, every
//! objective's state resumes bit for bit (in the library and after a kill -9 of the CLI), `train --method
//! moco|dino` runs with no config on a plain folder, and embeddings carry prototype codes only where the
//! method trains them.
mod common;

use std::path::{Path, PathBuf};

use biaslab::analyze::embeddings::COL_PROTOTYPE;
use biaslab::report::io::read_parquet;
use biaslab::train::metrics::StepMetrics;
use biaslab::train::{Method, TrainConfig, Trainer};
use common::crops_for;
use image::{Rgb, RgbImage};
use tch::{Device, Tensor};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The tiny training model with `method`'s own crops and settings scaled to it.
fn tiny(method: Method) -> TrainConfig {
    let base = common::tiny_train_config();
    let mut cfg = TrainConfig {
        method,
        epochs: 2,
        base_lr: 0.5,
        final_lr: 0.005,
        warmup_epochs: 0,
        freeze_prototypes_niters: 1,
        ..base.clone()
    };
    match method {
        Method::Moco => {
            cfg.crops.nmb_crops = vec![2];
            cfg.crops.size_crops = vec![24];
            cfg.crops.min_scale_crops = vec![0.2];
            cfg.crops.max_scale_crops = vec![1.0];
            // four batches of 6: the write position wraps within the test's six steps
            cfg.moco.moco_k = 24;
            cfg.moco.moco_m = 0.9;
        }
        Method::Dino => {
            cfg.dino.warmup_teacher_temp_epochs = 2;
            cfg.dino.momentum_teacher = 0.9;
        }
        _ => {}
    }
    cfg.validate("test").unwrap();
    cfg
}

fn step(t: &mut Trainer, cfg: &TrainConfig, i: usize) -> StepMetrics {
    let e = i / cfg.steps_per_epoch;
    let m = t
        .train_step(&crops_for(cfg, e, i % cfg.steps_per_epoch))
        .unwrap();
    if t.step_in_epoch() == cfg.steps_per_epoch {
        t.end_epoch();
    }
    m
}

#[test]
fn moco_and_dino_resume_bit_exact_with_their_momentum_encoder_queue_and_centre() {
    tch::set_num_threads(1);
    for method in [Method::Moco, Method::Dino] {
        let cfg = tiny(method);
        let mut straight = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
        let rows: Vec<StepMetrics> = (0..6).map(|i| step(&mut straight, &cfg, i)).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut first = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
        for i in 0..4 {
            step(&mut first, &cfg, i);
        }
        first.save_checkpoint(dir.path()).unwrap();
        drop(first);
        let mut second = Trainer::resume(dir.path()).unwrap();
        assert_eq!((second.epoch(), second.step_in_epoch()), (1, 1));
        for i in 4..6 {
            step(&mut second, &cfg, i);
        }
        let (a, b) = (straight.state_tensors(), second.state_tensors());
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        let own: Vec<&String> = a
            .keys()
            .filter(|n| !n.starts_with("model.") && !n.starts_with("lars."))
            .collect();
        assert!(
            own.iter().any(|n| n.starts_with("momentum_encoder.")),
            "{method}: {own:?}"
        );
        match method {
            Method::Moco => {
                assert!(a.contains_key("moco.queue") && a.contains_key("moco.queue_ptr"));
                // 6 steps of 6 keys in a queue of 24: the write position went round once
                assert_eq!(a["moco.queue_ptr"].int64_value(&[0]), 12);
            }
            _ => assert!(a.contains_key("dino.center")),
        }
        for (n, v) in &a {
            assert!(v.equal(&b[n]), "{method}: {n} differs after resume");
        }
        for (r, x) in rows.iter().zip(second.history()) {
            assert_eq!(
                r.loss.to_bits(),
                x.loss.to_bits(),
                "{method} step {}",
                r.step
            );
        }
        // the normaliser and the signals each method reports
        let last = rows.last().unwrap();
        match method {
            Method::Moco => {
                assert_eq!(last.normaliser, "ln(1+moco_k)");
                assert!(last.proto_entropy.is_nan(), "MoCo trains no prototypes");
                assert!(last.teacher_student_kl.is_none());
            }
            _ => {
                assert_eq!(last.normaliser, "ln K");
                assert!(last.proto_entropy.is_finite());
                let kl = last.teacher_student_kl.unwrap();
                let h = last.teacher_entropy.unwrap();
                assert!(kl >= -1e-5 && (kl + h - last.loss).abs() < 1e-4, "{kl} {h}");
                assert!(h <= (12f64).ln() + 1e-9);
            }
        }
        assert!(rows.iter().all(|r| r.loss.is_finite()));
    }
}

#[test]
fn the_momentum_encoder_moves_by_the_ema_of_the_student_after_each_step() {
    tch::set_num_threads(1);
    let cfg = tiny(Method::Moco);
    let m = cfg.moco.moco_m;
    let mut t = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let name = "layer1.0.conv1.weight";
    // copies: the state's tensors are the live variables
    let before: std::collections::BTreeMap<String, Tensor> = t
        .state_tensors()
        .into_iter()
        .map(|(n, v)| (n, v.copy()))
        .collect();
    // the key encoder starts as a copy of the student, BN statistics included
    for (n, v) in &before {
        if let Some(student) = n.strip_prefix("momentum_encoder.") {
            assert!(v.equal(&before[&format!("model.{student}")]), "{n}");
        }
    }
    t.train_step(&crops_for(&cfg, 0, 0)).unwrap();
    let after = t.state_tensors();
    let s1 = &after[&format!("model.{name}")];
    let k1 = &after[&format!("momentum_encoder.{name}")];
    let k0 = &before[&format!("momentum_encoder.{name}")];
    assert!(!s1.equal(k0), "the student did not move");
    let want = k0 * m + s1 * (1.0 - m);
    assert!(k1.allclose(&want, 1e-6, 1e-7, false));
    // the prototypes of a method that does not train them stay as they were
    let proto = "model.prototypes.0.weight";
    if let (Some(a), Some(b)) = (before.get(proto), after.get(proto)) {
        let normalised = biaslab::model::l2_normalize(a);
        assert!(b.allclose(&normalised, 1e-6, 1e-7, false));
    }
}

#[test]
fn configs_read_each_methods_own_defaults() {
    let moco = TrainConfig::from_toml("method = \"moco\"\nepochs = 3", None).unwrap();
    assert_eq!(moco.crops.nmb_crops, vec![2]);
    assert_eq!(moco.crops.min_scale_crops, vec![0.2]);
    assert_eq!(moco.moco.moco_t, 0.2);
    assert_eq!(moco.epochs, 3);
    let dino = TrainConfig::from_toml("[dino]\nteacher_temp = 0.05", Some(Method::Dino)).unwrap();
    assert_eq!(dino.method, Method::Dino);
    assert_eq!(dino.dino.teacher_temp, 0.05);
    assert_eq!(dino.dino.student_temp, 0.1, "the table merges key by key");
    assert_eq!(dino.nmb_prototypes, vec![1024]);
    let err = TrainConfig::from_toml("method = \"byol\"", None).unwrap_err();
    assert!(err.contains("byol"), "{err}");
    let err = TrainConfig::from_toml("[moco]\nmoco_q = 3", Some(Method::Moco)).unwrap_err();
    assert!(err.contains("moco_q"), "{err}");
    // a queue that is not whole batches is refused, naming the table's field
    let mut c = Method::Moco.defaults();
    c.moco.moco_k = 100;
    let err = c.validate("x.toml").unwrap_err().to_string();
    assert!(err.contains("moco.moco_k"), "{err}");
    let mut c = Method::Dino.defaults();
    c.crops.nmb_crops = vec![1, 4];
    c.crops_for_assign = vec![0];
    let err = c.validate("x.toml").unwrap_err().to_string();
    assert!(err.contains("2 global crops"), "{err}");
    // MoCo's queue is cut to one epoch's images
    let mut c = Method::Moco.defaults();
    c.batch_size = 8;
    let notes = c.fit_to_data(5);
    assert_eq!((c.moco.moco_k, c.steps_per_epoch), (40, 5));
    assert_eq!(notes.len(), 1, "{notes:?}");
}

/// `n` PNGs straight in `dir`: no index, no labels (a user's plain folder).
fn plain_folder(dir: &Path, n: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        RgbImage::from_fn(40, 40, |x, y| {
            Rgb([
                (x * 6 + i * 5) as u8,
                (y * 6 + i * 11) as u8,
                ((x + y + i) * 3) as u8,
            ])
        })
        .save(dir.join(format!("img{i:03}.png")))
        .unwrap();
    }
    dir.to_path_buf()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn train_moco_and_dino_with_no_config_on_a_plain_folder_then_embed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = plain_folder(&tmp.path().join("photos"), 24);
    for (method, name, normaliser, codes) in [
        ("moco", "MoCo v2", "loss/ln(1+moco_k)", false),
        ("dino", "DINO", "loss/ln K", true),
    ] {
        let run = tmp.path().join(method);
        let o = common::run_biaslab(
            &[
                "train",
                "--method",
                method,
                "--data",
                p(&data),
                "--out",
                p(&run),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--threads",
                "2",
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let log = std::fs::read_to_string(run.join("train.log")).unwrap();
        assert!(log.contains(&format!("{name} on ")), "{log}");
        assert!(log.contains(normaliser), "{log}");
        if method == "moco" {
            // 1,024 keys by default, cut to the 24 images of an epoch
            assert!(
                log.contains("moco.moco_k 1024 exceeds the 24 images"),
                "{log}"
            );
        } else {
            assert!(log.contains("teacher entropy"), "{log}");
        }
        let out = tmp.path().join(format!("{method}.parquet"));
        let o = common::run_biaslab(
            &[
                "embed",
                "--run",
                p(&run),
                "--data",
                p(&data),
                "--out",
                p(&out),
                "--threads",
                "2",
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let df = read_parquet(&out).unwrap();
        assert_eq!(df.height(), 24);
        let nulls = df.column(COL_PROTOTYPE).unwrap().null_count();
        assert_eq!(
            nulls,
            if codes { 0 } else { 24 },
            "{method}: prototype codes only where the method trains prototypes"
        );
    }
}

#[test]
fn moco_and_dino_runs_killed_with_sigkill_resume_to_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = plain_folder(&tmp.path().join("imgs"), 48);
    for (method, extra) in [
        ("moco", "method = \"moco\"\nnmb_crops = [2]\nsize_crops = [32]\nmin_scale_crops = [0.2]\nmax_scale_crops = [1.0]\n[moco]\nmoco_k = 16\n"),
        ("dino", "method = \"dino\"\n[dino]\nwarmup_teacher_temp_epochs = 2\n"),
    ] {
        let keys: Vec<&str> = extra
            .lines()
            .filter_map(|l| l.split('=').next().map(str::trim))
            .collect();
        let base: String = common::TINY_TRAIN_TOML
            .lines()
            .filter(|l| !keys.contains(&l.split('=').next().unwrap_or("").trim()))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = tmp.path().join(format!("{method}.toml"));
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        let args = |run: &Path| -> Vec<String> {
            [
                "train", "--data", p(&data), "--out", p(run), "--config", p(&config),
                "--threads", "2",
            ]
            .map(String::from)
            .to_vec()
        };
        let whole = tmp.path().join(format!("{method}-whole"));
        let a = args(&whole);
        let o = common::run_biaslab(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let expected = common::run_metrics(&whole);
        assert_eq!(expected.len(), 18);

        let run = tmp.path().join(format!("{method}-killed"));
        let mut a = args(&run);
        a.extend(["--checkpoint-every".into(), "2".into()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut child = common::spawn_biaslab(&a);
        common::wait_for(&format!("{method}: checkpoint 8"), || {
            common::latest_checkpoint(&run) == "checkpoint-00000008"
        });
        common::kill9(&mut child);
        let mut resume = a.clone();
        resume.push("--resume");
        let o = common::run_biaslab(&resume, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("resuming at step"), "{}", text(&o));
        let got = common::run_metrics(&run);
        assert_eq!(got.len(), expected.len(), "{method}");
        for (x, y) in got.iter().zip(&expected) {
            assert_eq!(
                (x.step, x.loss.to_bits(), x.lr.to_bits()),
                (y.step, y.loss.to_bits(), y.lr.to_bits()),
                "{method} step {}",
                x.step
            );
            assert_eq!(
                x.teacher_student_kl.map(f64::to_bits),
                y.teacher_student_kl.map(f64::to_bits)
            );
        }
    }
}

#[test]
fn a_grid_runs_all_four_methods_and_measures_each_cell() {
    use biaslab::experiment::{CellStatus, ExperimentSpec};
    use biaslab::pipeline::grid::{run_grid, GridRequest};
    use biaslab::pipeline::Env;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::composed(&data);
    let file = tmp.path().join("grid.toml");
    let toml = format!(
        r#"
name = "methods"
description = "the four objectives on composed objects, one epoch"
[grid]
data = ["t-objects-train"]
method = ["swav", "simclr", "moco", "dino"]
crops = ["mc"]
seed = [0]
{train}{crops}[methods.moco]
moco = {{ moco_k = 16 }}
[methods.dino]
dino = {{ warmup_teacher_temp_epochs = 0, teacher_temp = 0.04 }}
[evaluate]
boxes = "t-scenes-test"
knn_train = "t-objects-train"
knn_test = "t-objects-test"
invariance = "t-objects-test"
transforms = ["occlusion"]
max_objects = 5
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
    assert_eq!(r.cells.len(), 4);
    for c in &r.cells {
        assert_eq!(c.status, CellStatus::Done, "{c:?}");
        for m in [
            "final_loss_over_ln_k",
            "delta_scene",
            "delta_cat",
            "instance_at_1",
            "knn_accuracy",
            "linear_accuracy",
            "invariance_occlusion_top10",
        ] {
            assert!(
                c.metrics.get(m).is_some_and(|v| v.is_finite()),
                "{}: {m} missing or not finite in {:?}",
                c.method,
                c.metrics
            );
        }
        // prototype usage is measured where the method trains prototypes, and only there
        let trains = matches!(c.method.as_str(), "swav" | "dino");
        assert_eq!(
            c.metrics.contains_key("perplexity_ratio"),
            trains,
            "{}: {:?}",
            c.method,
            c.metrics
        );
    }
    // each cell's run trained the method it names, with its own normaliser in metrics.parquet
    for (method, normaliser) in [
        ("swav", "ln K"),
        ("simclr", "ln(2B-1)"),
        ("moco", "ln(1+moco_k)"),
        ("dino", "ln K"),
    ] {
        let run = req
            .out
            .join("cells")
            .join(format!("t-objects-train__{method}__mc__base__seed0"))
            .join("run");
        let rows = common::run_metrics(&run);
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|r| r.normaliser == normaliser), "{method}");
    }
}
