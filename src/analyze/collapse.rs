//! Collapse across crops (shared/DESIGN.md "Analyses"): do crops of *different* objects of one scene land
//! closer together than crops of the same category from other scenes? S_scene/S_cat/S_base, the collapse
//! index CI, AUROC (ties ½), scene-leak@1, SwAV code agreement, and 95% percentile bootstrap intervals over
//! image_ids.
//!
//! Means of cosines over pairs are exact at any size: the sum of cos over all pairs between two crop sets
//! is the dot product of their summed normalised embeddings, so S_* only need per-(image, label) sums.
//! AUROC needs the individual pair cosines: exact when same-scene + same-category pairs number at most
//! `PAIR_LIMIT`, else a seeded uniform sample of `SAMPLE_PAIRS` of each kind (reported as `sampled`).
use std::collections::{BTreeMap, HashMap};

use rand::Rng;
use rayon::prelude::*;
use tch::Kind;

use crate::analyze::blocks;
use crate::analyze::embeddings::Embeddings;
use crate::analyze::stats::{auroc, percentile, weighted_auroc_sorted, wilson_interval};
use crate::error::{Error, Result};
use crate::rng::{seeded_rng, Mixing};

/// Pairs enumerated exactly for AUROC up to this count (2·10⁷ f32 cosines = 80 MB); a design choice.
pub const PAIR_LIMIT: usize = 20_000_000;
/// Pairs of each kind sampled for AUROC above `PAIR_LIMIT`.
pub const SAMPLE_PAIRS: usize = 1_000_000;
/// Kept crops up to which scene-leak@1 queries every crop (an O(M²·d) blocked matmul).
pub const LEAK_EXACT: usize = 20_000;
/// Query crops sampled for scene-leak@1 above `LEAK_EXACT`.
pub const LEAK_QUERIES: usize = 2_000;
/// Bootstrap resamples (shared/DESIGN.md: 1,000).
pub const RESAMPLES: usize = 1_000;
/// Pairs of each kind used inside each bootstrap AUROC resample (a seeded subsample above it).
pub const BOOT_PAIRS: usize = 200_000;

// RNG streams (see crate::rng).
const STREAM_BOOT: u64 = 1;
const STREAM_SCENE_PAIRS: u64 = 2;
const STREAM_CAT_PAIRS: u64 = 3;
const STREAM_LEAK: u64 = 4;
const STREAM_BOOT_SUB: u64 = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct CollapseResult {
    pub n_images: usize,
    pub n_crops: usize,
    pub s_scene: f64,
    pub s_cat: f64,
    pub s_base: f64,
    /// Δscene = S_scene − S_base and Δcat = S_cat − S_base: the ratio's parts, always reported.
    pub delta_scene: f64,
    pub delta_cat: f64,
    /// Δscene / Δcat; None where Δcat's interval includes 0 (`collapse_index_note` says why).
    pub collapse_index: Option<f64>,
    pub auroc: f64,
    pub scene_leak_at_1: f64,
    pub code_agreement_scene: Option<f64>,
    pub code_agreement_cat: Option<f64>,
    pub collapse_index_lo: Option<f64>,
    pub collapse_index_hi: Option<f64>,
    /// Why the collapse index is not given (None when it is).
    pub collapse_index_note: Option<String>,
    pub delta_scene_lo: f64,
    pub delta_scene_hi: f64,
    pub delta_cat_lo: f64,
    pub delta_cat_hi: f64,
    pub auroc_lo: f64,
    pub auroc_hi: f64,
    /// True when AUROC pairs or scene-leak queries were sampled rather than enumerated.
    pub sampled: bool,
    /// Same-instance retrieval@1 (None: no instance appears in two scenes, or no `set_id`).
    pub instance: Option<InstanceRetrieval>,
    /// Same-scene/different-label + different-scene/same-label pairs behind the AUROC.
    pub n_pairs: usize,
    pub n_scene_pairs_total: f64,
    pub n_cat_pairs_total: f64,
    /// The cosines behind the AUROC (for the histogram plot).
    pub scene_cos: Vec<f32>,
    pub cat_cos: Vec<f32>,
    /// Δscene of each bootstrap resample, and a hash of the images in the order the resamples draw them:
    /// two results with equal hashes resampled the same images in each resample, so their Δscene
    /// differences are paired (context control: whole boxes against object-only crops).
    pub boot_delta_scene: Vec<f64>,
    pub images_hash: u64,
}

/// Same-instance retrieval@1 with its Wilson interval over the queries, and chance (the mean share of the
/// other scenes' crops that hold the query's instance).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRetrieval {
    pub at_1: f64,
    pub lo: f64,
    pub hi: f64,
    pub chance: f64,
    pub queries: usize,
}

/// Δscene of whole-box crops minus Δscene of the same boxes' object-only crops, with a 95% percentile
/// interval over the bootstrap resamples, and whether they were paired (the same images in each). Above 0:
/// part of the crops' scene pull came from the context they share, not from the objects.
pub fn context_share(
    whole: &CollapseResult,
    object_only: &CollapseResult,
) -> (f64, f64, f64, bool) {
    let paired = whole.images_hash == object_only.images_hash;
    let diffs: Vec<f64> = whole
        .boot_delta_scene
        .iter()
        .zip(&object_only.boot_delta_scene)
        .map(|(a, b)| a - b)
        .collect();
    (
        whole.delta_scene - object_only.delta_scene,
        percentile(&diffs, 2.5),
        percentile(&diffs, 97.5),
        paired,
    )
}

