//! `biaslab datasets fetch NAME... | --all`: download, verify, extract and normalise datasets, with a progress
//! bar on stderr and a per-dataset report on stdout. Exit status 1 when any image had to be skipped.
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::fetch::{cache_dir, fetch_dataset, Progress};
use crate::data::index::resolve_data_dir;
use crate::data::normalize::SKIPPED_FILE;
use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
    /// Datasets to fetch (names from `biaslab datasets list`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Fetch every dataset with a manifest.
    #[arg(long)]
    pub all: bool,
}

/// indicatif progress on stderr: a spinner message per stage, a bar while normalising.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn stage(&self, dataset: &str, stage: &str) {
        self.0.set_message(format!("{dataset}: {stage}"));
    }
    fn tick(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
}

pub fn run(args: &FetchArgs) -> anyhow::Result<ExitCode> {
    let data_dir = resolve_data_dir(args.dirs.data_dir.as_deref());
    let cache = cache_dir(&data_dir);
    let manifests = args.dirs.load_manifests()?;
    let chosen: Vec<_> = if args.all {
        manifests.iter().collect()
    } else {
        let mut out = Vec::new();
        for n in &args.names {
            out.push(
                manifests
                    .iter()
                    .find(|m| &m.name == n)
                    .ok_or_else(|| Error::UnknownDataset(n.clone()))?,
            );
        }
        out
    };
    let mut any_skipped = false;
    let mut failed: Vec<String> = Vec::new();
    for m in chosen {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let bar = Bar(pb);
        let rep = fetch_dataset(m, &data_dir, &cache, &bar)
            .with_context(|| format!("fetching {}", m.name));
        bar.0.finish_and_clear();
        let rep = match rep {
            Ok(r) => r,
            Err(e) => {
                // One broken dataset must not stop the others: report it and fail at the end.
                eprintln!("biaslab: error: {e:#}");
                failed.push(m.name.clone());
                continue;
            }
        };
        if rep.already_fetched {
            println!(
                "{}: already fetched ({} images, {} labels) in {}",
                rep.name,
                rep.images,
                rep.labels,
                rep.dir.display()
            );
            continue;
        }
        println!(
            "{}: {} images, {} labels, {} skipped, {} below min size, {} other sizes dropped, {} archive entries refused, {} packages downloaded, {:.1} s -> {}",
            rep.name,
            rep.images,
            rep.labels,
            rep.skipped.len(),
            rep.too_small,
            rep.other_sizes,
            rep.refused.len(),
            rep.downloaded,
            rep.seconds,
            rep.dir.display()
        );
        for s in &rep.skipped {
            println!("  skipped {}: {}", s.source, s.reason);
        }
        if !rep.skipped.is_empty() {
            any_skipped = true;
            println!("  (listed in {})", rep.dir.join(SKIPPED_FILE).display());
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} dataset(s) could not be fetched: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(if any_skipped {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
