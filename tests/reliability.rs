//! Regression tests of issue 13 ("trust under hostile input and interruption"), one per reproduction and
//! named after the bug: kill -9 after a mid-epoch checkpoint, SIGTERM, two writers in one run, `--resume`
//! with other inputs, stale temporaries, `--threads 0`, crop scales, non-finite training, experiment grids,
//! an unreadable subdirectory in `datasets check`, and analyze's report directory.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use biaslab::analyze::embeddings::{write_embeddings, EmbeddingRow};
use biaslab::data::index::write_index;
use biaslab::data::kind::DatasetKind;
use biaslab::error::Error;
use biaslab::report::io::read_parquet;
use biaslab::train::metrics::StepMetrics;
use biaslab::train::trainer::FitOptions;
use biaslab::train::{TrainConfig, Trainer};
use common::{
    kill9, latest_checkpoint as latest, run_metrics as metrics, spawn_biaslab as spawn, wait_for,
    TINY_TRAIN_TOML as TINY_TOML,
};
use image::{Rgb, RgbImage};
use tch::{Device, Tensor};

/// A tiny SwAV recipe: width-8 ResNet-18 on 32 + 16 px crops, batch 8 (48 images give 6 steps an epoch).

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn biaslab(args: &[&str]) -> Output {
    common::run_biaslab(args, &[])
}

/// `n` distinct 40×40 images with their `index.parquet` (a normalised dataset given by directory).
fn images(dir: &Path, n: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut recs = Vec::new();
    for i in 0..n {
        let rel = format!("img{i:03}.png");
        recs.push(common::record(
            &format!("img{i:03}"),
            &rel,
            None,
            DatasetKind::Scene,
            40,
            40,
        ));
        RgbImage::from_fn(40, 40, |x, y| {
            Rgb([
                (x * 6 + i * 5) as u8,
                (y * 6 + i * 11) as u8,
                ((x + y + i) * 3) as u8,
            ])
        })
        .save(dir.join(&rel))
        .unwrap();
    }
    write_index(dir, &recs).unwrap();
    dir.to_path_buf()
}

/// The tiny config with the `key = value` lines of `overrides` in place of its own.
fn tiny_with(overrides: &str) -> String {
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let replaced: Vec<String> = overrides.lines().map(key).collect();
    let mut out: String = TINY_TOML
        .lines()
        .filter(|l| !replaced.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(overrides);
    out
}

/// Temp dir with 48 images and the tiny config (with `overrides`); returns (tmp, data dir, config path).
fn setup(overrides: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = images(&tmp.path().join("imgs"), 48);
    let config = tmp.path().join("tiny.toml");
    std::fs::write(&config, tiny_with(overrides)).unwrap();
    (tmp, data, config)
}

fn train_args<'a>(data: &'a Path, run: &'a Path, config: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        p(data),
        "--out",
        p(run),
        "--config",
        p(config),
        "--threads",
        "2",
    ]
}

/// Every stored column but the wall-clock seconds, which no two runs share.
fn same_rows(a: &[StepMetrics], b: &[StepMetrics]) {
    assert_eq!(a.len(), b.len(), "row counts differ");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            (
                x.step,
                x.epoch,
                x.loss,
                x.loss_over_ln_k,
                x.lr,
                x.proto_entropy
            ),
            (
                y.step,
                y.epoch,
                y.loss,
                y.loss_over_ln_k,
                y.lr,
                y.proto_entropy
            ),
            "step {} differs",
            x.step
        );
    }
}

