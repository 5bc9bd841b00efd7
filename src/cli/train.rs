//! `biaslab train --data NAME|DIR [--data …] --out RUN`: SwAV (or the SimCLR baseline) on the images of one
//! or more datasets with the multi-crop loader; checkpoints, metrics.parquet, config.json, skipped.parquet
//! and train.log in the run directory. Ctrl-C (or `--max-steps`) checkpoints and stops; `--resume`
//! continues exactly where the run stopped.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::embed::{progress_bar, Bar};
use crate::augment::MultiCropConfig;
use crate::data::index::resolve_data_dir;
use crate::model::Arch;
use crate::pipeline::train::{fitted_config, train, TrainRequest};
pub use crate::pipeline::train::{KNN_FILE, LOG_FILE, SKIPPED_FILE};
use crate::pipeline::Env;
use crate::run_dir::has_checkpoint;
use crate::train::{install_sigint_flag, Method, TrainConfig};

/// Exit status of a run stopped by SIGINT or SIGTERM after its checkpoint (128 + SIGINT, as shells report
/// Ctrl-C): distinct from 1 (done, inputs skipped) and 2 (error).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset: a name under the data dir (see `biaslab datasets list`) or any folder (with index.parquet,
    /// an ImageFolder tree or images anywhere below it); repeat the flag to train on several datasets
    /// mixed (e.g. objects + scenes).
    #[arg(long = "data", required = true)]
    pub data: Vec<String>,
    /// Run directory: checkpoints, metrics.parquet, config.json, skipped.parquet.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML file of training settings under the SwAV reference's names (`nmb_crops`, `size_crops`,
    /// `epsilon`, `queue_length`, …); flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, help = default_help("Objective: swav, simclr, moco (MoCo v2) or dino, each with its own defaults (SimCLR and MoCo train on two views)", format!("{:?}", DEFAULTS.with(|d| d.method)).to_lowercase()))]
    pub method: Option<Method>,
    #[arg(long, help = default_help("Epochs (≥ 1; a warm-up longer than the run is shortened)", DEFAULTS.with(|d| d.epochs)))]
    pub epochs: Option<usize>,
    #[arg(long, help = default_help("Images per batch", DEFAULTS.with(|d| d.batch_size)))]
    pub batch_size: Option<i64>,
    #[arg(long, value_enum, help = default_help("Backbone (torchvision parameter names)", format!("{:?}", DEFAULTS.with(|d| d.arch)).to_lowercase()))]
    pub arch: Option<Arch>,
    #[arg(long, help = default_help("Seed of initialisation, crops and sampling", DEFAULTS.with(|d| d.seed)))]
    pub seed: Option<u64>,
    #[arg(long, help = default_help("`cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available)", DEFAULTS.with(|d| d.device.clone())))]
    pub device: Option<String>,
    /// Continue the run in `--out` from its latest checkpoint. Data, `--config` and recipe flags must
    /// match the saved run (a difference is an error naming it); `--device` may change.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a checkpoint) after this many optimisation steps in total.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Also checkpoint every N steps (a checkpoint is always written at the end of each epoch).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// After every epoch, weighted kNN accuracy (k = 20, τ = 0.07) on this labelled dataset's frozen
    /// features, written to knn_epochs.parquet: accuracy against epoch and wall time.
    #[arg(long)]
    pub knn_train: Option<String>,
    /// Labelled test set of the per-epoch kNN (default: a seeded `--knn-test-fraction` of
    /// `--knn-train`'s images).
    #[arg(long, requires = "knn_train")]
    pub knn_test: Option<String>,
    /// Share of `--knn-train`'s images held out for the per-epoch kNN when there is no `--knn-test`.
    #[arg(
        long,
        default_value_t = 0.2,
        requires = "knn_train",
        conflicts_with = "knn_test"
    )]
    pub knn_test_fraction: f64,
    /// Object-aware crops: train on the datasets' COCO boxes (annotations.json), every crop inside one
    /// object's box, instead of random crops of whole images.
    #[arg(long)]
    pub object_crops: bool,
    /// Train on a seeded sample of at most N images (equal data size across datasets in an ablation).
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Threads for the loader and for libtorch (default, or 0: all cores; at most 4 per core and 256).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Data directory (default `./data`).
    #[arg(long, env = "BIASLAB_DATA")]
    pub data_dir: Option<PathBuf>,
}

