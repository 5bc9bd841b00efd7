//! Decoding fixtures of every format we claim, EXIF orientation, alpha handling, the bad-file corpus, and
//! arbitrary bytes: every outcome is an image or a typed `Skip`, never a panic.
//!
//! Not covered, because the `image` crate cannot write it and we commit no third-party files: palette PNG
//! (GIF covers palette decoding). CMYK and progressive JPEGs: generated fixtures in tests/decode_reduced.rs.
use std::io::Cursor;
use std::path::Path;

use biaslab::data::decode::{
    decode_rgb, decode_rgb_bytes, decode_rgba, DecodeLimits, SkipReason, NEUTRAL_BACKGROUND,
};
use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use proptest::prelude::*;

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128]))
}

fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, fmt).unwrap();
    buf.into_inner()
}

fn reason(bytes: &[u8], limits: &DecodeLimits) -> SkipReason {
    decode_rgb_bytes(bytes, Path::new("x"), limits)
        .unwrap_err()
        .reason
}

#[test]
fn every_format_decodes_to_its_pixels() {
    let lim = DecodeLimits::default();
    let rgb = gradient(40, 30);
    let lossless = [
        (
            "png rgb8",
            DynamicImage::ImageRgb8(rgb.clone()),
            ImageFormat::Png,
        ),
        (
            "bmp",
            DynamicImage::ImageRgb8(rgb.clone()),
            ImageFormat::Bmp,
        ),
        (
            "tiff",
            DynamicImage::ImageRgb8(rgb.clone()),
            ImageFormat::Tiff,
        ),
        (
            "webp lossless",
            DynamicImage::ImageRgb8(rgb.clone()),
            ImageFormat::WebP,
        ),
        (
            "png rgb16",
            DynamicImage::ImageRgb16(DynamicImage::ImageRgb8(rgb.clone()).to_rgb16()),
            ImageFormat::Png,
        ),
    ];
    for (name, img, fmt) in lossless {
        let got = decode_rgb_bytes(&encode(&img, fmt), Path::new(name), &lim).unwrap();
        assert_eq!(got, rgb, "{name}");
    }
    // Grey PNG comes back with equal channels.
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_fn(20, 20, |x, _| {
        image::Luma([x as u8 * 10])
    }));
    let got = decode_rgb_bytes(&encode(&grey, ImageFormat::Png), Path::new("l8"), &lim).unwrap();
    assert_eq!(got.get_pixel(7, 3).0, [70, 70, 70]);
    // Lossy or palette formats: right size, close pixels.
    for fmt in [ImageFormat::Jpeg, ImageFormat::Gif] {
        let got = decode_rgb_bytes(
            &encode(&DynamicImage::ImageRgb8(rgb.clone()), fmt),
            Path::new("l"),
            &lim,
        )
        .unwrap();
        assert_eq!(got.dimensions(), (40, 30), "{fmt:?}");
        let err: f64 = got
            .as_raw()
            .iter()
            .zip(rgb.as_raw())
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / rgb.as_raw().len() as f64;
        assert!(err < 12.0, "{fmt:?} mean abs error {err}");
    }
}

#[test]
fn gif_gives_its_first_frame() {
    use image::codecs::gif::GifEncoder;
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut bytes);
        let red = RgbaImage::from_pixel(20, 20, image::Rgba([255, 0, 0, 255]));
        let blue = RgbaImage::from_pixel(20, 20, image::Rgba([0, 0, 255, 255]));
        enc.encode_frames([image::Frame::new(red), image::Frame::new(blue)])
            .unwrap();
    }
    let got = decode_rgb_bytes(&bytes, Path::new("anim.gif"), &DecodeLimits::default()).unwrap();
    let p = got.get_pixel(5, 5).0;
    assert!(p[0] > 200 && p[2] < 50, "{p:?}");
}

#[test]
fn alpha_is_composited_for_rgb_and_kept_for_rgba() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("cutout.png");
    let mut img = RgbaImage::from_pixel(20, 20, image::Rgba([10, 200, 30, 255]));
    img.put_pixel(0, 0, image::Rgba([255, 255, 255, 0]));
    img.save(&path).unwrap();
    let rgb = decode_rgb(&path, &DecodeLimits::default()).unwrap();
    assert_eq!(rgb.get_pixel(0, 0).0, NEUTRAL_BACKGROUND);
    assert_eq!(rgb.get_pixel(5, 5).0, [10, 200, 30]);
    let rgba = decode_rgba(&path, &DecodeLimits::default()).unwrap();
    assert_eq!(rgba.get_pixel(0, 0).0, [255, 255, 255, 0]);
}

