//! `biaslab datasets inspect` (to be written).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
}

pub fn run(_args: &InspectArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`datasets inspect` is not implemented yet")
}
