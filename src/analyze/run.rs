//! `analyze`: reads embeddings files, runs the selected analyses per group, and writes one report per
//! analysis (Parquet, or CSV with `csv`), PNG plots and summary.md. A group whose input cannot support an
//! analysis (one label, no pairs…) gets a row whose `note` says why instead of aborting the run.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::analyze::analyses::{Context, Output, ANALYSES};
use crate::analyze::embeddings::{groups, read_many, Embeddings, GroupBy};
use crate::error::{Error, Result};
use crate::report::columns as col;
use crate::report::io::{write_csv, write_parquet};
use crate::report::owned::OwnedDir;
use crate::report::plot;
use crate::report::summary::{Section, SummaryDoc};

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

pub use crate::report::names::safe_name;

/// A file-name stem for group `g`, unique by construction and bounded in length: `g` itself when it is
/// already a safe name of at most [`STEM_MAX`] characters, else its safe form cut to that length and a
/// short hash of the exact name (datasets `a/b`, `a_b` and `a b` get three files, not one; a 250-character
/// name does not fail the whole report with ENAMETOOLONG).
pub fn unique_stem(g: &str) -> String {
    crate::report::names::unique_name(g, STEM_MAX, |_| true)
}

/// The longest group stem kept as it is (file names stay well under the 255-byte limit with a prefix).
pub const STEM_MAX: usize = 80;

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

/// As `analyze`, on embeddings already in memory: runs each wanted entry of the table of analyses
/// (`analyses::ANALYSES`) on the same groups, then writes its files in the order it produced them (each
/// atomically) and keeps its section and notes for summary.md and the outcome.
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
    // Notes of the reading itself (a file given twice is read once) lead the report's notes.
    let mut outcome = AnalyzeOutcome {
        notes: e.notes.clone(),
        ..AnalyzeOutcome::default()
    };
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
        seed: opts.seed,
        group_by: format!("{:?}", opts.group_by).to_lowercase(),
        font: plot::font().map(|p| p.display().to_string()),
        ..Default::default()
    };
    // Writes only into a directory biaslab owns (or a new or empty one), and never over one of its inputs.
    let mut owned = OwnedDir::claim(out, "analyze")?;
    let inputs: BTreeSet<PathBuf> = e
        .files
        .iter()
        .filter_map(|f| f.path.canonicalize().ok())
        .collect();
    let mut claim = |path: &Path| -> Result<()> {
        if path.canonicalize().is_ok_and(|p| inputs.contains(&p)) {
            return Err(Error::Invalid(format!(
                "{}: is an input of this analysis and would be overwritten by its report; choose another --out",
                path.display()
            )));
        }
        owned.record(path)
    };
    let ext = if opts.csv { "csv" } else { "parquet" };
    let cx = Context {
        e,
        grouped: &grouped,
        opts,
    };
    for (_, run) in ANALYSES.iter().filter(|(a, _)| want.contains(a)) {
        let report = run(&cx);
        outcome.notes.extend(report.notes);
        for output in report.outputs {
            match output {
                Output::Table(name, table) => {
                    let mut df = table.frame()?;
                    let path = out.join(format!("{name}.{ext}"));
                    claim(&path)?;
                    if opts.csv {
                        write_csv(&mut df, &path)?
                    } else {
                        write_parquet(&mut df, &path)?
                    }
                    outcome.written.push(path);
                }
                // The plot functions write their PNG atomically themselves.
                Output::Plot(name, draw) => {
                    if opts.plots {
                        let path = out.join(&name);
                        claim(&path)?;
                        draw(&path)?;
                        doc.plots.push(name);
                        outcome.written.push(path);
                    }
                }
            }
        }
        doc.sections.push(report.section);
    }
    if !skipped_analyses.lines.is_empty() {
        doc.sections.push(skipped_analyses);
    }
    if !e.notes.is_empty() {
        doc.sections.push(Section {
            title: "Inputs".into(),
            lines: e.notes.clone(),
            ..Default::default()
        });
    }
    let summary = out.join(col::FILE_SUMMARY);
    claim(&summary)?;
    crate::report::summary::write_summary(&summary, &doc)?;
    outcome.written.push(summary);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_runs_each_analysis_once_in_report_order() {
        let order: Vec<Analysis> = ANALYSES.iter().map(|(a, _)| *a).collect();
        assert_eq!(order, Analysis::EACH);
    }

    // Issue 12: summary.md rows and plot legends were named by 100-character paths.
    // Issue 23: datasets `a/b`, `a_b` and `a b` all wrote prototypes_a_b.png; 250 characters failed analyze.
    #[test]
    fn plot_names_of_groups_that_sanitise_alike_or_run_long_are_unique_and_bounded() {
        let names: BTreeSet<String> = ["a/b", "a_b", "a b", "a_b-", ""]
            .iter()
            .map(|g| unique_stem(g))
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(unique_stem("a_b"), "a_b");
        assert_eq!(unique_stem("objects-2"), "objects-2");
        let long = "x".repeat(250);
        let stem = unique_stem(&long);
        assert!(stem.len() <= STEM_MAX, "{stem}");
        assert_ne!(stem, unique_stem(&"x".repeat(251)));
    }

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
