//! The analyses `analyze` runs, one function each with one shape: the prepared embeddings and their groups
//! in ([`Context`]), the files to write, the summary.md section and the notes out ([`Report`]). The shared
//! loop that writes them is `run::analyze_embeddings`; [`ANALYSES`] is the table it runs.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::analyze::collapse::{self, RESAMPLES};
use crate::analyze::embeddings::{Embeddings, GroupBy, OBJECT_ONLY};
use crate::analyze::run::{unique_stem, Analysis, AnalyzeOptions};
use crate::analyze::table::{f, fo, i, s, Table, Ty, Val};
use crate::analyze::{invariance, knn, name_that_dataset, prototypes, spectrum, uniformity};
use crate::error::{Error, Result};
use crate::report::columns as col;
use crate::report::plot;
use crate::report::summary::{collapse_index_text, num, with_interval, Section};

/// What every analysis reads: the pooled embeddings, their groups in report order, and the options.
pub(crate) struct Context<'a> {
    pub e: &'a Embeddings,
    pub grouped: &'a BTreeMap<String, Vec<usize>>,
    pub opts: &'a AnalyzeOptions,
}

/// Draws one PNG at the path it is given.
pub(crate) type Draw<'a> = Box<dyn Fn(&Path) -> Result<()> + 'a>;

/// One file of a report, in the order the loop writes it (and lists it in `AnalyzeOutcome::written`).
pub(crate) enum Output<'a> {
    /// `<name>.parquet` (or `.csv`).
    Table(&'static str, Table),
    /// A PNG named in full; drawn only when plots are on.
    Plot(String, Draw<'a>),
}

/// What one analysis produced.
pub(crate) struct Report<'a> {
    pub outputs: Vec<Output<'a>>,
    pub section: Section,
    /// One per row that could not be computed (the row carries it too).
    pub notes: Vec<String>,
}

/// One analysis: the context in, its report out.
pub(crate) type Run = for<'a> fn(&Context<'a>) -> Report<'a>;

/// Every analysis, in the order `analyze all` writes them and summary.md lists them.
pub(crate) const ANALYSES: [(Analysis, Run); 7] = [
    (Analysis::Collapse, collapse_report),
    (Analysis::Spectrum, spectrum_report),
    (Analysis::Uniformity, uniformity_report),
    (Analysis::Invariance, invariance_report),
    (Analysis::Prototypes, prototypes_report),
    (Analysis::Knn, knn_report),
    (Analysis::NameThatDataset, name_that_dataset_report),
];

impl<'a> Context<'a> {
    fn seed(&self) -> u64 {
        self.opts.seed
    }

    /// Provenance columns of a group: the files its rows came from, their sha256, the seed.
    fn provenance(&self, rows: &[usize]) -> Vec<(&'static str, Val)> {
        let e = self.e;
        let by: GroupBy = self.opts.group_by;
        let files: BTreeSet<usize> = rows.iter().map(|&r| e.file_index[r]).collect();
        let join =
            |g: &dyn Fn(usize) -> String| files.iter().map(|&k| g(k)).collect::<Vec<_>>().join(";");
        vec![
            (col::GROUP_BY, s(format!("{by:?}").to_lowercase())),
            (
                col::INPUT_FILE,
                s(join(&|k| e.files[k].path.display().to_string())),
            ),
            (col::INPUT_SHA256, s(join(&|k| e.files[k].sha256.clone()))),
            (col::SEED, Val::I(Some(self.seed() as i64))),
        ]
    }

