//! The `backgrounds` stage: background reliance (Xiao et al. 2020, the Backgrounds Challenge) of runs. From a
//! dataset whose objects have masks (a composed set, or COCO `segmentation` polygons/RLE), each labelled
//! object image is built as Original, Only-FG, Only-BG-T, Mixed-Same and Mixed-Rand (`analyze::backgrounds`),
//! embedded by every run's encoder, and scored by weighted kNN and the linear probe trained on Original
//! images of a train split; BG-gap = Mixed-Same − Mixed-Rand. Beside it the nearest-neighbour
//! background-match rate where the index names each image's background. One row per run × variant × probe
//! in `backgrounds.parquet`, and a section of `summary.md`; per run, which images matched
//! (`matches-<run>.parquet`), so a run's rate can be read against another's on the same images (a grid's
//! `bg_match_gain` over its untrained cell, `pipeline::gain`).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
use polars::prelude::*;
use rayon::prelude::*;
use tch::Tensor;

use super::invariance::run_label;
use super::{dataset_name, write_skips, Env, Progress};
use crate::analyze::backgrounds::{
    background_identity, draw_donors, has_background, match_rate, mixed,
    nearest_background_matches, only_bg_t, only_fg, score_variants, BackgroundMatch, Probe, Query,
    Variant, ONLY_FG_FILL,
};
use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embed::{dataset_samples, CropMode};
use crate::analyze::embeddings::{from_rows, EmbeddingRow};
use crate::analyze::knn::{K, TAU};
use crate::analyze::paired::PairedGain;
use crate::augment::EvalTransform;
use crate::data::compose::{resolve_dataset, ANNOTATIONS_FILE};
use crate::data::decode::{decode_rgb, DecodeLimits, Skip, SkipReason};
use crate::data::index::{index_path, read_index};
use crate::data::source::{samples_from_dir, Sample};
use crate::error::{Error, Result};
use crate::report::io::{write_bytes_atomic, write_parquet};
use crate::report::names::unique_name;
use crate::report::owned::OwnedDir;
use crate::run_dir::{EmbedLayer, Encoder, EncoderView};

/// Seeded-sample stream of `max_images`.
const STREAM_IMAGES: u64 = 0xb61;
/// Stream of the held-out split (without `train_data`).
const STREAM_HELD_OUT: u64 = 0xb62;
/// The table's file in the report directory.
pub const BACKGROUNDS_FILE: &str = "backgrounds.parquet";
/// The report's prose, one section.
pub const SUMMARY_FILE: &str = "summary.md";
/// Images that could not be read or had no usable mask (written only when there are any).
pub const SKIPPED_FILE: &str = "skipped.parquet";

// Columns of backgrounds.parquet (provenance first, then the numbers).
pub const COL_DATASET: &str = "dataset";
pub const COL_RUN: &str = "run";
pub const COL_RUN_DIR: &str = "run_dir";
pub const COL_STEP: &str = "step";
pub const COL_LAYER: &str = "layer";
pub const COL_SIZE: &str = "size";
pub const COL_SEED: &str = "seed";
/// The train split the probes were fitted on: a dataset, or `<data> (held-out <fraction>)`.
pub const COL_TRAIN_DATA: &str = "train_data";
pub const COL_VARIANT: &str = "variant";
pub const COL_PROBE: &str = "probe";
pub const COL_ACCURACY: &str = "accuracy";
pub const COL_ACCURACY_LO: &str = "accuracy_lo";
pub const COL_ACCURACY_HI: &str = "accuracy_hi";
pub const COL_CHANCE: &str = "chance";
pub const COL_N_QUERIES: &str = "n_queries";
pub const COL_N_TRAIN: &str = "n_train";
/// Mixed-Same − Mixed-Rand of the row's probe (the same on the probe's five rows), paired interval.
pub const COL_BG_GAP: &str = "bg_gap";
pub const COL_BG_GAP_LO: &str = "bg_gap_lo";
pub const COL_BG_GAP_HI: &str = "bg_gap_hi";
pub const COL_N_GAP: &str = "n_gap";
/// Nearest-neighbour background-match rate of the run's Original embeddings (the same on the run's rows).
pub const COL_BG_MATCH: &str = "bg_match";
pub const COL_BG_MATCH_LO: &str = "bg_match_lo";
pub const COL_BG_MATCH_HI: &str = "bg_match_hi";
pub const COL_BG_MATCH_CHANCE: &str = "bg_match_chance";
pub const COL_N_BG_MATCH: &str = "n_bg_match";
pub const COL_NOTE: &str = "note";

