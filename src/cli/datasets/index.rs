//! `biaslab datasets index DIR [--kind K] [--licence L] [--force]`: writes `DIR/index.parquet` once for an
//! image folder (ImageFolder tree or flat), so a large folder is not walked and decoded on every run. Any
//! folder works without it (indexed on the fly); the index also records each image's size and kind.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::data::decode::DecodeLimits;
use crate::data::index::{index_folder, index_path, write_index, INDEX_SKIPPED_FILE};
use crate::data::kind::DatasetKind;
use crate::report::io::write_parquet;

#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    /// Image folder: `DIR/<label>/<image>` (ImageFolder) or images anywhere below DIR (unlabelled).
    pub dir: PathBuf,
    /// Kind recorded for every image: object, scene, cartoon or meme.
    #[arg(long, default_value = "object", value_parser = parse_kind)]
    pub kind: DatasetKind,
    /// Licence recorded for every image.
    #[arg(long, default_value = "unknown")]
    pub licence: String,
    /// Replace an existing index.parquet.
    #[arg(long)]
    pub force: bool,
}

fn parse_kind(s: &str) -> Result<DatasetKind, String> {
    s.to_ascii_lowercase().parse()
}

pub fn run(args: &IndexArgs) -> anyhow::Result<ExitCode> {
    let path = index_path(&args.dir);
    if path.is_file() && !args.force {
        anyhow::bail!(
            "{}: exists already (pass --force to rebuild it)",
            path.display()
        );
    }
    // An old index would be read instead of the folder: rebuild from the files themselves.
    let (records, skipped) = index_folder(
        &args.dir,
        args.kind,
        &args.licence,
        &DecodeLimits::default(),
    )
    .with_context(|| format!("indexing {}", args.dir.display()))?;
    if records.is_empty() {
        // Say what was found instead; `datasets check` lists every entry, image or not.
        let found = match skipped.first() {
            None => "no file with an image extension".to_string(),
            Some((p, r)) => format!(
                "{} image file(s), none usable; first: {}: {r}",
                skipped.len(),
                p.display()
            ),
        };
        anyhow::bail!(
            "{}: no readable image ({found}); `biaslab datasets check {}` lists every file",
            args.dir.display(),
            args.dir.display()
        );
    }
    write_index(&args.dir, &records)?;
    let labels: std::collections::BTreeSet<&str> =
        records.iter().filter_map(|r| r.label.as_deref()).collect();
    println!(
        "{}: {} images, {} labels → {}",
        args.dir.display(),
        records.len(),
        labels.len(),
        path.display()
    );
    if skipped.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let list = args.dir.join(INDEX_SKIPPED_FILE);
    let mut df = polars::prelude::df!(
        "path" => skipped.iter().map(|(p, _)| shown(p)).collect::<Vec<_>>(),
        "reason" => skipped.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
    )?;
    write_parquet(&mut df, &list)?;
    for (p, r) in &skipped {
        eprintln!("skipped {}: {r}", shown(p));
    }
    eprintln!(
        "{} unreadable image(s) skipped; listed in {}",
        skipped.len(),
        list.display()
    );
    Ok(crate::cli::embed::skip_status(skipped.len()))
}

/// A path as text; one that is not UTF-8 is quoted with its invalid bytes escaped (`"a\xFF.png"`), so two
/// names that differ only there are told apart in the list.
fn shown(p: &std::path::Path) -> String {
    match p.to_str() {
        Some(s) => s.to_string(),
        None => format!("{p:?}"),
    }
}
