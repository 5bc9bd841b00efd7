//! biaslab: dataset-bias experiments for self-supervised vision.
//!
//! The pipeline runs one way: dataset manifests → fetched image folders → multi-crop loader → SwAV/SimCLR
//! trainer → embeddings → analyses → polars reports. The files between stages (image folders, COCO JSON,
//! run directories, Parquet) are the contracts; the CLI subcommands call library functions.
//!
//! # Library API
//!
//! - [`train::Trainer`] trains (`fit` over any batch source; the crop recipe of a config is
//!   [`train::TrainConfig::multicrop`]) and checkpoints into a run directory.
//! - [`run_dir`] owns the run directory contract; [`run_dir::Encoder`] opens a run with its model tensors
//!   only (no optimiser state, queue or history) and embeds at the backbone or projector, with prototype
//!   codes, the run's crop size and K. A trainer hands out the same view of its current weights
//!   ([`train::Trainer::encoder`]).
//! - [`pipeline`] holds the stages with typed requests and results: [`pipeline::train()`] (steps, final
//!   loss / ln K, per-epoch kNN, skipped images, stopped or resumed), [`pipeline::embed()`],
//!   [`pipeline::evaluate`] (kNN or linear probe), [`pipeline::invariance()`] (the invariance table as
//!   rows), and the grid runner [`pipeline::grid::run_grid`] (every cell of an experiment through those
//!   stages, with a [`experiment::CellStatus`] each), run in an [`pipeline::Env`] (data directory, threads,
//!   device, stop flag) and reporting to a [`pipeline::Progress`].
//! - [`analyze::run::analyze`] measures embeddings files and writes the reports.
//!
//! Train, embed and analyse in one process:
//!
//! ```no_run
//! use std::path::Path;
//! use biaslab::analyze::embed::CropMode;
//! use biaslab::analyze::run::{analyze, AnalyzeOptions};
//! use biaslab::pipeline::train::fitted_config;
//! use biaslab::pipeline::{embed, train, EmbedRequest, Env, TrainRequest};
//! use biaslab::run_dir::EmbedLayer;
//! use biaslab::train::TrainConfig;
//!
//! # fn main() -> biaslab::Result<()> {
//! let (data, run) = (Path::new("data"), Path::new("runs/swav"));
//! let env = Env::cpu(data, 4);
//! // train: SwAV defaults on a dataset under `data`, one epoch
//! let (config, _notes) = fitted_config(TrainConfig { epochs: 1, ..TrainConfig::default() }, "example")?;
//! let trained = train(&env, &TrainRequest {
//!     data: vec!["my-objects".into()],
//!     out: run.to_path_buf(),
//!     config,
//!     compare: None,
//!     resume: false,
//!     max_steps: None,
//!     checkpoint_every: None,
//!     knn_train: None,
//!     knn_test: None,
//!     knn_test_fraction: 0.2,
//!     object_crops: false,
//!     max_images: None,
//! }, &mut ())?;
//! println!("{} steps, loss / ln K {:?}", trained.step, trained.final_loss_over_ln_k);
//!
//! // embed: the run's encoder over the object boxes of a composed scene dataset
//! let boxes = embed(&env, &EmbedRequest {
//!     run: run.to_path_buf(),
//!     dataset: "my-scenes-test".into(),
//!     crops: CropMode::Boxes,
//!     layer: EmbedLayer::Backbone,
//!     size: None,
//!     batch_size: 64,
//!     annotations: None,
//!     shard: None,
//!     split: None,
//!     out: "runs/swav-boxes.parquet".into(),
//! }, &mut ())?;
//! println!("{} rows, {} files skipped", boxes.rows, boxes.skipped.len());
//!
//! // analyse: collapse, spectrum, uniformity, … into a report directory
//! let report = analyze(&[boxes.out], Path::new("reports/swav"), &AnalyzeOptions::default())?;
//! println!("wrote {:?}", report.written);
//! # Ok(())
//! # }
//! ```

pub mod analyze;
pub mod augment;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod experiment;
pub mod interop;
pub mod loader;
pub mod machine;
pub mod model;
pub mod pipeline;
pub mod report;
pub mod rng;
pub mod run_dir;
pub mod train;

pub use error::{Error, Result};
