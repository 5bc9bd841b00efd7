//! `analyze`: reads embeddings files, runs the selected analyses per group, and writes one report per
//! analysis (Parquet, or CSV with `csv`), PNG plots and summary.md. A group whose input cannot support an
//! analysis (one label, no pairs…) gets a row whose `note` says why instead of aborting the run.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::analyze::collapse::{self, RESAMPLES};
use crate::analyze::embeddings::{groups, read_many, Embeddings, GroupBy};
use crate::analyze::{invariance, knn, name_that_dataset, prototypes, spectrum, uniformity};
use crate::error::{Error, Result};
use crate::report::columns as col;
use crate::report::io::{write_csv, write_parquet};
use crate::report::plot;
use crate::report::summary::{num, with_interval, Section, SummaryDoc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Analysis {
    Collapse,
    Spectrum,
    Uniformity,
    Invariance,
    Prototypes,
    Knn,
    NameThatDataset,
    All,
}

impl Analysis {
    pub const EACH: [Analysis; 7] = [
        Analysis::Collapse,
        Analysis::Spectrum,
        Analysis::Uniformity,
        Analysis::Invariance,
        Analysis::Prototypes,
        Analysis::Knn,
        Analysis::NameThatDataset,
    ];

    /// The optional embeddings columns this analysis cannot run without (the required ones are always
    /// there): a file without them skips it with a note naming the column.
    pub fn needs(self) -> &'static [&'static str] {
        use crate::analyze::embeddings::{COL_LABEL, COL_PROTOTYPE, COL_SET_ID};
        match self {
            Analysis::Collapse | Analysis::Knn => &[COL_LABEL],
            Analysis::Invariance => &[COL_LABEL, COL_SET_ID],
            Analysis::Prototypes => &[COL_PROTOTYPE],
            Analysis::Spectrum
            | Analysis::Uniformity
            | Analysis::NameThatDataset
            | Analysis::All => &[],
        }
    }
}

#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub analyses: Vec<Analysis>,
    pub group_by: GroupBy,
    pub seed: u64,
    pub csv: bool,
    /// K for prototype usage (None: largest code + 1).
    pub num_prototypes: Option<usize>,
    pub plots: bool,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            analyses: vec![Analysis::All],
            group_by: GroupBy::Dataset,
            seed: 0,
            csv: false,
            num_prototypes: None,
            plots: true,
        }
    }
}

/// What `analyze` wrote, and the rows that carry a note (input that could not support an analysis).
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOutcome {
    pub written: Vec<PathBuf>,
    pub notes: Vec<String>,
}

#[derive(Clone, Copy)]
enum Ty {
    F,
    I,
    S,
}

enum Val {
    F(Option<f64>),
    I(Option<i64>),
    S(Option<String>),
}

fn f(x: f64) -> Val {
    Val::F(x.is_finite().then_some(x))
}
fn fo(x: Option<f64>) -> Val {
    Val::F(x.filter(|v| v.is_finite()))
}
fn i(x: usize) -> Val {
    Val::I(Some(x as i64))
}
fn s(x: impl Into<String>) -> Val {
    Val::S(Some(x.into()))
}