// Columns of a run's matches file ([`matches_path`]): one row per image of the background-match rate.
pub const COL_IMAGE_ID: &str = "image_id";
pub const COL_BACKGROUND: &str = "background";
/// Whether the image's nearest other image has the same background.
pub const COL_MATCHED: &str = "matched";
/// Longest run name in a matches file's name (longer ones are cut and hashed, `report::names`), well under
/// the 255 bytes most file systems allow.
const MATCHES_STEM_MAX: usize = 200;

/// Where `backgrounds` writing to `out` puts the per-image background matches of the run named `run`
/// ([`run_label`]): `matches-<run>.parquet`, the name made safe. Written only where the rate was measured.
pub fn matches_path(out: &Path, run: &str) -> PathBuf {
    out.join(format!(
        "matches-{}.parquet",
        unique_name(run, MATCHES_STEM_MAX, |_| true)
    ))
}

/// Which runs, on which images, written where.
#[derive(Debug, Clone)]
pub struct BackgroundsRequest {
    /// Run directories (rows of the table each); at least one.
    pub runs: Vec<PathBuf>,
    /// Dataset with COCO annotations whose objects have masks (a name under the data dir or a directory):
    /// its images get the variants.
    pub data: String,
    /// Labelled dataset the probes are trained on (Original images); `None`: a held-out share of `data`.
    pub train_data: Option<String>,
    /// Share of `data`'s images scored when there is no `train_data` (the rest train the probes).
    pub test_fraction: f64,
    /// Report directory: backgrounds.parquet, summary.md, skipped.parquet, a matches file per run
    /// ([`matches_path`]).
    pub out: PathBuf,
    /// Eval side in pixels; `None`: the first run's largest training crop.
    pub size: Option<u32>,
    /// Images read at most from each dataset (a seeded sample beyond it).
    pub max_images: usize,
    pub seed: u64,
    pub layer: EmbedLayer,
    pub batch_size: usize,
    /// kNN neighbours.
    pub k: usize,
}

impl BackgroundsRequest {
    /// Defaults for everything but the runs, the data and the output.
    pub fn new(runs: Vec<PathBuf>, data: &str, out: &Path) -> Self {
        BackgroundsRequest {
            runs,
            data: data.to_string(),
            train_data: None,
            test_fraction: 0.2,
            out: out.to_path_buf(),
            size: None,
            max_images: 500,
            seed: 0,
            layer: EmbedLayer::Backbone,
            batch_size: 64,
            k: K,
        }
    }
}

/// One row of the table: a run's probe on one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundsRow {
    pub run: String,
    pub variant: Variant,
    pub probe: Probe,
    pub accuracy: f64,
    pub accuracy_lo: f64,
    pub accuracy_hi: f64,
    pub chance: f64,
    pub n_queries: usize,
    /// The probe's Mixed-Same − Mixed-Rand.
    pub bg_gap: Option<PairedGain>,
    /// The run's background-match rate.
    pub bg_match: Option<BackgroundMatch>,
}

/// What `backgrounds` measured and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundsResult {
    /// Images scored (with their variants), Original images the probes were trained on, eval side.
    pub scored: usize,
    pub n_train: usize,
    pub size: u32,
    pub rows: Vec<BackgroundsRow>,
    pub written: Vec<PathBuf>,
    /// What did not apply (no background identity, single-image labels, images with several labels).
    pub notes: Vec<String>,
    /// Images that could not be read or had no usable mask; listed in `skipped_file`.
    pub skipped: Vec<Skip>,
    pub skipped_file: Option<PathBuf>,
}

/// An image and its objects (every annotation of it), with its one label.
#[derive(Debug, Clone)]
struct Listed {
    image_id: String,
    label: String,
    /// Its annotations (boxes with masks), or the image sample itself for a dataset without annotations.
    objects: Vec<Sample>,
    background: Option<String>,
}

/// A decoded image: its Original pixels and, for a scored one, its objects' union mask.
struct Decoded {
    listed: Listed,
    image: RgbImage,
    mask: Option<GrayImage>,
}

