//! The controlled object-centric / scene pair (Purushwalkam & Gupta 2020, §5): from the SAME object cut-outs
//! (RGBA, alpha = object mask) build an ImageNet-like set (one large centred object per image) and a
//! scene set (2–5 small objects of at least two categories pasted onto real scene backgrounds), each with
//! exact COCO boxes of the *visible* object pixels, per-image masks, and held-out splits by object instance.
//!
//! # Output (four normalised datasets under `out`)
//! `<prefix>-objects-train`, `<prefix>-objects-test`, `<prefix>-scenes-train`, `<prefix>-scenes-test`, each
//! `images/<label or _scene>/<id>.jpg` + `index.parquet` + `annotations.json` (COCO instances) +
//! `masks/<id>.png`. A mask is an 8-bit grey PNG the size of the image: 0 = background, `v` = the visible
//! pixels of the object whose annotation has `segmentation = {"mask": "masks/<id>.png", "value": v}`
//! (the JSON's `info.mask_format` says the same). The train and test datasets never share a cut-out
//! (`instance` in each annotation); backgrounds are not split (they carry no label).
//!
//! Randomness: every image has its own ChaCha8 stream seeded from (seed, split stream, image index), so the
//! bytes do not depend on the rayon thread count; backgrounds of object-centric images other than
//! `flat-or-blur` draw from a background stream of their own (see [`ObjectBackground`]).
//!
//! Versioning: each set's `compose.json` records its settings and the algorithm version that composed it
//! ([`ALGORITHM`]); a later `compose` reuses a set only when both still hold (see [`unchanged_since`]).
mod background;
mod record;

pub use background::ObjectBackground;
pub use record::{recorded_algorithm, unchanged_since, ALGORITHM, COMPOSE_FILE};

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{GrayImage, Luma, RgbImage, RgbaImage};
use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::data::coco::{CocoAnnotation, CocoCategory, CocoDataset, CocoImage};
use crate::data::confine::Root;
use crate::data::index::{read_index, write_index, ImageRecord, IMAGES_DIR};
use crate::data::kind::DatasetKind;
use crate::error::{Error, IoContext, Result};
use crate::report::io::write_bytes_atomic;
use crate::rng::{seeded_rng, Mixing};
use background::{
    background_crop, load_backgrounds, object_background, pool_datasets, Background, ImageKey,
};

pub const ANNOTATIONS_FILE: &str = "annotations.json";
pub const MASKS_DIR: &str = "masks";
/// Image-level label folder of scene images (they have no single category).
pub const SCENE_LABEL: &str = "_scene";

/// Object-centric: the object's longer side covers this share of the image side (task spec: ~40–70%,
/// ImageNet-like single prominent object).
const OBJECT_SCALE: (f64, f64) = (0.40, 0.70);
/// Object-centric: centre jitter as a share of the image side (task spec: "small jitter").
const OBJECT_JITTER: f64 = 0.05;
/// Scene: each object's longer side covers this share of the image side (task spec: ≈10–35%).
const SCENE_SCALE: (f64, f64) = (0.10, 0.35);
/// Scene: number of pasted objects per image, inclusive (task spec: 2–5).
const SCENE_OBJECTS: (usize, usize) = (2, 5);
/// Cut-outs smaller than this (longer side, px, after trimming to the mask) are skipped as unusable.
const MIN_CUTOUT_SIDE: u32 = 8;
/// Cut-out alpha below this is treated as fully transparent (set to 0 before trimming and after every
/// resize): tuxpaint-stamps-default carries faint alpha noise and shadows (alpha 1–15 is ~6% of the
/// non-zero alpha pixels in a 1-in-5 sample of the package, measured 2026-11-28) that would inflate boxes
/// with pixels no one can see (< 6% opacity).
const ALPHA_FLOOR: u8 = 16;
/// JPEG quality of the composed images (libjpeg's "high quality" range; masks are lossless PNG).
const JPEG_QUALITY: u8 = 95;
/// Retries for a scene whose occlusions left fewer than two visible categories (same rng stream).
const SCENE_RETRIES: usize = 32;

/// Random streams, one per output set, so the four sets draw independent numbers from one seed.
const STREAM_OBJECTS_TRAIN: u64 = 1;
const STREAM_OBJECTS_TEST: u64 = 2;
const STREAM_SCENES_TRAIN: u64 = 3;
const STREAM_SCENES_TEST: u64 = 4;
const STREAM_SPLIT: u64 = 5;

/// What to compose. `Default` is the CLI's default. An experiment's `[prepare.compose]` table is this
/// type too: there every key but `seed` (default 0), `test_fraction` (default 0.2), `object_background`
/// (default `flat-or-blur`) and `object_backgrounds` (default: `backgrounds`) is required, and `force` is
/// not a key (an experiment never rebuilds a composed pair).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeConfig {
    /// Normalised dataset (name under the data dir, or a directory) of RGBA cut-outs.
    pub objects: String,
    /// Normalised scene datasets whose images serve as backgrounds.
    pub backgrounds: Vec<String>,
    /// Object-centric images in total (train + test).
    pub n_object: usize,
    /// Scene images in total (train + test).
    pub n_scene: usize,
    /// Output side in pixels (square images; 224 = the SwAV/ImageNet training resolution).
    pub size: u32,
    #[serde(default)]
    pub seed: u64,
    /// Share of each category's cut-outs (and of the images) held out for test.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Output dataset names start with this.
    pub prefix: String,
    /// How object-centric images get their background (scenes always sit on sharp background crops).
    #[serde(default)]
    pub object_background: ObjectBackground,
    /// Scene datasets whose images serve as object-centric backgrounds; absent = `backgrounds`, the
    /// scenes' own. Written as `null` in `compose.json` when absent.
    #[serde(default)]
    pub object_backgrounds: Option<Vec<String>>,
    /// Rebuild even when the outputs exist.
    #[serde(skip)]
    pub force: bool,
}