    /// `row` with the provenance of `rows` appended.
    fn with_provenance(
        &self,
        mut row: Vec<(&'static str, Val)>,
        rows: &[usize],
    ) -> Vec<(&'static str, Val)> {
        row.extend(self.provenance(rows));
        row
    }

    /// The row of a group the analysis could not be computed for: the error as its note (kept in `notes`
    /// too), `extra` columns that tell the row apart, and the group's provenance.
    fn note(
        &self,
        table: &mut Table,
        notes: &mut Vec<String>,
        g: &str,
        rows: &[usize],
        err: Error,
        extra: Vec<(&'static str, Val)>,
    ) {
        let msg = err.to_string();
        notes.push(msg.clone());
        let mut row = vec![(col::DATASET, s(g)), (col::NOTE, s(msg))];
        row.extend(extra);
        table.rows.push(self.with_provenance(row, rows));
    }
}

/// A section with a title and table header (the header may stay empty).
fn section(title: impl Into<String>, header: &[&str]) -> Section {
    Section {
        title: title.into(),
        header: header.iter().map(|h| h.to_string()).collect(),
        ..Default::default()
    }
}

fn pairs_kind(sampled: bool) -> &'static str {
    if sampled {
        "sampled"
    } else {
        "exact"
    }
}

/// The `pixels` of whole crops (as given), beside [`OBJECT_ONLY`] ones.
const PIXELS_ALL: &str = "all";

pub(crate) fn collapse_report<'a>(cx: &Context<'a>) -> Report<'a> {
    let e = cx.e;
    let mut t = Table::new(&[
        (col::PIXELS, Ty::S),
        (col::N_IMAGES, Ty::I),
        (col::N_CROPS, Ty::I),
        (col::S_SCENE, Ty::F),
        (col::S_CAT, Ty::F),
        (col::S_BASE, Ty::F),
        (col::DELTA_SCENE, Ty::F),
        (col::DELTA_CAT, Ty::F),
        (col::COLLAPSE_INDEX, Ty::F),
        (col::AUROC, Ty::F),
        (col::SCENE_LEAK_AT_1, Ty::F),
        (col::INSTANCE_AT_1, Ty::F),
        (col::INSTANCE_AT_1_LO, Ty::F),
        (col::INSTANCE_AT_1_HI, Ty::F),
        (col::INSTANCE_CHANCE, Ty::F),
        (col::N_INSTANCE_QUERIES, Ty::I),
        (col::CODE_AGREEMENT_SCENE, Ty::F),
        (col::CODE_AGREEMENT_CAT, Ty::F),
        (col::COLLAPSE_INDEX_LO, Ty::F),
        (col::COLLAPSE_INDEX_HI, Ty::F),
        (col::COLLAPSE_INDEX_NOTE, Ty::S),
        (col::DELTA_SCENE_LO, Ty::F),
        (col::DELTA_SCENE_HI, Ty::F),
        (col::DELTA_CAT_LO, Ty::F),
        (col::DELTA_CAT_HI, Ty::F),
        (col::CONTEXT_DELTA_SCENE, Ty::F),
        (col::CONTEXT_DELTA_SCENE_LO, Ty::F),
        (col::CONTEXT_DELTA_SCENE_HI, Ty::F),
        (col::AUROC_LO, Ty::F),
        (col::AUROC_HI, Ty::F),
        (col::PAIRS, Ty::S),
        (col::N_PAIRS, Ty::I),
        (col::N_SCENE_PAIRS, Ty::F),
        (col::N_CAT_PAIRS, Ty::F),
        (col::BOOTSTRAP_RESAMPLES, Ty::I),
    ]);
    let mut sec = section(
        "Collapse across crops",
        &[
            "group",
            "pixels",
            "Δscene [95% CI]",
            "Δcat [95% CI]",
            "collapse index Δscene/Δcat [95% CI]",
            "AUROC [95% CI]",
            "S_scene",
            "S_cat",
            "S_base",
            "scene-leak@1",
            "same instance@1 [95% CI] (chance)",
            "code agr. scene/cat",
            "pairs",
        ],
    );
    let (mut outputs, mut notes) = (Vec::new(), Vec::new());
    for (g, all_rows) in cx.grouped {
        // Object-only crops (`embed --crops object-only`) are measured apart from the whole boxes of the
        // same group, and their Δscene set beside the boxes' (context control).
        let (object_only, whole): (Vec<usize>, Vec<usize>) = all_rows
            .iter()
            .partition(|&&r| e.transforms[r].as_deref() == Some(OBJECT_ONLY));
        let mut whole_result = None;
        for (pixels, rows) in [(PIXELS_ALL, whole), (OBJECT_ONLY, object_only)] {
            if rows.is_empty() {
                continue;
            }
            let rows = &rows[..];
            let label = if pixels == OBJECT_ONLY {
                format!("{g} ({OBJECT_ONLY})")
            } else {
                g.clone()
            };
            match collapse::collapse(e, rows, cx.seed(), &label) {
                Ok(mut r) => {
                    let context = (pixels == OBJECT_ONLY)
                        .then(|| {
                            whole_result
                                .as_ref()
                                .map(|w| collapse::context_share(w, &r))
                        })
                        .flatten();
                    if let Some((_, _, _, false)) = context {
                        sec.lines.push(format!(
                        "`{g}`: whole boxes and object-only crops cover other images; the context \
                         interval is unpaired"
                    ));
                    }
                    let row = vec![
                        (col::DATASET, s(g.as_str())),
                        (col::PIXELS, s(pixels)),
                        (col::N_IMAGES, i(r.n_images)),
                        (col::N_CROPS, i(r.n_crops)),
                        (col::S_SCENE, f(r.s_scene)),
                        (col::S_CAT, f(r.s_cat)),
                        (col::S_BASE, f(r.s_base)),
                        (col::DELTA_SCENE, f(r.delta_scene)),
                        (col::DELTA_CAT, f(r.delta_cat)),
                        (col::COLLAPSE_INDEX, fo(r.collapse_index)),
                        (col::AUROC, f(r.auroc)),
                        (col::SCENE_LEAK_AT_1, f(r.scene_leak_at_1)),
                        (col::INSTANCE_AT_1, fo(r.instance.as_ref().map(|x| x.at_1))),
                        (col::INSTANCE_AT_1_LO, fo(r.instance.as_ref().map(|x| x.lo))),
                        (col::INSTANCE_AT_1_HI, fo(r.instance.as_ref().map(|x| x.hi))),
                        (
                            col::INSTANCE_CHANCE,
                            fo(r.instance.as_ref().map(|x| x.chance)),
                        ),
                        (
                            col::N_INSTANCE_QUERIES,
                            i(r.instance.as_ref().map_or(0, |x| x.queries)),
                        ),
                        (col::CODE_AGREEMENT_SCENE, fo(r.code_agreement_scene)),
                        (col::CODE_AGREEMENT_CAT, fo(r.code_agreement_cat)),
                        (col::COLLAPSE_INDEX_LO, fo(r.collapse_index_lo)),
                        (col::COLLAPSE_INDEX_HI, fo(r.collapse_index_hi)),
                        (
                            col::COLLAPSE_INDEX_NOTE,
                            Val::S(r.collapse_index_note.clone()),
                        ),
                        (col::DELTA_SCENE_LO, f(r.delta_scene_lo)),
                        (col::DELTA_SCENE_HI, f(r.delta_scene_hi)),
                        (col::DELTA_CAT_LO, f(r.delta_cat_lo)),
                        (col::DELTA_CAT_HI, f(r.delta_cat_hi)),
                        (col::CONTEXT_DELTA_SCENE, fo(context.map(|c| c.0))),
                        (col::CONTEXT_DELTA_SCENE_LO, fo(context.map(|c| c.1))),
                        (col::CONTEXT_DELTA_SCENE_HI, fo(context.map(|c| c.2))),
                        (col::AUROC_LO, f(r.auroc_lo)),
                        (col::AUROC_HI, f(r.auroc_hi)),
                        (col::PAIRS, s(pairs_kind(r.sampled))),
                        (col::N_PAIRS, i(r.n_pairs)),
                        (col::N_SCENE_PAIRS, f(r.n_scene_pairs_total)),
                        (col::N_CAT_PAIRS, f(r.n_cat_pairs_total)),
                        (col::BOOTSTRAP_RESAMPLES, i(RESAMPLES)),
                    ];
                    t.rows.push(cx.with_provenance(row, rows));
                    sec.rows.push(vec![
                        g.clone(),
                        pixels.to_string(),
                        with_interval(r.delta_scene, r.delta_scene_lo, r.delta_scene_hi),
                        with_interval(r.delta_cat, r.delta_cat_lo, r.delta_cat_hi),
                        collapse_index_text(
                            r.collapse_index,
                            r.collapse_index_lo,
                            r.collapse_index_hi,
                        ),
                        with_interval(r.auroc, r.auroc_lo, r.auroc_hi),
                        num(Some(r.s_scene)),
                        num(Some(r.s_cat)),
                        num(Some(r.s_base)),
                        num(Some(r.scene_leak_at_1)),
                        r.instance.as_ref().map_or_else(
                            || "n/a".to_string(),
                            |x| {
                                format!(
                                    "{} ({})",
                                    with_interval(x.at_1, x.lo, x.hi),
                                    num(Some(x.chance))
                                )
                            },
                        ),
                        format!(
                            "{} / {}",
                            num(r.code_agreement_scene),
                            num(r.code_agreement_cat)
                        ),
                        format!("{} ({})", r.n_pairs, pairs_kind(r.sampled)),
                    ]);
                    if let Some(why) = &r.collapse_index_note {
                        sec.lines.push(format!("`{g}`: collapse index {why}"));
                    }
                    let annotation = format!(
                        "Δscene {}, Δcat {}\ncollapse index {}, AUROC {}",
                        num(Some(r.delta_scene)),
                        num(Some(r.delta_cat)),
                        collapse_index_text(
                            r.collapse_index,
                            r.collapse_index_lo,
                            r.collapse_index_hi
                        ),
                        num(Some(r.auroc))
                    );
                    let (sc, ca) = (
                        std::mem::take(&mut r.scene_cos),
                        std::mem::take(&mut r.cat_cos),
                    );
                    outputs.push(Output::Plot(
                        format!("collapse_hist_{}.png", unique_stem(&label)),
                        Box::new(move |p| {
                            plot::histograms(
                                p,
                                &format!("{label}: cosine similarity of crop pairs"),
                                "cosine similarity of the pair's embeddings (−1…1)",
                                &[
                                    ("same scene, different label", &sc),
                                    ("different scene, same label", &ca),
                                ],
                                40,
                                Some(&annotation),
                            )
                        }),
                    ));
                    if pixels == PIXELS_ALL {
                        whole_result = Some(r);
                    }
                }
                Err(err) => {
                    sec.lines.push(format!("`{label}`: {err}"));
                    cx.note(
                        &mut t,
                        &mut notes,
                        g,
                        rows,
                        err,
                        vec![(col::PIXELS, s(pixels))],
                    );
                }
            }
        }
    }
    outputs.push(Output::Table(col::FILE_COLLAPSE, t));
    Report {
        outputs,
        section: sec,
        notes,
    }
}

