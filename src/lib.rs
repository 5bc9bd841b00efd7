//! biaslab: dataset-bias experiments for self-supervised vision.
//!
//! The pipeline runs one way: dataset manifests → fetched image folders → multi-crop loader → SwAV/SimCLR
//! trainer → embeddings → analyses → polars reports. Every stage is a library function and a CLI subcommand;
//! the files between stages (image folders, COCO JSON, Parquet) are the contracts.

pub mod analyze;
pub mod augment;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod experiment;
pub mod interop;
pub mod loader;
pub mod model;
pub mod report;
pub mod train;

pub use error::{Error, Result};
