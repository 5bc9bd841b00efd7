//! Object masks from a COCO annotation's `segmentation`: the three forms a file may hold, read into one
//! binary mask of the image's size (255 = the object's pixels). Context control (issue 20) needs them: an
//! object embedded as its pixels alone on a neutral fill says whether crops of different objects of one
//! scene land together because the objects merge or because the crops share their background.
//!
//! - polygons `[[x1, y1, x2, y2, …], …]` (COCO `iscrowd = 0`): filled by the even–odd rule at pixel centres
//!   (close to, not bit-identical with, pycocotools' rasteriser, which upsamples the outline);
//! - RLE `{"size": [h, w], "counts": [...] | "…"}` (`iscrowd = 1`): run lengths in column-major order,
//!   starting with background, the counts as a list or in pycocotools' compressed string form;
//! - biaslab's own `{"mask": "masks/<id>.png", "value": v}` (composed sets): the pixels of a label PNG equal
//!   to `v`; reading the PNG is the caller's (it knows the dataset root and confines the path to it).
use image::{GrayImage, Luma};
use serde_json::Value;

/// The largest mask biaslab rasterises (pixels): a hostile `size` cannot make it allocate more.
pub const MAX_MASK_PIXELS: u64 = 1 << 28;

/// A parsed `segmentation`.
#[derive(Debug, Clone, PartialEq)]
pub enum Segmentation {
    Polygons(Vec<Vec<f64>>),
    Rle {
        height: u32,
        width: u32,
        counts: Vec<u64>,
    },
    /// A label PNG (path relative to the annotations file) and the value of this object's pixels.
    MaskFile {
        path: String,
        value: u8,
    },
}

/// Parses a `segmentation` value; `Ok(None)` for an absent or empty one, `Err` with the reason for a
/// malformed one (the caller names the file and the annotation).
pub fn parse(v: &Value) -> Result<Option<Segmentation>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Array(polys) if polys.is_empty() => Ok(None),
        Value::Array(polys) => {
            let mut out = Vec::with_capacity(polys.len());
            for (i, p) in polys.iter().enumerate() {
                let coords = p
                    .as_array()
                    .ok_or_else(|| format!("polygon {i} is not a list of numbers"))?;
                let xy: Vec<f64> = coords
                    .iter()
                    .map(|c| c.as_f64().filter(|x| x.is_finite()))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        format!("polygon {i} holds a value that is not a finite number")
                    })?;
                if xy.len() < 6 || xy.len() % 2 != 0 {
                    return Err(format!(
                        "polygon {i} has {} coordinates; needs an even number, at least 6",
                        xy.len()
                    ));
                }
                out.push(xy);
            }
            Ok(Some(Segmentation::Polygons(out)))
        }
        Value::Object(o) if o.contains_key("mask") => {
            let path = o["mask"]
                .as_str()
                .ok_or("`mask` is not a path")?
                .to_string();
            let value = o
                .get("value")
                .and_then(Value::as_u64)
                .filter(|v| (1..=255).contains(v))
                .ok_or("`value` must be an integer 1–255")? as u8;
            Ok(Some(Segmentation::MaskFile { path, value }))
        }
        Value::Object(o) => {
            let size = o
                .get("size")
                .and_then(Value::as_array)
                .filter(|s| s.len() == 2)
                .and_then(|s| Some((s[0].as_u64()?, s[1].as_u64()?)))
                .ok_or("RLE `size` must be [height, width]")?;
            let (h, w) = size;
            if h == 0 || w == 0 || h.saturating_mul(w) > MAX_MASK_PIXELS || h > u32::MAX as u64 {
                return Err(format!("RLE size {h} × {w} is empty or too large"));
            }
            let counts = match o.get("counts") {
                Some(Value::Array(c)) => c
                    .iter()
                    .map(Value::as_u64)
                    .collect::<Option<Vec<u64>>>()
                    .ok_or("RLE `counts` must be non-negative integers")?,
                Some(Value::String(s)) => decompress_counts(s)?,
                _ => return Err("RLE `counts` must be a list or a string".into()),
            };
            let total: u64 = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
            if total != h * w {
                return Err(format!(
                    "RLE counts cover {total} pixels, the size says {}",
                    h * w
                ));
            }
            Ok(Some(Segmentation::Rle {
                height: h as u32,
                width: w as u32,
                counts,
            }))
        }
        _ => Err("not a polygon list, an RLE object or a mask reference".into()),
    }
}

