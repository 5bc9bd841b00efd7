//! `TrainConfig`: every training hyper-parameter under the SwAV reference's names (`main_swav.py`), with
//! CPU-sized defaults and a `validate()` whose errors name the field at fault.
use serde::{Deserialize, Serialize};
use tch::Device;

use super::budget;
use crate::augment::{CropRecipe, MultiCropConfig};
use crate::error::{Error, Result};
use crate::model::{Arch, ModelConfig};
pub use crate::train::objective::dino::DinoConfig;
pub use crate::train::objective::moco::MocoConfig;
pub use crate::train::objective::Method;

/// The optimiser around SGD with momentum (main_swav.py: `LARC(SGD)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// apex LARC (no clipping) around SGD, as the reference.
    Lars,
    /// torch.optim.SGD alone: weight decay added to the gradient, no layer-wise adaptation.
    Sgd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub method: Method,
    /// The crop recipe, as flat keys (`nmb_crops`, `size_crops`, …, `blur_prob`) right after `method`, so
    /// TOML files and the config.json of earlier runs read (and new ones are written) unchanged.
    #[serde(flatten)]
    pub crops: CropRecipe,
    /// Crops whose codes are computed and predicted from the others (reference: [0, 1]).
    pub crops_for_assign: Vec<usize>,
    /// Softmax temperature τ (SwAV and NT-Xent).
    pub temperature: f64,
    /// Sinkhorn entropy weight ε.
    pub epsilon: f64,
    pub sinkhorn_iterations: usize,
    pub feat_dim: i64,
    pub nmb_prototypes: Vec<i64>,
    /// 0 disables the queue; otherwise a multiple of `batch_size`.
    pub queue_length: i64,
    pub epoch_queue_starts: usize,
    pub epochs: usize,
    pub batch_size: i64,
    /// Batches per epoch (the reference's len(train_loader)); the schedule needs it.
    pub steps_per_epoch: usize,
    pub base_lr: f64,
    pub final_lr: f64,
    pub warmup_epochs: usize,
    pub start_warmup: f64,
    pub wd: f64,
    /// `lars` (the reference) or plain `sgd`.
    pub optimizer: Optimizer,
    /// SGD momentum (main_swav.py: `torch.optim.SGD(momentum=0.9)`).
    pub momentum: f64,
    /// LARC trust coefficient η: adaptive lr = η·‖w‖ / (‖g‖ + wd·‖w‖ + 1e-8).
    pub trust_coefficient: f64,
    /// Biases and BatchNorm parameters (rank ≤ 1) get neither LARS adaptation nor weight decay (solo-learn's
    /// `exclude_bias_n_norm`). The SwAV reference adapts and decays every parameter (false).
    pub exclude_bias_n_norm: bool,
    pub freeze_prototypes_niters: usize,
    pub arch: Arch,
    /// Backbone width (torchvision 64).
    pub width: i64,
    pub small_images: bool,
    pub hidden_mlp: i64,
    pub seed: u64,
    /// "cpu", "cuda", "cuda:N" or "auto".
    pub device: String,
    /// Mixed precision on CUDA (main_swav.py `--use_fp16`): forward passes under fp16 autocast with
    /// dynamic loss scaling; Sinkhorn, the losses and the LARS update stay in fp32. No effect on the CPU.
    pub use_fp16: bool,
    /// MoCo v2's settings (`[moco]`), read when `method = "moco"`. Written only when they differ from the
    /// defaults, so the config.json of every other run reads (and is written) as before the table existed.
    #[serde(skip_serializing_if = "MocoConfig::is_default")]
    pub moco: MocoConfig,
    /// DINO's settings (`[dino]`), read when `method = "dino"`; written as `moco` is.
    #[serde(skip_serializing_if = "DinoConfig::is_default")]
    pub dino: DinoConfig,
}

