//! SwAV's multi-crop (main_swav.py / src/multicropdataset.py): `nmb_crops[i]` crops of `size_crops[i]` px
//! with RandomResizedCrop scale in [`min_scale_crops[i]`, `max_scale_crops[i]`], each followed by flip,
//! colour distortion, blur (and optional solarize), then normalised to CHW f32.
use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::blur::random_gaussian_blur;
use super::color::{color_jitter, grayscale, solarize, Jitter};
use super::crop::{bbox_rect, random_resized_crop_params, CropRect, DEFAULT_RATIO};
use super::normalize::normalize_into;
use super::resize::resize_region;
use super::{hflip, ImageF32};
use crate::data::decode::PixelGrid;
use crate::error::{Error, Result};

/// The crop recipe under the SwAV reference's names, spelled as flat keys in a train TOML and a run's
/// config.json (`nmb_crops = [2, 6]`, `jitter_strength = 1.0`, …): crop groups with their RandomResizedCrop
/// scale ranges, and the colour distortion's strength and probabilities. `TrainConfig` embeds it;
/// [`MultiCropConfig`] adds what no config file sets. `Default` is the CPU demo's 2×64 + 4×32 px with the
/// paper's scales and distortions (SwAV's 2×224 + 6×96 scaled down).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CropRecipe {
    /// Crops per resolution group, e.g. [2, 6] (paper: 2×224 + 6×96).
    pub nmb_crops: Vec<usize>,
    pub size_crops: Vec<i64>,
    pub min_scale_crops: Vec<f64>,
    pub max_scale_crops: Vec<f64>,
    /// Colour-jitter strength s of the reference's `get_color_distortion(s)`: ColorJitter(0.8s, 0.8s, 0.8s,
    /// 0.2s). Both SwAV and SimCLR (ImageNet) use s = 1; SimCLR's CIFAR-10 runs use 0.5.
    pub jitter_strength: f64,
    /// `RandomApply([color_jitter], p)`.
    pub jitter_prob: f64,
    /// `RandomGrayscale(p)`.
    pub grayscale_prob: f64,
    /// `PILRandomGaussianBlur(p)`, σ ∈ [0.1, 2] px; 0 turns blur off.
    pub blur_prob: f64,
}

impl Default for CropRecipe {
    fn default() -> Self {
        CropRecipe {
            // SwAV paper multi-crop 2+6, scaled down to 2+4 for CPU
            nmb_crops: vec![2, 4],
            size_crops: vec![64, 32],
            // SwAV paper: large crops scale (0.14, 1), small crops (0.05, 0.14)
            min_scale_crops: vec![0.14, 0.05],
            max_scale_crops: vec![1.0, 0.14],
            // multicropdataset.py get_color_distortion(s=1.0), RandomApply p 0.8, RandomGrayscale p 0.2
            jitter_strength: 1.0,
            jitter_prob: 0.8,
            grayscale_prob: 0.2,
            // multicropdataset.py PILRandomGaussianBlur(p=0.5)
            blur_prob: 0.5,
        }
    }
}

impl CropRecipe {
    /// Total crops per image.
    pub fn total_crops(&self) -> usize {
        self.nmb_crops.iter().sum()
    }

    /// ColorJitter strengths of `get_color_distortion(s)`: (0.8s, 0.8s, 0.8s, 0.2s), computed in f64 as
    /// the training config always did so a run's crops do not move by an f32 rounding.
    pub fn jitter(&self) -> Jitter {
        let s = self.jitter_strength;
        Jitter {
            brightness: (0.8 * s) as f32,
            contrast: (0.8 * s) as f32,
            saturation: (0.8 * s) as f32,
            hue: (0.2 * s) as f32,
        }
    }
}

/// The multi-crop sampler's settings: a [`CropRecipe`] (flat keys) plus the distortions no config file
/// sets. `Default` is [`MultiCropConfig::swav`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiCropConfig {
    #[serde(flatten)]
    pub recipe: CropRecipe,
    /// SwAV: `PILRandomGaussianBlur(radius_min=0.1, radius_max=2.)`.
    pub blur_sigma: (f32, f32),
    /// Not in SwAV (BYOL adds it with p 0.2); 0 disables.
    pub solarize_prob: f32,
    /// torchvision RandomHorizontalFlip default p 0.5.
    pub flip_prob: f32,
}

