//! Background reliance (Xiao et al. 2020, "Noise or Signal: The Role of Image Backgrounds in Object
//! Recognition", the Backgrounds Challenge): from an image and its object mask build the paper's variants
//! (Original, Only-FG, Only-BG-T, Mixed-Same, Mixed-Rand), score a probe trained on Original images on each,
//! and read BG-gap = Mixed-Same − Mixed-Rand; beside it the nearest-neighbour background-match rate (how
//! often an image's nearest other image sits on the same background). The image functions are pure; the
//! `backgrounds` stage (`pipeline::backgrounds`) decodes, embeds and writes.
//!
//! Fills, following the paper where a mask allows it: Only-FG keeps the object pixels on black (the paper's
//! Only-FG); Only-BG-T fills the object's bounding box with tiles of the largest rectangle of the image's own
//! background outside the box (the paper's Only-BG-T); Mixed-Same and Mixed-Rand paste the object's pixels
//! (the mask, not the box) onto another image's Only-BG-T, as the paper does.
use std::collections::{BTreeMap, HashMap};

use image::{imageops::FilterType, GrayImage, Rgb, RgbImage};
use rand::Rng;
use rayon::prelude::*;

use crate::analyze::embeddings::Embeddings;
use crate::analyze::knn::knn;
use crate::analyze::linear::linear_probe;
use crate::analyze::paired::{paired_gain, PairedGain, RESAMPLES};
use crate::analyze::stats::{majority_share, wilson_interval};
use crate::error::Result;
use crate::rng::{seeded_rng, Mixing};

/// Random stream of the donor draws (Mixed-Same, Mixed-Rand).
const STREAM_DONORS: u64 = 0xb6d;
/// Only-FG's fill: black, as the paper's Only-FG (Xiao et al. 2020, §2).
pub const ONLY_FG_FILL: [u8; 3] = [0, 0, 0];

/// One of the paper's image variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    /// The image as it is.
    Original,
    /// The object's pixels on black.
    OnlyFg,
    /// The object's bounding box filled with tiles of the image's own background.
    OnlyBgT,
    /// The object's pixels on the Only-BG-T of another image of the same label.
    MixedSame,
    /// The object's pixels on the Only-BG-T of another image drawn from all of them.
    MixedRand,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::Original,
        Variant::OnlyFg,
        Variant::OnlyBgT,
        Variant::MixedSame,
        Variant::MixedRand,
    ];

    /// The name in the report's `variant` column.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Original => "original",
            Variant::OnlyFg => "only-fg",
            Variant::OnlyBgT => "only-bg-t",
            Variant::MixedSame => "mixed-same",
            Variant::MixedRand => "mixed-rand",
        }
    }
}

/// Tight bounding box `[x0, y0, x1, y1)` of the non-zero pixels of `mask`; `None` when it has none.
pub fn mask_box(mask: &GrayImage) -> Option<[u32; 4]> {
    let mut b: Option<[u32; 4]> = None;
    for (x, y, p) in mask.enumerate_pixels() {
        if p[0] != 0 {
            let r = b.get_or_insert([x, y, x + 1, y + 1]);
            r[0] = r[0].min(x);
            r[1] = r[1].min(y);
            r[2] = r[2].max(x + 1);
            r[3] = r[3].max(y + 1);
        }
    }
    b
}

/// Whether the mask leaves at least one background pixel (a variant without one has nothing to swap).
pub fn has_background(mask: &GrayImage) -> bool {
    mask.pixels().any(|p| p[0] == 0)
}

/// Only-FG: the pixels of `img` where `mask` is non-zero, every other pixel black ([`ONLY_FG_FILL`]).
pub fn only_fg(img: &RgbImage, mask: &GrayImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        if mask.get_pixel(x, y)[0] != 0 {
            *img.get_pixel(x, y)
        } else {
            Rgb(ONLY_FG_FILL)
        }
    })
}

