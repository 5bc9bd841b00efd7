//! `biaslab import --from FILE --arch resnet50 --out RUN_DIR`: a torchvision or SwAV checkpoint (`.pth`,
//! `.pth.tar`, `.pt` from `torch.save`, or `.safetensors`) becomes a run directory for `embed`, `eval` and
//! `invariance`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::interop::import::{import_checkpoint_with, IMPORT_FILE};
use crate::model::config::Arch;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The checkpoint: a state dict, or a training checkpoint holding one under `state_dict` / `model`;
    /// `module.` prefixes (DistributedDataParallel) are stripped.
    #[arg(long = "from")]
    pub from: PathBuf,
    /// The backbone the file holds; every one of its parameters must be in the file.
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Run directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a run already in `--out`.
    #[arg(long)]
    pub force: bool,
    /// Import even if the state dict holds entries that are not tensors, or tensors the model does not
    /// take (e.g. the extra blocks of a deeper ResNet); they are listed on stderr and in import.json.
    #[arg(long)]
    pub allow_unexpected: bool,
}

pub fn run(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let r = import_checkpoint_with(
        &args.from,
        args.arch,
        &args.out,
        args.force,
        args.allow_unexpected,
    )
    .with_context(|| format!("importing {}", args.from.display()))?;
    let mut parts = vec![format!("{} backbone tensors", r.backbone_tensors)];
    if r.projection_head {
        parts.push("projection head".into());
    }
    if r.prototypes {
        parts.push("prototypes".into());
    }
    println!(
        "{} ({}{}) → {}: {}",
        args.from.display(),
        r.format,
        r.nested_under
            .as_ref()
            .map(|k| format!(", under `{k}`"))
            .unwrap_or_default(),
        args.out.display(),
        parts.join(" + ")
    );
    if !r.unexpected.is_empty() {
        let shown: Vec<&str> = r.unexpected.iter().take(8).map(String::as_str).collect();
        eprintln!(
            "warning: imported despite {} unexpected entries ({}{}); all listed in {}",
            r.unexpected.len(),
            shown.join(", "),
            if r.unexpected.len() > shown.len() {
                ", …"
            } else {
                ""
            },
            args.out.join(IMPORT_FILE).display()
        );
    }
    if !r.projection_head {
        println!("no projection head in the file: embed with --layer backbone");
    }
    if !r.unused.is_empty() {
        // torchvision's classifier is expected here; anything else is worth a look
        let shown: Vec<&str> = r.unused.iter().take(8).map(String::as_str).collect();
        println!(
            "{} unused tensors ({}{}); all listed in {}",
            r.unused.len(),
            shown.join(", "),
            if r.unused.len() > shown.len() {
                ", …"
            } else {
                ""
            },
            args.out.join(IMPORT_FILE).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
