//! The momentum encoder MoCo and DINO share (MoCo's key encoder, DINO's teacher): a copy of the student
//! that follows it by an exponential moving average of its parameters, never by gradients.
use std::f64::consts::PI;

use tch::{nn::VarStore, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::swav::SwavModel;
use crate::model::RunningStats;
use crate::train::config::TrainConfig;

/// Checkpoint prefix of the momentum encoder's tensors (its names are the student's after it).
pub const PREFIX: &str = "momentum_encoder.";

pub struct MomentumEncoder {
    vs: VarStore,
    model: SwavModel,
    /// (student parameter, encoder parameter) pairs, fixed at construction: the EMA runs over parameters
    /// only, as both references do (`model.parameters()`); batch-norm statistics are the encoder's own,
    /// from its own forward passes in train mode.
    pairs: Vec<(Tensor, Tensor)>,
    /// Batch-norm statistics before the last forward pass, to undo a dropped step.
    saved_stats: RunningStats,
}

impl MomentumEncoder {
    /// A copy of `student` (every parameter and buffer), frozen. Built through the seeded constructor so
    /// its throw-away initial draws hold the model lock: a grid cell on another thread seeding its own
    /// model is not interleaved with them.
    pub fn copy_of(cfg: &TrainConfig, student: &VarStore, device: Device) -> Result<Self> {
        let (mut vs, model) = SwavModel::new_seeded(&cfg.model_config(), cfg.seed, device);
        let src = student.variables();
        let dst = vs.variables();
        let mut pairs = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (name, mut t) in dst {
                let s = src.get(&name).ok_or_else(|| {
                    Error::Invalid(format!(
                        "momentum encoder: the student has no tensor {name}"
                    ))
                })?;
                t.copy_(s);
                if s.requires_grad() {
                    pairs.push((s.shallow_clone(), t));
                }
            }
            Ok(())
        })?;
        vs.freeze();
        Ok(MomentumEncoder {
            vs,
            model,
            pairs,
            saved_stats: RunningStats::default(),
        })
    }

    pub fn model(&self) -> &SwavModel {
        &self.model
    }

    /// Forward in train mode without gradients, remembering the batch-norm statistics it changes.
    pub fn forward(&mut self, crops: &[Tensor], fp16: bool) -> crate::model::swav::SwavOutput {
        self.saved_stats = RunningStats::save(&self.vs);
        tch::no_grad(|| tch::autocast(fp16, || self.model.forward_t(crops, true)))
    }

    /// Puts back the batch-norm statistics from before the last forward pass.
    pub fn undo_forward(&mut self) {
        std::mem::take(&mut self.saved_stats).restore();
    }

    /// θ_k ← m θ_k + (1 − m) θ_q (moco/builder.py `_momentum_update_key_encoder`, main_dino.py's EMA), in
    /// the references' operation order.
    pub fn update(&mut self, m: f64) {
        self.saved_stats = RunningStats::default();
        tch::no_grad(|| {
            for (s, t) in &mut self.pairs {
                let next = &*t * m + s.detach() * (1.0 - m);
                t.copy_(&next);
            }
        });
    }

    /// Every tensor under [`PREFIX`].
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("{PREFIX}{n}"), t))
            .collect()
    }
}

/// The momentum at `step` of `total`: `base` throughout, or with `cosine` DINO's schedule from `base` to 1
/// (utils.cosine_scheduler(base, 1, epochs, niter_per_ep): 1 + (base − 1)(1 + cos(π step / total)) / 2).
pub fn momentum_at(base: f64, step: usize, total: usize, cosine: bool) -> f64 {
    if !cosine || total == 0 {
        return base;
    }
    1.0 + (base - 1.0) * (1.0 + (PI * step as f64 / total as f64).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::momentum_at;

    #[test]
    fn cosine_momentum_runs_from_base_to_one() {
        assert_eq!(momentum_at(0.99, 500, 1000, false), 0.99);
        assert!((momentum_at(0.996, 0, 1000, true) - 0.996).abs() < 1e-15);
        assert!((momentum_at(0.996, 500, 1000, true) - 0.998).abs() < 1e-12);
        assert!((momentum_at(0.996, 1000, 1000, true) - 1.0).abs() < 1e-15);
    }
}
