//! Backgrounds of composed images: the pool read from the background datasets, the random square crops
//! scenes are pasted on, and the rules that make an object-centric image's background
//! ([`ObjectBackground`]).
//!
//! Randomness: `flat-or-blur` (algorithm version 1, kept byte-identical) draws its background from the
//! image's own stream, between the object's category/instance and its scale/position. Every later rule
//! draws from a stream of its own (set stream + [`BACKGROUND_STREAM_OFFSET`]) and still makes — then
//! ignores — the draws `flat-or-blur` would have made on the image's stream, so the same seed puts the same
//! object at the same scale and place under every rule: a rule comparison changes only the background.
use std::path::Path;
use std::sync::Arc;

use image::{Rgb, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{load_rgba, resolve_dataset, Skipped, MIN_CUTOUT_SIDE};
use crate::data::confine::Root;
use crate::data::index::read_index;
use crate::error::Result;
use crate::rng::{seeded_rng, Mixing};

/// Heavy blur for object-centric backgrounds: σ as a share of the image side (≈18 px at 224), chosen so no
/// background structure survives at the object's scale — the background must not add a second object.
const BLUR_SIGMA_SHARE: f32 = 0.08;
/// Background crops take this share of the background's shorter side (a random crop, not the whole frame).
const BG_CROP_SHARE: (f64, f64) = (0.5, 1.0);
/// Backgrounds are kept in memory at most this many times the output side (shorter side), so crops keep
/// detail without holding 5000-px wallpapers.
const BG_KEEP_FACTOR: u32 = 2;
/// `flat-or-blur`: chance of a blurred background crop rather than a flat colour (when the pool has any).
const BLUR_CHANCE: f64 = 0.5;
/// `sharp-crops`: chance of a horizontal flip (the usual symmetric flip augmentation).
const FLIP_CHANCE: f64 = 0.5;
/// The background stream of an output set is its image stream plus this (image streams are 1–5), so the
/// two never coincide.
pub(super) const BACKGROUND_STREAM_OFFSET: u64 = 100;

/// How an object-centric image's background is made. Scene images are always sharp background crops.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectBackground {
    /// Half the images on a flat random colour, half on a heavily blurred crop of a pool background
    /// (σ = 8% of the side): ImageNet-like, one prominent object and no second one. The rule of every set
    /// composed before the rule was a setting (algorithm version 1).
    #[default]
    FlatOrBlur,
    /// A sharp random crop of a pool background, flipped horizontally half the time and hue-rotated by a
    /// uniform angle: the same wallpaper no longer looks the same behind objects and in scenes, so a
    /// network cannot match the two sets by wallpaper identity (issue 20's side study).
    SharpCrops,
}

impl ObjectBackground {
    /// The setting's spelling (TOML, `compose.json`, `--object-background`).
    pub fn name(self) -> &'static str {
        match self {
            ObjectBackground::FlatOrBlur => "flat-or-blur",
            ObjectBackground::SharpCrops => "sharp-crops",
        }
    }
}

impl std::fmt::Display for ObjectBackground {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub(super) struct Background {
    pub dataset: String,
    pub id: String,
    pub licence: String,
    pub image: Arc<RgbImage>,
}

/// Reads every image of the datasets `names` (resolved under `data_dir`), shrunk to at most
/// [`BG_KEEP_FACTOR`] × `size` on the shorter side. Unreadable or tiny images are listed in `skipped`.
pub(super) fn load_backgrounds(
    data_dir: &Path,
    names: &[String],
    size: u32,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Background>> {
    let mut out = Vec::new();
    for name in names {
        let dir = resolve_dataset(data_dir, name)?;
        let records = read_index(&dir)?;
        let root = Root::new(&dir);
        let results: Vec<std::result::Result<Background, Skipped>> = records
            .par_iter()
            .map(|r| {
                let path = super::record_file(&root, &r.path)?;
                let skip = |reason: String| Skipped {
                    path: path.clone(),
                    reason,
                };
                let img =
                    image::DynamicImage::ImageRgba8(load_rgba(&path).map_err(&skip)?).to_rgb8();
                let (w, h) = img.dimensions();
                if w.min(h) < MIN_CUTOUT_SIDE * 2 {
                    return Err(skip(format!("background is only {w}x{h} px")));
                }
                let keep = size * BG_KEEP_FACTOR;
                let img = if w.min(h) > keep {
                    let f = keep as f64 / w.min(h) as f64;
                    let (nw, nh) = (
                        ((w as f64 * f).round() as u32).max(1),
                        ((h as f64 * f).round() as u32).max(1),
                    );
                    image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle)
                } else {
                    img
                };
                Ok(Background {
                    dataset: name.clone(),
                    id: r.id.clone(),
                    licence: r.licence.clone(),
                    image: Arc::new(img),
                })
            })
            .collect();
        for r in results {
            match r {
                Ok(b) => out.push(b),
                Err(s) => skipped.push(s),
            }
        }
    }
    Ok(out)
}

/// Where a square crop lies on its background (px).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CropDraw {
    x: u32,
    y: u32,
    side: u32,
}

