//! Robust image decoding for the loader and `datasets check`: every format the `image` crate reads, EXIF
//! orientation applied, alpha composited over a neutral background (or kept, for cut-outs), and decode limits
//! against decompression bombs. A file that cannot be used becomes a [`Skip`] with its reason — never a panic.
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use image::{
    DynamicImage, GrayImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage,
    RgbaImage,
};

use super::confine::Outside;
use super::jpeg_scaled::{decode_reduced, reversed_axes, DCT_REDUCTIONS};

/// Why a file was not used. Displayed in `datasets check` reports and loader batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A zero-byte file.
    Empty,
    /// The data stops before the image does (a cut download, a JPEG without its end marker).
    Truncated,
    /// The bytes are not any image format we know (e.g. text named `.jpg`).
    NotAnImage,
    /// Smaller than `DecodeLimits::min_side` on either side.
    TooSmall { w: u32, h: u32 },
    /// Larger than `DecodeLimits::max_pixels`/`max_side`, or the file is over `max_file_bytes` (w = h = 0).
    TooLarge { w: u32, h: u32 },
    /// A recognised format using a feature the decoder does not support.
    Unsupported(String),
    /// A recognised format whose data is malformed.
    Corrupt(String),
    /// The file could not be read.
    Io(String),
    /// A path from inside a data file, or a symlink, that leads out of the dataset root: never opened.
    Outside(Outside),
    /// Object-only crops need the box's object mask, and this one has none that can be used.
    NoMask(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty file"),
            Self::Truncated => f.write_str("truncated"),
            Self::NotAnImage => f.write_str("not an image"),
            Self::TooSmall { w, h } => write!(f, "too small ({w}x{h})"),
            Self::TooLarge { w, h } if *w == 0 && *h == 0 => f.write_str("file too large"),
            Self::TooLarge { w, h } => write!(f, "too large ({w}x{h})"),
            Self::Unsupported(s) => write!(f, "unsupported: {s}"),
            Self::Corrupt(s) => write!(f, "corrupt: {s}"),
            Self::Io(s) => write!(f, "i/o error: {s}"),
            Self::Outside(o) => write!(f, "{o}"),
            Self::NoMask(why) => write!(f, "no usable object mask: {why}"),
        }
    }
}

/// A file the loader did not use, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub path: PathBuf,
    pub reason: SkipReason,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for Skip {}

/// Bounds on what a decode may cost.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeLimits {
    /// Either side below this is `TooSmall`: a 1×1 spacer or a favicon holds nothing a 96 px crop can use.
    pub min_side: u32,
    /// Either side above this is `TooLarge` (checked from the header, before any pixel is decoded).
    pub max_side: u32,
    /// Width × height above this is `TooLarge`: the decompression-bomb guard.
    pub max_pixels: u64,
    /// Cap handed to `image::Limits::max_alloc` for the decoder's own buffers.
    pub max_alloc: u64,
    /// Files larger than this are not read at all.
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            // 16 px: the 64 px emoji of emoji-datasource-google must pass; 1×1 spacers and 8 px glyphs must not.
            min_side: 16,
            // 16384: the largest side a JPEG can even hold is 65535; no source in data-sources.tsv exceeds 8k.
            max_side: 16_384,
            // 64 MP (8192²): 4× the largest wallpaper we ship (plasma 5120×2880 ≈ 14.7 MP); RGBA8 = 256 MiB.
            max_pixels: 64 * 1024 * 1024,
            // 512 MiB: image's own default; the 64 MP RGBA8 output plus decoder scratch fits under it.
            max_alloc: 512 * 1024 * 1024,
            // 256 MiB: a compressed image above this is not a photo in any of our sources.
            max_file_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The fill colour under transparent pixels: SwAV's normalisation mean (main_swav.py, 0.485/0.456/0.406 ×