fn epoch_lines(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("train.log"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("epoch "))
        // Throughput is wall-clock and differs between any two runs; every other field must match.
        .map(|l| {
            l.split(", ")
                .filter(|part| !part.ends_with("images/s"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

#[test]
fn metrics_rows_lost_after_kill9_at_mid_epoch_checkpoint() {
    let (tmp, data, config) = setup("");
    let whole = tmp.path().join("whole");
    let o = biaslab(&train_args(&data, &whole, &config));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let expected = metrics(&whole);
    assert_eq!(expected.len(), 18);

    // kill -9 as soon as checkpoint 8 (epoch 1, batch 2) is published
    let run = tmp.path().join("killed");
    let mut args = train_args(&data, &run, &config);
    args.extend(["--checkpoint-every", "2"]);
    let mut child = spawn(&args);
    wait_for("checkpoint 8", || latest(&run) == "checkpoint-00000008");
    kill9(&mut child);
    let at = latest(&run);

    let mut resume = args.clone();
    resume.push("--resume");
    let o = biaslab(&resume);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("resuming at step"),
        "killed at {at}: {}",
        text(&o)
    );
    same_rows(&metrics(&run), &expected);
    // the epoch the kill cut through is summarised from all its steps, as the uninterrupted run's
    let lines = epoch_lines(&run);
    let last_two: Vec<&String> = lines.iter().rev().take(2).collect();
    let whole_lines = epoch_lines(&whole);
    for l in last_two {
        assert!(whole_lines.contains(l), "{l:?} not in {whole_lines:?}");
    }
}

/// Library-level twin of the test above without timing: the run directory is copied at the exact moment a
/// kill -9 right after checkpoint 8 would freeze it (checkpoint written, next batch being drawn).
#[test]
fn metrics_rows_lost_after_resume_from_mid_epoch_checkpoint_exact() {
    tch::set_num_threads(1);
    let cfg = TrainConfig {
        crops: biaslab::augment::CropRecipe {
            nmb_crops: vec![2, 1],
            size_crops: vec![24, 16],
            min_scale_crops: vec![0.14, 0.05],
            max_scale_crops: vec![1.0, 0.14],
            ..Default::default()
        },
        crops_for_assign: vec![0, 1],
        feat_dim: 16,
        nmb_prototypes: vec![12],
        queue_length: 0,
        epochs: 3,
        batch_size: 4,
        steps_per_epoch: 6,
        warmup_epochs: 0,
        width: 4,
        hidden_mlp: 32,
        ..Default::default()
    };
    let crops = |cfg: &TrainConfig, e: usize, i: usize| -> Vec<Tensor> {
        (0..cfg.total_crops())
            .map(|v| {
                let s = cfg.crop_size(v).unwrap();
                let n = cfg.batch_size * 3 * s * s;
                (Tensor::arange(n, (tch::Kind::Float, Device::Cpu))
                    * (0.37 + 0.11 * e as f64 + 0.05 * i as f64 + 0.013 * v as f64))
                    .sin()
                    .reshape([cfg.batch_size, 3, s, s])
            })
            .collect()
    };
    let whole = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let c2 = cfg.clone();
    a.fit(
        whole.path(),
        |e| {
            let c = c2.clone();
            (0..c.steps_per_epoch).map(move |i| Ok::<_, Error>(crops(&c, e, i)))
        },
        &FitOptions::default(),
    )
    .unwrap();

    let live = tempfile::tempdir().unwrap();
    let frozen = tempfile::tempdir().unwrap();
    let frozen_run = frozen.path().join("run");
    let mut b = Trainer::new(cfg.clone(), Device::Cpu).unwrap();
    let opts = FitOptions {
        checkpoint_every: Some(2),
        ..Default::default()
    };
    let (c3, lp, fr) = (cfg.clone(), live.path().to_path_buf(), frozen_run.clone());
    b.fit(
        live.path(),
        |e| {
            let (c, lp, fr) = (c3.clone(), lp.clone(), fr.clone());
            (0..c.steps_per_epoch).map(move |i| {
                if e == 1 && i == 2 {
                    copy_dir(&lp, &fr);
                }
                Ok::<_, Error>(crops(&c, e, i))
            })
        },
        &opts,
    )
    .unwrap();
    assert_eq!(latest(&frozen_run), "checkpoint-00000008");

    let mut r = Trainer::resume(&frozen_run).unwrap();
    assert_eq!(
        (r.epoch(), r.step_in_epoch(), r.step(), r.history().len()),
        (1, 2, 8, 8)
    );
    let c4 = cfg.clone();
    let out = r
        .fit(
            &frozen_run,
            |e| {
                let c = c4.clone();
                (0..c.steps_per_epoch).map(move |i| Ok::<_, Error>(crops(&c, e, i)))
            },
            &FitOptions::default(),
        )
        .unwrap();
    same_rows(&metrics(&frozen_run), &metrics(whole.path()));
    // epoch 1's mean loss over all six of its steps, as uninterrupted
    let e1 = out.epochs.iter().find(|s| s.epoch == 1).unwrap();
    let want: f64 = a
        .history()
        .iter()
        .filter(|m| m.epoch == 1)
        .map(|m| m.loss)
        .sum::<f64>()
        / 6.0;
    assert_eq!(e1.steps, 6);
    assert!(
        (e1.mean_loss - want).abs() < 1e-12,
        "{} vs {want}",
        e1.mean_loss
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn sigterm_wrote_no_checkpoint_and_interrupted_train_exited_0() {
    let (tmp, data, config) = setup("epochs = 200\n");
    let run = tmp.path().join("run");
    let mut args = train_args(&data, &run, &config);
    args.extend(["--checkpoint-every", "1"]);
    let child = spawn(&args);
    // the handler is installed before the first step, hence before the first checkpoint
    wait_for("a first checkpoint", || run.join("latest").exists());
    // SAFETY: signalling a child process we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(
        text(&o).contains("interrupted, resumable with --resume"),
        "{}",
        text(&o)
    );
    let step: usize = latest(&run)
        .trim_start_matches("checkpoint-")
        .parse()
        .unwrap();
    let rows = metrics(&run);
    assert_eq!(rows.len(), step, "metrics.parquet covers the checkpoint");
    assert!(rows.iter().enumerate().all(|(i, r)| r.step == i));
}

#[test]
fn two_trainings_into_one_run_directory_interleave() {
    let (tmp, data, config) = setup("epochs = 200\n");
    let run = tmp.path().join("run");
    let mut first = spawn(&train_args(&data, &run, &config));
    wait_for("the first run's lock", || {
        std::fs::read_to_string(run.join("train.lock")).is_ok_and(|s| s.starts_with("pid "))
    });
    let mut second = train_args(&data, &run, &config);
    second.extend(["--seed", "2", "--epochs", "2"]);
    let o = biaslab(&second);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "another biaslab process is writing to this directory (pid {}",
            first.id()
        )),
        "{}",
        text(&o)
    );
    wait_for("a first checkpoint", || run.join("latest").exists());
    kill9(&mut first);
    // The dead writer's lock file is taken over, with a note; its checkpoint goes on.
    let mut resume = train_args(&data, &run, &config);
    resume.extend(["--resume", "--max-steps", "7"]);
    let o = biaslab(&resume);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("took over the lock of a writer that is gone"),
        "{}",
        text(&o)
    );
    assert!(
        !run.join("train.lock").exists(),
        "the lock is removed on exit"
    );
}

#[test]
fn resume_with_other_data_epochs_or_method_was_accepted() {
    let (tmp, data, config) = setup("");
    let run = tmp.path().join("run");
    let mut args = train_args(&data, &run, &config);
    args.extend(["--max-steps", "2"]);
    let o = biaslab(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let other = images(&tmp.path().join("other"), 48);
    let refused = |extra: &[&str], data: &Path, config: Option<&Path>, needle: &str| {
        let mut a = vec!["train", "--data", p(data), "--out", p(&run), "--resume"];
        if let Some(c) = config {
            a.extend(["--config", p(c)]);
        }
        a.extend_from_slice(extra);
        let o = biaslab(&a);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(needle), "{needle:?} not in {}", text(&o));
    };
    refused(&[], &other, Some(&config), "--data: the run trained on");
    refused(
        &["--epochs", "5"],
        &data,
        None,
        "epochs: the run has 3, asked for 5",
    );
    refused(
        &["--method", "simclr"],
        &data,
        None,
        "method: the run has \"swav\"",
    );
    refused(&["--max-images", "40"], &data, None, "--max-images");
    let changed = tmp.path().join("changed.toml");
    std::fs::write(&changed, TINY_TOML.replace("seed = 5", "seed = 6")).unwrap();
    refused(
        &[],
        &data,
        Some(&changed),
        "seed: the run has 5, asked for 6",
    );

    // A half-written checkpoint of a killed session: removed when the next one starts.
    std::fs::create_dir(run.join(".tmp-ckpt-dead")).unwrap();
    // the same inputs resume, and clear the stale temporary
    let mut resume = train_args(&data, &run, &config);
    resume.push("--resume");
    let o = biaslab(&resume);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("removed 1 half-written checkpoint"),
        "{}",
        text(&o)
    );
    assert!(!run.join(".tmp-ckpt-dead").exists());
    assert_eq!(metrics(&run).len(), 18);
}

