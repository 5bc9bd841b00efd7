//! Projection head and prototypes, as the SwAV reference's `projection_head` and `prototypes` /
//! `MultiPrototypes` (src/resnet50.py), with the same parameter names.
use tch::nn::{self, Module};
use tch::Tensor;

/// L2-normalises the rows of `[N, D]` (F.normalize, eps 1e-12 as in PyTorch).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    // torch.nn.functional.normalize default eps
    let norm = x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// Linear(d, hidden) → BN1d → ReLU → Linear(hidden, out), or one Linear when `hidden_mlp` is 0.
#[derive(Debug)]
pub struct ProjectionHead {
    seq: nn::SequentialT,
}

impl ProjectionHead {
    /// Builds under `p` = `root / "projection_head"`; indices 0, 1, 3 match the reference's nn.Sequential.
    pub fn new(p: nn::Path, d: i64, hidden_mlp: i64, output_dim: i64) -> Self {
        let seq = if hidden_mlp == 0 {
            nn::seq_t().add(nn::linear(&p / "0", d, output_dim, Default::default()))
        } else {
            nn::seq_t()
                .add(nn::linear(&p / "0", d, hidden_mlp, Default::default()))
                .add(nn::batch_norm1d(&p / "1", hidden_mlp, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::linear(
                    &p / "3",
                    hidden_mlp,
                    output_dim,
                    Default::default(),
                ))
        };
        ProjectionHead { seq }
    }

    /// `[N, d]` → `[N, output_dim]`, L2-normalised (reference `l2norm=True`).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        l2_normalize(&x.apply_t(&self.seq, train))
    }
}

/// One or several prototype matrices C (K×D each, no bias).
#[derive(Debug)]
pub struct Prototypes {
    pub heads: Vec<nn::Linear>,
}

impl Prototypes {
    /// One head is `prototypes.weight`; several are `prototypes.prototypes{i}.weight` (MultiPrototypes).
    pub fn new(p: nn::Path, output_dim: i64, nmb_prototypes: &[i64]) -> Self {
        let cfg = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        let heads = if nmb_prototypes.len() == 1 {
            vec![nn::linear(&p, output_dim, nmb_prototypes[0], cfg)]
        } else {
            nmb_prototypes
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    nn::linear(&p / format!("prototypes{i}").as_str(), output_dim, k, cfg)
                })
                .collect()
        };
        Prototypes { heads }
    }

    /// Scores per head: `[N, K_h]` = z Cᵀ.
    pub fn forward(&self, z: &Tensor) -> Vec<Tensor> {
        self.heads.iter().map(|h| h.forward(z)).collect()
    }
}

/// Normalises every prototype row to unit length in place (reference: before each step, under no_grad).
pub fn normalize_prototypes(protos: &Prototypes) {
    tch::no_grad(|| {
        for h in &protos.heads {
            let w = l2_normalize(&h.ws);
            let mut ws = h.ws.shallow_clone();
            ws.copy_(&w);
        }
    });
}