/// The labelled images of `dir`: grouped from its COCO annotations (an image whose objects carry two or
/// more labels is counted in the second number and left out), or, where masks are not needed and it
/// has no annotations, its labelled images. The index's `source` gives each image's background.
fn list_images(dir: &Path, name: &str, need_masks: bool) -> Result<(Vec<Listed>, usize)> {
    let has_coco = dir.join(ANNOTATIONS_FILE).is_file();
    if need_masks && !has_coco {
        return Err(Error::format(
            &dir.join(ANNOTATIONS_FILE),
            "missing: background reliance needs object masks (COCO annotations with `segmentation`)",
        ));
    }
    let sources: HashMap<String, String> = if index_path(dir).is_file() {
        read_index(dir)?
            .into_iter()
            .map(|r| (r.path, r.source))
            .collect()
    } else {
        HashMap::new()
    };
    let samples = if has_coco {
        dataset_samples(dir, name, CropMode::Boxes, None)?.0
    } else {
        samples_from_dir(dir, name, crate::data::kind::DatasetKind::Object)?
    };
    let mut by_image: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in samples {
        by_image.entry(s.image_id.clone()).or_default().push(s);
    }
    let mut out = Vec::new();
    let mut mixed_labels = 0;
    for (image_id, objects) in by_image {
        let labels: BTreeSet<&str> = objects.iter().filter_map(|s| s.label.as_deref()).collect();
        if labels.len() != 1 {
            mixed_labels += usize::from(labels.len() > 1);
            continue;
        }
        let label = labels.into_iter().next().unwrap_or_default().to_string();
        // COCO file_name = the index path for datasets biaslab wrote; an index id for a walked folder
        let background = sources
            .get(&image_id)
            .or_else(|| sources.get(&objects[0].id))
            .and_then(|s| background_identity(s));
        out.push(Listed {
            image_id,
            label,
            objects,
            background,
        });
    }
    Ok((out, mixed_labels))
}

/// The union of the object masks of `l` on a `w` × `h` image; the image is skipped with the reason when
/// an object has no usable mask, or when the masks leave no object or no background pixel.
fn union_mask(
    l: &Listed,
    w: u32,
    h: u32,
    limits: &DecodeLimits,
) -> std::result::Result<GrayImage, Skip> {
    let path = l.objects[0].path.clone();
    let skip = |why: String| Skip {
        path: path.clone(),
        reason: SkipReason::NoMask(why),
    };
    let mut union = GrayImage::new(w, h);
    for s in &l.objects {
        let m = s
            .object_mask(w, h, limits)
            .map_err(|why| skip(format!("object {}: {why}", s.id)))?;
        for (u, p) in union.pixels_mut().zip(m.pixels()) {
            u[0] = u[0].max(p[0]);
        }
    }
    if !union.pixels().any(|p| p[0] != 0) {
        return Err(skip("the mask holds no pixel of the image".into()));
    }
    if !has_background(&union) {
        return Err(skip(
            "the mask covers the whole image: no background to swap".into(),
        ));
    }
    Ok(union)
}

