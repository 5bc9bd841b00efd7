//! DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"; main_dino.py):
//! the student, on every crop, matches the output of a momentum teacher on the two global crops, centred
//! and sharpened (`DINOLoss`).
//!
//! The DINO head's last layer is weight-normalised with its norm fixed at 1 (`norm_last_layer`): that is
//! the prototype layer here (rows L2-normalised before every step, applied to the L2-normalised embedding,
//! as DINOHead normalises its bottleneck), with `out_dim` = the first entry of `nmb_prototypes`, and
//! `freeze_last_layer` is `freeze_prototypes_niters` in steps. Deviations from the reference: the head's
//! MLP is the project's two-layer one with BN rather than DINOHead's three GELU layers; the optimiser and
//! schedule are the run's (LARS by default, as SwAV's); one blur probability for all crops rather than
//! 1.0 / 0.1 / 0.5, and no solarisation.
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::momentum::{momentum_at, MomentumEncoder};
use super::{Method, Objective, ObjectiveLoss, StepContext};
use crate::error::{Error, Result};
use crate::model::l2_normalize;
use crate::model::swav::{SwavModel, SwavOutput};
use crate::train::config::TrainConfig;

/// Checkpoint name of the centre.
pub const CENTER_KEY: &str = "dino.center";
/// Both of DINO's collapse modes (uniform output, one dimension dominating) drive KL(teacher ‖ student) to
/// 0 (paper §5.3, Fig. 7); a step whose mean KL is below this many nats counts as collapsed.
pub const COLLAPSE_KL: f64 = 1e-3;

/// DINO's settings (`[dino]` in a config), under main_dino.py's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DinoConfig {
    /// Teacher EMA momentum at the start, rising to 1 on a cosine over the run (`--momentum_teacher`).
    pub momentum_teacher: f64,
    /// Teacher temperature after the warm-up (`--teacher_temp`; the paper's 0.04 → 0.07 warm-up).
    pub teacher_temp: f64,
    /// Teacher temperature at the first epoch (`--warmup_teacher_temp`).
    pub warmup_teacher_temp: f64,
    /// Epochs of the linear teacher-temperature warm-up (`--warmup_teacher_temp_epochs` 30); a run shorter
    /// than that warms up over all its epochs (`fit_to_run`).
    pub warmup_teacher_temp_epochs: usize,
    /// Student temperature (`--student_temp`).
    pub student_temp: f64,
    /// EMA of the centre (`--center_momentum`).
    pub center_momentum: f64,
}

impl DinoConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for DinoConfig {
    fn default() -> Self {
        DinoConfig {
            momentum_teacher: 0.996,
            teacher_temp: 0.07,
            warmup_teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 30,
            student_temp: 0.1,
            center_momentum: 0.9,
        }
    }
}

/// DINO's defaults: SwAV's multi-crop (2 global + 4 local crops at SwAV's scales, which DINO's ResNet-50
/// recipe uses too: `--global_crops_scale 0.14 1 --local_crops_scale 0.05 0.14`) with DINO's colour jitter
/// (ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8: strength 0.5 here, saturation 0.4), and an out_dim of 1,024.
pub fn defaults() -> TrainConfig {
    let swav = TrainConfig::default();
    let mut crops = swav.crops.clone();
    crops.jitter_strength = 0.5;
    TrainConfig {
        method: Method::Dino,
        crops,
        nmb_prototypes: vec![1024],
        // SwAV's feature queue; DINO has none
        queue_length: 0,
        ..swav
    }
}