/// The rectangle `[x0, y0, x1, y1)` Only-BG-T tiles from: the largest by area of the four full strips of
/// the image outside the object's box `b` (above, below, left, right; ties in that order). `None` when
/// the box covers the whole image.
pub fn tile_source(width: u32, height: u32, b: [u32; 4]) -> Option<[u32; 4]> {
    let [x0, y0, x1, y1] = b;
    let strips = [
        [0, 0, width, y0],
        [0, y1, width, height],
        [0, 0, x0, height],
        [x1, 0, width, height],
    ];
    let area = |s: &[u32; 4]| (s[2] - s[0]) as u64 * (s[3] - s[1]) as u64;
    strips
        .into_iter()
        .filter(|s| area(s) > 0)
        .fold(None, |best: Option<[u32; 4]>, s| match best {
            Some(b) if area(&b) >= area(&s) => Some(b),
            _ => Some(s),
        })
}

/// Only-BG-T: `img` with the bounding box of `mask` filled by tiling [`tile_source`] from the box's
/// top-left corner (pixel (x, y) of the box takes the strip's pixel (x − x0 mod w, y − y0 mod h)). A box
/// that covers the whole image is filled with the mean colour of the pixels outside the mask instead; a
/// mask with no pixel returns the image unchanged, one without background pixels a black image.
pub fn only_bg_t(img: &RgbImage, mask: &GrayImage) -> RgbImage {
    let mut out = img.clone();
    let Some(b) = mask_box(mask) else {
        return out;
    };
    let [x0, y0, x1, y1] = b;
    match tile_source(img.width(), img.height(), b) {
        Some([sx, sy, sx1, sy1]) => {
            let (sw, sh) = (sx1 - sx, sy1 - sy);
            for y in y0..y1 {
                for x in x0..x1 {
                    let p = *img.get_pixel(sx + (x - x0) % sw, sy + (y - y0) % sh);
                    out.put_pixel(x, y, p);
                }
            }
        }
        None => {
            let fill = Rgb(background_mean(img, mask));
            for y in y0..y1 {
                for x in x0..x1 {
                    out.put_pixel(x, y, fill);
                }
            }
        }
    }
    out
}

/// Mean colour (rounded) of the pixels of `img` where `mask` is zero; black when there are none.
pub fn background_mean(img: &RgbImage, mask: &GrayImage) -> [u8; 3] {
    let (mut sum, mut n) = ([0u64; 3], 0u64);
    for (p, m) in img.pixels().zip(mask.pixels()) {
        if m[0] == 0 {
            for c in 0..3 {
                sum[c] += p[c] as u64;
            }
            n += 1;
        }
    }
    if n == 0 {
        return [0; 3];
    }
    sum.map(|s| ((s as f64 / n as f64).round()) as u8)
}

/// Mixed-Same / Mixed-Rand: the pixels of `img` where `mask` is non-zero, exactly; every other pixel from
/// `background` (another image's Only-BG-T), resized to `img`'s size (bilinear) when it differs.
pub fn mixed(img: &RgbImage, mask: &GrayImage, background: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let resized;
    let bg = if background.dimensions() == (w, h) {
        background
    } else {
        resized = image::imageops::resize(background, w, h, FilterType::Triangle);
        &resized
    };
    RgbImage::from_fn(w, h, |x, y| {
        if mask.get_pixel(x, y)[0] != 0 {
            *img.get_pixel(x, y)
        } else {
            *bg.get_pixel(x, y)
        }
    })
}

/// The images another image's background is taken from, for Mixed-Same and Mixed-Rand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Donors {
    /// Another image of the same label; `None` when the label has one image only.
    pub same: Option<usize>,
    /// Another image of any label (the paper's "random image"); `None` with a single image.
    pub rand: Option<usize>,
}