pub(crate) fn spectrum_report<'a>(cx: &Context<'a>) -> Report<'a> {
    let e = cx.e;
    let mut t = Table::new(&[
        (col::N, Ty::I),
        (col::DIM, Ty::I),
        (col::RANK_CAP, Ty::I),
        (col::RANKME, Ty::F),
        (col::ALPHA_REQ, Ty::F),
        (col::N_DEAD, Ty::I),
    ]);
    let mut sv = Table::new(&[(col::RANK, Ty::I), (col::VALUE, Ty::F)]);
    let mut sec = section(
        "Spectrum",
        &[
            "group",
            "n",
            "d",
            "rank cap min(n−1, d)",
            "RankMe",
            "α-ReQ",
            "dead dims (within cap)",
        ],
    );
    let mut notes = Vec::new();
    let mut spectra = Vec::new();
    for (g, rows) in cx.grouped {
        match spectrum::spectrum(e, rows, g) {
            Ok(r) => {
                let mut row = vec![
                    (col::DATASET, s(g.as_str())),
                    (col::N, i(r.n)),
                    (col::DIM, i(r.dim)),
                    (col::RANK_CAP, i(r.rank_cap)),
                    (col::RANKME, f(r.rankme)),
                    (col::ALPHA_REQ, f(r.alpha_req)),
                    (col::N_DEAD, i(r.n_dead)),
                ];
                if let Some(n) = r.note() {
                    sec.lines.push(format!("`{g}`: {n}"));
                    row.push((col::NOTE, s(n)));
                }
                t.rows.push(cx.with_provenance(row, rows));
                for (k, v) in r.singular_values.iter().enumerate() {
                    let row = vec![
                        (col::DATASET, s(g.as_str())),
                        (col::RANK, i(k + 1)),
                        (col::VALUE, f(*v)),
                    ];
                    sv.rows.push(cx.with_provenance(row, rows));
                }
                sec.rows.push(vec![
                    g.clone(),
                    r.n.to_string(),
                    r.dim.to_string(),
                    r.rank_cap.to_string(),
                    num(Some(r.rankme)),
                    num(Some(r.alpha_req)),
                    r.n_dead.to_string(),
                ]);
                spectra.push((g.clone(), r.singular_values));
            }
            Err(err) => {
                sec.lines.push(format!("`{g}`: {err}"));
                cx.note(&mut t, &mut notes, g, rows, err, vec![]);
            }
        }
    }
    sec.lines.push("RankMe from uncentred singular values; α-ReQ and dead dimensions from centred covariance eigenvalues (no intervals: deterministic functions of the whole matrix)".into());
    let mut outputs = vec![
        Output::Table(col::FILE_SPECTRUM, t),
        Output::Table(col::FILE_SINGULAR_VALUES, sv),
    ];
    if !spectra.is_empty() {
        outputs.push(Output::Plot(
            "spectrum.png".into(),
            Box::new(move |p| {
                plot::log_lines(
                    p,
                    "singular values of the embedding matrix (uncentred)",
                    "singular value σ_k (embedding units, log scale)",
                    &spectra,
                )
            }),
        ));
    }
    Report {
        outputs,
        section: sec,
        notes,
    }
}

