//! RandomResizedCrop's rectangle sampling with torchvision's semantics (transforms.RandomResizedCrop.get_params):
//! up to 10 tries of an area share in `scale` and a log-uniform aspect ratio, else a centre crop.
use rand::Rng;

/// A crop rectangle in source pixels: left `x`, top `y`, width `w`, height `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// torchvision RandomResizedCrop default `ratio` (3/4, 4/3).
pub const DEFAULT_RATIO: (f32, f32) = (3.0 / 4.0, 4.0 / 3.0);
/// torchvision get_params: "for _ in range(10)".
const MAX_TRIES: usize = 10;

/// Samples a crop of an image `width`×`height` (both ≥ 1). `scale` is the area share range, `ratio` w/h.
pub fn random_resized_crop_params(
    width: u32,
    height: u32,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut impl Rng,
) -> CropRect {
    let area = width as f64 * height as f64;
    let (log_lo, log_hi) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..MAX_TRIES {
        let target_area = area * uniform(rng, scale.0 as f64, scale.1 as f64);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let w = (target_area * aspect).sqrt().round();
        let h = (target_area / aspect).sqrt().round();
        if w > 0.0 && h > 0.0 && w <= width as f64 && h <= height as f64 {
            let (w, h) = (w as u32, h as u32);
            // torch.randint(0, height - h + 1): inclusive of the last position.
            let y = rng.gen_range(0..=height - h);
            let x = rng.gen_range(0..=width - w);
            return CropRect { x, y, w, h };
        }
    }
    centre_crop_fallback(width, height, ratio)
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

/// torchvision's fallback: the largest centred crop whose ratio is clamped into `ratio`.
fn centre_crop_fallback(width: u32, height: u32, ratio: (f32, f32)) -> CropRect {
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 as f64 {
        (
            width,
            ((width as f64 / ratio.0 as f64).round() as u32).clamp(1, height),
        )
    } else if in_ratio > ratio.1 as f64 {
        (
            ((height as f64 * ratio.1 as f64).round() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    CropRect {
        x: (width - w) / 2,
        y: (height - h) / 2,
        w,
        h,
    }
}

/// Clamps an annotation box [x, y, w, h] (float pixels) to whole pixels inside a `width`×`height` image; at
/// least 1×1 so a degenerate box still yields a crop.
pub fn bbox_rect(bbox: [f32; 4], width: u32, height: u32) -> CropRect {
    let clamp = |v: f32, hi: u32| -> u32 {
        if v.is_finite() {
            (v.max(0.0) as u32).min(hi)
        } else {
            0
        }
    };
    let x0 = clamp(bbox[0].floor(), width.saturating_sub(1));
    let y0 = clamp(bbox[1].floor(), height.saturating_sub(1));
    let x1 = clamp((bbox[0] + bbox[2]).ceil(), width).max(x0 + 1);
    let y1 = clamp((bbox[1] + bbox[3]).ceil(), height).max(y0 + 1);
    CropRect {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{seeded_rng, Mixing};

    #[test]
    fn crop_area_stays_in_scale_range_and_inside_image() {
        // SwAV's small-crop range (0.05, 0.14) on a 300×200 image: every sampled (not fallback) crop's area
        // share lies in the range up to rounding of w and h.
        let (w, h) = (300u32, 200u32);
        let scale = (0.05f32, 0.14f32);
        let mut rng = seeded_rng(Mixing::SplitMixChain, 7, 0, 0);
        let mut shares = Vec::new();
        for _ in 0..2000 {
            let r = random_resized_crop_params(w, h, scale, DEFAULT_RATIO, &mut rng);
            assert!(r.x + r.w <= w && r.y + r.h <= h, "{r:?}");
            let share = (r.w * r.h) as f64 / (w * h) as f64;
            let ratio = r.w as f64 / r.h as f64;
            // rounding each side by ≤ 0.5 px moves the share by < 2%
            assert!(
                share > 0.05 * 0.97 && share < 0.14 * 1.03,
                "share {share} of {r:?}"
            );
            assert!(
                ratio > 0.75 * 0.97 && ratio < 4.0 / 3.0 * 1.03,
                "ratio {ratio}"
            );
            shares.push(share);
        }
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        // uniform in [0.05, 0.14] has mean 0.095
        assert!((mean - 0.095).abs() < 0.005, "mean share {mean}");
    }

    #[test]
    fn impossible_scale_falls_back_to_centre_crop() {
        // A 1000×10 strip cannot hold a 4/3 crop of half its area: torchvision falls back to the centre crop
        // of ratio 4/3 clamped to the height: w = round(10 · 4/3) = 13.
        let mut rng = seeded_rng(Mixing::SplitMixChain, 1, 0, 0);
        let r = random_resized_crop_params(1000, 10, (0.5, 1.0), DEFAULT_RATIO, &mut rng);
        assert_eq!(
            r,
            CropRect {
                x: (1000 - 13) / 2,
                y: 0,
                w: 13,
                h: 10
            }
        );
    }

    #[test]
    fn bbox_is_clamped_to_the_image() {
        assert_eq!(
            bbox_rect([10.2, 5.0, 20.0, 30.0], 100, 50),
            CropRect {
                x: 10,
                y: 5,
                w: 21,
                h: 30
            }
        );
        assert_eq!(
            bbox_rect([-5.0, 40.0, 500.0, 500.0], 100, 50),
            CropRect {
                x: 0,
                y: 40,
                w: 100,
                h: 10
            }
        );
        assert_eq!(bbox_rect([f32::NAN, 0.0, 0.0, 0.0], 100, 50).w, 1);
    }
}
