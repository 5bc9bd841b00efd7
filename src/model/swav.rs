//! The full model: backbone → projection head → prototypes, forwarding crops by resolution group as the
//! SwAV reference does (consecutive crops of one size concatenated, one backbone call per group).
use tch::{nn, Tensor};

use super::config::ModelConfig;
use super::head::{ProjectionHead, Prototypes};
use super::resnet::{resnet, Backbone};

/// Serialises seeded model initialisation (see `SwavModel::new_seeded`).
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Outputs for all crops concatenated along the batch axis, in crop order.
#[derive(Debug)]
pub struct SwavOutput {
    /// Pooled backbone features `[V·B, d]`.
    pub features: Tensor,
    /// Projected L2-normalised embeddings z `[V·B, D]`.
    pub embedding: Tensor,
    /// Prototype scores zCᵀ per head `[V·B, K_h]`.
    pub scores: Vec<Tensor>,
}

#[derive(Debug)]
pub struct SwavModel {
    pub backbone: Backbone,
    pub head: ProjectionHead,
    pub prototypes: Prototypes,
}

impl SwavModel {
    /// Backbone at `p` itself (torchvision names), head at `projection_head`, prototypes at `prototypes`.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let backbone = resnet(p, cfg);
        let head = ProjectionHead::new(
            p / "projection_head",
            backbone.dim,
            cfg.hidden_mlp,
            cfg.output_dim,
        );
        let prototypes = Prototypes::new(p / "prototypes", cfg.output_dim, &cfg.nmb_prototypes);
        SwavModel {
            backbone,
            head,
            prototypes,
        }
    }

    /// A seeded model in a fresh VarStore. tch's generator is process-global, so this holds a lock from
    /// seeding to the last initialised weight: two models built on different threads cannot interleave draws.
    /// (Code that draws from tch's generator without this lock can still interleave; build models through here.)
    pub fn new_seeded(cfg: &ModelConfig, seed: u64, device: tch::Device) -> (nn::VarStore, Self) {
        let _guard = INIT_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let model = SwavModel::new(&vs.root(), cfg);
        (vs, model)
    }

    /// Backbone features of crops grouped by consecutive equal size (reference `forward`).
    pub fn forward_backbone(&self, crops: &[Tensor], train: bool) -> Tensor {
        let mut outs = Vec::new();
        let mut start = 0;
        while start < crops.len() {
            let size = crops[start].size().last().copied();
            let mut end = start + 1;
            while end < crops.len() && crops[end].size().last().copied() == size {
                end += 1;
            }
            let group = if end - start == 1 {
                crops[start].shallow_clone()
            } else {
                Tensor::cat(&crops[start..end], 0)
            };
            outs.push(self.backbone.forward_t(&group, train));
            start = end;
        }
        if outs.len() == 1 {
            outs.pop()
                .unwrap_or_else(|| Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu)))
        } else {
            Tensor::cat(&outs, 0)
        }
    }

    /// Full forward over all crops; the head runs once on every crop's features.
    pub fn forward_t(&self, crops: &[Tensor], train: bool) -> SwavOutput {
        let features = self.forward_backbone(crops, train);
        let embedding = self.head.forward_t(&features, train);
        let scores = self.prototypes.forward(&embedding);
        SwavOutput {
            features,
            embedding,
            scores,
        }
    }
}
