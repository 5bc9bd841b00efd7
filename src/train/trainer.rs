//! The training loop: `Trainer` owns the student network, the optimiser state, the objective (SwAV, SimCLR,
//! MoCo v2 or DINO, with its own state: `objective/`) and the position; it runs one step on crops given as
//! tensors, and `fit` runs epochs with metrics, checkpoints, resume and SIGINT.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::swav::SwavOutput;
use crate::model::{normalize_prototypes, RunningStats, SwavModel};
use crate::report::io::{read_parquet, write_bytes_atomic, write_parquet};
use crate::run_dir::{EncoderView, MODEL_PREFIX};
use crate::train::checkpoint::{self, CheckpointMeta, CONFIG_FILE};
use crate::train::config::TrainConfig;
use crate::train::lars::{trainable, Lars};
use crate::train::loss_scale::LossScaler;
pub use crate::train::metrics::StepMetrics;
use crate::train::metrics::{metrics_frame, rows_from_frame, METRICS_FILE};
use crate::train::objective::{self, Objective, StepContext};
use crate::train::schedule::lr_at;

/// Checkpoint prefix of the optimiser's momentum buffers (the student's variables are under `MODEL_PREFIX`).
pub const LARS_PREFIX: &str = "lars.";

/// What to do about collapse: the SwAV README's troubleshooting advice for small-batch training (each
/// objective gives its own, `Objective::collapse_advice`).
pub const COLLAPSE_ADVICE: &str = "training looks collapsed (loss ≈ ln K or one prototype takes nearly all \
assignments). The SwAV authors' advice: lower epsilon (e.g. 0.03 → 0.02), freeze the prototypes longer \
(freeze_prototypes_niters), and start the queue later (epoch_queue_starts) or use a longer queue_length.";

pub use crate::run_dir::EmbedLayer;

/// Summary of one finished epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochSummary {
    pub epoch: usize,
    pub steps: usize,
    pub mean_loss: f64,
    pub mean_loss_over_ln_k: f64,
    /// NaN for methods that train no prototypes.
    pub mean_proto_entropy: f64,
    /// What `mean_loss_over_ln_k` divides by ("ln K", "ln(2B-1)", "ln(1+moco_k)").
    pub normaliser: String,
    /// DINO's collapse signals, averaged over the epoch's steps.
    pub mean_teacher_entropy: Option<f64>,
    pub mean_teacher_student_kl: Option<f64>,
    pub collapsed: bool,
    /// The method's advice (SwAV's is `COLLAPSE_ADVICE`) when `collapsed`.
    pub advice: Option<&'static str>,
}

/// Options of `fit`.
#[derive(Debug, Default, Clone)]
pub struct FitOptions {
    /// Checked before every step; when set, `fit` checkpoints and returns (see `install_sigint_flag`).
    pub stop: Option<Arc<AtomicBool>>,
    /// Also checkpoint every this many global steps.
    pub checkpoint_every: Option<usize>,
    /// Stop (with a checkpoint) once this many global steps are done.
    pub max_steps: Option<usize>,
    /// Return once this many epochs are complete (the caller evaluates, then calls `fit` again).
    pub until_epoch: Option<usize>,
    /// Receives each step's loss (f64 bits) as it is done, for a progress display.
    pub last_loss: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// How `fit` ended.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOutcome {
    pub epochs: Vec<EpochSummary>,
    /// True when stopped by the flag or `max_steps` before the last epoch finished.
    pub interrupted: bool,
    /// True when the stop flag (SIGINT, SIGTERM) ended it, as opposed to `max_steps` or `until_epoch`.
    pub signalled: bool,
    pub step: usize,
}

/// Sets a flag on SIGINT (Ctrl-C), SIGTERM or SIGHUP (ctrlc's `termination` feature) instead of killing the
/// process, so `fit` can checkpoint and return: a scheduler's `kill` loses no more than Ctrl-C does.
/// The OS handler is installed once per process; later calls (several runs in one process, as the
/// experiment grid does) share its flag, so one Ctrl-C stops them all.
pub fn install_sigint_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: std::sync::OnceLock<std::result::Result<Arc<AtomicBool>, String>> =
        std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        ctrlc::set_handler(move || f.store(true, Ordering::SeqCst))
            .map(|()| flag)
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| Error::Invalid(format!("installing the SIGINT handler: {e}")))
}

