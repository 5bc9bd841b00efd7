//! Colour distortion as in SwAV's `get_color_distortion` (main_swav.py / src/multicropdataset.py):
//! ColorJitter(brightness, contrast, saturation, hue) applied with p 0.8 in a random order (torchvision
//! ColorJitter.forward draws a permutation, then the four factors), then RandomGrayscale p 0.2; plus solarize.
use rand::seq::SliceRandom;
use rand::Rng;

use super::ImageF32;

/// ITU-R 601-2 luma, as PIL's `convert("L")` and torchvision's rgb_to_grayscale.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// ColorJitter strengths; a factor is drawn from [max(0, 1 − s), 1 + s], the hue shift from [−hue, hue].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

fn luma(p: &[f32]) -> f32 {
    LUMA[0] * p[0] + LUMA[1] * p[1] + LUMA[2] * p[2]
}

/// Blends every value towards `other(pixel)` as torchvision's `_blend`: factor·x + (1 − factor)·o, clamped.
fn blend_each(img: &mut ImageF32, factor: f32, other: impl Fn(&[f32]) -> [f32; 3]) {
    for p in img.data.chunks_exact_mut(3) {
        let o = other(p);
        for c in 0..3 {
            p[c] = (factor * p[c] + (1.0 - factor) * o[c]).clamp(0.0, 1.0);
        }
    }
}

pub fn adjust_brightness(img: &mut ImageF32, f: f32) {
    blend_each(img, f, |_| [0.0; 3]);
}

pub fn adjust_contrast(img: &mut ImageF32, f: f32) {
    let n = (img.data.len() / 3).max(1) as f32;
    let mean = img.data.chunks_exact(3).map(luma).sum::<f32>() / n;
    blend_each(img, f, |_| [mean; 3]);
}

pub fn adjust_saturation(img: &mut ImageF32, f: f32) {
    blend_each(img, f, |p| [luma(p); 3]);
}

/// Rotates hue by `shift` turns (clamped to [−0.5, 0.5]) through HSV, as torchvision's adjust_hue.
pub fn adjust_hue(img: &mut ImageF32, shift: f32) {
    let shift = if shift.is_nan() {
        0.0
    } else {
        shift.clamp(-0.5, 0.5)
    };
    for p in img.data.chunks_exact_mut(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        if delta <= 0.0 {
            continue; // grey: hue undefined, rotation is a no-op
        }
        // Hue in [0, 6) without fmod: each branch's raw value lies in [-1, 5].
        let h6 = if max == r {
            let v = (g - b) / delta;
            if v < 0.0 {
                v + 6.0
            } else {
                v
            }
        } else if max == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        };
        // shift ∈ [−0.5, 0.5] turns: one wrap each way suffices.
        let mut h = h6 + shift * 6.0;
        if h < 0.0 {
            h += 6.0;
        }
        if h >= 6.0 {
            h -= 6.0;
        }
        let (s, v) = (delta / max, max);
        let i = (h as i32).min(5); // h ≥ 0, so truncation is floor
        let f = h - i as f32;
        let (pp, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
        let (nr, ng, nb) = match i {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
        p[0] = nr;
        p[1] = ng;
        p[2] = nb;
    }
}

pub fn grayscale(img: &mut ImageF32) {
    for p in img.data.chunks_exact_mut(3) {
        let l = luma(p);
        p.fill(l);
    }
}

/// Inverts values at or above `threshold` (PIL ImageOps.solarize; BYOL uses threshold 0.5).
pub fn solarize(img: &mut ImageF32, threshold: f32) {
    for v in img.data.iter_mut() {
        if *v >= threshold {
            *v = 1.0 - *v;
        }
    }
}

fn factor(rng: &mut impl Rng, strength: f32) -> Option<f32> {
    // torchvision's _check_input turns a zero strength into None: the op is not applied at all.
    (strength > 0.0).then(|| rng.gen_range((1.0 - strength).max(0.0)..=1.0 + strength))
}

/// One ColorJitter call: a random order of the four ops, each with its own drawn factor.
pub fn color_jitter(img: &mut ImageF32, j: &Jitter, rng: &mut impl Rng) {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let b = factor(rng, j.brightness);
    let c = factor(rng, j.contrast);
    let s = factor(rng, j.saturation);
    let h = (j.hue > 0.0).then(|| rng.gen_range(-j.hue..=j.hue));
    for op in order {
        match (op, b, c, s, h) {
            (0, Some(f), ..) => adjust_brightness(img, f),
            (1, _, Some(f), ..) => adjust_contrast(img, f),
            (2, _, _, Some(f), _) => adjust_saturation(img, f),
            (3, _, _, _, Some(f)) => adjust_hue(img, f),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{seeded_rng, Mixing};

    fn ramp() -> ImageF32 {
        let mut img = ImageF32::new(8, 8);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = ((i * 37) % 101) as f32 / 100.0;
        }
        img
    }

    #[test]
    fn zero_strength_jitter_is_identity() {
        let zero = Jitter {
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
        };
        let mut rng = seeded_rng(Mixing::SplitMixChain, 3, 0, 0);
        let mut img = ramp();
        color_jitter(&mut img, &zero, &mut rng);
        assert_eq!(img, ramp());
    }

    #[test]
    fn swav_jitter_changes_the_image() {
        let swav = Jitter {
            brightness: 0.8,
            contrast: 0.8,
            saturation: 0.8,
            hue: 0.2,
        };
        let mut img = ramp();
        color_jitter(
            &mut img,
            &swav,
            &mut seeded_rng(Mixing::SplitMixChain, 3, 0, 0),
        );
        assert_ne!(img, ramp());
        assert!(img.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn hue_zero_is_identity_and_third_turns_permute_primaries() {
        let mut img = ramp();
        adjust_hue(&mut img, 0.0);
        for (a, b) in img.data.iter().zip(ramp().data.iter()) {
            assert!((a - b).abs() < 1e-5);
        }
        let mut red = ImageF32 {
            w: 1,
            h: 1,
            data: vec![1.0, 0.0, 0.0],
        };
        adjust_hue(&mut red, 1.0 / 3.0);
        assert!(
            (red.data[1] - 1.0).abs() < 1e-5 && red.data[0].abs() < 1e-5,
            "{:?}",
            red.data
        );
    }

    #[test]
    fn grayscale_uses_601_luma_and_solarize_inverts_highs() {
        let mut img = ImageF32 {
            w: 2,
            h: 1,
            data: vec![1.0, 0.0, 0.0, 0.2, 0.6, 0.9],
        };
        grayscale(&mut img);
        assert!((img.data[0] - 0.299).abs() < 1e-6 && img.data[0] == img.data[2]);
        solarize(&mut img, 0.5);
        assert!((img.data[0] - 0.299).abs() < 1e-6); // below threshold: kept
        let l = 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 0.9;
        assert!((img.data[3] - (1.0 - l)).abs() < 1e-6);
    }
}
