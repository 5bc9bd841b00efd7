//! Antialiased bilinear resampling of a crop rectangle straight into f32, as PIL's `Image.resize(BILINEAR)`
//! (which torchvision uses on PIL images): a triangle filter whose support widens with the downscale factor.
//! Fusing crop, resize and the ÷255 into one separable pass is where the loader's speed comes from.
use image::RgbImage;

use super::{CropRect, ImageF32};

/// Per output coordinate: first source index and normalised weights.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

/// PIL's precompute_coeffs for the bilinear (triangle, support 1) filter over `[offset, offset + in_len)`.
/// The span may be fractional (a crop mapped onto a reduced decode); for whole pixels every step computes
/// exactly what it did with integer arguments.
fn taps(in_len: f64, out_len: usize, offset: f64, src_len: u32) -> Taps {
    let scale = in_len / out_len as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // triangle support 1.0 × filter scale
    let mut start = Vec::with_capacity(out_len);
    let mut weights = Vec::with_capacity(out_len);
    for i in 0..out_len {
        let center = offset + (i as f64 + 0.5) * scale;
        let lo = ((center - support).floor().max(offset)) as usize;
        let hi = ((center + support).ceil() as usize)
            .min(((offset + in_len).ceil() as usize).min(src_len as usize));
        let mut w: Vec<f32> = (lo..hi)
            .map(|x| {
                let d = ((x as f64 + 0.5 - center) / filter_scale).abs();
                (1.0 - d).max(0.0) as f32
            })
            .collect();
        let sum: f32 = w.iter().sum();
        if sum > 0.0 {
            w.iter_mut().for_each(|v| *v /= sum);
        } else {
            // Cannot happen for in_len ≥ 1, but never divide by zero.
            w = vec![1.0];
        }
        start.push(lo.min(src_len as usize - 1));
        weights.push(w);
    }
    Taps { start, weights }
}

/// Resamples `rect` of `src` to `out_w`×`out_h`, values ÷ 255. `rect` must lie inside `src` and be non-empty.
pub fn resize_crop(src: &RgbImage, rect: CropRect, out_w: usize, out_h: usize) -> ImageF32 {
    let r = [rect.x, rect.y, rect.w, rect.h].map(f64::from);
    resize_region(src, r, out_w, out_h)
}

/// [`resize_crop`] of a fractional rectangle `[x, y, w, h]` in source pixels: a crop drawn on the full
/// image and mapped onto a reduced decode (`PixelGrid::map_rect`) keeps its exact extent. It must lie
/// inside `src` and be non-empty.
pub fn resize_region(src: &RgbImage, rect: [f64; 4], out_w: usize, out_h: usize) -> ImageF32 {
    let (sw, sh) = src.dimensions();
    let raw = src.as_raw();
    let hx = taps(rect[2], out_w, rect[0], sw);
    let vy = taps(rect[3], out_h, rect[1], sh);
    // Only the source rows some output row reads.
    let row_lo = vy.start[0];
    let row_hi = vy
        .start
        .iter()
        .zip(&vy.weights)
        .map(|(s, w)| s + w.len())
        .max()
        .unwrap_or(row_lo + 1);
    // Horizontal pass: [rows, out_w, 3].
    let rows = row_hi - row_lo;
    let mut tmp = vec![0f32; rows * out_w * 3];
    let stride = sw as usize * 3;
    for r in 0..rows {
        let src_row = &raw[(row_lo + r) * stride..(row_lo + r + 1) * stride];
        let dst_row = &mut tmp[r * out_w * 3..(r + 1) * out_w * 3];
        for (ox, (s, w)) in hx.start.iter().zip(&hx.weights).enumerate() {
            let (mut a, mut b, mut c) = (0f32, 0f32, 0f32);
            // Slice once so the tap loop has no bounds checks.
            for (px, wk) in src_row[s * 3..(s + w.len()) * 3].chunks_exact(3).zip(w) {
                a += px[0] as f32 * wk;
                b += px[1] as f32 * wk;
                c += px[2] as f32 * wk;
            }
            dst_row[ox * 3..ox * 3 + 3].copy_from_slice(&[a, b, c]);
        }
    }
    // Vertical pass, then ÷ 255 and clamp (PIL rounds to u8 here; we keep the f32 and clamp to [0, 1]).
    let mut out = ImageF32::new(out_w, out_h);
    let line = out_w * 3;
    for (oy, (s, w)) in vy.start.iter().zip(&vy.weights).enumerate() {
        let dst = &mut out.data[oy * line..(oy + 1) * line];
        for (k, wk) in w.iter().enumerate() {
            let src_line = &tmp[(s + k - row_lo) * line..(s + k - row_lo + 1) * line];
            for (d, v) in dst.iter_mut().zip(src_line) {
                *d += v * wk;
            }
        }
        for d in dst.iter_mut() {
            *d = (*d / 255.0).clamp(0.0, 1.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant_at_any_scale() {
        let src = RgbImage::from_pixel(97, 53, image::Rgb([51, 102, 204]));
        for (w, h) in [(224, 224), (8, 8), (96, 30)] {
            let out = resize_crop(
                &src,
                CropRect {
                    x: 3,
                    y: 2,
                    w: 90,
                    h: 50,
                },
                w,
                h,
            );
            for px in out.data.chunks_exact(3) {
                assert!(
                    (px[0] - 0.2).abs() < 1e-5
                        && (px[1] - 0.4).abs() < 1e-5
                        && (px[2] - 0.8).abs() < 1e-5
                );
            }
        }
    }

    #[test]
    fn identity_size_copies_the_crop() {
        let src = RgbImage::from_fn(10, 6, |x, y| {
            image::Rgb([(x * 20) as u8, (y * 40) as u8, 7])
        });
        let out = resize_crop(
            &src,
            CropRect {
                x: 2,
                y: 1,
                w: 5,
                h: 4,
            },
            5,
            4,
        );
        for y in 0..4 {
            for x in 0..5 {
                let p = src.get_pixel(x as u32 + 2, y as u32 + 1);
                for c in 0..3 {
                    assert!((out.data[(y * 5 + x) * 3 + c] * 255.0 - p[c] as f32).abs() < 1e-3);
                }
            }
        }
    }

    // PIL reference, halving a horizontal ramp 0,10,…,70 (8 px) to 4 px with antialiased bilinear:
    //   from PIL import Image; import numpy as np
    //   a = np.tile(np.arange(0, 80, 10, dtype=np.uint8), (2, 1)); a = np.stack([a]*3, -1)
    //   print(np.asarray(Image.fromarray(a).resize((4, 1), Image.BILINEAR))[0, :, 0])  # [ 7 25 45 63]
    #[test]
    fn halving_matches_pil_bilinear() {
        let src = RgbImage::from_fn(8, 2, |x, _| image::Rgb([(x * 10) as u8; 3]));
        let out = resize_crop(
            &src,
            CropRect {
                x: 0,
                y: 0,
                w: 8,
                h: 2,
            },
            4,
            1,
        );
        let got: Vec<u8> = out
            .data
            .chunks_exact(3)
            .map(|p| (p[0] * 255.0).round() as u8)
            .collect();
        assert_eq!(got, vec![7, 25, 45, 63]);
    }
}
