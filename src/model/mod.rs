//! Backbones (torchvision parameter names), projector and prototypes.
pub mod config;
pub mod head;
pub mod resnet;
pub mod running_stats;
pub mod swav;

pub use config::{Arch, ModelConfig};
pub use head::{l2_normalize, normalize_prototypes, ProjectionHead, Prototypes};
pub use resnet::{resnet, Backbone};
pub use running_stats::RunningStats;
pub use swav::{SwavModel, SwavOutput};