/// Two global crops first, one head, temperatures and momenta in range.
pub fn validate(cfg: &TrainConfig, bad: &dyn Fn(&str, String) -> Error) -> Result<()> {
    if cfg.crops.nmb_crops.first() != Some(&2) {
        return Err(bad(
            "nmb_crops",
            format!(
                "dino needs 2 global crops as its first group (the teacher sees those), got {:?}",
                cfg.crops.nmb_crops
            ),
        ));
    }
    if cfg.nmb_prototypes.len() != 1 {
        return Err(bad(
            "nmb_prototypes",
            format!("dino has one head (out_dim), got {:?}", cfg.nmb_prototypes),
        ));
    }
    let d = &cfg.dino;
    for (field, t) in [
        ("dino.teacher_temp", d.teacher_temp),
        ("dino.warmup_teacher_temp", d.warmup_teacher_temp),
        ("dino.student_temp", d.student_temp),
    ] {
        if !(t > 0.0 && t.is_finite()) {
            return Err(bad(field, format!("must be finite and > 0, got {t}")));
        }
    }
    for (field, m) in [
        ("dino.momentum_teacher", d.momentum_teacher),
        ("dino.center_momentum", d.center_momentum),
    ] {
        if !(0.0..1.0).contains(&m) {
            return Err(bad(field, format!("must be in [0, 1), got {m}")));
        }
    }
    if d.warmup_teacher_temp_epochs > cfg.epochs {
        return Err(bad(
            "dino.warmup_teacher_temp_epochs",
            format!(
                "{} exceeds epochs {}",
                d.warmup_teacher_temp_epochs, cfg.epochs
            ),
        ));
    }
    Ok(())
}

/// The teacher temperature of `epoch`: np.linspace(warmup, final, warmup_epochs)[epoch] during the warm-up
/// (so the last warm-up epoch already has the final value), the final value after.
pub fn teacher_temp_at(d: &DinoConfig, epoch: usize) -> f64 {
    let n = d.warmup_teacher_temp_epochs;
    if epoch >= n {
        return d.teacher_temp;
    }
    if n == 1 {
        return d.warmup_teacher_temp;
    }
    d.warmup_teacher_temp + (d.teacher_temp - d.warmup_teacher_temp) * epoch as f64 / (n - 1) as f64
}

/// What `DINOLoss.forward` computes for one batch.
#[derive(Debug)]
pub struct DinoLossParts {
    /// Mean over the (teacher crop, student crop) pairs of different crops of Σ −p_t log p_s.
    pub loss: Tensor,
    /// Mean entropy (nats) of the teacher's distributions, and the loss minus it: the mean
    /// KL(teacher ‖ student) over the pairs (every teacher crop enters V − 1 pairs).
    pub teacher_entropy: f64,
    pub kl: f64,
    /// The batch's mean teacher output `[1, K]`, for the centre's EMA.
    pub batch_center: Tensor,
}

/// DINOLoss (main_dino.py) as a pure function.
///
/// # Shapes
/// `student`: `[V·B, K]` over all crops in order; `teacher`: `[2·B, K]` over the two global crops;
/// `center`: `[1, K]`. Returns the loss with a graph to `student` only.
pub fn dino_loss(
    student: &Tensor,
    teacher: &Tensor,
    center: &Tensor,
    student_temp: f64,
    teacher_temp: f64,
    batch: i64,
) -> DinoLossParts {
    let v_total = student.size()[0] / batch;
    let log_p_s: Vec<Tensor> = (0..v_total)
        .map(|v| (student.narrow(0, v * batch, batch) / student_temp).log_softmax(-1, Kind::Float))
        .collect();
    let p_t = ((teacher - center) / teacher_temp)
        .softmax(-1, Kind::Float)
        .detach();
    let mut total = Tensor::zeros([], (Kind::Float, student.device()));
    let mut n_terms = 0;
    for iq in 0..2 {
        let q = p_t.narrow(0, iq * batch, batch);
        for (v, lp) in log_p_s.iter().enumerate() {
            if v as i64 == iq {
                // the reference skips student and teacher on the same view
                continue;
            }
            total += (-&q * lp)
                .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
                .mean(Kind::Float);
            n_terms += 1;
        }
    }
    let loss = total / n_terms as f64;
    let teacher_entropy = tch::no_grad(|| {
        let h = -(&p_t * p_t.clamp_min(1e-30).log()).sum_dim_intlist(
            [-1i64].as_slice(),
            false,
            Kind::Float,
        );
        h.mean(Kind::Float).double_value(&[])
    });
    let kl = loss.double_value(&[]) - teacher_entropy;
    let batch_center = tch::no_grad(|| {
        teacher
            .mean_dim([0i64].as_slice(), true, Kind::Float)
            .detach()
    });
    DinoLossParts {
        loss,
        teacher_entropy,
        kl,
        batch_center,
    }
}

