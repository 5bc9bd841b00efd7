//! `biaslab datasets list`: every manifest with its kind, source packages, licence, and whether (and how
//! large) it has been fetched into the data directory.
use std::process::ExitCode;

use anyhow::Context;

use crate::data::index::{index_path, read_index, resolve_data_dir};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ListFormat,
}

/// One row of the listing (also the JSON object).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListRow {
    pub name: String,
    pub kind: String,
    pub source: String,
    pub licence: String,
    pub fetched: bool,
    /// Rows of index.parquet when fetched.
    pub images: Option<usize>,
}

pub fn run(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let data_dir = resolve_data_dir(args.dirs.data_dir.as_deref());
    let manifests = args.dirs.load_manifests()?;
    let mut rows = Vec::with_capacity(manifests.len());
    for m in &manifests {
        let dir = data_dir.join(&m.name);
        let fetched = index_path(&dir).is_file();
        let images = if fetched {
            Some(
                read_index(&dir)
                    .with_context(|| format!("reading the index of {}", m.name))?
                    .len(),
            )
        } else {
            None
        };
        rows.push(ListRow {
            name: m.name.clone(),
            kind: m.kind.to_string(),
            source: m.source_summary(),
            licence: m.licence.clone(),
            fetched,
            images,
        });
    }
    match args.format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        ListFormat::Table => print!("{}", table(&rows)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A plain-text table with aligned columns.
pub fn table(rows: &[ListRow]) -> String {
    let header = ["name", "kind", "source", "licence", "fetched", "images"].map(String::from);
    let body: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.kind.clone(),
                r.source.clone(),
                r.licence.clone(),
                if r.fetched { "yes" } else { "no" }.to_string(),
                r.images
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(body.iter()) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