/// Draws a random square crop of a `w`×`h` background (side = share of its shorter side). The order of the
/// draws (share, x, y) is part of every composed set's bytes.
fn draw_crop(w: u32, h: u32, rng: &mut ChaCha8Rng) -> CropDraw {
    let short = w.min(h) as f64;
    let side = ((short * rng.gen_range(BG_CROP_SHARE.0..=BG_CROP_SHARE.1)).round() as u32)
        .clamp(1, w.min(h));
    let x = rng.gen_range(0..=w - side);
    let y = rng.gen_range(0..=h - side);
    CropDraw { x, y, side }
}

fn render_crop(bg: &RgbImage, c: CropDraw, size: u32) -> RgbImage {
    let crop = image::imageops::crop_imm(bg, c.x, c.y, c.side, c.side).to_image();
    image::imageops::resize(&crop, size, size, image::imageops::FilterType::Triangle)
}

/// A random square crop of `bg`, resized to `size`: a scene's background.
pub(super) fn background_crop(bg: &RgbImage, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let (w, h) = bg.dimensions();
    let c = draw_crop(w, h, rng);
    render_crop(bg, c, size)
}

/// What `flat-or-blur` drew for one image.
enum FlatOrBlurDraw {
    Flat([u8; 3]),
    Blurred { bg: usize, crop: CropDraw },
}

/// The draws of `flat-or-blur` on the image's stream, in version 1's order.
fn draw_flat_or_blur(pool: &[Background], rng: &mut ChaCha8Rng) -> FlatOrBlurDraw {
    if !pool.is_empty() && rng.gen_bool(BLUR_CHANCE) {
        let bg = rng.gen_range(0..pool.len());
        let (w, h) = pool[bg].image.dimensions();
        FlatOrBlurDraw::Blurred {
            bg,
            crop: draw_crop(w, h, rng),
        }
    } else {
        FlatOrBlurDraw::Flat([rng.gen::<u8>(), rng.gen::<u8>(), rng.gen::<u8>()])
    }
}

/// An object-centric image's background, its provenance (for the index's `source`) and its licence (none
/// for a flat colour).
pub(super) struct MadeBackground {
    pub image: RgbImage,
    pub source: String,
    pub licence: Option<String>,
}

/// Which image is asked for: the composition seed, the output set's image stream and the image index.
#[derive(Debug, Clone, Copy)]
pub(super) struct ImageKey {
    pub seed: u64,
    pub stream: u64,
    pub index: u64,
}

/// Makes the background of object-centric image `key` by `rule` from `pool`. `rng` is the image's own
/// stream: `flat-or-blur` draws from it; other rules make the same draws there (and drop them) so the
/// object's later draws do not move, and take their own from the background stream.
pub(super) fn object_background(
    rule: ObjectBackground,
    pool: &[Background],
    size: u32,
    key: ImageKey,
    rng: &mut ChaCha8Rng,
) -> MadeBackground {
    let v1 = draw_flat_or_blur(pool, rng);
    match rule {
        ObjectBackground::FlatOrBlur => match v1 {
            FlatOrBlurDraw::Blurred { bg, crop } => {
                let b = &pool[bg];
                let sharp = render_crop(&b.image, crop, size);
                MadeBackground {
                    image: imageproc::filter::gaussian_blur_f32(
                        &sharp,
                        BLUR_SIGMA_SHARE * size as f32,
                    ),
                    source: format!("blurred {}:{}", b.dataset, b.id),
                    licence: Some(b.licence.clone()),
                }
            }
            FlatOrBlurDraw::Flat(c) => MadeBackground {
                image: RgbImage::from_pixel(size, size, Rgb(c)),
                source: format!("plain #{:02x}{:02x}{:02x}", c[0], c[1], c[2]),
                licence: None,
            },
        },
        ObjectBackground::SharpCrops => {
            let mut bg_rng = seeded_rng(
                Mixing::SplitMixChain,
                key.seed,
                key.stream + BACKGROUND_STREAM_OFFSET,
                key.index,
            );
            let b = &pool[bg_rng.gen_range(0..pool.len())];
            let (w, h) = b.image.dimensions();
            let crop = draw_crop(w, h, &mut bg_rng);
            let flip = bg_rng.gen_bool(FLIP_CHANCE);
            let degrees = bg_rng.gen_range(0.0..360.0f64);
            let mut image = render_crop(&b.image, crop, size);
            if flip {
                image::imageops::flip_horizontal_in_place(&mut image);
            }
            rotate_hue(&mut image, degrees);
            MadeBackground {
                image,
                source: format!(
                    "sharp {}:{} crop={},{},{}{} hue={degrees:.0}",
                    b.dataset,
                    b.id,
                    crop.x,
                    crop.y,
                    crop.side,
                    if flip { " flipped" } else { "" }
                ),
                licence: Some(b.licence.clone()),
            }
        }
    }
}