impl Default for MultiCropConfig {
    fn default() -> Self {
        Self::swav()
    }
}

impl MultiCropConfig {
    /// The paper's 2×224 + 6×96 recipe (SwAV README, main_swav.py flags for the 75.3% ResNet-50 run).
    pub fn swav() -> Self {
        Self::with_recipe(CropRecipe {
            nmb_crops: vec![2, 6],
            size_crops: vec![224, 96],
            ..CropRecipe::default()
        })
    }

    /// `recipe` with SwAV's blur range, no solarize and torchvision's flip.
    pub fn with_recipe(recipe: CropRecipe) -> Self {
        Self {
            recipe,
            blur_sigma: (0.1, 2.0),
            solarize_prob: 0.0,
            flip_prob: 0.5,
        }
    }

    /// Two views of `size` px, scale (0.08, 1) (SimCLR paper §B / torchvision default), same distortions.
    pub fn simclr(size: u32) -> Self {
        Self::with_recipe(CropRecipe {
            nmb_crops: vec![2],
            size_crops: vec![i64::from(size)],
            min_scale_crops: vec![0.08],
            max_scale_crops: vec![1.0],
            ..CropRecipe::default()
        })
    }

    /// SwAV's scale ranges at other sizes for small CPU runs, e.g. `scaled(64, 2, 32, 4)`.
    pub fn scaled(large: u32, nmb_large: usize, small: u32, nmb_small: usize) -> Self {
        let mut r = CropRecipe {
            nmb_crops: vec![nmb_large, nmb_small],
            size_crops: vec![i64::from(large), i64::from(small)],
            ..CropRecipe::default()
        };
        if nmb_small == 0 {
            r.nmb_crops.pop();
            r.size_crops.pop();
            r.min_scale_crops.pop();
            r.max_scale_crops.pop();
        }
        Self::with_recipe(r)
    }

    /// Total crops per image.
    pub fn total_crops(&self) -> usize {
        self.recipe.total_crops()
    }

    /// The size of each crop, in output order (group 0's crops first).
    pub fn crop_sizes(&self) -> Vec<u32> {
        let r = &self.recipe;
        r.nmb_crops
            .iter()
            .zip(&r.size_crops)
            .flat_map(|(&n, &s)| std::iter::repeat_n(s as u32, n))
            .collect()
    }

    /// Checks the lists agree and every value is usable; `origin` names the config file in errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::config(origin, field, reason));
        let r = &self.recipe;
        let n = r.nmb_crops.len();
        if n == 0 {
            return bad("nmb_crops", "must list at least one crop group".into());
        }
        for (field, len) in [
            ("size_crops", r.size_crops.len()),
            ("min_scale_crops", r.min_scale_crops.len()),
            ("max_scale_crops", r.max_scale_crops.len()),
        ] {
            if len != n {
                return bad(field, format!("has {len} entries but nmb_crops has {n}"));
            }
        }
        if self.total_crops() == 0 {
            return bad("nmb_crops", "asks for zero crops in total".into());
        }
        for (i, &s) in r.size_crops.iter().enumerate() {
            if s <= 0 || s > i64::from(u32::MAX) {
                return bad("size_crops", format!("entry {i} is {s}, not a size in px"));
            }
        }
        for (i, (&lo, &hi)) in r.min_scale_crops.iter().zip(&r.max_scale_crops).enumerate() {
            for (field, v) in [("min_scale_crops", lo), ("max_scale_crops", hi)] {
                if !(v > 0.0 && v <= 1.0) {
                    return bad(field, format!("entry {i} is {v}, outside (0, 1]"));
                }
            }
            if lo > hi {
                return bad(
                    "min_scale_crops",
                    format!("entry {i} is {lo} > max_scale_crops {hi}"),
                );
            }
        }
        // hue = 0.2·s must stay within torchvision's [0, 0.5]
        if !(r.jitter_strength >= 0.0 && r.jitter_strength <= 2.5) {
            return bad(
                "jitter_strength",
                format!(
                    "must be in [0, 2.5] (hue 0.2·s ≤ 0.5), got {}",
                    r.jitter_strength
                ),
            );
        }
        for (field, p) in [
            ("jitter_prob", r.jitter_prob as f32),
            ("grayscale_prob", r.grayscale_prob as f32),
            ("blur_prob", r.blur_prob as f32),
            ("solarize_prob", self.solarize_prob),
            ("flip_prob", self.flip_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("{p} is not a probability"));
            }
        }
        let (lo, hi) = self.blur_sigma;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return bad("blur_sigma", format!("({lo}, {hi}) is not 0 < min ≤ max"));
        }
        Ok(())
    }

    /// Parses TOML and validates.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let cfg: Self =
            toml::from_str(text).map_err(|e| Error::config(origin, "multicrop", e.to_string()))?;
        cfg.validate(origin)?;
        Ok(cfg)
    }
}

