//! Dataset-level bias statistics without a model (shared/DESIGN.md, "Dataset inspection"): per image size,
//! aspect, colourfulness, object-area share, perceptual and exact hashes; per label counts; exact and near
//! duplicates; one summary row. Everything is a polars DataFrame with named columns, written as Parquet.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use image::RgbaImage;
use polars::prelude::*;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::data::coco::CocoDataset;
use crate::data::compose::{load_rgba, Skipped, ANNOTATIONS_FILE};
use crate::data::index::{read_index, INDEX_FILE};
use crate::error::{Error, IoContext, Result};
use crate::report::io::write_parquet;

pub const COL_DATASET: &str = "dataset";
pub const COL_ID: &str = "id";
pub const COL_PATH: &str = "path";
pub const COL_LABEL: &str = "label";
pub const COL_WIDTH: &str = "width";
pub const COL_HEIGHT: &str = "height";
/// width / height.
pub const COL_ASPECT: &str = "aspect";
pub const COL_COLOURFULNESS: &str = "colourfulness";
pub const COL_OBJECT_AREA_SHARE: &str = "object_area_share";
pub const COL_DHASH: &str = "dhash";
pub const COL_SHA256: &str = "sha256";
pub const COL_COUNT: &str = "count";
pub const COL_SHARE: &str = "share";
pub const COL_ID_A: &str = "id_a";
pub const COL_ID_B: &str = "id_b";
/// `exact` (same sha256) or `near` (different bytes, dhash Hamming distance ≤ [`NEAR_DUP_MAX_HAMMING`]).
pub const COL_MATCH: &str = "match";
pub const COL_HAMMING: &str = "hamming";
pub const COL_REASON: &str = "reason";
pub const COL_N_IMAGES: &str = "n_images";
pub const COL_N_SKIPPED: &str = "n_skipped";
pub const COL_N_LABELS: &str = "n_labels";
pub const COL_LABEL_ENTROPY_BITS: &str = "label_entropy_bits";
pub const COL_MEDIAN_WIDTH: &str = "median_width";
pub const COL_MEDIAN_HEIGHT: &str = "median_height";
pub const COL_MEAN_COLOURFULNESS: &str = "mean_colourfulness";
pub const COL_MEAN_OBJECT_SHARE: &str = "mean_object_share";
/// Images whose bytes equal an earlier image's (n − distinct sha256).
pub const COL_N_EXACT_DUP: &str = "n_exact_dup";
/// Pairs of images with different bytes but dhash Hamming distance ≤ [`NEAR_DUP_MAX_HAMMING`].
pub const COL_N_NEAR_DUP: &str = "n_near_dup";

pub const PER_IMAGE_FILE: &str = "per_image.parquet";
pub const PER_LABEL_FILE: &str = "per_label.parquet";
pub const DUPLICATES_FILE: &str = "duplicates.parquet";
pub const SUMMARY_FILE: &str = "summary.parquet";
pub const SKIPPED_FILE: &str = "skipped.parquet";

/// Near-duplicate threshold on 64-bit hashes: N. Krawetz, "Looks Like It" (hackerfactor.com, 2011): "a
/// distance of 5 means a few things may be different, but they are probably still close enough to be
/// similar"; dHash itself is from Krawetz, "Kind of Like That" (2013).
pub const NEAR_DUP_MAX_HAMMING: u32 = 5;
/// Hasler & Süsstrunk (2003), "Measuring colourfulness in natural images", eq. 3: M = σ + 0.3 μ.
const HASLER_MU_WEIGHT: f64 = 0.3;
/// Image extensions accepted when a directory has no index.parquet (an ImageFolder tree).
const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff"];

/// The inspection result; each frame has the column consts above.
#[derive(Debug, Clone)]
pub struct InspectReport {
    pub per_image: DataFrame,
    pub per_label: DataFrame,
    pub duplicates: DataFrame,
    pub summary: DataFrame,
    pub skipped: Vec<Skipped>,
}

/// Hasler & Süsstrunk (2003) colourfulness M of RGB pixels: rg = R − G, yb = (R + G)/2 − B,
/// M = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²) (population σ). 0 for no pixels.
pub fn colourfulness(pixels: impl Iterator<Item = [u8; 3]>) -> f64 {
    let (mut n, mut s_rg, mut s_yb, mut ss_rg, mut ss_yb) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for [r, g, b] in pixels {
        let (r, g, b) = (r as f64, g as f64, b as f64);
        let rg = r - g;
        let yb = 0.5 * (r + g) - b;
        n += 1.0;
        s_rg += rg;
        s_yb += yb;
        ss_rg += rg * rg;
        ss_yb += yb * yb;
    }
    if n == 0.0 {
        return 0.0;
    }
    let (m_rg, m_yb) = (s_rg / n, s_yb / n);
    let var_rg = (ss_rg / n - m_rg * m_rg).max(0.0);
    let var_yb = (ss_yb / n - m_yb * m_yb).max(0.0);
    (var_rg + var_yb).sqrt() + HASLER_MU_WEIGHT * (m_rg * m_rg + m_yb * m_yb).sqrt()
}