/// A minimal big-endian EXIF APP1 segment with one IFD0 entry: Orientation (0x0112, SHORT) = `value`.
fn exif_app1(value: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec(); // header, IFD0 at offset 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&value.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut seg = vec![0xFF, 0xE1];
    let len = (2 + 6 + tiff.len()) as u16;
    seg.extend_from_slice(&len.to_be_bytes());
    seg.extend_from_slice(b"Exif\x00\x00");
    seg.extend_from_slice(&tiff);
    seg
}

#[test]
fn exif_orientation_6_rotates_clockwise() {
    // 40×20: left half red, right half blue. Orientation 6 = rotate 90° CW → 20×40, red on top.
    let img = RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let jpeg = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
    let mut with_exif = jpeg[..2].to_vec(); // SOI
    with_exif.extend(exif_app1(6));
    with_exif.extend_from_slice(&jpeg[2..]);
    let lim = DecodeLimits::default();
    let plain = decode_rgb_bytes(&jpeg, Path::new("plain.jpg"), &lim).unwrap();
    assert_eq!(plain.dimensions(), (40, 20));
    let rotated = decode_rgb_bytes(&with_exif, Path::new("rot.jpg"), &lim).unwrap();
    assert_eq!(rotated.dimensions(), (20, 40));
    let (top, bottom) = (rotated.get_pixel(10, 5).0, rotated.get_pixel(10, 35).0);
    assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
}

#[test]
fn bad_file_corpus_is_skipped_with_the_right_reason() {
    let lim = DecodeLimits::default();
    let png = encode(&DynamicImage::ImageRgb8(gradient(40, 30)), ImageFormat::Png);
    let jpeg = encode(
        &DynamicImage::ImageRgb8(gradient(40, 30)),
        ImageFormat::Jpeg,
    );
    assert_eq!(reason(b"", &lim), SkipReason::Empty);
    assert_eq!(reason(&jpeg[..jpeg.len() / 2], &lim), SkipReason::Truncated);
    assert_eq!(reason(&png[..png.len() - 30], &lim), SkipReason::Truncated);
    assert_eq!(
        reason(b"just some text, named .jpg", &lim),
        SkipReason::NotAnImage
    );
    let tiny = encode(
        &DynamicImage::ImageRgb8(RgbImage::new(1, 1)),
        ImageFormat::Png,
    );
    assert_eq!(reason(&tiny, &lim), SkipReason::TooSmall { w: 1, h: 1 });
    let small_cap = DecodeLimits {
        max_pixels: 100,
        ..lim.clone()
    };
    assert_eq!(
        reason(&png, &small_cap),
        SkipReason::TooLarge { w: 40, h: 30 }
    );

    // A decompression bomb: a 14-byte BMP file header + 40-byte info header claiming 30000×30000 × 24 bit
    // (2.7 GB of pixels) and no pixel data. Refused from the header alone.
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&(54u32).to_le_bytes()); // file size (a lie)
    bmp.extend_from_slice(&[0, 0, 0, 0]);
    bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&30000i32.to_le_bytes());
    bmp.extend_from_slice(&30000i32.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0u8; 24]);
    assert!(
        matches!(reason(&bmp, &lim), SkipReason::TooLarge { .. }),
        "{:?}",
        reason(&bmp, &lim)
    );

    // Corrupt body behind a valid header.
    let mut broken = png.clone();
    for b in broken[60..].iter_mut() {
        *b ^= 0x5A;
    }
    let r = reason(&broken, &lim);
    assert!(
        matches!(r, SkipReason::Corrupt(_) | SkipReason::Truncated),
        "{r:?}"
    );
}

#[test]
fn unreadable_paths_are_io_skips_naming_the_path() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing.jpg");
    let s = decode_rgb(&missing, &DecodeLimits::default()).unwrap_err();
    assert_eq!(s.path, missing);
    assert!(matches!(s.reason, SkipReason::Io(_)));
    let s = decode_rgb(d.path(), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(s.reason, SkipReason::Io(_)), "{s}");
    assert!(s.to_string().contains(&d.path().display().to_string()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_rgb_bytes(&bytes, Path::new("fuzz"), &DecodeLimits::default());
    }

    #[test]
    fn mutated_valid_files_never_panic(
        fmt_i in 0usize..5,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
    ) {
        let fmt = [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Gif, ImageFormat::Bmp, ImageFormat::WebP][fmt_i];
        let mut bytes = encode(&DynamicImage::ImageRgb8(gradient(24, 24)), fmt);
        for (i, v) in flips {
            let k = i.index(bytes.len());
            bytes[k] ^= v;
        }
        bytes.truncate(cut.index(bytes.len()) + 1);
        match decode_rgb_bytes(&bytes, Path::new("mut"), &DecodeLimits::default()) {
            Ok(img) => prop_assert!(img.width() >= 16 && img.height() >= 16),
            Err(s) => prop_assert_eq!(s.path, Path::new("mut").to_path_buf()),
        }
    }
}
