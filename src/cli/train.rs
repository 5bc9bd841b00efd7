//! `biaslab train --data NAME|DIR [--data …] --out RUN`: SwAV (or the SimCLR baseline) on the images of one
//! or more datasets with the multi-crop loader; checkpoints, metrics.parquet, config.json, skipped.parquet
//! and train.log in the run directory. Ctrl-C (or `--max-steps`) checkpoints and stops; `--resume`
//! continues exactly where the run stopped.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::*;

use crate::analyze::embed::{dataset_samples, CropMode, EmbedOptions};
use crate::analyze::knn::{knn, K};
use crate::augment::MultiCropConfig;
use crate::data::compose::resolve_dataset;
use crate::data::decode::Skip;
use crate::data::index::resolve_data_dir;
use crate::data::source::Sample;
use crate::loader::{LoaderOptions, MultiCropLoader};
use crate::model::Arch;
use crate::report::io::append_parquet;
use crate::run_dir::{has_checkpoint, EmbedLayer};
use crate::train::run_identity::{config_differences, RunInputs};
use crate::train::run_lock::RunLock;
use crate::train::trainer::FitOptions;
use crate::train::{install_sigint_flag, Method, StepMetrics, TrainConfig, Trainer};

/// Per-file list of what the loader could not read during the run.
pub const SKIPPED_FILE: &str = "skipped.parquet";
/// Per-epoch kNN accuracy (`--knn-train`): epoch, step, train seconds so far, accuracy.
pub const KNN_FILE: &str = "knn_epochs.parquet";
/// Random stream of the `--max-images` sample.
const STREAM_MAX_IMAGES: u64 = 0x5a3;
/// Human-readable log of the run (appended by every session, resumed ones included).
pub const LOG_FILE: &str = "train.log";
/// Exit status of a run stopped by SIGINT or SIGTERM after its checkpoint (128 + SIGINT, as shells report
/// Ctrl-C): distinct from 1 (done, inputs skipped) and 2 (error).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset: a name under the data dir (see `biaslab datasets list`) or any folder (with index.parquet,
    /// an ImageFolder tree or images anywhere below it); repeat the flag to train on several datasets
    /// mixed (e.g. objects + scenes).
    #[arg(long = "data", required = true)]
    pub data: Vec<String>,
    /// Run directory: checkpoints, metrics.parquet, config.json, skipped.parquet.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML file of training settings under the SwAV reference's names (`nmb_crops`, `size_crops`,
    /// `epsilon`, `queue_length`, …); flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, help = default_help("Objective (SimCLR trains on two views)", format!("{:?}", DEFAULTS.with(|d| d.method)).to_lowercase()))]
    pub method: Option<Method>,
    #[arg(long, help = default_help("Epochs (≥ 1; a warm-up longer than the run is shortened)", DEFAULTS.with(|d| d.epochs)))]
    pub epochs: Option<usize>,
    #[arg(long, help = default_help("Images per batch", DEFAULTS.with(|d| d.batch_size)))]
    pub batch_size: Option<i64>,
    #[arg(long, value_enum, help = default_help("Backbone (torchvision parameter names)", format!("{:?}", DEFAULTS.with(|d| d.arch)).to_lowercase()))]
    pub arch: Option<Arch>,
    #[arg(long, help = default_help("Seed of initialisation, crops and sampling", DEFAULTS.with(|d| d.seed)))]
    pub seed: Option<u64>,
    #[arg(long, help = default_help("`cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available)", DEFAULTS.with(|d| d.device.clone())))]
    pub device: Option<String>,
    /// Continue the run in `--out` from its latest checkpoint. Data, `--config` and recipe flags must
    /// match the saved run (a difference is an error naming it); `--device` may change.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a checkpoint) after this many optimisation steps in total.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Also checkpoint every N steps (a checkpoint is always written at the end of each epoch).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// After every epoch, weighted kNN accuracy (k = 20, τ = 0.07) on this labelled dataset's frozen
    /// features, written to knn_epochs.parquet: accuracy against epoch and wall time.
    #[arg(long)]
    pub knn_train: Option<String>,
    /// Labelled test set of the per-epoch kNN (default: a seeded 20% of `--knn-train`'s images).
    #[arg(long, requires = "knn_train")]
    pub knn_test: Option<String>,
    /// Object-aware crops: train on the datasets' COCO boxes (annotations.json), every crop inside one
    /// object's box, instead of random crops of whole images.
    #[arg(long)]
    pub object_crops: bool,
    /// Train on a seeded sample of at most N images (equal data size across datasets in an ablation).
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Threads for the loader and for libtorch (default, or 0: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Data directory (default `./data`).
    #[arg(long, env = "BIASLAB_DATA")]
    pub data_dir: Option<PathBuf>,
}

