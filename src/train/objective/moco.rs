//! MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines"; moco/builder.py):
//! the query view through the student, the key view through a momentum encoder, InfoNCE of each query
//! against its key and a queue of the keys of earlier batches.
//!
//! Deviations from the reference, all because biaslab trains on one device: no shuffling BN (the batch is
//! one device's, so there is nothing to shuffle across); the projection head is the project's (Linear, BN,
//! ReLU, Linear) rather than MoCo v2's BN-free MLP, so the four methods differ in their objective only; the
//! optimiser and learning-rate schedule are the run's (LARS by default) rather than SGD at lr 0.03.
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::momentum::{momentum_at, MomentumEncoder};
use super::{near_uniform, Method, Objective, ObjectiveLoss, StepContext};
use crate::error::{Error, Result};
use crate::model::l2_normalize;
use crate::model::swav::{SwavModel, SwavOutput};
use crate::rng::{seeded_rng, Mixing};
use crate::train::config::TrainConfig;

/// Checkpoint names of the queue and its write position.
pub const QUEUE_KEY: &str = "moco.queue";
pub const QUEUE_PTR_KEY: &str = "moco.queue_ptr";
/// The rng stream of the queue's random initial keys.
const STREAM_QUEUE_INIT: u64 = 0x4d6f_436f;

/// MoCo's settings (`[moco]` in a config), under main_moco.py's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MocoConfig {
    /// Queue length K: 65,536 at ImageNet scale (main_moco.py `--moco-k`). Here 1,024 (32 batches of 32), and
    /// training cuts it to the images of one epoch so the queue never holds an image twice (`fit_to_data`).
    pub moco_k: i64,
    /// Key-encoder momentum m (`--moco-m` 0.999 over 200 ImageNet epochs of 5,000 steps); 0.99 for runs of
    /// hundreds of steps, where 0.999 would leave the key encoder near its initial weights (0.999^800 ≈ 0.45).
    pub moco_m: f64,
    /// InfoNCE temperature τ (`--moco-t`: 0.2 for MoCo v2).
    pub moco_t: f64,
    /// Momentum rising from `moco_m` to 1 on a cosine over the run (BYOL's and DINO's schedule), an option.
    pub moco_m_cos: bool,
}

impl MocoConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for MocoConfig {
    fn default() -> Self {
        MocoConfig {
            moco_k: 1024,
            moco_m: 0.99,
            moco_t: 0.2,
            moco_m_cos: false,
        }
    }
}

/// MoCo v2's defaults: two views of the large crop size at scale (0.2, 1) (main_moco.py `--aug-plus`:
/// RandomResizedCrop(scale=(0.2, 1.)), ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, Gaussian
/// blur p 0.5, no solarisation), everything else as SwAV's defaults.
pub fn defaults() -> TrainConfig {
    let swav = TrainConfig::default();
    let mut crops = super::simclr::two_views(&swav.crops, 0.2);
    crops.max_scale_crops = vec![1.0];
    crops.jitter_strength = 0.5;
    crops.jitter_prob = 0.8;
    crops.grayscale_prob = 0.2;
    crops.blur_prob = 0.5;
    TrainConfig {
        method: Method::Moco,
        crops,
        crops_for_assign: vec![0, 1],
        // SwAV's feature queue; this method has none
        queue_length: 0,
        ..swav
    }
}

/// Two views, a queue of whole batches, a momentum in [0, 1) and a positive temperature.
pub fn validate(cfg: &TrainConfig, bad: &dyn Fn(&str, String) -> Error) -> Result<()> {
    super::simclr::validate(cfg, bad)?;
    let m = &cfg.moco;
    if m.moco_k < cfg.batch_size || m.moco_k % cfg.batch_size != 0 {
        return Err(bad(
            "moco.moco_k",
            format!(
                "must be a positive multiple of batch_size {} (moco/builder.py asserts K % batch_size == 0), got {}",
                cfg.batch_size, m.moco_k
            ),
        ));
    }
    if !(0.0..1.0).contains(&m.moco_m) {
        return Err(bad(
            "moco.moco_m",
            format!("must be in [0, 1), got {}", m.moco_m),
        ));
    }
    if !(m.moco_t > 0.0 && m.moco_t.is_finite()) {
        return Err(bad(
            "moco.moco_t",
            format!("must be finite and > 0, got {}", m.moco_t),
        ));
    }
    Ok(())
}

/// The queue's keys and the `[B, 1 + K]` logits against them (and their gradient), in floats.
pub fn state_floats(cfg: &TrainConfig) -> f64 {
    let k = cfg.moco.moco_k.max(0) as f64;
    k * (cfg.feat_dim as f64 + 2.0 * cfg.batch_size as f64)
}

