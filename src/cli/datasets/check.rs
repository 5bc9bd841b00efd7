//! `biaslab datasets check DIR [--strict] [--out FILE.parquet]`: read every image as the loader would and
//! report each as ok or skipped with its reason, and count every other entry passed over (ignored, with
//! why); a summary goes to stdout, the per-file table to `--out`. A folder where no image could be read is
//! an error (exit 2) saying what was there instead.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::data::check::{check_dir, check_frame, CheckRow, Status, REASON_HIDDEN};
use crate::data::decode::DecodeLimits;
use crate::data::source::IMAGE_EXTENSIONS;
use crate::report::io::write_parquet;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Folder to check (recursively): a normalised dataset, an ImageFolder tree or any image folder.
    pub dir: PathBuf,
    /// Exit with status 1 if any file was skipped.
    #[arg(long)]
    pub strict: bool,
    /// Write the per-file report (path, status, reason, width, height) as Parquet.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
}

/// Rows of `status` counted by reason; "corrupt: <decoder message>" is grouped under its first word so the
/// summary stays short.
fn by_reason(rows: &[CheckRow], status: Status) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == status) {
        let reason = r.reason.as_deref().unwrap_or_default();
        *counts
            .entry(reason.split(':').next().unwrap_or(reason))
            .or_default() += 1;
    }
    counts
}

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let rows = check_dir(&args.dir, &DecodeLimits::default())
        .with_context(|| format!("checking {}", args.dir.display()))?;
    for r in rows.iter().filter(|r| r.status == Status::Skipped) {
        eprintln!(
            "skipped {}: {}",
            r.path.display(),
            r.reason.as_deref().unwrap_or_default()
        );
    }
    let (skipped, ignored) = (
        by_reason(&rows, Status::Skipped),
        by_reason(&rows, Status::Ignored),
    );
    let n_skipped: usize = skipped.values().sum();
    let n_ignored: usize = ignored.values().sum();
    let n_ok = rows.iter().filter(|r| r.is_ok()).count();
    println!(
        "{}: {} files, {n_ok} ok, {n_skipped} skipped, {n_ignored} ignored",
        args.dir.display(),
        rows.len(),
    );
    for (reason, n) in skipped.iter().chain(&ignored) {
        println!("  {n:>6}  {reason}");
    }
    if let Some(out) = &args.out {
        let mut df = check_frame(&rows)?;
        write_parquet(&mut df, out)?;
        println!("report: {}", out.display());
    }
    if n_ok == 0 {
        anyhow::bail!("{}", nothing_read(args, &rows, n_skipped, n_ignored));
    }
    Ok(if args.strict && n_skipped > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Why a folder gave no image: empty, every image file skipped, or nothing with an image extension (then
/// which extensions it had, and which the loader reads).
fn nothing_read(args: &CheckArgs, rows: &[CheckRow], n_skipped: usize, n_ignored: usize) -> String {
    let dir = args.dir.display();
    if rows.is_empty() {
        return format!("{dir}: no image could be read: the folder is empty");
    }
    let mut parts = Vec::new();
    if n_skipped > 0 {
        parts.push(format!("{n_skipped} image file(s) skipped (listed above)"));
    }
    if n_ignored > 0 {
        let mut exts: BTreeMap<String, usize> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.status == Status::Ignored) {
            let ext = match r.path.extension() {
                _ if r.reason.as_deref() == Some(REASON_HIDDEN) => "hidden".to_string(),
                Some(e) => format!(".{}", e.to_string_lossy()),
                None => "no extension".to_string(),
            };
            *exts.entry(ext).or_default() += 1;
        }
        let list: Vec<String> = exts.iter().map(|(e, n)| format!("{n} {e}")).collect();
        parts.push(format!(
            "{n_ignored} other file(s) passed over ({})",
            list.join(", ")
        ));
    }
    // SVG is the usual surprise (icon themes): a vector format the loader does not rasterise.
    let svg = if rows.iter().any(|r| {
        r.path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    }) {
        "; SVG is a vector format: rasterise it first (e.g. rsvg-convert)"
    } else {
        ""
    };
    format!(
        "{dir}: no image could be read: {}; images are read from .{}{svg}",
        parts.join(", "),
        IMAGE_EXTENSIONS.join(" .")
    )
}
