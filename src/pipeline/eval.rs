//! The `eval` stage: frozen-feature evaluation of a run. The datasets are embedded with the run's encoder;
//! without a test dataset a seeded share of the train dataset's images is held out. `knn` is weighted kNN
//! (test rows query train rows), `linear` a logistic-regression probe; one result row, with provenance.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::embed::embed_chunked;
use super::{dataset_name, skipped_path, write_skips, Env, Progress};
use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embed::{dataset_samples, CropMode, EmbedOptions};
use crate::analyze::embeddings::{from_rows, EmbeddingRow, Embeddings};
use crate::analyze::knn::{knn, TAU};
use crate::analyze::linear::linear_probe;
use crate::data::compose::resolve_dataset;
use crate::data::decode::Skip;
use crate::data::source::Sample;
use crate::error::{Error, Result};
use crate::report::io::write_parquet;
use crate::run_dir::{EmbedLayer, Encoder, EncoderView};

/// Random stream of the held-out split.
const STREAM_HELD_OUT: u64 = 0xe7a1;

/// How frozen features are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Weighted kNN (k = 20, τ = 0.07) of test rows against train rows.
    Knn,
    /// Logistic-regression probe on L2-normalised features.
    Linear,
}

/// What to evaluate and where to write the row.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub protocol: Protocol,
    /// Run directory (trained or imported).
    pub run: PathBuf,
    /// Labelled dataset the classifier (or kNN bank) is built from, and its COCO file for box crops.
    pub train_data: String,
    pub train_annotations: Option<PathBuf>,
    /// Labelled dataset it is scored on (`None`: a held-out share of `train_data`'s images).
    pub test_data: Option<String>,
    pub test_annotations: Option<PathBuf>,
    /// Share of `train_data`'s images held out when there is no `test_data`.
    pub test_fraction: f64,
    /// Image or box crops (views are refused).
    pub crops: CropMode,
    pub layer: EmbedLayer,
    /// Eval crop side; `None`: the run's largest training crop.
    pub size: Option<u32>,
    pub batch_size: usize,
    /// Neighbours for kNN.
    pub k: usize,
    /// Seed of the held-out split and of the query sample.
    pub seed: u64,
    /// Result Parquet (one row).
    pub out: PathBuf,
}

/// The row `evaluate` wrote, as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    /// The protocol as written in the `protocol` column.
    pub protocol: String,
    pub accuracy: f64,
    /// 95% interval of the accuracy.
    pub accuracy_lo: f64,
    pub accuracy_hi: f64,
    pub chance: f64,
    pub n_train: usize,
    pub n_test: usize,
    /// Every numeric column of the row, by name (the fields above and the protocol's own).
    pub columns: BTreeMap<&'static str, f64>,
    pub out: PathBuf,
    /// One row per query (`id`, `image_id`, `label`, `predicted`, `correct`): see [`predictions_path`].
    pub predictions_file: PathBuf,
    /// Files that could not be read; listed in `skipped_file` when there are any.
    pub skipped: Vec<Skip>,
    pub skipped_file: Option<PathBuf>,
}

/// Where `evaluate` writing `out` puts its per-query predictions: `knn.parquet` → `knn.predictions.parquet`.
/// Two runs evaluated on the same split can be compared query by query (see `analyze::paired`).
pub fn predictions_path(out: &Path) -> PathBuf {
    out.with_extension("predictions.parquet")
}

/// The per-query table: which label each query has, which it was given, and whether that was right.
fn write_predictions(e: &Embeddings, predictions: &[(usize, String)], path: &Path) -> Result<()> {
    let label = |r: usize| e.labels[r].clone().unwrap_or_default();
    let mut df = df!(
        "id" => predictions.iter().map(|(r, _)| e.ids[*r].clone()).collect::<Vec<_>>(),
        "image_id" => predictions.iter().map(|(r, _)| e.image_ids[*r].clone()).collect::<Vec<_>>(),
        "label" => predictions.iter().map(|(r, _)| label(*r)).collect::<Vec<_>>(),
        "predicted" => predictions.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        "correct" => predictions.iter().map(|(r, p)| label(*r) == *p).collect::<Vec<_>>(),
    )
    .map_err(|err| Error::polars(format!("writing {}", path.display()), err))?;
    write_parquet(&mut df, path)
}

/// Embeddings of a train and a test set (`split` column set), as the probes read them.
pub struct FrozenSplit {
    pub embeddings: Embeddings,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    pub skipped: Vec<Skip>,
}

