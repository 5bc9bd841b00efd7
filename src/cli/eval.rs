//! `biaslab eval knn|linear --run RUN --train-data A [--test-data B] --out FILE.parquet`: frozen-feature
//! evaluation of a run. The datasets are embedded with the run's latest checkpoint (backbone features by
//! default); without `--test-data`, a seeded `--test-fraction` of A's images is held out. `knn` is weighted
//! kNN (k = 20, τ = 0.07: test rows query train rows), `linear` a logistic-regression probe trained on the
//! train rows. One result row, with provenance, as Parquet.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use polars::prelude::*;

use super::embed::{dataset_name, load_run, report_skips, ComputeArgs, Crops, Layer};
use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embed::{dataset_samples, CropMode, EmbedOptions};
use crate::analyze::embeddings::{from_rows, EmbeddingRow, Embeddings};
use crate::analyze::knn::{knn, K};
use crate::analyze::linear::linear_probe;
use crate::data::compose::resolve_dataset;
use crate::data::decode::Skip;
use crate::report::io::write_parquet;
use crate::run_dir::EncoderView;

/// Random stream of the held-out split.
const STREAM_HELD_OUT: u64 = 0xe7a1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Weighted kNN (k = 20, τ = 0.07) of test rows against train rows.
    Knn,
    /// Logistic-regression probe on L2-normalised features.
    Linear,
}

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
    #[arg(long, value_enum, default_value_t = Crops::Image)]
    pub crops: Crops,
    #[arg(long, value_enum, default_value_t = Layer::Backbone)]
    pub layer: Layer,
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

/// Embeds one dataset for evaluation.
fn embed_split(
    encoder: EncoderView<'_>,
    data_dir: &Path,
    dataset: &str,
    annotations: Option<&Path>,
    opts: &EmbedOptions,
) -> anyhow::Result<(Vec<EmbeddingRow>, Vec<Skip>)> {
    let dir = resolve_dataset(data_dir, dataset)?;
    let (samples, sets) =
        dataset_samples(&dir, &dataset_name(&dir, dataset), opts.crops, annotations)?;
    let out = super::embed::embed_with_progress(encoder, &samples, &sets, opts)?;
    if out.rows.is_empty() {
        anyhow::bail!("{}: no image could be read", dir.display());
    }
    Ok((out.rows, out.skipped))
}

/// Seeded split by image: `fraction` of the distinct image ids (at least one) are test rows, so crops of one
/// image never sit on both sides.
fn held_out(rows: &[EmbeddingRow], fraction: f64, seed: u64) -> anyhow::Result<Vec<bool>> {
    if !(fraction > 0.0 && fraction < 1.0) {
        anyhow::bail!("--test-fraction: must be in (0, 1), got {fraction}");
    }
    let images: Vec<&str> = {
        let set: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.image_id.as_str()).collect();
        set.into_iter().collect()
    };
    if images.len() < 2 {
        anyhow::bail!(
            "--train-data: {} image(s), too few to hold any out",
            images.len()
        );
    }
    let n_test = ((images.len() as f64 * fraction).round() as usize).clamp(1, images.len() - 1);
    let test: std::collections::HashSet<&str> =
        sample_without_replacement(images.len(), n_test, seed, STREAM_HELD_OUT)
            .into_iter()
            .map(|i| images[i])
            .collect();
    Ok(rows
        .iter()
        .map(|r| test.contains(r.image_id.as_str()))
        .collect())
}

/// Embeddings of a train and a test set (`split` column set), as the probes read them.
pub struct FrozenSplit {
    pub embeddings: Embeddings,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    pub skipped: Vec<Skip>,
}

/// Embeds `train_data` and `test_data` (or holds out a seeded `test_fraction` of `train_data`'s images).
pub fn frozen_split(
    encoder: EncoderView<'_>,
    data_dir: &Path,
    train_data: &str,
    test_data: Option<&str>,
    test_fraction: f64,
    seed: u64,
    opts: &EmbedOptions,
) -> anyhow::Result<FrozenSplit> {
    frozen_split_annotated(
        encoder,
        data_dir,
        (train_data, None),
        test_data.map(|t| (t, None)),
        test_fraction,
        seed,
        opts,
    )
}

