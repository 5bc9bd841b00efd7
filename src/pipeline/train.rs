//! The `train` stage: SwAV (or the SimCLR baseline) on the images of one or more datasets with the
//! multi-crop loader; checkpoints, metrics.parquet, config.json, skipped.parquet, machine.json and
//! train.log in the run directory. The environment's stop flag (or `max_steps`) checkpoints and stops;
//! `resume` continues exactly where the run stopped.
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use polars::prelude::*;

use super::{dataset_name, Env, Progress};
use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embed::{dataset_samples, CropMode, EmbedOptions};
use crate::analyze::knn::{knn, K};
use crate::data::compose::resolve_dataset;
use crate::data::decode::Skip;
use crate::data::source::Sample;
use crate::error::{Error, Result};
use crate::loader::{LoaderOptions, MultiCropLoader};
use crate::report::io::append_parquet;
use crate::run_dir::{has_checkpoint, EmbedLayer};
use crate::train::metrics::{metrics_frame, COL_EPOCH, COL_LOSS_OVER_LN_K, COL_SECONDS};
use crate::train::run_identity::{config_differences, RunInputs};
use crate::train::run_lock::RunLock;
use crate::train::trainer::{EpochSummary, FitOptions, FitOutcome};
use crate::train::{StepMetrics, TrainConfig, Trainer};

/// Per-file list of what the loader could not read during the run.
pub const SKIPPED_FILE: &str = "skipped.parquet";
/// Per-epoch kNN accuracy (`knn_train`): epoch, step, train seconds so far, accuracy.
pub const KNN_FILE: &str = "knn_epochs.parquet";
/// Human-readable log of the run (appended by every session, resumed ones included).
pub const LOG_FILE: &str = "train.log";
/// Random stream of the `max_images` sample.
const STREAM_MAX_IMAGES: u64 = 0x5a3;

/// What to train, on what, and where.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Datasets (names under the data dir, or folders), mixed.
    pub data: Vec<String>,
    /// Run directory.
    pub out: PathBuf,
    /// The recipe of a fresh run (already fitted to the run and validated, see [`fitted_config`]); on
    /// resume, what the saved run must match (see `compare`). The device trained on is its `device`.
    pub config: TrainConfig,
    /// On resume, the settings of `config` that must equal the saved run's: `None`, all of them but the
    /// resumable ones (a complete config, e.g. a file); `Some(keys)`, only those (the flags a user gave).
    pub compare: Option<Vec<&'static str>>,
    /// Continue the run in `out` from its latest checkpoint when it has one (else start it).
    pub resume: bool,
    /// Stop (with a checkpoint) after this many optimisation steps in total.
    pub max_steps: Option<usize>,
    /// Also checkpoint every N steps (a checkpoint is always written at the end of each epoch).
    pub checkpoint_every: Option<usize>,
    /// After every epoch, weighted kNN accuracy on this labelled dataset's frozen features.
    pub knn_train: Option<String>,
    /// Labelled test set of the per-epoch kNN (`None`: a seeded `knn_test_fraction` of `knn_train`'s
    /// images).
    pub knn_test: Option<String>,
    /// Share of `knn_train`'s images held out when there is no `knn_test` (the CLI's default is 0.2; the
    /// grid runner passes its `[evaluate] test_fraction`, so the last epoch's row equals the final probe).
    pub knn_test_fraction: f64,
    /// Train on the datasets' COCO boxes, every crop inside one object's box.
    pub object_crops: bool,
    /// Train on a seeded sample of at most N images.
    pub max_images: Option<usize>,
}