/// The donors of each of `labels` (one per image, in a fixed order): image `i` draws from its own stream
/// (seed, [`STREAM_DONORS`], i), first the same-label donor uniformly among the other images of its label,
/// then the random donor uniformly among all other images. Independent of the thread count and of the
/// other images' draws.
pub fn draw_donors(labels: &[&str], seed: u64) -> Vec<Donors> {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    let n = labels.len();
    (0..n)
        .map(|i| {
            let mut rng = seeded_rng(Mixing::SplitMixChain, seed, STREAM_DONORS, i as u64);
            let same_pool = &by_label[labels[i]];
            let others: Vec<usize> = same_pool.iter().copied().filter(|&j| j != i).collect();
            let same = (!others.is_empty()).then(|| others[rng.gen_range(0..others.len())]);
            let rand = (n > 1).then(|| {
                let k = rng.gen_range(0..n - 1);
                if k >= i {
                    k + 1
                } else {
                    k
                }
            });
            Donors { same, rand }
        })
        .collect()
}

/// The background an index `source` names, as `datasets compose` writes it (`…;background=<what>`): the
/// scene image (`dataset:id`) for scene images and for object-centric backgrounds cut from one (`blurred
/// dataset:id`, `sharp dataset:id crop=… hue=…`), or the colour itself (`plain #rrggbb`). `None` when the
/// source names no background (images that were not composed).
pub fn background_identity(source: &str) -> Option<String> {
    let (_, what) = source.rsplit_once(";background=")?;
    let what = what.trim();
    if what.starts_with("plain ") {
        return Some(what.to_string());
    }
    let rest = what
        .strip_prefix("blurred ")
        .or_else(|| what.strip_prefix("sharp "))
        .unwrap_or(what);
    rest.split_whitespace().next().map(str::to_string)
}

/// The nearest-neighbour background-match rate of a set of images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackgroundMatch {
    /// Share of images whose nearest other image (highest cosine) has the same background.
    pub rate: f64,
    /// 95% Wilson interval of `rate` over the `n` images.
    pub lo: f64,
    pub hi: f64,
    /// The rate a neighbour drawn uniformly among the other images would give: the mean over images of
    /// the share of the other images that share its background.
    pub chance: f64,
    pub n: usize,
}

/// The background-match rate of `rows` of `e` (their Original embeddings), `backgrounds[i]` the
/// background of `rows[i]`: [`nearest_background_matches`] summed by [`match_rate`]. `None` with fewer than
/// two rows.
pub fn background_match(
    e: &Embeddings,
    rows: &[usize],
    backgrounds: &[&str],
) -> Option<BackgroundMatch> {
    match_rate(
        &nearest_background_matches(e, rows, backgrounds)?,
        backgrounds,
    )
}

/// Per row of `rows` (in their order): whether its nearest other row of `e` (highest cosine, ties to the
/// lower position) has the same background, `backgrounds[i]` the background of `rows[i]`. Kept per image
/// so that two networks' rates on the same images can be compared pair by pair (`analyze::paired`).
/// `None` with fewer than two rows.
pub fn nearest_background_matches(
    e: &Embeddings,
    rows: &[usize],
    backgrounds: &[&str],
) -> Option<Vec<bool>> {
    let n = rows.len();
    if n < 2 || backgrounds.len() != n {
        return None;
    }
    let x = e.gather(rows, true);
    let d = e.dim;
    Some(
        (0..n)
            .into_par_iter()
            .map(|i| {
                let xi = &x[i * d..(i + 1) * d];
                let mut best = (f32::NEG_INFINITY, usize::MAX);
                for j in (0..n).filter(|&j| j != i) {
                    let c: f32 = xi
                        .iter()
                        .zip(&x[j * d..(j + 1) * d])
                        .map(|(a, b)| a * b)
                        .sum();
                    if c > best.0 || best.1 == usize::MAX {
                        best = (c, j);
                    }
                }
                backgrounds[best.1] == backgrounds[i]
            })
            .collect(),
    )
}