/// pycocotools' compressed RLE string (`rleFrString`): each count in 5-bit groups, 6 bits a character
/// from '0', the 0x20 bit "more follows", the 0x10 bit of the last group a sign; from the third count on
/// a count is stored as the difference to the count two before.
pub fn decompress_counts(s: &str) -> Result<Vec<u64>, String> {
    let b = s.as_bytes();
    let mut counts: Vec<i64> = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let (mut x, mut k, mut more) = (0i64, 0u32, true);
        while more {
            let c = *b
                .get(p)
                .ok_or("compressed RLE string ends inside a count")? as i64
                - 48;
            if !(0..64).contains(&c) || k > 12 {
                return Err(format!("compressed RLE string: bad character at {p}"));
            }
            x |= (c & 0x1f) << (5 * k);
            more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more && c & 0x10 != 0 {
                x |= (-1i64).checked_shl(5 * k).unwrap_or(0);
            }
        }
        if counts.len() > 2 {
            x += counts[counts.len() - 2];
        }
        if x < 0 {
            return Err("compressed RLE string decodes to a negative count".into());
        }
        counts.push(x);
    }
    Ok(counts.into_iter().map(|c| c as u64).collect())
}

/// The binary mask (255 = object) of `seg` on a `width` × `height` image. `label_png` is the label PNG of
/// a [`Segmentation::MaskFile`], read by the caller; it must have the image's size.
pub fn rasterise(
    seg: &Segmentation,
    width: u32,
    height: u32,
    label_png: Option<&GrayImage>,
) -> Result<GrayImage, String> {
    if (width as u64) * (height as u64) > MAX_MASK_PIXELS {
        return Err(format!("image {width} × {height} is too large for a mask"));
    }
    match seg {
        Segmentation::Polygons(polys) => Ok(fill_polygons(polys, width, height)),
        Segmentation::Rle {
            height: h,
            width: w,
            counts,
        } => {
            if (*w, *h) != (width, height) {
                return Err(format!(
                    "RLE size {h} × {w} differs from the image's {height} × {width}"
                ));
            }
            let mut m = GrayImage::new(width, height);
            let (mut i, mut on) = (0u64, false);
            for &c in counts {
                if on {
                    for j in i..i + c {
                        // column-major: index = x * height + y
                        let (x, y) = ((j / height as u64) as u32, (j % height as u64) as u32);
                        m.put_pixel(x, y, Luma([255]));
                    }
                }
                i += c;
                on = !on;
            }
            Ok(m)
        }
        Segmentation::MaskFile { value, .. } => {
            let png = label_png.ok_or("the mask PNG was not read")?;
            if png.dimensions() != (width, height) {
                return Err(format!(
                    "mask is {} × {}, the image {width} × {height}",
                    png.width(),
                    png.height()
                ));
            }
            Ok(GrayImage::from_fn(width, height, |x, y| {
                Luma([if png.get_pixel(x, y)[0] == *value {
                    255
                } else {
                    0
                }])
            }))
        }
    }
}

