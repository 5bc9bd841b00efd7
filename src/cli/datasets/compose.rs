//! `biaslab datasets compose` (to be written).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
}

pub fn run(_args: &ComposeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`datasets compose` is not implemented yet")
}