fn default_test_fraction() -> f64 {
    // 80/20 per category (task spec).
    0.2
}

impl Default for ComposeConfig {
    fn default() -> Self {
        Self {
            objects: "tuxpaint-stamps".into(),
            backgrounds: vec!["mate-backgrounds".into()],
            n_object: 1000,
            n_scene: 1000,
            // SwAV / ImageNet training resolution (Caron et al. 2020).
            size: 224,
            seed: 0,
            test_fraction: default_test_fraction(),
            prefix: "compose".into(),
            object_background: ObjectBackground::default(),
            object_backgrounds: None,
            force: false,
        }
    }
}

impl ComposeConfig {
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, reason: String| Err(Error::config("compose options", field, reason));
        if self.size < 32 {
            return bad(
                "size",
                format!("{} px is too small (minimum 32)", self.size),
            );
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            return bad(
                "test_fraction",
                format!("{} is not in [0, 1)", self.test_fraction),
            );
        }
        if self.prefix.is_empty()
            || self.prefix.contains(['/', '\\'])
            || self.prefix.starts_with('.')
        {
            return bad(
                "prefix",
                format!("`{}` is not a plain directory name", self.prefix),
            );
        }
        if self.n_scene > 0 && self.backgrounds.is_empty() {
            return bad(
                "backgrounds",
                "scene images need at least one background dataset".into(),
            );
        }
        if self.object_background == ObjectBackground::SharpCrops
            && self.n_object > 0
            && self.object_pool().is_empty()
        {
            return bad(
                "object_backgrounds",
                "object_background = sharp-crops needs at least one background dataset".into(),
            );
        }
        Ok(())
    }

    /// The background datasets of the object-centric images: `object_backgrounds`, else `backgrounds`.
    pub fn object_pool(&self) -> &[String] {
        self.object_backgrounds
            .as_deref()
            .unwrap_or(&self.backgrounds)
    }

    /// The four output dataset names: objects-train, objects-test, scenes-train, scenes-test.
    pub fn output_names(&self) -> [String; 4] {
        let p = &self.prefix;
        [
            format!("{p}-objects-train"),
            format!("{p}-objects-test"),
            format!("{p}-scenes-train"),
            format!("{p}-scenes-test"),
        ]
    }
}

/// An input file that could not be used; it is counted and listed, never aborts the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// One written output dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposedSet {
    pub name: String,
    pub dir: PathBuf,
    pub n_images: usize,
    pub n_annotations: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComposeSummary {
    /// True when every output existed and `force` was off: nothing was written.
    pub already_present: bool,
    pub sets: Vec<ComposedSet>,
    pub skipped: Vec<Skipped>,
    pub n_cutouts_train: usize,
    pub n_cutouts_test: usize,
    /// Scene backgrounds read.
    pub n_backgrounds: usize,
    /// Object-centric backgrounds read (the same images as the scenes' unless `object_backgrounds`).
    pub n_object_backgrounds: usize,
    pub n_categories: usize,
}

/// The one place compose reads images: through the loader's decoder, so that a cut-out compose accepts
/// is one the trainer can read.
pub(crate) fn load_rgba(path: &Path) -> std::result::Result<RgbaImage, String> {
    // Same format sniffing, EXIF orientation and decompression-bomb limits as the loader.
    crate::data::decode::decode_rgba(path, &crate::data::decode::DecodeLimits::default())
        .map_err(|skip| skip.reason.to_string())
}

/// A usable cut-out: trimmed to its mask's bounding box, at most `size` px on its longer side.
#[derive(Debug, Clone)]
pub struct Cutout {
    pub id: String,
    pub label: String,
    pub licence: String,
    pub image: Arc<RgbaImage>,
}

/// One pasted layer, already at its final size; `(x, y)` is its top-left corner on the canvas.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    pub image: &'a RgbaImage,
    pub x: i64,
    pub y: i64,
}

/// The visible part of one layer after every later layer was pasted: tight box of its mask pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisibleBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// Visible mask pixels.
    pub area: u64,
}

/// The result of [`paste_layers`]: the RGB image, the label mask (0 = background, `i + 1` = layer `i`) and
/// each layer's visible box (`None` when later layers cover it completely).
#[derive(Debug, Clone)]
pub struct Composite {
    pub image: RgbImage,
    pub mask: GrayImage,
    pub visible: Vec<Option<VisibleBox>>,
}