thread_local! {
    /// The defaults `--help` shows (built once per thread: clap asks for each flag's help).
    static DEFAULTS: TrainConfig = TrainConfig::default();
}

/// Help text with the default value, which comes from the config file when `--config` is given.
fn default_help(what: &str, default: impl std::fmt::Display) -> String {
    format!("{what} [default: {default}, or the --config file's]")
}

/// Reads the TOML config (if any) and applies the flags on top. Without a config file the method's own
/// defaults apply (SimCLR: two views), and a short run or odd batch size gets a fitted schedule (noted).
fn build_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            toml::from_str::<TrainConfig>(&text)
                .with_context(|| format!("{}: invalid training config", p.display()))?
        }
        None => TrainConfig::defaults_for(args.method.unwrap_or(Method::Swav)),
    };
    if let Some(m) = args.method {
        cfg.method = m;
    }
    if let Some(v) = args.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = args.batch_size {
        cfg.batch_size = v;
    }
    if let Some(a) = args.arch {
        cfg.arch = a;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = &args.device {
        cfg.device = v.clone();
    }
    for note in cfg.fit_to_run() {
        println!("note: {note}");
    }
    // Checked here, before any model is built, so the error names the file the user wrote.
    let origin = match &args.config {
        Some(p) => format!("{} (with command-line flags)", p.display()),
        None => "defaults and command-line flags".to_string(),
    };
    cfg.validate(&origin)?;
    Ok(cfg)
}

/// The loader's crop recipe for a training config ([`TrainConfig::multicrop`]).
pub fn multicrop_for(cfg: &TrainConfig) -> MultiCropConfig {
    cfg.multicrop()
}

fn skipped_frame(rows: &[(usize, Skip)]) -> PolarsResult<DataFrame> {
    df!(
        "epoch" => rows.iter().map(|(e, _)| *e as u32).collect::<Vec<_>>(),
        "path" => rows.iter().map(|(_, s)| s.path.display().to_string()).collect::<Vec<_>>(),
        "reason" => rows.iter().map(|(_, s)| s.reason.to_string()).collect::<Vec<_>>(),
    )
}

pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let data_dir = resolve_data_dir(args.data_dir.as_deref());
    let mut samples: Vec<Sample> = Vec::new();
    let mut dirs = Vec::new();
    for d in &args.data {
        let dir = resolve_dataset(&data_dir, d)?;
        let name = super::embed::dataset_name(&dir, d);
        // Object-aware crops (Purushwalkam & Gupta §6): one sample per annotated object, every crop
        // drawn inside its box, so a crop never mixes two objects of a scene.
        let crops = if args.object_crops {
            CropMode::Boxes
        } else {
            CropMode::Image
        };
        let (found, _) =
            dataset_samples(&dir, &name, crops, None).with_context(|| format!("--data {d}"))?;
        samples.extend(found);
        dirs.push(dir.display().to_string());
    }
    let inputs = RunInputs {
        data: dirs.iter().map(|d| canonical(d)).collect(),
        object_crops: args.object_crops,
        max_images: args.max_images,
    };
    let dirs = dirs.join(" + ");
    // A fresh run's config is checked before its directory is created.
    let fresh_cfg = if args.resume {
        None
    } else {
        Some(build_config(args)?)
    };
    let _lock = hold_run_dir(&args.out)?;
    let resuming = args.resume && has_checkpoint(&args.out);
    let mut trainer = if resuming {
        check_resume_matches(args, &inputs)?;
        Trainer::resume(&args.out)?
    } else {
        if has_checkpoint(&args.out) {
            anyhow::bail!(
                "{}: holds a run already; pass --resume to continue it or choose another --out",
                args.out.display()
            );
        }
        let cfg = match fresh_cfg {
            Some(c) => c,
            None => build_config(args)?,
        };
        std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
        let device = cfg.parse_device("--device")?;
        inputs.write(&args.out)?;
        Trainer::new(cfg, device)?
    };
    if let Some(n) = args.max_images {
        if samples.len() > n {
            // Seeded by the run's seed, so a resumed run draws the same images.
            let mut keep = crate::analyze::collapse::sample_without_replacement(
                samples.len(),
                n,
                trainer.cfg.seed,
                STREAM_MAX_IMAGES,
            );
            keep.sort_unstable();
            samples = keep.into_iter().map(|i| samples[i].clone()).collect();
        }
    }
    let threads = super::embed::threads_or_all(args.threads);
    tch::set_num_threads(threads as i32);

    let opts = LoaderOptions {
        batch_size: trainer.cfg.batch_size as usize,
        seed: trainer.cfg.seed,
        threads,
        ..LoaderOptions::default()
    };
    let loader = MultiCropLoader::new(samples, multicrop_for(&trainer.cfg), opts)?;
    let steps = loader.num_batches();
    if steps == 0 {
        anyhow::bail!(
            "{dirs}: {} images, fewer than one batch of {}",
            loader.samples().len(),
            trainer.cfg.batch_size
        );
    }
    if resuming && trainer.cfg.steps_per_epoch != steps {
        anyhow::bail!(
            "{}: the run was trained with {} steps per epoch, the dataset now gives {steps}",
            args.out.display(),
            trainer.cfg.steps_per_epoch
        );
    }
    // The learning-rate schedule is laid out over epochs × steps_per_epoch.
    trainer.cfg.steps_per_epoch = steps;
    trainer.cfg.validate("training config")?;

    let total = (trainer.cfg.epochs * steps) as u64;
    let bar = ProgressBar::new(total).with_position(trainer.step as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps {elapsed} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let skipped: Arc<Mutex<Vec<(usize, Skip)>>> = Arc::default();
    // The latest step's loss, for the progress bar (written by `fit` after every step).
    let last_loss = Arc::new(std::sync::atomic::AtomicU64::new(f64::NAN.to_bits()));
    let fit_opts = FitOptions {
        stop: Some(install_sigint_flag()?),
        checkpoint_every: args.checkpoint_every,
        max_steps: args.max_steps,
        until_epoch: None,
        last_loss: Some(last_loss.clone()),
    };
    let mut log = RunLog::open(&args.out)?;
    log.line(&format!(
        "{} on {dirs} ({} images, {steps} steps/epoch, {} epochs){}",
        match trainer.cfg.method {
            Method::Swav => "SwAV",
            Method::Simclr => "SimCLR",
        },
        loader.samples().len(),
        trainer.cfg.epochs,
        if resuming {
            format!(", resuming at step {}", trainer.step)
        } else {
            String::new()
        }
    ))?;
    // The run pauses after every epoch to print (and log) its line, and to measure kNN when asked: the
    // same weights as one call (the trainer's state carries over, see tests/train.rs).
    let mut epochs = Vec::new();
    let (session_start, first_step) = (std::time::Instant::now(), trainer.step);
    let outcome = loop {
        let opts = FitOptions {
            until_epoch: Some(trainer.epoch + 1),
            ..fit_opts.clone()
        };
        let (epoch_start, step_before) = (std::time::Instant::now(), trainer.step);
        let o = trainer.fit(
            &args.out,
            |epoch| {
                let bar = bar.clone();
                let skipped = skipped.clone();
                let last_loss = last_loss.clone();
                // Mean loss of this epoch's steps so far (the bar's running loss): when a batch is drawn,
                // the latest loss is the previous step's, of this epoch unless this is its first batch.
                let (mut sum, mut n, mut drawn) = (0.0, 0usize, 0usize);
                loader.epoch(epoch).map(move |b| {
                    let loss = f64::from_bits(last_loss.load(std::sync::atomic::Ordering::Relaxed));
                    if drawn > 0 && loss.is_finite() {
                        sum += loss;
                        n += 1;
                        bar.set_message(format!("loss {:.4}", sum / n as f64));
                    }
                    drawn += 1;
                    bar.inc(1);
                    if !b.skipped.is_empty() {
                        let mut s = skipped.lock().unwrap_or_else(|e| e.into_inner());
                        s.extend(b.skipped.into_iter().map(|k| (epoch, k)));
                    }
                    Ok(b.crops)
                })
            },
            &opts,
        )?;
        let knn_acc = match (&args.knn_train, o.epochs.is_empty()) {
            (Some(knn_train), false) => Some(knn_after_epoch(
                &trainer, &data_dir, knn_train, args, threads,
            )?),
            _ => None,
        };
        for e in &o.epochs {
            let images = (trainer.step - step_before) * trainer.cfg.batch_size as usize;
            let line = epoch_line(
                e,
                trainer.cfg.epochs,
                trainer.history.last().map(|m| m.lr),
                images as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9),
                knn_acc,
            );
            bar.suspend(|| log.line(&line))?;
        }
        epochs.extend(o.epochs.iter().cloned());
        // Go on only after a pause at an epoch's end: a call that finished no epoch was stopped (Ctrl-C
        // or --max-steps, whose next call would return at once), and an uninterrupted one is the end.
        if !o.interrupted || o.epochs.is_empty() {
            break crate::train::trainer::FitOutcome {
                epochs: std::mem::take(&mut epochs),
                ..o
            };
        }
    };
    bar.finish_and_clear();

    if let Some(line) = throughput(
        &trainer.history,
        first_step,
        trainer.cfg.batch_size as usize,
        session_start.elapsed().as_secs_f64(),
    ) {
        log.line(&line)?;
    }
    let skipped = skipped.lock().unwrap_or_else(|e| e.into_inner()).clone();
    write_skipped(&args.out, &skipped)?;
    // The advice is the same every epoch: the epoch lines flag it, the summary says it once more.
    if let Some(advice) = outcome.epochs.iter().rev().find_map(|e| e.advice) {
        log.line(&format!("collapse warning: {advice}"))?;
    }
    if !skipped.is_empty() {
        // A bad file is met once per epoch; count files, and say how often they were met.
        let files: std::collections::BTreeSet<&Path> =
            skipped.iter().map(|(_, s)| s.path.as_path()).collect();
        log.line(&format!(
            "{} unreadable image(s) skipped ({} times in this session); listed in {}",
            files.len(),
            skipped.len(),
            args.out.join(SKIPPED_FILE).display()
        ))?;
    }
    if outcome.signalled {
        log.line(&format!(
            "interrupted, resumable with --resume: stopped at step {} with a checkpoint",
            outcome.step
        ))?;
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    } else if outcome.interrupted {
        log.line(&format!(
            "stopped at step {} with a checkpoint; continue with --resume",
            outcome.step
        ))?;
    } else {
        log.line(&format!(
            "done: {} steps, run in {}",
            outcome.step,
            args.out.display()
        ))?;
    }
    Ok(super::embed::skip_status(skipped.len()))
}