/// 255), so a fully transparent pixel normalises to ≈ 0 and adds no signal of its own.
pub const NEUTRAL_BACKGROUND: [u8; 3] = [124, 116, 104];

fn skip(origin: &Path, reason: SkipReason) -> Skip {
    Skip {
        path: origin.to_path_buf(),
        reason,
    }
}

fn read_file(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>, Skip> {
    let meta = std::fs::metadata(path).map_err(|e| skip(path, SkipReason::Io(e.to_string())))?;
    if !meta.is_file() {
        return Err(skip(path, SkipReason::Io("not a regular file".into())));
    }
    if meta.len() > limits.max_file_bytes {
        return Err(skip(path, SkipReason::TooLarge { w: 0, h: 0 }));
    }
    std::fs::read(path).map_err(|e| skip(path, SkipReason::Io(e.to_string())))
}

/// Decodes a file to RGB, alpha composited over [`NEUTRAL_BACKGROUND`].
pub fn decode_rgb(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, Skip> {
    let bytes = read_file(path, limits)?;
    decode_rgb_bytes(&bytes, path, limits)
}

/// Decodes a file to RGBA, keeping alpha (object cut-outs: alpha is the object mask).
pub fn decode_rgba(path: &Path, limits: &DecodeLimits) -> Result<RgbaImage, Skip> {
    let bytes = read_file(path, limits)?;
    decode_rgba_bytes(&bytes, path, limits)
}

/// Decodes a file to 8-bit grey as stored (label masks: a pixel's value is its object's label, so a grey
/// image is read as is and never blended).
pub fn decode_gray(path: &Path, limits: &DecodeLimits) -> Result<GrayImage, Skip> {
    let bytes = read_file(path, limits)?;
    Ok(decode_dynamic(&bytes, path, limits, FULL)?.0.to_luma8())
}

/// Decodes in-memory bytes to RGB; `origin` names the file in the `Skip`.
pub fn decode_rgb_bytes(
    bytes: &[u8],
    origin: &Path,
    limits: &DecodeLimits,
) -> Result<RgbImage, Skip> {
    Ok(to_rgb(decode_dynamic(bytes, origin, limits, FULL)?.0))
}

fn to_rgb(img: DynamicImage) -> RgbImage {
    if img.color().has_alpha() {
        composite(&img.to_rgba8(), NEUTRAL_BACKGROUND)
    } else {
        img.to_rgb8()
    }
}

/// How a possibly reduced decode sits on the full image's pixel grid, in oriented coordinates: pixel (x, y)
/// of the decoded image covers full-image pixels `[origin_x + x·factor, origin_x + (x+1)·factor)` (and so on
/// for y). A full decode is factor 1, origin 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelGrid {
    /// The full image's width and height after EXIF orientation: the frame bboxes and crops are drawn in.
    pub full_w: u32,
    pub full_h: u32,
    /// 1, 2, 4 or 8.
    pub factor: u32,
    /// ≤ 0: a reduced side covers ceil(side / factor)·factor full pixels, and on an axis that EXIF
    /// orientation reverses the excess lies before the first full pixel.
    pub origin_x: i64,
    pub origin_y: i64,
}

impl PixelGrid {
    /// The grid of an image decoded at full size.
    pub fn full(w: u32, h: u32) -> Self {
        Self {
            full_w: w,
            full_h: h,
            factor: 1,
            origin_x: 0,
            origin_y: 0,
        }
    }

    /// The rectangle of full-image pixels (x, y, w, h) in decoded-image coordinates, fractional where the
    /// rectangle does not fall on block edges. Exact (integers unchanged) at factor 1.
    pub fn map_rect(&self, x: u32, y: u32, w: u32, h: u32) -> [f64; 4] {
        let f = self.factor as f64;
        [
            (x as i64 - self.origin_x) as f64 / f,
            (y as i64 - self.origin_y) as f64 / f,
            w as f64 / f,
            h as f64 / f,
        ]
    }
}

/// An RGB decode that may be smaller than the file, with its place on the full image's grid.
#[derive(Debug, Clone)]
pub struct Reduced {
    pub image: RgbImage,
    pub grid: PixelGrid,
}

/// Decodes a file to RGB as [`decode_rgb`] does, but a JPEG at the largest DCT reduction (1/2, 1/4, 1/8)
/// that is at most `max_factor(full_w, full_h)` — the caller's bound from the oriented full size, e.g. how
/// far its smallest crop can shrink and still cover its output. Other formats, CMYK and 12-bit JPEGs, and
/// any file the reduced decoder refuses decode at full size (same image, same `Skip` as `decode_rgb`). The
/// size limits are checked on the full header size before either decode.
pub fn decode_rgb_reduced(
    path: &Path,
    limits: &DecodeLimits,
    max_factor: impl FnOnce(u32, u32) -> f64,
) -> Result<Reduced, Skip> {
    let bytes = read_file(path, limits)?;
    decode_rgb_reduced_bytes(&bytes, path, limits, max_factor)
}

/// [`decode_rgb_reduced`] on in-memory bytes; `origin` names the file in the `Skip`.
pub fn decode_rgb_reduced_bytes(
    bytes: &[u8],
    origin: &Path,
    limits: &DecodeLimits,
    max_factor: impl FnOnce(u32, u32) -> f64,
) -> Result<Reduced, Skip> {
    let (img, grid) = decode_dynamic(bytes, origin, limits, Some(max_factor))?;
    Ok(Reduced {
        image: to_rgb(img),
        grid,
    })
}

/// Decodes in-memory bytes to RGBA; `origin` names the file in the `Skip`.
pub fn decode_rgba_bytes(
    bytes: &[u8],
    origin: &Path,
    limits: &DecodeLimits,
) -> Result<RgbaImage, Skip> {
    Ok(decode_dynamic(bytes, origin, limits, FULL)?.0.to_rgba8())
}

/// Alpha-composites `rgba` over a solid `bg` ("over" operator, straight alpha).
pub fn composite(rgba: &RgbaImage, bg: [u8; 3]) -> RgbImage {
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = src[3] as u32;
        for c in 0..3 {
            // Rounded integer blend: (s·a + b·(255−a)) / 255.
            dst[c] = ((src[c] as u32 * a + bg[c] as u32 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// A JPEG is complete when an end-of-image marker (FF D9) follows the last start-of-scan (FF DA). Neither can
/// occur inside entropy-coded data (0xFF is byte-stuffed there), and an EXIF thumbnail's markers all precede
/// the main scan. PIL refuses such files by default ("image file is truncated"); zune-jpeg would pad with grey.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((last_sos, last_eoi), (Some(s), Some(e)) if e > s)
}

fn classify(err: ImageError) -> SkipReason {
    match err {
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            SkipReason::Truncated
        }
        ImageError::IoError(e) => SkipReason::Io(e.to_string()),
        ImageError::Limits(_) => SkipReason::TooLarge { w: 0, h: 0 },
        ImageError::Unsupported(e) => SkipReason::Unsupported(e.to_string()),
        other => {
            let msg = other.to_string();
            let lower = msg.to_lowercase();
            if [
                "eof",
                "end of",
                "truncat",
                "not enough data",
                "no more data",
            ]
            .iter()
            .any(|k| lower.contains(k))
            {
                SkipReason::Truncated
            } else {
                SkipReason::Corrupt(msg)
            }
        }
    }
}

/// Width and height after `orientation`.
fn oriented(w: u32, h: u32, orientation: Orientation) -> (u32, u32) {
    match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (h, w),
        _ => (w, h),
    }
}

/// `decode_dynamic`'s "no reduction" argument.
const FULL: Option<fn(u32, u32) -> f64> = None;

/// The full decode; with `max_factor`, a JPEG may instead decode reduced (see [`decode_rgb_reduced`]).
fn decode_dynamic<F: FnOnce(u32, u32) -> f64>(
    bytes: &[u8],
    origin: &Path,
    limits: &DecodeLimits,
    max_factor: Option<F>,
) -> Result<(DynamicImage, PixelGrid), Skip> {
    let fail = |reason| skip(origin, reason);
    if bytes.is_empty() {
        return Err(fail(SkipReason::Empty));
    }
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(fail(SkipReason::TooLarge { w: 0, h: 0 }));
    }
    // The content decides the format, never the file name: a text file named `.jpg` is NotAnImage.
    let format = image::guess_format(bytes).map_err(|_| fail(SkipReason::NotAnImage))?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(fail(SkipReason::Truncated));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut lim = Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    lim.max_alloc = Some(limits.max_alloc);
    reader.limits(lim);
    let mut decoder = reader.into_decoder().map_err(|e| fail(classify(e)))?;
    // Header dimensions first: a bomb is refused before a single pixel is allocated.
    let (w, h) = decoder.dimensions();
    if w > limits.max_side || h > limits.max_side || w as u64 * h as u64 > limits.max_pixels {
        return Err(fail(SkipReason::TooLarge { w, h }));
    }
    if w < limits.min_side || h < limits.min_side {
        return Err(fail(SkipReason::TooSmall { w, h }));
    }
    // A malformed EXIF block must not cost the image: fall back to "as stored".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (full_w, full_h) = oriented(w, h, orientation);
    let factor = match max_factor {
        Some(f) if format == ImageFormat::Jpeg => {
            let bound = f(full_w, full_h);
            DCT_REDUCTIONS
                .into_iter()
                .find(|&d| d as f64 <= bound)
                .unwrap_or(1)
        }
        _ => 1,
    };
    if factor > 1 {
        if let Some(mut img) = decode_reduced(bytes, factor, limits.max_alloc) {
            img.apply_orientation(orientation);
            let (rev_x, rev_y) = reversed_axes(orientation);
            let excess = |full: u32, reduced: u32| full as i64 - (reduced * factor) as i64;
            let grid = PixelGrid {
                full_w,
                full_h,
                factor,
                origin_x: if rev_x {
                    excess(full_w, img.width())
                } else {
                    0
                },
                origin_y: if rev_y {
                    excess(full_h, img.height())
                } else {
                    0
                },
            };
            return Ok((img, grid));
        }
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| fail(classify(e)))?;
    img.apply_orientation(orientation);
    Ok((img, PixelGrid::full(full_w, full_h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_blends_opaque_transparent_and_half() {
        let mut rgba = RgbaImage::new(3, 1);
        rgba.put_pixel(0, 0, image::Rgba([200, 10, 0, 255]));
        rgba.put_pixel(1, 0, image::Rgba([200, 10, 0, 0]));
        rgba.put_pixel(2, 0, image::Rgba([255, 255, 255, 128]));
        let rgb = composite(&rgba, [100, 100, 100]);
        assert_eq!(rgb.get_pixel(0, 0).0, [200, 10, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, [100, 100, 100]);
        // (255·128 + 100·127 + 127) / 255 = 178
        assert_eq!(rgb.get_pixel(2, 0).0, [178, 178, 178]);
    }

    #[test]
    fn jpeg_completeness_needs_eoi_after_last_sos() {
        assert!(jpeg_is_complete(&[
            0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9
        ]));
        assert!(!jpeg_is_complete(&[
            0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA, 1, 2
        ]));
        assert!(!jpeg_is_complete(&[0xFF, 0xD8]));
    }

    #[test]
    fn skip_reasons_display_their_numbers() {
        assert_eq!(
            SkipReason::TooSmall { w: 1, h: 2 }.to_string(),
            "too small (1x2)"
        );
        assert_eq!(
            SkipReason::TooLarge { w: 0, h: 0 }.to_string(),
            "file too large"
        );
    }
}