/// Evaluates `req.run` by `req.protocol` and writes the one-row result.
pub fn evaluate(env: &Env, req: &EvalRequest, progress: &mut dyn Progress) -> Result<EvalResult> {
    if matches!(req.crops, CropMode::Views { .. }) {
        return Err(Error::config(
            "eval",
            "crops",
            "views: evaluation uses image or boxes crops",
        ));
    }
    let encoder = Encoder::open(&req.run, env.device)?;
    let encoder = encoder.view();
    encoder.check_layer(req.layer, &req.run)?;
    let opts = EmbedOptions {
        crops: req.crops,
        layer: req.layer,
        size: req.size.unwrap_or_else(|| encoder.crop_size()),
        batch_size: req.batch_size,
        threads: env.threads,
        // kNN and the probe read embeddings only
        prototype_codes: false,
    };
    let split = frozen_split(
        env,
        encoder,
        (&req.train_data, req.train_annotations.as_deref()),
        req.test_data
            .as_deref()
            .map(|t| (t, req.test_annotations.as_deref())),
        (req.test_fraction, req.seed),
        &opts,
        progress,
    )?;
    let (e, train, test, skipped) = (split.embeddings, split.train, split.test, split.skipped);

    // One row: the protocol's accuracy with the counts behind it and where it came from.
    let mut cols: BTreeMap<&'static str, f64> = BTreeMap::new();
    let (protocol, predictions) = match req.protocol {
        Protocol::Knn => {
            let all: Vec<usize> = (0..e.len()).collect();
            let r = knn(&e, &all, req.k, req.seed, "eval knn")?;
            let counts = (r.n_bank, r.n_queries);
            score(
                &mut cols,
                [r.accuracy, r.accuracy_lo, r.accuracy_hi, r.chance],
                counts,
            );
            cols.insert("k", r.k as f64);
            (
                format!("knn (weighted, k={}, tau={TAU})", r.k),
                r.predictions,
            )
        }
        Protocol::Linear => {
            let r = linear_probe(&e, &train, &test)?;
            let counts = (r.n_train, r.n_test);
            score(
                &mut cols,
                [r.accuracy, r.accuracy_lo, r.accuracy_hi, r.chance],
                counts,
            );
            cols.insert("train_accuracy", r.train_accuracy);
            cols.insert("n_classes", r.n_classes as f64);
            cols.insert("n_unseen", r.n_unseen as f64);
            let name = "linear (logistic regression, standardised L2-normalised features)";
            (name.to_string(), r.predictions)
        }
    };
    let predictions_file = predictions_path(&req.out);
    write_predictions(&e, &predictions, &predictions_file)?;
    let crops = match req.crops {
        CropMode::Boxes => "boxes",
        CropMode::ObjectOnly => "object-only",
        _ => "image",
    };
    let layer = match req.layer {
        EmbedLayer::Backbone => "backbone",
        EmbedLayer::Projector => "projector",
    };
    let polars = |e| Error::polars(format!("writing {}", req.out.display()), e);
    let mut df = df!(
        "run" => [req.run.display().to_string()],
        "step" => [encoder.step() as u64],
        "train_data" => [req.train_data.clone()],
        "test_data" => [req
            .test_data
            .clone()
            .unwrap_or_else(|| format!("{} (held-out {})", req.train_data, req.test_fraction))],
        "crops" => [crops.to_string()],
        "layer" => [layer.to_string()],
        "protocol" => [protocol.clone()],
    )
    .map_err(polars)?;
    // numeric columns in name order (the order the file has always had)
    for (name, v) in &cols {
        df.with_column(Column::new((*name).into(), [*v]))
            .map_err(polars)?;
    }
    write_parquet(&mut df, &req.out)?;
    let skipped_file = (!skipped.is_empty()).then(|| skipped_path(&req.out));
    if let Some(p) = &skipped_file {
        write_skips(&skipped, p)?;
    }
    Ok(EvalResult {
        protocol,
        accuracy: cols["accuracy"],
        accuracy_lo: cols["accuracy_lo"],
        accuracy_hi: cols["accuracy_hi"],
        chance: cols["chance"],
        n_train: cols["n_train"] as usize,
        n_test: cols["n_test"] as usize,
        columns: cols,
        out: req.out.clone(),
        predictions_file,
        skipped,
        skipped_file,
    })
}

/// The columns every protocol writes: `[accuracy, its 95% interval lo and hi, chance]` and the
/// `(train, test)` counts behind them.
fn score(
    cols: &mut BTreeMap<&'static str, f64>,
    [acc, lo, hi, chance]: [f64; 4],
    counts: (usize, usize),
) {
    cols.insert("accuracy", acc);
    cols.insert("accuracy_lo", lo);
    cols.insert("accuracy_hi", hi);
    cols.insert("chance", chance);
    cols.insert("n_train", counts.0 as f64);
    cols.insert("n_test", counts.1 as f64);
}

