//! `biaslab datasets check DIR [--strict] [--out FILE.parquet]`: read every image as the loader would and
//! report each as ok or skipped with its reason; a summary goes to stdout, the per-file table to `--out`.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::data::check::{check_dir, check_frame};
use crate::data::decode::DecodeLimits;
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

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let rows = check_dir(&args.dir, &DecodeLimits::default())
        .with_context(|| format!("checking {}", args.dir.display()))?;
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        if let Some(reason) = &r.reason {
            // Group "corrupt: <decoder message>" under its first word so the summary stays short.
            let key = reason.split(':').next().unwrap_or(reason);
            *by_reason.entry(key).or_default() += 1;
            eprintln!("skipped {}: {reason}", r.path.display());
        }
    }
    let skipped: usize = by_reason.values().sum();
    println!(
        "{}: {} files, {} ok, {} skipped",
        args.dir.display(),
        rows.len(),
        rows.len() - skipped,
        skipped
    );
    for (reason, n) in &by_reason {
        println!("  {n:>6}  {reason}");
    }
    if let Some(out) = &args.out {
        let mut df = check_frame(&rows)?;
        write_parquet(&mut df, out)?;
        println!("report: {}", out.display());
    }
    Ok(if args.strict && skipped > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
