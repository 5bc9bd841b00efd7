//! `biaslab datasets fetch` (to be written).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
}

pub fn run(_args: &FetchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`datasets fetch` is not implemented yet")
}
