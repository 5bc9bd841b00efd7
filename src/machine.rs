//! The machine a run or an experiment ran on, recorded as `machine.json` in its directory: on the CPU a
//! seed's numbers are deterministic per machine, not across CPUs (ATen dispatches its kernels by the CPU's
//! vector extensions), so every result says which CPU, capability and thread count produced it.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::io::write_bytes_atomic;

/// The machine record's file name, in a run directory and in an experiment's `--out`.
pub const MACHINE_FILE: &str = "machine.json";

/// Values of `ATEN_CPU_CAPABILITY` that ATen accepts (aten/src/ATen/native/DispatchStub.cpp,
/// `compute_cpu_capability`); any other value is ignored by ATen with a warning.
const ATEN_CAPABILITIES: [&str; 6] = ["default", "avx2", "avx512", "zvector", "vsx", "sve256"];

/// What one session (a training start or resume, an experiment run) ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// biaslab's version (Cargo.toml).
    pub biaslab_version: String,
    /// libtorch's version, read from the loaded library's install (`torch/version.py` of a PyTorch wheel,
    /// `build-version` of a libtorch archive); `None` where neither is found (tch does not expose it).
    pub torch_version: Option<String>,
    /// `/proc/cpuinfo`'s first "model name"; `None` elsewhere.
    pub cpu_model: Option<String>,
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// Logical cores this process may use (`available_parallelism`: the affinity mask and cgroup quota).
    pub logical_cores: usize,
    /// libtorch's intra-op threads (`at::get_num_threads`) when the session started.
    pub torch_threads: i64,
    /// The CPU capability ATen dispatches its kernels to (`DEFAULT`, `AVX2`, `AVX512`, …), as
    /// `torch.backends.cpu.get_cpu_capability()` names it. Derived, not asked: neither tch nor torch-sys
    /// exposes `at::get_cpu_capability`, so it is computed as ATen computes it (DispatchStub.cpp):
    /// `ATEN_CPU_CAPABILITY` when set to a value ATen accepts, else `AVX512` when the CPU has avx512f, bw,
    /// vl, dq and fma, `AVX2` when it has avx2 and fma, else `DEFAULT`. On non-x86 CPUs it says `DEFAULT`
    /// unless the variable is set (ATen may pick SVE or VSX kernels there).
    pub cpu_capability: String,
    /// Where `cpu_capability` came from: `ATEN_CPU_CAPABILITY` or `detected`.
    pub cpu_capability_source: String,
    /// Seconds since the Unix epoch when the session started.
    pub started_unix: u64,
}