/// Alpha-composites `layers` in order onto `background`. A pixel belongs to the last layer whose alpha > 0
/// there (a later paste occludes earlier ones); boxes and areas are computed from that label mask, so they
/// are exactly the visible object pixels. Layers may extend past the canvas (clipped). At most 255 layers.
pub fn paste_layers(background: RgbImage, layers: &[Layer<'_>]) -> Result<Composite> {
    if layers.len() > u8::MAX as usize {
        return Err(Error::Invalid(format!(
            "{} layers exceed the 255 a u8 mask can label",
            layers.len()
        )));
    }
    let mut image = background;
    let (cw, ch) = image.dimensions();
    let mut mask = GrayImage::new(cw, ch);
    for (li, layer) in layers.iter().enumerate() {
        let value = (li + 1) as u8;
        let (lw, lh) = layer.image.dimensions();
        for ly in 0..lh {
            let cy = layer.y + ly as i64;
            if cy < 0 || cy >= ch as i64 {
                continue;
            }
            for lx in 0..lw {
                let cx = layer.x + lx as i64;
                if cx < 0 || cx >= cw as i64 {
                    continue;
                }
                let p = layer.image.get_pixel(lx, ly).0;
                if p[3] == 0 {
                    continue;
                }
                let a = p[3] as f32 / 255.0;
                let dst = image.get_pixel_mut(cx as u32, cy as u32);
                for c in 0..3 {
                    dst.0[c] = (a * p[c] as f32 + (1.0 - a) * dst.0[c] as f32).round() as u8;
                }
                mask.put_pixel(cx as u32, cy as u32, Luma([value]));
            }
        }
    }
    let visible = mask_boxes(&mask, layers.len());
    Ok(Composite {
        image,
        mask,
        visible,
    })
}

/// Tight boxes and pixel counts of mask values 1..=n.
pub fn mask_boxes(mask: &GrayImage, n: usize) -> Vec<Option<VisibleBox>> {
    // (min_x, min_y, max_x, max_y, count)
    let mut acc: Vec<Option<(u32, u32, u32, u32, u64)>> = vec![None; n];
    for (x, y, p) in mask.enumerate_pixels() {
        let v = p.0[0] as usize;
        if v == 0 || v > n {
            continue;
        }
        let e = acc[v - 1].get_or_insert((x, y, x, y, 0));
        e.0 = e.0.min(x);
        e.1 = e.1.min(y);
        e.2 = e.2.max(x);
        e.3 = e.3.max(y);
        e.4 += 1;
    }
    acc.into_iter()
        .map(|e| {
            e.map(|(x0, y0, x1, y1, area)| VisibleBox {
                x: x0,
                y: y0,
                w: x1 - x0 + 1,
                h: y1 - y0 + 1,
                area,
            })
        })
        .collect()
}

/// Seeded held-out split by object instance: per category, `round(n · test_fraction)` cut-out ids go to
/// test (at least one when the category has ≥ 2 cut-outs and the fraction is > 0, never all of them).
/// Returns the test ids. Depends only on (seed, the ids and labels), not on input order.
pub fn split_instances(
    cutouts: &[(String, String)],
    test_fraction: f64,
    seed: u64,
) -> HashSet<String> {
    let mut by_label: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, label) in cutouts {
        by_label.entry(label).or_default().push(id);
    }
    let mut test = HashSet::new();
    for (label, mut ids) in by_label {
        ids.sort_unstable();
        ids.dedup();
        let n = ids.len();
        let mut n_test = (n as f64 * test_fraction).round() as usize;
        if test_fraction > 0.0 && n >= 2 {
            n_test = n_test.max(1);
        }
        n_test = n_test.min(n.saturating_sub(1));
        let digest = Sha256::digest(label.as_bytes());
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        let mut rng = seeded_rng(Mixing::RawKey, seed, STREAM_SPLIT, u64::from_le_bytes(word));
        ids.shuffle(&mut rng);
        test.extend(ids[..n_test].iter().map(|s| s.to_string()));
    }
    test
}

