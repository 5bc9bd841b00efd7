//! The `biaslab` binary: parse arguments, run, print the error chain once, exit with its code.
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any CUDA query (src/device.rs); on a CPU machine this returns at once.
    if let Err(e) = biaslab::device::load_cuda_backend() {
        eprintln!("biaslab: warning: CUDA backend not loaded, running on the CPU: {e}");
    }
    let cli = biaslab::cli::parse();
    match biaslab::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("biaslab: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