/// What one crop drew, for tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropTrace {
    pub rect: CropRect,
    pub flipped: bool,
    pub jittered: bool,
    pub gray: bool,
    pub blur_sigma: Option<f32>,
    pub solarized: bool,
}

/// A validated [`MultiCropConfig`] ready to apply.
#[derive(Debug, Clone)]
pub struct MultiCropTransform {
    cfg: MultiCropConfig,
}

impl MultiCropTransform {
    pub fn new(cfg: MultiCropConfig) -> Result<Self> {
        cfg.validate("multi-crop config")?;
        Ok(Self { cfg })
    }

    pub fn config(&self) -> &MultiCropConfig {
        &self.cfg
    }

    /// All crops of one image, in `nmb_crops` order, each CHW normalised (3·S·S values). With `bbox`
    /// (x, y, w, h), the image is first cut to the box (an annotated object).
    pub fn apply(
        &self,
        img: &RgbImage,
        bbox: Option<[f32; 4]>,
        rng: &mut impl Rng,
    ) -> Vec<Vec<f32>> {
        self.apply_traced(img, bbox, rng)
            .into_iter()
            .map(|(v, _)| v)
            .collect()
    }

    pub fn apply_traced(
        &self,
        img: &RgbImage,
        bbox: Option<[f32; 4]>,
        rng: &mut impl Rng,
    ) -> Vec<(Vec<f32>, CropTrace)> {
        let (w, h) = img.dimensions();
        self.apply_on_grid_traced(img, &PixelGrid::full(w, h), bbox, rng)
    }

    /// [`Self::apply`] on a possibly reduced decode: crops (and `bbox`) live on the full image's frame
    /// `grid`, so the same RNG stream draws the same rectangles as on the full decode; each is then mapped
    /// onto `img` and resampled from its fewer pixels.
    pub fn apply_on_grid(
        &self,
        img: &RgbImage,
        grid: &PixelGrid,
        bbox: Option<[f32; 4]>,
        rng: &mut impl Rng,
    ) -> Vec<Vec<f32>> {
        self.apply_on_grid_traced(img, grid, bbox, rng)
            .into_iter()
            .map(|(v, _)| v)
            .collect()
    }

    /// [`Self::apply_on_grid`] with each crop's draws; `CropTrace::rect` is in full-image pixels.
    pub fn apply_on_grid_traced(
        &self,
        img: &RgbImage,
        grid: &PixelGrid,
        bbox: Option<[f32; 4]>,
        rng: &mut impl Rng,
    ) -> Vec<(Vec<f32>, CropTrace)> {
        let (w, h) = (grid.full_w, grid.full_h);
        let region = match bbox {
            Some(b) => bbox_rect(b, w, h),
            None => CropRect { x: 0, y: 0, w, h },
        };
        let c = &self.cfg;
        let r = &c.recipe;
        let mut out = Vec::with_capacity(c.total_crops());
        for g in 0..r.nmb_crops.len() {
            let size = r.size_crops[g] as usize;
            for _ in 0..r.nmb_crops[g] {
                let mut r = random_resized_crop_params(
                    region.w,
                    region.h,
                    (r.min_scale_crops[g] as f32, r.max_scale_crops[g] as f32),
                    DEFAULT_RATIO,
                    rng,
                );
                r.x += region.x;
                r.y += region.y;
                let mut crop = resize_region(img, grid.map_rect(r.x, r.y, r.w, r.h), size, size);
                let trace = distort(&mut crop, r, c, rng);
                let mut chw = vec![0f32; 3 * size * size];
                normalize_into(&crop, &mut chw);
                out.push((chw, trace));
            }
        }
        out
    }
}

