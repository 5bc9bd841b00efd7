//! The `biaslab` binary: parse arguments, run, print the error chain once, exit with its code.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = biaslab::cli::Cli::parse();
    match biaslab::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("biaslab: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