/// What a training session did.
#[derive(Debug, Clone)]
pub struct TrainResult {
    pub run: PathBuf,
    /// Whether it continued a saved run.
    pub resumed: bool,
    /// Steps done in total (this session and earlier ones).
    pub step: usize,
    pub steps_per_epoch: usize,
    /// Images trained on (after `max_images`).
    pub images: usize,
    /// The epochs finished in this session.
    pub epochs: Vec<EpochSummary>,
    /// Mean loss / ln K over the run's last epoch (≈ 1: the codes carry no information); `None` before
    /// any step.
    pub final_loss_over_ln_k: Option<f64>,
    /// Seconds spent in training steps over the whole run.
    pub train_seconds: f64,
    /// kNN accuracy after each epoch of this session, `(epoch, accuracy)`, when `knn_train` was given.
    pub knn: Vec<(usize, f64)>,
    /// Files the loader could not read in this session, with the epoch they were met in (a bad file is met
    /// once per epoch); appended to `skipped_file`.
    pub skipped: Vec<(usize, Skip)>,
    pub skipped_file: PathBuf,
    /// Stopped before the last epoch (stop flag or `max_steps`), with a checkpoint: resumable.
    pub interrupted: bool,
    /// Stopped by the stop flag (as opposed to `max_steps`).
    pub signalled: bool,
}

impl TrainResult {
    /// Distinct files skipped in this session.
    pub fn skipped_files(&self) -> usize {
        let files: std::collections::BTreeSet<&Path> =
            self.skipped.iter().map(|(_, s)| s.path.as_path()).collect();
        files.len()
    }
}

/// `cfg` fitted to a short run or odd batch size (the notes say what changed) and validated for training
/// on this machine, with `origin` naming where it came from in the error: [`TrainConfig::fitted`], which
/// the experiment grid's cells apply too.
pub fn fitted_config(cfg: TrainConfig, origin: &str) -> Result<(TrainConfig, Vec<String>)> {
    cfg.fitted(origin)
}

fn skipped_frame(rows: &[(usize, Skip)]) -> PolarsResult<DataFrame> {
    df!(
        "epoch" => rows.iter().map(|(e, _)| *e as u32).collect::<Vec<_>>(),
        "path" => rows.iter().map(|(_, s)| s.path.display().to_string()).collect::<Vec<_>>(),
        "reason" => rows.iter().map(|(_, s)| s.reason.to_string()).collect::<Vec<_>>(),
    )
}

