//! Embedding a dataset with a trained model: one [`EmbeddingRow`] per crop, in the contract every analysis
//! reads. Three kinds of crop: the whole image (centre crop), each COCO object box (the fridge and the chair
//! of one kitchen), or N augmented views per image (SwAV's augmentations, seeded per sample).
use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;

use crate::analyze::embeddings::{BBox, EmbeddingRow};
use crate::augment::{CropRecipe, EvalTransform, MultiCropConfig};
use crate::data::coco::CocoDataset;
use crate::data::compose::ANNOTATIONS_FILE;
use crate::data::decode::Skip;
use crate::data::index::read_index;
use crate::data::kind::DatasetKind;
use crate::data::source::{samples_from_coco, samples_from_dir, Sample};
use crate::error::{Error, Result};
use crate::loader::{EvalLoader, LoaderOptions, MultiCropLoader};
use crate::run_dir::{EmbedLayer, EncoderView};

/// Which crops become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropMode {
    /// One row per image (centre crop).
    Image,
    /// One row per COCO box; `set_id` = the pasted cut-out instance when the annotations record it.
    Boxes,
    /// `n` augmented views per image; rows of one image share `image_id` and `set_id`.
    Views { n: usize, seed: u64 },
    /// One row per COCO box, its object's pixels alone on the neutral fill (its segmentation mask): the
    /// same ids as [`CropMode::Boxes`], so the two files pair crop by crop (context control).
    ObjectOnly,
}

impl CropMode {
    /// Box crops, whole or object-only: samples come from COCO annotations.
    pub fn is_boxes(self) -> bool {
        matches!(self, CropMode::Boxes | CropMode::ObjectOnly)
    }
}

/// The kind of [`CropMode`] without its parameters: the `--crops` flag of `embed` and `eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CropKind {
    /// One row per image (centre crop).
    Image,
    /// One row per COCO box of `annotations.json` (object crops; the collapse-across-crops input).
    Boxes,
    /// `--views` augmented views per image (SwAV's augmentations, seeded): rows of one image share
    /// `image_id` and `set_id`, the input of alignment / uniformity and of augmentation invariance.
    Views,
    /// Each COCO box with only its object's pixels (its `segmentation`), the rest of the image the
    /// neutral fill: analysed beside `boxes`, it tells merged objects from shared context.
    ObjectOnly,
}

