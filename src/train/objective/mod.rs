//! Training objectives, one per file: SwAV (clustering, `swav.rs`), SimCLR (contrastive within the batch,
//! `simclr.rs`), MoCo v2 (contrastive against a momentum queue, `moco.rs`) and DINO (self-distillation,
//! `dino.rs`). The trainer owns the student network, the optimiser and the schedule; an [`Objective`] owns
//! everything else a method needs (queues, a momentum encoder, DINO's centre), its loss and that loss's
//! normaliser, and its collapse rule. Adding a method is a file here, a variant of [`Method`] and its
//! settings table in `config.rs`.
pub mod dino;
pub mod moco;
pub mod momentum;
pub mod simclr;
pub mod swav;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Tensor};

use crate::error::Result;
use crate::model::swav::{SwavModel, SwavOutput};
use crate::train::config::TrainConfig;

/// |loss / normaliser − 1| below this means predictions as flat as a collapsed model's (SwAV README, "loss
/// stuck at ln K"; the same reading holds for any cross-entropy against its uniform value).
pub const COLLAPSE_LOSS_BAND: f64 = 0.02;
/// One prototype taking more than this share of a batch's codes counts as collapse (equipartition gives 1/K).
pub const COLLAPSE_TOP_SHARE: f64 = 0.9;

/// Which objective to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// SwAV (Caron et al. 2020): swapped prediction of Sinkhorn codes over learned prototypes.
    Swav,
    /// SimCLR (Chen et al. 2020): NT-Xent between two views against the rest of the batch.
    Simclr,
    /// MoCo v2 (He et al. 2020; Chen et al. 2020): InfoNCE against a queue of momentum-encoder keys.
    Moco,
    /// DINO (Caron et al. 2021): a student matches a momentum teacher's centred, sharpened outputs.
    Dino,
}

impl Method {
    /// Every method, in the order tables list them.
    pub const ALL: [Method; 4] = [Method::Swav, Method::Simclr, Method::Moco, Method::Dino];