pub(crate) fn uniformity_report<'a>(cx: &Context<'a>) -> Report<'a> {
    let mut t = Table::new(&[
        (col::ALIGNMENT, Ty::F),
        (col::UNIFORMITY, Ty::F),
        (col::N_ALIGN_PAIRS, Ty::I),
        (col::PAIRS, Ty::S),
    ]);
    let mut sec = section(
        "Alignment and uniformity (Wang & Isola 2020)",
        &["group", "alignment", "uniformity", "pairs"],
    );
    let mut notes = Vec::new();
    for (g, rows) in cx.grouped {
        match uniformity::uniformity(cx.e, rows, cx.seed(), g) {
            Ok(r) => {
                let pairs = pairs_kind(r.sampled);
                let row = vec![
                    (col::DATASET, s(g.as_str())),
                    (col::ALIGNMENT, f(r.alignment)),
                    (col::UNIFORMITY, f(r.uniformity)),
                    (col::N_ALIGN_PAIRS, i(r.n_align_pairs)),
                    (col::PAIRS, s(pairs)),
                ];
                t.rows.push(cx.with_provenance(row, rows));
                sec.rows.push(vec![
                    g.clone(),
                    num(Some(r.alignment)),
                    num(Some(r.uniformity)),
                    pairs.into(),
                ]);
            }
            Err(err) => {
                sec.lines.push(format!("`{g}`: {err}"));
                cx.note(&mut t, &mut notes, g, rows, err, vec![]);
            }
        }
    }
    Report {
        outputs: vec![Output::Table(col::FILE_UNIFORMITY, t)],
        section: sec,
        notes,
    }
}

