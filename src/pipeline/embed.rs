//! The `embed` stage: a run's encoder over a dataset's images, boxes or augmented views, written in the
//! embeddings contract (with the run's K where its prototypes were trained) and returned as counts.
use std::collections::HashMap;
use std::path::PathBuf;

use polars::prelude::*;

use super::{dataset_name, skipped_path, write_skips, Env, Progress};
use crate::analyze::embed::{dataset_samples, embed_samples, CropMode, EmbedOptions, EmbedOutput};
use crate::analyze::embeddings::{write_embeddings_with_k, COL_SPLIT, COL_TRANSFORM, OBJECT_ONLY};
use crate::data::compose::resolve_dataset;
use crate::data::decode::Skip;
use crate::data::source::Sample;
use crate::error::{Error, Result};
use crate::report::io::{read_parquet, write_parquet};
use crate::run_dir::{EmbedLayer, Encoder, EncoderView};

/// What to embed and where to write it.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    /// Run directory (trained or imported).
    pub run: PathBuf,
    /// Dataset name under the environment's data directory, or a directory.
    pub dataset: String,
    pub crops: CropMode,
    pub layer: EmbedLayer,
    /// Eval crop side; `None`: the run's largest training crop.
    pub size: Option<u32>,
    pub batch_size: usize,
    /// COCO instances JSON for box crops; `None`: the dataset's own `annotations.json`.
    pub annotations: Option<PathBuf>,
    /// Keep sample `k` when `k % n == i` (`(i, n)`); not with view crops.
    pub shard: Option<(usize, usize)>,
    /// Constant `split` column (`train` / `test`) for kNN.
    pub split: Option<String>,
    /// Output Parquet file.
    pub out: PathBuf,
}

/// What `embed` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResult {
    pub out: PathBuf,
    pub rows: usize,
    /// Eval crop side used.
    pub size: u32,
    /// K written with the codes (`None`: no codes, e.g. a SimCLR run).
    pub n_prototypes: Option<i64>,
    /// Files that could not be read; listed in `skipped_file` when there are any.
    pub skipped: Vec<Skip>,
    pub skipped_file: Option<PathBuf>,
    /// Samples of the whole dataset when `shard` left none of them to this shard (an array job with more
    /// shards than samples): the file written then has the contract's columns and no row.
    pub empty_shard_of: Option<usize>,
}

/// Embeds `req.dataset` with `req.run`'s latest checkpoint; `progress` hears of each chunk of samples done
/// (all at once for view crops).
pub fn embed(env: &Env, req: &EmbedRequest, progress: &mut dyn Progress) -> Result<EmbedResult> {
    let dir = resolve_dataset(&env.data_dir, &req.dataset)?;
    let name = dataset_name(&dir, &req.dataset);
    let encoder = Encoder::open(&req.run, env.device)?;
    let encoder = encoder.view();
    encoder.check_layer(req.layer, &req.run)?;
    let (mut samples, sets) = dataset_samples(&dir, &name, req.crops, req.annotations.as_deref())?;
    let mut empty_shard_of = None;
    if let Some((i, n)) = req.shard {
        if matches!(req.crops, CropMode::Views { .. }) {
            // A view's random stream is keyed by the sample's position, which a shard would change.
            return Err(Error::config(
                "embed",
                "shard",
                "not with --crops views (their augmentations are seeded by position)",
            ));
        }
        let total = samples.len();
        samples = samples
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, s)| s)
            .collect();
        // An array job may have more tasks than samples: its idle tasks succeed with an empty file that
        // pools with the others, instead of failing the job.
        empty_shard_of = samples.is_empty().then_some(total);
    }
    // Codes only where prototypes were trained (SwAV or DINO, or an import whose file had them), written with the
    // run's K so usage is measured against it; a SimCLR or MoCo run's untrained prototypes would mean nothing.
    let codes = encoder.has_prototypes();
    let opts = EmbedOptions {
        crops: req.crops,
        layer: req.layer,
        size: req.size.unwrap_or_else(|| encoder.crop_size()),
        batch_size: req.batch_size,
        threads: env.threads,
        prototype_codes: codes,
    };
    let out = embed_chunked(encoder, &samples, &sets, &opts, &|| env.stopped(), progress)?;
    if out.rows.is_empty() && empty_shard_of.is_none() {
        return Err(Error::format(&dir, "no image could be read"));
    }
    let k = codes.then(|| encoder.n_prototypes()).flatten();
    write_embeddings_with_k(&req.out, &out.rows, k)?;
    if let Some(split) = &req.split {
        add_constant(&req.out, COL_SPLIT, split)?;
    }
    if req.crops == CropMode::ObjectOnly {
        // Marks the rows, so `analyze collapse` sets them beside the whole-box rows (context control).
        add_constant(&req.out, COL_TRANSFORM, OBJECT_ONLY)?;
    }
    let skipped_file = (!out.skipped.is_empty()).then(|| skipped_path(&req.out));
    if let Some(p) = &skipped_file {
        write_skips(&out.skipped, p)?;
    }
    Ok(EmbedResult {
        out: req.out.clone(),
        rows: out.rows.len(),
        size: opts.size,
        n_prototypes: k,
        skipped: out.skipped,
        skipped_file,
        empty_shard_of,
    })
}

/// [`embed_samples`] in chunks of a few batches, reporting progress: the rows equal one call's (each image
/// or box crop depends on its own sample only, as sharding relies on); views are seeded by their position
/// in the whole list, so they go in one call. Before each chunk `stopped` is asked; when it says yes, the
/// call fails with nothing returned, so no partial file is ever written.
pub fn embed_chunked(
    encoder: EncoderView<'_>,
    samples: &[Sample],
    sets: &HashMap<String, String>,
    opts: &EmbedOptions,
    stopped: &dyn Fn() -> bool,
    progress: &mut dyn Progress,
) -> Result<EmbedOutput> {
    progress.start(samples.len());
    let interrupted = |done: usize| {
        Error::Invalid(format!(
            "embedding stopped after {done} of {} samples; nothing written",
            samples.len()
        ))
    };
    if matches!(opts.crops, CropMode::Views { .. }) {
        if stopped() {
            return Err(interrupted(0));
        }
        let out = embed_samples(encoder, samples, sets, opts)?;
        progress.advance(samples.len());
        return Ok(out);
    }
    let (mut out, mut done) = (EmbedOutput::default(), 0);
    for chunk in samples.chunks(opts.batch_size.max(1) * 8) {
        if stopped() {
            return Err(interrupted(done));
        }
        done += chunk.len();
        let part = embed_samples(encoder, chunk, sets, opts)?;
        out.rows.extend(part.rows);
        out.skipped.extend(part.skipped);
        progress.advance(chunk.len());
    }
    Ok(out)
}

/// Adds a constant column: `split` (kNN uses train rows as the bank, test rows as queries), or
/// `transform` = `object-only` for object-only crops.
fn add_constant(path: &std::path::Path, column: &str, value: &str) -> Result<()> {
    let df = read_parquet(path)?;
    let mut df = df
        .lazy()
        .with_column(lit(value.to_string()).alias(column))
        .collect()
        .map_err(|e| {
            Error::polars(
                format!("adding the {column} column to {}", path.display()),
                e,
            )
        })?;
    write_parquet(&mut df, path)
}
