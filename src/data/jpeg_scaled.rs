//! JPEG decoding at 1/2, 1/4 or 1/8 scale in the DCT domain (jpeg-decoder's reduced IDCT, as libjpeg-turbo's
//! `scale_num/scale_denom`): entropy decoding still reads every coefficient, but the IDCT, upsampling and
//! colour conversion run on 1/d² of the pixels and the output buffer is 1/d² the size. Every function here
//! answers "cannot" with `None`, and the caller then decodes at full size the usual way, so a file this path
//! does not handle keeps exactly the result (image or Skip reason) it had before.
use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};

/// The DCT reductions jpeg-decoder implements (IDCT sizes 8, 4, 2, 1 of 8), largest first.
pub const DCT_REDUCTIONS: [u32; 4] = [8, 4, 2, 1];

/// Sample precision and component count from the first start-of-frame segment, walking segments by their
/// lengths (so an EXIF thumbnail's own SOF inside APP1 is skipped). `None` when no SOF precedes the scan.
pub fn frame_header(bytes: &[u8]) -> Option<(u8, u8)> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut pos = 2;
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while *bytes.get(pos)? == 0xFF && *bytes.get(pos + 1)? == 0xFF {
            pos += 1;
        }
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(pos + 1)?;
        let len = u16::from_be_bytes([*bytes.get(pos + 2)?, *bytes.get(pos + 3)?]) as usize;
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                // length(2) precision(1) height(2) width(2) components(1)
                return Some((*bytes.get(pos + 4)?, *bytes.get(pos + 9)?));
            }
            0xDA => return None, // a scan before any frame header
            _ if len < 2 => return None,
            _ => pos += 2 + len,
        }
    }
}

/// Decodes `bytes` (a JPEG already checked complete and within the decode limits) with every side divided by
/// `reduction` (2, 4 or 8) and rounded up, as stored (EXIF orientation not applied). Only 8-bit grayscale and
/// three-component images: jpeg-decoder panics on two-component frames, and CMYK, 12/16-bit and lossless files
/// are rare enough to take the full-size path. `None` on anything else, including any decoder error.
pub fn decode_reduced(bytes: &[u8], reduction: u32, max_alloc: u64) -> Option<DynamicImage> {
    if !matches!(reduction, 2 | 4 | 8) || !matches!(frame_header(bytes)?, (8, 1) | (8, 3)) {
        return None;
    }
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(max_alloc).unwrap_or(usize::MAX));
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let (w, h) = (
        (info.width as u32).div_ceil(reduction),
        (info.height as u32).div_ceil(reduction),
    );
    // jpeg-decoder picks the smallest IDCT whose output reaches the request on either side; asking for
    // exactly ceil(side / d) selects IDCT size 8 / d. Check it did rather than trust the rule.
    let got = decoder.scale(w as u16, h as u16).ok()?;
    if (got.0 as u32, got.1 as u32) != (w, h) {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    let n = w as usize * h as usize;
    if pixels.len() == 3 * n {
        RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    } else if pixels.len() == n {
        GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        None
    }
}

/// Whether each axis of the oriented image runs against the stored image's axis (x, y), as
/// `DynamicImage::apply_orientation` transforms it. A reduced image covers ceil(side / d)·d stored pixels,
/// the excess past the stored image's right/bottom edge; on a reversed axis that excess lands before the
/// oriented image's first pixel.
pub fn reversed_axes(orientation: Orientation) -> (bool, bool) {
    match orientation {
        Orientation::NoTransforms | Orientation::Rotate90FlipH => (false, false),
        Orientation::FlipHorizontal => (true, false),
        Orientation::FlipVertical => (false, true),
        Orientation::Rotate180 | Orientation::Rotate270FlipH => (true, true),
        // rotate90 (clockwise): new x = stored y read bottom-up, new y = stored x.
        Orientation::Rotate90 => (true, false),
        // rotate270: new x = stored y, new y = stored x read right-to-left.
        Orientation::Rotate270 => (false, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_axes_match_apply_orientation() {
        // A 3×2 image whose pixel value encodes its stored position; after orientation, the stored x (or y)
        // of the oriented first and last pixel along each axis shows the direction.
        let stored = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 0]));
        for o in [
            Orientation::NoTransforms,
            Orientation::Rotate90,
            Orientation::Rotate180,
            Orientation::Rotate270,
            Orientation::FlipHorizontal,
            Orientation::FlipVertical,
            Orientation::Rotate90FlipH,
            Orientation::Rotate270FlipH,
        ] {
            let mut img = DynamicImage::ImageRgb8(stored.clone());
            img.apply_orientation(o);
            let img = img.to_rgb8();
            let (w, h) = img.dimensions();
            let (a, bx, by) = (
                img.get_pixel(0, 0).0,
                img.get_pixel(w - 1, 0).0,
                img.get_pixel(0, h - 1).0,
            );
            // The stored channel that changes along oriented x, and whether it decreases.
            let along = |p: [u8; 3]| {
                if p[0] != a[0] {
                    p[0] < a[0]
                } else {
                    p[1] < a[1]
                }
            };
            assert_eq!(reversed_axes(o), (along(bx), along(by)), "{o:?}");
        }
    }

    #[test]
    fn frame_header_skips_segments_and_rejects_non_jpeg() {
        // SOI, APP1 (length 8, with a fake SOF inside that must not be read), SOF0 (8-bit, 3 components).
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xC0, 12, 0, 0, 0];
        b.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 8, 0, 16, 0, 16, 3]);
        assert_eq!(frame_header(&b), Some((8, 3)));
        assert_eq!(frame_header(&[0x89, b'P', b'N', b'G']), None);
        assert_eq!(frame_header(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
        assert_eq!(frame_header(&[0xFF, 0xD8, 0xFF, 0xE0]), None);
    }
}