thread_local! {
    /// The defaults `--help` shows (built once per thread: clap asks for each flag's help).
    static DEFAULTS: TrainConfig = TrainConfig::default();
}

/// Help text with the default value, which comes from the config file when `--config` is given.
fn default_help(what: &str, default: impl std::fmt::Display) -> String {
    format!("{what} [default: {default}, or the --config file's]")
}

/// Reads the TOML config (if any) and applies the flags on top. Without a config file the method's own
/// defaults apply (SimCLR: two views), and a short run or odd batch size gets a fitted schedule (noted).
fn build_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let cfg = with_flags(args)?;
    // Checked here, before any model is built, so the error names the file the user wrote.
    let origin = match &args.config {
        Some(p) => format!("{} (with command-line flags)", p.display()),
        None => "defaults and command-line flags".to_string(),
    };
    let (cfg, notes) = fitted_config(cfg, &origin)?;
    for note in notes {
        println!("note: {note}");
    }
    Ok(cfg)
}

/// The config file (or the method's defaults) with the recipe flags on top, as given.
fn with_flags(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            TrainConfig::from_toml(&text, args.method)
                .map_err(|e| anyhow::anyhow!("{}: invalid training config: {e}", p.display()))?
        }
        None => TrainConfig::defaults_for(args.method.unwrap_or(Method::Swav)),
    };
    if let Some(m) = args.method {
        cfg.method = m;
    }
    if let Some(v) = args.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = args.batch_size {
        cfg.batch_size = v;
    }
    if let Some(a) = args.arch {
        cfg.arch = a;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = &args.device {
        cfg.device = v.clone();
    }
    Ok(cfg)
}

/// The recipe flags given, by config field: what a resumed run without `--config` must match.
fn flags_given(args: &TrainArgs) -> Vec<&'static str> {
    [
        ("method", args.method.is_some()),
        ("epochs", args.epochs.is_some()),
        ("batch_size", args.batch_size.is_some()),
        ("arch", args.arch.is_some()),
        ("seed", args.seed.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, given)| given.then_some(k))
    .collect()
}

/// The loader's crop recipe for a training config ([`TrainConfig::multicrop`]).
pub fn multicrop_for(cfg: &TrainConfig) -> MultiCropConfig {
    cfg.multicrop()
}

pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    // A resumed run is compared with the config file in full, or with the flags given alone (the rest of
    // a flag-only config is defaults, not a request); a fresh one is built and checked before its
    // directory is created.
    let (config, compare) = if args.resume && args.config.is_none() && has_checkpoint(&args.out) {
        (with_flags(args)?, Some(flags_given(args)))
    } else {
        (build_config(args)?, None)
    };
    let req = TrainRequest {
        data: args.data.clone(),
        out: args.out.clone(),
        config,
        compare,
        resume: args.resume,
        max_steps: args.max_steps,
        checkpoint_every: args.checkpoint_every,
        knn_train: args.knn_train.clone(),
        knn_test: args.knn_test.clone(),
        knn_test_fraction: args.knn_test_fraction,
        object_crops: args.object_crops,
        max_images: args.max_images,
    };
    // Capped before any thread is spawned: `--threads 100000` would start that many loader threads.
    let (threads, note) = super::capped_threads(args.threads);
    if let Some(note) = note {
        println!("note: {note}");
    }
    tch::set_num_threads(threads as i32);
    let env = Env {
        data_dir: resolve_data_dir(args.data_dir.as_deref()),
        threads,
        // the run's own device (its config's `device`) is trained on
        device: tch::Device::Cpu,
        stop: Some(install_sigint_flag()?),
    };
    let mut shown = Bar(progress_bar(0, "steps"));
    let r = train(&env, &req, &mut shown)?;
    shown.0.finish_and_clear();
    Ok(if r.signalled {
        ExitCode::from(EXIT_INTERRUPTED)
    } else {
        super::embed::skip_status(r.skipped.len())
    })
}