pub struct Dino {
    cfg: DinoConfig,
    k: i64,
    teacher: MomentumEncoder,
    /// `[1, K]`, the reference's registered buffer.
    center: Tensor,
    /// This step's batch centre, applied once the step is known to be good.
    pending_center: Option<Tensor>,
}

impl Dino {
    pub fn new(cfg: &TrainConfig, student: &VarStore, device: Device) -> Result<Self> {
        let k = cfg.nmb_prototypes.first().copied().unwrap_or(1);
        Ok(Dino {
            cfg: cfg.dino.clone(),
            k,
            teacher: MomentumEncoder::copy_of(cfg, student, device)?,
            center: Tensor::zeros([1, k], (Kind::Float, device)),
            pending_center: None,
        })
    }
}

impl Objective for Dino {
    fn method(&self) -> Method {
        Method::Dino
    }

    fn loss(
        &mut self,
        ctx: &StepContext,
        _student: &SwavModel,
        crops: &[Tensor],
        out: &SwavOutput,
    ) -> Result<ObjectiveLoss> {
        // only the 2 global views pass through the teacher (main_dino.py)
        let t = self.teacher.forward(&crops[..2], ctx.fp16);
        // The teacher's last layer is weight-normalised with g = 1 as the student's: its rows, an EMA of
        // the student's unit rows, are normalised for the product and left as they are (DINOHead's `v`).
        let rows = tch::no_grad(|| l2_normalize(&self.teacher.model().prototypes.heads[0].ws));
        let teacher_out = t.embedding.to_kind(Kind::Float).matmul(&rows.tr()).detach();
        let parts = dino_loss(
            &out.scores[0],
            &teacher_out,
            &self.center,
            self.cfg.student_temp,
            teacher_temp_at(&self.cfg, ctx.epoch),
            ctx.batch,
        );
        self.pending_center = Some(parts.batch_center);
        Ok(ObjectiveLoss {
            codes: Some(teacher_out.argmax(1, false)),
            teacher_entropy: Some(parts.teacher_entropy),
            teacher_student_kl: Some(parts.kl),
            ..ObjectiveLoss::plain(parts.loss)
        })
    }

    fn rollback(&mut self) {
        self.pending_center = None;
        self.teacher.undo_forward();
    }

    /// The teacher's EMA with the cosine momentum of this step, then the centre's EMA (update_center).
    fn after_step(&mut self, ctx: &StepContext) {
        self.teacher.update(momentum_at(
            self.cfg.momentum_teacher,
            ctx.step,
            ctx.total_steps,
            true,
        ));
        if let Some(c) = self.pending_center.take() {
            let m = self.cfg.center_momentum;
            tch::no_grad(|| {
                let next = &self.center * m + c * (1.0 - m);
                self.center.copy_(&next);
            });
        }
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut v = self.teacher.state();
        v.push((CENTER_KEY.to_string(), self.center.shallow_clone()));
        v
    }

    /// A cross-entropy over K outputs: uniform distributions give ln K.
    fn normaliser(&self, _batch: i64) -> (f64, &'static str) {
        ((self.k as f64).ln(), "ln K")
    }