/// Per-(image, label) sums of normalised embeddings: everything the S_* means need, with the per-image
/// sums (which no resample weight changes) computed once rather than in each of the 1,000 resamples.
struct Cells {
    dim: usize,
    n_images: usize,
    n_labels: usize,
    /// (image, label, count, sum[dim])
    cells: Vec<(usize, usize, f64, Vec<f64>)>,
    /// Per cell: ‖sum‖².
    cell_sq: Vec<f64>,
    /// Per image: the sum of its crops `[n_images, dim]`, its crop count, ‖sum‖², and its
    /// same-scene/different-label cosine sum and pair count (within-image, so weight-free).
    img_sum: Vec<f64>,
    img_n: Vec<f64>,
    img_sq: Vec<f64>,
    img_scene_s: Vec<f64>,
    img_scene_n: Vec<f64>,
}

impl Cells {
    fn new(
        dim: usize,
        n_images: usize,
        n_labels: usize,
        cells: Vec<(usize, usize, f64, Vec<f64>)>,
    ) -> Cells {
        let d = dim;
        let mut img_sum = vec![0.0f64; n_images * d];
        let mut img_n = vec![0.0f64; n_images];
        let mut img_same_label_sq = vec![0.0f64; n_images];
        let mut img_same_label_n2 = vec![0.0f64; n_images];
        let mut cell_sq = Vec::with_capacity(cells.len());
        for (g, _, n, v) in &cells {
            let sq: f64 = v.iter().map(|x| x * x).sum();
            cell_sq.push(sq);
            img_n[*g] += n;
            img_same_label_sq[*g] += sq;
            img_same_label_n2[*g] += n * n;
            for (s, x) in img_sum[g * d..(g + 1) * d].iter_mut().zip(v) {
                *s += x;
            }
        }
        let img_sq: Vec<f64> = (0..n_images)
            .map(|g| img_sum[g * d..(g + 1) * d].iter().map(|x| x * x).sum())
            .collect();
        let img_scene_s = (0..n_images)
            .map(|g| (img_sq[g] - img_same_label_sq[g]) / 2.0)
            .collect();
        let img_scene_n = (0..n_images)
            .map(|g| (img_n[g] * img_n[g] - img_same_label_n2[g]) / 2.0)
            .collect();
        Cells {
            dim,
            n_images,
            n_labels,
            cells,
            cell_sq,
            img_sum,
            img_n,
            img_sq,
            img_scene_s,
            img_scene_n,
        }
    }

    /// (S_scene, S_cat, S_base) with image weights `w` (all 1 for the point estimate). A resampled
    /// image counts its within-image pairs w times and its pairs with image J w·w_J times; pairs between
    /// two copies of one image are not formed (they are not pairs of different scenes).
    fn means(&self, w: &[f64]) -> (f64, f64, f64) {
        let d = self.dim;
        let mut lab_sum = vec![0.0f64; self.n_labels * d];
        let mut lab_n = vec![0.0f64; self.n_labels];
        let (mut cat_self_sq, mut cat_self_n2) = (0.0, 0.0);
        for ((g, l, n, v), sq) in self.cells.iter().zip(&self.cell_sq) {
            let wg = w[*g];
            if wg == 0.0 {
                continue;
            }
            lab_n[*l] += wg * n;
            cat_self_sq += wg * wg * sq;
            cat_self_n2 += wg * wg * n * n;
            for (ls, x) in lab_sum[l * d..(l + 1) * d].iter_mut().zip(v) {
                *ls += wg * x;
            }
        }
        let (mut scene_s, mut scene_n) = (0.0, 0.0);
        let mut all_sum = vec![0.0f64; d];
        let (mut all_n, mut diag_sq, mut diag_n2) = (0.0, 0.0, 0.0);
        for g in 0..self.n_images {
            let wg = w[g];
            if wg == 0.0 {
                continue;
            }
            scene_s += wg * self.img_scene_s[g];
            scene_n += wg * self.img_scene_n[g];
            for (a, x) in all_sum.iter_mut().zip(&self.img_sum[g * d..(g + 1) * d]) {
                *a += wg * x;
            }
            all_n += wg * self.img_n[g];
            diag_sq += wg * wg * self.img_sq[g];
            diag_n2 += wg * wg * self.img_n[g] * self.img_n[g];
        }
        let mut cat_s = -cat_self_sq;
        let mut cat_n = -cat_self_n2;
        for l in 0..self.n_labels {
            cat_s += lab_sum[l * d..(l + 1) * d]
                .iter()
                .map(|x| x * x)
                .sum::<f64>();
            cat_n += lab_n[l] * lab_n[l];
        }
        let (cat_s, cat_n) = (cat_s / 2.0, cat_n / 2.0);
        let diff_s = (all_sum.iter().map(|x| x * x).sum::<f64>() - diag_sq) / 2.0;
        let diff_n = (all_n * all_n - diag_n2) / 2.0;
        let (base_s, base_n) = (diff_s - cat_s, diff_n - cat_n);
        let mean = |s: f64, n: f64| if n > 0.5 { s / n } else { f64::NAN };
        (
            mean(scene_s, scene_n),
            mean(cat_s, cat_n),
            mean(base_s, base_n),
        )
    }
}

/// The collapse index Δscene / Δcat with its interval, or why it is undefined: only where Δcat's bootstrap
/// interval is clear of 0. Where S_cat ≈ S_base the ratio divides by a number indistinguishable from 0 and
/// takes any value (a user saw `28.216 [-2122.121, 384.597]` from 25 pairs); its parts are then the result.
pub fn ratio_or_reason(
    point: f64,
    (lo, hi): (f64, f64),
    delta_cat: (f64, f64, f64),
) -> (Option<f64>, Option<(f64, f64)>, Option<String>) {
    let (dc, dc_lo, dc_hi) = delta_cat;
    let clear = dc_lo.is_finite() && dc_hi.is_finite() && (dc_lo > 0.0 || dc_hi < 0.0);
    if clear && point.is_finite() {
        let interval = (lo.is_finite() && hi.is_finite()).then_some((lo, hi));
        (Some(point), interval, None)
    } else {
        let why = format!(
            "undefined (S_cat ≈ S_base): Δcat = {dc:.4} [{dc_lo:.4}, {dc_hi:.4}] includes 0, so the ratio \
             Δscene / Δcat can take any value; read Δscene and Δcat"
        );
        (None, None, Some(why))
    }
}