pub(crate) fn invariance_report<'a>(cx: &Context<'a>) -> Report<'a> {
    let e = cx.e;
    let mut t = Table::new(&[
        (col::TRANSFORM, Ty::S),
        (col::K, Ty::I),
        (col::SCORE, Ty::F),
        (col::PERCENTILE, Ty::F),
        (col::N_SETS, Ty::I),
        (col::N_LABELS, Ty::I),
    ]);
    let mut sec = section(
        "Invariance (Goodfellow et al. 2009; Purushwalkam & Gupta 2020)",
        &["group", "transform", "top-10", "top-25", "sets"],
    );
    let mut notes = Vec::new();
    // (k, transform, group) → score, for grouped bars: one group of bars per transform.
    let mut bars: BTreeMap<(usize, String, String), f64> = BTreeMap::new();
    for (g, rows) in cx.grouped {
        // Per transform when the optional `transform` column is set, else one row group.
        let mut by_t: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        for &r in rows {
            by_t.entry(e.transforms[r].clone()).or_default().push(r);
        }
        for (tr, trows) in &by_t {
            match invariance::invariance(e, trows, g) {
                Ok(r) => {
                    for (k, score) in &r.scores {
                        let row = vec![
                            (col::DATASET, s(g.as_str())),
                            (col::TRANSFORM, Val::S(tr.clone())),
                            (col::K, i(*k)),
                            (col::SCORE, f(*score)),
                            (col::PERCENTILE, f(r.percentile)),
                            (col::N_SETS, i(r.n_sets)),
                            (col::N_LABELS, i(r.n_labels)),
                        ];
                        t.rows.push(cx.with_provenance(row, trows));
                    }
                    let tname = tr.clone().unwrap_or_else(|| "all".into());
                    for (k, v) in &r.scores {
                        bars.insert((*k, tname.clone(), g.clone()), *v);
                    }
                    sec.rows.push(vec![
                        g.clone(),
                        tr.clone().unwrap_or_else(|| "-".into()),
                        num(Some(r.scores[0].1)),
                        num(Some(r.scores[1].1)),
                        r.n_sets.to_string(),
                    ]);
                }
                Err(err) => {
                    sec.lines.push(format!("`{g}`: {err}"));
                    let extra = vec![(col::TRANSFORM, Val::S(tr.clone()))];
                    cx.note(&mut t, &mut notes, g, trows, err, extra);
                }
            }
        }
    }
    let mut outputs = vec![Output::Table(col::FILE_INVARIANCE, t)];
    if !bars.is_empty() {
        let ks: BTreeSet<usize> = bars.keys().map(|k| k.0).collect();
        let transforms: Vec<String> = bars
            .keys()
            .map(|k| k.1.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let panels: Vec<plot::Panel> = ks
            .iter()
            .map(|&k| {
                let series = cx
                    .grouped
                    .keys()
                    .map(|g| {
                        let v = transforms
                            .iter()
                            .map(|t| {
                                bars.get(&(k, t.clone(), g.clone()))
                                    .copied()
                                    .unwrap_or(f64::NAN)
                            })
                            .collect();
                        (g.clone(), v)
                    })
                    .collect();
                (format!("mean of the top {k} units"), series)
            })
            .collect();
        // Two transform names share a long prefix and would run into each other under their bars.
        let shown: Vec<String> = transforms
            .iter()
            .map(|t| t.replace("illumination-", "illum. "))
            .collect();
        outputs.push(Output::Plot(
            "invariance.png".into(),
            Box::new(move |p| {
                plot::grouped_bars(
                    p,
                    "invariance per transformation (Goodfellow et al. 2009)",
                    "invariance score (%)",
                    &shown,
                    &panels,
                )
            }),
        ));
    }
    Report {
        outputs,
        section: sec,
        notes,
    }
}