/// Up to `max` of `listed` (a seeded sample beyond it, in their order).
fn cap(listed: Vec<Listed>, max: usize, seed: u64) -> Vec<Listed> {
    if listed.len() <= max {
        return listed;
    }
    let mut keep = sample_without_replacement(listed.len(), max, seed, STREAM_IMAGES);
    keep.sort_unstable();
    let mut slots: Vec<Option<Listed>> = listed.into_iter().map(Some).collect();
    keep.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Background reliance of `req.runs` on `req.data`; `progress` hears of every view embedded.
pub fn backgrounds(
    env: &Env,
    req: &BackgroundsRequest,
    progress: &mut dyn Progress,
) -> Result<BackgroundsResult> {
    let Some(first_run) = req.runs.first() else {
        return Err(Error::config("backgrounds", "runs", "no run given"));
    };
    if req.train_data.is_none() && !(req.test_fraction > 0.0 && req.test_fraction < 1.0) {
        return Err(Error::config(
            "backgrounds",
            "test_fraction",
            format!("must be in (0, 1), got {}", req.test_fraction),
        ));
    }
    let dir = resolve_dataset(&env.data_dir, &req.data)?;
    let name = dataset_name(&dir, &req.data);
    let (listed, mixed_labels) = list_images(&dir, &name, true)?;
    let mut notes = Vec::new();
    if mixed_labels > 0 {
        notes.push(format!(
            "{mixed_labels} image(s) of {name} hold objects of several labels and were left out (the \
             variants need one label per image)"
        ));
    }
    if listed.is_empty() {
        return Err(Error::format(
            &dir,
            "no image whose objects carry one label",
        ));
    }
    let listed = cap(listed, req.max_images, req.seed);
    // Which of `data`'s images are scored; the others (held-out split) train the probes.
    let scored: Vec<bool> = match &req.train_data {
        Some(_) => vec![true; listed.len()],
        None => {
            if listed.len() < 2 {
                return Err(Error::format(&dir, "one image: too few to hold any out"));
            }
            let n_test = ((listed.len() as f64 * req.test_fraction).round() as usize)
                .clamp(1, listed.len() - 1);
            let test: HashSet<usize> =
                sample_without_replacement(listed.len(), n_test, req.seed, STREAM_HELD_OUT)
                    .into_iter()
                    .collect();
            (0..listed.len()).map(|i| test.contains(&i)).collect()
        }
    };
    let train_listed = match &req.train_data {
        Some(t) => {
            let tdir = resolve_dataset(&env.data_dir, t)?;
            let (l, _) = list_images(&tdir, &dataset_name(&tdir, t), false)?;
            cap(l, req.max_images, req.seed)
        }
        None => Vec::new(),
    };
    let train_name = match &req.train_data {
        Some(t) => t.clone(),
        None => format!("{} (held-out {})", req.data, req.test_fraction),
    };

    // The report directory is claimed before the slow work: a foreign one is refused now, not after it.
    let mut owned = OwnedDir::claim(&req.out, "backgrounds")?;
    let first = open_run(first_run, req.layer, env.device)?;
    let size = req.size.unwrap_or_else(|| first.view().crop_size());
    let mut first = Some(first);

    let limits = DecodeLimits::default();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(env.threads)
        .build()
        .map_err(|e| Error::Invalid(format!("backgrounds: cannot start the thread pool: {e}")))?;
    let decode = |l: Listed, with_mask: bool| -> std::result::Result<Decoded, Skip> {
        let image = l.objects[0]
            .readable_path()
            .and_then(|p| decode_rgb(p, &limits))?;
        let mask = if with_mask {
            Some(union_mask(&l, image.width(), image.height(), &limits)?)
        } else {
            None
        };
        Ok(Decoded {
            listed: l,
            image,
            mask,
        })
    };
    let mut skipped = Vec::new();
    let mut keep = |d: Vec<std::result::Result<Decoded, Skip>>| -> Vec<Decoded> {
        d.into_iter()
            .filter_map(|r| r.map_err(|s| skipped.push(s)).ok())
            .collect()
    };
    let data_images: Vec<Decoded> = keep(pool.install(|| {
        listed
            .into_par_iter()
            .zip(scored.par_iter())
            .map(|(l, &s)| decode(l, s))
            .collect()
    }));
    let train_images: Vec<Decoded> = keep(pool.install(|| {
        train_listed
            .into_par_iter()
            .map(|l| decode(l, false))
            .collect()
    }));

    // The scored images (with masks) in their order; donors are drawn among them.
    let scored_idx: Vec<usize> = (0..data_images.len())
        .filter(|&i| data_images[i].mask.is_some())
        .collect();
    if scored_idx.is_empty() {
        return Err(Error::format(
            &dir,
            "no image with a usable object mask to build variants from",
        ));
    }
    let labels: Vec<&str> = scored_idx
        .iter()
        .map(|&i| data_images[i].listed.label.as_str())
        .collect();
    let donors = draw_donors(&labels, req.seed);
    let lonely = donors.iter().filter(|d| d.same.is_none()).count();
    if lonely > 0 {
        notes.push(format!(
            "{lonely} scored image(s) are the only one of their label: no Mixed-Same for them (the BG-gap \
             pairs the images that have both)"
        ));
    }
    // Only-BG-T of every scored image: its own variant and the donors' backgrounds.
    let bg_t: Vec<RgbImage> = pool.install(|| {
        scored_idx
            .par_iter()
            .map(|&i| {
                let d = &data_images[i];
                only_bg_t(&d.image, d.mask.as_ref().expect("scored images have masks"))
            })
            .collect()
    });
    let built: Vec<Vec<(Variant, RgbImage)>> = pool.install(|| {
        (0..scored_idx.len())
            .into_par_iter()
            .map(|t| {
                let d = &data_images[scored_idx[t]];
                let m = d.mask.as_ref().expect("scored images have masks");
                let mut v = vec![
                    (Variant::OnlyFg, only_fg(&d.image, m)),
                    (Variant::OnlyBgT, bg_t[t].clone()),
                ];
                if let Some(j) = donors[t].same {
                    v.push((Variant::MixedSame, mixed(&d.image, m, &bg_t[j])));
                }
                if let Some(j) = donors[t].rand {
                    v.push((Variant::MixedRand, mixed(&d.image, m, &bg_t[j])));
                }
                v
            })
            .collect()
    });
    drop(bg_t);

    // Every view to embed, in a fixed order: train Originals, then data Originals, then the variants.
    struct View<'a> {
        image: &'a RgbImage,
        row: EmbeddingRow,
        role: Role,
        /// Index into `data_images` of an Original of `data`.
        original_of: Option<usize>,
    }
    #[derive(Clone, Copy)]
    enum Role {
        Train,
        Query(Variant, usize),
        /// A held-out-split Original of `data` that trains the probes.
        DataTrain,
    }
    let row = |d: &Decoded, v: Variant, dataset: &str| EmbeddingRow {
        id: format!("{}:{}", v.name(), d.listed.image_id),
        image_id: d.listed.image_id.clone(),
        label: Some(d.listed.label.clone()),
        dataset: dataset.to_string(),
        kind: d.listed.objects[0].kind.as_str().to_string(),
        set_id: None,
        bbox: None,
        prototype: None,
        embedding: Vec::new(),
    };
    let mut views: Vec<View<'_>> = Vec::new();
    for d in &train_images {
        views.push(View {
            image: &d.image,
            row: row(d, Variant::Original, &d.listed.objects[0].dataset),
            role: Role::Train,
            original_of: None,
        });
    }
    let scored_pos: HashMap<usize, usize> = scored_idx
        .iter()
        .enumerate()
        .map(|(t, &i)| (i, t))
        .collect();
    for (i, d) in data_images.iter().enumerate() {
        let role = match scored_pos.get(&i) {
            Some(&t) => Role::Query(Variant::Original, t),
            None => Role::DataTrain,
        };
        views.push(View {
            image: &d.image,
            row: row(d, Variant::Original, &name),
            role,
            original_of: Some(i),
        });
    }
    for (t, vs) in built.iter().enumerate() {
        let d = &data_images[scored_idx[t]];
        for (v, img) in vs {
            views.push(View {
                image: img,
                row: row(d, *v, &name),
                role: Role::Query(*v, t),
                original_of: None,
            });
        }
    }
    let train_rows: Vec<usize> = (0..views.len())
        .filter(|&r| matches!(views[r].role, Role::Train | Role::DataTrain))
        .collect();
    let queries: Vec<Query> = views
        .iter()
        .enumerate()
        .filter_map(|(r, v)| match v.role {
            Role::Query(variant, image) => Some(Query {
                variant,
                image,
                row: r,
            }),
            _ => None,
        })
        .collect();
    // The background-match rate reads every Original of `data` that names its background.
    let match_rows: Vec<(usize, &str)> = views
        .iter()
        .enumerate()
        .filter_map(|(r, v)| {
            let i = v.original_of?;
            data_images[i].listed.background.as_deref().map(|b| (r, b))
        })
        .collect();
    let n_originals = data_images.len();
    if match_rows.len() < 2 {
        notes.push(format!(
            "background-match rate not measured: {} of the {n_originals} images of {name} name their \
             background (only `datasets compose` records it, in the index `source`)",
            match_rows.len()
        ));
    } else if match_rows.len() < n_originals {
        notes.push(format!(
            "background-match rate over the {} of {n_originals} images of {name} whose index `source` names \
             their background",
            match_rows.len()
        ));
    }

    let eval = EvalTransform { size };
    let mut rows = Vec::new();
    // Per run: its label and which of `match_rows` matched.
    let mut matches: Vec<(String, Vec<bool>)> = Vec::new();
    progress.start(views.len() * req.runs.len());
    let mut provenance = Vec::new();
    for run in &req.runs {
        if env.stopped() {
            return Err(Error::Invalid(
                "backgrounds stopped before every run was embedded; no table written".into(),
            ));
        }
        let encoder = match first.take() {
            Some(t) => t,
            None => open_run(run, req.layer, env.device)?,
        };
        let view = encoder.view();
        let images: Vec<&RgbImage> = views.iter().map(|v| v.image).collect();
        let emb = embed_images(view, &images, &eval, req, &pool, progress)?;
        let mut erows: Vec<EmbeddingRow> = views.iter().map(|v| v.row.clone()).collect();
        for (r, e) in erows.iter_mut().zip(emb) {
            r.embedding = e;
        }
        let mut e = from_rows(&erows)?;
        let scored = score_variants(&mut e, &train_rows, &queries, req.k, req.seed)?;
        let (mrows, mbg): (Vec<usize>, Vec<&str>) = match_rows.iter().copied().unzip();
        let matched = nearest_background_matches(&e, &mrows, &mbg);
        let bg_match = matched.as_deref().and_then(|m| match_rate(m, &mbg));
        let label = run_label(run);
        if let Some(m) = matched {
            matches.push((label.clone(), m));
        }
        for s in &scored.scores {
            rows.push(BackgroundsRow {
                run: label.clone(),
                variant: s.variant,
                probe: s.probe,
                accuracy: s.accuracy,
                accuracy_lo: s.lo,
                accuracy_hi: s.hi,
                chance: s.chance,
                n_queries: s.n,
                bg_gap: scored.gaps.get(&s.probe).copied().flatten(),
                bg_match,
            });
        }
        if scored.scores.iter().any(|s| s.sampled) {
            notes.push(format!(
                "{label}: kNN scored a seeded sample of the queries of some variant"
            ));
        }
        provenance.push((label, run.display().to_string(), view.step() as u64));
    }
    // `rows` is grouped by run label; provenance is looked up by it.
    let prov: HashMap<&str, (&str, u64)> = provenance
        .iter()
        .map(|(l, d, s)| (l.as_str(), (d.as_str(), *s)))
        .collect();

    let layer = match req.layer {
        EmbedLayer::Backbone => "backbone",
        EmbedLayer::Projector => "projector",
    };
    let n_train = train_rows.len();
    let table = Table {
        dataset: &name,
        layer,
        size,
        seed: req.seed,
        train_data: &train_name,
        n_train,
        prov: &prov,
    };
    let mut df = table.frame(&rows)?;
    let mut written = Vec::new();
    let path = req.out.join(BACKGROUNDS_FILE);
    owned.record(&path)?;
    write_parquet(&mut df, &path)?;
    written.push(path);
    let summary = req.out.join(SUMMARY_FILE);
    owned.record(&summary)?;
    write_bytes_atomic(
        &summary,
        summary_md(
            &name,
            &train_name,
            scored_idx.len(),
            n_train,
            size,
            &rows,
            &notes,
            &skipped,
        )
        .as_bytes(),
    )?;
    written.push(summary);
    for (label, matched) in &matches {
        let path = matches_path(&req.out, label);
        owned.record(&path)?;
        let ids: Vec<&str> = match_rows
            .iter()
            .map(|&(r, _)| views[r].row.image_id.as_str())
            .collect();
        let bgs: Vec<&str> = match_rows.iter().map(|&(_, b)| b).collect();
        let mut df = df!(
            COL_IMAGE_ID => ids,
            COL_BACKGROUND => bgs,
            COL_MATCHED => matched.as_slice(),
        )
        .map_err(|e| Error::polars(format!("writing {}", path.display()), e))?;
        write_parquet(&mut df, &path)?;
        written.push(path);
    }
    let skipped_file = (!skipped.is_empty()).then(|| req.out.join(SKIPPED_FILE));
    if let Some(p) = &skipped_file {
        owned.record(p)?;
        write_skips(&skipped, p)?;
    }
    Ok(BackgroundsResult {
        scored: scored_idx.len(),
        n_train,
        size,
        rows,
        written,
        notes,
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

/// Embeddings of `images` (eval transform: shorter side to `size`, centre crop) in batches of
/// `req.batch_size`, in order.
fn embed_images(
    encoder: EncoderView<'_>,
    images: &[&RgbImage],
    eval: &EvalTransform,
    req: &BackgroundsRequest,
    pool: &rayon::ThreadPool,
    progress: &mut dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(images.len());
    let s = eval.size as i64;
    for chunk in images.chunks(req.batch_size.max(1)) {
        let flat: Vec<f32> = pool.install(|| {
            chunk
                .par_iter()
                .flat_map_iter(|img| eval.apply(img, None))
                .collect()
        });
        let batch = Tensor::from_slice(&flat).view([chunk.len() as i64, 3, s, s]);
        let emb = encoder.embed(&batch, req.layer).to_device(tch::Device::Cpu);
        let dim = emb.size()[1] as usize;
        let emb: Vec<f32> = Vec::try_from(emb.flatten(0, -1))
            .map_err(|e| Error::tch("backgrounds: reading embeddings", e))?;
        out.extend(emb.chunks(dim).map(<[f32]>::to_vec));
        progress.advance(chunk.len());
    }
    Ok(out)
}

/// What every row of the table shares.
struct Table<'a> {
    dataset: &'a str,
    layer: &'a str,
    size: u32,
    seed: u64,
    train_data: &'a str,
    n_train: usize,
    prov: &'a HashMap<&'a str, (&'a str, u64)>,
}

impl Table<'_> {
    fn frame(&self, rows: &[BackgroundsRow]) -> Result<DataFrame> {
        let n = rows.len();
        let text = |name: &str, f: &dyn Fn(&BackgroundsRow) -> String| {
            Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
        };
        let num = |name: &str, f: &dyn Fn(&BackgroundsRow) -> Option<f64>| {
            Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
        };
        let int = |name: &str, f: &dyn Fn(&BackgroundsRow) -> Option<u64>| {
            Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
        };
        let note = |r: &BackgroundsRow| -> Option<String> {
            let mut why = Vec::new();
            if r.bg_gap.is_none() {
                why.push("no image has both Mixed-Same and Mixed-Rand: no BG-gap");
            }
            if r.bg_match.is_none() {
                why.push("the images do not name their backgrounds: no background-match rate");
            }
            (!why.is_empty()).then(|| why.join("; "))
        };
        DataFrame::new(
            n,
            vec![
                text(COL_DATASET, &|_| self.dataset.to_string()),
                text(COL_RUN, &|r| r.run.clone()),
                text(COL_RUN_DIR, &|r| {
                    self.prov
                        .get(r.run.as_str())
                        .map(|p| p.0)
                        .unwrap_or_default()
                        .to_string()
                }),
                int(COL_STEP, &|r| self.prov.get(r.run.as_str()).map(|p| p.1)),
                text(COL_LAYER, &|_| self.layer.to_string()),
                int(COL_SIZE, &|_| Some(self.size as u64)),
                int(COL_SEED, &|_| Some(self.seed)),
                text(COL_TRAIN_DATA, &|_| self.train_data.to_string()),
                text(COL_VARIANT, &|r| r.variant.name().to_string()),
                text(COL_PROBE, &|r| match r.probe {
                    Probe::Knn => format!("knn (weighted, tau={TAU})"),
                    Probe::Linear => Probe::Linear.name().to_string(),
                }),
                num(COL_ACCURACY, &|r| Some(r.accuracy)),
                num(COL_ACCURACY_LO, &|r| Some(r.accuracy_lo)),
                num(COL_ACCURACY_HI, &|r| Some(r.accuracy_hi)),
                num(COL_CHANCE, &|r| Some(r.chance)),
                int(COL_N_QUERIES, &|r| Some(r.n_queries as u64)),
                int(COL_N_TRAIN, &|_| Some(self.n_train as u64)),
                num(COL_BG_GAP, &|r| r.bg_gap.map(|g| g.gain)),
                num(COL_BG_GAP_LO, &|r| r.bg_gap.map(|g| g.lo)),
                num(COL_BG_GAP_HI, &|r| r.bg_gap.map(|g| g.hi)),
                int(COL_N_GAP, &|r| r.bg_gap.map(|g| g.n as u64)),
                num(COL_BG_MATCH, &|r| r.bg_match.map(|m| m.rate)),
                num(COL_BG_MATCH_LO, &|r| r.bg_match.map(|m| m.lo)),
                num(COL_BG_MATCH_HI, &|r| r.bg_match.map(|m| m.hi)),
                num(COL_BG_MATCH_CHANCE, &|r| r.bg_match.map(|m| m.chance)),
                int(COL_N_BG_MATCH, &|r| r.bg_match.map(|m| m.n as u64)),
                Column::new(COL_NOTE.into(), rows.iter().map(note).collect::<Vec<_>>()),
            ],
        )
        .map_err(|e| Error::polars("backgrounds: building the table", e))
    }
}

/// `summary.md`: per run a table of variants × probes, the BG-gap, the background-match rate, the notes.
#[allow(clippy::too_many_arguments)]
fn summary_md(
    dataset: &str,
    train: &str,
    scored: usize,
    n_train: usize,
    size: u32,
    rows: &[BackgroundsRow],
    notes: &[String],
    skipped: &[Skip],
) -> String {
    let pct = |x: f64| format!("{:.1}", 100.0 * x);
    let mut s = String::new();
    let _ = writeln!(s, "## Background reliance (Xiao et al. 2020)\n");
    let _ = writeln!(
        s,
        "{scored} images of `{dataset}` scored, probes trained on {n_train} Original images of `{train}`, \
         {size} px. Only-FG: object pixels on black ({:?}); Only-BG-T: the object's box tiled with the largest \
         background strip of the image; Mixed-Same / Mixed-Rand: the object's pixels on the Only-BG-T of \
         another image of its label / of any label. Accuracies in %, 95% Wilson intervals; BG-gap = \
         Mixed-Same − Mixed-Rand (points, 95% paired bootstrap interval over images). Xiao et al.'s \
         ResNet-50 on ImageNet-9: Mixed-Same 86.2, Mixed-Rand 78.9, gap 7.3.\n",
        ONLY_FG_FILL
    );
    let runs: Vec<&str> = {
        let mut r: Vec<&str> = rows.iter().map(|r| r.run.as_str()).collect();
        r.dedup();
        r
    };
    for run in runs {
        let of = |p: Probe, v: Variant| {
            rows.iter()
                .find(|r| r.run == run && r.probe == p && r.variant == v)
        };
        let _ = writeln!(s, "### {run}\n");
        let _ = writeln!(
            s,
            "| variant | kNN | linear | chance | n |\n|---|---|---|---|---|"
        );
        for v in Variant::ALL {
            let cell = |p| {
                of(p, v).map_or("—".to_string(), |r| {
                    format!(
                        "{} [{}, {}]",
                        pct(r.accuracy),
                        pct(r.accuracy_lo),
                        pct(r.accuracy_hi)
                    )
                })
            };
            let any = of(Probe::Knn, v).or(of(Probe::Linear, v));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                v.name(),
                cell(Probe::Knn),
                cell(Probe::Linear),
                any.map_or("—".into(), |r| pct(r.chance)),
                any.map_or(0, |r| r.n_queries)
            );
        }
        s.push('\n');
        for p in Probe::ALL {
            let gap = of(p, Variant::MixedSame).and_then(|r| r.bg_gap);
            let _ = writeln!(
                s,
                "- BG-gap ({}): {}",
                p.name(),
                gap.map_or(
                    "not measured (no image with both mixed variants)".to_string(),
                    |g| format!(
                        "{:+.1} [{:+.1}, {:+.1}] points over {} images",
                        100.0 * g.gain,
                        100.0 * g.lo,
                        100.0 * g.hi,
                        g.n
                    )
                )
            );
        }
        let m = rows.iter().find(|r| r.run == run).and_then(|r| r.bg_match);
        let _ = writeln!(
            s,
            "- Nearest-neighbour background match (Original images): {}\n",
            m.map_or("not measured (see the notes)".to_string(), |m| format!(
                "{} [{}, {}]% of {} images, chance {}%",
                pct(m.rate),
                pct(m.lo),
                pct(m.hi),
                m.n,
                pct(m.chance)
            ))
        );
    }
    if !notes.is_empty() || !skipped.is_empty() {
        let _ = writeln!(s, "### Notes\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
        if !skipped.is_empty() {
            let _ = writeln!(s, "- {} image(s) skipped (unreadable or without a usable mask), listed in `{SKIPPED_FILE}`", skipped.len());
        }
    }
    s
}