/// Resolves a dataset argument to a directory: a directory as given (relative, absolute, with or without a
/// trailing slash; normalised with `index.parquet`, an ImageFolder tree or a flat folder, which
/// `source::samples_from_dir` indexes on the fly), else `<data_dir>/<name>`. An unknown name is an error
/// that suggests the closest dataset under the data dir or among the manifests ("did you mean").
pub fn resolve_dataset(data_dir: &Path, name: &str) -> Result<PathBuf> {
    let as_path = Path::new(name);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    let dir = data_dir.join(name);
    if dir.is_dir() {
        return Ok(dir);
    }
    let registered = crate::data::manifest::embedded_names();
    if registered.iter().any(|n| n == name) {
        // A registry name whose folder is missing: the user has to fetch it, not correct the spelling.
        return Err(Error::NotFetched {
            name: name.to_string(),
            dir: dir.display().to_string(),
        });
    }
    let mut known: Vec<String> = std::fs::read_dir(data_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    known.extend(registered);
    let hint = crate::data::manifest::did_you_mean(name, &known)
        .map(|m| format!("; did you mean `{m}`?"))
        .unwrap_or_default();
    Err(Error::UnknownDataset(format!(
        "{name}: no directory {name} nor {}{hint}",
        dir.display()
    )))
}

/// Trims to the alpha > 0 bounding box and shrinks so the longer side is at most `max_side`.
fn prepare_cutout(mut img: RgbaImage, max_side: u32) -> std::result::Result<RgbaImage, String> {
    if img.pixels().all(|p| p.0[3] == 255) {
        return Err("no transparent pixels: not a cut-out (alpha must be the object mask)".into());
    }
    floor_alpha(&mut img);
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p.0[3] > 0 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x0 == u32::MAX {
        return Err("fully transparent".into());
    }
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    if w.max(h) < MIN_CUTOUT_SIDE {
        return Err(format!("object is only {w}x{h} px"));
    }
    let trimmed = image::imageops::crop_imm(&img, x0, y0, w, h).to_image();
    let long = w.max(h);
    if long <= max_side {
        return Ok(trimmed);
    }
    let f = max_side as f64 / long as f64;
    let (nw, nh) = (
        ((w as f64 * f).round() as u32).max(1),
        ((h as f64 * f).round() as u32).max(1),
    );
    let mut small =
        image::imageops::resize(&trimmed, nw, nh, image::imageops::FilterType::Triangle);
    floor_alpha(&mut small);
    Ok(small)
}

/// Zeroes alpha below [`ALPHA_FLOOR`] so invisible pixels neither blend nor count as object.
fn floor_alpha(img: &mut RgbaImage) {
    for p in img.pixels_mut() {
        if p.0[3] < ALPHA_FLOOR {
            p.0[3] = 0;
        }
    }
}

/// The file of an index record's `path` under dataset `root`; a path leading out of the dataset (absolute,
/// `..`, a symlink out) is the skip that lists it, never opened (data::confine).
fn record_file(root: &Root, path: &str) -> std::result::Result<PathBuf, Skipped> {
    root.join(path).map_err(|why| Skipped {
        path: root.dir().join(path),
        reason: why.to_string(),
    })
}

fn load_cutouts(dir: &Path, size: u32, skipped: &mut Vec<Skipped>) -> Result<Vec<Cutout>> {
    let records = read_index(dir)?;
    let root = Root::new(dir);
    let results: Vec<std::result::Result<Cutout, Skipped>> = records
        .par_iter()
        .map(|r| {
            let path = record_file(&root, &r.path)?;
            let skip = |reason: String| Skipped {
                path: path.clone(),
                reason,
            };
            let label = r
                .label
                .clone()
                .ok_or_else(|| skip("no label (cut-outs need a category)".into()))?;
            let img = load_rgba(&path).map_err(&skip)?;
            let img = prepare_cutout(img, size).map_err(&skip)?;
            Ok(Cutout {
                id: r.id.clone(),
                label,
                licence: r.licence.clone(),
                image: Arc::new(img),
            })
        })
        .collect();
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(c) => out.push(c),
            Err(s) => skipped.push(s),
        }
    }
    Ok(out)
}

/// Scales a cut-out so its longer side is `share · size` px.
fn scale_cutout(c: &RgbaImage, share: f64, size: u32) -> RgbaImage {
    let (w, h) = c.dimensions();
    let f = share * size as f64 / w.max(h) as f64;
    let (nw, nh) = (
        ((w as f64 * f).round() as u32).max(1),
        ((h as f64 * f).round() as u32).max(1),
    );
    let mut out = image::imageops::resize(c, nw, nh, image::imageops::FilterType::Triangle);
    floor_alpha(&mut out);
    out
}

/// One composed image before it is written: pixels, mask and the annotations of its visible objects.
struct Composed {
    record: ImageRecord,
    image: RgbImage,
    mask: GrayImage,
    /// (mask value, cut-out index, visible box)
    objects: Vec<(u8, usize, VisibleBox)>,
}

struct SetSpec<'a> {
    name: String,
    kind: DatasetKind,
    stream: u64,
    n: usize,
    cutouts: Vec<&'a Cutout>,
}

struct Inputs<'a> {
    objects_name: &'a str,
    /// The scenes' backgrounds.
    backgrounds: &'a [Background],
    /// The object-centric images' backgrounds and how they are made of them.
    object_pool: &'a [Background],
    object_background: ObjectBackground,
    size: u32,
    seed: u64,
}