pub struct Trainer {
    cfg: TrainConfig,
    device: Device,
    vs: VarStore,
    model: SwavModel,
    opt: Lars,
    objective: Box<dyn Objective>,
    /// Dynamic loss scaling, present when training under fp16 autocast (CUDA and `use_fp16`).
    scaler: Option<LossScaler>,
    /// Current epoch (0-based) and steps done in it.
    epoch: usize,
    step_in_epoch: usize,
    /// Global steps done (crate-visible so a test can stamp a saved run's position).
    pub(crate) step: usize,
    history: Vec<StepMetrics>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("cfg", &self.cfg)
            .field("epoch", &self.epoch)
            .field("step", &self.step)
            .finish()
    }
}

impl Trainer {
    /// Validates `cfg` and builds a freshly initialised model (seeded from `cfg.seed`) on `device`.
    pub fn new(cfg: TrainConfig, device: Device) -> Result<Self> {
        cfg.validate("train config")?;
        let fp16 = cfg.use_fp16 && device.is_cuda();
        let (vs, model) = SwavModel::new_seeded(&cfg.model_config(), cfg.seed, device);
        let opt = Lars::for_config(&vs, &cfg);
        let objective = objective::build(&cfg, &vs, device)?;
        Ok(Trainer {
            cfg,
            device,
            vs,
            model,
            opt,
            objective,
            // autocast is CUDA's: on the CPU the forward pass stays fp32 and needs no scaling
            scaler: fp16.then(LossScaler::default),
            epoch: 0,
            step_in_epoch: 0,
            step: 0,
            history: Vec::new(),
        })
    }

    /// Rebuilds the trainer from the latest checkpoint in `run_dir` (device from the saved config), with the
    /// metrics history of the steps already done.
    pub fn resume(run_dir: &Path) -> Result<Self> {
        Self::resume_on(run_dir, None)
    }

    /// As [`Trainer::resume`], on `device` instead of the saved one (embedding a GPU-trained run on a CPU
    /// machine, or an imported run on a GPU).
    pub fn resume_on(run_dir: &Path, device: Option<Device>) -> Result<Self> {
        let (meta, tensors) = checkpoint::load(run_dir)?;
        let origin = checkpoint::latest_dir(run_dir)?;
        let device = match device {
            Some(d) => d,
            None => meta.config.parse_device(&origin.display().to_string())?,
        };
        let mut t = Trainer::new(meta.config.clone(), device)?;
        t.objective
            .prepare_restore(&|name| tensors.contains_key(name), meta.queue_in_use);
        let dst: Vec<(String, Tensor)> = t.state_tensors().into_iter().collect();
        checkpoint::copy_into(&origin, &tensors, &dst)?;
        // a run that scaled its loss goes on scaling it from where it was (exact on any device)
        if meta.loss_scaler.is_some() {
            t.scaler = meta.loss_scaler;
        }
        t.epoch = meta.epoch;
        t.step_in_epoch = meta.step_in_epoch;
        t.step = meta.step;
        // The checkpoint's own history covers every step it holds, mid-epoch ones included; checkpoints
        // from before it was stored fall back to metrics.parquet (written at epoch ends and stops only).
        let rows = match checkpoint::load_history(run_dir)? {
            Some(rows) => rows,
            None => {
                let mpath = run_dir.join(METRICS_FILE);
                if mpath.exists() {
                    rows_from_frame(&read_parquet(&mpath)?)?
                } else {
                    Vec::new()
                }
            }
        };
        t.history = rows.into_iter().filter(|r| r.step < meta.step).collect();
        Ok(t)
    }