#[test]
fn threads_0_panicked_in_train_and_embed() {
    let (tmp, data, config) = setup("");
    let run = tmp.path().join("run");
    let mut args = train_args(&data, &run, &config);
    args.retain(|a| *a != "--threads" && *a != "2");
    args.extend(["--threads", "0", "--max-steps", "1"]);
    let o = biaslab(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let emb = tmp.path().join("e.parquet");
    let o = biaslab(&[
        "embed",
        "--run",
        p(&run),
        "--data",
        p(&data),
        "--out",
        p(&emb),
        "--threads",
        "0",
        "--device",
        "cpu",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(read_parquet(&emb).unwrap().height(), 48);
}

#[test]
fn max_scale_crops_reported_as_min_scale_crops() {
    let (tmp, data, _) = setup("");
    let config = tmp.path().join("bad.toml");
    std::fs::write(
        &config,
        TINY_TOML.replace(
            "max_scale_crops = [1.0, 0.3]",
            "max_scale_crops = [1.5, 0.3]",
        ),
    )
    .unwrap();
    let run = tmp.path().join("run");
    let o = biaslab(&train_args(&data, &run, &config));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("invalid `max_scale_crops`"),
        "{}",
        text(&o)
    );
    assert!(!run.exists(), "an invalid config creates no run directory");
}

#[test]
fn nonfinite_training_claimed_a_checkpoint_that_does_not_exist() {
    let (tmp, data, config) = setup("temperature = 1e-30\n");
    let run = tmp.path().join("run");
    let o = biaslab(&train_args(&data, &run, &config));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("non-finite loss"), "{t}");
    assert!(t.contains("no checkpoint was written"), "{t}");
    assert!(!t.contains("last good checkpoint is kept"), "{t}");
}

const GRID_TAIL: &str = r#"
[train]
epochs = 1
batch_size = 8
warmup_epochs = 0
[crops.mc]
nmb_crops = [2, 1]
size_crops = [32, 16]
min_scale_crops = [0.3, 0.1]
max_scale_crops = [1.0, 0.3]
crops_for_assign = [0, 1]
[evaluate]
"#;

fn grid(tmp: &Path, head: &str, tail: &str) -> PathBuf {
    let f = tmp.join("grid.toml");
    std::fs::write(&f, format!("name = \"g\"\n[grid]\n{head}{tail}")).unwrap();
    f
}

#[test]
fn experiment_duplicate_seeds_reported_as_two() {
    let tmp = tempfile::tempdir().unwrap();
    let f = grid(
        tmp.path(),
        "data = [\"d\"]\nmethod = [\"swav\"]\ncrops = [\"mc\"]\nseed = [1, 1]\n",
        GRID_TAIL,
    );
    let out = tmp.path().join("out");
    let o = biaslab(&["experiment", "run", p(&f), "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("invalid `grid.seed`: `1` is listed twice"),
        "{}",
        text(&o)
    );
}

#[test]
fn experiment_with_no_applicable_cell_exited_0() {
    let tmp = tempfile::tempdir().unwrap();
    let f = grid(
        tmp.path(),
        "data = [\"d\"]\nmethod = [\"byol\"]\ncrops = [\"mc\"]\nseed = [0]\n",
        GRID_TAIL,
    );
    let out = tmp.path().join("out");
    let o = biaslab(&["experiment", "run", p(&f), "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no cell of"), "{}", text(&o));
    let o = biaslab(&["experiment", "run", p(&f), "--out", p(&out), "--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn experiment_cell_ids_collided_for_distinct_data() {
    let tmp = tempfile::tempdir().unwrap();
    let f = grid(
        tmp.path(),
        "data = [\"shots/ds/imgs\", \"shots/ds_imgs\"]\nmethod = [\"swav\"]\ncrops = [\"mc\"]\nseed = [0]\n",
        GRID_TAIL,
    );
    let out = tmp.path().join("out");
    let o = biaslab(&["experiment", "run", p(&f), "--out", p(&out), "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert!(
        ids.iter().all(|i| i.starts_with("shots_ds_imgs-")),
        "{ids:?}"
    );
}

#[test]
fn datasets_check_aborted_on_an_unreadable_subdirectory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("set");
    images(&root.join("a"), 2);
    images(&root.join("locked"), 1);
    images(&root.join("z"), 2);
    use std::os::unix::fs::PermissionsExt;
    // root reads any directory: the check then runs as `nobody`, who can read all but `locked`
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_biaslab"));
    cmd.args(["datasets", "check", p(&root)]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let o = cmd.output().unwrap();
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("5 files, 4 ok, 1 skipped"), "{t}");
    assert!(
        t.contains(&format!(
            "skipped {}: unreadable directory",
            root.join("locked").display()
        )),
        "{t}"
    );
}

fn emb_rows(dataset: &str) -> Vec<EmbeddingRow> {
    (0..24)
        .map(|i| EmbeddingRow {
            id: format!("{dataset}-{i}"),
            image_id: format!("{dataset}-{}", i / 2),
            label: Some(format!("l{}", i % 3)),
            dataset: dataset.to_string(),
            kind: "object".into(),
            set_id: None,
            bbox: None,
            prototype: Some((i % 4) as i32),
            embedding: (0..8)
                .map(|j| ((i * 7 + j * 3) as f32 * 0.31).sin())
                .collect(),
        })
        .collect()
}

#[test]
fn analyze_report_directory_mixed_two_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.parquet"), tmp.path().join("b.parquet"));
    write_embeddings(&a, &emb_rows("first")).unwrap();
    write_embeddings(&b, &emb_rows("second")).unwrap();
    let out = tmp.path().join("report");
    let run = |input: &Path, analysis: &str, extra: &[&str]| {
        let mut args = vec![
            "analyze",
            analysis,
            "--embeddings",
            p(input),
            "--out",
            p(&out),
            "--no-plots",
        ];
        args.extend_from_slice(extra);
        biaslab(&args)
    };
    let o = run(&a, "uniformity", &["--csv"]);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    assert!(out.join("uniformity.csv").is_file());
    let o = run(&b, "spectrum", &[]);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", text(&o));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.contains(&"spectrum.parquet".to_string())
            && names.contains(&"summary.md".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with(".csv")),
        "the first report's files are gone: {names:?}"
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("b.parquet") && !summary.contains("a.parquet"),
        "{summary}"
    );
    // nothing temporary is left beside it
    let beside: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");

    // a directory that is not a report is never replaced
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let o = biaslab(&[
        "analyze",
        "spectrum",
        "--embeddings",
        p(&b),
        "--out",
        p(&mine),
        "--no-plots",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("was not written by biaslab"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
}
