//! The reduced-scale JPEG path: DCT reductions of 1/2, 1/4, 1/8 chosen from the crops' needs, EXIF
//! orientation and boxes on the full image's frame, progressive / grayscale / CMYK files, and broken files
//! keeping the reason the full decode gives.
//!
//! The fixtures in tests/fixtures/ are generated (no third-party content), because the `image` crate cannot
//! write progressive or CMYK JPEGs:
//!   import numpy as np; from PIL import Image
//!   w, h = 403, 301; x, y = np.meshgrid(np.arange(w), np.arange(h))
//!   rgb = np.stack([x * 255 // w, y * 255 // h, ((x // 40 + y // 40) % 2) * 200 + 20], -1).astype(np.uint8)
//!   Image.fromarray(rgb).save("progressive-rgb.jpg", quality=90, progressive=True)
//!   Image.fromarray(rgb).convert("L").save("progressive-gray.jpg", quality=90, progressive=True)
//!   Image.fromarray(rgb).convert("CMYK").save("cmyk.jpg", quality=90)
use std::io::Cursor;
use std::path::{Path, PathBuf};

use biaslab::augment::reduction::multicrop_max_factor;
use biaslab::augment::{EvalTransform, MultiCropConfig, MultiCropTransform};
use biaslab::data::decode::{
    decode_rgb_bytes, decode_rgb_reduced_bytes, DecodeLimits, PixelGrid, Reduced, SkipReason,
};
use biaslab::rng::{seeded_rng, Mixing};
use image::{DynamicImage, ImageFormat, RgbImage};

/// Smooth colour gradients with a coarse checkerboard in blue: block averages are well defined, edges exist.
fn photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            if (x / 64 + y / 64) % 2 == 0 { 40 } else { 210 },
        ])
    })
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut buf, ImageFormat::Jpeg)
        .unwrap();
    buf.into_inner()
}

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(p).unwrap()
}

fn reduced(bytes: &[u8], bound: f64) -> Reduced {
    decode_rgb_reduced_bytes(
        bytes,
        Path::new("x.jpg"),
        &DecodeLimits::default(),
        |_, _| bound,
    )
    .unwrap()
}

/// Mean absolute difference (0–255) between `small` and the `f`×`f` block means of `full` over the blocks
/// that lie wholly inside `full`.
fn block_mean_diff(full: &RgbImage, small: &RgbImage, f: u32) -> f64 {
    let (w, h) = (full.width() / f, full.height() / f);
    let (mut sum, mut n) = (0f64, 0usize);
    for by in 0..h {
        for bx in 0..w {
            for c in 0..3 {
                let mut acc = 0f64;
                for y in 0..f {
                    for x in 0..f {
                        acc += full.get_pixel(bx * f + x, by * f + y)[c] as f64;
                    }
                }
                let mean = acc / (f * f) as f64;
                sum += (mean - small.get_pixel(bx, by)[c] as f64).abs();
                n += 1;
            }
        }
    }
    sum / n as f64
}

/// [`block_mean_diff`] of channel `c` alone.
fn chan_diff(full: &RgbImage, small: &RgbImage, f: u32, c: usize) -> f64 {
    let pick = |img: &RgbImage| {
        RgbImage::from_fn(img.width(), img.height(), |x, y| {
            image::Rgb([img.get_pixel(x, y)[c]; 3])
        })
    };
    block_mean_diff(&pick(full), &pick(small), f)
}

/// A minimal big-endian EXIF APP1 segment with one IFD0 entry: Orientation (0x0112, SHORT) = `value`.
fn exif_app1(value: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&value.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    seg.extend_from_slice(b"Exif\x00\x00");
    seg.extend_from_slice(&tiff);
    seg
}

fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend(exif_app1(orientation));
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn a_large_jpeg_decodes_at_the_largest_reduction_the_bound_allows() {
    // Odd sides: the last block row and column are partial.
    let (w, h) = (1601, 1203);
    let bytes = jpeg(&photo(w, h));
    let lim = DecodeLimits::default();
    let full = decode_rgb_bytes(&bytes, Path::new("x.jpg"), &lim).unwrap();
    for (bound, factor) in [(9.0, 8), (4.3, 4), (3.99, 2), (2.0, 2), (1.9, 1), (0.5, 1)] {
        let r = reduced(&bytes, bound);
        assert_eq!(
            r.grid,
            PixelGrid {
                full_w: w,
                full_h: h,
                factor,
                origin_x: 0,
                origin_y: 0
            },
            "bound {bound}"
        );
        assert_eq!(
            r.image.dimensions(),
            (w.div_ceil(factor), h.div_ceil(factor))
        );
        if factor == 1 {
            // No reduction: the very same decoder, the very same bytes.
            assert_eq!(r.image, full, "bound {bound}");
        } else {
            // A reduced IDCT pixel is close to the mean of its full-size block (JPEG error aside).
            let d = block_mean_diff(&full, &r.image, factor);
            assert!(d < 3.0, "factor {factor}: mean |diff| {d}");
        }
    }
    // The bound sees the full size, not a guess.
    let seen = std::cell::Cell::new((0, 0));
    decode_rgb_reduced_bytes(&bytes, Path::new("x.jpg"), &lim, |w, h| {
        seen.set((w, h));
        1.0
    })
    .unwrap();
    assert_eq!(seen.get(), (w, h));
}

#[test]
fn other_formats_are_decoded_at_full_size_unchanged() {
    let img = photo(900, 700);
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut png, ImageFormat::Png)
        .unwrap();
    let r = reduced(png.get_ref(), 8.0);
    assert_eq!(r.grid, PixelGrid::full(900, 700));
    assert_eq!(r.image, img);
}

#[test]
fn exif_orientation_is_applied_and_the_grid_follows_it() {
    // 1003×601 stored, left half red, right half blue; orientation 6 (rotate 90° CW) → 601×1003, red on
    // top.
    let stored = RgbImage::from_fn(1003, 601, |x, _| {
        image::Rgb(if x < 501 { [255, 0, 0] } else { [0, 0, 255] })
    });
    let bytes = with_exif(&jpeg(&stored), 6);
    let lim = DecodeLimits::default();
    let full = decode_rgb_bytes(&bytes, Path::new("x.jpg"), &lim).unwrap();
    assert_eq!(full.dimensions(), (601, 1003));
    let r = reduced(&bytes, 8.0);
    // Stored 1003×601 → 126×76 blocks; rotated 76×126. Rotate90 reverses the oriented x axis (stored y
    // bottom-up): the 76·8 − 601 = 7 excess pixels lie left of the image.
    assert_eq!(r.image.dimensions(), (76, 126));
    assert_eq!(
        r.grid,
        PixelGrid {
            full_w: 601,
            full_h: 1003,
            factor: 8,
            origin_x: -7,
            origin_y: 0
        }
    );
    let (top, bottom) = (r.image.get_pixel(38, 10).0, r.image.get_pixel(38, 115).0);
    assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
    // The same full-frame rectangle resampled from either decode gives nearly the same pixels, also across
    // the red/blue edge at full y = 501.
    let t = EvalTransform { size: 32 };
    let a = t.apply(&full, Some([100.0, 400.0, 300.0, 250.0]));
    let b = t.apply_on_grid(&r.image, &r.grid, Some([100.0, 400.0, 300.0, 250.0]));
    let mad = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    assert!(mad < 0.05, "mean |diff| {mad} (normalised units)");
}

