//! Output directories biaslab owns. A directory is the toolkit's only when it says so: biaslab writes
//! [`MARKER_FILE`] (tool, version, kind of output, and every file it wrote there) into each report
//! directory it fills, and replaces or writes into a non-empty directory only when that marker is there and
//! the directory holds nothing the marker does not list. A foreign file — a user's notes in `--out`, an
//! input that lives there — makes the command refuse, naming it, before anything is written or deleted.
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::report::io::write_bytes_atomic;

/// The marker's file name: visible, so a person listing the directory sees whose it is.
pub const MARKER_FILE: &str = "biaslab-output.json";
const TOOL: &str = "biaslab";
/// How many foreign entries an error names before it says "and N more".
const NAMED: usize = 5;

/// The marker's contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    pub tool: String,
    pub version: String,
    /// What kind of output the directory holds (`analyze`, `invariance`).
    pub kind: String,
    /// The process that last wrote here: a `.tmp-analyze-*` directory whose writer is gone is stale.
    pub pid: u32,
    /// Every file biaslab wrote here, relative to the directory, `/`-separated.
    pub files: BTreeSet<String>,
}

/// A directory claimed for writing: every file written into it is recorded in its marker.
#[derive(Debug)]
pub struct OwnedDir {
    root: PathBuf,
    marker: Marker,
}

impl OwnedDir {
    /// Claims `dir` for output of `kind`: created when missing; an empty directory is claimed; a non-empty
    /// one only when it holds biaslab's marker and nothing the marker does not list. The marker is written
    /// before anything else, so even a run killed at once leaves a directory that says whose it is.
    pub fn claim(dir: &Path, kind: &str) -> Result<OwnedDir> {
        let marker = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(dir, e)),
            Ok(mut rd) => match rd.next() {
                None => None,
                Some(_) => Some(check_owned(dir)?),
            },
        };
        std::fs::create_dir_all(dir).ctx_io(dir)?;
        let mut marker = marker.unwrap_or_else(|| Marker {
            tool: TOOL.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: kind.into(),
            pid: 0,
            files: BTreeSet::new(),
        });
        marker.version = env!("CARGO_PKG_VERSION").into();
        marker.pid = std::process::id();
        let owned = OwnedDir {
            root: dir.to_path_buf(),
            marker,
        };
        owned.save()?;
        Ok(owned)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records `path` (inside the directory) as written by biaslab, before it is written: a run killed
    /// between the two leaves a listed name, never an unlisted file of ours that would block the next run.
    pub fn record(&mut self, path: &Path) -> Result<()> {
        let rel = relative(&self.root, path).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: not inside the output directory {}",
                path.display(),
                self.root.display()
            ))
        })?;
        if self.marker.files.insert(rel) {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let path = self.root.join(MARKER_FILE);
        let json = serde_json::to_vec_pretty(&self.marker)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        write_bytes_atomic(&path, &json)
    }
}

/// `path` relative to `root`, `/`-separated, when it lies inside it (lexically: both are the paths this
/// process builds, not user input).
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Reads the marker of `dir`, if it has one biaslab wrote.
pub fn read_marker(dir: &Path) -> Result<Option<Marker>> {
    let path = dir.join(MARKER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let marker: Marker = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(&path, format!("not a biaslab output marker: {e}")))?;
    if marker.tool != TOOL {
        return Err(Error::format(
            &path,
            format!("written by `{}`, not biaslab", marker.tool),
        ));
    }
    Ok(Some(marker))
}

