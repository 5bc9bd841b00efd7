//! ToTensor + Normalize: HWC [0, 1] → CHW standardised with SwAV's statistics, and back (for plots).
use super::ImageF32;

/// main_swav.py: `mean = [0.485, 0.456, 0.406]`.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// main_swav.py: `std = [0.228, 0.224, 0.225]`.
pub const STD: [f32; 3] = [0.228, 0.224, 0.225];

/// Writes `img` normalised as CHW into `out` (length 3·w·h).
pub fn normalize_into(img: &ImageF32, out: &mut [f32]) {
    let plane = img.w * img.h;
    debug_assert_eq!(out.len(), 3 * plane);
    for (i, p) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] - MEAN[c]) / STD[c];
        }
    }
}

/// CHW normalised → HWC [0, 1] image (inverse of [`normalize_into`]).
pub fn unnormalize(chw: &[f32], w: usize, h: usize) -> ImageF32 {
    let plane = w * h;
    let mut img = ImageF32::new(w, h);
    for i in 0..plane.min(chw.len() / 3) {
        for c in 0..3 {
            img.data[i * 3 + c] = chw[c * plane + i] * STD[c] + MEAN[c];
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_round_trips_and_puts_the_mean_at_zero() {
        let mut img = ImageF32::new(3, 2);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = i as f32 / 17.0;
        }
        let mut chw = vec![0f32; 18];
        normalize_into(&img, &mut chw);
        // pixel (1, 0) channel 2 → plane 2, index 1
        assert!((chw[2 * 6 + 1] - (img.data[5] - 0.406) / 0.225).abs() < 1e-6);
        let back = unnormalize(&chw, 3, 2);
        for (a, b) in back.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-6);
        }
        let mean_px = ImageF32 {
            w: 1,
            h: 1,
            data: MEAN.to_vec(),
        };
        let mut z = vec![1f32; 3];
        normalize_into(&mean_px, &mut z);
        assert!(z.iter().all(|v| v.abs() < 1e-6));
    }
}
