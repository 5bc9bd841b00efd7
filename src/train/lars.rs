//! SGD with momentum wrapped in LARS (apex LARC as used by the SwAV reference, trust coefficient 0.001,
//! no clipping), with momentum buffers held here so they can be checkpointed (tch cannot save optimiser
//! state). Biases and BatchNorm parameters (every tensor of rank ≤ 1) get neither adaptation nor weight decay,
//! as in SimCLR/solo-learn `exclude_bias_n_norm`.
use std::collections::BTreeMap;

use tch::{nn::VarStore, Tensor};

/// LARS hyper-parameters and state. Parameters are keyed by their VarStore name, so the order of updates
/// and the saved buffers never depend on hash order.
#[derive(Debug)]
pub struct Lars {
    pub momentum: f64,
    pub weight_decay: f64,
    pub trust_coefficient: f64,
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
            buffers,
        }
    }

    /// Whether a parameter is excluded from adaptation and weight decay (bias, BN weight/bias).
    pub fn excluded(param: &Tensor) -> bool {
        param.dim() <= 1
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
                if !Self::excluded(&p) {
                    let p_norm = p.norm().double_value(&[]);
                    let g_norm = g.norm().double_value(&[]);
                    if p_norm != 0.0 && g_norm != 0.0 {
                        let adaptive = self.trust_coefficient * p_norm
                            / (g_norm + p_norm * self.weight_decay + LARC_EPS);
                        d_p = (d_p + &p * self.weight_decay) * adaptive;
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