/// As [`frozen_split`], each dataset with its COCO annotations file for box crops (None: its own
/// `annotations.json`).
pub fn frozen_split_annotated(
    encoder: EncoderView<'_>,
    data_dir: &Path,
    train: (&str, Option<&Path>),
    test: Option<(&str, Option<&Path>)>,
    test_fraction: f64,
    seed: u64,
    opts: &EmbedOptions,
) -> anyhow::Result<FrozenSplit> {
    let (mut rows, mut skipped) = embed_split(encoder, data_dir, train.0, train.1, opts)?;
    let is_test: Vec<bool> = match test {
        Some((test_data, annotations)) => {
            let n_bank = rows.len();
            let (test_rows, test_skipped) =
                embed_split(encoder, data_dir, test_data, annotations, opts)?;
            rows.extend(test_rows);
            skipped.extend(test_skipped);
            (0..rows.len()).map(|i| i >= n_bank).collect()
        }
        None => held_out(&rows, test_fraction, seed)?,
    };
    let mut e = from_rows(&rows)?;
    e.splits = is_test
        .iter()
        .map(|&t| Some(if t { "test" } else { "train" }.to_string()))
        .collect();
    Ok(FrozenSplit {
        embeddings: e,
        train: (0..rows.len()).filter(|&i| !is_test[i]).collect(),
        test: (0..rows.len()).filter(|&i| is_test[i]).collect(),
        skipped,
    })
}

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    if args.crops == Crops::Views {
        anyhow::bail!("--crops views: evaluation uses image or boxes crops");
    }
    let data_dir = args.compute.data_dir();
    let encoder = load_run(&args.run, args.layer, args.compute.device()?)?;
    let encoder = encoder.view();
    let threads = args.compute.init_threads();
    let opts = EmbedOptions {
        crops: if args.crops == Crops::Boxes {
            CropMode::Boxes
        } else {
            CropMode::Image
        },
        layer: args.layer.into(),
        size: args.size.unwrap_or_else(|| encoder.crop_size()),
        batch_size: args.compute.batch_size,
        threads,
        // kNN and the probe read embeddings only
        prototype_codes: false,
    };
    let split = frozen_split_annotated(
        encoder,
        &data_dir,
        (&args.train_data, args.annotations.as_deref()),
        args.test_data
            .as_deref()
            .map(|t| (t, args.test_annotations.as_deref())),
        args.test_fraction,
        args.seed,
        &opts,
    )?;
    let (e, train, test, skipped) = (split.embeddings, split.train, split.test, split.skipped);

    // One row: the protocol's accuracy with the counts behind it and where it came from.
    let mut cols: HashMap<&str, f64> = HashMap::new();
    let protocol = match args.protocol {
        Protocol::Knn => {
            let all: Vec<usize> = (0..e.len()).collect();
            let r = knn(&e, &all, args.k, args.seed, "eval knn")?;
            cols.insert("accuracy", r.accuracy);
            cols.insert("accuracy_lo", r.accuracy_lo);
            cols.insert("accuracy_hi", r.accuracy_hi);
            cols.insert("chance", r.chance);
            cols.insert("n_train", r.n_bank as f64);
            cols.insert("n_test", r.n_queries as f64);
            cols.insert("k", r.k as f64);
            format!(
                "knn (weighted, k={}, tau={})",
                r.k,
                crate::analyze::knn::TAU
            )
        }
        Protocol::Linear => {
            let r = linear_probe(&e, &train, &test)?;
            cols.insert("accuracy", r.accuracy);
            cols.insert("accuracy_lo", r.accuracy_lo);
            cols.insert("accuracy_hi", r.accuracy_hi);
            cols.insert("train_accuracy", r.train_accuracy);
            cols.insert("chance", r.chance);
            cols.insert("n_train", r.n_train as f64);
            cols.insert("n_test", r.n_test as f64);
            cols.insert("n_classes", r.n_classes as f64);
            cols.insert("n_unseen", r.n_unseen as f64);
            "linear (logistic regression, standardised L2-normalised features)".to_string()
        }
    };
    let mut df = df!(
        "run" => [args.run.display().to_string()],
        "step" => [encoder.step() as u64],
        "train_data" => [args.train_data.clone()],
        "test_data" => [args
            .test_data
            .clone()
            .unwrap_or_else(|| format!("{} (held-out {})", args.train_data, args.test_fraction))],
        "crops" => [format!("{:?}", args.crops).to_lowercase()],
        "layer" => [format!("{:?}", args.layer).to_lowercase()],
        "protocol" => [protocol.clone()],
    )?;
    let mut names: Vec<&&str> = cols.keys().collect();
    names.sort();
    for name in names {
        df.with_column(Column::new((*name).into(), [cols[*name]]))?;
    }
    write_parquet(&mut df, &args.out)?;
    println!(
        "{protocol}: accuracy {:.4} [95% CI {:.4}, {:.4}] vs chance {:.4} ({} train, {} test rows) → {}",
        cols["accuracy"],
        cols["accuracy_lo"],
        cols["accuracy_hi"],
        cols["chance"],
        cols["n_train"],
        cols["n_test"],
        args.out.display()
    );
    report_skips(&skipped, &args.out.with_extension("skipped.parquet"))
}
