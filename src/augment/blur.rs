//! Gaussian blur as SwAV's PILRandomGaussianBlur (src/multicropdataset.py): with probability p, blur with
//! σ drawn uniformly from [radius_min, radius_max] (PIL's GaussianBlur "radius" is the standard deviation).
//! We use an exact separable Gaussian kernel truncated at 3σ with edge replication; PIL approximates it by
//! three box blurs, so values differ slightly from the reference.
use rand::Rng;

use super::ImageF32;

/// Kernel half-width in σ: 3σ keeps 99.7% of the mass.
const TRUNCATE_SIGMAS: f32 = 3.0;

/// Draws σ ∈ [lo, hi] and blurs; returns the σ used.
pub fn random_gaussian_blur(img: &mut ImageF32, sigma: (f32, f32), rng: &mut impl Rng) -> f32 {
    let s = if sigma.1 > sigma.0 {
        rng.gen_range(sigma.0..=sigma.1)
    } else {
        sigma.0
    };
    gaussian_blur(img, s);
    s
}

fn kernel(sigma: f32) -> Vec<f32> {
    let r = (TRUNCATE_SIGMAS * sigma).ceil().max(1.0) as i32;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Separable Gaussian blur in place; σ ≤ 0 leaves the image unchanged. Each pass is a sum of shifted,
/// scaled copies of a row (an axpy the compiler vectorises) over an edge-replicated buffer.
pub fn gaussian_blur(img: &mut ImageF32, sigma: f32) {
    if sigma.is_nan() || sigma <= 0.0 || img.w == 0 || img.h == 0 {
        return;
    }
    let k = kernel(sigma);
    let r = k.len() / 2;
    let (w, h) = (img.w, img.h);
    let line = w * 3;
    // Horizontal: pad each row with r replicated pixels per side, then out += k[i] · padded[i..].
    let mut padded = vec![0f32; (w + 2 * r) * 3];
    let mut tmp = vec![0f32; img.data.len()];
    for y in 0..h {
        let row = &img.data[y * line..(y + 1) * line];
        for i in 0..r {
            padded[i * 3..i * 3 + 3].copy_from_slice(&row[..3]);
            padded[(r + w + i) * 3..(r + w + i) * 3 + 3].copy_from_slice(&row[line - 3..]);
        }
        padded[r * 3..(r + w) * 3].copy_from_slice(row);
        let out = &mut tmp[y * line..(y + 1) * line];
        for (i, &kv) in k.iter().enumerate() {
            for (o, p) in out.iter_mut().zip(&padded[i * 3..i * 3 + line]) {
                *o += kv * p;
            }
        }
    }
    // Vertical: out row y += k[i] · tmp row clamp(y + i − r).
    img.data.fill(0.0);
    for y in 0..h {
        let out = &mut img.data[y * line..(y + 1) * line];
        for (i, &kv) in k.iter().enumerate() {
            let sy = (y + i).saturating_sub(r).min(h - 1);
            for (o, p) in out.iter_mut().zip(&tmp[sy * line..(sy + 1) * line]) {
                *o += kv * p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{seeded_rng, Mixing};

    /// The straightforward clamped-index convolution the fast version must equal.
    fn naive_blur(img: &ImageF32, sigma: f32) -> ImageF32 {
        let k = kernel(sigma);
        let r = (k.len() / 2) as isize;
        let (w, h) = (img.w as isize, img.h as isize);
        let at = |d: &[f32], x: isize, y: isize, c: usize| d[((y * w + x) * 3) as usize + c];
        let mut tmp = img.clone();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    tmp.data[((y * w + x) * 3) as usize + c] = (0..k.len())
                        .map(|i| k[i] * at(&img.data, (x + i as isize - r).clamp(0, w - 1), y, c))
                        .sum();
                }
            }
        }
        let mut out = tmp.clone();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    out.data[((y * w + x) * 3) as usize + c] = (0..k.len())
                        .map(|i| k[i] * at(&tmp.data, x, (y + i as isize - r).clamp(0, h - 1), c))
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn fast_blur_equals_the_naive_convolution() {
        let mut img = ImageF32::new(9, 5);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = ((i * 53) % 97) as f32 / 97.0;
        }
        for sigma in [0.3, 1.0, 2.0] {
            let mut fast = img.clone();
            gaussian_blur(&mut fast, sigma);
            let slow = naive_blur(&img, sigma);
            for (a, b) in fast.data.iter().zip(&slow.data) {
                assert!((a - b).abs() < 1e-5, "σ {sigma}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn sigma_stays_in_range_and_blur_smooths_but_keeps_mean() {
        let mut rng = seeded_rng(Mixing::SplitMixChain, 5, 1, 2);
        let mut sigmas = Vec::new();
        for _ in 0..200 {
            let mut img = ImageF32::new(4, 4);
            sigmas.push(random_gaussian_blur(&mut img, (0.1, 2.0), &mut rng));
        }
        assert!(sigmas.iter().all(|s| (0.1..=2.0).contains(s)));
        let mean = sigmas.iter().sum::<f32>() / 200.0;
        assert!((mean - 1.05).abs() < 0.15, "mean σ {mean}");

        // A single bright pixel in the middle spreads out; total mass is kept (edges far away).
        let mut img = ImageF32::new(21, 21);
        img.data[(10 * 21 + 10) * 3] = 1.0;
        gaussian_blur(&mut img, 1.5);
        let total: f32 = img.data.iter().step_by(3).sum();
        assert!((total - 1.0).abs() < 1e-4);
        assert!(img.data[(10 * 21 + 10) * 3] < 0.1 && img.data[(10 * 21 + 11) * 3] > 0.0);
    }
}
