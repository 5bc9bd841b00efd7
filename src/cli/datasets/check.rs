//! `biaslab datasets check` (to be written).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
}

pub fn run(_args: &CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`datasets check` is not implemented yet")
}