pub(crate) fn prototypes_report<'a>(cx: &Context<'a>) -> Report<'a> {
    let e = cx.e;
    let mut t = Table::new(&[
        (col::N_PROTOTYPES, Ty::I),
        (col::ENTROPY, Ty::F),
        (col::PERPLEXITY_RATIO, Ty::F),
        (col::DEAD, Ty::I),
        (col::K_SOURCE, Ty::S),
    ]);
    let mut sec = section(
        "Prototype usage (SwAV codes)",
        &[
            "group",
            "K (from)",
            "entropy (nats)",
            "perplexity/K",
            "dead",
        ],
    );
    let (mut outputs, mut notes) = (Vec::new(), Vec::new());
    for (g, rows) in cx.grouped {
        // A run without prototypes (SimCLR, a user's model) has no codes: no row, one line.
        if !prototypes::has_codes(e, rows) {
            sec.lines.push(format!(
                "`{g}`: no prototype codes (a run without trained prototypes, such as SimCLR or MoCo)"
            ));
            continue;
        }
        match prototypes::prototypes(e, rows, cx.opts.num_prototypes, g) {
            Ok(r) => {
                let row = vec![
                    (col::DATASET, s(g.as_str())),
                    (col::N_PROTOTYPES, i(r.k)),
                    (col::ENTROPY, f(r.entropy)),
                    (col::PERPLEXITY_RATIO, f(r.perplexity_ratio)),
                    (col::DEAD, i(r.dead)),
                    (col::K_SOURCE, s(r.k_source)),
                ];
                t.rows.push(cx.with_provenance(row, rows));
                sec.rows.push(vec![
                    g.clone(),
                    format!("{} ({})", r.k, r.k_source),
                    num(Some(r.entropy)),
                    num(Some(r.perplexity_ratio)),
                    r.dead.to_string(),
                ]);
                let mut hist: Vec<(String, f64)> = r
                    .used
                    .iter()
                    .map(|(k, c)| (k.to_string(), *c as f64))
                    .collect();
                hist.sort_by(|a, b| b.1.total_cmp(&a.1));
                let (k, dead, n) = (r.k, r.dead, r.n);
                outputs.push(Output::Plot(
                    format!("prototypes_{}.png", unique_stem(g)),
                    Box::new(move |p| {
                        plot::count_bars(
                            p,
                            &format!("{g}: {n} crops on {} of K = {k} prototypes", k - dead),
                            "prototype, ranked by use (unused ones not drawn)",
                            "crops assigned (count)",
                            &hist,
                        )
                    }),
                ));
            }
            Err(err) => {
                sec.lines.push(format!("`{g}`: {err}"));
                cx.note(&mut t, &mut notes, g, rows, err, vec![]);
            }
        }
    }
    if sec.rows.is_empty() {
        // No group has codes: the section is its lines, without an empty table.
        sec.header.clear();
    }
    outputs.push(Output::Table(col::FILE_PROTOTYPES, t));
    Report {
        outputs,
        section: sec,
        notes,
    }
}