impl Default for TrainConfig {
    /// CPU demo values: a width-16 small-image ResNet-18 that trains in minutes on two cores.
    fn default() -> Self {
        TrainConfig {
            method: Method::Swav,
            // SwAV's multi-crop scaled down to 2×64 + 4×32, the paper's distortions
            crops: CropRecipe::default(),
            // main_swav.py default
            crops_for_assign: vec![0, 1],
            // main_swav.py --temperature 0.1
            temperature: 0.1,
            // main_swav.py --epsilon 0.05
            epsilon: 0.05,
            // main_swav.py --sinkhorn_iterations 3
            sinkhorn_iterations: 3,
            // main_swav.py --feat_dim 128
            feat_dim: 128,
            // small data: fewer prototypes than the paper's 3000 (SwAV §4.2: K matters little above ~#classes)
            nmb_prototypes: vec![100],
            // SwAV README: a queue is needed for batches < 256; 3840 at batch 256, scaled to batch 32
            queue_length: 480,
            // main_swav.py --epoch_queue_starts 15
            epoch_queue_starts: 15,
            epochs: 100,
            batch_size: 32,
            steps_per_epoch: 100,
            // main_swav.py --base_lr 0.6 at batch 256, scaled linearly to batch 32 (×32/256 ≈ 0.075)
            base_lr: 0.075,
            // main_swav.py --final_lr 0.0006, same ratio to base_lr
            final_lr: 0.000075,
            // main_swav.py --warmup_epochs 10 for 800 epochs; 5 for our shorter runs
            warmup_epochs: 5,
            // main_swav.py --start_warmup 0
            start_warmup: 0.0,
            // main_swav.py --wd 1e-6
            wd: 1e-6,
            // main_swav.py: LARC(SGD(momentum=0.9), trust_coefficient=0.001, clip=False)
            optimizer: Optimizer::Lars,
            momentum: 0.9,
            trust_coefficient: 0.001,
            // biaslab's choice since its first release (kept so earlier runs reproduce); the reference: false
            exclude_bias_n_norm: true,
            // main_swav.py --freeze_prototypes_niters 313 (one ImageNet epoch at batch 4096); one epoch here
            freeze_prototypes_niters: 100,
            arch: Arch::Resnet18,
            width: 16,
            small_images: true,
            // main_swav.py --hidden_mlp 2048 for ResNet-50; 512 fits a width-16 ResNet-18
            hidden_mlp: 512,
            seed: 31,
            device: "cpu".to_string(),
            // main_swav.py --use_fp16 true
            use_fp16: true,
            moco: MocoConfig::default(),
            dino: DinoConfig::default(),
        }
    }
}

impl TrainConfig {
    /// The loader's crop recipe for a training config: the config's crop groups, as they are, with the config's
    /// colour jitter, grayscale and blur. For SimCLR (validate allows exactly two crops) that is either one
    /// group of two views (`nmb_crops = [2]`) or two groups of one view each (`[1, 1]`), each view at its own
    /// group's size and scale: the loss takes view 1 and view 2 as two `[B, D]` embeddings, and the backbone
    /// runs once per crop size, so views of different sizes are two valid views. Both methods default
    /// to one colour distortion: SimCLR's ImageNet recipe (paper, Appendix A: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)
    /// p 0.8 with s = 1) is SwAV's `get_color_distortion(s = 1)`, so there is no stronger SimCLR jitter to give.
    pub fn multicrop(&self) -> MultiCropConfig {
        MultiCropConfig::with_recipe(self.crops.clone())
    }

    /// Total number of crops V.
    pub fn total_crops(&self) -> usize {
        self.crops.total_crops()
    }

