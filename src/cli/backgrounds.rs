//! `biaslab backgrounds --run RUN [--run …] --data NAME|DIR [--train-data NAME|DIR] --out DIR`: background
//! reliance (Xiao et al. 2020, the Backgrounds Challenge). Each labelled object image of `--data` (COCO
//! annotations with masks: a composed set, or `segmentation` polygons/RLE) is built as Original, Only-FG,
//! Only-BG-T, Mixed-Same and Mixed-Rand, embedded by every run, and scored by kNN and the linear probe
//! trained on Original images; BG-gap = Mixed-Same − Mixed-Rand, and the nearest-neighbour
//! background-match rate beside chance. One row per run × variant × probe in `backgrounds.parquet`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::embed::{progress_bar, say_skips, Bar, ComputeArgs};
use crate::analyze::knn::K;
use crate::pipeline::backgrounds::{backgrounds, BackgroundsRequest};
use crate::pipeline::Env;
use crate::run_dir::EmbedLayer;

#[derive(Debug, Args)]
pub struct BackgroundsArgs {
    /// Run directories written by `biaslab train` or `biaslab import` (rows of the table each).
    #[arg(long = "run", required = true)]
    pub runs: Vec<PathBuf>,
    /// Dataset whose objects have masks (COCO `annotations.json` with `segmentation`; a composed set has
    /// them): its images get the variants and are scored.
    #[arg(long)]
    pub data: String,
    /// Labelled dataset the probes are trained on, Original images (e.g. the composed `…-objects-train`);
    /// default: a held-out share of `--data`'s images.
    #[arg(long)]
    pub train_data: Option<String>,
    /// Share of `--data`'s images scored when there is no `--train-data` (the rest train the probes).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Report directory: backgrounds.parquet, summary.md, skipped.parquet.
    #[arg(long)]
    pub out: PathBuf,
    /// Eval side in pixels (default: the first run's largest training crop).
    #[arg(long)]
    pub size: Option<u32>,
    /// Images read at most from each dataset (a seeded sample beyond it).
    #[arg(long, default_value_t = 500)]
    pub max_images: usize,
    /// Seed of the held-out split, the donor images of the mixed variants and the intervals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = EmbedLayer::Backbone)]
    pub layer: EmbedLayer,
    /// kNN neighbours.
    #[arg(long, default_value_t = K)]
    pub k: usize,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: &BackgroundsArgs) -> anyhow::Result<ExitCode> {
    let device = args.compute.device()?;
    let env = Env {
        data_dir: args.compute.data_dir(),
        threads: args.compute.init_threads(),
        device,
        stop: None,
    };
    let req = BackgroundsRequest {
        runs: args.runs.clone(),
        data: args.data.clone(),
        train_data: args.train_data.clone(),
        test_fraction: args.test_fraction,
        out: args.out.clone(),
        size: args.size,
        max_images: args.max_images,
        seed: args.seed,
        layer: args.layer,
        batch_size: args.compute.batch_size,
        k: args.k,
    };
    let mut bar = Bar(progress_bar(0, "views"));
    let r = backgrounds(&env, &req, &mut bar).context("backgrounds")?;
    bar.0.finish_and_clear();
    eprintln!(
        "{} images of {} scored, probes trained on {} Original images, {} px",
        r.scored, args.data, r.n_train, r.size
    );
    println!(
        "{:<24} {:<11} {:<7} {:>22} {:>7} {:>5}",
        "run", "variant", "probe", "accuracy [95% CI]", "chance", "n"
    );
    for x in &r.rows {
        println!(
            "{:<24} {:<11} {:<7} {:>8.4} [{:.4}, {:.4}] {:>7.4} {:>5}",
            x.run,
            x.variant.name(),
            x.probe.name(),
            x.accuracy,
            x.accuracy_lo,
            x.accuracy_hi,
            x.chance,
            x.n_queries
        );
    }
    let mut seen = Vec::new();
    for x in &r.rows {
        if let Some(g) = x.bg_gap.filter(|_| !seen.contains(&(&x.run, x.probe))) {
            seen.push((&x.run, x.probe));
            println!(
                "{}: BG-gap ({}) = Mixed-Same − Mixed-Rand = {:+.4} [{:+.4}, {:+.4}] over {} images",
                x.run,
                x.probe.name(),
                g.gain,
                g.lo,
                g.hi,
                g.n
            );
        }
    }
    let mut shown = Vec::new();
    for x in &r.rows {
        if let Some(m) = x.bg_match.filter(|_| !shown.contains(&&x.run)) {
            shown.push(&x.run);
            println!(
                "{}: nearest-neighbour background match {:.4} [{:.4}, {:.4}] of {} images, chance {:.4}",
                x.run, m.rate, m.lo, m.hi, m.n, m.chance
            );
        }
    }
    for p in &r.written {
        println!("wrote {}", p.display());
    }
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    let skips = say_skips(&r.skipped, r.skipped_file.as_deref());
    Ok(if skips != ExitCode::SUCCESS || !r.notes.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
