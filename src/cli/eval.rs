//! `biaslab eval knn|linear --run RUN --train-data A [--test-data B] --out FILE.parquet`: frozen-feature
//! evaluation of a run. The datasets are embedded with the run's latest checkpoint (backbone features by
//! default); without `--test-data`, a seeded `--test-fraction` of A's images is held out. `knn` is weighted
//! kNN (k = 20, τ = 0.07: test rows query train rows), `linear` a logistic-regression probe trained on the
//! train rows. One result row, with provenance, as Parquet.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::embed::{progress_bar, say_skips, Bar, ComputeArgs};
use crate::analyze::embed::{CropKind, CropMode};
use crate::analyze::knn::K;
pub use crate::pipeline::eval::Protocol;
use crate::pipeline::{evaluate, Env, EvalRequest};
use crate::run_dir::EmbedLayer;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[arg(value_enum)]
    pub protocol: Protocol,
    /// Run directory written by `biaslab train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Labelled dataset the classifier (or kNN bank) is built from.
    #[arg(long)]
    pub train_data: String,
    /// Labelled dataset it is scored on (default: a held-out share of `--train-data`'s images).
    #[arg(long)]
    pub test_data: Option<String>,
    /// Share of `--train-data`'s images held out when there is no `--test-data`.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// COCO instances JSON of `--train-data` for `--crops boxes` (default: its `annotations.json`); the
    /// `file_name`s resolve against that dataset's folder.
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    /// COCO instances JSON of `--test-data` for `--crops boxes` (default: its `annotations.json`).
    #[arg(long, requires = "test_data")]
    pub test_annotations: Option<PathBuf>,
    /// Result Parquet (one row).
    #[arg(long)]
    pub out: PathBuf,
    /// `image` (centre crops) or `boxes` (COCO object boxes of each dataset's annotations.json).
    #[arg(long, value_enum, default_value_t = CropKind::Image)]
    pub crops: CropKind,
    #[arg(long, value_enum, default_value_t = EmbedLayer::Backbone)]
    pub layer: EmbedLayer,
    /// Eval crop side in pixels (default: the run's largest training crop).
    #[arg(long)]
    pub size: Option<u32>,
    /// Neighbours for `knn`.
    #[arg(long, default_value_t = K)]
    pub k: usize,
    /// Seed of the held-out split and of the query sample (used above 20,000 queries).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let crops = match args.crops {
        CropKind::Views => anyhow::bail!("--crops views: evaluation uses image or boxes crops"),
        CropKind::Boxes => CropMode::Boxes,
        CropKind::ObjectOnly => CropMode::ObjectOnly,
        CropKind::Image => CropMode::Image,
    };
    let env = Env {
        data_dir: args.compute.data_dir(),
        device: args.compute.device()?,
        threads: args.compute.init_threads(),
        stop: None,
    };
    let req = EvalRequest {
        protocol: args.protocol,
        run: args.run.clone(),
        train_data: args.train_data.clone(),
        train_annotations: args.annotations.clone(),
        test_data: args.test_data.clone(),
        test_annotations: args.test_annotations.clone(),
        test_fraction: args.test_fraction,
        crops,
        layer: args.layer,
        size: args.size,
        batch_size: args.compute.batch_size,
        k: args.k,
        seed: args.seed,
        out: args.out.clone(),
    };
    let mut bar = Bar(progress_bar(0, "crops"));
    let r = evaluate(&env, &req, &mut bar)
        .with_context(|| format!("evaluating {}", args.run.display()))?;
    bar.0.finish_and_clear();
    println!(
        "{}: accuracy {:.4} [95% CI {:.4}, {:.4}] vs chance {:.4} ({} train, {} test rows) → {}",
        r.protocol,
        r.accuracy,
        r.accuracy_lo,
        r.accuracy_hi,
        r.chance,
        r.n_train,
        r.n_test,
        args.out.display()
    );
    Ok(say_skips(&r.skipped, r.skipped_file.as_deref()))
}
