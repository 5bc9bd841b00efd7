//! `biaslab invariance --run RUN [--run …] --data NAME|DIR --transforms occlusion,viewpoint,… --out DIR`:
//! Purushwalkam & Gupta's invariance table. The transformed sets are built from the dataset's objects (their
//! COCO boxes when `annotations.json` is there, else whole images), embedded by every run, and scored by the
//! invariance analysis: one row per run × transform × k in `invariance.parquet`, runs side by side.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use image::RgbImage;
use polars::prelude::*;
use rayon::prelude::*;
use tch::Tensor;

use super::embed::{dataset_name, load_run, report_skips, ComputeArgs, Layer};
use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embed::{dataset_samples, CropMode};
use crate::analyze::embeddings::{embeddings_frame, EmbeddingRow, GroupBy, COL_TRANSFORM};
use crate::analyze::invariance_sets::{object_patch, Transform};
use crate::analyze::run::{analyze, Analysis, AnalyzeOptions};
use crate::augment::EvalTransform;
use crate::data::compose::{resolve_dataset, ANNOTATIONS_FILE};
use crate::data::decode::{decode_rgb, DecodeLimits};
use crate::data::source::Sample;
use crate::report::columns as cols;
use crate::report::io::{read_parquet, write_parquet};
use crate::run_dir::EmbedLayer;

/// Seeded-sample stream of `--max-objects`.
const STREAM_OBJECTS: u64 = 0x1a7;

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
    #[arg(long, value_enum, default_value_t = Layer::Backbone)]
    pub layer: Layer,
    #[command(flatten)]
    pub compute: ComputeArgs,
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
fn objects(dir: &Path, name: &str) -> anyhow::Result<Vec<Sample>> {
    let crops = if dir.join(ANNOTATIONS_FILE).is_file() {
        CropMode::Boxes
    } else {
        CropMode::Image
    };
    let (samples, _) = dataset_samples(dir, name, crops, None)?;
    Ok(samples.into_iter().filter(|s| s.label.is_some()).collect())
}

pub fn run(args: &InvarianceArgs) -> anyhow::Result<ExitCode> {
    let device = args.compute.device()?;
    let transforms: Vec<Transform> = args
        .transforms
        .iter()
        .map(|t| Transform::parse(t.trim()))
        .collect::<Result<_, _>>()?;
    let data_dir = args.compute.data_dir();
    let dir = resolve_dataset(&data_dir, &args.data)?;
    let name = dataset_name(&dir, &args.data);
    let mut samples = objects(&dir, &name)?;
    if samples.is_empty() {
        anyhow::bail!(
            "{}: no labelled object to build invariance sets from",
            dir.display()
        );
    }
    samples.sort_by(|a, b| a.id.cmp(&b.id));
    if samples.len() > args.max_objects {
        let mut keep =
            sample_without_replacement(samples.len(), args.max_objects, args.seed, STREAM_OBJECTS);
        keep.sort_unstable();
        samples = keep.into_iter().map(|i| samples[i].clone()).collect();
    }
    let threads = args.compute.init_threads();
    // The first run also sets the default patch size; it is loaded once and embedded first.
    let first = load_run(&args.runs[0], args.layer, device)?;
    let size = args.size.unwrap_or_else(|| first.view().crop_size());
    let mut first = Some(first);

    // Decode every object once; unreadable files are listed, not fatal.
    let limits = DecodeLimits::default();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let decoded: Vec<_> = pool.install(|| {
        samples
            .par_iter()
            .map(|s| decode_rgb(&s.path, &limits).map(|img| object_patch(&img, s.bbox, size)))
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
    let views: Vec<View> = pool.install(|| {
        transforms
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
                t.views(patch, args.seed, i as u64)
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
    eprintln!(
        "{} objects of {}, {} views over {} transform(s), {size} px",
        patches.len(),
        dir.display(),
        views.len(),
        transforms.len()
    );

    let eval = EvalTransform { size };
    let layer: EmbedLayer = args.layer.into();
    let mut files = Vec::new();
    let bar = super::embed::progress_bar((views.len() * args.runs.len()) as u64, "views");
    for run in &args.runs {
        let encoder = match first.take() {
            Some(t) => t,
            None => load_run(run, args.layer, device)?,
        };
        // Codes wherever the weights hold prototypes from training or the imported file (as before the
        // encoder existed: SimCLR runs included, so the files stay as they were).
        let with_codes = encoder.import_record().is_none_or(|r| r.prototypes);
        let encoder = encoder.view();
        let mut rows = Vec::with_capacity(views.len());
        let mut names = Vec::with_capacity(views.len());
        for chunk in views.chunks(args.compute.batch_size.max(1)) {
            let flat: Vec<f32> = pool.install(|| {
                chunk
                    .par_iter()
                    .flat_map_iter(|v| eval.apply(&v.image, None))
                    .collect()
            });
            let s = size as i64;
            let images = Tensor::from_slice(&flat).view([chunk.len() as i64, 3, s, s]);
            let emb = encoder.embed(&images, layer).to_device(tch::Device::Cpu);
            let dim = emb.size()[1] as usize;
            let emb: Vec<f32> = Vec::try_from(emb.flatten(0, -1))?;
            let codes: Option<Vec<i64>> = if with_codes {
                let c = encoder.prototype_argmax(&images);
                Some(Vec::try_from(c.to_device(tch::Device::Cpu))?)
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
            bar.inc(chunk.len() as u64);
        }
        let mut df = embeddings_frame(&rows)?;
        df.with_column(Column::new(COL_TRANSFORM.into(), names))?;
        let run_name = run_label(run);
        let path = args
            .out
            .join("embeddings")
            .join(format!("{run_name}.parquet"));
        write_parquet(&mut df, &path)?;
        files.push(path);
    }
    bar.finish_and_clear();

    let opts = AnalyzeOptions {
        analyses: vec![Analysis::Invariance],
        group_by: GroupBy::File,
        seed: args.seed,
        ..AnalyzeOptions::default()
    };
    let outcome = analyze(&files, &args.out, &opts).context("invariance analysis")?;
    let table = read_parquet(&args.out.join("invariance.parquet"))?
        .lazy()
        .select([
            col(cols::DATASET).alias("run"),
            col(cols::TRANSFORM),
            col(cols::K),
            col(cols::SCORE),
            col(cols::N_SETS),
        ])
        .collect()?;
    println!("{table}");
    for p in &outcome.written {
        println!("wrote {}", p.display());
    }
    let skips = report_skips(&skipped, &args.out.join("skipped.parquet"))?;
    let notes = super::analyze::notes_exit(&outcome);
    Ok(if skips == ExitCode::SUCCESS {
        notes
    } else {
        skips
    })
}

/// A run's name in the table, the legend and its embeddings file: the directory's name, or its parent's
/// when the directory is an experiment cell's `run` (otherwise every cell would be called `run`, and two
/// cells' embeddings would overwrite each other).
fn run_label(run: &Path) -> String {
    let name = dataset_name(run, &run.display().to_string());
    if name != "run" {
        return name;
    }
    std::fs::canonicalize(run)
        .ok()
        .and_then(|abs| abs.parent().map(|p| dataset_name(p, &name)))
        .unwrap_or(name)
}