/// A file `write_atomic` was writing when its process was killed: `.tmp-` and six letters or digits
/// (tempfile's default). Such leftovers are biaslab's own, so they do not make a directory foreign.
fn is_atomic_leftover(name: &str) -> bool {
    name.strip_prefix(".tmp-")
        .is_some_and(|r| r.len() == 6 && r.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The entries under `dir` (relative, `/`-separated) that `marker` does not account for: files it does not
/// list, and directories that hold no listed file. Symlinks are entries, never followed.
pub fn foreign_entries(dir: &Path, marker: &Marker) -> Result<Vec<String>> {
    let listed_dirs: BTreeSet<String> = marker
        .files
        .iter()
        .flat_map(|f| {
            let parts: Vec<&str> = f.split('/').collect();
            (1..parts.len())
                .map(|k| parts[..k].join("/"))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut foreign = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for e in std::fs::read_dir(&d).ctx_io(&d)? {
            let e = e.ctx_io(&d)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let ty = e.file_type().ctx_io(e.path())?;
            if ty.is_dir() {
                if listed_dirs.contains(&rel) {
                    stack.push((e.path(), rel));
                } else {
                    foreign.push(format!("{rel}/"));
                }
            } else if !(marker.files.contains(&rel)
                || (prefix.is_empty() && name == MARKER_FILE)
                || (ty.is_file() && is_atomic_leftover(&name)))
            {
                foreign.push(rel);
            }
        }
    }
    foreign.sort();
    Ok(foreign)
}

/// Checks that the non-empty directory `dir` is biaslab's to replace or write into: it holds the marker,
/// and nothing the marker does not list. The error names the directory, the reason and the first entries.
pub fn check_owned(dir: &Path) -> Result<Marker> {
    let Some(marker) = read_marker(dir)? else {
        return Err(Error::Invalid(format!(
            "{}: exists, is not empty and was not written by biaslab (no {MARKER_FILE}); nothing was \
             changed: choose a new or empty output directory (a report from a biaslab before this marker \
             existed must be removed by hand)",
            dir.display()
        )));
    };
    let foreign = foreign_entries(dir, &marker)?;
    if !foreign.is_empty() {
        let more = foreign.len().saturating_sub(NAMED);
        let mut names = foreign
            .iter()
            .take(NAMED)
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            names.push_str(&format!(" and {more} more"));
        }
        return Err(Error::Invalid(format!(
            "{}: holds {names}, which biaslab did not write; nothing was changed: move {} or choose \
             another output directory",
            dir.display(),
            if foreign.len() == 1 { "it" } else { "them" }
        )));
    }
    Ok(marker)
}

/// Whether `path` (an input) lies inside `dir`, by canonical paths; false when either does not exist.
pub fn lies_inside(path: &Path, dir: &Path) -> bool {
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

/// Whether the process `pid` is gone (so a directory it was writing is stale). A pid that cannot be
/// probed for another reason (EPERM: alive, someone else's) counts as alive.
pub fn process_gone(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Removes the directories named `<prefix>*` in `parent` that a killed biaslab left: each must hold
/// biaslab's marker naming a process that is gone and nothing the marker does not list, or be empty and
/// more than a minute old.
/// Anything else with that name is left alone. Returns the removed paths.
pub fn remove_stale(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(parent) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        // An empty one may be a live analyze's that has not written its marker yet: only an old one goes.
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 60);
        let empty = old && std::fs::read_dir(&p).is_ok_and(|mut r| r.next().is_none());
        let stale = empty
            || match read_marker(&p) {
                Ok(Some(m)) => {
                    process_gone(m.pid) && foreign_entries(&p, &m).is_ok_and(|f| f.is_empty())
                }
                _ => false,
            };
        if stale && std::fs::remove_dir_all(&p).is_ok() {
            removed.push(p);
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn a_claimed_directory_lists_what_was_recorded_and_nothing_else_is_foreign() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("r");
        let mut o = OwnedDir::claim(&d, "analyze").unwrap();
        o.record(&d.join("collapse.parquet")).unwrap();
        o.record(&d.join("embeddings/a.parquet")).unwrap();
        write(&d.join("collapse.parquet"), "x");
        write(&d.join("embeddings/a.parquet"), "x");
        write(&d.join(".tmp-Ab12Cd"), "half-written");
        let m = check_owned(&d).unwrap();
        assert_eq!(m.kind, "analyze");
        assert_eq!(m.pid, std::process::id());
        // claiming again keeps the list
        let o2 = OwnedDir::claim(&d, "analyze").unwrap();
        assert_eq!(o2.marker.files.len(), 2);

        write(&d.join("embeddings/notes.txt"), "mine");
        write(&d.join("sub/deeper/x.txt"), "mine");
        let err = check_owned(&d).unwrap_err().to_string();
        assert!(err.contains("`embeddings/notes.txt`"), "{err}");
        assert!(err.contains("`sub/`"), "{err}");
        assert!(err.contains("nothing was changed"), "{err}");
        assert!(OwnedDir::claim(&d, "analyze").is_err());
    }

    #[test]
    fn a_directory_without_the_marker_is_refused_and_an_empty_one_is_claimed() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("docs/summary.md"), "x");
        let err = OwnedDir::claim(&t.path().join("docs"), "analyze")
            .unwrap_err()
            .to_string();
        assert!(err.contains("was not written by biaslab"), "{err}");
        std::fs::create_dir(t.path().join("empty")).unwrap();
        OwnedDir::claim(&t.path().join("empty"), "analyze").unwrap();
        // another tool's marker of the same name is not ours
        write(
            &t.path().join("o").join(MARKER_FILE),
            r#"{"tool":"x","version":"1","kind":"k","pid":1,"files":[]}"#,
        );
        assert!(check_owned(&t.path().join("o")).is_err());
    }

    #[test]
    fn only_stale_directories_of_a_gone_process_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        let gone = p.join(".tmp-analyze-gone");
        let mut o = OwnedDir::claim(&gone, "analyze").unwrap();
        o.record(&gone.join("a.parquet")).unwrap();
        write(&gone.join("a.parquet"), "x");
        let mut m = read_marker(&gone).unwrap().unwrap();
        // a pid above the kernel's pid_max is never a live process
        m.pid = 1 << 30;
        std::fs::write(gone.join(MARKER_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        let live = p.join(".tmp-analyze-live");
        OwnedDir::claim(&live, "analyze").unwrap();
        let foreign = p.join(".tmp-analyze-user");
        write(&foreign.join("mine.txt"), "x");
        std::fs::create_dir(p.join(".tmp-analyze-new")).unwrap();
        let removed = remove_stale(p, ".tmp-analyze-");
        assert_eq!(removed, vec![gone]);
        assert!(live.exists() && foreign.join("mine.txt").exists());
    }
}