/// One epoch's line in stdout and train.log, printed as the epoch ends: mean loss and loss/ln K, the last
/// step's learning rate, images per second over the epoch (loading and checkpoint included), kNN accuracy
/// when measured, and the collapse warning when it fired.
fn epoch_line(
    e: &crate::train::trainer::EpochSummary,
    epochs: usize,
    lr: Option<f64>,
    images_per_second: f64,
    knn: Option<f64>,
) -> String {
    let mut line = format!(
        "epoch {:>3}/{epochs}: loss {:.4} (loss/ln K {:.3}), lr {}, {images_per_second:.1} images/s, \
         prototype entropy {:.3}",
        e.epoch + 1,
        e.mean_loss,
        e.mean_loss_over_ln_k,
        lr.map_or_else(|| "-".into(), |lr| format!("{lr:.3e}")),
        e.mean_proto_entropy,
    );
    if let Some(acc) = knn {
        line.push_str(&format!(", kNN accuracy {acc:.4}"));
    }
    if let Some(advice) = e.advice.filter(|_| e.collapsed) {
        line.push_str(&format!("  COLLAPSED: {advice}"));
    }
    line
}

/// Images per second over this session's steps (from `first_step`), by the wall clock and by the time spent
/// in `train_step` itself after the first step (which pays for allocator and kernel warm-up); the gap
/// between the two is time waiting for the loader, writing checkpoints and measuring kNN.
fn throughput(
    history: &[StepMetrics],
    first_step: usize,
    batch: usize,
    wall: f64,
) -> Option<String> {
    let done: Vec<&StepMetrics> = history.iter().filter(|m| m.step >= first_step).collect();
    let (first, rest) = done.split_first()?;
    let compute: f64 = first.seconds + rest.iter().map(|m| m.seconds).sum::<f64>();
    let steady: f64 = rest.iter().map(|m| m.seconds).sum();
    let images = done.len() * batch;
    Some(format!(
        "throughput: {} steps ({images} images) in {wall:.1} s: {:.1} images/s; in train_step {:.0}% of \
         the time{}",
        done.len(),
        images as f64 / wall.max(1e-9),
        100.0 * compute / wall.max(1e-9),
        if rest.is_empty() || steady <= 0.0 {
            String::new()
        } else {
            format!(
                ", {:.1} images/s in train_step after the first step",
                (rest.len() * batch) as f64 / steady
            )
        }
    ))
}

