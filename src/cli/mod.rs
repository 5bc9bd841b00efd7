//! Command-line interface: clap derive args, one file per subcommand, each with `run(&Args)`.
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod analyze;
pub mod backgrounds;
pub mod datasets;
pub mod devices;
pub mod embed;
pub mod eval;
pub mod experiment;
pub mod import;
pub mod invariance;
pub mod train;

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
    /// Train SwAV (or the SimCLR baseline) on a dataset; resumable, with checkpoints and metrics.
    Train(train::TrainArgs),
    /// Embed a dataset's images or COCO object boxes with a trained run (the analyses' input).
    Embed(embed::EmbedArgs),
    /// Frozen-feature evaluation of a run: weighted kNN or a linear probe, train set → test set.
    Eval(eval::EvalArgs),
    /// Purushwalkam & Gupta's invariance table (occlusion, viewpoint, illumination, instance) for runs.
    Invariance(invariance::InvarianceArgs),
    /// Background reliance (Xiao et al. 2020): Only-FG, Only-BG-T, Mixed-Same, Mixed-Rand, BG-gap.
    Backgrounds(backgrounds::BackgroundsArgs),
    /// Ablation grids from a TOML file: train, embed, analyze and evaluate every cell; one table.
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    /// Bring a PyTorch checkpoint (torchvision ResNet, SwAV release or training checkpoint) in as a run.
    Import(import::ImportArgs),
    /// What this binary sees: libtorch, the CUDA backend and devices.
    Devices(devices::DevicesArgs),
    /// Collapse, spectrum, uniformity, invariance, prototypes, kNN and name-that-dataset reports.
    Analyze(analyze::AnalyzeArgs),
}

/// Most threads a command runs per available core: beyond a few per core, more threads only add memory
/// (a stack each, libtorch's per-thread buffers) and contention, never speed.
pub const THREADS_PER_CORE: usize = 4;
/// Most threads a command runs on any machine, however many cores it reports.
pub const MAX_THREADS: usize = 256;

/// `--threads` as a command uses it: all cores when absent or 0; at most [`THREADS_PER_CORE`] × the
/// available cores and never more than [`MAX_THREADS`], with a note saying so when the request is cut.
pub fn capped_threads(requested: Option<usize>) -> (usize, Option<String>) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cap = cores.saturating_mul(THREADS_PER_CORE).min(MAX_THREADS);
    match requested.filter(|&n| n > 0) {
        None => (cores.min(cap), None),
        Some(n) if n > cap => (
            cap,
            Some(format!(
                "--threads {n} is more than {THREADS_PER_CORE} per core of the {cores} available (at most \
                 {MAX_THREADS}); using {cap}"
            )),
        ),
        Some(n) => (n, None),
    }
}

/// The command line with every enumerated value accepted in any case (`--method SwAV`, `--crops Boxes`).
pub fn command() -> clap::Command {
    fn ignore_case(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.ignore_case(true))
            .mut_subcommands(ignore_case)
    }
    ignore_case(Cli::command())
}

/// Parses the process arguments with [`command`]; prints help or the error and exits as clap does.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Datasets(cmd) => datasets::run(cmd),
        Command::Train(a) => train::run(&a),
        Command::Embed(a) => embed::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Invariance(a) => invariance::run(&a),
        Command::Backgrounds(a) => backgrounds::run(&a),
        Command::Experiment(c) => experiment::run(c),
        Command::Import(a) => import::run(&a),
        Command::Devices(a) => devices::run(&a),
        Command::Analyze(a) => analyze::run(&a),
    }
}