pub(crate) fn knn_report<'a>(cx: &Context<'a>) -> Report<'a> {
    let mut t = Table::new(&[
        (col::K, Ty::I),
        (col::ACCURACY, Ty::F),
        (col::ACCURACY_LO, Ty::F),
        (col::ACCURACY_HI, Ty::F),
        (col::CHANCE, Ty::F),
        (col::PROTOCOL, Ty::S),
        (col::N_QUERIES, Ty::I),
        (col::N_BANK, Ty::I),
        (col::PAIRS, Ty::S),
    ]);
    let mut sec = section(
        format!("Weighted kNN (k = {}, τ = {})", knn::K, knn::TAU),
        &[
            "group",
            "accuracy [95% CI]",
            "chance (majority)",
            "protocol",
            "queries",
        ],
    );
    let mut notes = Vec::new();
    for (g, rows) in cx.grouped {
        match knn::knn(cx.e, rows, knn::K, cx.seed(), g) {
            Ok(r) => {
                let row = vec![
                    (col::DATASET, s(g.as_str())),
                    (col::K, i(r.k)),
                    (col::ACCURACY, f(r.accuracy)),
                    (col::ACCURACY_LO, f(r.accuracy_lo)),
                    (col::ACCURACY_HI, f(r.accuracy_hi)),
                    (col::CHANCE, f(r.chance)),
                    (col::PROTOCOL, s(r.protocol)),
                    (col::N_QUERIES, i(r.n_queries)),
                    (col::N_BANK, i(r.n_bank)),
                    (col::PAIRS, s(pairs_kind(r.sampled))),
                ];
                t.rows.push(cx.with_provenance(row, rows));
                sec.rows.push(vec![
                    g.clone(),
                    with_interval(r.accuracy, r.accuracy_lo, r.accuracy_hi),
                    num(Some(r.chance)),
                    r.protocol.into(),
                    format!(
                        "{}{}",
                        r.n_queries,
                        if r.sampled { " (sampled)" } else { "" }
                    ),
                ]);
            }
            Err(err) => {
                sec.lines.push(format!("`{g}`: {err}"));
                let extra = vec![(col::K, i(knn::K))];
                cx.note(&mut t, &mut notes, g, rows, err, extra);
            }
        }
    }
    Report {
        outputs: vec![Output::Table(col::FILE_KNN, t)],
        section: sec,
        notes,
    }
}