    fn collapse_advice(&self) -> &'static str {
        "training looks collapsed (KL(teacher ‖ student) ≈ 0: the teacher's outputs are uniform or one \
         dimension dominates; DINO §5.3). Centring counters domination and sharpening uniformity: lower \
         dino.teacher_temp (0.04) against uniform outputs, a lower dino.center_momentum (the centre follows \
         the batch sooner) against a dominant dimension, or a higher dino.momentum_teacher."
    }

    fn collapsed(&self, _ratio: f64, _top_share: Option<f64>, l: &ObjectiveLoss) -> bool {
        l.teacher_student_kl.is_some_and(|kl| kl < COLLAPSE_KL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_temperature_warms_up_as_linspace() {
        let d = DinoConfig {
            warmup_teacher_temp_epochs: 4,
            ..DinoConfig::default()
        };
        let t: Vec<f64> = (0..6).map(|e| teacher_temp_at(&d, e)).collect();
        let want = [0.04, 0.05, 0.06, 0.07, 0.07, 0.07];
        for (a, b) in t.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{t:?}");
        }
    }

    #[test]
    fn dino_loss_skips_same_view_pairs_and_splits_into_entropy_and_kl() {
        let b = 2;
        // 3 crops, K = 3; the teacher's two global crops
        let s = Tensor::from_slice(&[
            1f32, 0.0, 0.0, 0.0, 1.0, 0.0, // crop 0
            0.5, 0.5, 0.0, 0.0, 0.0, 1.0, // crop 1
            0.2, 0.3, 0.1, 0.9, 0.0, 0.4, // crop 2
        ])
        .reshape([3 * b, 3]);
        let t = Tensor::from_slice(&[
            0.3f32, 0.1, 0.0, 0.0, 0.2, 0.5, 0.1, 0.1, 0.4, 0.6, 0.0, 0.2,
        ])
        .reshape([2 * b, 3]);
        let center = Tensor::from_slice(&[0.1f32, 0.0, 0.05]).reshape([1, 3]);
        let parts = dino_loss(&s, &t, &center, 0.1, 0.04, b);
        // by hand: pairs (t0, s1), (t0, s2), (t1, s0), (t1, s2)
        let ls = |v: i64| (s.narrow(0, v * b, b) / 0.1).log_softmax(-1, Kind::Float);
        let pt = ((&t - &center) / 0.04).softmax(-1, Kind::Float);
        let term = |iq: i64, v: i64| {
            (-pt.narrow(0, iq * b, b) * ls(v))
                .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        };
        let want = (term(0, 1) + term(0, 2) + term(1, 0) + term(1, 2)) / 4.0;
        assert!((parts.loss.double_value(&[]) - want).abs() < 1e-5);
        assert!(parts.kl >= -1e-6, "KL is never negative: {}", parts.kl);
        assert!((parts.kl + parts.teacher_entropy - want).abs() < 1e-5);
        let c: Vec<f32> = Vec::try_from(parts.batch_center.flatten(0, -1)).unwrap();
        assert!(
            (c[0] - 0.25).abs() < 1e-6 && (c[2] - 0.275).abs() < 1e-6,
            "{c:?}"
        );
    }

    #[test]
    fn identical_teacher_and_student_distributions_have_zero_kl() {
        let b = 3;
        let t = Tensor::from_slice(&[
            0.5f32, -0.2, 0.1, 0.0, 0.3, 0.3, 0.9, 0.1, 0.0, 0.2, 0.2, 0.2, -0.4, 0.1, 0.6, 0.3,
            0.0, 0.3,
        ])
        .reshape([2 * b, 3]);
        // student temperature equal to the teacher's, no centre, every crop the same distribution
        let one = t.narrow(0, 0, b);
        let s = Tensor::cat(&[&one, &one], 0);
        let tt = Tensor::cat(&[&one, &one], 0);
        let parts = dino_loss(
            &s,
            &tt,
            &Tensor::zeros([1, 3], (Kind::Float, Device::Cpu)),
            0.1,
            0.1,
            b,
        );
        assert!(parts.kl.abs() < 1e-5, "{}", parts.kl);
    }
}
