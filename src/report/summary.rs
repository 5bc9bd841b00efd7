//! summary.md for an analysis report directory: the inputs with their sha256, the seed, and every number
//! with its interval (where it has one), one section per analysis, written atomically.
use std::fmt::Write as _;
use std::path::Path;

use crate::analyze::embeddings::InputFile;
use crate::error::Result;
use crate::report::io::write_bytes_atomic;

/// One section: a heading, free lines (bullets) and an optional Markdown table.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    pub lines: Vec<String>,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct SummaryDoc {
    pub inputs: Vec<InputFile>,
    pub seed: u64,
    pub group_by: String,
    /// The TTF used for plot text; None: plots carry no text, which the summary says.
    pub font: Option<String>,
    pub plots: Vec<String>,
    pub sections: Vec<Section>,
}

/// A number with 4 significant decimals; `n/a` for NaN/None.
pub fn num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "n/a".to_string(),
    }
}

/// `value [lo, hi]` for a 95% interval.
pub fn with_interval(v: f64, lo: f64, hi: f64) -> String {
    format!("{} [{}, {}]", num(Some(v)), num(Some(lo)), num(Some(hi)))
}

/// The collapse index as a report prints it: the ratio with its interval, or "undefined (S_cat ≈ S_base)"
/// where Δcat's interval includes 0 (never a number there).
pub fn collapse_index_text(ci: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> String {
    match (ci, lo, hi) {
        (Some(v), Some(lo), Some(hi)) => with_interval(v, lo, hi),
        (Some(v), _, _) => num(Some(v)),
        (None, _, _) => "undefined (S_cat ≈ S_base)".into(),
    }
}

pub fn render(doc: &SummaryDoc) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# biaslab analysis summary\n");
    let _ = writeln!(s, "## Inputs and provenance\n");
    for f in &doc.inputs {
        let _ = writeln!(s, "- `{}` sha256 `{}`", f.path.display(), f.sha256);
    }
    let _ = writeln!(s, "- seed: {}", doc.seed);
    let _ = writeln!(s, "- grouped by: `{}`", doc.group_by);
    match &doc.font {
        Some(f) => {
            let _ = writeln!(s, "- plot font: `{f}`");
        }
        None => {
            let _ = writeln!(
                s,
                "- plots are drawn **without text** (no TTF found: set $BIASLAB_FONT or run `make setup`)"
            );
        }
    }
    if !doc.plots.is_empty() {
        let _ = writeln!(
            s,
            "- plots: {}",
            doc.plots
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\nIntervals: collapse index and AUROC, 95% percentile bootstrap over image_ids (1,000 seeded resamples); accuracies, 95% Wilson score interval over the scored rows, beside chance (the majority class's share)."
    );
    for sec in &doc.sections {
        let _ = writeln!(s, "\n## {}\n", sec.title);
        for l in &sec.lines {
            let _ = writeln!(s, "- {l}");
        }
        if !sec.header.is_empty() {
            if !sec.lines.is_empty() {
                let _ = writeln!(s);
            }
            let _ = writeln!(s, "| {} |", sec.header.join(" | "));
            let _ = writeln!(s, "|{}", "---|".repeat(sec.header.len()));
            for r in &sec.rows {
                let _ = writeln!(s, "| {} |", r.join(" | "));
            }
        }
    }
    s
}

pub fn write_summary(path: &Path, doc: &SummaryDoc) -> Result<()> {
    write_bytes_atomic(path, render(doc).as_bytes())
}
