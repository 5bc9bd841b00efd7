//! `biaslab analyze <analysis> --embeddings FILE... --out DIR`: runs the analyses on embeddings Parquet
//! files and writes one report per analysis (Parquet or CSV), PNG plots and summary.md. The report is written
//! into a temporary directory beside `--out` and renamed into place, so `--out` always holds one whole
//! report (an earlier one, or this one) even when analyze is killed part-way.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::os::unix::fs::PermissionsExt;

use anyhow::Context;
use clap::Args;

use crate::analyze::embeddings::{expand_inputs, GroupBy};
use crate::analyze::run::{analyze, Analysis, AnalyzeOptions, AnalyzeOutcome};
use crate::report::owned;

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Which analysis to run (`all` runs every one).
    #[arg(value_enum)]
    pub analysis: Analysis,
    /// Embeddings Parquet files or glob patterns (`runs/*/boxes.parquet`, quoted); one row per crop. Files
    /// are scanned lazily (only the columns analyses read); rows of all files are pooled, then grouped.
    #[arg(long, required = true, num_args = 1..)]
    pub embeddings: Vec<PathBuf>,
    /// Report directory (created if needed). An earlier biaslab report there is replaced whole; a
    /// directory holding anything biaslab did not write (or an input) is refused, and nothing is deleted.
    #[arg(long)]
    pub out: PathBuf,
    /// One report row per value of this column.
    #[arg(long, value_enum, default_value_t = GroupBy::Dataset)]
    pub group_by: GroupBy,
    /// Seed for bootstrap resamples and any sampled pairs or queries.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write CSV instead of Parquet.
    #[arg(long)]
    pub csv: bool,
    /// Number of SwAV prototypes K (default: largest code + 1).
    #[arg(long)]
    pub num_prototypes: Option<usize>,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
}

pub fn run(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let opts = AnalyzeOptions {
        analyses: vec![args.analysis],
        group_by: args.group_by,
        seed: args.seed,
        csv: args.csv,
        num_prototypes: args.num_prototypes,
        plots: !args.no_plots,
    };
    let outcome = analyze_into_place(&args.embeddings, &args.out, &opts)?;
    for p in &outcome.written {
        println!("wrote {}", p.display());
    }
    Ok(notes_exit(&outcome))
}

/// Runs `analyze` into a fresh temporary directory beside `out`, then publishes it as `out`: renamed over a
/// missing or empty `out`, or swapped with an earlier report that is then removed. An earlier report is
/// replaced only when it is biaslab's (its marker lists everything in it, `report::owned`) and holds none
/// of the inputs; anything else is refused before the analysis runs, and nothing is deleted.
fn analyze_into_place(
    inputs: &[PathBuf],
    out: &Path,
    opts: &AnalyzeOptions,
) -> anyhow::Result<AnalyzeOutcome> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    check_replaceable(inputs, out)?;
    std::fs::create_dir_all(&parent).with_context(|| format!("{}", parent.display()))?;
    // Temporaries of an analyze that was killed (SIGKILL skips every clean-up) go now, when theirs.
    for p in owned::remove_stale(&parent, TMP_PREFIX)
        .into_iter()
        .chain(owned::remove_stale(&parent, OLD_PREFIX))
    {
        eprintln!("removed {}, left by an interrupted analyze", p.display());
    }
    let tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "{}: cannot create a temporary report directory",
                parent.display()
            )
        })?;
    // tempfile makes it owner-only; a report directory gets the usual permissions
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("{}", tmp.path().display()))?;
    let mut outcome = analyze(inputs, tmp.path(), opts).context("analyze")?;
    let tmp_path = tmp.path().to_path_buf();
    publish_dir(tmp, out)?;
    for p in &mut outcome.written {
        if let Ok(rel) = p.strip_prefix(&tmp_path) {
            *p = out.join(rel);
        }
    }
    Ok(outcome)
}

const TMP_PREFIX: &str = ".tmp-analyze-";
const OLD_PREFIX: &str = ".old-analyze-";

/// Refuses an `out` that publishing would have to delete and that is not biaslab's: a non-empty directory
/// without the marker or with a file the marker does not list, a file, or one holding an input.
fn check_replaceable(inputs: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("{}", out.display())),
        Ok(m) => m,
    };
    if !meta.is_dir() {
        anyhow::bail!(
            "{}: exists and is not a directory; choose a new or empty --out",
            out.display()
        );
    }
    let paths = expand_inputs(inputs)?;
    if let Some(p) = paths.iter().find(|p| owned::lies_inside(p, out)) {
        anyhow::bail!(
            "{}: is inside --out {}, whose earlier contents a new report replaces; nothing was changed: \
             choose another --out",
            p.display(),
            out.display()
        );
    }
    let empty = std::fs::read_dir(out)
        .with_context(|| format!("{}", out.display()))?
        .next()
        .is_none();
    if !empty {
        owned::check_owned(out)?;
    }
    Ok(())
}

/// Moves the finished report `tmp` to `out` (see `analyze_into_place`); `out` is checked again here, as
/// it may have changed while the analysis ran.
fn publish_dir(tmp: tempfile::TempDir, out: &Path) -> anyhow::Result<()> {
    let existing: Option<Vec<std::fs::DirEntry>> = match std::fs::read_dir(out) {
        Ok(rd) => Some(
            rd.collect::<std::io::Result<_>>()
                .with_context(|| format!("{}", out.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("{}", out.display())),
    };
    match existing {
        // rename(2) replaces a missing or empty directory in one step
        None => {}
        Some(entries) if entries.is_empty() => {}
        Some(_) => {
            owned::check_owned(out)?;
            let parent = tmp.path().parent().unwrap_or(Path::new(".")).to_path_buf();
            let old = tempfile::Builder::new()
                .prefix(OLD_PREFIX)
                .tempdir_in(&parent)
                .with_context(|| format!("{}", parent.display()))?;
            // the earlier report takes the empty directory's place, then this one takes `out`'s
            std::fs::rename(out, old.path())
                .with_context(|| format!("moving the earlier report {} aside", out.display()))?;
            let tmp_path = tmp.keep();
            if let Err(e) = std::fs::rename(&tmp_path, out) {
                // put the earlier report back rather than leave no report at all
                let _ = std::fs::rename(old.path(), out);
                let _ = std::fs::remove_dir_all(&tmp_path);
                return Err(e).with_context(|| format!("{}: publishing the report", out.display()));
            }
            drop(old); // removes the earlier report: biaslab's files only, checked above
            return Ok(());
        }
    }
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, out)
        .with_context(|| format!("{}: publishing the report", out.display()))?;
    Ok(())
}

/// Prints the notes of rows that could not be computed (they are in the files too); exit status 1 when
/// there are any, as skipped files give for fetch and check (2 is an error).
pub fn notes_exit(outcome: &AnalyzeOutcome) -> ExitCode {
    for n in &outcome.notes {
        eprintln!("note: {n}");
    }
    if outcome.notes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