/// 64-bit difference hash (Krawetz 2013): grey, resize to 9×8, bit (row·8 + col) = left pixel brighter
/// than its right neighbour.
pub fn dhash(img: &RgbaImage) -> u64 {
    let grey = image::DynamicImage::ImageRgba8(img.clone()).to_luma8();
    let small = image::imageops::resize(&grey, 9, 8, image::imageops::FilterType::Triangle);
    let mut h = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            if small.get_pixel(x, y).0[0] > small.get_pixel(x + 1, y).0[0] {
                h |= 1 << (y * 8 + x);
            }
        }
    }
    h
}

pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Area of the union of `[x, y, w, h]` boxes, exact (coordinate compression).
pub fn union_area(boxes: &[[f64; 4]]) -> f64 {
    let mut xs: Vec<f64> = boxes.iter().flat_map(|b| [b[0], b[0] + b[2]]).collect();
    let mut ys: Vec<f64> = boxes.iter().flat_map(|b| [b[1], b[1] + b[3]]).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    ys.sort_by(f64::total_cmp);
    ys.dedup();
    let mut area = 0.0;
    for xi in xs.windows(2) {
        for yi in ys.windows(2) {
            let (cx, cy) = ((xi[0] + xi[1]) / 2.0, (yi[0] + yi[1]) / 2.0);
            if boxes
                .iter()
                .any(|b| cx > b[0] && cx < b[0] + b[2] && cy > b[1] && cy < b[1] + b[3])
            {
                area += (xi[1] - xi[0]) * (yi[1] - yi[0]);
            }
        }
    }
    area
}

/// One image to inspect: id, path relative to the dataset dir, label.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    path: String,
    label: Option<String>,
}

/// Entries from index.parquet, or, without one, an ImageFolder walk (label = first folder under the root,
/// or under `images/` when present).
fn list_entries(dir: &Path) -> Result<Vec<Entry>> {
    if dir.join(INDEX_FILE).is_file() {
        return Ok(read_index(dir)?
            .into_iter()
            .map(|r| Entry {
                id: r.id,
                path: r.path,
                label: r.label,
            })
            .collect());
    }
    let root = if dir.join(crate::data::index::IMAGES_DIR).is_dir() {
        dir.join(crate::data::index::IMAGES_DIR)
    } else {
        dir.to_path_buf()
    };
    if !root.is_dir() {
        return Err(Error::format(
            dir,
            "not a directory with index.parquet or image files",
        ));
    }
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ctx_io(&d)? {
            let p = e.ctx_io(&d)?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files
        .into_iter()
        .filter_map(|p| {
            let rel_root = p.strip_prefix(&root).ok()?;
            let comps: Vec<String> = rel_root
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into())
                .collect();
            let label = (comps.len() > 1).then(|| comps[0].clone());
            let rel = p.strip_prefix(dir).ok()?.to_string_lossy().into_owned();
            Some(Entry {
                id: rel.clone(),
                path: rel,
                label,
            })
        })
        .collect())
}

#[derive(Debug, Clone)]
struct Row {
    entry: Entry,
    width: u32,
    height: u32,
    colourfulness: f64,
    object_share: Option<f64>,
    dhash: u64,
    sha256: String,
}

fn inspect_one(
    dir: &Path,
    e: &Entry,
    boxes: Option<&HashMap<String, Vec<[f64; 4]>>>,
) -> std::result::Result<Row, Skipped> {
    // An index path leading out of the dataset (absolute, `..`, a symlink out) is listed, never opened.
    let path = crate::data::confine::Root::new(dir)
        .join(&e.path)
        .map_err(|why| Skipped {
            path: dir.join(&e.path),
            reason: why.to_string(),
        })?;
    let skip = |reason: String| Skipped {
        path: path.clone(),
        reason,
    };
    let bytes = std::fs::read(&path).map_err(|err| skip(format!("cannot read: {err}")))?;
    let sha = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let img = load_rgba(&path).map_err(skip)?;
    let (w, h) = img.dimensions();
    let has_alpha = img.pixels().any(|p| p.0[3] < 255);
    // Transparent pixels have no colour: a cut-out is measured on its object only.
    let colour = colourfulness(
        img.pixels()
            .filter(|p| p.0[3] > 0)
            .map(|p| [p.0[0], p.0[1], p.0[2]]),
    );
    let image_area = (w as f64 * h as f64).max(1.0);
    let object_share = match boxes {
        Some(b) => Some(b.get(&e.path).map_or(0.0, |bs| union_area(bs) / image_area)),
        None if has_alpha => Some(img.pixels().filter(|p| p.0[3] > 0).count() as f64 / image_area),
        None => None,
    };
    Ok(Row {
        entry: e.clone(),
        width: w,
        height: h,
        colourfulness: colour,
        object_share,
        dhash: dhash(&img),
        sha256: sha,
    })
}

