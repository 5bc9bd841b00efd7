//! SGD with momentum wrapped in LARS (apex LARC as used by the SwAV reference, trust coefficient 0.001,
//! no clipping), or plain SGD, with momentum buffers held here so they can be checkpointed (tch cannot save
//! optimiser state). With `exclude_bias_n_norm` (biaslab's default), biases and BatchNorm parameters (every
//! tensor of rank ≤ 1) get neither adaptation nor weight decay, as in SimCLR/solo-learn; the SwAV reference
//! adapts and decays every parameter.
use std::collections::BTreeMap;

use tch::{nn::VarStore, Tensor};

use super::config::{Optimizer, TrainConfig};

/// LARS hyper-parameters and state. Parameters are keyed by their VarStore name, so the order of updates
/// and the saved buffers never depend on hash order.
#[derive(Debug)]
pub struct Lars {
    pub momentum: f64,
    pub weight_decay: f64,
    pub trust_coefficient: f64,
    /// `Lars` adapts each parameter's step; `Sgd` is torch.optim.SGD (weight decay added to the gradient).
    pub optimizer: Optimizer,
    /// Rank ≤ 1 parameters skip adaptation and weight decay.
    pub exclude_bias_n_norm: bool,
    /// Momentum buffer per trainable parameter name.
    pub buffers: BTreeMap<String, Tensor>,
}

/// apex LARC: `eps` in the adaptive-lr denominator
const LARC_EPS: f64 = 1e-8;

impl Lars {
    /// `momentum` 0.9, `trust_coefficient` 0.001 in the reference; `weight_decay` 1e-6 (main_swav.py --wd).
    pub fn new(vs: &VarStore, momentum: f64, weight_decay: f64, trust_coefficient: f64) -> Self {
        let buffers = trainable(vs)
            .into_iter()
            .map(|(n, t)| (n, t.zeros_like()))
            .collect();
        Lars {
            momentum,
            weight_decay,
            trust_coefficient,
            optimizer: Optimizer::Lars,
            exclude_bias_n_norm: true,
            buffers,
        }
    }

    /// The optimiser a training config asks for (`optimizer`, `momentum`, `wd`, `trust_coefficient`,
    /// `exclude_bias_n_norm`).
    pub fn for_config(vs: &VarStore, cfg: &TrainConfig) -> Self {
        Lars {
            optimizer: cfg.optimizer,
            exclude_bias_n_norm: cfg.exclude_bias_n_norm,
            ..Self::new(vs, cfg.momentum, cfg.wd, cfg.trust_coefficient)
        }
    }

    /// Whether a parameter is excluded from adaptation and weight decay (bias, BN weight/bias).
    pub fn excluded(&self, param: &Tensor) -> bool {
        self.exclude_bias_n_norm && param.dim() <= 1
    }

    /// One update with learning rate `lr`; parameters whose name satisfies `skip` (frozen prototypes, the
    /// reference's `p.grad = None`) and parameters without a gradient are left untouched, buffers included.
    pub fn step(&mut self, vs: &VarStore, lr: f64, skip: impl Fn(&str) -> bool) {
        tch::no_grad(|| {
            for (name, mut p) in trainable(vs) {
                if skip(&name) {
                    continue;
                }
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut d_p = g.copy();
                if !self.excluded(&p) {
                    match self.optimizer {
                        Optimizer::Lars => {
                            let p_norm = p.norm().double_value(&[]);
                            let g_norm = g.norm().double_value(&[]);
                            // apex LARC: a zero norm leaves the gradient as it is, without decay
                            if p_norm != 0.0 && g_norm != 0.0 {
                                let adaptive = self.trust_coefficient * p_norm
                                    / (g_norm + p_norm * self.weight_decay + LARC_EPS);
                                d_p = (d_p + &p * self.weight_decay) * adaptive;
                            }
                        }
                        // torch.optim.SGD: d_p = g + wd·p
                        Optimizer::Sgd => d_p = d_p + &p * self.weight_decay,
                    }
                }
                let buf = match self.buffers.get_mut(&name) {
                    Some(b) => b,
                    None => {
                        self.buffers.insert(name.clone(), p.zeros_like());
                        match self.buffers.get_mut(&name) {
                            Some(b) => b,
                            None => continue,
                        }
                    }
                };
                // torch.optim.SGD: buf = momentum·buf + d_p (a zero buffer makes the first step buf = d_p)
                let _ = buf.g_mul_scalar_(self.momentum).g_add_(&d_p);
                let _ = p.g_add_(&(&*buf * (-lr)));
            }
        })
    }

    /// Zeroes every parameter gradient.
    pub fn zero_grad(vs: &VarStore) {
        for mut t in vs.trainable_variables() {
            t.zero_grad();
        }
    }
}