#[test]
fn crops_and_boxes_cover_the_same_regions_on_a_reduced_decode() {
    let (w, h) = (2400, 1600);
    let bytes = jpeg(&photo(w, h));
    let lim = DecodeLimits::default();
    let full = decode_rgb_bytes(&bytes, Path::new("x.jpg"), &lim).unwrap();
    let cfg = MultiCropConfig::scaled(64, 2, 32, 4);
    let t = MultiCropTransform::new(cfg.clone()).unwrap();
    // A box in the full image's pixels; the bound comes from the box, as the loader computes it.
    let bbox = Some([700.0, 300.0, 1200.0, 1000.0]);
    let r = decode_rgb_reduced_bytes(&bytes, Path::new("x.jpg"), &lim, |fw, fh| {
        multicrop_max_factor(&cfg, fw, fh, bbox)
    })
    .unwrap();
    // sqrt(0.14 · 1200 · 1000 · 0.75) − 0.5 = 354.5 source pixels for a 64 px crop: 5.5 → 1/4.
    assert_eq!(r.grid.factor, 4);
    let on_full = t.apply_traced(&full, bbox, &mut seeded_rng(Mixing::SplitMixChain, 5, 0, 3));
    let on_reduced = t.apply_on_grid_traced(
        &r.image,
        &r.grid,
        bbox,
        &mut seeded_rng(Mixing::SplitMixChain, 5, 0, 3),
    );
    assert_eq!(on_full.len(), on_reduced.len());
    for ((a, ta), (b, tb)) in on_full.iter().zip(&on_reduced) {
        // Same draws: same rectangle (in full pixels, inside the box), flip, jitter, blur.
        assert_eq!(ta, tb);
        let rect = ta.rect;
        assert!(
            rect.x >= 700 && rect.y >= 300 && rect.x + rect.w <= 1900 && rect.y + rect.h <= 1300
        );
        let mad = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
        assert!(mad < 0.08, "mean |diff| {mad} for {ta:?}");
    }
}

