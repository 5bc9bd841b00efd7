//! `biaslab analyze <analysis> --embeddings FILE... --out DIR`: runs the analyses on embeddings Parquet
//! files and writes one report per analysis (Parquet or CSV), PNG plots and summary.md.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::analyze::embeddings::GroupBy;
use crate::analyze::run::{analyze, Analysis, AnalyzeOptions, AnalyzeOutcome};

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Which analysis to run (`all` runs every one).
    #[arg(value_enum)]
    pub analysis: Analysis,
    /// Embeddings Parquet files or glob patterns (`runs/*/boxes.parquet`, quoted); one row per crop. Files
    /// are scanned lazily (only the columns analyses read); rows of all files are pooled, then grouped.
    #[arg(long, required = true, num_args = 1..)]
    pub embeddings: Vec<PathBuf>,
    /// Report directory (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// One report row per value of this column.
    #[arg(long, value_enum, default_value_t = GroupBy::Dataset)]
    pub group_by: GroupBy,
    /// Seed for bootstrap resamples and any sampled pairs or queries.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write CSV instead of Parquet.
    #[arg(long)]
    pub csv: bool,
    /// Number of SwAV prototypes K (default: largest code + 1).
    #[arg(long)]
    pub num_prototypes: Option<usize>,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
}

pub fn run(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let opts = AnalyzeOptions {
        analyses: vec![args.analysis],
        group_by: args.group_by,
        seed: args.seed,
        csv: args.csv,
        num_prototypes: args.num_prototypes,
        plots: !args.no_plots,
    };
    let outcome = analyze(&args.embeddings, &args.out, &opts).context("analyze")?;
    for p in &outcome.written {
        println!("wrote {}", p.display());
    }
    Ok(notes_exit(&outcome))
}

/// Prints the notes of rows that could not be computed (they are in the files too); exit status 1 when
/// there are any, as skipped files give for fetch and check (2 is an error).
pub fn notes_exit(outcome: &AnalyzeOutcome) -> ExitCode {
    for n in &outcome.notes {
        eprintln!("note: {n}");
    }
    if outcome.notes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
