//! How far an image may be shrunk at decode time (a JPEG's DCT reduction) before a crop would have fewer
//! source pixels than output pixels. Crops are drawn on the full image's frame either way; this only bounds
//! the factor, so a reduced decode resamples the same regions from fewer, already averaged pixels.
use super::crop::{bbox_rect, CropRect, DEFAULT_RATIO};
use super::MultiCropConfig;

/// Images smaller than this (512², 0.26 MP) are never reduced. Their decode is a small share of a sample's
/// cost next to its crops, and it keeps every composed set (128 px scenes and objects: the demo, regime R)
/// decoded exactly as before, so their runs do not change.
pub const MIN_REDUCED_PIXELS: u64 = 512 * 512;

fn too_small(w: u32, h: u32) -> bool {
    (w as u64) * (h as u64) < MIN_REDUCED_PIXELS
}

/// The annotated region crops are drawn from: the clamped box, else the whole `w`×`h` image.
fn region(w: u32, h: u32, bbox: Option<[f32; 4]>) -> CropRect {
    match bbox {
        Some(b) => bbox_rect(b, w, h),
        None => CropRect { x: 0, y: 0, w, h },
    }
}

/// The largest factor (≥ 1) by which a `w`×`h` image (full size, oriented; `bbox` in its pixels) may be
/// shrunk while every crop of `cfg` still has at least `size_crops[g]` source pixels on each side; 1 below
/// [`MIN_REDUCED_PIXELS`].
///
/// A crop of group g has area ≥ `min_scale_crops[g]`·|region| and aspect ratio within
/// [`DEFAULT_RATIO`], so its shorter side is ≥ sqrt(min_scale · |region| · 3/4) — unless the region is too
/// narrow for any such crop, when torchvision's fallback takes the region's full shorter side. Half a pixel
/// is taken off for the rounding of sampled sides.
pub fn multicrop_max_factor(cfg: &MultiCropConfig, w: u32, h: u32, bbox: Option<[f32; 4]>) -> f64 {
    if too_small(w, h) {
        return 1.0;
    }
    let r = region(w, h, bbox);
    let (rw, rh) = (r.w as f64, r.h as f64);
    let squeeze = (DEFAULT_RATIO.0 as f64).min(1.0 / DEFAULT_RATIO.1 as f64);
    cfg.recipe
        .nmb_crops
        .iter()
        .zip(&cfg.recipe.size_crops)
        .zip(&cfg.recipe.min_scale_crops)
        .filter(|((&n, _), _)| n > 0)
        .map(|((_, &size), &min_scale)| {
            let short = (min_scale as f64 * rw * rh * squeeze)
                .sqrt()
                .min(rw.min(rh))
                - 0.5;
            short / size as f64
        })
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
}

/// The largest factor (≥ 1) by which a `w`×`h` image may be shrunk while the evaluation transform's centre
/// square (the region's shorter side) still has at least `size` source pixels per side; 1 below
/// [`MIN_REDUCED_PIXELS`].
pub fn eval_max_factor(size: u32, w: u32, h: u32, bbox: Option<[f32; 4]>) -> f64 {
    if too_small(w, h) {
        return 1.0;
    }
    let r = region(w, h, bbox);
    (r.w.min(r.h) as f64 / size as f64).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swav_crops_on_a_wallpaper_allow_a_quarter() {
        // 3840×2160, SwAV 2×224 (0.14–1) + 6×96 (0.05–0.14): the 96 px crop's short side ≥
        // sqrt(0.05 · 3840 · 2160 · 0.75) − 0.5 ≈ 557.2 → 5.80; the 224 px crop's ≈ 932.7 / 224 ≈ 4.16.
        let f = multicrop_max_factor(&MultiCropConfig::swav(), 3840, 2160, None);
        assert!((f - 4.164).abs() < 0.001, "{f}");
        // A 400×300 image cannot shrink: its 224 px crops already upsample.
        assert_eq!(
            multicrop_max_factor(&MultiCropConfig::swav(), 400, 300, None),
            1.0
        );
    }

    #[test]
    fn a_small_box_bounds_the_factor_by_the_box() {
        let cfg = MultiCropConfig::scaled(32, 2, 16, 4);
        let whole = multicrop_max_factor(&cfg, 2000, 2000, None);
        let boxed = multicrop_max_factor(&cfg, 2000, 2000, Some([100.0, 100.0, 200.0, 200.0]));
        assert!((whole - 20.237).abs() < 0.001, "{whole}");
        // sqrt(0.14 · 200² · 0.75) − 0.5 = 64.31 → 2.01 for the 32 px crops (the 16 px ones: 2.39).
        assert!((boxed - 2.0096).abs() < 0.0001, "{boxed}");
    }

    #[test]
    fn eval_keeps_the_short_side_at_least_the_size() {
        assert_eq!(eval_max_factor(224, 1920, 1080, None), 1080.0 / 224.0);
        assert_eq!(eval_max_factor(224, 100, 1080, None), 1.0);
        assert_eq!(
            eval_max_factor(32, 1000, 1000, Some([0.0, 0.0, 64.0, 300.0])),
            2.0
        );
        // A 128 px composed scene with 32 px eval crops would allow 4, but stays at full size.
        assert_eq!(eval_max_factor(32, 128, 128, None), 1.0);
        let tiny = MultiCropConfig::scaled(16, 2, 8, 2);
        assert_eq!(multicrop_max_factor(&tiny, 500, 500, None), 1.0);
    }

    #[test]
    fn a_narrow_strip_is_bounded_by_its_short_side() {
        // 10000×40: no 4/3 crop of 14% fits; the fallback is 40 px tall, so 224 px crops cannot shrink.
        assert_eq!(
            multicrop_max_factor(&MultiCropConfig::swav(), 10000, 40, None),
            1.0
        );
    }
}