/// Flip → RandomApply(ColorJitter) → RandomGrayscale → blur → solarize, drawing in the reference's order.
fn distort(
    img: &mut ImageF32,
    rect: CropRect,
    c: &MultiCropConfig,
    rng: &mut impl Rng,
) -> CropTrace {
    let flipped = rng.gen::<f32>() < c.flip_prob;
    if flipped {
        hflip(img);
    }
    let jittered = rng.gen::<f32>() < c.recipe.jitter_prob as f32;
    if jittered {
        color_jitter(img, &c.recipe.jitter(), rng);
    }
    let gray = rng.gen::<f32>() < c.recipe.grayscale_prob as f32;
    if gray {
        grayscale(img);
    }
    // PILRandomGaussianBlur: `np.random.rand() <= self.prob`.
    let blur_prob = c.recipe.blur_prob as f32;
    let blur_sigma = (rng.gen::<f32>() <= blur_prob && blur_prob > 0.0)
        .then(|| random_gaussian_blur(img, c.blur_sigma, rng));
    let solarized = c.solarize_prob > 0.0 && rng.gen::<f32>() < c.solarize_prob;
    if solarized {
        // BYOL: threshold 0.5 (128 of 255).
        solarize(img, 0.5);
    }
    CropTrace {
        rect,
        flipped,
        jittered,
        gray,
        blur_sigma,
        solarized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{seeded_rng, Mixing};

    #[test]
    fn swav_config_is_valid_and_round_trips_through_toml() {
        let cfg = MultiCropConfig::swav();
        cfg.validate("test").unwrap();
        assert_eq!(cfg.crop_sizes(), vec![224, 224, 96, 96, 96, 96, 96, 96]);
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(MultiCropConfig::from_toml(&text, "t").unwrap(), cfg);
        let small =
            MultiCropConfig::from_toml("nmb_crops = [2, 4]\nsize_crops = [64, 32]\n", "t").unwrap();
        assert_eq!(small, MultiCropConfig::scaled(64, 2, 32, 4));
        MultiCropConfig::simclr(32).validate("t").unwrap();
    }

    #[test]
    fn validate_names_the_field_at_fault() {
        let field_of = |cfg: MultiCropConfig| match cfg.validate("x.toml") {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let mut c = MultiCropConfig::swav();
        c.recipe.size_crops.push(1);
        assert_eq!(field_of(c), "size_crops");
        let mut c = MultiCropConfig::swav();
        c.recipe.min_scale_crops[1] = 0.0;
        assert_eq!(field_of(c), "min_scale_crops");
        let mut c = MultiCropConfig::swav();
        c.recipe.max_scale_crops[0] = 1.5;
        assert_eq!(field_of(c), "max_scale_crops");
        let mut c = MultiCropConfig::swav();
        c.recipe.min_scale_crops[0] = 0.9;
        c.recipe.max_scale_crops[0] = 0.5;
        assert_eq!(field_of(c), "min_scale_crops");
        let mut c = MultiCropConfig::swav();
        c.recipe.size_crops[1] = 0;
        assert_eq!(field_of(c), "size_crops");
        assert!(MultiCropConfig::from_toml("nmb_crop = [2]", "t").is_err());
    }

    #[test]
    fn crops_follow_the_groups_and_stay_inside_the_bbox() {
        let img = RgbImage::from_fn(120, 90, |x, y| image::Rgb([x as u8, y as u8, 50]));
        let t = MultiCropTransform::new(MultiCropConfig::scaled(32, 2, 16, 3)).unwrap();
        let bbox = [40.0, 20.0, 30.0, 50.0];
        let crops = t.apply_traced(
            &img,
            Some(bbox),
            &mut seeded_rng(Mixing::SplitMixChain, 1, 0, 0),
        );
        assert_eq!(crops.len(), 5);
        for (i, (v, tr)) in crops.iter().enumerate() {
            let s = if i < 2 { 32 } else { 16 };
            assert_eq!(v.len(), 3 * s * s);
            let r = tr.rect;
            assert!(
                r.x >= 40 && r.y >= 20 && r.x + r.w <= 70 && r.y + r.h <= 70,
                "{r:?}"
            );
        }
        // Same RNG stream → same bytes.
        let again = t.apply(
            &img,
            Some(bbox),
            &mut seeded_rng(Mixing::SplitMixChain, 1, 0, 0),
        );
        assert_eq!(again, crops.into_iter().map(|c| c.0).collect::<Vec<_>>());
    }
}