fn collapse_index(s_scene: f64, s_cat: f64, s_base: f64) -> f64 {
    let den = s_cat - s_base;
    if den.abs() < 1e-12 {
        f64::NAN
    } else {
        (s_scene - s_base) / den
    }
}

/// A pair of kept crops (indices into the kept list) and its image(s).
type Pair = (u32, u32);

/// Runs the collapse analysis on rows `rows` of `e`. `name` names the group in errors.
pub fn collapse(e: &Embeddings, rows: &[usize], seed: u64, name: &str) -> Result<CollapseResult> {
    // Keep labelled crops of images that have at least two different labels.
    let mut labels_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for &r in rows {
        if let Some(l) = e.labels[r].as_deref() {
            let v = labels_of.entry(e.image_ids[r].as_str()).or_default();
            if !v.contains(&l) {
                v.push(l);
            }
        }
    }
    let distinct: std::collections::BTreeSet<&str> =
        labels_of.values().flatten().copied().collect();
    if distinct.len() < 2 {
        return Err(Error::Invalid(format!(
            "collapse `{name}`: column `label` has {} distinct non-null value(s) ({}); needs at least two",
            distinct.len(),
            distinct.iter().copied().collect::<Vec<_>>().join(", ")
        )));
    }
    let kept: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&r| {
            e.labels[r].is_some()
                && labels_of
                    .get(e.image_ids[r].as_str())
                    .is_some_and(|v| v.len() >= 2)
        })
        .collect();
    if kept.is_empty() {
        return Err(Error::Invalid(format!(
            "collapse `{name}`: no image has crops of two different labels (columns `image_id`, `label`): \
             no same-scene/different-label pairs"
        )));
    }
    let mut image_idx: HashMap<&str, usize> = HashMap::new();
    let mut label_idx: HashMap<&str, usize> = HashMap::new();
    let img: Vec<usize> = kept
        .iter()
        .map(|&r| {
            let n = image_idx.len();
            *image_idx.entry(e.image_ids[r].as_str()).or_insert(n)
        })
        .collect();
    let lab: Vec<usize> = kept
        .iter()
        .map(|&r| {
            let n = label_idx.len();
            *label_idx
                .entry(e.labels[r].as_deref().unwrap_or_default())
                .or_insert(n)
        })
        .collect();
    let (m, d, n_images, n_labels) = (kept.len(), e.dim, image_idx.len(), label_idx.len());
    let images_hash = {
        let mut order: Vec<(&usize, &&str)> = image_idx.iter().map(|(k, v)| (v, k)).collect();
        order.sort();
        order.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, (_, id)| {
            id.bytes()
                .chain([0])
                .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
        })
    };
    let x = e.gather(&kept, true); // [m, d], L2-normalised
    let xr = |i: usize| &x[i * d..(i + 1) * d];

    // Per-(image, label) sums.
    let mut cell_of: HashMap<(usize, usize), usize> = HashMap::new();
    let mut cells: Vec<(usize, usize, f64, Vec<f64>)> = Vec::new();
    for i in 0..m {
        let c = *cell_of.entry((img[i], lab[i])).or_insert_with(|| {
            cells.push((img[i], lab[i], 0.0, vec![0.0; d]));
            cells.len() - 1
        });
        cells[c].2 += 1.0;
        for (s, v) in cells[c].3.iter_mut().zip(xr(i)) {
            *s += *v as f64;
        }
    }
    let cells = Cells::new(d, n_images, n_labels, cells);
    let (s_scene, s_cat, s_base) = cells.means(&vec![1.0; n_images]);

    // Pair counts per kind.
    let mut img_members: Vec<Vec<u32>> = vec![Vec::new(); n_images];
    let mut lab_members: Vec<Vec<u32>> = vec![Vec::new(); n_labels];
    for i in 0..m {
        img_members[img[i]].push(i as u32);
        lab_members[lab[i]].push(i as u32);
    }
    let mut n_scene = 0.0f64;
    for mem in &img_members {
        let mut per_label: BTreeMap<usize, f64> = BTreeMap::new();
        for &i in mem {
            *per_label.entry(lab[i as usize]).or_default() += 1.0;
        }
        let t = mem.len() as f64;
        n_scene += (t * t - per_label.values().map(|c| c * c).sum::<f64>()) / 2.0;
    }
    let mut n_cat = 0.0f64;
    for mem in &lab_members {
        let mut per_img: BTreeMap<usize, f64> = BTreeMap::new();
        for &i in mem {
            *per_img.entry(img[i as usize]).or_default() += 1.0;
        }
        let t = mem.len() as f64;
        n_cat += (t * t - per_img.values().map(|c| c * c).sum::<f64>()) / 2.0;
    }
    if n_cat < 0.5 {
        return Err(Error::Invalid(format!(
            "collapse `{name}`: no label occurs in two different images (columns `label`, `image_id`): \
             no different-scene/same-category pairs"
        )));
    }

    // Pairs behind the AUROC: exact or a seeded uniform sample of each kind.
    let exact = n_scene + n_cat <= PAIR_LIMIT as f64;
    let scene_pairs: Vec<Pair> = if exact {
        let mut v = Vec::new();
        for mem in &img_members {
            for (a, &i) in mem.iter().enumerate() {
                for &j in &mem[a + 1..] {
                    if lab[i as usize] != lab[j as usize] {
                        v.push((i, j));
                    }
                }
            }
        }
        v
    } else {
        let weights: Vec<f64> = img_members
            .iter()
            .map(|m| (m.len() * m.len()) as f64)
            .collect();
        sample_pairs(
            &img_members,
            &weights,
            SAMPLE_PAIRS,
            seed,
            STREAM_SCENE_PAIRS,
            |i, j| lab[i] != lab[j],
        )
    };
    let cat_pairs: Vec<Pair> = if exact {
        let mut v = Vec::new();
        for mem in &lab_members {
            for (a, &i) in mem.iter().enumerate() {
                for &j in &mem[a + 1..] {
                    if img[i as usize] != img[j as usize] {
                        v.push((i, j));
                    }
                }
            }
        }
        v
    } else {
        let weights: Vec<f64> = lab_members
            .iter()
            .map(|m| (m.len() * m.len()) as f64)
            .collect();
        sample_pairs(
            &lab_members,
            &weights,
            SAMPLE_PAIRS,
            seed,
            STREAM_CAT_PAIRS,
            |i, j| img[i] != img[j],
        )
    };
    let cos = |p: &Pair| -> f32 {
        let (a, b) = (xr(p.0 as usize), xr(p.1 as usize));
        a.iter()
            .zip(b)
            .map(|(u, v)| (*u as f64) * (*v as f64))
            .sum::<f64>() as f32
    };
    let scene_cos: Vec<f32> = scene_pairs.par_iter().map(cos).collect();
    let cat_cos: Vec<f32> = cat_pairs.par_iter().map(cos).collect();
    let auc = auroc(&scene_cos, &cat_cos).unwrap_or(f64::NAN);

    // Code agreement (SwAV): share of pairs of each kind whose crops have the same `prototype`.
    let code: Vec<Option<i32>> = kept.iter().map(|&r| e.prototypes[r]).collect();
    let code_agreement_scene = code_agreement(&code, &img, &lab, true);
    let code_agreement_cat = code_agreement(&code, &img, &lab, false);

    // Scene-leak@1: nearest other kept crop is a different-label crop of the same image.
    let leak_sampled = m > LEAK_EXACT;
    let queries: Vec<usize> = if leak_sampled {
        sample_without_replacement(m, LEAK_QUERIES, seed, STREAM_LEAK)
    } else {
        (0..m).collect()
    };
    let bank = blocks::matrix(&x, m, d, Kind::Float)?;
    let nn = blocks::top_k(&bank, &queries, 1, &|q, j| q == j)?;
    let leaks = queries
        .iter()
        .zip(&nn)
        .filter(|(&q, best)| {
            best.first()
                .is_some_and(|&(j, _)| img[j] == img[q] && lab[j] != lab[q])
        })
        .count();
    let scene_leak_at_1 = leaks as f64 / queries.len().max(1) as f64;

    // Same-instance retrieval@1: a crop whose object instance (`set_id`: the pasted cut-out) is also in
    // another scene finds that instance first among the crops of other scenes. High where objects stay
    // themselves across contexts; at chance where a crop is known by its scene.
    let inst: Vec<Option<&str>> = kept.iter().map(|&r| e.set_ids[r].as_deref()).collect();
    let mut inst_imgs: HashMap<&str, BTreeMap<usize, usize>> = HashMap::new();
    for i in 0..m {
        if let Some(s) = inst[i] {
            *inst_imgs.entry(s).or_default().entry(img[i]).or_default() += 1;
        }
    }
    let inst_queries: Vec<usize> = queries
        .iter()
        .copied()
        .filter(|&q| inst[q].is_some_and(|s| inst_imgs[s].len() >= 2))
        .collect();
    let instance = if inst_queries.is_empty() {
        None
    } else {
        let nn = blocks::top_k(&bank, &inst_queries, 1, &|q, j| img[j] == img[q])?;
        let hits = inst_queries
            .iter()
            .zip(&nn)
            .filter(|(&q, best)| best.first().is_some_and(|&(j, _)| inst[j] == inst[q]))
            .count();
        // Chance: the share of the crops of other scenes that hold the query's instance.
        let chance = inst_queries
            .iter()
            .map(|&q| {
                let per = &inst_imgs[inst[q].unwrap_or_default()];
                let same: usize =
                    per.values().sum::<usize>() - per.get(&img[q]).copied().unwrap_or(0);
                same as f64 / (m - img_members[img[q]].len()).max(1) as f64
            })
            .sum::<f64>()
            / inst_queries.len() as f64;
        let (lo, hi) = wilson_interval(hits, inst_queries.len());
        Some(InstanceRetrieval {
            at_1: hits as f64 / inst_queries.len() as f64,
            lo,
            hi,
            chance,
            queries: inst_queries.len(),
        })
    };

    // Bootstrap over image_ids: resample images with replacement, recompute CI and AUROC.
    let scene_img: Vec<usize> = scene_pairs.iter().map(|p| img[p.0 as usize]).collect();
    let cat_img: Vec<(usize, usize)> = cat_pairs
        .iter()
        .map(|p| (img[p.0 as usize], img[p.1 as usize]))
        .collect();
    // Each kind's subsample is sorted by cosine once (stably, so ties keep their order and the result is
    // the one sorting per resample gave); a resample only reweighs it.
    let mut sub_s = subsample(scene_cos.len(), BOOT_PAIRS, seed, STREAM_BOOT_SUB);
    let mut sub_c = subsample(cat_cos.len(), BOOT_PAIRS, seed, STREAM_BOOT_SUB + 100);
    sub_s.sort_by(|&a, &b| scene_cos[a].total_cmp(&scene_cos[b]));
    sub_c.sort_by(|&a, &b| cat_cos[a].total_cmp(&cat_cos[b]));
    let pos: Vec<f32> = sub_s.iter().map(|&i| scene_cos[i]).collect();
    let neg: Vec<f32> = sub_c.iter().map(|&i| cat_cos[i]).collect();
    let boot: Vec<(f64, f64, f64, f64)> = (0..RESAMPLES)
        .into_par_iter()
        .map(|b| {
            let mut rng = seeded_rng(Mixing::Multiplicative, seed, STREAM_BOOT, b as u64);
            let mut w = vec![0.0f64; n_images];
            for _ in 0..n_images {
                w[rng.gen_range(0..n_images)] += 1.0;
            }
            let (s, c, base) = cells.means(&w);
            let wp: Vec<f64> = sub_s.iter().map(|&i| w[scene_img[i]]).collect();
            let wn: Vec<f64> = sub_c
                .iter()
                .map(|&i| w[cat_img[i].0] * w[cat_img[i].1])
                .collect();
            (
                collapse_index(s, c, base),
                weighted_auroc_sorted(&pos, &wp, &neg, &wn).unwrap_or(f64::NAN),
                s - base,
                c - base,
            )
        })
        .collect();
    let cis: Vec<f64> = boot.iter().map(|b| b.0).collect();
    let aucs: Vec<f64> = boot.iter().map(|b| b.1).collect();
    let dss: Vec<f64> = boot.iter().map(|b| b.2).collect();
    let dcs: Vec<f64> = boot.iter().map(|b| b.3).collect();
    let delta_cat = (
        s_cat - s_base,
        percentile(&dcs, 2.5),
        percentile(&dcs, 97.5),
    );
    let (collapse_index, ci_interval, collapse_index_note) = ratio_or_reason(
        collapse_index(s_scene, s_cat, s_base),
        (percentile(&cis, 2.5), percentile(&cis, 97.5)),
        delta_cat,
    );
    // 95% percentile interval: the 2.5th and 97.5th percentiles of the resampled statistics.
    Ok(CollapseResult {
        n_images,
        n_crops: m,
        s_scene,
        s_cat,
        s_base,
        delta_scene: s_scene - s_base,
        delta_cat: delta_cat.0,
        collapse_index,
        auroc: auc,
        scene_leak_at_1,
        instance,
        code_agreement_scene,
        code_agreement_cat,
        collapse_index_lo: ci_interval.map(|i| i.0),
        collapse_index_hi: ci_interval.map(|i| i.1),
        collapse_index_note,
        delta_scene_lo: percentile(&dss, 2.5),
        delta_scene_hi: percentile(&dss, 97.5),
        delta_cat_lo: delta_cat.1,
        delta_cat_hi: delta_cat.2,
        auroc_lo: percentile(&aucs, 2.5),
        auroc_hi: percentile(&aucs, 97.5),
        sampled: !exact || leak_sampled,
        n_pairs: scene_cos.len() + cat_cos.len(),
        n_scene_pairs_total: n_scene,
        n_cat_pairs_total: n_cat,
        scene_cos,
        cat_cos,
        boot_delta_scene: dss,
        images_hash,
    })
}

