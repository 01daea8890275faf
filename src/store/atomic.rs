//! File-system helpers: writing a file so that a crash, a full disk or an error half-way never
//! leaves a torn file behind.
//!
//! [`atomic_write`] writes into a temporary file beside the target (same directory, hence the
//! same file system), flushes and fsyncs it, renames it over the target and fsyncs the
//! directory. Readers therefore see either the old file or the complete new one, never a mix.

use anyhow::{Result, anyhow};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Buffer size of the writer handed to the caller: large enough that streaming a model's
/// floats costs few system calls.
const BUFFER_BYTES: usize = 1 << 20;

/// Removes the temporary file when dropped, unless disarmed after the rename; this covers
/// early returns and panics inside the caller's writer alike.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `path` atomically: `write` streams the contents into a buffered temporary file
/// `.<name>.tmp-<pid>-<counter>` in the same directory, which is flushed, fsynced and renamed
/// over `path`; then the directory is fsynced so that the rename itself is durable.
///
/// On any error the temporary file is removed and an existing file at `path` is left untouched.
/// Errors are one line naming `path` and what failed, e.g.
/// `models/x.cnn: cannot write: No space left on device (os error 28)`.
pub fn atomic_write(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let shown = path.display();
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{shown}: cannot write: the path does not name a file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(anyhow!(
            "{shown}: cannot write: directory {} does not exist",
            dir.display()
        ));
    }
    let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(
        ".{}.tmp-{}-{counter}",
        name.to_string_lossy(),
        std::process::id()
    );
    let temp_path = dir.join(temp_name);

    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp_path)
        .map_err(|e| {
            anyhow!(
                "{shown}: cannot create temporary file {}: {e}",
                temp_path.display()
            )
        })?;
    let mut guard = TempGuard {
        path: temp_path,
        armed: true,
    };

    let mut out = BufWriter::with_capacity(BUFFER_BYTES, file);
    write(&mut out).map_err(|e| anyhow!("{shown}: cannot write: {e:#}"))?;
    let file = out
        .into_inner()
        .map_err(|e| anyhow!("{shown}: cannot write: {}", e.error()))?;
    file.sync_all()
        .map_err(|e| anyhow!("{shown}: cannot flush to disk: {e}"))?;
    drop(file);

    fs::rename(&guard.path, path).map_err(|e| anyhow!("{shown}: cannot replace the file: {e}"))?;
    guard.armed = false;
    sync_dir(dir).map_err(|e| {
        anyhow!(
            "{shown}: cannot flush directory {} to disk: {e}",
            dir.display()
        )
    })?;
    Ok(())
}

/// Fsyncs a directory so that a rename within it survives a crash. Some platforms and file
/// systems cannot open or sync a directory; there the rename is as durable as they allow.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir)?.sync_all() {
            // EINVAL: the file system does not support syncing directories.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_and_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        atomic_write(&path, |w| Ok(w.write_all(b"first")?)).unwrap();
        atomic_write(&path, |w| Ok(w.write_all(b"second")?)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(dir.path()), ["x.bin"]);
    }

    #[test]
    fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        fs::write(&path, b"old").unwrap();
        let err = atomic_write(&path, |w| {
            w.write_all(&[7; 3 << 20])?;
            Err(anyhow!("disk on fire"))
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("x.bin: cannot write: disk on fire"), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["x.bin"]);
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("x.bin");
        let msg = format!("{:#}", atomic_write(&path, |_| Ok(())).unwrap_err());
        assert!(
            msg.contains("x.bin: cannot write: directory") && msg.contains("does not exist"),
            "{msg}"
        );
    }
}
