//! `biaslab embed --run RUN --data NAME|DIR --out FILE.parquet`: embeddings of a dataset's images, of its
//! COCO object boxes, or of N augmented views per image, under a trained run's latest checkpoint, in the
//! embeddings contract every analysis reads.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use polars::prelude::*;

use crate::analyze::embed::{dataset_samples, embed_samples, CropMode, EmbedOptions};
use crate::analyze::embeddings::write_embeddings_with_k;
use crate::data::compose::resolve_dataset;
use crate::data::decode::Skip;
use crate::data::index::resolve_data_dir;
use crate::interop::import::ImportRecord;
use crate::report::io::write_parquet;
use crate::train::{EmbedLayer, Trainer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Crops {
    /// One row per image (centre crop).
    Image,
    /// One row per COCO box of `annotations.json` (object crops; the collapse-across-crops input).
    Boxes,
    /// `--views` augmented views per image (SwAV's augmentations, seeded): rows of one image share
    /// `image_id` and `set_id`, the input of alignment / uniformity and of augmentation invariance.
    Views,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layer {
    /// Pooled backbone features (what linear probes and kNN use).
    Backbone,
    /// The projection head's L2-normalised output (the space SwAV's prototypes live in).
    Projector,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Run directory written by `biaslab train` (its latest checkpoint is used).
    #[arg(long)]
    pub run: PathBuf,
    /// Dataset: a name under the data dir, or any folder (with index.parquet, an ImageFolder tree
    /// `DIR/<label>/<image>`, or images anywhere below it, unlabelled).
    #[arg(long = "data")]
    pub dataset: String,
    /// COCO instances JSON for `--crops boxes` (default: the dataset's `annotations.json`); its
    /// `file_name`s resolve against the `--data` folder.
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    /// Output embeddings Parquet.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Crops::Image)]
    pub crops: Crops,
    /// Views per image for `--crops views`.
    #[arg(long, default_value_t = 4)]
    pub views: usize,
    /// Seed of the `--crops views` augmentations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Layer::Backbone)]
    pub layer: Layer,
    /// Eval crop side in pixels (default: the run's largest training crop).
    #[arg(long)]
    pub size: Option<u32>,
    /// Embed only shard I of N (`I/N`, 0 ≤ I < N): every N-th sample from the I-th, so N shards are disjoint
    /// and together are the unsharded run (a Slurm array or Kubernetes indexed job, one shard per task).
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Written into the `split` column (e.g. train / test, for kNN).
    #[arg(long)]
    pub split: Option<String>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Where the data is and how much of the machine to use: shared by the commands that embed.
#[derive(Debug, Clone, Args)]
pub struct ComputeArgs {
    /// Images embedded per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Threads for the loader and for libtorch (default, or 0: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Data directory (default `./data`).
    #[arg(long, env = "BIASLAB_DATA")]
    pub data_dir: Option<PathBuf>,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (the first GPU when there is one); the run's weights are moved
    /// there whatever device trained them.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl ComputeArgs {
    /// `threads` threads (or all cores) and `data_dir`, as an in-process caller (the grid runner) sets them.
    pub fn new(threads: usize, data_dir: &Path) -> Self {
        Self {
            batch_size: 64,
            threads: Some(threads),
            data_dir: Some(data_dir.to_path_buf()),
            device: "auto".into(),
        }
    }

    pub fn device(&self) -> anyhow::Result<tch::Device> {
        Ok(crate::device::resolve(&self.device, "--device")?)
    }

    /// Resolves the thread count and gives it to libtorch; returns it for the loader.
    pub fn init_threads(&self) -> usize {
        let threads = threads_or_all(self.threads);
        tch::set_num_threads(threads as i32);
        threads
    }

    pub fn data_dir(&self) -> PathBuf {
        resolve_data_dir(self.data_dir.as_deref())
    }
}

impl From<Layer> for EmbedLayer {
    fn from(l: Layer) -> Self {
        match l {
            Layer::Backbone => EmbedLayer::Backbone,
            Layer::Projector => EmbedLayer::Projector,
        }
    }
}

/// The run's latest checkpoint, with the run directory named in the error. An imported run whose file had
/// no projection head cannot give the projector layer.
pub fn load_run(run: &Path, layer: Layer, device: tch::Device) -> anyhow::Result<Trainer> {
    let record = ImportRecord::read(run)?;
    if layer == Layer::Projector && record.as_ref().is_some_and(|r| !r.projection_head) {
        anyhow::bail!(
            "{}: imported without a projection head, so there is no projector layer (use --layer backbone)",
            run.display()
        );
    }
    Trainer::resume_on(run, Some(device))
        .with_context(|| format!("{}: cannot load the run", run.display()))
}

/// Whether the run's prototypes are trained: ours always, an imported one only if its file had them.
pub fn has_prototypes(run: &Path) -> anyhow::Result<bool> {
    Ok(ImportRecord::read(run)?.is_none_or(|r| r.prototypes))
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let device = args.compute.device()?;
    let data_dir = args.compute.data_dir();
    let dir = resolve_dataset(&data_dir, &args.dataset)?;
    let name = dataset_name(&dir, &args.dataset);
    let trainer = load_run(&args.run, args.layer, device)?;
    let threads = args.compute.init_threads();
    let crops = match args.crops {
        Crops::Image => CropMode::Image,
        Crops::Boxes => CropMode::Boxes,
        Crops::Views => CropMode::Views {
            n: args.views,
            seed: args.seed,
        },
    };
    let (mut samples, sets) = dataset_samples(&dir, &name, crops, args.annotations.as_deref())?;
    if let Some((i, n)) = args.shard {
        if matches!(crops, CropMode::Views { .. }) {
            // A view's random stream is keyed by the sample's position, which a shard would change.
            anyhow::bail!(
                "--shard: not with --crops views (their augmentations are seeded by position)"
            );
        }
        samples = samples
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, s)| s)
            .collect();
        if samples.is_empty() {
            anyhow::bail!(
                "--shard {i}/{n}: no sample falls in this shard of {}",
                dir.display()
            );
        }
    }
    // Codes only where prototypes were trained (SwAV, or an import whose file had them), written with the
    // run's K so usage is measured against it; a SimCLR run's untrained prototypes would mean nothing.
    let codes =
        has_prototypes(&args.run)? && trainer.cfg.method == crate::train::config::Method::Swav;
    let opts = EmbedOptions {
        crops,
        layer: args.layer.into(),
        size: args.size.unwrap_or_else(|| run_crop_size(&trainer)),
        batch_size: args.compute.batch_size,
        threads,
        prototype_codes: codes,
    };
    let out = embed_with_progress(&trainer, &samples, &sets, &opts)?;
    if out.rows.is_empty() {
        anyhow::bail!("{}: no image could be read", dir.display());
    }
    let k = codes
        .then(|| trainer.cfg.nmb_prototypes.first().copied())
        .flatten();
    write_embeddings_with_k(&args.out, &out.rows, k)?;
    if let Some(split) = &args.split {
        add_split(&args.out, split)?;
    }
    println!(
        "{} embeddings ({} crops, {} layer, {} px) → {}",
        out.rows.len(),
        format!("{:?}", args.crops).to_lowercase(),
        format!("{:?}", args.layer).to_lowercase(),
        opts.size,
        args.out.display()
    );
    report_skips(&out.skipped, &args.out.with_extension("skipped.parquet"))
}

/// A progress bar over `len` items (steps of `unit`), drawn on stderr only when it is a terminal: piped or
/// redirected output gets the summary lines alone.
pub fn progress_bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed}} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// [`embed_samples`] with a progress bar: image and box crops are embedded in chunks of a few batches
/// (the rows equal one call's: each crop depends on its own sample only, as `--shard` relies on); views are
/// seeded by their position in the whole list, so they go in one call.
pub fn embed_with_progress(
    trainer: &Trainer,
    samples: &[crate::data::source::Sample],
    sets: &std::collections::HashMap<String, String>,
    opts: &EmbedOptions,
) -> anyhow::Result<crate::analyze::embed::EmbedOutput> {
    let bar = progress_bar(samples.len() as u64, "crops");
    if matches!(opts.crops, CropMode::Views { .. }) {
        let out = embed_samples(trainer, samples, sets, opts)?;
        bar.finish_and_clear();
        return Ok(out);
    }
    let mut out = crate::analyze::embed::EmbedOutput::default();
    for chunk in samples.chunks(opts.batch_size.max(1) * 8) {
        let part = embed_samples(trainer, chunk, sets, opts)?;
        out.rows.extend(part.rows);
        out.skipped.extend(part.skipped);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// `I/N` with 0 ≤ I < N.
fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 0/4"))?;
    let i: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: I is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: N is not a number"))?;
    if n == 0 || i >= n {
        return Err(format!("`{s}`: need 0 ≤ I < N"));
    }
    Ok((i, n))
}

/// The dataset's name for the `dataset` column: its directory's name (of the absolute path for `.` or `..`).
pub fn dataset_name(dir: &Path, given: &str) -> String {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    named(dir)
        .or_else(|| std::fs::canonicalize(dir).ok().and_then(|p| named(&p)))
        .unwrap_or_else(|| given.to_string())
}

/// `--threads`, or every core when it is absent or 0.
pub fn threads_or_all(threads: Option<usize>) -> usize {
    // `--threads 0` means all cores too, as for rayon, rather than a pool with no thread.
    threads.filter(|&n| n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Default eval crop: the run's largest training crop (the resolution the model saw most of).
pub fn run_crop_size(trainer: &Trainer) -> u32 {
    trainer.cfg.size_crops.iter().copied().max().unwrap_or(224) as u32
}

/// Lists the files that could not be read (path, reason) in `path` and says so; nothing when none.
pub fn report_skips(skipped: &[Skip], path: &Path) -> anyhow::Result<ExitCode> {
    if skipped.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut df = df!(
        "path" => skipped.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
        "reason" => skipped.iter().map(|s| s.reason.to_string()).collect::<Vec<_>>(),
    )?;
    write_parquet(&mut df, path)?;
    eprintln!(
        "{} unreadable image(s) skipped; listed in {}",
        skipped.len(),
        path.display()
    );
    Ok(skip_status(skipped.len()))
}

/// Exit status of a command that finished: 1 when inputs were skipped (README, "Exit status"), else 0.
pub fn skip_status(skipped: usize) -> ExitCode {
    if skipped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Adds the constant `split` column (kNN uses train rows as the bank, test rows as queries).
fn add_split(path: &Path, split: &str) -> anyhow::Result<()> {
    let df = crate::report::io::read_parquet(path)?;
    let mut df = df
        .lazy()
        .with_column(lit(split.to_string()).alias(crate::analyze::embeddings::COL_SPLIT))
        .collect()?;
    write_parquet(&mut df, path)?;
    Ok(())
}