/// Trains `req.out`: `progress` hears of the steps (its length is the run's, its start the step resumed
/// at), of the running loss (`message`), of every line of train.log (`line`) and of notes about the run
/// directory (`note`). Threads: `env.threads` for the loader (the caller sets libtorch's).
pub fn train(env: &Env, req: &TrainRequest, progress: &mut dyn Progress) -> Result<TrainResult> {
    if req.knn_train.is_some() && req.knn_test.is_none() {
        // refused before training, not after the first epoch
        super::eval::check_test_fraction(req.knn_test_fraction)?;
    }
    let mut samples: Vec<Sample> = Vec::new();
    let mut dirs = Vec::new();
    for d in &req.data {
        let dir = resolve_dataset(&env.data_dir, d)?;
        let name = dataset_name(&dir, d);
        // Object-aware crops (Purushwalkam & Gupta §6): one sample per annotated object, every crop
        // drawn inside its box, so a crop never mixes two objects of a scene.
        let crops = if req.object_crops {
            CropMode::Boxes
        } else {
            CropMode::Image
        };
        let (found, _) = dataset_samples(&dir, &name, crops, None)
            .map_err(|e| Error::Invalid(format!("--data {d}: {e}")))?;
        samples.extend(found);
        dirs.push(dir.display().to_string());
    }
    let inputs = RunInputs {
        data: dirs.iter().map(|d| canonical(d)).collect(),
        object_crops: req.object_crops,
        max_images: req.max_images,
    };
    let dirs = dirs.join(" + ");
    let _lock = hold_run_dir(&req.out, progress)?;
    let resuming = req.resume && has_checkpoint(&req.out);
    // The config first (the saved run's when resuming), then the loader, whose batch count is the
    // schedule's steps_per_epoch: a new trainer is built with it, a resumed one must have it already.
    let resumed = if resuming {
        let saved = check_resume_matches(req, &inputs)?;
        // The saved run must fit this machine too (it may have been trained on a larger one): checked
        // before its checkpoint is loaded and its first step allocates.
        if let Some(saved) = saved {
            let origin = req.out.join(crate::train::checkpoint::CONFIG_FILE);
            saved.validate_for_training(&origin.display().to_string())?;
        }
        Some(Trainer::resume(&req.out)?)
    } else {
        // A caller that built its config by hand (not through `fitted_config`) is checked here, before the
        // run directory is made and the model allocated.
        req.config.validate_for_training("training config")?;
        if has_checkpoint(&req.out) {
            return Err(Error::Invalid(format!(
                "{}: holds a run already; pass --resume to continue it or choose another --out",
                req.out.display()
            )));
        }
        // a device this machine lacks is refused before the run directory is made
        req.config.parse_device("--device")?;
        std::fs::create_dir_all(&req.out).map_err(|e| Error::io(&req.out, e))?;
        inputs.write(&req.out)?;
        None
    };
    let cfg = resumed
        .as_ref()
        .map_or_else(|| req.config.clone(), |t| t.config().clone());
    if let Some(n) = req.max_images {
        if samples.len() > n {
            // Seeded by the run's seed, so a resumed run draws the same images.
            let mut keep =
                sample_without_replacement(samples.len(), n, cfg.seed, STREAM_MAX_IMAGES);
            keep.sort_unstable();
            samples = keep.into_iter().map(|i| samples[i].clone()).collect();
        }
    }
    let opts = LoaderOptions {
        batch_size: cfg.batch_size as usize,
        seed: cfg.seed,
        threads: env.threads,
        ..LoaderOptions::default()
    };
    let loader = MultiCropLoader::new(samples, cfg.multicrop(), opts)?;
    let steps = loader.num_batches();
    if steps == 0 {
        return Err(Error::Invalid(format!(
            "{dirs}: {} images, fewer than one batch of {}",
            loader.samples().len(),
            cfg.batch_size
        )));
    }
    let mut data_notes = Vec::new();
    let mut trainer = match resumed {
        Some(t) if t.config().steps_per_epoch != steps => {
            return Err(Error::Invalid(format!(
                "{}: the run was trained with {} steps per epoch, the dataset now gives {steps}",
                req.out.display(),
                t.config().steps_per_epoch
            )));
        }
        Some(t) => t,
        None => {
            let mut cfg = cfg;
            data_notes = cfg.fit_to_data(steps);
            cfg.validate("training config")?;
            Trainer::new(cfg, req.config.parse_device("--device")?)?
        }
    };

    progress.start(trainer.config().epochs * steps);
    progress.advance(trainer.step());
    let skipped: RefCell<Vec<(usize, Skip)>> = RefCell::default();
    // The latest step's loss, for the running mean (written by `fit` after every step).
    let last_loss = Arc::new(AtomicU64::new(f64::NAN.to_bits()));
    let fit_opts = FitOptions {
        stop: env.stop.clone(),
        checkpoint_every: req.checkpoint_every,
        max_steps: req.max_steps,
        until_epoch: None,
        last_loss: Some(last_loss.clone()),
    };
    // Which machine this session runs on, before its first step: on the CPU a seed's numbers are
    // reproducible per machine, not across CPUs (ATen picks kernels by the CPU's vector extensions).
    let before = crate::machine::MachineLog::read(&req.out)?;
    let machine = crate::machine::record(
        &req.out,
        if resuming { "resume" } else { "start" },
        Some(trainer.step()),
    )?;
    if let Some(earlier) = before.last().filter(|m| {
        resuming && (m.cpu_capability != machine.cpu_capability || m.cpu_model != machine.cpu_model)
    }) {
        progress.note(&format!(
            "resuming on another CPU ({}, capability {}) than the run's last session ({}, capability {}): \
             the run is no longer reproducible on one machine (both are in {})",
            machine.cpu_model.as_deref().unwrap_or("unknown"),
            machine.cpu_capability,
            earlier.cpu_model.as_deref().unwrap_or("unknown"),
            earlier.cpu_capability,
            req.out.join(crate::machine::MACHINE_FILE).display()
        ));
    }
    let mut log = RunLog::open(&req.out)?;
    let progress = RefCell::new(progress);
    let say = |log: &mut RunLog, text: &str| -> Result<()> {
        progress.borrow_mut().line(text);
        log.line(text)
    };
    say(&mut log, &machine.summary())?;
    say(
        &mut log,
        &format!(
            "{} on {dirs} ({} images, {steps} steps/epoch, {} epochs){}",
            trainer.config().method.paper_name(),
            loader.samples().len(),
            trainer.config().epochs,
            if resuming {
                format!(", resuming at step {}", trainer.step())
            } else {
                String::new()
            }
        ),
    )?;
    for note in &data_notes {
        say(&mut log, &format!("note: {note}"))?;
    }
    // The run pauses after every epoch to log its line, and to measure kNN when asked: the same weights
    // as one call (the trainer's state carries over, see tests/train.rs).
    let mut epochs = Vec::new();
    let mut knn_epochs = Vec::new();
    let (session_start, first_step) = (std::time::Instant::now(), trainer.step());
    let outcome = loop {
        let opts = FitOptions {
            until_epoch: Some(trainer.epoch() + 1),
            ..fit_opts.clone()
        };
        let (epoch_start, step_before) = (std::time::Instant::now(), trainer.step());
        let (progress, skipped) = (&progress, &skipped);
        let o = trainer.fit(
            &req.out,
            |epoch| {
                let last_loss = last_loss.clone();
                // Mean loss of this epoch's steps so far (the running loss): when a batch is drawn, the
                // latest loss is the previous step's, of this epoch unless this is its first batch.
                let (mut sum, mut n, mut drawn) = (0.0, 0usize, 0usize);
                loader.epoch(epoch).map(move |b| {
                    let loss = f64::from_bits(last_loss.load(Ordering::Relaxed));
                    let mut p = progress.borrow_mut();
                    if drawn > 0 && loss.is_finite() {
                        sum += loss;
                        n += 1;
                        p.message(&format!("loss {:.4}", sum / n as f64));
                    }
                    drawn += 1;
                    p.advance(1);
                    if !b.skipped.is_empty() {
                        let mut s = skipped.borrow_mut();
                        s.extend(b.skipped.into_iter().map(|k| (epoch, k)));
                    }
                    Ok(b.crops)
                })
            },
            &opts,
        )?;
        let knn_acc = match (&req.knn_train, o.epochs.is_empty()) {
            (Some(knn_train), false) => {
                let acc = knn_after_epoch(&trainer, env, knn_train, req)?;
                knn_epochs.push((trainer.epoch().saturating_sub(1), acc));
                Some(acc)
            }
            _ => None,
        };
        for e in &o.epochs {
            let images = (trainer.step() - step_before) * trainer.config().batch_size as usize;
            let line = epoch_line(
                e,
                trainer.config().epochs,
                trainer.history().last().map(|m| m.lr),
                images as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9),
                knn_acc,
            );
            say(&mut log, &line)?;
        }
        epochs.extend(o.epochs.iter().cloned());
        // Go on only after a pause at an epoch's end: a call that finished no epoch was stopped (the stop
        // flag or max_steps, whose next call would return at once), and an uninterrupted one is the end.
        if !o.interrupted || o.epochs.is_empty() {
            break FitOutcome {
                epochs: std::mem::take(&mut epochs),
                ..o
            };
        }
    };

    if let Some(line) = throughput(
        &trainer.history(),
        first_step,
        trainer.config().batch_size as usize,
        session_start.elapsed().as_secs_f64(),
    ) {
        say(&mut log, &line)?;
    }
    let skipped = skipped.into_inner();
    let skipped_file = req.out.join(SKIPPED_FILE);
    // Appended: a resumed run keeps what earlier sessions found.
    let frame = skipped_frame(&skipped).map_err(|e| Error::polars("listing skipped files", e))?;
    append_parquet(&skipped_file, frame, None)?;
    // The advice is the same every epoch: the epoch lines flag it, the summary says it once more.
    if let Some(advice) = outcome.epochs.iter().rev().find_map(|e| e.advice) {
        say(&mut log, &format!("collapse warning: {advice}"))?;
    }
    let (final_loss_over_ln_k, train_seconds) = run_summary(&trainer.history())?;
    let result = TrainResult {
        run: req.out.clone(),
        resumed: resuming,
        step: outcome.step,
        steps_per_epoch: steps,
        images: loader.samples().len(),
        epochs: outcome.epochs,
        final_loss_over_ln_k,
        train_seconds,
        knn: knn_epochs,
        skipped,
        skipped_file,
        interrupted: outcome.interrupted,
        signalled: outcome.signalled,
    };
    if !result.skipped.is_empty() {
        say(
            &mut log,
            &format!(
                "{} unreadable image(s) skipped ({} times in this session); listed in {}",
                result.skipped_files(),
                result.skipped.len(),
                result.skipped_file.display()
            ),
        )?;
    }
    let last = if result.signalled {
        format!(
            "interrupted, resumable with --resume: stopped at step {} with a checkpoint",
            result.step
        )
    } else if result.interrupted && result.step == 0 && req.max_steps == Some(0) {
        // asked for the network as initialised (the grid's untrained cells): nothing to continue
        format!(
            "untrained: the network as initialised, checkpointed at step 0 in {}",
            req.out.display()
        )
    } else if result.interrupted {
        format!(
            "stopped at step {} with a checkpoint; continue with --resume",
            result.step
        )
    } else {
        format!("done: {} steps, run in {}", result.step, req.out.display())
    };
    say(&mut log, &last)?;
    Ok(result)
}

