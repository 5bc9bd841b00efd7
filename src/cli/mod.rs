//! Command-line interface: clap derive args, one file per subcommand, each with `run(&Args)`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod analyze;
pub mod datasets;

/// Dataset-bias experiments for self-supervised vision (SwAV, SimCLR) on curated and uncurated data.
#[derive(Debug, Parser)]
#[command(name = "biaslab", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, fetch, compose, inspect and check datasets.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Collapse, spectrum, uniformity, invariance, prototypes, kNN and name-that-dataset reports.
    Analyze(analyze::AnalyzeArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Datasets(cmd) => datasets::run(cmd),
        Command::Analyze(a) => analyze::run(&a),
    }
}