/// Trainable variables sorted by name.
pub fn trainable(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// A VarStore with a 2-D weight and a bias whose gradients are exactly `gw` and `gb` (the gradient of
    /// Σ p·g is g).
    fn store(gw: &[f32], gb: &[f32]) -> (VarStore, Tensor, Tensor) {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = root.var("w", &[2, 2], nn::Init::Const(0.0));
        let b = root.var("b", &[2], nn::Init::Const(0.0));
        tch::no_grad(|| {
            w.shallow_clone()
                .copy_(&Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0]).view([2, 2]));
            b.shallow_clone()
                .copy_(&Tensor::from_slice(&[0.25f32, -1.0]));
        });
        let loss = (&w * Tensor::from_slice(gw).view([2, 2])).sum(Kind::Float)
            + (&b * Tensor::from_slice(gb)).sum(Kind::Float);
        loss.backward();
        (vs, w, b)
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    fn norm(v: &[f64]) -> f64 {
        v.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    /// apex LARC's first step on one parameter: p − lr·η‖p‖/(‖g‖ + wd‖p‖ + ε)·(g + wd·p).
    fn larc_first_step(p: &[f64], g: &[f64], lr: f64, wd: f64, eta: f64) -> Vec<f64> {
        let a = eta * norm(p) / (norm(g) + wd * norm(p) + LARC_EPS);
        p.iter()
            .zip(g)
            .map(|(p, g)| p - lr * a * (g + wd * p))
            .collect()
    }

    fn assert_near(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    const GW: [f32; 4] = [0.1, -0.3, 0.2, 0.05];
    const GB: [f32; 2] = [-0.4, 0.7];
    const P_W: [f64; 4] = [1.0, -2.0, 0.5, 3.0];
    const P_B: [f64; 2] = [0.25, -1.0];

    fn g64(g: &[f32]) -> Vec<f64> {
        g.iter().map(|&x| x as f64).collect()
    }

    #[test]
    fn default_excludes_biases_from_adaptation_and_decay() {
        let (vs, w, b) = store(&GW, &GB);
        let (lr, wd) = (0.5, 0.1);
        let mut opt = Lars::new(&vs, 0.9, wd, 0.001);
        opt.step(&vs, lr, |_| false);
        assert_near(
            &values(&w),
            &larc_first_step(&P_W, &g64(&GW), lr, wd, 0.001),
        );
        let plain: Vec<f64> = P_B.iter().zip(g64(&GB)).map(|(p, g)| p - lr * g).collect();
        assert_near(&values(&b), &plain);
    }

    #[test]
    fn reference_mode_adapts_and_decays_biases_too() {
        let (vs, w, b) = store(&GW, &GB);
        let (lr, wd) = (0.5, 0.1);
        let cfg = TrainConfig {
            exclude_bias_n_norm: false,
            wd,
            ..TrainConfig::default()
        };
        let mut opt = Lars::for_config(&vs, &cfg);
        opt.step(&vs, lr, |_| false);
        assert_near(
            &values(&w),
            &larc_first_step(&P_W, &g64(&GW), lr, wd, 0.001),
        );
        assert_near(
            &values(&b),
            &larc_first_step(&P_B, &g64(&GB), lr, wd, 0.001),
        );
    }

    #[test]
    fn sgd_adds_weight_decay_and_momentum_without_adaptation() {
        let (vs, w, b) = store(&GW, &GB);
        let (lr, wd, m) = (0.5, 0.1, 0.9);
        let cfg = TrainConfig {
            optimizer: Optimizer::Sgd,
            exclude_bias_n_norm: false,
            wd,
            momentum: m,
            ..TrainConfig::default()
        };
        let mut opt = Lars::for_config(&vs, &cfg);
        // two steps with the same gradient: buf₁ = d₁, buf₂ = m·buf₁ + d₂ (torch.optim.SGD)
        opt.step(&vs, lr, |_| false);
        let sgd = |p: &[f64], g: &[f64]| -> Vec<f64> {
            let d1: Vec<f64> = p.iter().zip(g).map(|(p, g)| g + wd * p).collect();
            let p1: Vec<f64> = p.iter().zip(&d1).map(|(p, d)| p - lr * d).collect();
            p1.iter()
                .zip(g)
                .zip(&d1)
                .map(|((p, g), d1)| p - lr * (m * d1 + g + wd * p))
                .collect()
        };
        opt.step(&vs, lr, |_| false);
        assert_near(&values(&w), &sgd(&P_W, &g64(&GW)));
        assert_near(&values(&b), &sgd(&P_B, &g64(&GB)));
    }
}
