//! Dynamic loss scaling for fp16 autocast on CUDA: the rule of `torch.cuda.amp.GradScaler`, which the
//! SwAV reference's apex O1 also follows. The loss is multiplied by a power of two before backward so
//! small fp16 gradients do not flush to zero; gradients are divided back before the optimiser sees them
//! (exact: a power of two only moves the exponent); a step whose gradients overflowed is skipped and the
//! scale halved, and after `GROWTH_INTERVAL` good steps in a row the scale doubles.
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Kind;

/// GradScaler defaults (torch/amp/grad_scaler.py).
pub const INIT_SCALE: f64 = 65536.0;
pub const GROWTH_FACTOR: f64 = 2.0;
pub const BACKOFF_FACTOR: f64 = 0.5;
pub const GROWTH_INTERVAL: usize = 2000;

/// The scaler's whole state (saved in checkpoints so a resumed run scales as the uninterrupted one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Finite steps since the scale last changed.
    pub good_steps: usize,
    /// Steps skipped for non-finite gradients, in all.
    pub skipped_steps: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: INIT_SCALE,
            good_steps: 0,
            skipped_steps: 0,
        }
    }
}

impl LossScaler {
    /// Divides every trainable gradient by the scale, in place; returns whether all of them are finite.
    pub fn unscale(&self, vs: &VarStore) -> bool {
        let inv = 1.0 / self.scale;
        tch::no_grad(|| {
            let mut finite = true;
            for v in vs.trainable_variables() {
                let mut g = v.grad();
                if !g.defined() {
                    continue;
                }
                let _ = g.g_mul_scalar_(inv);
                if finite {
                    // one reduction per tensor; `sum` is NaN if any element is ±inf or NaN
                    let s = g.sum(Kind::Float).double_value(&[]);
                    finite = s.is_finite();
                }
            }
            finite
        })
    }

    /// Records a step: a non-finite one (skipped by the caller) halves the scale, every
    /// `GROWTH_INTERVAL`-th finite one in a row doubles it.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == GROWTH_INTERVAL {
                self.scale *= GROWTH_FACTOR;
                self.good_steps = 0;
            }
        } else {
            self.scale *= BACKOFF_FACTOR;
            self.good_steps = 0;
            self.skipped_steps += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Tensor};

    #[test]
    fn unscale_divides_and_detects_overflow() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        let s = LossScaler::default();
        // d/dw of scale·Σ 2w = 2·scale
        (w.sum(Kind::Float) * 2.0 * s.scale).backward();
        assert!(s.unscale(&vs));
        assert_eq!(Vec::<f32>::try_from(w.grad()).unwrap(), vec![2.0; 3]);
        let _ = w.grad().zero_();
        let big = Tensor::from_slice(&[1.0f32, f32::INFINITY, 1.0]);
        (&w * big).sum(Kind::Float).backward();
        assert!(!s.unscale(&vs));
    }

    #[test]
    fn backs_off_on_overflow_and_grows_after_the_interval() {
        let mut s = LossScaler::default();
        s.update(false);
        assert_eq!((s.scale, s.skipped_steps), (INIT_SCALE / 2.0, 1));
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s.scale, INIT_SCALE / 2.0);
        s.update(true);
        assert_eq!((s.scale, s.good_steps), (INIT_SCALE, 0));
    }
}
