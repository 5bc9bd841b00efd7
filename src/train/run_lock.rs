//! One writer per run directory: `train` holds an exclusive `flock` on `run_dir/train.lock` for as long as
//! it writes there. The file names the holder (pid and host) for the error a second writer gets. The kernel
//! drops the lock when its holder dies, kill -9 included, so a lock file left by a dead process is stale by
//! construction: the next writer takes it over and says whose it was.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Lock file inside a run directory.
pub const LOCK_FILE: &str = "train.lock";

/// Held lock; dropping it removes the file and releases the lock.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    file: File,
    /// Holder named by a lock file whose process had died (`pid … on host …`), if any.
    pub stale: Option<String>,
}

/// Error: another live process holds the run's lock.
pub fn busy_message(run_dir: &Path, holder: &str) -> String {
    format!(
        "{}: another biaslab process is writing to this directory ({holder}); wait for it to finish or \
         stop it, or choose another --out",
        run_dir.display()
    )
}

impl RunLock {
    /// Takes the lock of `run_dir` (created if needed). A live holder is an error naming it; a lock file
    /// left by a dead process is taken over and reported in `stale`.
    pub fn acquire(run_dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(run_dir).ctx_io(run_dir)?;
        let path = run_dir.join(LOCK_FILE);
        // A holder that finishes removes the file after we opened it: we would then lock a deleted inode
        // while a third process creates and locks a new one. Retry until the locked inode is the path's.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .ctx_io(&path)?;
            // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let holder = read_holder(&mut file).unwrap_or_default();
                    let holder = if holder.is_empty() {
                        "a process that has not written its name yet".to_string()
                    } else {
                        holder
                    };
                    return Err(Error::Invalid(busy_message(run_dir, &holder)));
                }
                return Err(Error::io(&path, err));
            }
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            let previous = read_holder(&mut file).ctx_io(&path)?;
            file.set_len(0).ctx_io(&path)?;
            file.seek(SeekFrom::Start(0)).ctx_io(&path)?;
            let me = format!("pid {} on host {}", std::process::id(), hostname());
            file.write_all(me.as_bytes()).ctx_io(&path)?;
            file.sync_data().ctx_io(&path)?;
            return Ok(RunLock {
                path,
                file,
                stale: (!previous.is_empty()).then_some(previous),
            });
        }
        Err(Error::Invalid(format!(
            "{}: the lock file keeps being replaced; is another training starting there?",
            path.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove while still holding the lock, so a waiting writer retries on a fresh file (see acquire).
        let _ = std::fs::remove_file(&self.path);
        // SAFETY: unlocking our own descriptor; closing it would release the lock too.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn read_holder(file: &mut File) -> std::io::Result<String> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0))?;
    // The holder line is short; a longer file is not ours and only its start is shown.
    file.take(256).read_to_string(&mut s)?;
    Ok(s.trim().to_string())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_is_refused_and_lock_is_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(d.path()).unwrap();
        assert!(first.stale.is_none());
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let err = RunLock::acquire(d.path()).unwrap_err().to_string();
        assert!(err.contains("another biaslab process is writing"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!d.path().join(LOCK_FILE).exists());
        let again = RunLock::acquire(d.path()).unwrap();
        assert!(again.stale.is_none());
    }

    #[test]
    fn stale_lock_file_of_a_dead_process_is_taken_over() {
        let d = tempfile::tempdir().unwrap();
        // What kill -9 leaves: the file with its holder's name, and no lock (the kernel dropped it).
        std::fs::write(d.path().join(LOCK_FILE), "pid 999999 on host gone").unwrap();
        let lock = RunLock::acquire(d.path()).unwrap();
        assert_eq!(lock.stale.as_deref(), Some("pid 999999 on host gone"));
        let now = std::fs::read_to_string(lock.path()).unwrap();
        assert!(now.starts_with(&format!("pid {} on host", std::process::id())));
    }
}