fn licence_of(parts: impl IntoIterator<Item = String>) -> String {
    parts
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn make_object_image(
    inp: &Inputs<'_>,
    spec: &SetSpec<'_>,
    by_label: &BTreeMap<&str, Vec<usize>>,
    i: usize,
) -> Result<Composed> {
    let mut rng = seeded_rng(Mixing::RawKey, inp.seed, spec.stream, i as u64);
    let size = inp.size;
    // Category first, then instance: classes stay balanced like ImageNet's.
    let labels: Vec<&&str> = by_label.keys().collect();
    let label = *labels[rng.gen_range(0..labels.len())];
    let members = &by_label[label];
    let ci = members[rng.gen_range(0..members.len())];
    let cut = spec.cutouts[ci];
    let bg = object_background(
        inp.object_background,
        inp.object_pool,
        size,
        ImageKey {
            seed: inp.seed,
            stream: spec.stream,
            index: i as u64,
        },
        &mut rng,
    );
    let scaled = scale_cutout(
        &cut.image,
        rng.gen_range(OBJECT_SCALE.0..=OBJECT_SCALE.1),
        size,
    );
    let (w, h) = scaled.dimensions();
    let jitter = OBJECT_JITTER * size as f64;
    let x = ((size as f64 - w as f64) / 2.0 + rng.gen_range(-jitter..=jitter)).round() as i64;
    let y = ((size as f64 - h as f64) / 2.0 + rng.gen_range(-jitter..=jitter)).round() as i64;
    let x = x.clamp(0, (size - w.min(size)) as i64);
    let y = y.clamp(0, (size - h.min(size)) as i64);
    let comp = paste_layers(
        bg.image,
        &[Layer {
            image: &scaled,
            x,
            y,
        }],
    )?;
    let vb = comp.visible[0]
        .ok_or_else(|| Error::Invalid(format!("cut-out {} left no visible pixel", cut.id)))?;
    let id = format!("{}-{:06}", spec.name, i);
    Ok(Composed {
        record: ImageRecord {
            path: format!("{IMAGES_DIR}/{}/{id}.jpg", cut.label),
            id,
            label: Some(cut.label.clone()),
            kind: spec.kind,
            width: size,
            height: size,
            source: format!(
                "biaslab compose seed={};objects={}:{};background={}",
                inp.seed, inp.objects_name, cut.id, bg.source
            ),
            licence: licence_of(std::iter::once(cut.licence.clone()).chain(bg.licence)),
        },
        image: comp.image,
        mask: comp.mask,
        objects: vec![(1, ci, vb)],
    })
}

fn make_scene_image(
    inp: &Inputs<'_>,
    spec: &SetSpec<'_>,
    by_label: &BTreeMap<&str, Vec<usize>>,
    i: usize,
) -> Result<Composed> {
    let mut rng = seeded_rng(Mixing::RawKey, inp.seed, spec.stream, i as u64);
    let size = inp.size;
    let labels: Vec<&str> = by_label.keys().copied().collect();
    for _ in 0..SCENE_RETRIES {
        let b = &inp.backgrounds[rng.gen_range(0..inp.backgrounds.len())];
        let bg = background_crop(&b.image, size, &mut rng);
        let k = rng.gen_range(SCENE_OBJECTS.0..=SCENE_OBJECTS.1);
        // Two distinct categories first (collapse across crops needs them), then any.
        let mut cats: Vec<&str> = labels.choose_multiple(&mut rng, 2).copied().collect();
        while cats.len() < k {
            cats.push(labels[rng.gen_range(0..labels.len())]);
        }
        cats.shuffle(&mut rng);
        let picks: Vec<usize> = cats
            .iter()
            .map(|c| {
                let m = &by_label[c];
                m[rng.gen_range(0..m.len())]
            })
            .collect();
        let scaled: Vec<RgbaImage> = picks
            .iter()
            .map(|&ci| {
                scale_cutout(
                    &spec.cutouts[ci].image,
                    rng.gen_range(SCENE_SCALE.0..=SCENE_SCALE.1),
                    size,
                )
            })
            .collect();
        let layers: Vec<Layer<'_>> = scaled
            .iter()
            .map(|s| {
                let (w, h) = s.dimensions();
                let x = rng.gen_range(0..=size.saturating_sub(w)) as i64;
                let y = rng.gen_range(0..=size.saturating_sub(h)) as i64;
                Layer { image: s, x, y }
            })
            .collect();
        let comp = paste_layers(bg, &layers)?;
        let objects: Vec<(u8, usize, VisibleBox)> = comp
            .visible
            .iter()
            .enumerate()
            .filter_map(|(li, v)| v.map(|vb| ((li + 1) as u8, picks[li], vb)))
            .collect();
        let visible_cats: BTreeSet<&str> = objects
            .iter()
            .map(|o| spec.cutouts[o.1].label.as_str())
            .collect();
        if objects.len() < SCENE_OBJECTS.0 || visible_cats.len() < 2 {
            continue;
        }
        let id = format!("{}-{:06}", spec.name, i);
        let ids: Vec<&str> = objects
            .iter()
            .map(|o| spec.cutouts[o.1].id.as_str())
            .collect();
        return Ok(Composed {
            record: ImageRecord {
                path: format!("{IMAGES_DIR}/{SCENE_LABEL}/{id}.jpg"),
                id,
                label: None,
                kind: spec.kind,
                width: size,
                height: size,
                source: format!(
                    "biaslab compose seed={};objects={}:{};background={}:{}",
                    inp.seed,
                    inp.objects_name,
                    ids.join(","),
                    b.dataset,
                    b.id
                ),
                licence: licence_of(
                    objects
                        .iter()
                        .map(|o| spec.cutouts[o.1].licence.clone())
                        .chain([b.licence.clone()]),
                ),
            },
            image: comp.image,
            mask: comp.mask,
            objects,
        });
    }
    Err(Error::Invalid(format!(
        "{}: image {i}: no placement with two visible categories after {SCENE_RETRIES} tries",
        spec.name
    )))
}

fn encode_jpeg(img: &RgbImage, path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, JPEG_QUALITY)
        .encode_image(img)
        .map_err(|e| Error::format(path, format!("cannot encode JPEG: {e}")))?;
    Ok(buf)
}

fn encode_png(img: &GrayImage, path: &Path) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| Error::format(path, format!("cannot encode PNG: {e}")))?;
    Ok(buf.into_inner())
}

