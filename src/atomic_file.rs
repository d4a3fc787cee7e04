//! Whole-file writes that never leave half a file: the bytes go to a temporary file in the same
//! folder (named with the process id and a counter, so two writers never share one), are
//! fsynced, then renamed over the target. A failed write removes its temporary file.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name next to `path` that no other writer (process or thread) uses.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// The process id in a name `temp_path` made (`.NAME.PID.N.tmp`), else None: how a run
/// directory's next run finds the temporary files of a writer that was killed.
pub fn temp_file_pid(file_name: &str) -> Option<u32> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    let (_counter, pid, _name) = (parts.next()?.parse::<u64>().ok()?, parts.next()?.parse().ok()?, parts.next().filter(|n| !n.is_empty())?);
    Some(pid)
}

/// Where a write to `path` lands: a symlink's target (as `open(path, "w")` would write there,
/// not replace the link), and an error for anything that is not a regular file (a device, a
/// FIFO, a folder), which a rename would silently replace.
fn destination(path: &Path) -> Result<PathBuf> {
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(target),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot write", path.display())),
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&target).with_context(|| format!("{}: cannot read the symlink", target.display()))?;
                target = target.parent().map_or_else(|| link.clone(), |dir| dir.join(&link));
            }
            Ok(m) if m.is_file() => return Ok(target),
            Ok(_) => anyhow::bail!("{}: not a regular file; refusing to replace it", path.display()),
        }
    }
    anyhow::bail!("{}: too many levels of symbolic links", path.display())
}

/// Writes `data` to `path` through a uniquely named temporary file, fsync and rename.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    write_atomically_with(path, |tmp| {
        let mut f = std::fs::OpenOptions::new().write(true).open(tmp)?;
        f.write_all(data).map_err(Into::into)
    })
}

/// As `write_atomically`, with `write` filling the (created, empty) temporary file at the path
/// it is given: for files streamed out rather than built in memory first (a checkpoint of a
/// large model would otherwise be held twice or three times while it is written).
pub fn write_atomically_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let path = &destination(path)?;
    let tmp = temp_path(path);
    let written = (|| -> Result<()> {
        // Created here, never opened over something already there (a planted link).
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("{}: cannot create (its temporary file {})", path.display(), tmp.display()))?;
        write(&tmp).with_context(|| format!("{}: cannot write", path.display()))?;
        let f = std::fs::OpenOptions::new().write(true).open(&tmp).with_context(|| format!("{}: cannot write", path.display()))?;
        f.sync_all().with_context(|| format!("{}: cannot write (fsync)", path.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Makes the rename itself durable (best effort: not every platform can open a folder).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    written
}