/// Share of same-scene/different-label (`scene`) or different-scene/same-label pairs with equal codes,
/// among pairs where both crops have a code; counted, not enumerated. None when no such pair exists.
fn code_agreement(code: &[Option<i32>], img: &[usize], lab: &[usize], scene: bool) -> Option<f64> {
    // Group = image for scene pairs (split by label), label for category pairs (split by image).
    let (group, split) = if scene { (img, lab) } else { (lab, img) };
    // Ordered maps: their values are summed below, and a sum must not depend on hash order.
    let mut g_n: BTreeMap<usize, f64> = BTreeMap::new();
    let mut gs_n: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let mut gk_n: BTreeMap<(usize, i32), f64> = BTreeMap::new();
    let mut gsk_n: BTreeMap<(usize, usize, i32), f64> = BTreeMap::new();
    for i in 0..code.len() {
        let Some(k) = code[i] else { continue };
        *g_n.entry(group[i]).or_default() += 1.0;
        *gs_n.entry((group[i], split[i])).or_default() += 1.0;
        *gk_n.entry((group[i], k)).or_default() += 1.0;
        *gsk_n.entry((group[i], split[i], k)).or_default() += 1.0;
    }
    let sq = |it: &mut dyn Iterator<Item = &f64>| it.map(|c| c * c).sum::<f64>();
    let pairs = (sq(&mut g_n.values()) - sq(&mut gs_n.values())) / 2.0;
    let same = (sq(&mut gk_n.values()) - sq(&mut gsk_n.values())) / 2.0;
    (pairs > 0.5).then(|| same / pairs)
}