impl CropKind {
    /// The crop mode, with `n` views drawn from `seed` for [`CropKind::Views`].
    pub fn mode(self, n: usize, seed: u64) -> CropMode {
        match self {
            CropKind::Image => CropMode::Image,
            CropKind::Boxes => CropMode::Boxes,
            CropKind::Views => CropMode::Views { n, seed },
            CropKind::ObjectOnly => CropMode::ObjectOnly,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub crops: CropMode,
    pub layer: EmbedLayer,
    /// Eval crop side in pixels.
    pub size: u32,
    pub batch_size: usize,
    pub threads: usize,
    /// Write each row's prototype code (false for an imported run whose file had no prototypes).
    pub prototype_codes: bool,
}

/// The rows, and the files that could not be read (listed, never silently dropped).
#[derive(Debug, Default)]
pub struct EmbedOutput {
    pub rows: Vec<EmbeddingRow>,
    pub skipped: Vec<Skip>,
}

/// Scale range of the `views` crops: SwAV's large-crop range (main_swav.py `min_scale_crops` 0.14).
const VIEW_SCALES: (f32, f32) = (0.14, 1.0);

/// Samples of dataset directory `dir` for `crops`: images from its index (or folder), boxes from
/// `annotations` (default `<dir>/annotations.json`). Returns the samples and sample id → set id.
/// Shared by embedding, training on object boxes and the invariance sets.
pub fn dataset_samples(
    dir: &Path,
    name: &str,
    crops: CropMode,
    annotations: Option<&Path>,
) -> Result<(Vec<Sample>, HashMap<String, String>)> {
    // The dataset's own kind (from its index) names the rows; a plain folder counts as objects.
    let kind = match read_index(dir) {
        Ok(recs) => recs.first().map(|r| r.kind).unwrap_or(DatasetKind::Object),
        Err(_) => DatasetKind::Object,
    };
    let mut sets = HashMap::new();
    let samples = match crops {
        CropMode::Image | CropMode::Views { .. } => samples_from_dir(dir, name, kind)?,
        CropMode::Boxes | CropMode::ObjectOnly => {
            let path = annotations
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.join(ANNOTATIONS_FILE));
            if !path.is_file() {
                return Err(Error::format(
                    &path,
                    "missing: object crops need COCO boxes (instances JSON)",
                ));
            }
            let coco = CocoDataset::read(&path)?;
            let by_id: HashMap<u64, &str> = coco
                .images
                .iter()
                .map(|im| (im.id, im.file_name.as_str()))
                .collect();
            // The same cut-out pasted into several scenes forms one set: invariance to context.
            for a in &coco.annotations {
                if let (Some(file), Some(inst)) = (by_id.get(&a.image_id), &a.instance) {
                    sets.insert(format!("{file}#{}", a.id), inst.clone());
                }
            }
            samples_from_coco(dir, &coco, &path, name, kind)?
        }
    };
    if samples.is_empty() {
        return Err(Error::format(dir, "no images"));
    }
    Ok((samples, sets))
}

/// Embeds `samples` with `encoder`; `sets` gives `set_id` per sample id (image and box crops).
pub fn embed_samples(
    encoder: EncoderView<'_>,
    samples: &[Sample],
    sets: &HashMap<String, String>,
    opts: &EmbedOptions,
) -> Result<EmbedOutput> {
    let mut out = EmbedOutput::default();
    let mut push = |images: &Tensor, indices: &[usize], view: Option<usize>| -> Result<()> {
        let emb = encoder
            .embed(images, opts.layer)
            .to_device(tch::Device::Cpu);
        let dim = emb.size()[1] as usize;
        let flat: Vec<f32> =
            Vec::try_from(emb.flatten(0, -1)).map_err(|e| Error::tch("copying embeddings", e))?;
        let codes: Option<Vec<i64>> = if opts.prototype_codes {
            let c = encoder.prototype_argmax(images).to_device(tch::Device::Cpu);
            Some(Vec::try_from(c).map_err(|e| Error::tch("copying prototype codes", e))?)
        } else {
            None
        };
        for (k, &i) in indices.iter().enumerate() {
            let s = &samples[i];
            let (id, set_id) = match view {
                Some(v) => (format!("{}#view{v}", s.id), Some(s.id.clone())),
                None => (s.id.clone(), sets.get(&s.id).cloned()),
            };
            out.rows.push(EmbeddingRow {
                id,
                image_id: s.image_id.clone(),
                label: s.label.clone(),
                dataset: s.dataset.clone(),
                kind: s.kind.as_str().to_string(),
                set_id,
                bbox: s.bbox.map(|[x, y, w, h]| BBox { x, y, w, h }),
                prototype: codes.as_ref().map(|c| c[k] as i32),
                embedding: flat[k * dim..(k + 1) * dim].to_vec(),
            });
        }
        Ok(())
    };
    let mut skipped = Vec::new();
    match opts.crops {
        CropMode::Views { n, seed } => {
            if n < 2 {
                return Err(Error::config(
                    "embed",
                    "views",
                    format!("needs at least 2 views per image, got {n}"),
                ));
            }
            // SwAV's augmentations (random resized crop, flip, colour jitter, blur) at the eval size.
            let cfg = MultiCropConfig {
                recipe: CropRecipe {
                    nmb_crops: vec![n],
                    size_crops: vec![i64::from(opts.size)],
                    min_scale_crops: vec![f64::from(VIEW_SCALES.0)],
                    max_scale_crops: vec![f64::from(VIEW_SCALES.1)],
                    ..MultiCropConfig::swav().recipe
                },
                ..MultiCropConfig::swav()
            };
            let lopts = LoaderOptions {
                batch_size: opts.batch_size,
                seed,
                shuffle: false,
                drop_last: false,
                threads: opts.threads,
                ..LoaderOptions::default()
            };
            let loader = MultiCropLoader::new(samples.to_vec(), cfg, lopts)?;
            for batch in loader.epoch(0) {
                skipped.extend(batch.skipped);
                if batch.indices.is_empty() {
                    continue;
                }
                for (v, crop) in batch.crops.iter().enumerate() {
                    push(crop, &batch.indices, Some(v))?;
                }
            }
        }
        CropMode::Image | CropMode::Boxes | CropMode::ObjectOnly => {
            let loader = EvalLoader::new(
                samples.to_vec(),
                EvalTransform { size: opts.size },
                opts.batch_size,
                opts.threads,
            )?
            .with_object_only(opts.crops == CropMode::ObjectOnly);
            for batch in loader.batches() {
                skipped.extend(batch.skipped);
                if batch.indices.is_empty() {
                    continue;
                }
                push(&batch.images, &batch.indices, None)?;
            }
        }
    }
    out.skipped = skipped;
    Ok(out)
}