/// A report table with a declared schema; a row may leave columns out (null).
struct Table {
    schema: Vec<(&'static str, Ty)>,
    rows: Vec<Vec<(&'static str, Val)>>,
}

impl Table {
    fn new(specific: &[(&'static str, Ty)]) -> Self {
        let mut schema = vec![(col::DATASET, Ty::S)];
        schema.extend_from_slice(specific);
        schema.extend_from_slice(&[
            (col::NOTE, Ty::S),
            (col::GROUP_BY, Ty::S),
            (col::INPUT_FILE, Ty::S),
            (col::INPUT_SHA256, Ty::S),
            (col::SEED, Ty::I),
        ]);
        Table {
            schema,
            rows: Vec::new(),
        }
    }
    fn frame(&self) -> Result<DataFrame> {
        let mut cols = Vec::new();
        for (name, ty) in &self.schema {
            fn get<'a>(r: &'a [(&'static str, Val)], name: &str) -> Option<&'a Val> {
                r.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
            }
            let c = match ty {
                Ty::F => Column::new(
                    (*name).into(),
                    self.rows
                        .iter()
                        .map(|r| match get(r, name) {
                            Some(Val::F(v)) => *v,
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                Ty::I => Column::new(
                    (*name).into(),
                    self.rows
                        .iter()
                        .map(|r| match get(r, name) {
                            Some(Val::I(v)) => *v,
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                Ty::S => Column::new(
                    (*name).into(),
                    self.rows
                        .iter()
                        .map(|r| match get(r, name) {
                            Some(Val::S(v)) => v.clone(),
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
            };
            cols.push(c);
        }
        DataFrame::new(self.rows.len(), cols).map_err(|e| Error::polars("building report", e))
    }
}

/// Provenance columns of a group: the files its rows came from, their sha256, the seed.
fn provenance(e: &Embeddings, rows: &[usize], by: GroupBy, seed: u64) -> Vec<(&'static str, Val)> {
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
        (col::SEED, Val::I(Some(seed as i64))),
    ]
}

/// `g` with every character but ASCII letters, digits, `-` and `_` replaced by `_` (file names).
pub fn safe_name(g: &str) -> String {
    g.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Short, unique names for file groups: the file stems when they differ, else the shortest trailing run
/// of parent directories that tells the files apart (`cells/<cell>/boxes.parquet` → `<cell>`), so report
/// rows and legends carry cell names, never 100-character paths (the full paths stay in `input_file`).
pub fn short_file_names(paths: &[String]) -> Vec<String> {
    /// File names the experiment runner and the demo give every embeddings file.
    const GENERIC_STEMS: [&str; 3] = ["boxes", "views", "embeddings"];
    let parts: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            let p = Path::new(p);
            let mut v: Vec<String> = p
                .parent()
                .into_iter()
                .flat_map(|d| d.components())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .filter(|c| c != "." && c != "/")
                .collect();
            v.push(p.file_stem().map_or_else(
                || p.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            ));
            v
        })
        .collect();
    let stems: BTreeSet<&String> = parts.iter().filter_map(|v| v.last()).collect();
    // One stem shared by every file (all `boxes.parquet`), or the name `embed` is given in an experiment
    // cell, says nothing: name by directories only.
    let generic = |s: &String| GENERIC_STEMS.contains(&s.as_str());
    let drop_stem = (stems.len() == 1 && paths.len() > 1) || stems.iter().all(|s| generic(s));
    let names = |k: usize| -> Vec<String> {
        parts
            .iter()
            .map(|v| {
                let v = if drop_stem && v.len() > 1 {
                    &v[..v.len() - 1]
                } else {
                    &v[..]
                };
                v[v.len().saturating_sub(k)..].join("/")
            })
            .collect()
    };
    let longest = parts.iter().map(Vec::len).max().unwrap_or(1);
    for k in 1..=longest {
        let n = names(k);
        if n.iter().collect::<BTreeSet<_>>().len() == n.len() {
            return n;
        }
    }
    paths.to_vec()
}

/// Runs the analyses on `inputs` and writes the report directory `out`.
pub fn analyze(inputs: &[PathBuf], out: &Path, opts: &AnalyzeOptions) -> Result<AnalyzeOutcome> {
    let e = read_many(inputs)?;
    if e.is_empty() {
        return Err(Error::Invalid(format!(
            "no rows in {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    analyze_embeddings(&e, out, opts)
}

/// As `analyze`, on embeddings already in memory.
pub fn analyze_embeddings(
    e: &Embeddings,
    out: &Path,
    opts: &AnalyzeOptions,
) -> Result<AnalyzeOutcome> {
    let mut want: BTreeSet<Analysis> = if opts.analyses.contains(&Analysis::All) {
        Analysis::EACH.into_iter().collect()
    } else {
        opts.analyses.iter().copied().collect()
    };
    if opts.group_by == GroupBy::Kind && e.absent(crate::analyze::embeddings::COL_KIND) {
        return Err(Error::Invalid(
            "--group-by kind: the input has no `kind` column (or only nulls)".into(),
        ));
    }
    let mut grouped = groups(e, opts.group_by);
    if opts.group_by == GroupBy::File {
        let keys: Vec<String> = grouped.keys().cloned().collect();
        let short = short_file_names(&keys);
        grouped = short.into_iter().zip(grouped.into_values()).collect();
    }
    let seed = opts.seed;
    let mut outcome = AnalyzeOutcome::default();
    // An analysis whose input column is absent is skipped, named, and makes the exit status 1.
    let mut skipped_analyses = Section {
        title: "Skipped analyses".into(),
        ..Default::default()
    };
    for a in want.clone() {
        let missing: Vec<String> = a
            .needs()
            .iter()
            .filter(|c| e.absent(c))
            .map(|c| format!("`{c}`"))
            .collect();
        if !missing.is_empty() {
            want.remove(&a);
            let name = clap::ValueEnum::to_possible_value(&a)
                .map_or_else(|| format!("{a:?}"), |v| v.get_name().to_string());
            let msg = format!(
                "{name} skipped: needs column {}, absent (or all null) in the input",
                missing.join(" and ")
            );
            skipped_analyses.lines.push(msg.clone());
            outcome.notes.push(msg);
        }
    }
    let mut doc = SummaryDoc {
        inputs: e.files.clone(),
        seed,
        group_by: format!("{:?}", opts.group_by).to_lowercase(),
        font: plot::font().map(|p| p.display().to_string()),
        ..Default::default()
    };
    std::fs::create_dir_all(out).map_err(|err| Error::io(out, err))?;
    let ext = if opts.csv { "csv" } else { "parquet" };
    let write = |table: &Table, name: &str, outcome: &mut AnalyzeOutcome| -> Result<()> {
        let mut df = table.frame()?;
        let path = out.join(format!("{name}.{ext}"));
        if opts.csv {
            write_csv(&mut df, &path)?
        } else {
            write_parquet(&mut df, &path)?
        }
        outcome.written.push(path);
        Ok(())
    };
    let note = |table: &mut Table,
                g: &str,
                rows: &[usize],
                err: Error,
                outcome: &mut AnalyzeOutcome,
                extra: Vec<(&'static str, Val)>| {
        let msg = err.to_string();
        outcome.notes.push(msg.clone());
        let mut row = vec![(col::DATASET, s(g)), (col::NOTE, s(msg))];
        row.extend(extra);
        row.extend(provenance(e, rows, opts.group_by, seed));
        table.rows.push(row);
    };
    let plot_png = |name: String,
                    doc: &mut SummaryDoc,
                    outcome: &mut AnalyzeOutcome,
                    draw: &dyn Fn(&Path) -> Result<()>|
     -> Result<()> {
        if !opts.plots {
            return Ok(());
        }
        let path = out.join(&name);
        draw(&path)?;
        doc.plots.push(name);
        outcome.written.push(path);
        Ok(())
    };

    if want.contains(&Analysis::Collapse) {
        let mut t = Table::new(&[
            (col::N_IMAGES, Ty::I),
            (col::N_CROPS, Ty::I),
            (col::S_SCENE, Ty::F),
            (col::S_CAT, Ty::F),
            (col::S_BASE, Ty::F),
            (col::COLLAPSE_INDEX, Ty::F),
            (col::AUROC, Ty::F),
            (col::SCENE_LEAK_AT_1, Ty::F),
            (col::CODE_AGREEMENT_SCENE, Ty::F),
            (col::CODE_AGREEMENT_CAT, Ty::F),
            (col::COLLAPSE_INDEX_LO, Ty::F),
            (col::COLLAPSE_INDEX_HI, Ty::F),
            (col::AUROC_LO, Ty::F),
            (col::AUROC_HI, Ty::F),
            (col::PAIRS, Ty::S),
            (col::N_PAIRS, Ty::I),
            (col::N_SCENE_PAIRS, Ty::F),
            (col::N_CAT_PAIRS, Ty::F),
            (col::BOOTSTRAP_RESAMPLES, Ty::I),
        ]);
        let mut sec = Section {
            title: "Collapse across crops".into(),
            ..Default::default()
        };
        sec.header = [
            "group",
            "collapse index [95% CI]",
            "AUROC [95% CI]",
            "S_scene",
            "S_cat",
            "S_base",
            "scene-leak@1",
            "code agr. scene/cat",
            "pairs",
        ]
        .map(String::from)
        .to_vec();
        for (g, rows) in &grouped {
            match collapse::collapse(e, rows, seed, g) {
                Ok(r) => {
                    let mut row = vec![
                        (col::DATASET, s(g.as_str())),
                        (col::N_IMAGES, i(r.n_images)),
                        (col::N_CROPS, i(r.n_crops)),
                        (col::S_SCENE, f(r.s_scene)),
                        (col::S_CAT, f(r.s_cat)),
                        (col::S_BASE, f(r.s_base)),
                        (col::COLLAPSE_INDEX, f(r.collapse_index)),
                        (col::AUROC, f(r.auroc)),
                        (col::SCENE_LEAK_AT_1, f(r.scene_leak_at_1)),
                        (col::CODE_AGREEMENT_SCENE, fo(r.code_agreement_scene)),
                        (col::CODE_AGREEMENT_CAT, fo(r.code_agreement_cat)),
                        (col::COLLAPSE_INDEX_LO, f(r.collapse_index_lo)),
                        (col::COLLAPSE_INDEX_HI, f(r.collapse_index_hi)),
                        (col::AUROC_LO, f(r.auroc_lo)),
                        (col::AUROC_HI, f(r.auroc_hi)),
                        (col::PAIRS, s(if r.sampled { "sampled" } else { "exact" })),
                        (col::N_PAIRS, i(r.n_pairs)),
                        (col::N_SCENE_PAIRS, f(r.n_scene_pairs_total)),
                        (col::N_CAT_PAIRS, f(r.n_cat_pairs_total)),
                        (col::BOOTSTRAP_RESAMPLES, i(RESAMPLES)),
                    ];
                    row.extend(provenance(e, rows, opts.group_by, seed));
                    t.rows.push(row);
                    sec.rows.push(vec![
                        g.clone(),
                        with_interval(r.collapse_index, r.collapse_index_lo, r.collapse_index_hi),
                        with_interval(r.auroc, r.auroc_lo, r.auroc_hi),
                        num(Some(r.s_scene)),
                        num(Some(r.s_cat)),
                        num(Some(r.s_base)),
                        num(Some(r.scene_leak_at_1)),
                        format!(
                            "{} / {}",
                            num(r.code_agreement_scene),
                            num(r.code_agreement_cat)
                        ),
                        format!(
                            "{} ({})",
                            r.n_pairs,
                            if r.sampled { "sampled" } else { "exact" }
                        ),
                    ]);
                    let (sc, ca) = (r.scene_cos, r.cat_cos);
                    let annotation = format!(
                        "collapse index {} [{}, {}], AUROC {}",
                        num(Some(r.collapse_index)),
                        num(Some(r.collapse_index_lo)),
                        num(Some(r.collapse_index_hi)),
                        num(Some(r.auroc))
                    );
                    plot_png(
                        format!("collapse_hist_{}.png", safe_name(g)),
                        &mut doc,
                        &mut outcome,
                        &|p| {
                            plot::histograms(
                                p,
                                &format!("{g}: cosine similarity of crop pairs"),
                                "cosine similarity of the pair's embeddings (−1…1)",
                                &[
                                    ("same scene, different label", &sc),
                                    ("different scene, same label", &ca),
                                ],
                                40,
                                Some(&annotation),
                            )
                        },
                    )?;
                }
                Err(err) => {
                    sec.lines.push(format!("`{g}`: {err}"));
                    note(&mut t, g, rows, err, &mut outcome, vec![]);
                }
            }
        }
        write(&t, col::FILE_COLLAPSE, &mut outcome)?;
        doc.sections.push(sec);
    }

    if want.contains(&Analysis::Spectrum) {
        let mut t = Table::new(&[
            (col::N, Ty::I),
            (col::DIM, Ty::I),
            (col::RANK_CAP, Ty::I),
            (col::RANKME, Ty::F),
            (col::ALPHA_REQ, Ty::F),
            (col::N_DEAD, Ty::I),
        ]);
        let mut sv = Table::new(&[(col::RANK, Ty::I), (col::VALUE, Ty::F)]);
        let mut sec = Section {
            title: "Spectrum".into(),
            ..Default::default()
        };
        sec.header = [
            "group",
            "n",
            "d",
            "rank cap min(n−1, d)",
            "RankMe",
            "α-ReQ",
            "dead dims (within cap)",
        ]
        .map(String::from)
        .to_vec();
        let mut spectra = Vec::new();
        for (g, rows) in &grouped {
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
                    row.extend(provenance(e, rows, opts.group_by, seed));
                    t.rows.push(row);
                    for (k, v) in r.singular_values.iter().enumerate() {
                        let mut row = vec![
                            (col::DATASET, s(g.as_str())),
                            (col::RANK, i(k + 1)),
                            (col::VALUE, f(*v)),
                        ];
                        row.extend(provenance(e, rows, opts.group_by, seed));
                        sv.rows.push(row);
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
                    note(&mut t, g, rows, err, &mut outcome, vec![]);
                }
            }
        }
        sec.lines.push("RankMe from uncentred singular values; α-ReQ and dead dimensions from centred covariance eigenvalues (no intervals: deterministic functions of the whole matrix)".into());
        write(&t, col::FILE_SPECTRUM, &mut outcome)?;
        write(&sv, col::FILE_SINGULAR_VALUES, &mut outcome)?;
        if !spectra.is_empty() {
            plot_png("spectrum.png".into(), &mut doc, &mut outcome, &|p| {
                plot::log_lines(
                    p,
                    "singular values of the embedding matrix (uncentred)",
                    "singular value σ_k (embedding units, log scale)",
                    &spectra,
                )
            })?;
        }
        doc.sections.push(sec);
    }

    if want.contains(&Analysis::Uniformity) {
        let mut t = Table::new(&[
            (col::ALIGNMENT, Ty::F),
            (col::UNIFORMITY, Ty::F),
            (col::N_ALIGN_PAIRS, Ty::I),
            (col::PAIRS, Ty::S),
        ]);
        let mut sec = Section {
            title: "Alignment and uniformity (Wang & Isola 2020)".into(),
            ..Default::default()
        };
        sec.header = ["group", "alignment", "uniformity", "pairs"]
            .map(String::from)
            .to_vec();
        for (g, rows) in &grouped {
            match uniformity::uniformity(e, rows, seed, g) {
                Ok(r) => {
                    let pairs = if r.sampled { "sampled" } else { "exact" };
                    let mut row = vec![
                        (col::DATASET, s(g.as_str())),
                        (col::ALIGNMENT, f(r.alignment)),
                        (col::UNIFORMITY, f(r.uniformity)),
                        (col::N_ALIGN_PAIRS, i(r.n_align_pairs)),
                        (col::PAIRS, s(pairs)),
                    ];
                    row.extend(provenance(e, rows, opts.group_by, seed));
                    t.rows.push(row);
                    sec.rows.push(vec![
                        g.clone(),
                        num(Some(r.alignment)),
                        num(Some(r.uniformity)),
                        pairs.into(),
                    ]);
                }
                Err(err) => {
                    sec.lines.push(format!("`{g}`: {err}"));
                    note(&mut t, g, rows, err, &mut outcome, vec![]);
                }
            }
        }
        write(&t, col::FILE_UNIFORMITY, &mut outcome)?;
        doc.sections.push(sec);
    }

    if want.contains(&Analysis::Invariance) {
        let mut t = Table::new(&[
            (col::TRANSFORM, Ty::S),
            (col::K, Ty::I),
            (col::SCORE, Ty::F),
            (col::PERCENTILE, Ty::F),
            (col::N_SETS, Ty::I),
            (col::N_LABELS, Ty::I),
        ]);
        let mut sec = Section {
            title: "Invariance (Goodfellow et al. 2009; Purushwalkam & Gupta 2020)".into(),
            ..Default::default()
        };
        sec.header = ["group", "transform", "top-10", "top-25", "sets"]
            .map(String::from)
            .to_vec();
        // (k, transform, group) → score, for grouped bars: one group of bars per transform.
        let mut bars: BTreeMap<(usize, String, String), f64> = BTreeMap::new();
        for (g, rows) in &grouped {
            // Per transform when the optional `transform` column is set, else one row group.
            let mut by_t: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
            for &r in rows {
                by_t.entry(e.transforms[r].clone()).or_default().push(r);
            }
            for (tr, trows) in &by_t {
                let trv = Val::S(tr.clone());
                match invariance::invariance(e, trows, g) {
                    Ok(r) => {
                        for (k, score) in &r.scores {
                            let mut row = vec![
                                (col::DATASET, s(g.as_str())),
                                (col::TRANSFORM, Val::S(tr.clone())),
                                (col::K, i(*k)),
                                (col::SCORE, f(*score)),
                                (col::PERCENTILE, f(r.percentile)),
                                (col::N_SETS, i(r.n_sets)),
                                (col::N_LABELS, i(r.n_labels)),
                            ];
                            row.extend(provenance(e, trows, opts.group_by, seed));
                            t.rows.push(row);
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
                        note(
                            &mut t,
                            g,
                            trows,
                            err,
                            &mut outcome,
                            vec![(col::TRANSFORM, trv)],
                        );
                    }
                }
            }
        }
        write(&t, col::FILE_INVARIANCE, &mut outcome)?;
        if !bars.is_empty() {
            let ks: BTreeSet<usize> = bars.keys().map(|k| k.0).collect();
            let transforms: Vec<String> = bars
                .keys()
                .map(|k| k.1.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let names: Vec<&String> = grouped.keys().collect();
            let panels: Vec<plot::Panel> = ks
                .iter()
                .map(|&k| {
                    let series = names
                        .iter()
                        .map(|g| {
                            let v = transforms
                                .iter()
                                .map(|t| {
                                    bars.get(&(k, t.clone(), (*g).clone()))
                                        .copied()
                                        .unwrap_or(f64::NAN)
                                })
                                .collect();
                            ((*g).clone(), v)
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
            plot_png("invariance.png".into(), &mut doc, &mut outcome, &|p| {
                plot::grouped_bars(
                    p,
                    "invariance per transformation (Goodfellow et al. 2009)",
                    "invariance score (%)",
                    &shown,
                    &panels,
                )
            })?;
        }
        doc.sections.push(sec);
    }

    if want.contains(&Analysis::Prototypes) {
        let mut t = Table::new(&[
            (col::N_PROTOTYPES, Ty::I),
            (col::ENTROPY, Ty::F),
            (col::PERPLEXITY_RATIO, Ty::F),
            (col::DEAD, Ty::I),
            (col::K_SOURCE, Ty::S),
        ]);
        let mut sec = Section {
            title: "Prototype usage (SwAV codes)".into(),
            ..Default::default()
        };
        sec.header = [
            "group",
            "K (from)",
            "entropy (nats)",
            "perplexity/K",
            "dead",
        ]
        .map(String::from)
        .to_vec();
        for (g, rows) in &grouped {
            // A run without prototypes (SimCLR, a user's model) has no codes: no row, one line.
            if !prototypes::has_codes(e, rows) {
                sec.lines.push(format!(
                    "`{g}`: no prototype codes (a run without prototypes, such as SimCLR)"
                ));
                continue;
            }
            match prototypes::prototypes(e, rows, opts.num_prototypes, g) {
                Ok(r) => {
                    let mut row = vec![
                        (col::DATASET, s(g.as_str())),
                        (col::N_PROTOTYPES, i(r.k)),
                        (col::ENTROPY, f(r.entropy)),
                        (col::PERPLEXITY_RATIO, f(r.perplexity_ratio)),
                        (col::DEAD, i(r.dead)),
                        (col::K_SOURCE, s(r.k_source)),
                    ];
                    row.extend(provenance(e, rows, opts.group_by, seed));
                    t.rows.push(row);
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
                    plot_png(
                        format!("prototypes_{}.png", safe_name(g)),
                        &mut doc,
                        &mut outcome,
                        &|p| {
                            plot::count_bars(
                                p,
                                &format!("{g}: {n} crops on {} of K = {k} prototypes", k - dead),
                                "prototype, ranked by use (unused ones not drawn)",
                                "crops assigned (count)",
                                &hist,
                            )
                        },
                    )?;
                }
                Err(err) => {
                    sec.lines.push(format!("`{g}`: {err}"));
                    note(&mut t, g, rows, err, &mut outcome, vec![]);
                }
            }
        }
        if sec.rows.is_empty() {
            // No group has codes: the section is its lines, without an empty table.
            sec.header.clear();
        }
        write(&t, col::FILE_PROTOTYPES, &mut outcome)?;
        doc.sections.push(sec);
    }

    if want.contains(&Analysis::Knn) {
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
        let mut sec = Section {
            title: format!("Weighted kNN (k = {}, τ = {})", knn::K, knn::TAU),
            ..Default::default()
        };
        sec.header = [
            "group",
            "accuracy [95% CI]",
            "chance (majority)",
            "protocol",
            "queries",
        ]
        .map(String::from)
        .to_vec();
        for (g, rows) in &grouped {
            match knn::knn(e, rows, knn::K, seed, g) {
                Ok(r) => {
                    let mut row = vec![
                        (col::DATASET, s(g.as_str())),
                        (col::K, i(r.k)),
                        (col::ACCURACY, f(r.accuracy)),
                        (col::ACCURACY_LO, f(r.accuracy_lo)),
                        (col::ACCURACY_HI, f(r.accuracy_hi)),
                        (col::CHANCE, f(r.chance)),
                        (col::PROTOCOL, s(r.protocol)),
                        (col::N_QUERIES, i(r.n_queries)),
                        (col::N_BANK, i(r.n_bank)),
                        (col::PAIRS, s(if r.sampled { "sampled" } else { "exact" })),
                    ];
                    row.extend(provenance(e, rows, opts.group_by, seed));
                    t.rows.push(row);
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
                    note(
                        &mut t,
                        g,
                        rows,
                        err,
                        &mut outcome,
                        vec![(col::K, i(knn::K))],
                    );
                }
            }
        }
        write(&t, col::FILE_KNN, &mut outcome)?;
        doc.sections.push(sec);
    }

    if want.contains(&Analysis::NameThatDataset) {
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
        let mut sec = Section {
            title: "Name that dataset (Torralba & Efros 2011)".into(),
            ..Default::default()
        };
        let all: Vec<usize> = (0..e.len()).collect();
        match name_that_dataset::name_that_dataset(e, seed) {
            Ok(r) => {
                let mut row = vec![
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
                row.extend(provenance(e, &all, opts.group_by, seed));
                t.rows.push(row);
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
                note(&mut t, "all", &all, err, &mut outcome, vec![]);
            }
        }
        write(&t, col::FILE_NAME_THAT_DATASET, &mut outcome)?;
        doc.sections.push(sec);
    }

    if !skipped_analyses.lines.is_empty() {
        doc.sections.push(skipped_analyses);
    }
    let summary = out.join(col::FILE_SUMMARY);
    crate::report::summary::write_summary(&summary, &doc)?;
    outcome.written.push(summary);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 12: summary.md rows and plot legends were named by 100-character paths.
    #[test]
    fn file_groups_get_short_unique_names() {
        let cells = [
            "reports/demo/quickstart/cells/objects__swav__multicrop__base__seed31/boxes.parquet",
            "reports/demo/quickstart/cells/scenes__simclr__two-large__base__seed31/boxes.parquet",
            "reports/demo/random-init/boxes.parquet",
        ]
        .map(String::from);
        assert_eq!(
            short_file_names(&cells),
            [
                "objects__swav__multicrop__base__seed31",
                "scenes__simclr__two-large__base__seed31",
                "random-init"
            ]
        );
        let stems = ["/a/x/run1.parquet", "/b/x/run2.parquet"].map(String::from);
        assert_eq!(short_file_names(&stems), ["run1", "run2"]);
        // Same directory name at the end: one more level tells them apart.
        let deep = ["/u/a/emb/e.parquet", "/u/b/emb/e.parquet"].map(String::from);
        assert_eq!(short_file_names(&deep), ["a/emb", "b/emb"]);
        assert_eq!(short_file_names(&["e.parquet".into()]), ["e"]);
        assert_eq!(short_file_names(&["cells/c1/boxes.parquet".into()]), ["c1"]);
    }
}
