//! The `invariance` stage: Purushwalkam & Gupta's invariance table. The transformed sets are built from a
//! dataset's objects (their COCO boxes when `annotations.json` is there, else whole images), embedded by
//! every run's encoder, and scored by the invariance analysis: one row per run × transform × k in
//! `invariance.parquet`, runs side by side, returned as numbers.
use std::path::{Path, PathBuf};

use image::RgbImage;
use polars::prelude::*;
use rayon::prelude::*;
use tch::Tensor;

use super::{dataset_name, write_skips, Env, Progress};
use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embed::{dataset_samples, CropMode};
use crate::analyze::embeddings::{embeddings_frame, EmbeddingRow, GroupBy, COL_TRANSFORM};
use crate::analyze::invariance_sets::{object_patch, Transform};
use crate::analyze::run::{analyze, Analysis, AnalyzeOptions};
use crate::augment::EvalTransform;
use crate::data::compose::{resolve_dataset, ANNOTATIONS_FILE};
use crate::data::decode::{decode_rgb, DecodeLimits, Skip};
use crate::data::source::Sample;
use crate::error::{Error, Result};
use crate::report::columns as cols;
use crate::report::io::{read_parquet, write_parquet};
use crate::report::owned::OwnedDir;
use crate::run_dir::{EmbedLayer, Encoder};

/// Seeded-sample stream of `max_objects`.
const STREAM_OBJECTS: u64 = 0x1a7;
/// The table's file in the report directory.
pub const INVARIANCE_FILE: &str = "invariance.parquet";
/// The unreadable objects' list in the report directory (written only when there are any).
pub const SKIPPED_FILE: &str = "skipped.parquet";

/// Which runs, on which objects, under which transforms, written where.
#[derive(Debug, Clone)]
pub struct InvarianceRequest {
    /// Run directories (one column of the table each); at least one.
    pub runs: Vec<PathBuf>,
    /// Labelled object dataset (a name under the data dir or a directory).
    pub data: String,
    pub transforms: Vec<Transform>,
    /// Report directory: invariance.parquet, the plot, summary.md, `embeddings/<run>.parquet`.
    pub out: PathBuf,
    /// Patch side in pixels; `None`: the first run's largest training crop.
    pub size: Option<u32>,
    /// Objects used at most (a seeded sample beyond it).
    pub max_objects: usize,
    pub seed: u64,
    pub layer: EmbedLayer,
    pub batch_size: usize,
}

/// One row of the table: a run's invariance to one transform over its top-`k` units.
#[derive(Debug, Clone, PartialEq)]
pub struct InvarianceRow {
    /// The run's name ([`run_label`]).
    pub run: String,
    pub transform: String,
    pub k: i64,
    /// `None` where the transform had too few sets to score.
    pub score: Option<f64>,
    pub n_sets: i64,
}

/// What `invariance` measured and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct InvarianceResult {
    /// Objects embedded (after sampling, without the unreadable ones), views per run, patch side.
    pub objects: usize,
    pub views: usize,
    pub size: u32,
    /// The table, in `invariance.parquet`'s order.
    pub rows: Vec<InvarianceRow>,
    /// Every run's embeddings file.
    pub embeddings: Vec<PathBuf>,
    /// What the analysis wrote (the table, its plot, summary.md).
    pub written: Vec<PathBuf>,
    /// The analysis' notes (e.g. too few sets for a k).
    pub notes: Vec<String>,
    /// Objects whose file could not be read; listed in `skipped_file` when there are any.
    pub skipped: Vec<Skip>,
    pub skipped_file: Option<PathBuf>,
}

/// One transformed view, ready to embed.
struct View {
    transform: Transform,
    set_id: String,
    object: usize,
    index: usize,
    image: RgbImage,
}

/// The labelled objects of `dir`: its COCO boxes when it has them, else its images.
fn objects(dir: &Path, name: &str) -> Result<Vec<Sample>> {
    let crops = if dir.join(ANNOTATIONS_FILE).is_file() {
        CropMode::Boxes
    } else {
        CropMode::Image
    };
    let (samples, _) = dataset_samples(dir, name, crops, None)?;
    Ok(samples.into_iter().filter(|s| s.label.is_some()).collect())
}

