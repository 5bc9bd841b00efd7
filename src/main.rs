//! The `biaslab` binary: parse arguments, run, print the error chain once, exit with its code.
use std::panic::{catch_unwind, AssertUnwindSafe, PanicHookInfo};
use std::process::ExitCode;
use std::sync::Mutex;

/// Exit status of a panic, as Rust's runtime gives it.
const EXIT_PANIC: u8 = 101;

/// The latest panic's one-line report, kept by the hook until `main` knows whether anything caught it.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    install_panic_hook();
    // Before any CUDA query (src/device.rs); on a CPU machine this returns at once.
    if let Err(e) = biaslab::device::load_cuda_backend() {
        eprintln!("biaslab: warning: CUDA backend not loaded, running on the CPU: {e}");
    }
    let cli = biaslab::cli::parse();
    match catch_unwind(AssertUnwindSafe(|| biaslab::cli::run(cli))) {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => {
            eprintln!("biaslab: error: {err:#}");
            ExitCode::from(2)
        }
        Err(_) => {
            // Nothing caught it on the way: now it is worth a line.
            let report = LAST_PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "biaslab: internal error (please report)".to_string());
            if !report.is_empty() {
                eprintln!("{report}");
            }
            ExitCode::from(EXIT_PANIC)
        }
    }
}

/// Replaces Rust's panic message ("thread … panicked at …" and the backtrace hint) with one line,
/// printed only for a panic that nothing caught. The library catches some panics of its dependencies (a
/// hostile Parquet footer makes polars panic in its own executor threads; `analyze` turns that into an
/// error naming the file), and those must print nothing. So a panic is only kept, on any thread that a
/// pool or a join carries it from (main, rayon workers, polars' executors): whatever no `catch_unwind`
/// stops on the way ends in `main`, which prints the kept line. Only biaslab's own plain threads
/// (`biaslab-*`, not a rayon pool's), which nothing joins into a panic, print it at once. With
/// `RUST_BACKTRACE` set the backtrace follows the line.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info: &PanicHookInfo<'_>| {
        let mut report = one_line(info);
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            report.push_str(&format!("\n{backtrace}"));
        }
        let thread = std::thread::current();
        let ours = thread.name().is_some_and(|n| n.starts_with("biaslab-"));
        let kept = if !ours || rayon::current_thread_index().is_some() {
            report
        } else {
            eprintln!("{report}");
            // said already, should a join carry it on to `main`
            String::new()
        };
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
    }));
}

/// `biaslab: internal error in <file:line>: <message> (please report)`.
fn one_line(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    let location = info.location().map_or_else(
        || "an unknown place".to_string(),
        |l| format!("{}:{}", l.file(), l.line()),
    );
    // One line: a multi-line message (a polars error chain) is joined.
    let message = message.lines().collect::<Vec<_>>().join(" / ");
    format!("biaslab: internal error in {location}: {message} (please report)")
}