/// kNN accuracy of the trainer's current weights; appends a row to the run's knn_epochs.parquet.
fn knn_after_epoch(
    trainer: &Trainer,
    data_dir: &Path,
    knn_train: &str,
    args: &TrainArgs,
    threads: usize,
) -> anyhow::Result<f64> {
    let opts = EmbedOptions {
        crops: CropMode::Image,
        layer: EmbedLayer::Backbone,
        size: trainer.encoder().crop_size(),
        batch_size: 64,
        threads,
        prototype_codes: true,
    };
    let env = crate::pipeline::Env {
        data_dir: data_dir.to_path_buf(),
        threads,
        device: trainer.device,
        stop: None,
    };
    let mut bar = super::embed::Bar(super::embed::progress_bar(0, "crops"));
    // seed 0: the same held-out images after every epoch
    let split = crate::pipeline::eval::frozen_split(
        &env,
        trainer.encoder(),
        (knn_train, None),
        args.knn_test.as_deref().map(|t| (t, None)),
        (0.2, 0),
        &opts,
        &mut bar,
    )?;
    bar.0.finish_and_clear();
    let all: Vec<usize> = (0..split.embeddings.len()).collect();
    let r = knn(&split.embeddings, &all, K, 0, "train --knn-train")?;
    let seconds: f64 = trainer.history.iter().map(|m| m.seconds).sum();
    let df = df!(
        "epoch" => [trainer.epoch.saturating_sub(1) as u32],
        "step" => [trainer.step as u64],
        "train_seconds" => [seconds],
        "accuracy" => [r.accuracy],
        "n_train" => [r.n_bank as u32],
        "n_test" => [r.n_queries as u32],
        "knn_data" => [knn_train.to_string()],
    )?;
    // A resumed run re-measures the epoch it stopped in: keep the newest row per epoch.
    let keep = col("epoch").neq(lit(trainer.epoch.saturating_sub(1) as u32));
    append_parquet(&args.out.join(KNN_FILE), df, Some(keep))?;
    Ok(r.accuracy)
}