fn polars_err(what: &str) -> impl Fn(PolarsError) -> Error + '_ {
    move |e| Error::polars(format!("building the {what} frame"), e)
}

/// Inspects a normalised dataset (or an ImageFolder tree) at `dir`. Boxes come from `annotations.json`
/// when present (object share = union of boxes / image area), else from alpha coverage of RGBA images.
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    let dataset = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let entries = list_entries(dir)?;
    let coco_path = dir.join(ANNOTATIONS_FILE);
    let boxes: Option<HashMap<String, Vec<[f64; 4]>>> = if coco_path.is_file() {
        let coco = CocoDataset::read(&coco_path)?;
        let names: HashMap<u64, &str> = coco
            .images
            .iter()
            .map(|i| (i.id, i.file_name.as_str()))
            .collect();
        let mut m: HashMap<String, Vec<[f64; 4]>> = coco
            .images
            .iter()
            .map(|i| (i.file_name.clone(), Vec::new()))
            .collect();
        for a in &coco.annotations {
            if let Some(n) = names.get(&a.image_id) {
                m.entry(n.to_string()).or_default().push(a.bbox);
            }
        }
        Some(m)
    } else {
        None
    };
    let results: Vec<std::result::Result<Row, Skipped>> = entries
        .par_iter()
        .map(|e| inspect_one(dir, e, boxes.as_ref()))
        .collect();
    let (mut rows, mut skipped) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(row) => rows.push(row),
            Err(s) => skipped.push(s),
        }
    }
    let n = rows.len();
    let ds_col = |len: usize| Column::new(COL_DATASET.into(), vec![dataset.clone(); len]);

    let per_image = DataFrame::new(
        n,
        vec![
            ds_col(n),
            Column::new(
                COL_ID.into(),
                rows.iter().map(|r| r.entry.id.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                COL_PATH.into(),
                rows.iter()
                    .map(|r| r.entry.path.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                COL_LABEL.into(),
                rows.iter()
                    .map(|r| r.entry.label.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                COL_WIDTH.into(),
                rows.iter().map(|r| r.width).collect::<Vec<_>>(),
            ),
            Column::new(
                COL_HEIGHT.into(),
                rows.iter().map(|r| r.height).collect::<Vec<_>>(),
            ),
            Column::new(
                COL_ASPECT.into(),
                rows.iter()
                    .map(|r| r.width as f64 / r.height.max(1) as f64)
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                COL_COLOURFULNESS.into(),
                rows.iter().map(|r| r.colourfulness).collect::<Vec<_>>(),
            ),
            Column::new(
                COL_OBJECT_AREA_SHARE.into(),
                rows.iter().map(|r| r.object_share).collect::<Vec<_>>(),
            ),
            Column::new(
                COL_DHASH.into(),
                rows.iter().map(|r| r.dhash).collect::<Vec<_>>(),
            ),
            Column::new(
                COL_SHA256.into(),
                rows.iter().map(|r| r.sha256.clone()).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(polars_err("per-image"))?;

    // Per label (null = unlabelled, kept as its own group).
    let mut counts: BTreeMap<Option<String>, u32> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.entry.label.clone()).or_default() += 1;
    }
    let shares: Vec<f64> = counts
        .values()
        .map(|&c| c as f64 / n.max(1) as f64)
        .collect();
    let per_label = DataFrame::new(
        counts.len(),
        vec![
            ds_col(counts.len()),
            Column::new(COL_LABEL.into(), counts.keys().cloned().collect::<Vec<_>>()),
            Column::new(
                COL_COUNT.into(),
                counts.values().copied().collect::<Vec<_>>(),
            ),
            Column::new(COL_SHARE.into(), shares.clone()),
        ],
    )
    .map_err(polars_err("per-label"))?;
    let entropy: f64 = shares
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.log2())
        .sum();

    // Duplicates: exact by sha256 groups, near by dhash over pairs with different bytes.
    let (mut id_a, mut id_b, mut kind, mut dist) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut by_sha: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_sha.entry(r.sha256.as_str()).or_default().push(i);
    }
    let n_exact = n - by_sha.len();
    for group in by_sha.values() {
        for (k, &i) in group.iter().enumerate() {
            for &j in &group[k + 1..] {
                id_a.push(rows[i].entry.id.clone());
                id_b.push(rows[j].entry.id.clone());
                kind.push("exact");
                dist.push(0u32);
            }
        }
    }
    let near: Vec<(usize, usize, u32)> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let rows = &rows;
            (i + 1..n).filter_map(move |j| {
                let d = hamming(rows[i].dhash, rows[j].dhash);
                (d <= NEAR_DUP_MAX_HAMMING && rows[i].sha256 != rows[j].sha256).then_some((i, j, d))
            })
        })
        .collect();
    for &(i, j, d) in &near {
        id_a.push(rows[i].entry.id.clone());
        id_b.push(rows[j].entry.id.clone());
        kind.push("near");
        dist.push(d);
    }
    let n_dup_rows = id_a.len();
    let duplicates = DataFrame::new(
        n_dup_rows,
        vec![
            ds_col(n_dup_rows),
            Column::new(COL_ID_A.into(), id_a),
            Column::new(COL_ID_B.into(), id_b),
            Column::new(COL_MATCH.into(), kind),
            Column::new(COL_HAMMING.into(), dist),
        ],
    )
    .map_err(polars_err("duplicates"))?;

    let median = |mut v: Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        })
    };
    let mean = |v: Vec<f64>| -> Option<f64> {
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let summary = DataFrame::new(
        1,
        vec![
            ds_col(1),
            Column::new(COL_N_IMAGES.into(), [n as u64]),
            Column::new(COL_N_SKIPPED.into(), [skipped.len() as u64]),
            Column::new(
                COL_N_LABELS.into(),
                [counts.keys().filter(|k| k.is_some()).count() as u64],
            ),
            Column::new(COL_LABEL_ENTROPY_BITS.into(), [entropy]),
            Column::new(
                COL_MEDIAN_WIDTH.into(),
                [median(rows.iter().map(|r| r.width as f64).collect())],
            ),
            Column::new(
                COL_MEDIAN_HEIGHT.into(),
                [median(rows.iter().map(|r| r.height as f64).collect())],
            ),
            Column::new(
                COL_MEAN_COLOURFULNESS.into(),
                [mean(rows.iter().map(|r| r.colourfulness).collect())],
            ),
            Column::new(
                COL_MEAN_OBJECT_SHARE.into(),
                [mean(rows.iter().filter_map(|r| r.object_share).collect())],
            ),
            Column::new(COL_N_EXACT_DUP.into(), [n_exact as u64]),
            Column::new(COL_N_NEAR_DUP.into(), [near.len() as u64]),
        ],
    )
    .map_err(polars_err("summary"))?;
    Ok(InspectReport {
        per_image,
        per_label,
        duplicates,
        summary,
        skipped,
    })
}

