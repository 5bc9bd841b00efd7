//! Training: the objectives (SwAV, SimCLR, MoCo v2, DINO: `objective/`), Sinkhorn, losses, queue, LARS,
//! schedule, checkpoints, the trainer loop.
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod lars;
pub mod loss_scale;
pub mod metrics;
pub mod objective;
pub mod queue;
pub mod run_identity;
pub mod run_lock;
pub mod schedule;
pub mod simclr_loss;
pub mod sinkhorn;
pub mod swav_loss;
pub mod trainer;

pub use config::{DinoConfig, Method, MocoConfig, Optimizer, TrainConfig};
pub use lars::Lars;
pub use objective::Objective;
pub use queue::Queue;
pub use schedule::lr_at;
pub use simclr_loss::simclr_loss;
pub use sinkhorn::sinkhorn;
pub use swav_loss::swav_loss;
pub use trainer::{install_sigint_flag, EmbedLayer, StepMetrics, Trainer, COLLAPSE_ADVICE};