impl Machine {
    /// This machine, now.
    pub fn detect() -> Machine {
        let (cpu_capability, source) = cpu_capability();
        Machine {
            biaslab_version: env!("CARGO_PKG_VERSION").to_string(),
            torch_version: torch_version(),
            cpu_model: cpu_model(),
            arch: std::env::consts::ARCH.to_string(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            torch_threads: i64::from(tch::get_num_threads()),
            cpu_capability,
            cpu_capability_source: source.to_string(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// One line for a log: `machine: AMD EPYC (x86_64), 16 logical cores, libtorch 2.11.0 with 4 intra-op
    /// threads, CPU capability AVX512 (detected)`.
    pub fn summary(&self) -> String {
        format!(
            "machine: {} ({}), {} logical cores, libtorch {} with {} intra-op threads, CPU capability {} \
             ({}); biaslab {}",
            self.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.arch,
            self.logical_cores,
            self.torch_version.as_deref().unwrap_or("(version unknown)"),
            self.torch_threads,
            self.cpu_capability,
            self.cpu_capability_source,
            self.biaslab_version
        )
    }
}

/// Every session of a run directory or experiment, oldest first: a resumed run appends the resuming
/// machine, so a run trained partly on one CPU and partly on another says so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineLog {
    pub sessions: Vec<Session>,
}

/// One session in a [`MachineLog`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// `start`, `resume` (training) or `run` (an experiment, `--resume` or not).
    pub kind: String,
    /// The training step the session started at (`None` for an experiment).
    pub step: Option<usize>,
    #[serde(flatten)]
    pub machine: Machine,
}

impl MachineLog {
    /// The log in `dir`; empty when there is none. A file that does not parse is an error naming it, not
    /// replaced: it may be someone else's.
    pub fn read(dir: &Path) -> Result<MachineLog> {
        Ok(crate::run_dir::read_json_if_present(&dir.join(MACHINE_FILE))?.unwrap_or_default())
    }

    /// Appends `session` to `dir`'s log (written atomically) and returns the log.
    pub fn append(dir: &Path, session: Session) -> Result<MachineLog> {
        let mut log = MachineLog::read(dir)?;
        log.sessions.push(session);
        let json = serde_json::to_vec_pretty(&log)
            .map_err(|e| Error::Invalid(format!("serialising the machine record: {e}")))?;
        write_bytes_atomic(&dir.join(MACHINE_FILE), &json)?;
        Ok(log)
    }

    /// The latest session's machine.
    pub fn last(&self) -> Option<&Machine> {
        self.sessions.last().map(|s| &s.machine)
    }
}

/// Records this machine as a new session of `dir` and returns it.
pub fn record(dir: &Path, kind: &str, step: Option<usize>) -> Result<Machine> {
    let machine = Machine::detect();
    MachineLog::append(
        dir,
        Session {
            kind: kind.to_string(),
            step,
            machine: machine.clone(),
        },
    )?;
    Ok(machine)
}

/// ATen's CPU capability and where it came from (see [`Machine::cpu_capability`]).
pub fn cpu_capability() -> (String, &'static str) {
    if let Ok(v) = std::env::var("ATEN_CPU_CAPABILITY") {
        let v = v.to_ascii_lowercase();
        if ATEN_CAPABILITIES.contains(&v.as_str()) {
            return (v.to_ascii_uppercase(), "ATEN_CPU_CAPABILITY");
        }
    }
    (detected_capability().to_string(), "detected")
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn detected_capability() -> &'static str {
    // DispatchStub.cpp: AVX512 needs avx512vl, avx512bw, avx512dq and fma3 (avx512f is implied by them).
    let avx512 = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("fma");
    if avx512 {
        "AVX512"
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        "AVX2"
    } else {
        "DEFAULT"
    }
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn detected_capability() -> &'static str {
    "DEFAULT"
}

/// `/proc/cpuinfo`'s first "model name".
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// libtorch's version from the install the process loaded: `/proc/self/maps` names the mapped
/// `libtorch_cpu` library; a PyTorch wheel has `torch/version.py` above its `lib/`, a libtorch archive
/// `build-version`.
fn torch_version() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("libtorch_cpu."))?;
    let root = Path::new(lib).parent()?.parent()?;
    if let Ok(py) = std::fs::read_to_string(root.join("version.py")) {
        let v = py.lines().find_map(|l| {
            let rest = l
                .strip_prefix("__version__")?
                .trim_start()
                .strip_prefix('=')?;
            Some(
                rest.trim()
                    .trim_matches(|c| c == '\'' || c == '"')
                    .to_string(),
            )
        });
        if v.is_some() {
            return v;
        }
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_capability_and_the_torch_version() {
        let m = Machine::detect();
        assert!(
            ["DEFAULT", "AVX2", "AVX512"].contains(&m.cpu_capability.as_str())
                || m.cpu_capability_source == "ATEN_CPU_CAPABILITY"
        );
        assert!(m.logical_cores >= 1 && m.torch_threads >= 1);
        assert!(m.summary().starts_with("machine: "));
    }

    #[test]
    fn sessions_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "start", Some(0)).unwrap();
        let log = MachineLog::append(
            dir.path(),
            Session {
                kind: "resume".into(),
                step: Some(4),
                machine: Machine::detect(),
            },
        )
        .unwrap();
        assert_eq!(log.sessions.len(), 2);
        assert_eq!(MachineLog::read(dir.path()).unwrap(), log);
    }
}