#[test]
fn progressive_and_grayscale_jpegs_decode_reduced() {
    let lim = DecodeLimits::default();
    for name in ["progressive-rgb.jpg", "progressive-gray.jpg"] {
        let bytes = fixture(name);
        let full = decode_rgb_bytes(&bytes, Path::new(name), &lim).unwrap();
        assert_eq!(full.dimensions(), (403, 301));
        let r = reduced(&bytes, 4.0);
        assert_eq!(r.grid.factor, 4, "{name}");
        assert_eq!(r.image.dimensions(), (101, 76), "{name}");
        // Red and green carry the luma-like gradients; blue is a saturated 40 px checkerboard held mostly in
        // 4:2:0 chroma, which jpeg-decoder decodes at the same reduced IDCT size and then upsamples 2×, so it
        // has half the reduced resolution (libjpeg-turbo's 1/4 decode, which scales chroma's IDCT instead,
        // is off by 4.5 there; a full decode's chroma likewise has half the full resolution).
        let diffs: Vec<f64> = (0..3).map(|c| chan_diff(&full, &r.image, 4, c)).collect();
        assert!(
            diffs[0] < 3.0 && diffs[1] < 3.0 && diffs[2] < 16.0,
            "{name}: {diffs:?}"
        );
        if name.contains("gray") {
            assert!(r.image.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        }
    }
    // A baseline grayscale JPEG written by the image crate.
    let gray = DynamicImage::ImageRgb8(photo(640, 480)).to_luma8();
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageLuma8(gray)
        .write_to(&mut buf, ImageFormat::Jpeg)
        .unwrap();
    let r = reduced(buf.get_ref(), 2.5);
    assert_eq!((r.grid.factor, r.image.dimensions()), (2, (320, 240)));
}

#[test]
fn cmyk_jpegs_take_the_full_decode() {
    let bytes = fixture("cmyk.jpg");
    let lim = DecodeLimits::default();
    let full = decode_rgb_bytes(&bytes, Path::new("cmyk.jpg"), &lim).unwrap();
    let r = reduced(&bytes, 8.0);
    assert_eq!(r.grid, PixelGrid::full(403, 301));
    assert_eq!(r.image, full);
}

#[test]
fn broken_jpegs_keep_the_reason_the_full_decode_gives() {
    let bytes = jpeg(&photo(1200, 800));
    let lim = DecodeLimits::default();
    let reason_full = |b: &[u8]| {
        decode_rgb_bytes(b, Path::new("x.jpg"), &lim)
            .err()
            .map(|s| s.reason)
    };
    let reason_reduced = |b: &[u8]| {
        decode_rgb_reduced_bytes(b, Path::new("x.jpg"), &lim, |_, _| 8.0)
            .err()
            .map(|s| s.reason)
    };
    let cut = &bytes[..bytes.len() * 2 / 3];
    assert_eq!(reason_reduced(cut), Some(SkipReason::Truncated));
    // Corrupted bytes through the headers and the entropy-coded data: whatever the full decode says (an
    // image, or a reason), the reduced decode says too — a file never changes from skipped to used.
    let step = bytes.len() / 97;
    for (k, pos) in (0..bytes.len() - 2).step_by(step).enumerate() {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x5A ^ (k as u8);
        assert_eq!(
            reason_reduced(&bad),
            reason_full(&bad),
            "byte {pos} of {}",
            bytes.len()
        );
    }
}

#[test]
fn a_decompression_bomb_is_refused_from_the_header_by_the_reduced_path() {
    // A real 64×64 JPEG whose frame header claims 60000×60000 (3.6 GP): refused before any decode, at full
    // or reduced scale alike.
    let mut bytes = jpeg(&photo(64, 64));
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bytes[sof + 5..sof + 7].copy_from_slice(&60000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&60000u16.to_be_bytes());
    let lim = DecodeLimits {
        max_side: 65535,
        ..DecodeLimits::default()
    };
    let r = decode_rgb_reduced_bytes(&bytes, Path::new("bomb.jpg"), &lim, |_, _| 8.0);
    assert_eq!(
        r.unwrap_err().reason,
        SkipReason::TooLarge { w: 60000, h: 60000 }
    );
}

#[test]
fn the_loader_reduces_large_jpegs_and_keeps_small_files_bit_identical() {
    use biaslab::data::source::samples_from_dir;
    use biaslab::data::DatasetKind;
    use biaslab::loader::{EvalLoader, LoaderOptions, MultiCropLoader};
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("big.jpg"), jpeg(&photo(1600, 1200))).unwrap();
    // 128 px, as the composed scenes: under MIN_REDUCED_PIXELS, never reduced.
    std::fs::write(d.path().join("small.jpg"), jpeg(&photo(128, 128))).unwrap();
    let samples = samples_from_dir(d.path(), "t", DatasetKind::Scene).unwrap();
    let opts = LoaderOptions {
        batch_size: 2,
        shuffle: false,
        threads: 1,
        ..LoaderOptions::default()
    };
    let cfg = MultiCropConfig::scaled(64, 1, 32, 2);
    let reduced = MultiCropLoader::new(samples.clone(), cfg.clone(), opts.clone()).unwrap();
    let full = MultiCropLoader::new(samples.clone(), cfg, opts)
        .unwrap()
        .with_dct_reduction(false);
    for (i, s) in samples.iter().enumerate() {
        let (a, b) = (
            full.load_sample(0, i).unwrap(),
            reduced.load_sample(0, i).unwrap(),
        );
        if s.path.ends_with("small.jpg") {
            assert_eq!(a, b);
        } else {
            for (x, y) in a.iter().zip(&b) {
                let mad = x.iter().zip(y).map(|(p, q)| (p - q).abs()).sum::<f32>() / x.len() as f32;
                assert!(mad > 0.0 && mad < 0.08, "{mad}");
            }
        }
    }
    let eval = |on: bool| {
        let l = EvalLoader::new(samples.clone(), EvalTransform { size: 48 }, 2, 1)
            .unwrap()
            .with_dct_reduction(on);
        let b = l.batches().next().unwrap();
        assert!(b.skipped.is_empty());
        Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap()
    };
    let (a, b) = (eval(false), eval(true));
    let mad = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).sum::<f32>() / a.len() as f32;
    assert!(mad > 0.0 && mad < 0.05, "{mad}");
}