    /// Every tensor a checkpoint holds: `model.*` (all VarStore variables, BN statistics included),
    /// `lars.*` (momentum buffers) and the objective's state (SwAV's queue, a momentum encoder, …).
    /// The one list of names both saving and resuming use (the tensors are the live ones, not copies).
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut m: BTreeMap<String, Tensor> = self
            .vs
            .variables()
            .into_iter()
            .map(|(n, v)| (format!("{MODEL_PREFIX}{n}"), v))
            .collect();
        for (n, b) in &self.opt.buffers {
            m.insert(format!("{LARS_PREFIX}{n}"), b.shallow_clone());
        }
        m.extend(self.objective.state());
        m
    }

    /// Writes a checkpoint of the current position into `run_dir` (atomic; older ones removed after).
    pub fn save_checkpoint(&self, run_dir: &Path) -> Result<()> {
        let meta = CheckpointMeta {
            epoch: self.epoch,
            step_in_epoch: self.step_in_epoch,
            step: self.step,
            seed: self.cfg.seed,
            queue_in_use: self.objective.queue_in_use(),
            loss_scaler: self.scaler,
            config: self.cfg.clone(),
            tensors: Vec::new(),
        };
        let done: Vec<StepMetrics> = self
            .history
            .iter()
            .filter(|r| r.step < self.step)
            .cloned()
            .collect();
        checkpoint::save(run_dir, &meta, &self.state_tensors(), &done).map(|_| ())
    }

    fn total_steps(&self) -> usize {
        self.cfg.epochs * self.cfg.steps_per_epoch
    }

    /// Learning rate for the current step.
    pub fn current_lr(&self) -> f64 {
        let c = &self.cfg;
        lr_at(
            self.step,
            self.total_steps(),
            c.warmup_epochs * c.steps_per_epoch,
            c.start_warmup,
            c.base_lr,
            c.final_lr,
        )
    }

    fn check_crops(&self, crops: &[Tensor]) -> Result<i64> {
        let v = self.cfg.total_crops();
        if crops.len() != v {
            return Err(Error::Invalid(format!(
                "train_step: got {} crops, config nmb_crops {:?} needs {v}",
                crops.len(),
                self.cfg.crops.nmb_crops
            )));
        }
        let b = crops[0].size().first().copied().unwrap_or(0);
        for (i, c) in crops.iter().enumerate() {
            let s = c.size();
            let want = self.cfg.crop_size(i).unwrap_or(0);
            if s.len() != 4 || s[0] != b || s[1] != 3 || s[2] != want || s[3] != want {
                return Err(Error::Invalid(format!(
                    "train_step: crop {i} has shape {s:?}, expected [{b}, 3, {want}, {want}]"
                )));
            }
        }
        if b < 2 {
            return Err(Error::Invalid(format!(
                "train_step: batch of {b} images; need ≥ 2"
            )));
        }
        if self.objective.needs_full_batches() && b != self.cfg.batch_size {
            return Err(Error::Invalid(format!(
                "train_step: batch of {b} images but batch_size is {} (the queue needs full batches; drop the last partial batch)",
                self.cfg.batch_size
            )));
        }
        Ok(b)
    }

    /// One optimisation step on `crops` (per crop `[B, 3, S, S]`, in config order). A non-finite loss is an
    /// error naming the step; the weights are left as they were before the step.
    pub fn train_step(&mut self, crops: &[Tensor]) -> Result<StepMetrics> {
        let start = Instant::now();
        let bs = self.check_crops(crops)?;
        let crops: Vec<Tensor> = crops
            .iter()
            .map(|c| c.to_device(self.device).to_kind(Kind::Float))
            .collect();
        let fp16 = self.scaler.is_some() && self.device.is_cuda();
        let ctx = StepContext {
            step: self.step,
            epoch: self.epoch,
            total_steps: self.total_steps(),
            batch: bs,
            device: self.device,
            fp16,
        };

        // ============ set learning rate ... ============
        let lr = self.current_lr();

        // ============ normalize the prototypes ... ============
        normalize_prototypes(&self.model.prototypes);

        // BN running statistics change in the forward pass; keep them to undo a step whose loss is not finite
        let bn_stats = RunningStats::save(&self.vs);

        // ============ multi-res forward passes ... (fp16 autocast on CUDA) ============
        let seen = self.objective.student_crops(crops.len());
        let out = tch::autocast(fp16, || self.model.forward_t(&crops[..seen], true));
        // Sinkhorn's exp(scores/ε) and the softmax losses need fp32 range: cast back before them
        let out = SwavOutput {
            features: out.features,
            embedding: out.embedding.to_kind(Kind::Float),
            scores: out.scores.iter().map(|s| s.to_kind(Kind::Float)).collect(),
        };

        // ============ the method's loss (codes, queue, momentum encoder, …) ============
        let l = self.objective.loss(&ctx, &self.model, &crops, &out)?;
        let loss_value = l.loss.double_value(&[]);
        if !loss_value.is_finite() {
            bn_stats.restore();
            self.objective.rollback();
            return Err(Error::Invalid(format!(
                "non-finite loss {loss_value} at step {} (epoch {}, batch {}); weights not updated",
                self.step, self.epoch, self.step_in_epoch
            )));
        }

        // ============ backward (loss scaled under fp16) ... ============
        Lars::zero_grad(&self.vs);
        match &self.scaler {
            Some(s) => (&l.loss * s.scale).backward(),
            None => l.loss.backward(),
        }
        let grads_finite = self.scaler.as_ref().is_none_or(|s| s.unscale(&self.vs));
        if let Some(s) = self.scaler.as_mut() {
            s.update(grads_finite);
        }

        // ============ cancel gradients for the prototypes while frozen, then step ... ============
        // (a step whose scaled gradients overflowed is skipped, as GradScaler does; DINO's
        // freeze_last_layer is the same rule on its head's last layer)
        if grads_finite {
            let frozen = self.step < self.cfg.freeze_prototypes_niters;
            self.opt.step(&self.vs, lr, |name| {
                frozen && name.starts_with("prototypes")
            });
        }

        // ============ the method's post-step updates (queue, momentum encoder, centre) ============
        self.objective.after_step(&ctx);

        // ============ misc (meters) ... ============
        let k0 = self.cfg.nmb_prototypes.first().copied().unwrap_or(1);
        let usage = l.codes.as_ref().map(|c| code_usage(c, k0));
        let (normaliser, normaliser_name) = self.objective.normaliser(bs);
        let ratio = loss_value / normaliser;
        let collapsed = self
            .objective
            .collapsed(ratio, usage.map(|(_, top)| top), &l);
        let m = StepMetrics {
            step: self.step,
            epoch: self.epoch,
            loss: loss_value,
            loss_over_ln_k: ratio,
            normaliser: normaliser_name.to_string(),
            lr,
            proto_entropy: usage.map_or(f64::NAN, |(e, _)| e),
            top_proto_share: usage.map_or(f64::NAN, |(_, t)| t),
            teacher_entropy: l.teacher_entropy,
            teacher_student_kl: l.teacher_student_kl,
            collapsed,
            seconds: start.elapsed().as_secs_f64(),
            sinkhorn_seconds: l.sinkhorn_seconds,
        };
        self.step += 1;
        self.step_in_epoch += 1;
        self.history.push(m.clone());
        Ok(m)
    }

    /// Closes the current epoch: summarises its steps and moves to the next epoch.
    pub fn end_epoch(&mut self) -> EpochSummary {
        let rows: Vec<&StepMetrics> = self
            .history
            .iter()
            .filter(|r| r.epoch == self.epoch)
            .collect();
        let n = rows.len().max(1) as f64;
        let mean = |f: &dyn Fn(&StepMetrics) -> f64| rows.iter().map(|r| f(r)).sum::<f64>() / n;
        let collapsed_share = mean(&|r| if r.collapsed { 1.0 } else { 0.0 });
        let mean_of = |f: &dyn Fn(&StepMetrics) -> Option<f64>| {
            let v: Vec<f64> = rows.iter().filter_map(|r| f(r)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let collapsed = !rows.is_empty() && collapsed_share > 0.5;
        let s = EpochSummary {
            epoch: self.epoch,
            steps: rows.len(),
            mean_loss: mean(&|r| r.loss),
            mean_loss_over_ln_k: mean(&|r| r.loss_over_ln_k),
            mean_proto_entropy: mean(&|r| r.proto_entropy),
            normaliser: self.loss_normaliser().to_string(),
            mean_teacher_entropy: mean_of(&|r| r.teacher_entropy),
            mean_teacher_student_kl: mean_of(&|r| r.teacher_student_kl),
            collapsed,
            advice: if collapsed {
                Some(self.objective.collapse_advice())
            } else {
                None
            },
        };
        self.epoch += 1;
        self.step_in_epoch = 0;
        s
    }

    /// Writes `metrics.parquet` for all steps so far (atomic).
    pub fn write_metrics(&self, run_dir: &Path) -> Result<()> {
        let mut df = metrics_frame(&self.history)?;
        write_parquet(&mut df, &run_dir.join(METRICS_FILE))
    }

    /// Runs the remaining epochs. `batches_for_epoch(e)` yields the batches of epoch `e` (each a crop list as
    /// `train_step` takes); after a resume, the batches already done in the current epoch are drawn and
    /// skipped, so a loader seeded from (seed, epoch, index) continues exactly. Writes `config.json` first,
    /// then `metrics.parquet` and a checkpoint after each epoch; on a stop flag or `max_steps`, checkpoints and
    /// returns with `interrupted`. On a step error, writes the metrics so far and returns the error (the last
    /// checkpoint stays the latest).
    pub fn fit<I, F>(
        &mut self,
        run_dir: &Path,
        mut batches_for_epoch: F,
        opts: &FitOptions,
    ) -> Result<FitOutcome>
    where
        F: FnMut(usize) -> I,
        I: IntoIterator<Item = Result<Vec<Tensor>>>,
    {
        let json = serde_json::to_vec_pretty(&self.cfg)
            .map_err(|e| Error::Invalid(format!("serialising config: {e}")))?;
        write_bytes_atomic(&run_dir.join(CONFIG_FILE), &json)?;
        let mut epochs = Vec::new();
        let last = opts
            .until_epoch
            .map_or(self.cfg.epochs, |e| e.min(self.cfg.epochs));
        while self.epoch < last {
            let skip = self.step_in_epoch;
            for (i, batch) in batches_for_epoch(self.epoch).into_iter().enumerate() {
                if i < skip {
                    continue;
                }
                let signalled = opts.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
                if signalled || opts.max_steps.is_some_and(|m| self.step >= m) {
                    self.write_metrics(run_dir)?;
                    self.save_checkpoint(run_dir)?;
                    return Ok(FitOutcome {
                        epochs,
                        interrupted: true,
                        signalled,
                        step: self.step,
                    });
                }
                let result = batch.and_then(|crops| self.train_step(&crops));
                if let Err(e) = result {
                    self.write_metrics(run_dir)?;
                    return Err(Error::Invalid(format!("{e}; {}", checkpoint_note(run_dir))));
                }
                if let (Some(sink), Some(m)) = (&opts.last_loss, self.history.last()) {
                    sink.store(m.loss.to_bits(), Ordering::Relaxed);
                }
                if opts
                    .checkpoint_every
                    .is_some_and(|n| n > 0 && self.step % n == 0)
                {
                    // metrics.parquet first: it is then never behind the latest checkpoint
                    self.write_metrics(run_dir)?;
                    self.save_checkpoint(run_dir)?;
                }
            }
            epochs.push(self.end_epoch());
            self.write_metrics(run_dir)?;
            self.save_checkpoint(run_dir)?;
        }
        Ok(FitOutcome {
            epochs,
            // Stopping at `until_epoch` before the last epoch is a pause the caller asked for.
            interrupted: self.epoch < self.cfg.epochs,
            signalled: false,
            step: self.step,
        })
    }

    /// Embeddings of `images` `[N, 3, H, W]` in eval mode under no_grad.
    pub fn embed(&self, images: &Tensor, layer: EmbedLayer) -> Tensor {
        self.encoder().embed(images, layer)
    }

    /// SwAV code of each image: argmax over the first head's prototype scores, `[N]` int64.
    pub fn prototype_argmax(&self, images: &Tensor) -> Tensor {
        self.encoder().prototype_argmax(images)
    }

    /// The current weights as an encoder (what the per-epoch kNN embeds with): no copy, so it sees every
    /// step taken before it is used.
    pub fn encoder(&self) -> EncoderView<'_> {
        EncoderView::of_trained(&self.cfg, &self.model, self.device, self.step)
    }

    /// The config the run trains with.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The student's variables (what `model.*` in a checkpoint holds).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The student network.
    pub fn model(&self) -> &SwavModel {
        &self.model
    }

    /// Global steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The current epoch (0-based) and the steps done in it.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    pub fn step_in_epoch(&self) -> usize {
        self.step_in_epoch
    }

    /// Every step's metrics so far, resumed sessions' included.
    pub fn history(&self) -> &[StepMetrics] {
        &self.history
    }

    /// The fp16 loss scaler's state, when training scales its loss.
    pub fn scaler(&self) -> Option<LossScaler> {
        self.scaler
    }

    /// Scales the loss from now on (what CUDA with `use_fp16` does by itself; tests use it on the CPU,
    /// where the scaling is exact).
    pub fn use_loss_scaler(&mut self, scaler: LossScaler) {
        self.scaler = Some(scaler);
    }

    /// SwAV's queue is on (full once, used from then on).
    pub fn queue_in_use(&self) -> bool {
        self.objective.queue_in_use()
    }

    /// The name of what `loss_over_ln_k` divides the loss by for this method.
    pub fn loss_normaliser(&self) -> &'static str {
        self.objective.normaliser(self.cfg.batch_size).1
    }

    /// Marks the run as trained to its last epoch (an imported model: `train --resume` has nothing to do).
    pub fn mark_finished(&mut self) {
        self.epoch = self.cfg.epochs;
        self.step_in_epoch = 0;
    }

    /// Names of the trainable parameters, sorted (what LARS updates).
    pub fn parameter_names(&self) -> Vec<String> {
        trainable(&self.vs).into_iter().map(|(n, _)| n).collect()
    }
}

