//! `biaslab embed --run RUN --data NAME|DIR --out FILE.parquet`: embeddings of a dataset's images, of its
//! COCO object boxes, or of N augmented views per image, under a trained run's latest checkpoint, in the
//! embeddings contract every analysis reads.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::analyze::embed::CropKind;
use crate::data::decode::Skip;
use crate::data::index::resolve_data_dir;
pub use crate::pipeline::dataset_name;
use crate::pipeline::{embed, write_skips, EmbedRequest, Env, Progress};
use crate::run_dir::{EmbedLayer, Encoder};

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
    #[arg(long, value_enum, default_value_t = CropKind::Image)]
    pub crops: CropKind,
    /// Views per image for `--crops views`.
    #[arg(long, default_value_t = 4)]
    pub views: usize,
    /// Seed of the `--crops views` augmentations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = EmbedLayer::Backbone)]
    pub layer: EmbedLayer,
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

/// The run's latest checkpoint opened as an encoder, with the run directory named in the error. An imported
/// run whose file had no projection head cannot give the projector layer.
pub fn load_run(run: &Path, layer: EmbedLayer, device: tch::Device) -> anyhow::Result<Encoder> {
    let encoder = Encoder::open(run, device)
        .with_context(|| format!("{}: cannot load the run", run.display()))?;
    encoder.view().check_layer(layer, run)?;
    Ok(encoder)
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let device = args.compute.device()?;
    let data_dir = args.compute.data_dir();
    let threads = args.compute.init_threads();
    let crops = args.crops.mode(args.views, args.seed);
    let req = EmbedRequest {
        run: args.run.clone(),
        dataset: args.dataset.clone(),
        crops,
        layer: args.layer,
        size: args.size,
        batch_size: args.compute.batch_size,
        annotations: args.annotations.clone(),
        shard: args.shard,
        split: args.split.clone(),
        out: args.out.clone(),
    };
    let env = Env {
        data_dir,
        threads,
        device,
        stop: None,
    };
    let mut bar = Bar(progress_bar(0, "crops"));
    let done = embed(&env, &req, &mut bar)
        .with_context(|| format!("embedding {} with {}", args.dataset, args.run.display()))?;
    bar.0.finish_and_clear();
    if let (Some(total), Some((i, n))) = (done.empty_shard_of, args.shard) {
        println!(
            "shard {i}/{n}: no sample falls in this shard ({total} samples in all); wrote an empty file"
        );
    }
    println!(
        "{} embeddings ({} crops, {} layer, {} px) → {}",
        done.rows,
        format!("{:?}", args.crops).to_lowercase(),
        format!("{:?}", args.layer).to_lowercase(),
        done.size,
        args.out.display()
    );
    Ok(say_skips(&done.skipped, done.skipped_file.as_deref()))
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

/// A stage's progress on a bar: each pass (dataset) starts it over at its own length; training's running
/// loss is the bar's message, and log lines and notes are printed above it.
pub struct Bar(pub indicatif::ProgressBar);

impl Progress for Bar {
    fn start(&mut self, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(0);
    }
    fn advance(&mut self, n: usize) {
        let before = self.0.position();
        self.0.inc(n as u64);
        // Off a terminal the bar draws nothing: a line at every tenth of the stage instead, so a log file
        // shows a 13-minute `invariance` moving (issue 23: it ran 769 s with no output).
        let len = self.0.length().unwrap_or(0);
        if self.0.is_hidden() && len > 0 {
            let after = self.0.position();
            if before * 10 / len < after * 10 / len {
                eprintln!(
                    "progress: {after}/{len} ({}%) after {:.0} s",
                    after * 100 / len,
                    self.0.elapsed().as_secs_f64()
                );
            }
        }
    }
    fn message(&mut self, text: &str) {
        self.0.set_message(text.to_string());
    }
    fn line(&mut self, text: &str) {
        self.0.suspend(|| println!("{text}"));
    }
    fn note(&mut self, text: &str) {
        self.0.suspend(|| eprintln!("note: {text}"));
    }
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

/// `--threads`, or every core when it is absent or 0.
pub fn threads_or_all(threads: Option<usize>) -> usize {
    // `--threads 0` means all cores too, as for rayon, rather than a pool with no thread; a number past
    // the bound `train` applies is capped the same way, with the same note.
    let (n, note) = crate::cli::capped_threads(threads);
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    n
}

/// Lists the files that could not be read (path, reason) in `path` and says so; nothing when none.
pub fn report_skips(skipped: &[Skip], path: &Path) -> anyhow::Result<ExitCode> {
    write_skips(skipped, path)?;
    Ok(say_skips(skipped, Some(path)))
}

/// Says how many files were skipped and where they are listed; the exit status that goes with it.
pub fn say_skips(skipped: &[Skip], listed_in: Option<&Path>) -> ExitCode {
    if let (false, Some(path)) = (skipped.is_empty(), listed_in) {
        eprintln!(
            "{} unreadable image(s) skipped; listed in {}",
            skipped.len(),
            path.display()
        );
    }
    skip_status(skipped.len())
}

/// Exit status of a command that finished: 1 when inputs were skipped (README, "Exit status"), else 0.
pub fn skip_status(skipped: usize) -> ExitCode {
    if skipped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