/// Rotates every pixel's hue by `degrees` about the grey axis, keeping luminance: the `hueRotate` matrix
/// of the W3C Filter Effects spec (§ feColorMatrix; the same as CSS `filter: hue-rotate()`).
pub(super) fn rotate_hue(img: &mut RgbImage, degrees: f64) {
    let (s, c) = degrees.to_radians().sin_cos();
    // Rec. 709 luma weights (0.213, 0.715, 0.072), as the spec writes them.
    let m = [
        [
            0.213 + c * 0.787 - s * 0.213,
            0.715 - c * 0.715 - s * 0.715,
            0.072 - c * 0.072 + s * 0.928,
        ],
        [
            0.213 - c * 0.213 + s * 0.143,
            0.715 + c * 0.285 + s * 0.140,
            0.072 - c * 0.072 - s * 0.283,
        ],
        [
            0.213 - c * 0.213 - s * 0.787,
            0.715 - c * 0.715 + s * 0.715,
            0.072 + c * 0.928 + s * 0.072,
        ],
    ];
    for p in img.pixels_mut() {
        let v = p.0.map(f64::from);
        for (ch, row) in p.0.iter_mut().zip(&m) {
            *ch = (row[0] * v[0] + row[1] * v[1] + row[2] * v[2])
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
}

/// The dataset names a composition reads backgrounds from, each once: the scenes' and the object pool's.
pub(super) fn pool_datasets<'a>(
    scenes: &'a [String],
    objects: Option<&'a [String]>,
) -> Vec<&'a String> {
    let mut names: Vec<&String> = Vec::new();
    for n in scenes.iter().chain(objects.into_iter().flatten()) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hue_rotation_keeps_grey_and_turns_red_towards_green_and_blue() {
        let mut img = RgbImage::from_vec(2, 1, vec![128, 128, 128, 200, 0, 0]).unwrap();
        rotate_hue(&mut img, 0.0);
        assert_eq!(img.as_raw(), &[128, 128, 128, 200, 0, 0]);
        let mut turned = img.clone();
        rotate_hue(&mut turned, 120.0);
        // grey is on the rotation axis; pure red moves to mostly green at 120°
        assert_eq!(turned.get_pixel(0, 0).0, [128, 128, 128]);
        let [r, g, b] = turned.get_pixel(1, 0).0;
        assert!(g > r && g > b, "{:?}", [r, g, b]);
    }

    fn pool() -> Vec<Background> {
        let img = RgbImage::from_fn(80, 60, |x, y| Rgb([(x * 3) as u8, (y * 4) as u8, 50]));
        vec![Background {
            dataset: "walls".into(),
            id: "w".into(),
            licence: "CC0-1.0".into(),
            image: Arc::new(img),
        }]
    }

    // The image's own stream is left where flat-or-blur leaves it, whatever the rule.
    #[test]
    fn every_rule_leaves_the_image_stream_at_the_same_draw() {
        let key = ImageKey {
            seed: 3,
            stream: 1,
            index: 9,
        };
        let after = |rule| {
            let mut rng = ChaCha8Rng::seed_from_u64(42);
            object_background(rule, &pool(), 32, key, &mut rng);
            rng.gen::<u64>()
        };
        assert_eq!(
            after(ObjectBackground::FlatOrBlur),
            after(ObjectBackground::SharpCrops)
        );
    }
}