/// Even–odd fill of every polygon at pixel centres (x + ½, y + ½); polygons are xor-ed, so a hole given
/// as a second ring inside the first stays empty, as COCO's merge of polygon rings does for holes.
fn fill_polygons(polys: &[Vec<f64>], width: u32, height: u32) -> GrayImage {
    let mut inside = vec![false; width as usize * height as usize];
    for poly in polys {
        let pts: Vec<(f64, f64)> = poly.chunks(2).map(|c| (c[0], c[1])).collect();
        let (ymin, ymax) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let y0 = (ymin - 0.5).ceil().max(0.0) as u32;
        let y1 = ((ymax - 0.5).floor()).min(height as f64 - 1.0);
        if y1 < 0.0 {
            continue;
        }
        for y in y0..=y1 as u32 {
            let cy = y as f64 + 0.5;
            let mut xs: Vec<f64> = Vec::new();
            for k in 0..pts.len() {
                let (a, b) = (pts[k], pts[(k + 1) % pts.len()]);
                // half-open in y so a vertex on the scan line counts once
                if (a.1 <= cy) != (b.1 <= cy) {
                    xs.push(a.0 + (cy - a.1) * (b.0 - a.0) / (b.1 - a.1));
                }
            }
            xs.sort_by(f64::total_cmp);
            for span in xs.chunks_exact(2) {
                let x0 = (span[0] - 0.5).ceil().max(0.0) as u32;
                let x1 = (span[1] - 0.5).floor().min(width as f64 - 1.0);
                if x1 < 0.0 {
                    continue;
                }
                for x in x0..=x1 as u32 {
                    let i = y as usize * width as usize + x as usize;
                    inside[i] = !inside[i];
                }
            }
        }
    }
    GrayImage::from_fn(width, height, |x, y| {
        Luma([if inside[y as usize * width as usize + x as usize] {
            255
        } else {
            0
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ones(m: &GrayImage) -> usize {
        m.pixels().filter(|p| p[0] == 255).count()
    }

    #[test]
    fn a_square_polygon_fills_its_pixels_and_a_hole_stays_empty() {
        let seg = parse(&json!([[2, 2, 8, 2, 8, 8, 2, 8]])).unwrap().unwrap();
        let m = rasterise(&seg, 10, 10, None).unwrap();
        // centres 2.5 … 7.5: pixels 2..=7 in x and y
        assert_eq!(ones(&m), 36);
        assert_eq!(m.get_pixel(2, 2)[0], 255);
        assert_eq!(m.get_pixel(8, 8)[0], 0);
        let holed = parse(&json!([
            [0, 0, 10, 0, 10, 10, 0, 10],
            [3, 3, 7, 3, 7, 7, 3, 7]
        ]))
        .unwrap()
        .unwrap();
        let m = rasterise(&holed, 10, 10, None).unwrap();
        assert_eq!(ones(&m), 100 - 16);
        assert_eq!(m.get_pixel(5, 5)[0], 0);
    }

    // A 4 (h) × 3 (w) mask with pixels (x=1, y=1..2) and (x=2, y=0) set: column-major indices 5, 6, 8, so
    // runs [5, 2, 1, 1, 3]; pycocotools' string stores the 4th and 5th as differences (1 − 2 = −1 → 'O',
    // 3 − 1 = 2 → '2'): "521O2".
    #[test]
    fn rle_lists_and_compressed_strings_decode_column_major() {
        let list = parse(&json!({"size": [4, 3], "counts": [5, 2, 1, 1, 3]}))
            .unwrap()
            .unwrap();
        let m = rasterise(&list, 3, 4, None).unwrap();
        let set: Vec<(u32, u32)> = m
            .enumerate_pixels()
            .filter(|p| p.2[0] == 255)
            .map(|p| (p.0, p.1))
            .collect();
        assert_eq!(set, vec![(2, 0), (1, 1), (1, 2)]);
        assert_eq!(decompress_counts("521O2").unwrap(), vec![5, 2, 1, 1, 3]);
        // 49 takes two 5-bit groups: 'a' (17 | more) then '1' (1 << 5)
        assert_eq!(decompress_counts("a10").unwrap(), vec![49, 0]);
        let s = parse(&json!({"size": [4, 3], "counts": "521O2"}))
            .unwrap()
            .unwrap();
        assert_eq!(rasterise(&s, 3, 4, None).unwrap(), m);
    }

    #[test]
    fn malformed_segmentations_are_errors_not_panics() {
        for bad in [
            json!([[1, 2, 3]]),
            json!([["x", 1, 2, 3, 4, 5]]),
            json!({"size": [4, 3], "counts": [1, 2]}),
            json!({"size": [1_000_000, 1_000_000], "counts": [1]}),
            json!({"size": [4], "counts": [12]}),
            json!({"size": [4, 3], "counts": "~~~"}),
            json!({"mask": "m.png", "value": 0}),
            json!(7),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(parse(&json!([])).unwrap(), None);
        let seg = parse(&json!({"size": [4, 3], "counts": [12]}))
            .unwrap()
            .unwrap();
        assert!(rasterise(&seg, 4, 4, None).is_err());
        // a polygon far outside the image rasterises to nothing
        let far = parse(&json!([[-50, -50, -40, -50, -40, -40]]))
            .unwrap()
            .unwrap();
        assert_eq!(ones(&rasterise(&far, 8, 8, None).unwrap()), 0);
    }

    #[test]
    fn a_label_png_gives_the_pixels_of_its_value() {
        let png = GrayImage::from_fn(4, 4, |x, _| Luma([if x < 2 { 1 } else { 2 }]));
        let seg = parse(&json!({"mask": "masks/a.png", "value": 2}))
            .unwrap()
            .unwrap();
        let m = rasterise(&seg, 4, 4, Some(&png)).unwrap();
        assert_eq!(ones(&m), 8);
        assert!(rasterise(&seg, 5, 4, Some(&png)).is_err());
    }
}
