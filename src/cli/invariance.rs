//! `biaslab invariance --run RUN [--run …] --data NAME|DIR --transforms occlusion,viewpoint,… --out DIR`:
//! Purushwalkam & Gupta's invariance table. The transformed sets are built from the dataset's objects (their
//! COCO boxes when `annotations.json` is there, else whole images), embedded by every run, and scored by the
//! invariance analysis: one row per run × transform × k in `invariance.parquet`, runs side by side.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use polars::prelude::*;

use super::embed::{progress_bar, say_skips, Bar, ComputeArgs};
use crate::analyze::invariance_sets::Transform;
use crate::analyze::run::AnalyzeOutcome;
use crate::pipeline::invariance::{invariance, InvarianceRequest};
use crate::pipeline::Env;
use crate::report::columns as cols;
use crate::run_dir::EmbedLayer;

#[derive(Debug, Args)]
pub struct InvarianceArgs {
    /// Run directories written by `biaslab train` (one column of the table each).
    #[arg(long = "run", required = true)]
    pub runs: Vec<PathBuf>,
    /// Labelled object dataset (a name under the data dir or a directory).
    #[arg(long)]
    pub data: String,
    /// Comma-separated: occlusion, viewpoint, illumination-direction, illumination-color, instance.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "occlusion,viewpoint,illumination-direction,illumination-color,instance"
    )]
    pub transforms: Vec<String>,
    /// Report directory: invariance.parquet, the plot, summary.md, `embeddings/<run>.parquet`.
    #[arg(long)]
    pub out: PathBuf,
    /// Patch side in pixels (default: the first run's largest training crop).
    #[arg(long)]
    pub size: Option<u32>,
    /// Objects used at most (a seeded sample beyond it).
    #[arg(long, default_value_t = 300)]
    pub max_objects: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = EmbedLayer::Backbone)]
    pub layer: EmbedLayer,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: &InvarianceArgs) -> anyhow::Result<ExitCode> {
    let device = args.compute.device()?;
    let transforms: Vec<Transform> = args
        .transforms
        .iter()
        .map(|t| Transform::parse(t.trim()))
        .collect::<Result<_, _>>()?;
    let env = Env {
        data_dir: args.compute.data_dir(),
        threads: args.compute.init_threads(),
        device,
        stop: None,
    };
    let req = InvarianceRequest {
        runs: args.runs.clone(),
        data: args.data.clone(),
        transforms,
        out: args.out.clone(),
        size: args.size,
        max_objects: args.max_objects,
        seed: args.seed,
        layer: args.layer,
        batch_size: args.compute.batch_size,
    };
    let mut bar = Bar(progress_bar(0, "views"));
    let r = invariance(&env, &req, &mut bar).context("invariance")?;
    bar.0.finish_and_clear();
    eprintln!(
        "{} objects of {}, {} views over {} transform(s), {} px",
        r.objects,
        args.data,
        r.views,
        req.transforms.len(),
        r.size
    );
    let table = df!(
        "run" => r.rows.iter().map(|x| x.run.clone()).collect::<Vec<_>>(),
        cols::TRANSFORM => r.rows.iter().map(|x| x.transform.clone()).collect::<Vec<_>>(),
        cols::K => r.rows.iter().map(|x| x.k).collect::<Vec<_>>(),
        cols::SCORE => r.rows.iter().map(|x| x.score).collect::<Vec<_>>(),
        cols::N_SETS => r.rows.iter().map(|x| x.n_sets).collect::<Vec<_>>(),
    )?;
    println!("{table}");
    for p in &r.written {
        println!("wrote {}", p.display());
    }
    let skips = say_skips(&r.skipped, r.skipped_file.as_deref());
    let notes = super::analyze::notes_exit(&AnalyzeOutcome {
        written: r.written.clone(),
        notes: r.notes.clone(),
    });
    Ok(if skips == ExitCode::SUCCESS {
        notes
    } else {
        skips
    })
}