/// Uniform sample (with replacement) of `count` unordered pairs (i, j) drawn inside groups, a group
/// chosen ∝ `weights` (its size²), keeping pairs where `keep(i, j)`; chunks are seeded by index.
fn sample_pairs(
    members: &[Vec<u32>],
    weights: &[f64],
    count: usize,
    seed: u64,
    stream: u64,
    keep: impl Fn(usize, usize) -> bool + Sync,
) -> Vec<Pair> {
    let total: f64 = weights.iter().sum();
    let cum: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect();
    const CHUNK: usize = 10_000;
    let chunks = count.div_ceil(CHUNK);
    (0..chunks)
        .into_par_iter()
        .flat_map_iter(|c| {
            let mut rng = seeded_rng(Mixing::Multiplicative, seed, stream, c as u64);
            let want = CHUNK.min(count - c * CHUNK);
            let mut out = Vec::with_capacity(want);
            // Ordered draws from a group chosen ∝ size² are uniform over ordered pairs; rejection keeps
            // only qualifying ones. Bounded so a degenerate input cannot loop forever.
            let mut tries = 0usize;
            while out.len() < want && tries < want * 1000 {
                tries += 1;
                let u = rng.gen::<f64>() * total;
                let g = cum.partition_point(|&x| x <= u).min(members.len() - 1);
                let mem = &members[g];
                let (a, b) = (
                    mem[rng.gen_range(0..mem.len())],
                    mem[rng.gen_range(0..mem.len())],
                );
                if a != b && keep(a as usize, b as usize) {
                    out.push((a.min(b), a.max(b)));
                }
            }
            out
        })
        .collect()
}