/// InfoNCE (moco/builder.py `forward`): logits [q·k, q·queue] / τ, the positive at index 0.
///
/// # Shapes
/// `q`, `k`: `[B, D]` L2-normalised; `queue`: `[K, D]` L2-normalised keys. Returns a scalar.
pub fn info_nce(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> Tensor {
    let l_pos = (q * k).sum_dim_intlist([1i64].as_slice(), true, Kind::Float); // [B, 1]
    let l_neg = q.matmul(&queue.tr()); // [B, K]
    let logits = Tensor::cat(&[l_pos, l_neg], 1) / temperature;
    let labels = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
    logits.cross_entropy_for_logits(&labels)
}

pub struct Moco {
    cfg: MocoConfig,
    key_encoder: MomentumEncoder,
    /// `[K, D]` keys, oldest overwritten first (the reference's `[D, K]` transposed).
    queue: Tensor,
    /// Next row to write, as a one-element int64 tensor so the checkpoint holds it.
    queue_ptr: Tensor,
    /// This step's keys, enqueued once the step is known to be good.
    pending: Option<Tensor>,
}

impl Moco {
    pub fn new(cfg: &TrainConfig, student: &VarStore, device: Device) -> Result<Self> {
        Ok(Moco {
            cfg: cfg.moco.clone(),
            key_encoder: MomentumEncoder::copy_of(cfg, student, device)?,
            queue: initial_queue(cfg.moco.moco_k, cfg.feat_dim, cfg.seed, device),
            queue_ptr: Tensor::zeros([1], (Kind::Int64, Device::Cpu)),
            pending: None,
        })
    }
}

/// The reference's `normalize(randn(dim, K), dim=0)`, drawn from the run's seed by biaslab's own
/// generator (tch's is process-global, shared with other grid cells on other threads).
fn initial_queue(k: i64, d: i64, seed: u64, device: Device) -> Tensor {
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = seeded_rng(Mixing::SplitMixChain, seed, STREAM_QUEUE_INIT, 0);
    let v: Vec<f32> = (0..k * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    l2_normalize(&Tensor::from_slice(&v).reshape([k, d])).to_device(device)
}

impl Objective for Moco {
    fn method(&self) -> Method {
        Method::Moco
    }

    fn student_crops(&self, _total: usize) -> usize {
        1
    }

    fn loss(
        &mut self,
        ctx: &StepContext,
        _student: &SwavModel,
        crops: &[Tensor],
        out: &SwavOutput,
    ) -> Result<ObjectiveLoss> {
        let q = &out.embedding; // [B, D], normalised by the head
        let k = self
            .key_encoder
            .forward(&crops[1..2], ctx.fp16)
            .embedding
            .to_kind(Kind::Float)
            .detach();
        let loss = info_nce(q, &k, &self.queue, self.cfg.moco_t);
        self.pending = Some(k);
        Ok(ObjectiveLoss::plain(loss))
    }

    fn rollback(&mut self) {
        self.pending = None;
        self.key_encoder.undo_forward();
    }

    /// Momentum update, then the keys into the queue (moco/builder.py `_dequeue_and_enqueue`). The
    /// reference updates the key encoder at the start of the next forward; after this step is the same.
    fn after_step(&mut self, ctx: &StepContext) {
        self.key_encoder.update(momentum_at(
            self.cfg.moco_m,
            ctx.step,
            ctx.total_steps,
            self.cfg.moco_m_cos,
        ));
        if let Some(k) = self.pending.take() {
            let len = self.queue.size()[0];
            let b = k.size()[0];
            let ptr = self.queue_ptr.int64_value(&[0]);
            tch::no_grad(|| {
                // K is a multiple of B (validated), so a batch never wraps around the end
                self.queue.narrow(0, ptr, b).copy_(&k);
            });
            let _ = self.queue_ptr.fill_((ptr + b) % len);
        }
    }

    fn needs_full_batches(&self) -> bool {
        true
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut v = self.key_encoder.state();
        v.push((QUEUE_KEY.to_string(), self.queue.shallow_clone()));
        v.push((QUEUE_PTR_KEY.to_string(), self.queue_ptr.shallow_clone()));
        v
    }

    /// InfoNCE over 1 + K candidates: uniform logits give ln(1 + K).
    fn normaliser(&self, _batch: i64) -> (f64, &'static str) {
        (((1 + self.cfg.moco_k) as f64).ln(), "ln(1+moco_k)")
    }

    fn collapse_advice(&self) -> &'static str {
        "training looks collapsed (loss ≈ ln(1 + moco_k): queries no closer to their keys than to the queue). \
         Try a lower base_lr, a longer warm-up (warmup_epochs), a larger moco.moco_t, or a higher moco.moco_m \
         so the keys change more slowly."
    }

    fn collapsed(&self, ratio: f64, _top_share: Option<f64>, _l: &ObjectiveLoss) -> bool {
        near_uniform(ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_nce_is_ln_k_plus_one_for_uninformative_keys_and_small_for_matched_ones() {
        // every logit equal: uniform over 1 + K candidates
        let q = Tensor::from_slice(&[1f32, 0.0, 1.0, 0.0]).reshape([2, 2]);
        let queue = Tensor::from_slice(&[1f32, 0.0, 1.0, 0.0, 1.0, 0.0]).reshape([3, 2]);
        let l = info_nce(&q, &q, &queue, 0.2).double_value(&[]);
        assert!((l - 4f64.ln()).abs() < 1e-6, "{l}");
        // the key matches, the queue is orthogonal: loss = ln(1 + 3 e^{-1/τ})
        let queue = Tensor::from_slice(&[0f32, 1.0, 0.0, 1.0, 0.0, 1.0]).reshape([3, 2]);
        let l = info_nce(&q, &q, &queue, 0.2).double_value(&[]);
        let want = (1.0 + 3.0 * (-5f64).exp()).ln();
        assert!((l - want).abs() < 1e-6, "{l} vs {want}");
    }

    #[test]
    fn initial_queue_is_seeded_and_normalised() {
        let a = initial_queue(8, 4, 3, Device::Cpu);
        let b = initial_queue(8, 4, 3, Device::Cpu);
        assert!(a.equal(&b));
        assert!(!a.equal(&initial_queue(8, 4, 4, Device::Cpu)));
        let norms = a.norm_scalaropt_dim(2, [1i64].as_slice(), false);
        assert!(norms.allclose(
            &Tensor::ones([8], (Kind::Float, Device::Cpu)),
            1e-5,
            1e-6,
            false
        ));
    }
}