/// One dataset's samples, listed (not yet embedded) and checked for labels.
struct Listed {
    dir: PathBuf,
    samples: Vec<Sample>,
    sets: HashMap<String, String>,
}

/// Lists `dataset`'s samples and checks they carry the labels evaluation needs, before anything is
/// embedded: at least `min_labels` distinct ones (two for the set classifiers are built from, one for a
/// test set). Unlabelled data fails here at once instead of after the whole embedding.
fn list_labelled(
    env: &Env,
    dataset: &str,
    annotations: Option<&Path>,
    crops: CropMode,
    min_labels: usize,
) -> Result<Listed> {
    let dir = resolve_dataset(&env.data_dir, dataset)?;
    let (samples, sets) = dataset_samples(&dir, &dataset_name(&dir, dataset), crops, annotations)?;
    let labels: BTreeSet<&str> = samples.iter().filter_map(|s| s.label.as_deref()).collect();
    if labels.len() < min_labels {
        let found = match labels.iter().next() {
            None => format!("none of its {} samples has a label", samples.len()),
            Some(only) => format!("its {} samples have one label ({only:?})", samples.len()),
        };
        return Err(Error::format(
            &dir,
            format!(
                "evaluation needs at least {min_labels} distinct label(s), and {found}: label the images as \
                 an ImageFolder tree (DIR/<label>/<image>), an index with labels, or COCO boxes"
            ),
        ));
    }
    Ok(Listed { dir, samples, sets })
}

/// Embeds one listed dataset for evaluation.
fn embed_listed(
    env: &Env,
    encoder: EncoderView<'_>,
    listed: &Listed,
    opts: &EmbedOptions,
    progress: &mut dyn Progress,
) -> Result<(Vec<EmbeddingRow>, Vec<Skip>)> {
    let out = embed_chunked(
        encoder,
        &listed.samples,
        &listed.sets,
        opts,
        &|| env.stopped(),
        progress,
    )?;
    if out.rows.is_empty() {
        return Err(Error::format(&listed.dir, "no image could be read"));
    }
    Ok((out.rows, out.skipped))
}

/// A held-out share must leave images on both sides.
pub(crate) fn check_test_fraction(fraction: f64) -> Result<()> {
    if fraction > 0.0 && fraction < 1.0 {
        Ok(())
    } else {
        Err(Error::config(
            "eval",
            "test_fraction",
            format!("must be in (0, 1), got {fraction}"),
        ))
    }
}

/// Seeded split by image: `fraction` of the distinct image ids (at least one) are test rows, so crops of one
/// image never sit on both sides.
fn held_out(rows: &[EmbeddingRow], fraction: f64, seed: u64) -> Result<Vec<bool>> {
    check_test_fraction(fraction)?;
    let images: Vec<&str> = {
        let set: BTreeSet<&str> = rows.iter().map(|r| r.image_id.as_str()).collect();
        set.into_iter().collect()
    };
    if images.len() < 2 {
        return Err(Error::config(
            "eval",
            "train_data",
            format!("{} image(s), too few to hold any out", images.len()),
        ));
    }
    let n_test = ((images.len() as f64 * fraction).round() as usize).clamp(1, images.len() - 1);
    let test: HashSet<&str> =
        sample_without_replacement(images.len(), n_test, seed, STREAM_HELD_OUT)
            .into_iter()
            .map(|i| images[i])
            .collect();
    Ok(rows
        .iter()
        .map(|r| test.contains(r.image_id.as_str()))
        .collect())
}

/// Embeds the `train` and `test` datasets, each with its COCO annotations file for box crops (None: its own
/// `annotations.json`); without `test`, holds out a seeded share of `train`'s images (`held_out`: the
/// share and the seed).
pub fn frozen_split(
    env: &Env,
    encoder: EncoderView<'_>,
    train: (&str, Option<&Path>),
    test: Option<(&str, Option<&Path>)>,
    (test_fraction, seed): (f64, u64),
    opts: &EmbedOptions,
    progress: &mut dyn Progress,
) -> Result<FrozenSplit> {
    // Both sets are listed and their labels checked before the first is embedded.
    let train = list_labelled(env, train.0, train.1, opts.crops, 2)?;
    let test = test
        .map(|(data, annotations)| list_labelled(env, data, annotations, opts.crops, 1))
        .transpose()?;
    let (mut rows, mut skipped) = embed_listed(env, encoder, &train, opts, progress)?;
    let is_test: Vec<bool> = match test {
        Some(test) => {
            let n_bank = rows.len();
            let (test_rows, test_skipped) = embed_listed(env, encoder, &test, opts, progress)?;
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