/// Writes the report frames (and the skipped files) as Parquet under `out_dir`, atomically.
pub fn write_report(report: &InspectReport, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut skipped = DataFrame::new(
        report.skipped.len(),
        vec![
            Column::new(
                COL_PATH.into(),
                report
                    .skipped
                    .iter()
                    .map(|s| s.path.display().to_string())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                COL_REASON.into(),
                report
                    .skipped
                    .iter()
                    .map(|s| s.reason.clone())
                    .collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(polars_err("skipped"))?;
    for (mut df, file) in [
        (report.per_image.clone(), PER_IMAGE_FILE),
        (report.per_label.clone(), PER_LABEL_FILE),
        (report.duplicates.clone(), DUPLICATES_FILE),
        (report.summary.clone(), SUMMARY_FILE),
    ] {
        let p = out_dir.join(file);
        write_parquet(&mut df, &p)?;
        written.push(p);
    }
    let p = out_dir.join(SKIPPED_FILE);
    write_parquet(&mut skipped, &p)?;
    written.push(p);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    #[test]
    fn grey_has_zero_colourfulness_and_saturated_more() {
        let grey = std::iter::repeat([120u8, 120, 120]).take(100);
        assert_eq!(colourfulness(grey), 0.0);
        // Half pure red, half pure green: rg = ±255 (σ 255, μ 0), yb = 127.5 (σ 0, μ 127.5),
        // M = 255 + 0.3·127.5 = 293.25 (Hasler & Süsstrunk eq. 3 by hand).
        let rg = (0..100).map(|i| {
            if i % 2 == 0 {
                [255u8, 0, 0]
            } else {
                [0, 255, 0]
            }
        });
        assert!((colourfulness(rg) - 293.25).abs() < 1e-9);
        // Pure red: σ = 0, μ = sqrt(255² + 127.5²) → M = 0.3 · 285.0987...
        let red = std::iter::repeat([255u8, 0, 0]).take(10);
        assert!(
            (colourfulness(red) - 0.3 * (255f64.powi(2) + 127.5f64.powi(2)).sqrt()).abs() < 1e-9
        );
    }

    // Reference (numpy, population std as in Hasler & Süsstrunk):
    //   i = np.arange(1000); R, G, B = (i*37) % 256, (i*91+13) % 256, (i*53+7) % 256  (as float64)
    //   rg = R - G; yb = 0.5*(R+G) - B
    //   np.sqrt(rg.std()**2 + yb.std()**2) + 0.3*np.sqrt(rg.mean()**2 + yb.mean()**2)  -> 141.60109734572538
    #[test]
    fn colourfulness_matches_numpy_reference() {
        let px = (0..1000u32).map(|i| {
            [
                (i * 37 % 256) as u8,
                ((i * 91 + 13) % 256) as u8,
                ((i * 53 + 7) % 256) as u8,
            ]
        });
        assert!((colourfulness(px) - 141.60109734572538).abs() < 1e-9);
    }

    fn pattern(w: u32, h: u32, phase: f64) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, y| {
            let fx = x as f64 / w as f64;
            let fy = y as f64 / h as f64;
            let v = (127.0 + 120.0 * (6.0 * fx + phase).sin() * (4.0 * fy).cos()) as u8;
            Rgba([v, 255 - v, v / 2, 255])
        })
    }

    #[test]
    fn dhash_matches_resized_copy_and_separates_different_images() {
        let a = pattern(320, 240, 0.0);
        let a_small = image::imageops::resize(&a, 160, 120, image::imageops::FilterType::Lanczos3);
        let b = pattern(320, 240, 2.5);
        assert!(hamming(dhash(&a), dhash(&a_small)) <= NEAR_DUP_MAX_HAMMING);
        assert!(hamming(dhash(&a), dhash(&b)) > NEAR_DUP_MAX_HAMMING);
    }

    #[test]
    fn union_area_counts_overlap_once() {
        assert_eq!(
            union_area(&[[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 10.0, 10.0]]),
            175.0
        );
        assert_eq!(
            union_area(&[[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 2.0, 2.0]]),
            16.0
        );
        assert_eq!(union_area(&[]), 0.0);
    }

    #[test]
    fn inspect_finds_exact_and_near_duplicates_and_skips_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        std::fs::create_dir_all(root.join("cat")).unwrap();
        std::fs::create_dir_all(root.join("dog")).unwrap();
        let a = pattern(320, 240, 0.0);
        a.save(root.join("cat/a.png")).unwrap();
        a.save(root.join("cat/a_copy.png")).unwrap();
        image::imageops::resize(&a, 160, 120, image::imageops::FilterType::Lanczos3)
            .save(root.join("dog/a_small.png"))
            .unwrap();
        pattern(320, 240, 2.5).save(root.join("dog/b.png")).unwrap();
        std::fs::write(root.join("dog/broken.png"), b"not a png").unwrap();
        let rep = inspect(dir.path()).unwrap();
        assert_eq!(rep.per_image.height(), 4);
        assert_eq!(rep.skipped.len(), 1);
        assert!(rep.skipped[0].path.ends_with("broken.png"));
        let s = &rep.summary;
        let get = |c: &str| s.column(c).unwrap().u64().unwrap().get(0).unwrap();
        assert_eq!(get(COL_N_EXACT_DUP), 1);
        // a_small is near both a and a_copy (two pairs with different bytes).
        assert_eq!(get(COL_N_NEAR_DUP), 2);
        assert_eq!(get(COL_N_LABELS), 2);
        let e = s
            .column(COL_LABEL_ENTROPY_BITS)
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
            .unwrap();
        assert!(
            (e - 1.0).abs() < 1e-12,
            "two labels, two images each: 1 bit, got {e}"
        );
        let out = dir.path().join("report");
        assert_eq!(write_report(&rep, &out).unwrap().len(), 5);
        let back = crate::report::io::read_parquet(&out.join(PER_IMAGE_FILE)).unwrap();
        assert_eq!(back.height(), 4);
    }
}