/// The invariance table of `req.runs` on `req.data`'s objects; `progress` hears of every view embedded
/// (one pass over views × runs).
pub fn invariance(
    env: &Env,
    req: &InvarianceRequest,
    progress: &mut dyn Progress,
) -> Result<InvarianceResult> {
    let Some(first_run) = req.runs.first() else {
        return Err(Error::config("invariance", "runs", "no run given"));
    };
    let dir = resolve_dataset(&env.data_dir, &req.data)?;
    let name = dataset_name(&dir, &req.data);
    let mut samples = objects(&dir, &name)?;
    if samples.is_empty() {
        return Err(Error::format(
            &dir,
            "no labelled object to build invariance sets from",
        ));
    }
    samples.sort_by(|a, b| a.id.cmp(&b.id));
    if samples.len() > req.max_objects {
        let mut keep =
            sample_without_replacement(samples.len(), req.max_objects, req.seed, STREAM_OBJECTS);
        keep.sort_unstable();
        samples = keep.into_iter().map(|i| samples[i].clone()).collect();
    }
    // The report directory is claimed before the slow work: a foreign one is refused now, not after it.
    let mut owned = OwnedDir::claim(&req.out, "invariance")?;
    // The first run also sets the default patch size; it is loaded once and embedded first.
    let first = open_run(first_run, req.layer, env.device)?;
    let size = req.size.unwrap_or_else(|| first.view().crop_size());
    let mut first = Some(first);

    // Decode every object once; unreadable files are listed, not fatal.
    let limits = DecodeLimits::default();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(env.threads)
        .build()
        .map_err(|e| Error::Invalid(format!("invariance: cannot start the thread pool: {e}")))?;
    let decoded: Vec<_> = pool.install(|| {
        samples
            .par_iter()
            .map(|s| {
                // a path leading out of the dataset root is listed, never opened (data::confine)
                s.readable_path()
                    .and_then(|p| decode_rgb(p, &limits))
                    .map(|img| object_patch(&img, s.bbox, size))
            })
            .collect()
    });
    let mut patches = Vec::new();
    let mut skipped = Vec::new();
    for (i, d) in decoded.into_iter().enumerate() {
        match d {
            Ok(p) => patches.push((i, p)),
            Err(skip) => skipped.push(skip),
        }
    }
    let skipped_file = (!skipped.is_empty()).then(|| req.out.join(SKIPPED_FILE));
    if let Some(p) = &skipped_file {
        owned.record(p)?;
    }
    let views: Vec<View> = pool.install(|| {
        req.transforms
            .iter()
            .flat_map(|&t| patches.iter().map(move |(i, p)| (t, *i, p)))
            .collect::<Vec<_>>()
            .into_par_iter()
            .flat_map_iter(|(t, i, patch)| {
                let s = &samples[i];
                let set_id = match t {
                    // every object of one label is one set: invariance to the instance
                    Transform::Instance => {
                        format!("instance:{}", s.label.as_deref().unwrap_or_default())
                    }
                    _ => format!("{}:{}", t.name(), s.id),
                };
                t.views(patch, req.seed, i as u64)
                    .into_iter()
                    .enumerate()
                    .map(move |(j, image)| View {
                        transform: t,
                        set_id: set_id.clone(),
                        object: i,
                        index: j,
                        image,
                    })
            })
            .collect()
    });

    let eval = EvalTransform { size };
    let mut files = Vec::new();
    progress.start(views.len() * req.runs.len());
    for run in &req.runs {
        if env.stopped() {
            return Err(Error::Invalid(
                "invariance stopped before every run was embedded; no table written".into(),
            ));
        }
        let encoder = match first.take() {
            Some(t) => t,
            None => open_run(run, req.layer, env.device)?,
        };
        // Codes wherever the weights hold prototypes from training or the imported file (as before the
        // encoder existed: SimCLR runs included, so the files stay as they were).
        let with_codes = encoder.import_record().is_none_or(|r| r.prototypes);
        let encoder = encoder.view();
        let mut rows = Vec::with_capacity(views.len());
        let mut names = Vec::with_capacity(views.len());
        for chunk in views.chunks(req.batch_size.max(1)) {
            let flat: Vec<f32> = pool.install(|| {
                chunk
                    .par_iter()
                    .flat_map_iter(|v| eval.apply(&v.image, None))
                    .collect()
            });
            let s = size as i64;
            let images = Tensor::from_slice(&flat).view([chunk.len() as i64, 3, s, s]);
            let emb = encoder
                .embed(&images, req.layer)
                .to_device(tch::Device::Cpu);
            let dim = emb.size()[1] as usize;
            let emb: Vec<f32> = Vec::try_from(emb.flatten(0, -1))
                .map_err(|e| Error::tch("invariance: reading embeddings", e))?;
            let codes: Option<Vec<i64>> = if with_codes {
                let c = encoder.prototype_argmax(&images);
                Some(
                    Vec::try_from(c.to_device(tch::Device::Cpu))
                        .map_err(|e| Error::tch("invariance: reading prototype codes", e))?,
                )
            } else {
                None
            };
            for (k, v) in chunk.iter().enumerate() {
                let s = &samples[v.object];
                rows.push(EmbeddingRow {
                    id: format!("{}:{}#{}", v.transform.name(), s.id, v.index),
                    image_id: s.image_id.clone(),
                    label: s.label.clone(),
                    dataset: s.dataset.clone(),
                    kind: s.kind.as_str().to_string(),
                    set_id: Some(v.set_id.clone()),
                    bbox: None,
                    prototype: codes.as_ref().map(|c| c[k] as i32),
                    embedding: emb[k * dim..(k + 1) * dim].to_vec(),
                });
                names.push(v.transform.name().to_string());
            }
            progress.advance(chunk.len());
        }
        let mut df = embeddings_frame(&rows)?;
        let ctx = |e| Error::polars("invariance: the transform column", e);
        df.with_column(Column::new(COL_TRANSFORM.into(), names))
            .map_err(ctx)?;
        let path = req
            .out
            .join("embeddings")
            .join(format!("{}.parquet", run_label(run)));
        owned.record(&path)?;
        write_parquet(&mut df, &path)?;
        files.push(path);
    }

    let opts = AnalyzeOptions {
        analyses: vec![Analysis::Invariance],
        group_by: GroupBy::File,
        seed: req.seed,
        ..AnalyzeOptions::default()
    };
    let outcome = analyze(&files, &req.out, &opts)?;
    let rows = read_table(&req.out.join(INVARIANCE_FILE))?;
    if let Some(p) = &skipped_file {
        write_skips(&skipped, p)?;
    }
    Ok(InvarianceResult {
        objects: patches.len(),
        views: views.len(),
        size,
        rows,
        embeddings: files,
        written: outcome.written,
        notes: outcome.notes,
        skipped,
        skipped_file,
    })
}

