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

/// Separable Gaussian blur in place; σ ≤ 0 leaves the image unchanged.
pub fn gaussian_blur(img: &mut ImageF32, sigma: f32) {
    if !(sigma > 0.0) || img.w == 0 || img.h == 0 {
        return;
    }
    let k = kernel(sigma);
    let r = (k.len() / 2) as isize;
    let (w, h) = (img.w as isize, img.h as isize);
    let mut tmp = vec![0f32; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (i, kv) in k.iter().enumerate() {
                let sx = (x + i as isize - r).clamp(0, w - 1);
                let p = ((y * w + sx) * 3) as usize;
                for c in 0..3 {
                    acc[c] += img.data[p + c] * kv;
                }
            }
            tmp[((y * w + x) * 3) as usize..][..3].copy_from_slice(&acc);
        }
    }
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (i, kv) in k.iter().enumerate() {
                let sy = (y + i as isize - r).clamp(0, h - 1);
                let p = ((sy * w + x) * 3) as usize;
                for c in 0..3 {
                    acc[c] += tmp[p + c] * kv;
                }
            }
            img.data[((y * w + x) * 3) as usize..][..3].copy_from_slice(&acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::sample_rng;

    #[test]
    fn sigma_stays_in_range_and_blur_smooths_but_keeps_mean() {
        let mut rng = sample_rng(5, 1, 2);
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