/// The last epoch's mean loss / ln K and the seconds of every step, from the metrics as metrics.parquet
/// holds them (the same frame and the same reductions, so the numbers are the file's to the bit).
fn run_summary(history: &[StepMetrics]) -> Result<(Option<f64>, f64)> {
    let ctx = |e| Error::polars("summarising the run's metrics", e);
    let metrics = metrics_frame(history)?;
    let last = metrics
        .clone()
        .lazy()
        .filter(col(COL_EPOCH).eq(col(COL_EPOCH).max()))
        .select([col(COL_LOSS_OVER_LN_K).mean()])
        .collect()
        .map_err(ctx)?;
    let loss = last
        .column(COL_LOSS_OVER_LN_K)
        .ok()
        .and_then(|c| c.cast(&DataType::Float64).ok())
        .and_then(|c| c.f64().ok().and_then(|c| c.get(0)));
    let secs = metrics
        .column(COL_SECONDS)
        .map_err(ctx)?
        .cast(&DataType::Float64)
        .map_err(ctx)?;
    let secs = secs.f64().map_err(ctx)?.sum().unwrap_or(0.0);
    Ok((loss, secs))
}

/// One epoch's line in train.log, written as the epoch ends: mean loss and loss/ln K, the last step's
/// learning rate, images per second over the epoch (loading and checkpoint included), kNN accuracy when
/// measured, and the collapse warning when it fired.
fn epoch_line(
    e: &EpochSummary,
    epochs: usize,
    lr: Option<f64>,
    images_per_second: f64,
    knn: Option<f64>,
) -> String {
    let mut line = format!(
        "epoch {:>3}/{epochs}: loss {:.4} (loss/{} {:.3}), lr {}, {images_per_second:.1} images/s",
        e.epoch + 1,
        e.mean_loss,
        e.normaliser,
        e.mean_loss_over_ln_k,
        lr.map_or_else(|| "-".into(), |lr| format!("{lr:.3e}")),
    );
    // SimCLR and MoCo train no prototypes: their codes would be an untrained layer's argmax
    if !e.mean_proto_entropy.is_nan() {
        line.push_str(&format!(", prototype entropy {:.3}", e.mean_proto_entropy));
    }
    if let (Some(h), Some(kl)) = (e.mean_teacher_entropy, e.mean_teacher_student_kl) {
        line.push_str(&format!(
            ", teacher entropy {h:.3}, KL(teacher‖student) {kl:.4}"
        ));
    }
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
    env: &Env,
    knn_train: &str,
    req: &TrainRequest,
) -> Result<f64> {
    let opts = EmbedOptions {
        crops: CropMode::Image,
        layer: EmbedLayer::Backbone,
        size: trainer.encoder().crop_size(),
        batch_size: 64,
        threads: env.threads,
        prototype_codes: true,
    };
    let env = Env {
        device: trainer.device(),
        // measured whole: a stop is honoured by the training step that follows
        stop: None,
        ..env.clone()
    };
    // seed 0: the same held-out images after every epoch
    let split = super::eval::frozen_split(
        &env,
        trainer.encoder(),
        (knn_train, None),
        req.knn_test.as_deref().map(|t| (t, None)),
        (req.knn_test_fraction, 0),
        &opts,
        &mut (),
    )?;
    let all: Vec<usize> = (0..split.embeddings.len()).collect();
    let r = knn(&split.embeddings, &all, K, 0, "train --knn-train")?;
    let seconds: f64 = trainer.history().iter().map(|m| m.seconds).sum();
    let df = df!(
        "epoch" => [trainer.epoch().saturating_sub(1) as u32],
        "step" => [trainer.step() as u64],
        "train_seconds" => [seconds],
        "accuracy" => [r.accuracy],
        "accuracy_lo" => [r.accuracy_lo],
        "accuracy_hi" => [r.accuracy_hi],
        "chance" => [r.chance],
        "n_train" => [r.n_bank as u32],
        "n_test" => [r.n_queries as u32],
        "knn_data" => [knn_train.to_string()],
    )
    .map_err(|e| Error::polars("the per-epoch kNN row", e))?;
    // A resumed run re-measures the epoch it stopped in: keep the newest row per epoch.
    let keep = col("epoch").neq(lit(trainer.epoch().saturating_sub(1) as u32));
    append_parquet(&req.out.join(KNN_FILE), df, Some(keep))?;
    Ok(r.accuracy)
}