/// The run's encoder, with the run named in the error; the projector layer needs a projection head.
fn open_run(run: &Path, layer: EmbedLayer, device: tch::Device) -> Result<Encoder> {
    let encoder = Encoder::open(run, device)?;
    encoder.view().check_layer(layer, run)?;
    Ok(encoder)
}

/// The analysis' table as rows (the analysis writes it; this stage hands its numbers on).
fn read_table(path: &Path) -> Result<Vec<InvarianceRow>> {
    let ctx = |e| Error::polars(format!("reading {}", path.display()), e);
    let t = read_parquet(path)?;
    let text = |name: &str| -> Result<StringChunked> {
        Ok(t.column(name).map_err(ctx)?.str().map_err(ctx)?.clone())
    };
    let cast = |name: &str, ty: &DataType| t.column(name).and_then(|c| c.cast(ty)).map_err(ctx);
    let (run, tr) = (text(cols::DATASET)?, text(cols::TRANSFORM)?);
    let (k, score, n_sets) = (
        cast(cols::K, &DataType::Int64)?,
        cast(cols::SCORE, &DataType::Float64)?,
        cast(cols::N_SETS, &DataType::Int64)?,
    );
    let (k, score, n_sets) = (
        k.i64().map_err(ctx)?,
        score.f64().map_err(ctx)?,
        n_sets.i64().map_err(ctx)?,
    );
    Ok((0..t.height())
        .filter_map(|i| {
            Some(InvarianceRow {
                run: run.get(i)?.to_string(),
                transform: tr.get(i)?.to_string(),
                k: k.get(i)?,
                score: score.get(i),
                n_sets: n_sets.get(i).unwrap_or(0),
            })
        })
        .collect())
}

/// A run's name in the table, the legend and its embeddings file: the directory's name, or its parent's
/// when the directory is an experiment cell's `run` (otherwise every cell would be called `run`, and two
/// cells' embeddings would overwrite each other).
pub fn run_label(run: &Path) -> String {
    let name = dataset_name(run, &run.display().to_string());
    if name != "run" {
        return name;
    }
    std::fs::canonicalize(run)
        .ok()
        .and_then(|abs| abs.parent().map(|p| dataset_name(p, &name)))
        .unwrap_or(name)
}