/// One row over every input row, whatever the grouping: the question is which dataset a row came from.
pub(crate) fn name_that_dataset_report<'a>(cx: &Context<'a>) -> Report<'a> {
    let e = cx.e;
    let mut t = Table::new(&[
        (col::ACCURACY, Ty::F),
        (col::ACCURACY_LO, Ty::F),
        (col::ACCURACY_HI, Ty::F),
        (col::CHANCE, Ty::F),
        (col::FOLDS, Ty::I),
        (col::N_CLASSES, Ty::I),
        (col::N_TRAIN, Ty::I),
        (col::N_TEST, Ty::I),
    ]);
    let mut sec = section("Name that dataset (Torralba & Efros 2011)", &[]);
    let mut notes = Vec::new();
    let all: Vec<usize> = (0..e.len()).collect();
    match name_that_dataset::name_that_dataset(e, cx.seed()) {
        Ok(r) => {
            let row = vec![
                (col::DATASET, s("all")),
                (col::ACCURACY, f(r.accuracy)),
                (col::ACCURACY_LO, f(r.accuracy_lo)),
                (col::ACCURACY_HI, f(r.accuracy_hi)),
                (col::CHANCE, f(r.chance)),
                (col::FOLDS, i(r.folds)),
                (col::N_CLASSES, i(r.n_classes)),
                (col::N_TRAIN, i(r.n_train)),
                (col::N_TEST, i(r.n_test)),
            ];
            t.rows.push(cx.with_provenance(row, &all));
            sec.lines.push(format!(
                "held-out accuracy {} vs chance {} (the largest dataset's share) over {} datasets: standardised features, {}-fold cross-validation by image_id, {} held-out predictions, 95% Wilson interval",
                with_interval(r.accuracy, r.accuracy_lo, r.accuracy_hi),
                num(Some(r.chance)),
                r.n_classes,
                r.folds,
                r.n_test
            ));
        }
        Err(err) => {
            sec.lines.push(err.to_string());
            cx.note(&mut t, &mut notes, "all", &all, err, vec![]);
        }
    }
    Report {
        outputs: vec![Output::Table(col::FILE_NAME_THAT_DATASET, t)],
        section: sec,
        notes,
    }
}