/// Builds one output set into `dir` (a fresh `.partial` directory).
fn build_set(
    inp: &Inputs<'_>,
    spec: &SetSpec<'_>,
    categories: &BTreeMap<String, u64>,
    dir: &Path,
) -> Result<ComposedSet> {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (ci, c) in spec.cutouts.iter().enumerate() {
        by_label.entry(c.label.as_str()).or_default().push(ci);
    }
    let need = if spec.kind == DatasetKind::Scene {
        2
    } else {
        1
    };
    if spec.n > 0 && by_label.len() < need {
        return Err(Error::config(
            "compose options",
            "objects",
            format!(
                "{}: needs cut-outs of at least {need} categories, found {}",
                spec.name,
                by_label.len()
            ),
        ));
    }
    let composed: Vec<Composed> = (0..spec.n)
        .into_par_iter()
        .map(|i| {
            let c = if spec.kind == DatasetKind::Scene {
                make_scene_image(inp, spec, &by_label, i)?
            } else {
                make_object_image(inp, spec, &by_label, i)?
            };
            let img_path = dir.join(&c.record.path);
            if let Some(parent) = img_path.parent() {
                std::fs::create_dir_all(parent).ctx_io(parent)?;
            }
            std::fs::write(&img_path, encode_jpeg(&c.image, &img_path)?).ctx_io(&img_path)?;
            let mask_path = dir.join(MASKS_DIR).join(format!("{}.png", c.record.id));
            std::fs::write(&mask_path, encode_png(&c.mask, &mask_path)?).ctx_io(&mask_path)?;
            Ok(c)
        })
        .collect::<Result<_>>()?;

    let mut coco = CocoDataset {
        categories: categories
            .iter()
            .map(|(name, &id)| CocoCategory {
                id,
                name: name.clone(),
                supercategory: None,
            })
            .collect(),
        ..Default::default()
    };
    for (i, c) in composed.iter().enumerate() {
        let image_id = i as u64 + 1;
        coco.images.push(CocoImage {
            id: image_id,
            file_name: c.record.path.clone(),
            width: c.record.width,
            height: c.record.height,
        });
        for &(value, ci, vb) in &c.objects {
            let cut = spec.cutouts[ci];
            coco.annotations.push(CocoAnnotation {
                id: coco.annotations.len() as u64 + 1,
                image_id,
                category_id: categories[&cut.label],
                bbox: [vb.x as f64, vb.y as f64, vb.w as f64, vb.h as f64],
                area: vb.area as f64,
                iscrowd: 0,
                segmentation: Some(json!({
                    "mask": format!("{MASKS_DIR}/{}.png", c.record.id),
                    "value": value,
                })),
                instance: Some(cut.id.clone()),
            });
        }
    }
    let json_path = dir.join(ANNOTATIONS_FILE);
    coco.validate(&json_path)?;
    let mut value =
        serde_json::to_value(&coco).map_err(|e| Error::format(&json_path, e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "info".into(),
            json!({
                "description": format!("biaslab compose: {} ({}), seed {}", spec.name, spec.kind, inp.seed),
                "mask_format": "segmentation = {\"mask\": PNG path relative to this file, \"value\": v}: the \
                    object's visible pixels are those equal to v in that 8-bit grey PNG (0 = background); \
                    bbox and area are computed from exactly these pixels",
                "instance": "the cut-out id (objects dataset index) that was pasted; train and test never share one",
            }),
        );
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| Error::format(&json_path, e.to_string()))?;
    write_bytes_atomic(&json_path, &bytes)?;
    let records: Vec<ImageRecord> = composed.iter().map(|c| c.record.clone()).collect();
    write_index(dir, &records)?;
    Ok(ComposedSet {
        name: spec.name.clone(),
        dir: dir.to_path_buf(),
        n_images: composed.len(),
        n_annotations: coco.annotations.len(),
    })
}