    /// The name the paper gives the method (train.log, README tables).
    pub fn paper_name(self) -> &'static str {
        match self {
            Method::Swav => "SwAV",
            Method::Simclr => "SimCLR",
            Method::Moco => "MoCo v2",
            Method::Dino => "DINO",
        }
    }

    /// The config key and CLI value (`--method`).
    pub fn key(self) -> &'static str {
        match self {
            Method::Swav => "swav",
            Method::Simclr => "simclr",
            Method::Moco => "moco",
            Method::Dino => "dino",
        }
    }

    /// Whether the prototypes are trained, so their argmax is a code an analysis can read: SwAV's
    /// prototypes and DINO's head (its weight-normalised last layer is the prototype layer). SimCLR and MoCo
    /// never train them.
    pub fn trains_prototypes(self) -> bool {
        matches!(self, Method::Swav | Method::Dino)
    }

    /// Whether the method keeps a momentum copy of the network (memory budget, checkpoint size).
    pub fn has_momentum_encoder(self) -> bool {
        matches!(self, Method::Moco | Method::Dino)
    }

    /// Floats the method holds beyond the student, its optimiser and a momentum encoder (MoCo's keys and
    /// the logits against them), for the memory budget.
    pub fn state_floats(self, cfg: &TrainConfig) -> f64 {
        match self {
            Method::Moco => moco::state_floats(cfg),
            Method::Dino => cfg.nmb_prototypes.first().copied().unwrap_or(0) as f64,
            Method::Swav | Method::Simclr => 0.0,
        }
    }

    /// The one source of per-method defaults, for the CLI and the grids alike.
    pub fn defaults(self) -> TrainConfig {
        match self {
            Method::Swav => TrainConfig::default(),
            Method::Simclr => simclr::defaults(),
            Method::Moco => moco::defaults(),
            Method::Dino => dino::defaults(),
        }
    }

    /// Checks the settings only this method has an opinion on; `bad(field, reason)` builds the error.
    pub fn validate(
        self,
        cfg: &TrainConfig,
        bad: &dyn Fn(&str, String) -> crate::error::Error,
    ) -> Result<()> {
        // `queue_length` is SwAV's feature queue: another method would ignore it, so a grid or a config
        // that sets it for one is told, not run as if it meant something (MoCo's queue is `moco.moco_k`)
        if self != Method::Swav && cfg.queue_length > 0 {
            return Err(bad(
                "queue_length",
                format!(
                    "is SwAV's feature queue; {self} has none (set it to 0{})",
                    if self == Method::Moco {
                        "; MoCo's queue of keys is moco.moco_k"
                    } else {
                        ""
                    }
                ),
            ));
        }
        match self {
            Method::Swav => Ok(()),
            Method::Simclr => simclr::validate(cfg, bad),
            Method::Moco => moco::validate(cfg, bad),
            Method::Dino => dino::validate(cfg, bad),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// Where the trainer is when it asks an objective for a loss or a post-step update.
#[derive(Debug, Clone, Copy)]
pub struct StepContext {
    /// Global step (0-based) and epoch of the step being taken.
    pub step: usize,
    pub epoch: usize,
    /// Steps of the whole run (epochs × steps per epoch): momentum schedules run over it.
    pub total_steps: usize,
    /// Images in the batch.
    pub batch: i64,
    pub device: Device,
    /// fp16 autocast for extra forward passes (CUDA with `use_fp16`).
    pub fp16: bool,
}

/// A loss and what the step's metrics read from it.
#[derive(Debug)]
pub struct ObjectiveLoss {
    /// Scalar, fp32, with a graph back to the student.
    pub loss: Tensor,
    /// Argmax codes over the first prototype head `[N]` when the method trains prototypes.
    pub codes: Option<Tensor>,
    /// Time spent in Sinkhorn (SwAV).
    pub sinkhorn_seconds: f64,
    /// DINO's collapse signals (paper §5.3, Fig. 7): mean entropy of the teacher's output and mean
    /// KL(teacher ‖ student) over the loss's pairs, in nats.
    pub teacher_entropy: Option<f64>,
    pub teacher_student_kl: Option<f64>,
}

impl ObjectiveLoss {
    pub fn plain(loss: Tensor) -> Self {
        ObjectiveLoss {
            loss,
            codes: None,
            sinkhorn_seconds: 0.0,
            teacher_entropy: None,
            teacher_student_kl: None,
        }
    }
}

/// One training method beside the student network.
pub trait Objective: Send {
    fn method(&self) -> Method;

    /// How many of the batch's crops go through the student (MoCo v2's student sees the query view only;
    /// the others see every crop).
    fn student_crops(&self, total: usize) -> usize {
        total
    }

    /// The loss of one batch. `crops` are every crop of the batch on the device; `out` is the `student`'s
    /// forward over the first [`student_crops`](Objective::student_crops) of them. State changes that must
    /// not happen when the loss turns out non-finite (queue pushes, the centre) wait for
    /// [`after_step`](Objective::after_step).
    fn loss(
        &mut self,
        ctx: &StepContext,
        student: &SwavModel,
        crops: &[Tensor],
        out: &SwavOutput,
    ) -> Result<ObjectiveLoss>;

    /// The loss was not finite and the step is dropped: undo what `loss` changed (a momentum encoder's
    /// batch-norm statistics) and forget what it left for `after_step`.
    fn rollback(&mut self) {}

    /// After the optimiser step: momentum updates, queue pushes, centre updates.
    fn after_step(&mut self, _ctx: &StepContext) {}

    /// Every tensor of the objective's state by checkpoint name: the one list used for saving and resuming.
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Before a resume copies a checkpoint into [`state`](Objective::state): allocate state that is built
    /// lazily (SwAV's queue starts at `epoch_queue_starts`) when the checkpoint holds it.
    fn prepare_restore(&mut self, _saved: &dyn Fn(&str) -> bool, _queue_in_use: bool) {}

    /// Whether every batch must hold `batch_size` images (a queue written in whole batches).
    fn needs_full_batches(&self) -> bool {
        false
    }

    /// SwAV's queue flag, kept in the checkpoint's metadata.
    fn queue_in_use(&self) -> bool {
        false
    }

    /// The loss of uniform predictions, which the loss is divided by in the metrics (`loss_over_ln_k`), and
    /// its name: ln K (SwAV, DINO), ln(2B − 1) (SimCLR), ln(1 + moco_k) (MoCo).
    fn normaliser(&self, batch: i64) -> (f64, &'static str);

    /// What to try when the epoch looks collapsed, in the method's own settings.
    fn collapse_advice(&self) -> &'static str;

    /// Whether one step looks collapsed, from loss / normaliser, the code usage and the signals.
    fn collapsed(
        &self,
        loss_over_normaliser: f64,
        top_share: Option<f64>,
        l: &ObjectiveLoss,
    ) -> bool;
}

/// The objective of `cfg.method`, beside a freshly built (or just restored) student in `student`.
pub fn build(cfg: &TrainConfig, student: &VarStore, device: Device) -> Result<Box<dyn Objective>> {
    Ok(match cfg.method {
        Method::Swav => Box::new(swav::Swav::new(cfg, device)),
        Method::Simclr => Box::new(simclr::Simclr::new(cfg)),
        Method::Moco => Box::new(moco::Moco::new(cfg, student, device)?),
        Method::Dino => Box::new(dino::Dino::new(cfg, student, device)?),
    })
}

/// |loss / normaliser − 1| inside the collapse band.
pub fn near_uniform(loss_over_normaliser: f64) -> bool {
    (loss_over_normaliser - 1.0).abs() < COLLAPSE_LOSS_BAND
}