/// Prints each line and appends it to the run's `train.log`.
struct RunLog {
    path: PathBuf,
    file: std::fs::File,
}

impl RunLog {
    fn open(run: &Path) -> anyhow::Result<Self> {
        let path = run.join(LOG_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open the run log", path.display()))?;
        Ok(Self { path, file })
    }

    fn line(&mut self, text: &str) -> anyhow::Result<()> {
        println!("{text}");
        writeln!(self.file, "{text}").with_context(|| format!("{}", self.path.display()))
    }
}

/// Appends to the run's skipped list (a resumed run keeps what earlier sessions found).
fn write_skipped(run: &Path, rows: &[(usize, Skip)]) -> anyhow::Result<()> {
    Ok(append_parquet(
        &run.join(SKIPPED_FILE),
        skipped_frame(rows)?,
        None,
    )?)
}

/// Takes the run directory's lock (one writer per run) and clears what a killed writer left: says so when
/// the lock file of a dead process is taken over, and removes half-written checkpoints (`.tmp-ckpt-*`).
fn hold_run_dir(run: &Path) -> anyhow::Result<RunLock> {
    let lock = RunLock::acquire(run)?;
    if let Some(dead) = &lock.stale {
        eprintln!(
            "note: {}: took over the lock of a writer that is gone ({dead})",
            run.display()
        );
    }
    let removed = crate::train::checkpoint::remove_stale_temporaries(run)?;
    if !removed.is_empty() {
        eprintln!(
            "note: {}: removed {} half-written checkpoint(s) of an earlier session: {}",
            run.display(),
            removed.len(),
            removed.join(", ")
        );
    }
    Ok(lock)
}

/// `--resume` continues the run that is there, never another: the data, the sampling and every recipe
/// setting asked for (a `--config` file in full, otherwise the flags given) must equal the saved ones.
fn check_resume_matches(args: &TrainArgs, inputs: &RunInputs) -> anyhow::Result<()> {
    let mut diff = Vec::new();
    if let Some(saved) = RunInputs::read(&args.out)? {
        diff.extend(saved.differences(inputs));
    }
    let saved_path = args.out.join(crate::train::checkpoint::CONFIG_FILE);
    let saved: Option<TrainConfig> = crate::run_dir::read_json_if_present(&saved_path)
        .with_context(|| format!("{}: not a training config", saved_path.display()))?;
    if let Some(saved) = saved {
        if args.config.is_some() {
            diff.extend(config_differences(&saved, &build_config(args)?, None)?);
        } else {
            // Only what the flags set: the rest of a flag-only config is defaults, not a request.
            let mut asked = saved.clone();
            let mut keys = Vec::new();
            if let Some(m) = args.method {
                asked.method = m;
                keys.push("method");
            }
            if let Some(v) = args.epochs {
                asked.epochs = v;
                keys.push("epochs");
            }
            if let Some(v) = args.batch_size {
                asked.batch_size = v;
                keys.push("batch_size");
            }
            if let Some(a) = args.arch {
                asked.arch = a;
                keys.push("arch");
            }
            if let Some(v) = args.seed {
                asked.seed = v;
                keys.push("seed");
            }
            diff.extend(config_differences(&saved, &asked, Some(&keys))?);
        }
    }
    if !diff.is_empty() {
        anyhow::bail!(
            "{}: --resume asks for another run than the one saved there ({}); resume with the run's own \
             settings or choose another --out",
            args.out.display(),
            diff.join("; ")
        );
    }
    Ok(())
}

/// A dataset directory as an absolute path (as given when it cannot be resolved), so the same data
/// reached from another working directory is the same input.
fn canonical(dir: &str) -> String {
    std::fs::canonicalize(dir)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dir.to_string())
}