/// Composes the four datasets (see the module docs) from `cfg.objects` and `cfg.backgrounds` found under
/// `data_dir` into `out_dir`. Skips when all four exist unless `cfg.force`. Each set is built in
/// `<out>/.<name>.partial` and renamed into place only when all four are complete.
pub fn compose(data_dir: &Path, out_dir: &Path, cfg: &ComposeConfig) -> Result<ComposeSummary> {
    cfg.validate()?;
    let names = cfg.output_names();
    let finals: Vec<PathBuf> = names.iter().map(|n| out_dir.join(n)).collect();
    if !cfg.force
        && finals
            .iter()
            .all(|d| d.join(crate::data::index::INDEX_FILE).is_file())
    {
        record::check_present(cfg, &finals)?;
        return Ok(ComposeSummary {
            already_present: true,
            sets: names
                .iter()
                .zip(&finals)
                .map(|(n, d)| ComposedSet {
                    name: n.clone(),
                    dir: d.clone(),
                    n_images: 0,
                    n_annotations: 0,
                })
                .collect(),
            ..Default::default()
        });
    }
    let mut skipped = Vec::new();
    let objects_dir = resolve_dataset(data_dir, &cfg.objects)?;
    let cutouts = load_cutouts(&objects_dir, cfg.size, &mut skipped)?;
    // Each background dataset is read once, whichever pools name it.
    let mut by_dataset: BTreeMap<&String, Vec<Background>> = BTreeMap::new();
    for name in pool_datasets(&cfg.backgrounds, cfg.object_backgrounds.as_deref()) {
        let pool = load_backgrounds(data_dir, std::slice::from_ref(name), cfg.size, &mut skipped)?;
        by_dataset.insert(name, pool);
    }
    let pool_of = |names: &[String]| -> Vec<Background> {
        names
            .iter()
            .flat_map(|n| by_dataset[n].iter().cloned())
            .collect()
    };
    let backgrounds = pool_of(&cfg.backgrounds);
    let object_pool = pool_of(cfg.object_pool());
    if cfg.n_scene > 0 && backgrounds.is_empty() {
        return Err(Error::config(
            "compose options",
            "backgrounds",
            "no readable background image",
        ));
    }
    if cfg.object_background == ObjectBackground::SharpCrops
        && cfg.n_object > 0
        && object_pool.is_empty()
    {
        return Err(Error::config(
            "compose options",
            "object_backgrounds",
            "no readable background image for object_background = sharp-crops",
        ));
    }
    let pairs: Vec<(String, String)> = cutouts
        .iter()
        .map(|c| (c.id.clone(), c.label.clone()))
        .collect();
    let test_ids = split_instances(&pairs, cfg.test_fraction, cfg.seed);
    let (test_cuts, train_cuts): (Vec<&Cutout>, Vec<&Cutout>) =
        cutouts.iter().partition(|c| test_ids.contains(&c.id));
    // Category ids: 1-based, alphabetical over all cut-outs, identical in all four sets.
    let categories: BTreeMap<String, u64> = cutouts
        .iter()
        .map(|c| c.label.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, i as u64 + 1))
        .collect();
    let n_test = |n: usize| (n as f64 * cfg.test_fraction).round() as usize;
    let specs = [
        (
            DatasetKind::Object,
            STREAM_OBJECTS_TRAIN,
            cfg.n_object - n_test(cfg.n_object),
            &train_cuts,
        ),
        (
            DatasetKind::Object,
            STREAM_OBJECTS_TEST,
            n_test(cfg.n_object),
            &test_cuts,
        ),
        (
            DatasetKind::Scene,
            STREAM_SCENES_TRAIN,
            cfg.n_scene - n_test(cfg.n_scene),
            &train_cuts,
        ),
        (
            DatasetKind::Scene,
            STREAM_SCENES_TEST,
            n_test(cfg.n_scene),
            &test_cuts,
        ),
    ];
    let inputs = Inputs {
        objects_name: &cfg.objects,
        backgrounds: &backgrounds,
        object_pool: &object_pool,
        object_background: cfg.object_background,
        size: cfg.size,
        seed: cfg.seed,
    };
    std::fs::create_dir_all(out_dir).ctx_io(out_dir)?;
    let mut partials = Vec::new();
    let mut sets = Vec::new();
    for ((kind, stream, n, cuts), name) in specs.into_iter().zip(&names) {
        let partial = out_dir.join(format!(".{name}.partial"));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).ctx_io(&partial)?;
        }
        std::fs::create_dir_all(partial.join(MASKS_DIR)).ctx_io(&partial)?;
        std::fs::create_dir_all(partial.join(IMAGES_DIR)).ctx_io(&partial)?;
        let spec = SetSpec {
            name: name.clone(),
            kind,
            stream,
            n,
            cutouts: cuts.clone(),
        };
        sets.push(build_set(&inputs, &spec, &categories, &partial)?);
        write_bytes_atomic(&partial.join(COMPOSE_FILE), &record::record_bytes(cfg)?)?;
        partials.push(partial);
    }
    for ((partial, fin), set) in partials.iter().zip(&finals).zip(sets.iter_mut()) {
        if fin.exists() {
            std::fs::remove_dir_all(fin).ctx_io(fin)?;
        }
        std::fs::rename(partial, fin).ctx_io(fin)?;
        set.dir = fin.clone();
    }
    Ok(ComposeSummary {
        already_present: false,
        sets,
        skipped,
        n_cutouts_train: train_cuts.len(),
        n_cutouts_test: test_cuts.len(),
        n_backgrounds: backgrounds.len(),
        n_object_backgrounds: object_pool.len(),
        n_categories: categories.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    // An experiment's `[prepare.compose]` table is a ComposeConfig: its keys, its defaults, no `force`.
    #[test]
    fn experiment_compose_table_reads_as_compose_config() {
        let table = "objects = \"tuxpaint-stamps\"\nbackgrounds = [\"mate-backgrounds\"]\n\
                     n_object = 400\nn_scene = 400\nsize = 128\nprefix = \"demo\"\n";
        let c: ComposeConfig = toml::from_str(table).unwrap();
        assert_eq!(
            c,
            ComposeConfig {
                n_object: 400,
                n_scene: 400,
                size: 128,
                prefix: "demo".into(),
                ..ComposeConfig::default()
            }
        );
        for bad in [
            format!("{table}force = true\n"),
            table.replace("prefix = \"demo\"\n", ""),
        ] {
            assert!(toml::from_str::<ComposeConfig>(&bad).is_err(), "{bad}");
        }
    }

    fn square(side: u32, alpha: u8) -> RgbaImage {
        RgbaImage::from_pixel(side, side, image::Rgba([200, 10, 10, alpha]))
    }

    #[test]
    fn later_layer_shrinks_earlier_box() {
        let a = square(10, 255);
        let b = square(10, 255);
        // b covers the right half of a (columns 5..10 of a).
        let c = paste_layers(
            RgbImage::new(40, 40),
            &[
                Layer {
                    image: &a,
                    x: 0,
                    y: 0,
                },
                Layer {
                    image: &b,
                    x: 5,
                    y: 0,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            c.visible[0],
            Some(VisibleBox {
                x: 0,
                y: 0,
                w: 5,
                h: 10,
                area: 50
            })
        );
        assert_eq!(
            c.visible[1],
            Some(VisibleBox {
                x: 5,
                y: 0,
                w: 10,
                h: 10,
                area: 100
            })
        );
    }

    #[test]
    fn fully_occluded_layer_has_no_box() {
        let small = square(4, 255);
        let big = square(12, 255);
        let c = paste_layers(
            RgbImage::new(20, 20),
            &[
                Layer {
                    image: &small,
                    x: 6,
                    y: 6,
                },
                Layer {
                    image: &big,
                    x: 3,
                    y: 3,
                },
            ],
        )
        .unwrap();
        assert_eq!(c.visible[0], None);
        assert_eq!(c.visible[1].unwrap().area, 144);
    }

    #[test]
    fn transparent_pixels_neither_occlude_nor_count_and_layers_clip() {
        // A ring: opaque border, transparent centre; the earlier object shows through the hole.
        let mut ring = square(9, 255);
        for y in 3..6 {
            for x in 3..6 {
                ring.put_pixel(x, y, image::Rgba([0, 0, 0, 0]));
            }
        }
        let dot = square(3, 255);
        let c = paste_layers(
            RgbImage::new(8, 8),
            &[
                Layer {
                    image: &dot,
                    x: 3,
                    y: 3,
                },
                Layer {
                    image: &ring,
                    x: 0,
                    y: 0,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            c.visible[0],
            Some(VisibleBox {
                x: 3,
                y: 3,
                w: 3,
                h: 3,
                area: 9
            })
        );
        // The ring is clipped to the 8×8 canvas: 64 − 9 hole pixels.
        assert_eq!(
            c.visible[1],
            Some(VisibleBox {
                x: 0,
                y: 0,
                w: 8,
                h: 8,
                area: 55
            })
        );
    }

    #[test]
    fn half_transparent_paste_blends_colour() {
        let half = RgbaImage::from_pixel(1, 1, image::Rgba([200, 0, 0, 128]));
        let c = paste_layers(
            RgbImage::from_pixel(1, 1, Rgb([0, 0, 100])),
            &[Layer {
                image: &half,
                x: 0,
                y: 0,
            }],
        )
        .unwrap();
        // 128/255·200 ≈ 100.4; (1 − 128/255)·100 ≈ 49.8
        assert_eq!(c.image.get_pixel(0, 0).0, [100, 0, 50]);
    }

    #[test]
    fn split_is_per_category_seeded_and_order_free() {
        let mut cuts: Vec<(String, String)> = (0..10)
            .map(|i| (format!("cat{i}"), "cat".to_string()))
            .collect();
        cuts.extend((0..5).map(|i| (format!("dog{i}"), "dog".to_string())));
        cuts.push(("lone".into(), "fish".into()));
        let t = split_instances(&cuts, 0.2, 3);
        assert_eq!(t.iter().filter(|s| s.starts_with("cat")).count(), 2);
        assert_eq!(t.iter().filter(|s| s.starts_with("dog")).count(), 1);
        assert!(!t.contains("lone"), "a single cut-out stays in train");
        let mut rev = cuts.clone();
        rev.reverse();
        assert_eq!(split_instances(&rev, 0.2, 3), t);
        let others: Vec<_> = (0..20).map(|s| split_instances(&cuts, 0.2, s)).collect();
        assert!(others.iter().any(|o| o != &t), "the seed changes the split");
    }

    #[test]
    fn prepare_cutout_trims_to_mask_and_rejects_opaque() {
        let mut img = RgbaImage::new(50, 40);
        for y in 10..20 {
            for x in 5..35 {
                img.put_pixel(x, y, image::Rgba([1, 2, 3, 255]));
            }
        }
        assert_eq!(
            prepare_cutout(img.clone(), 100).unwrap().dimensions(),
            (30, 10)
        );
        assert_eq!(prepare_cutout(img, 15).unwrap().dimensions(), (15, 5));
        // Faint alpha noise far from the object neither survives nor widens the box.
        let mut noisy = RgbaImage::new(50, 40);
        for y in 10..20 {
            for x in 5..35 {
                noisy.put_pixel(x, y, image::Rgba([1, 2, 3, 255]));
            }
        }
        noisy.put_pixel(48, 38, image::Rgba([9, 9, 9, ALPHA_FLOOR - 1]));
        let trimmed = prepare_cutout(noisy, 100).unwrap();
        assert_eq!(trimmed.dimensions(), (30, 10));
        assert!(trimmed
            .pixels()
            .all(|p| p.0[3] == 0 || p.0[3] >= ALPHA_FLOOR));
        assert!(prepare_cutout(square(20, 255), 100).is_err());
        assert!(prepare_cutout(square(20, 0), 100).is_err());
    }
}