/// The share of `matched` with its Wilson interval, and the chance rate of `backgrounds` (one per image,
/// in the same order). `None` with fewer than two images.
pub fn match_rate(matched: &[bool], backgrounds: &[&str]) -> Option<BackgroundMatch> {
    let n = matched.len();
    if n < 2 || backgrounds.len() != n {
        return None;
    }
    let hits = matched.iter().filter(|&&m| m).count();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for b in backgrounds {
        *counts.entry(b).or_default() += 1;
    }
    let chance = backgrounds
        .iter()
        .map(|b| (counts[b] - 1) as f64 / (n - 1) as f64)
        .sum::<f64>()
        / n as f64;
    let (lo, hi) = wilson_interval(hits, n);
    Some(BackgroundMatch {
        rate: hits as f64 / n as f64,
        lo,
        hi,
        chance,
        n,
    })
}

/// A probe: weighted kNN or the linear probe, both trained on Original train rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    Knn,
    Linear,
}

impl Probe {
    pub const ALL: [Probe; 2] = [Probe::Knn, Probe::Linear];

    /// The name in the report's `probe` column.
    pub fn name(self) -> &'static str {
        match self {
            Probe::Knn => "knn",
            Probe::Linear => "linear",
        }
    }
}

/// A row to score: variant `variant` of scored image `image`, embedded as row `row` of the embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub variant: Variant,
    pub image: usize,
    pub row: usize,
}

/// One probe's accuracy on one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantScore {
    pub variant: Variant,
    pub probe: Probe,
    pub accuracy: f64,
    /// 95% Wilson interval over the `n` queries.
    pub lo: f64,
    pub hi: f64,
    /// Share of the most frequent label among the variant's queries.
    pub chance: f64,
    pub n: usize,
    pub correct: usize,
    /// kNN only: whether the queries were a seeded sample (more than `knn::MAX_QUERIES`).
    pub sampled: bool,
}

/// Every probe × variant score, and each probe's BG-gap.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub scores: Vec<VariantScore>,
    /// Per probe: Mixed-Same − Mixed-Rand accuracy over the images that have both, with a 95% paired
    /// bootstrap interval ([`paired_gain`], resampling images); `None` without such images.
    pub gaps: BTreeMap<Probe, Option<PairedGain>>,
}