/// Appends each line to the run's `train.log`.
struct RunLog {
    path: PathBuf,
    file: std::fs::File,
}

impl RunLog {
    fn open(run: &Path) -> Result<Self> {
        let path = run.join(LOG_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self { path, file })
    }

    fn line(&mut self, text: &str) -> Result<()> {
        writeln!(self.file, "{text}").map_err(|e| Error::io(&self.path, e))
    }
}

/// Takes the run directory's lock (one writer per run) and clears what a killed writer left: notes when
/// the lock file of a dead process is taken over, and removes half-written checkpoints (`.tmp-ckpt-*`).
fn hold_run_dir(run: &Path, progress: &mut dyn Progress) -> Result<RunLock> {
    let lock = RunLock::acquire(run)?;
    if let Some(dead) = &lock.stale {
        progress.note(&format!(
            "{}: took over the lock of a writer that is gone ({dead})",
            run.display()
        ));
    }
    let removed = crate::train::checkpoint::remove_stale_temporaries(run)?;
    if !removed.is_empty() {
        progress.note(&format!(
            "{}: removed {} half-written checkpoint(s) of an earlier session: {}",
            run.display(),
            removed.len(),
            removed.join(", ")
        ));
    }
    Ok(lock)
}

/// A resume continues the run that is there, never another: the data, the sampling and every recipe
/// setting asked for must equal the saved ones.
/// Returns the saved config, when the run has one.
fn check_resume_matches(req: &TrainRequest, inputs: &RunInputs) -> Result<Option<TrainConfig>> {
    let mut diff = Vec::new();
    if let Some(saved) = RunInputs::read(&req.out)? {
        diff.extend(saved.differences(inputs));
    }
    let saved_path = req.out.join(crate::train::checkpoint::CONFIG_FILE);
    let saved: Option<TrainConfig> = crate::run_dir::read_json_if_present(&saved_path)?;
    if let Some(saved) = &saved {
        diff.extend(config_differences(
            saved,
            &req.config,
            req.compare.as_deref(),
        )?);
    }
    if !diff.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: --resume asks for another run than the one saved there ({}); resume with the run's own \
             settings or choose another --out",
            req.out.display(),
            diff.join("; ")
        )));
    }
    Ok(saved)
}

/// A dataset directory as an absolute path (as given when it cannot be resolved), so the same data
/// reached from another working directory is the same input.
fn canonical(dir: &str) -> String {
    std::fs::canonicalize(dir)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dir.to_string())
}
