//! `biaslab datasets list` (to be written).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
}

pub fn run(_args: &ListArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`datasets list` is not implemented yet")
}