/// Scores `queries` of `e` with both probes trained on the labelled `train` rows (Original embeddings of
/// the train split): weighted kNN with `k` neighbours (one call per variant, bank = `train`) and the linear
/// probe (fit once on `train`, scored on every query). `e.splits` is set here: `train` rows "train",
/// queries "test". The BG-gap pairs each image's Mixed-Same and Mixed-Rand answers.
pub fn score_variants(
    e: &mut Embeddings,
    train: &[usize],
    queries: &[Query],
    k: usize,
    seed: u64,
) -> Result<Scored> {
    e.splits = vec![None; e.len()];
    for &r in train {
        e.splits[r] = Some("train".into());
    }
    for q in queries {
        e.splits[q.row] = Some("test".into());
    }
    let label = |r: usize| e.labels[r].as_deref().unwrap_or_default();
    // correct[(probe, variant)][image] = right?
    let mut correct: BTreeMap<(Probe, Variant), BTreeMap<usize, bool>> = BTreeMap::new();
    let mut sampled_by: BTreeMap<Variant, bool> = BTreeMap::new();
    for v in Variant::ALL {
        let qs: Vec<&Query> = queries.iter().filter(|q| q.variant == v).collect();
        if qs.is_empty() {
            continue;
        }
        let rows: Vec<usize> = train
            .iter()
            .copied()
            .chain(qs.iter().map(|q| q.row))
            .collect();
        let r = knn(e, &rows, k, seed, &format!("backgrounds {}", v.name()))?;
        sampled_by.insert(v, r.sampled);
        let image_of: HashMap<usize, usize> = qs.iter().map(|q| (q.row, q.image)).collect();
        let m = correct.entry((Probe::Knn, v)).or_default();
        for (row, p) in &r.predictions {
            if let Some(&img) = image_of.get(row) {
                m.insert(img, p == label(*row));
            }
        }
    }
    let all: Vec<usize> = queries.iter().map(|q| q.row).collect();
    let lin = linear_probe(e, train, &all)?;
    let by_row: HashMap<usize, &Query> = queries.iter().map(|q| (q.row, q)).collect();
    for (row, p) in &lin.predictions {
        if let Some(q) = by_row.get(row) {
            correct
                .entry((Probe::Linear, q.variant))
                .or_default()
                .insert(q.image, p == label(*row));
        }
    }
    let image_label: HashMap<usize, &str> =
        queries.iter().map(|q| (q.image, label(q.row))).collect();
    let mut scores = Vec::new();
    for ((probe, variant), m) in &correct {
        let n = m.len();
        let right = m.values().filter(|&&c| c).count();
        let (lo, hi) = wilson_interval(right, n);
        scores.push(VariantScore {
            variant: *variant,
            probe: *probe,
            accuracy: right as f64 / n.max(1) as f64,
            lo,
            hi,
            chance: majority_share(m.keys().map(|i| image_label[i])),
            n,
            correct: right,
            sampled: *probe == Probe::Knn && sampled_by.get(variant).copied().unwrap_or(false),
        });
    }
    let gaps = Probe::ALL
        .iter()
        .map(|&p| {
            let empty = BTreeMap::new();
            let same = correct.get(&(p, Variant::MixedSame)).unwrap_or(&empty);
            let rand = correct.get(&(p, Variant::MixedRand)).unwrap_or(&empty);
            let hits: Vec<(bool, bool)> = same
                .iter()
                .filter_map(|(i, &s)| rand.get(i).map(|&r| (s, r)))
                .collect();
            (p, paired_gain(&hits, RESAMPLES, seed))
        })
        .collect();
    Ok(Scored { scores, gaps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};
    use image::Luma;

    /// A 12 × 10 image whose pixel (x, y) is (x, y, seed) and a mask of the rectangle [4, 8) × [3, 6).
    fn picture(seed: u8) -> (RgbImage, GrayImage) {
        let img = RgbImage::from_fn(12, 10, |x, y| Rgb([x as u8 * 10, y as u8 * 10, seed]));
        let mask = GrayImage::from_fn(12, 10, |x, y| {
            Luma([if (4..8).contains(&x) && (3..6).contains(&y) {
                255
            } else {
                0
            }])
        });
        (img, mask)
    }

    #[test]
    fn only_fg_keeps_the_object_and_no_background_pixel() {
        let (img, mask) = picture(7);
        let fg = only_fg(&img, &mask);
        for (x, y, p) in fg.enumerate_pixels() {
            if mask.get_pixel(x, y)[0] != 0 {
                assert_eq!(p, img.get_pixel(x, y));
            } else {
                assert_eq!(p.0, ONLY_FG_FILL, "background pixel ({x}, {y}) left");
            }
        }
    }

    // Box [4, 8) × [3, 6) in a 12 × 10 image: strips above 12 × 3 = 36, below 12 × 4 = 48, left 4 × 10 = 40,
    // right 4 × 10 = 40 → the strip below, [0, 6) … [12, 10), tiled from the box's corner.
    #[test]
    fn only_bg_t_tiles_the_largest_background_strip_over_the_box() {
        let (img, mask) = picture(1);
        assert_eq!(mask_box(&mask), Some([4, 3, 8, 6]));
        assert_eq!(tile_source(12, 10, [4, 3, 8, 6]), Some([0, 6, 12, 10]));
        let bg = only_bg_t(&img, &mask);
        for (x, y, p) in bg.enumerate_pixels() {
            if (4..8).contains(&x) && (3..6).contains(&y) {
                let want = img.get_pixel(x - 4, 6 + (y - 3) % 4);
                assert_eq!(p, want, "({x}, {y})");
                // every object pixel is gone: its colours (x ≥ 4 at y 3..6) never come back at y 3..6
                assert!(p[1] >= 60, "({x}, {y}) still holds an object-row pixel");
            } else {
                assert_eq!(p, img.get_pixel(x, y));
            }
        }
        // a box over the whole image: the mean of the pixels outside the mask
        let full = GrayImage::from_fn(4, 4, |x, y| {
            Luma([u8::from(x == 0 && y == 0) * 255 + u8::from(x == 3 && y == 3) * 255])
        });
        let flat = RgbImage::from_fn(4, 4, |x, _| Rgb([if x < 2 { 10 } else { 20 }, 0, 0]));
        let filled = only_bg_t(&flat, &full);
        // 14 background pixels: 7 of 10 and 7 of 20 → mean 15
        assert!(filled.pixels().all(|p| p.0 == [15, 0, 0]));
    }

    #[test]
    fn mixed_keeps_the_object_exactly_and_takes_the_background_from_the_other_image() {
        let (img, mask) = picture(3);
        let (other, other_mask) = picture(200);
        let donor = only_bg_t(&other, &other_mask);
        let m = mixed(&img, &mask, &donor);
        for (x, y, p) in m.enumerate_pixels() {
            if mask.get_pixel(x, y)[0] != 0 {
                assert_eq!(p, img.get_pixel(x, y));
            } else {
                assert_eq!(p, donor.get_pixel(x, y));
                assert_eq!(p[2], 200, "background from the other image");
            }
        }
        // a donor of another size is resized to the image's
        let small = RgbImage::from_pixel(5, 5, Rgb([9, 9, 9]));
        let m = mixed(&img, &mask, &small);
        assert_eq!(m.dimensions(), img.dimensions());
        assert_eq!(m.get_pixel(0, 0).0, [9, 9, 9]);
        assert_eq!(m.get_pixel(5, 4), img.get_pixel(5, 4));
    }

    #[test]
    fn donors_are_other_images_of_the_right_label_and_repeat_by_seed() {
        let labels = ["a", "a", "b", "a", "b", "c"];
        let d = draw_donors(&labels, 4);
        for (i, dn) in d.iter().enumerate() {
            if let Some(j) = dn.same {
                assert_ne!(j, i);
                assert_eq!(labels[j], labels[i]);
            }
            let j = dn.rand.unwrap();
            assert_ne!(j, i);
        }
        assert_eq!(d[5].same, None, "`c` has one image");
        assert!(d[..5].iter().all(|x| x.same.is_some()));
        assert_eq!(draw_donors(&labels, 4), d);
        // over many seeds every other image of `a` is drawn for image 0, and never image 0 itself
        let drawn: std::collections::BTreeSet<usize> = (0..64)
            .filter_map(|s| draw_donors(&labels, s)[0].same)
            .collect();
        assert_eq!(drawn, [1, 3].into_iter().collect());
        let drawn: std::collections::BTreeSet<usize> = (0..200)
            .filter_map(|s| draw_donors(&labels, s)[3].rand)
            .collect();
        assert_eq!(drawn, [0, 1, 2, 4, 5].into_iter().collect());
    }

    #[test]
    fn background_identity_reads_what_compose_records() {
        let id = |s: &str| background_identity(s);
        assert_eq!(
            id("biaslab compose seed=3;objects=stamps:disc1;background=blurred walls:wall0")
                .as_deref(),
            Some("walls:wall0")
        );
        assert_eq!(
            id("biaslab compose seed=3;objects=s:a;background=sharp walls:w1 crop=1,2,30 flipped hue=40")
                .as_deref(),
            Some("walls:w1")
        );
        assert_eq!(
            id("biaslab compose seed=3;objects=s:a;background=plain #0a0b0c").as_deref(),
            Some("plain #0a0b0c")
        );
        assert_eq!(
            id("biaslab compose seed=3;objects=s:a,b;background=walls:wall1").as_deref(),
            Some("walls:wall1")
        );
        assert_eq!(id("debian:tuxpaint-stamps-default=2022"), None);
    }

    // Four images on two backgrounds; embeddings put each image next to the other image of its background
    // for the first pair and of the other background for the second: 2 of 4 match; chance 1/3.
    #[test]
    fn background_match_counts_nearest_neighbours_beside_chance() {
        let rows = vec![
            row(0, "i0", Some("a"), None, vec![1.0, 0.0, 0.0]),
            row(1, "i1", Some("a"), None, vec![0.99, 0.1, 0.0]),
            row(2, "i2", Some("b"), None, vec![0.0, 0.0, 1.0]),
            row(3, "i3", Some("b"), None, vec![0.0, 0.1, 0.99]),
        ];
        let e = from_rows(&rows).unwrap();
        let bg = ["w0", "w0", "w1", "w2"];
        let m = background_match(&e, &[0, 1, 2, 3], &bg).unwrap();
        assert_eq!(m.rate, 0.5);
        assert_eq!((m.lo, m.hi), wilson_interval(2, 4));
        // w0 images: 1 of 3 others share it; w1, w2: none → (1/3 + 1/3 + 0 + 0) / 4
        assert!((m.chance - 1.0 / 6.0).abs() < 1e-12);
        assert!(background_match(&e, &[0], &["w0"]).is_none());
        // per image, in the order of the rows: the pair on w0 match, i2 and i3 (w1, w2) cannot
        assert_eq!(
            nearest_background_matches(&e, &[0, 1, 2, 3], &bg),
            Some(vec![true, true, false, false])
        );
        assert_eq!(
            nearest_background_matches(&e, &[3, 2, 1, 0], &["w2", "w1", "w0", "w0"]),
            Some(vec![false, false, true, true])
        );
    }

    // A planted background shortcut: the first coordinate is the object (label), the second the
    // background. Train images sit on their label's background, so a probe may use either. Mixed-Same keeps
    // the label's background, Mixed-Rand takes the other one: a probe that reads the background loses on
    // Mixed-Rand, so BG-gap > 0; Only-FG (no background signal) sits between.
    #[test]
    fn a_planted_background_shortcut_gives_a_positive_gap() {
        let mut rows = Vec::new();
        let lab = ["a", "b"];
        let vec_of = |obj: f32, bg: f32, i: usize| {
            let wob = (i as f32 * 0.77).sin() * 0.05;
            vec![0.1 * obj + wob, bg, 0.5, wob]
        };
        let sign = |c: usize| if c == 0 { 1.0 } else { -1.0 };
        for i in 0..40 {
            let c = i % 2;
            rows.push(row(
                i,
                &format!("t{i}"),
                Some(lab[c]),
                None,
                vec_of(sign(c), sign(c), i),
            ));
        }
        let train: Vec<usize> = (0..40).collect();
        let mut queries = Vec::new();
        for i in 0..20 {
            let c = i % 2;
            for (v, bg) in [
                (Variant::Original, sign(c)),
                (Variant::OnlyFg, 0.0),
                (Variant::MixedSame, sign(c)),
                (Variant::MixedRand, -sign(c)),
            ] {
                queries.push(Query {
                    variant: v,
                    image: i,
                    row: rows.len(),
                });
                rows.push(row(
                    rows.len(),
                    &format!("q{i}"),
                    Some(lab[c]),
                    None,
                    vec_of(sign(c), bg, i),
                ));
            }
        }
        let mut e = from_rows(&rows).unwrap();
        let s = score_variants(&mut e, &train, &queries, 5, 0).unwrap();
        let acc = |p, v| {
            s.scores
                .iter()
                .find(|x| x.probe == p && x.variant == v)
                .map(|x| x.accuracy)
                .unwrap()
        };
        for p in Probe::ALL {
            assert_eq!(acc(p, Variant::Original), 1.0, "{p:?}");
            assert_eq!(acc(p, Variant::MixedSame), 1.0, "{p:?}");
            assert!(acc(p, Variant::MixedRand) < 0.5, "{p:?}");
            let g = s.gaps[&p].unwrap();
            assert_eq!(g.n, 20);
            assert!(g.gain > 0.5 && g.lo > 0.0, "{p:?}: {g:?}");
        }
        let only = s
            .scores
            .iter()
            .find(|x| x.variant == Variant::OnlyFg)
            .unwrap();
        assert_eq!((only.n, only.chance), (20, 0.5));
        assert!(
            !s.scores.iter().any(|x| x.variant == Variant::OnlyBgT),
            "no such queries, no row"
        );
    }
}