    /// The model this run trains.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            arch: self.arch,
            width: self.width,
            small_images: self.small_images,
            hidden_mlp: self.hidden_mlp,
            output_dim: self.feat_dim,
            nmb_prototypes: self.nmb_prototypes.clone(),
        }
    }

    /// The crop size of crop `v` (0-based over all crops).
    pub fn crop_size(&self, v: usize) -> Option<i64> {
        let mut seen = 0;
        for (n, s) in self.crops.nmb_crops.iter().zip(&self.crops.size_crops) {
            seen += n;
            if v < seen {
                return Some(*s);
            }
        }
        None
    }

    /// The defaults of `method` (each method's own, from its objective file: `Method::defaults`).
    pub fn defaults_for(method: Method) -> Self {
        method.defaults()
    }

    /// A config from TOML text: the keys given over the defaults of the method the text (or `method`, when
    /// given, winning) names, so `method = "moco"` alone is MoCo's two views, not SwAV's multi-crop with
    /// MoCo's loss. Tables (`[moco]`, `[dino]`) merge key by key. The one reader of configs the CLI and the
    /// grids share.
    pub fn from_toml(text: &str, method: Option<Method>) -> std::result::Result<Self, String> {
        let mut given: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(m) = method {
            given.insert("method".into(), toml::Value::String(m.key().into()));
        }
        let named = match given.get("method") {
            None => Method::Swav,
            Some(v) => v
                .clone()
                .try_into::<Method>()
                .map_err(|e| format!("method: {e}"))?,
        };
        let mut merged = toml::Table::try_from(named.defaults()).map_err(|e| e.to_string())?;
        for (k, v) in given {
            match (merged.get_mut(&k), v) {
                (Some(toml::Value::Table(base)), toml::Value::Table(over)) => base.extend(over),
                (_, v) => {
                    merged.insert(k, v);
                }
            }
        }
        // through text, so a wrong key or type is reported as the text the user wrote would be
        let text = toml::to_string(&merged).map_err(|e| e.to_string())?;
        toml::from_str(&text).map_err(|e| e.to_string())
    }

    /// Fits the schedule's settings to a run shorter or a batch other than the defaults assume, returning
    /// one note per change: `warmup_epochs` longer than the run becomes half the run (rounded down, so a
    /// one-epoch run has no warm-up and the cosine decay has room); a `queue_length` that is not a multiple
    /// of `batch_size` is rounded up to the next multiple.
    pub fn fit_to_run(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.epochs >= 1 && self.warmup_epochs > self.epochs {
            let clipped = self.epochs / 2;
            notes.push(format!(
                "warmup_epochs {} exceeds the run's {} epoch(s); using {clipped}",
                self.warmup_epochs, self.epochs
            ));
            self.warmup_epochs = clipped;
        }
        if self.method == Method::Dino
            && self.epochs >= 1
            && self.dino.warmup_teacher_temp_epochs > self.epochs
        {
            notes.push(format!(
                "dino.warmup_teacher_temp_epochs {} exceeds the run's {} epoch(s); using {}",
                self.dino.warmup_teacher_temp_epochs, self.epochs, self.epochs
            ));
            self.dino.warmup_teacher_temp_epochs = self.epochs;
        }
        // Checked: a queue_length near i64::MAX has no next multiple, and validate refuses it as it is.
        let rounded_up = |q: i64, b: i64| q.checked_add(b - 1).map(|x| x / b * b);
        if self.method == Method::Moco
            && self.batch_size >= 2
            && self.moco.moco_k > 0
            && self.moco.moco_k % self.batch_size != 0
        {
            if let Some(q) = rounded_up(self.moco.moco_k, self.batch_size) {
                notes.push(format!(
                    "moco.moco_k {} is not a multiple of batch_size {}; using {q}",
                    self.moco.moco_k, self.batch_size
                ));
                self.moco.moco_k = q;
            }
        }
        if self.batch_size >= 2 && self.queue_length > 0 && self.queue_length % self.batch_size != 0
        {
            if let Some(q) = rounded_up(self.queue_length, self.batch_size) {
                notes.push(format!(
                    "queue_length {} is not a multiple of batch_size {}; using {q}",
                    self.queue_length, self.batch_size
                ));
                self.queue_length = q;
            }
        }
        notes
    }

    /// Fits the config to the data it trains on: `steps_per_epoch` is the loader's batch count (the
    /// schedule is laid out over epochs × steps_per_epoch), and a MoCo queue longer than one epoch's images
    /// is cut to them, so the queue never holds two keys of one image as each other's negatives (MoCo's
    /// 65,536 keys are 5% of ImageNet). One note per change beyond the step count.
    pub fn fit_to_data(&mut self, steps: usize) -> Vec<String> {
        self.steps_per_epoch = steps;
        let mut notes = Vec::new();
        let per_epoch = (steps as i64).saturating_mul(self.batch_size);
        if self.method == Method::Moco
            && per_epoch >= self.batch_size
            && self.moco.moco_k > per_epoch
        {
            notes.push(format!(
                "moco.moco_k {} exceeds the {per_epoch} images an epoch trains on; using {per_epoch}",
                self.moco.moco_k
            ));
            self.moco.moco_k = per_epoch;
        }
        notes
    }

    /// The config a run trains with, from the one written: [`fit_to_run`](Self::fit_to_run) (one note per
    /// change), then [`validate_for_training`](Self::validate_for_training). The one function that `train`
    /// and every cell of an experiment grid apply, so a setting means the same in both.
    pub fn fitted(mut self, origin: &str) -> Result<(Self, Vec<String>)> {
        let notes = self.fit_to_run();
        self.validate_for_training(origin)?;
        Ok((self, notes))
    }

    /// [`validate`](Self::validate), and one training step must fit in the memory of the device it trains
    /// on ([`budget::check_fits`]), refused before anything is allocated. Kept apart from `validate`,
    /// which also checks the configs of runs that are only embedded or imported here (a run trained on a
    /// larger machine is still a valid run to embed on this one).
    pub fn validate_for_training(&self, origin: &str) -> Result<()> {
        self.validate(origin)?;
        budget::check_fits(self, origin, &budget::budget_for(self))
    }

    /// The device `device` names, checked to exist on this machine.
    pub fn parse_device(&self, origin: &str) -> Result<Device> {
        crate::device::resolve(&self.device, origin)
    }

    /// Checks every field once; `origin` names the file (or "defaults") in the error.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::config(origin, field, reason));
        let c = &self.crops;
        let n = c.nmb_crops.len();
        if n == 0 || c.nmb_crops.contains(&0) {
            return bad(
                "nmb_crops",
                format!("needs ≥ 1 group, each ≥ 1 crop, got {:?}", c.nmb_crops),
            );
        }
        // The crop count is summed in usize everywhere after this: refuse a sum that does not fit.
        if c.nmb_crops
            .iter()
            .try_fold(0usize, |a, &n| a.checked_add(n))
            .is_none()
        {
            return bad(
                "nmb_crops",
                format!(
                    "{:?} adds up to more crops than a usize counts",
                    c.nmb_crops
                ),
            );
        }
        for (field, len) in [
            ("size_crops", c.size_crops.len()),
            ("min_scale_crops", c.min_scale_crops.len()),
            ("max_scale_crops", c.max_scale_crops.len()),
        ] {
            if len != n {
                return bad(field, format!("has {len} entries but nmb_crops has {n}"));
            }
        }
        if let Some(s) = c.size_crops.iter().find(|&&s| s < 8) {
            return bad("size_crops", format!("crop size {s} is below 8 px"));
        }
        for (i, (lo, hi)) in c.min_scale_crops.iter().zip(&c.max_scale_crops).enumerate() {
            // Name the bound that is out of range: a max of 1.5 is a `max_scale_crops` error.
            if !(*hi > 0.0 && *hi <= 1.0) {
                return bad(
                    "max_scale_crops",
                    format!("group {i}: {hi} is outside (0, 1] (a crop's share of the image area)"),
                );
            }
            if !(*lo > 0.0 && *lo <= 1.0) {
                return bad(
                    "min_scale_crops",
                    format!("group {i}: {lo} is outside (0, 1] (a crop's share of the image area)"),
                );
            }
            if lo > hi {
                return bad(
                    "min_scale_crops",
                    format!("group {i}: min {lo} is above max_scale_crops {hi}"),
                );
            }
        }
        let v = self.total_crops();
        if v < 2 {
            return bad("nmb_crops", format!("needs ≥ 2 crops in all, got {v}"));
        }
        if self.crops_for_assign.is_empty() {
            return bad("crops_for_assign", "is empty".into());
        }
        if let Some(c) = self.crops_for_assign.iter().find(|&&c| c >= v) {
            return bad(
                "crops_for_assign",
                format!("crop {c} out of range: there are {v} crops"),
            );
        }
        // finite too: an infinite τ or ε makes every score 0 and the loss NaN at the first step
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!("must be finite and > 0, got {}", self.temperature),
            );
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return bad(
                "epsilon",
                format!("must be finite and > 0, got {}", self.epsilon),
            );
        }
        if self.sinkhorn_iterations == 0 {
            return bad("sinkhorn_iterations", "must be ≥ 1".into());
        }
        if self.batch_size < 2 {
            return bad(
                "batch_size",
                format!("must be ≥ 2, got {}", self.batch_size),
            );
        }
        if self.queue_length < 0 || self.queue_length % self.batch_size != 0 {
            return bad(
                "queue_length",
                format!(
                    "must be a multiple of batch_size {}, got {}",
                    self.batch_size, self.queue_length
                ),
            );
        }
        if self.epochs == 0 {
            return bad("epochs", "must be ≥ 1".into());
        }
        if self.steps_per_epoch == 0 {
            return bad("steps_per_epoch", "must be ≥ 1".into());
        }
        // The schedule counts steps in usize (epochs × steps_per_epoch): refuse a product that does not fit.
        if self.epochs.checked_mul(self.steps_per_epoch).is_none() {
            return bad(
                "epochs",
                format!(
                    "{} epochs of {} steps are more steps than a usize counts",
                    self.epochs, self.steps_per_epoch
                ),
            );
        }
        if self.warmup_epochs > self.epochs {
            return bad(
                "warmup_epochs",
                format!("{} exceeds epochs {}", self.warmup_epochs, self.epochs),
            );
        }
        for (field, x) in [
            ("base_lr", self.base_lr),
            ("final_lr", self.final_lr),
            ("start_warmup", self.start_warmup),
            ("wd", self.wd),
        ] {
            if !(x >= 0.0 && x.is_finite()) {
                return bad(field, format!("must be finite and ≥ 0, got {x}"));
            }
        }
        // hue = 0.2·s must stay within torchvision's [0, 0.5]
        if !(c.jitter_strength >= 0.0 && c.jitter_strength <= 2.5) {
            return bad(
                "jitter_strength",
                format!(
                    "must be in [0, 2.5] (hue 0.2·s ≤ 0.5), got {}",
                    c.jitter_strength
                ),
            );
        }
        for (field, p) in [
            ("jitter_prob", c.jitter_prob),
            ("grayscale_prob", c.grayscale_prob),
            ("blur_prob", c.blur_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("{p} is not a probability"));
            }
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(
                "momentum",
                format!("must be in [0, 1), got {}", self.momentum),
            );
        }
        if !(self.trust_coefficient > 0.0 && self.trust_coefficient.is_finite()) {
            return bad(
                "trust_coefficient",
                format!("must be finite and > 0, got {}", self.trust_coefficient),
            );
        }
        self.method
            .validate(self, &|field, reason| Error::config(origin, field, reason))?;
        // syntax only: a run trained on a GPU is still a valid config on a CPU machine
        if let Err(r) = crate::device::parse(&self.device) {
            return bad("device", r);
        }
        self.model_config().validate(origin).map_err(|e| match e {
            // the model calls it output_dim; the training config calls it feat_dim (reference name)
            Error::Config {
                origin,
                field,
                reason,
            } if field == "output_dim" => Error::Config {
                origin,
                field: "feat_dim".into(),
                reason,
            },
            e => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{CropRecipe, Method, TrainConfig};

    #[test]
    fn method_defaults_and_short_runs_validate() {
        for method in Method::ALL {
            for epochs in [1, 2, 3, 7] {
                let mut c = TrainConfig::defaults_for(method);
                c.epochs = epochs;
                c.batch_size = 7;
                let notes = c.fit_to_run();
                c.validate("test").unwrap();
                assert_eq!(c.warmup_epochs, if epochs < 5 { epochs / 2 } else { 5 });
                // SwAV's queue rounds up to whole batches; the other methods have none
                let swav = usize::from(method == Method::Swav);
                assert_eq!(c.queue_length, if swav == 1 { 483 } else { 0 });
                // MoCo's queue rounds up to whole batches; DINO's 30-epoch temperature warm-up fits the run
                let own = match method {
                    Method::Moco => {
                        assert_eq!(c.moco.moco_k, 1029);
                        1
                    }
                    Method::Dino => {
                        assert_eq!(c.dino.warmup_teacher_temp_epochs, epochs);
                        1
                    }
                    _ => 0,
                };
                assert_eq!(
                    notes.len(),
                    swav + usize::from(epochs < 5) + own,
                    "{notes:?}"
                );
            }
        }
        assert_eq!(TrainConfig::defaults_for(Method::Simclr).total_crops(), 2);
        let mut c = TrainConfig::default();
        assert!(c.fit_to_run().is_empty());
    }

    #[test]
    fn crop_size_follows_groups_and_default_round_trips_through_toml() {
        let c = TrainConfig::default();
        assert_eq!(
            (0..7).map(|v| c.crop_size(v)).collect::<Vec<_>>(),
            vec![
                Some(64),
                Some(64),
                Some(32),
                Some(32),
                Some(32),
                Some(32),
                None
            ]
        );
        let text = toml::to_string(&c).unwrap();
        let back: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let err = toml::from_str::<TrainConfig>("nmb_crop = [2]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nmb_crop"), "{err}");
    }

    /// config.json of the demo's `demo-scenes-train__swav__multicrop__base__seed31` run, written before the
    /// crop recipe became its own type.
    const DEMO_CONFIG_JSON: &str = r#"{
  "method": "swav",
  "nmb_crops": [
    2,
    2
  ],
  "size_crops": [
    48,
    24
  ],
  "min_scale_crops": [
    0.14,
    0.05
  ],
  "max_scale_crops": [
    1.0,
    0.14
  ],
  "jitter_strength": 1.0,
  "jitter_prob": 0.8,
  "grayscale_prob": 0.2,
  "blur_prob": 0.5,
  "crops_for_assign": [
    0,
    1
  ],
  "temperature": 0.1,
  "epsilon": 0.05,
  "sinkhorn_iterations": 3,
  "feat_dim": 128,
  "nmb_prototypes": [
    50
  ],
  "queue_length": 0,
  "epoch_queue_starts": 15,
  "epochs": 12,
  "batch_size": 32,
  "steps_per_epoch": 10,
  "base_lr": 0.075,
  "final_lr": 0.000075,
  "warmup_epochs": 1,
  "start_warmup": 0.0,
  "wd": 1e-6,
  "optimizer": "lars",
  "momentum": 0.9,
  "trust_coefficient": 0.001,
  "exclude_bias_n_norm": true,
  "freeze_prototypes_niters": 10,
  "arch": "resnet18",
  "width": 16,
  "small_images": true,
  "hidden_mlp": 256,
  "seed": 31,
  "device": "cpu",
  "use_fp16": true
}"#;

    // The recipe is embedded flat: a run's config.json reads back, and is written again, byte for byte.
    #[test]
    fn config_json_of_earlier_runs_reads_and_writes_unchanged() {
        let c: TrainConfig = serde_json::from_str(DEMO_CONFIG_JSON).unwrap();
        assert_eq!(c.crops.nmb_crops, vec![2, 2]);
        assert_eq!(c.crops.size_crops, vec![48, 24]);
        assert_eq!(c.crops.jitter_strength, 1.0);
        assert_eq!(c.crop_size(2), Some(24));
        assert_eq!(serde_json::to_string_pretty(&c).unwrap(), DEMO_CONFIG_JSON);
        c.validate("config.json").unwrap();
        // an unknown key is still refused, by name, beside the flattened recipe keys
        let typo = DEMO_CONFIG_JSON.replace("\"jitter_prob\"", "\"jiter_prob\"");
        let err = serde_json::from_str::<TrainConfig>(&typo).unwrap_err();
        assert!(err.to_string().contains("jiter_prob"), "{err}");
    }

    #[test]
    fn crop_scale_out_of_range_names_the_bound_at_fault() {
        let field = |lo: f64, hi: f64| {
            let c = TrainConfig {
                crops: CropRecipe {
                    min_scale_crops: vec![lo, 0.05],
                    max_scale_crops: vec![hi, 0.14],
                    ..CropRecipe::default()
                },
                ..TrainConfig::default()
            };
            match c.validate("t.toml") {
                Err(crate::error::Error::Config { field, reason, .. }) => (field, reason),
                other => panic!("({lo}, {hi}) gave {other:?}"),
            }
        };
        let (f, why) = field(0.14, 1.5);
        assert_eq!(f, "max_scale_crops");
        assert!(why.contains("1.5"), "{why}");
        assert_eq!(field(0.0, 1.0).0, "min_scale_crops");
        assert_eq!(field(f64::NAN, 1.0).0, "min_scale_crops");
        assert_eq!(field(0.5, 0.3).0, "min_scale_crops");
    }

    #[test]
    fn augmentation_and_optimiser_keys_parse_and_are_checked() {
        use super::Optimizer;
        use crate::error::Error;
        let c: TrainConfig = toml::from_str(
            "jitter_strength = 0.5\nblur_prob = 0.0\noptimizer = \"sgd\"\n\
             trust_coefficient = 0.01\nexclude_bias_n_norm = false\n",
        )
        .unwrap();
        assert_eq!(c.crops.jitter_strength, 0.5);
        assert_eq!(c.crops.blur_prob, 0.0);
        assert_eq!(c.optimizer, Optimizer::Sgd);
        assert_eq!(c.trust_coefficient, 0.01);
        assert!(!c.exclude_bias_n_norm);
        c.validate("t").unwrap();
        // a config.json written before these keys existed reads back as the old behaviour
        let old: TrainConfig = toml::from_str("epsilon = 0.05").unwrap();
        assert_eq!(old.optimizer, Optimizer::Lars);
        assert!(old.exclude_bias_n_norm);
        assert_eq!(old.crops.jitter_strength, 1.0);
        let field_of = |c: TrainConfig| match c.validate("x.toml") {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        for (c, want) in [
            (
                TrainConfig {
                    crops: CropRecipe {
                        jitter_strength: 3.0,
                        ..CropRecipe::default()
                    },
                    ..Default::default()
                },
                "jitter_strength",
            ),
            (
                TrainConfig {
                    crops: CropRecipe {
                        grayscale_prob: 1.5,
                        ..CropRecipe::default()
                    },
                    ..Default::default()
                },
                "grayscale_prob",
            ),
            (
                TrainConfig {
                    trust_coefficient: 0.0,
                    ..Default::default()
                },
                "trust_coefficient",
            ),
            (
                TrainConfig {
                    momentum: 1.0,
                    ..Default::default()
                },
                "momentum",
            ),
        ] {
            assert_eq!(field_of(c), want);
        }
    }
}