/// `count` distinct indices of 0..n (partial Fisher–Yates), seeded.
pub fn sample_without_replacement(n: usize, count: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut rng = seeded_rng(Mixing::Multiplicative, seed, stream, 0);
    let mut idx: Vec<usize> = (0..n).collect();
    let count = count.min(n);
    for i in 0..count {
        let j = rng.gen_range(i..n);
        idx.swap(i, j);
    }
    idx.truncate(count);
    idx.sort_unstable();
    idx
}

/// All of 0..n when n ≤ cap, else a seeded subsample of `cap`.
fn subsample(n: usize, cap: usize, seed: u64, stream: u64) -> Vec<usize> {
    if n <= cap {
        (0..n).collect()
    } else {
        sample_without_replacement(n, cap, seed, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row, EmbeddingRow};

    /// The fixture of the Python reference below: emb[i][j] = sin(1.1 i + 0.7 j + 0.2), d = 5.
    fn fixture() -> Vec<EmbeddingRow> {
        let crops: [(&str, Option<&str>, i32); 13] = [
            ("i0", Some("a"), 0),
            ("i0", Some("b"), 0),
            ("i0", Some("c"), 1),
            ("i1", Some("a"), 1),
            ("i1", Some("b"), 1),
            ("i2", Some("b"), 2),
            ("i2", Some("c"), 2),
            ("i2", Some("a"), 0),
            ("i3", Some("c"), 0),
            ("i3", Some("a"), 1),
            ("i4", Some("a"), 0),
            ("i4", Some("a"), 0),
            ("i5", None, 0),
        ];
        crops
            .iter()
            .enumerate()
            .map(|(i, (img, l, p))| {
                row(
                    i,
                    img,
                    *l,
                    Some(*p),
                    (0..5)
                        .map(|j| (1.1 * i as f64 + 0.7 * j as f64 + 0.2).sin() as f32)
                        .collect(),
                )
            })
            .collect()
    }

    // Brute force over all unordered pairs of kept crops (keep: labelled, image with ≥2 labels):
    //   sc/ca/ba = cos lists for (same img, diff label)/(diff img, same label)/(diff img, diff label)
    //   S = mean(sc) = 0.17818054115652546, C = -0.1954833614736343, B = -0.12602889696026578
    //   CI = (S-B)/(C-B) = -4.379983925414002
    //   auroc = mean([1 if p>n else .5 if p==n else 0 for p in sc for n in ca]) = 0.6458333333333334
    //   code agreement scene/cat = 0.375 / 0.16666666666666666; 8 scene + 12 cat pairs; 10 kept crops
    //   leak@1 (argmax over other kept crops) = 0.0
    #[test]
    fn collapse_matches_brute_force() {
        let e = from_rows(&fixture()).unwrap();
        let r = collapse(&e, &(0..13).collect::<Vec<_>>(), 7, "t").unwrap();
        assert_eq!((r.n_crops, r.n_images), (10, 4));
        assert!((r.s_scene - 0.17818054115652546).abs() < 1e-6);
        assert!((r.s_cat - -0.1954833614736343).abs() < 1e-6);
        assert!((r.s_base - -0.12602889696026578).abs() < 1e-6);
        assert!((r.delta_scene - (0.17818054115652546 - -0.12602889696026578)).abs() < 1e-6);
        assert!((r.delta_cat - (-0.1954833614736343 - -0.12602889696026578)).abs() < 1e-6);
        // CI = -4.38 only where Δcat's interval (4 images) is clear of 0; else undefined, with the reason.
        match r.collapse_index {
            Some(ci) => assert!((ci - -4.379983925414002).abs() < 1e-4),
            None => assert!(r
                .collapse_index_note
                .as_deref()
                .unwrap()
                .contains("undefined")),
        }
        assert!((r.auroc - 0.6458333333333334).abs() < 1e-9);
        assert_eq!(r.code_agreement_scene, Some(0.375));
        assert!((r.code_agreement_cat.unwrap() - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.scene_leak_at_1, 0.0);
        assert_eq!((r.scene_cos.len(), r.cat_cos.len(), r.n_pairs), (8, 12, 20));
        assert!(!r.sampled);
        assert!(r.collapse_index_lo <= r.collapse_index_hi && r.auroc_lo <= r.auroc_hi);
        assert!(r.delta_scene_lo <= r.delta_scene_hi && r.delta_cat_lo <= r.delta_cat_hi);
    }

    fn unit(i: usize, d: usize) -> Vec<f32> {
        let mut v = vec![0.0; d];
        v[i] = 1.0;
        v
    }

    /// e = normalise(a·u_image + b·u_label) with orthonormal u's, 3 images × labels {0,1,2}.
    fn constructed(a: f32, b: f32) -> Embeddings {
        let mut rows = Vec::new();
        for g in 0..3 {
            for l in 0..3 {
                let v: Vec<f32> = unit(g, 6)
                    .iter()
                    .zip(unit(3 + l, 6))
                    .map(|(x, y)| a * x + b * y)
                    .collect();
                rows.push(row(
                    rows.len(),
                    &format!("img{g}"),
                    Some(["a", "b", "c"][l]),
                    Some(l as i32),
                    v,
                ));
            }
        }
        from_rows(&rows).unwrap()
    }

    // By hand: same image/different label cos = a²/(a²+b²), different image/same label = b²/(a²+b²),
    // neither = 0. a=b: both ½ → CI = 1, AUROC = ½ (every pair of pairs ties).
    #[test]
    fn equal_scene_and_category_pull_gives_ci_one_and_tied_auroc() {
        let e = constructed(1.0, 1.0);
        let r = collapse(&e, &(0..9).collect::<Vec<_>>(), 0, "t").unwrap();
        assert!(
            (r.s_scene - 0.5).abs() < 1e-6 && (r.s_cat - 0.5).abs() < 1e-6 && r.s_base.abs() < 1e-6
        );
        assert!((r.collapse_index.unwrap() - 1.0).abs() < 1e-5);
        assert!((r.auroc - 0.5).abs() < 1e-12);
        // Codes follow the label: every category pair agrees, no scene pair does.
        assert_eq!(
            (r.code_agreement_scene, r.code_agreement_cat),
            (Some(0.0), Some(1.0))
        );
    }

    // a=2, b=1: scene cos 0.8, category cos 0.2 → CI = 4, AUROC = 1, every nearest neighbour a scene-mate.
    #[test]
    fn scene_collapse_is_detected() {
        let e = constructed(2.0, 1.0);
        let r = collapse(&e, &(0..9).collect::<Vec<_>>(), 0, "t").unwrap();
        let ci = r.collapse_index.unwrap();
        assert!((ci - 4.0).abs() < 1e-4, "{ci}");
        assert!((r.delta_scene - 0.8).abs() < 1e-5 && (r.delta_cat - 0.2).abs() < 1e-5);
        assert_eq!(r.auroc, 1.0);
        assert_eq!(r.scene_leak_at_1, 1.0);
        // Every resample keeps the exact structure, so the interval is degenerate at 4 (or NaN-free).
        let (lo, hi) = (r.collapse_index_lo.unwrap(), r.collapse_index_hi.unwrap());
        assert!((lo - 4.0).abs() < 1e-3 && (hi - 4.0).abs() < 1e-3);
    }

    // Issue 20: where S_cat ≈ S_base the ratio printed `28.216 [-2122.121, 384.597]`. Label carries no
    // signal here (cat = base = 0 by construction), so Δcat's interval holds 0 and the ratio is withheld.
    #[test]
    fn ratio_is_undefined_where_delta_cat_is_indistinguishable_from_zero() {
        let e = constructed(1.0, 0.0);
        let r = collapse(&e, &(0..9).collect::<Vec<_>>(), 0, "t").unwrap();
        assert!((r.delta_scene - 1.0).abs() < 1e-5 && r.delta_cat.abs() < 1e-6);
        assert_eq!((r.collapse_index, r.collapse_index_lo), (None, None));
        let why = r.collapse_index_note.unwrap();
        assert!(why.starts_with("undefined (S_cat ≈ S_base)"), "{why}");
        // The rule itself: a clear interval gives the ratio and its interval, one holding 0 does not.
        assert_eq!(
            ratio_or_reason(2.0, (1.5, 3.0), (0.1, 0.05, 0.2)),
            (Some(2.0), Some((1.5, 3.0)), None)
        );
        assert_eq!(
            ratio_or_reason(-3.0, (-9.0, 1.0), (-0.1, -0.2, -0.01)).0,
            Some(-3.0)
        );
        let (ci, iv, why) = ratio_or_reason(28.2, (-2122.1, 384.6), (0.0009, -0.004, 0.006));
        assert_eq!((ci, iv), (None, None));
        assert!(why.unwrap().contains("[-0.0040, 0.0060] includes 0"));
    }

    // Issue 20: same-instance retrieval beside the collapse index. 6 scenes × 3 labels; instance `l:k` of
    // label l is pasted in scenes k and k + 3. Known by its instance, every crop finds its twin in the other
    // scene; known by its scene (and label), it finds its twin only by the label's share.
    #[test]
    fn same_instance_retrieval_is_one_for_instance_features_and_near_chance_for_scene_features() {
        let build = |by_instance: bool| {
            let mut rows = Vec::new();
            let mut sets = Vec::new();
            for g in 0..6 {
                for l in 0..3 {
                    let inst = l * 3 + g % 3;
                    let v: Vec<f32> = (0..16)
                        .map(|j| {
                            let noise =
                                ((rows.len() * 7 + j * 3) as f64 * 0.37).sin() as f32 * 0.05;
                            noise
                                + if by_instance && j == inst { 1.0 } else { 0.0 }
                                + if !by_instance && j == 9 + g { 1.0 } else { 0.0 }
                                + if j == 15 { 0.3 * l as f32 } else { 0.0 }
                        })
                        .collect();
                    rows.push(row(
                        rows.len(),
                        &format!("g{g}"),
                        Some(["a", "b", "c"][l]),
                        None,
                        v,
                    ));
                    sets.push(Some(format!("{l}:{}", g % 3)));
                }
            }
            let mut e = from_rows(&rows).unwrap();
            e.set_ids = sets;
            collapse(&e, &(0..18).collect::<Vec<_>>(), 0, "t").unwrap()
        };
        let r = build(true);
        let x = r.instance.unwrap();
        assert_eq!((x.at_1, x.queries), (1.0, 18));
        // one twin among the 15 crops of the other 5 scenes
        assert!((x.chance - 1.0 / 15.0).abs() < 1e-12, "{}", x.chance);
        assert!(x.lo > 0.8 && x.hi == 1.0);
        let r = build(false);
        assert!(r.instance.unwrap().at_1 < 0.5);
        // without set_id there is nothing to retrieve
        let e = constructed(1.0, 1.0);
        assert_eq!(
            collapse(&e, &(0..9).collect::<Vec<_>>(), 0, "t")
                .unwrap()
                .instance,
            None
        );
    }

    #[test]
    fn bootstrap_is_deterministic_under_a_seed() {
        // 30 images × 3 labels, embeddings from a deterministic formula (enough images for the
        // percentiles not to sit on the extremes).
        let rows: Vec<EmbeddingRow> = (0..90)
            .map(|i| {
                row(
                    i,
                    &format!("i{}", i / 3),
                    Some(["a", "b", "c"][i % 3]),
                    Some((i % 4) as i32),
                    (0..6)
                        .map(|j| {
                            ((i * 7 + j * 13) as f64 * 0.61).sin() as f32
                                + if j == i % 3 { 0.8 } else { 0.0 }
                        })
                        .collect(),
                )
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let rows: Vec<usize> = (0..90).collect();
        let a = collapse(&e, &rows, 42, "t").unwrap();
        let b = collapse(&e, &rows, 42, "t").unwrap();
        let c = collapse(&e, &rows, 43, "t").unwrap();
        assert_eq!(
            (
                a.collapse_index_lo,
                a.collapse_index_hi,
                a.auroc_lo,
                a.auroc_hi
            ),
            (
                b.collapse_index_lo,
                b.collapse_index_hi,
                b.auroc_lo,
                b.auroc_hi
            )
        );
        assert_ne!(
            (
                a.delta_scene_lo,
                a.collapse_index_hi,
                a.auroc_lo,
                a.auroc_hi
            ),
            (
                c.delta_scene_lo,
                c.collapse_index_hi,
                c.auroc_lo,
                c.auroc_hi
            )
        );
        // Thread count must not matter: the same numbers on a one-thread pool.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let d = pool.install(|| collapse(&e, &rows, 42, "t").unwrap());
        assert_eq!(
            (a.collapse_index_lo, a.auroc_hi),
            (d.collapse_index_lo, d.auroc_hi)
        );
    }

    // Weighted means equal the means over the explicitly duplicated data set (copies = new image ids,
    // no pairs between copies of one image).
    #[test]
    fn bootstrap_weights_equal_explicit_duplication() {
        let rows = fixture();
        let e = from_rows(&rows).unwrap();
        // duplicate image i0 (weight 2), drop i3 (weight 0)
        let mut dup: Vec<EmbeddingRow> = rows
            .iter()
            .filter(|r| r.image_id != "i3")
            .cloned()
            .collect();
        for r in rows.iter().filter(|r| r.image_id == "i0") {
            let mut c = r.clone();
            c.image_id = "i0copy".into();
            dup.push(c);
        }
        let ed = from_rows(&dup).unwrap();
        let rd = collapse(&ed, &(0..dup.len()).collect::<Vec<_>>(), 0, "t").unwrap();
        // rebuild cells for the original and weight them
        let kept_images = ["i0", "i1", "i2", "i3"];
        let w: Vec<f64> = kept_images
            .iter()
            .map(|g| match *g {
                "i0" => 2.0,
                "i3" => 0.0,
                _ => 1.0,
            })
            .collect();
        let cells = cells_for_test(&e);
        let (s, c, b) = cells.means(&w);
        // pairs between i0 and i0copy are (different image, ...) in `dup`, but not formed by weighting:
        // compare only S_scene, which has no cross-copy pairs.
        assert!((s - rd.s_scene).abs() < 1e-9, "{s} vs {}", rd.s_scene);
        assert!(c.is_finite() && b.is_finite());
    }

    fn cells_for_test(e: &Embeddings) -> Cells {
        // Same construction as `collapse` for the fixture (images in first-seen order i0..i3).
        let keep: Vec<usize> = (0..10).collect();
        let x = e.gather(&keep, true);
        let img = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3];
        let lab: Vec<usize> = keep
            .iter()
            .map(|&r| match e.labels[r].as_deref() {
                Some("a") => 0,
                Some("b") => 1,
                _ => 2,
            })
            .collect();
        let mut cells: Vec<(usize, usize, f64, Vec<f64>)> = Vec::new();
        for i in 0..10 {
            match cells.iter_mut().find(|c| c.0 == img[i] && c.1 == lab[i]) {
                Some(c) => {
                    c.2 += 1.0;
                    c.3.iter_mut()
                        .zip(&x[i * 5..i * 5 + 5])
                        .for_each(|(s, v)| *s += *v as f64);
                }
                None => cells.push((
                    img[i],
                    lab[i],
                    1.0,
                    x[i * 5..i * 5 + 5].iter().map(|v| *v as f64).collect(),
                )),
            }
        }
        Cells::new(5, 4, 3, cells)
    }

    #[test]
    fn single_label_is_an_error_naming_the_column() {
        let rows: Vec<_> = (0..4)
            .map(|i| {
                row(
                    i,
                    &format!("i{}", i / 2),
                    Some("cat"),
                    None,
                    vec![1.0, i as f32],
                )
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let err = collapse(&e, &[0, 1, 2, 3], 0, "t").unwrap_err().to_string();
        assert!(err.contains("`label`") && err.contains("cat"), "{err}");
    }

    #[test]
    fn no_scene_pairs_is_an_error() {
        let rows: Vec<_> = (0..4)
            .map(|i| {
                row(
                    i,
                    &format!("i{i}"),
                    Some(["a", "b"][i % 2]),
                    None,
                    vec![1.0, i as f32],
                )
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let err = collapse(&e, &[0, 1, 2, 3], 0, "t").unwrap_err().to_string();
        assert!(
            err.contains("no image has crops of two different labels"),
            "{err}"
        );
    }
}