/// What a failed run can continue from: the latest checkpoint, or the truth that there is none.
fn checkpoint_note(run_dir: &Path) -> String {
    match checkpoint::latest_dir(run_dir) {
        Ok(dir) if dir.join(checkpoint::META_FILE).is_file() => format!(
            "the latest checkpoint {} is kept (continue with --resume)",
            dir.display()
        ),
        _ => format!(
            "no checkpoint was written in {} (the run cannot be resumed; start it again)",
            run_dir.display()
        ),
    }
}

/// Entropy (nats) of the code histogram and the share of the most used code.
fn code_usage(codes: &Tensor, k: i64) -> (f64, f64) {
    let counts = codes
        .to_device(Device::Cpu)
        .bincount::<Tensor>(None, k)
        .to_kind(Kind::Double);
    let total = counts.sum(Kind::Double).double_value(&[]).max(1.0);
    let p = counts / total;
    let top = p.max().double_value(&[]);
    let nz = p.masked_select(&p.gt(0.0));
    let ent = -(&nz * nz.log()).sum(Kind::Double).double_value(&[]);
    (ent, top)
}

#[cfg(test)]
mod tests {
    use super::code_usage;
    use tch::Tensor;

    #[test]
    fn code_usage_entropy_and_top_share() {
        let (e, top) = code_usage(&Tensor::from_slice(&[2i64, 2, 2, 2]), 5);
        assert!(e.abs() < 1e-12 && (top - 1.0).abs() < 1e-12);
        let (e, top) = code_usage(&Tensor::from_slice(&[0i64, 1, 2, 3]), 4);
        assert!((e - 4f64.ln()).abs() < 1e-12 && (top - 0.25).abs() < 1e-12);
    }
}
