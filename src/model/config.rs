//! `ModelConfig`: which backbone and head to build; `Default` is the SwAV paper's ResNet-50 setting.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Backbone architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Resnet18,
    Resnet50,
}

impl Arch {
    /// Residual blocks per stage (He et al. 2016, Table 1): what the model builds and the training
    /// memory estimate counts.
    pub fn blocks_per_stage(self) -> [i64; 4] {
        match self {
            Arch::Resnet18 => [2, 2, 2, 2],
            Arch::Resnet50 => [3, 4, 6, 3],
        }
    }

    /// A block's output channels per middle channel: 1 (basic block) or 4 (bottleneck).
    pub fn expansion(self) -> i64 {
        match self {
            Arch::Resnet18 => 1,
            Arch::Resnet50 => 4,
        }
    }
}

/// What the model is made of. Names follow the SwAV reference (`main_swav.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Width of the first stage; torchvision's 64. Smaller (16/32) gives CPU-sized demo models.
    pub width: i64,
    /// 3×3 stride-1 stem without max-pool, for 32–96 px crops (CIFAR-style ResNet).
    pub small_images: bool,
    /// Hidden width of the projection MLP; 0 means a single linear layer (reference behaviour).
    pub hidden_mlp: i64,
    /// Dimension of the projected, L2-normalised features (`feat_dim` in the reference).
    pub output_dim: i64,
    /// Number of prototypes per head; several entries build several heads (`MultiPrototypes`).
    pub nmb_prototypes: Vec<i64>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: Arch::Resnet50,
            // torchvision resnet50 width
            width: 64,
            small_images: false,
            // SwAV main_swav.py: --hidden_mlp 2048
            hidden_mlp: 2048,
            // SwAV main_swav.py: --feat_dim 128
            output_dim: 128,
            // SwAV paper: 3000 prototypes for ImageNet
            nmb_prototypes: vec![3000],
        }
    }
}

impl ModelConfig {
    /// Checks every field once; errors name the field and value.
    pub fn validate(&self, origin: &str) -> Result<()> {
        if self.width <= 0 {
            return Err(Error::config(
                origin,
                "width",
                format!("must be > 0, got {}", self.width),
            ));
        }
        if self.hidden_mlp < 0 {
            return Err(Error::config(
                origin,
                "hidden_mlp",
                format!("must be ≥ 0, got {}", self.hidden_mlp),
            ));
        }
        if self.output_dim <= 0 {
            return Err(Error::config(
                origin,
                "output_dim",
                format!("must be > 0, got {}", self.output_dim),
            ));
        }
        if self.nmb_prototypes.is_empty() {
            return Err(Error::config(
                origin,
                "nmb_prototypes",
                "needs at least one head",
            ));
        }
        if let Some(k) = self.nmb_prototypes.iter().find(|&&k| k < 2) {
            return Err(Error::config(
                origin,
                "nmb_prototypes",
                format!("each head needs ≥ 2 prototypes, got {k}"),
            ));
        }
        Ok(())
    }

    /// Dimension of the pooled backbone features (512·w/64 for ResNet-18, 2048·w/64 for ResNet-50).
    pub fn backbone_dim(&self) -> i64 {
        self.width * 8 * self.arch.expansion()
    }
}
