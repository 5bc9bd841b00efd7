//! `biaslab datasets inspect NAME|DIR`: dataset-level bias statistics (sizes, colourfulness, object share,
//! label balance, duplicates) as polars reports, printed and optionally written as Parquet.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::data::index::{resolve_data_dir, INDEX_FILE};
use crate::data::inspect::{inspect, write_report};

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
    /// Dataset name under the data dir, or a directory (normalised dataset or ImageFolder tree).
    pub dataset: String,
    /// Write per_image / per_label / duplicates / summary / skipped Parquet files here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let data_dir = resolve_data_dir(args.dirs.data_dir.as_deref());
    let named = data_dir.join(&args.dataset);
    let dir = if named.join(INDEX_FILE).is_file() || !Path::new(&args.dataset).is_dir() {
        named
    } else {
        PathBuf::from(&args.dataset)
    };
    if !dir.is_dir() {
        anyhow::bail!("{}: no such dataset directory", dir.display());
    }
    let report = inspect(&dir)?;
    // One summary row with eleven columns: print it as name/value lines so no column is elided.
    for c in report.summary.columns() {
        let v = c.get(0).map(|v| v.to_string()).unwrap_or_default();
        println!("{:>20}  {v}", c.name());
    }
    println!("{}", report.per_label);
    if let Some(out) = &args.out {
        for p in write_report(&report, out)? {
            println!("wrote {}", p.display());
        }
    }
    for s in &report.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    // Skipped files are listed here and in skipped.parquet; the statistics cover the readable ones.
    if !report.skipped.is_empty() {
        eprintln!("{} file(s) skipped", report.skipped.len());
    }
    Ok(ExitCode::SUCCESS)
}
