//! `biaslab experiment run FILE.toml --out DIR [--resume] [--jobs N]`: every cell of an ablation grid —
//! fetch and compose what is missing, then per cell train, embed the object boxes, analyze collapse /
//! spectrum / prototypes, kNN and a linear probe, and the invariance table — collected into one ablation table (Parquet +
//! Markdown) with each metric's mean and 95% interval over seeds. A finished cell (`cell.json` with status
//! `done`) is not redone on `--resume`, an interrupted one resumes its training; a failed cell is reported
//! and the others go on.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::datasets::{fetch::FetchArgs, DataDirArgs};
use super::embed::threads_or_all;
use crate::data::compose::compose;
use crate::data::index::{index_path, resolve_data_dir};
use crate::experiment::{Cell, CellResult, CellStatus, ExperimentSpec};
pub use crate::pipeline::grid::CELL_FILE;
use crate::pipeline::grid::{run_grid, GridProgress, GridRequest};
use crate::pipeline::{Env, Progress};
use crate::train::install_sigint_flag;

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Run (or resume) every cell of a grid and write the ablation table.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment TOML (see experiments/*.toml).
    pub file: PathBuf,
    /// Output directory: `cells/<cell>/…`, cells.parquet, ablation.parquet, ablation.md, machine.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep finished cells and resume interrupted ones.
    #[arg(long)]
    pub resume: bool,
    /// Cells run at once (the cores are shared between them).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Print the cells and their configs, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub dirs: DataDirArgs,
}

pub fn run(cmd: ExperimentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ExperimentCommand::Run(a) => run_grid_cmd(&a),
    }
}

fn run_grid_cmd(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let origin = args.file.display().to_string();
    let spec = ExperimentSpec::read(&args.file)?;
    if args.dry_run {
        let cells = spec.cells(&origin);
        for c in &cells {
            match &c.config {
                Ok(cfg) => println!(
                    "{}: {} epochs, crops {:?} @ {:?}",
                    c.id(),
                    cfg.epochs,
                    cfg.crops.nmb_crops,
                    cfg.crops.size_crops
                ),
                Err(why) => println!("{}: not applicable: {why}", c.id()),
            }
        }
        if cells.iter().all(|c| c.config.is_err()) {
            eprintln!("note: no cell of {origin} applies (reasons above)");
            return Ok(ExitCode::from(1));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.out.join("cells").exists() && !args.resume {
        anyhow::bail!(
            "{}: holds an experiment already; pass --resume to continue it or choose another --out",
            args.out.display()
        );
    }
    let data_dir = resolve_data_dir(args.dirs.data_dir.as_deref());
    prepare(&spec, &data_dir, args.dirs.manifests.as_deref())?;
    let env = Env {
        data_dir,
        threads: threads_or_all(None),
        device: crate::device::resolve("auto", "--device")?,
        stop: Some(install_sigint_flag()?),
    };
    // The experiment's machine, beside its cells (each cell's run records its own in the run directory):
    // every session appends one, so an experiment resumed elsewhere says so.
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let mut machine = crate::machine::Machine::detect();
    // libtorch's threads as every cell sets them: the cores shared between the cells running at once
    machine.torch_threads = (env.threads / args.jobs.max(1)).max(1) as i64;
    crate::machine::MachineLog::append(
        &args.out,
        crate::machine::Session {
            kind: "run".into(),
            step: None,
            machine: machine.clone(),
        },
    )?;
    println!("{}", machine.summary());
    let req = GridRequest {
        spec,
        file: args.file.clone(),
        out: args.out.clone(),
        resume: args.resume,
        jobs: args.jobs,
    };
    let r = run_grid(&env, &req, &Lines)?;
    if r.interrupted {
        println!("interrupted, resumable with --resume: finished cells are kept");
        return Ok(ExitCode::from(super::train::EXIT_INTERRUPTED));
    }
    print!("{}", r.markdown);
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    let done = r.count(CellStatus::Done) + r.count(CellStatus::DoneWithSkips);
    let failed = r.count(CellStatus::Failed);
    let with_skips = r.count(CellStatus::DoneWithSkips);
    println!(
        "{} cells: {done} done{}, {failed} failed, {} not applicable → {}",
        r.cells.len(),
        if with_skips > 0 {
            format!(" ({with_skips} with skipped inputs)")
        } else {
            String::new()
        },
        r.count(CellStatus::NotApplicable),
        args.out.join("ablation.md").display()
    );
    if done == 0 && failed == 0 {
        // Every cell "not applicable" (a typo in [train], an unknown method) measured nothing.
        eprintln!(
            "note: no cell of {origin} applies; the reasons are in {}",
            args.out.join("cells.parquet").display()
        );
    }
    // Skipped inputs are exit status 1 as for every other command (README, "Exit status"): the cells are
    // finished and the skipped files are listed in each cell's report.
    Ok(if failed == 0 && done > 0 && with_skips == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The grid's progress as lines: one per finished cell, whether or not a terminal is attached, and the
/// training log's lines and notes of every cell.
struct Lines;

impl GridProgress for Lines {
    fn cell_done(&self, finished: usize, total: usize, cell: &Cell, r: &CellResult) {
        if r.status == CellStatus::Failed {
            eprintln!(
                "cell {}: failed: {}",
                cell.id(),
                r.reason.as_deref().unwrap_or("")
            );
        }
        println!(
            "[{finished}/{total}] {}: {}{}",
            cell.id(),
            r.status,
            r.reason
                .as_deref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        );
    }
    fn stage(&self, _cell: &Cell) -> Box<dyn Progress + '_> {
        Box::new(LogLines)
    }
}

/// A stage's log lines on stdout, its notes on stderr; no bar (cells may run at once).
struct LogLines;

impl Progress for LogLines {
    fn line(&mut self, text: &str) {
        println!("{text}");
    }
    fn note(&mut self, text: &str) {
        eprintln!("note: {text}");
    }
}

/// Fetches the datasets that are not there yet and composes the object/scene pair (compose itself keeps
/// an existing pair).
fn prepare(spec: &ExperimentSpec, data_dir: &Path, manifests: Option<&Path>) -> anyhow::Result<()> {
    let missing: Vec<String> = spec
        .prepare
        .fetch
        .iter()
        .filter(|n| !index_path(&data_dir.join(n)).is_file())
        .cloned()
        .collect();
    if !missing.is_empty() {
        // Exit status 1 (some images skipped) is fine: the skips are listed in the dataset's report.
        super::datasets::fetch::run(&FetchArgs {
            dirs: DataDirArgs {
                data_dir: Some(data_dir.to_path_buf()),
                manifests: manifests.map(Path::to_path_buf),
            },
            names: missing,
            all: false,
        })?;
    }
    if let Some(cfg) = &spec.prepare.compose {
        compose(data_dir, data_dir, cfg).context("compose")?;
    }
    Ok(())
}
