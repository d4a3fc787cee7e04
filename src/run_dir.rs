//! A training run's folder: one run at a time (a lock file naming the process that holds it),
//! and never another run's files replaced unless asked (`--overwrite`).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file inside a run directory; holds the pid of the run writing there.
pub const LOCK_FILE: &str = ".gpu-cnn.lock";

/// The files a training run writes and `--overwrite` removes first, so the new run's best
/// starts from nothing.
const RUN_FILES: [&str; 3] = ["last.safetensors", "best.safetensors", "history.json"];

/// Holds a run directory's lock until dropped.
#[derive(Debug)]
pub struct RunDirLock {
    path: PathBuf,
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// True when a process with this pid runs (Linux: /proc; elsewhere assumed alive).
fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes `dir`'s lock (creating the folder), which also proves the folder is writable before
/// any training. A lock left by a process that is gone is taken over.
pub fn lock(dir: &Path) -> Result<RunDirLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the run directory", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    for _ in 0..3 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(std::process::id().to_string().as_bytes()).with_context(|| format!("{}: cannot write", path.display()))?;
                return Ok(RunDirLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                match text.trim().parse::<u32>() {
                    Ok(pid) if process_alive(pid) => bail!(
                        "{}: another gpu-cnn run (process {pid}) is writing into this folder; wait for it, or choose another --out (if no such run exists, delete {})",
                        dir.display(),
                        path.display()
                    ),
                    // Stale (its process is gone) or half-written: move it aside atomically, so
                    // of two runs taking it over only one succeeds, then try again.
                    _ => {
                        let aside = dir.join(format!("{LOCK_FILE}.stale-{}", std::process::id()));
                        if std::fs::rename(&path, &aside).is_ok() {
                            let _ = std::fs::remove_file(&aside);
                        }
                    }
                }
            }
            Err(e) => return Err(e).with_context(|| format!("{}: cannot write into the run directory", dir.display())),
        }
    }
    bail!("{}: cannot take the run directory's lock {}", dir.display(), path.display())
}

/// The files in `dir` other than its lock: what a fresh run would replace.
fn existing_files(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    names.sort();
    Ok(names)
}

/// Before a fresh run into `dir` (already locked): refuses a folder holding anything unless
/// `overwrite`, and with it removes the previous run's checkpoints and history.
pub fn prepare_fresh(dir: &Path, overwrite: bool) -> Result<()> {
    let files = existing_files(dir)?;
    if files.is_empty() {
        return Ok(());
    }
    if !overwrite {
        let shown: Vec<&str> = files.iter().take(4).map(String::as_str).collect();
        let more = if files.len() > 4 { format!(" and {} more", files.len() - 4) } else { String::new() };
        bail!("{}: the run directory is not empty ({}{more}); pass --overwrite to replace its files, or choose another --out", dir.display(), shown.join(", "));
    }
    for name in RUN_FILES {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("{}: cannot remove (--overwrite)", path.display()))?;
        }
    }
    Ok(())
}

/// The folder a file is in ("." for a bare file name).
pub fn folder_of(file: &Path) -> PathBuf {
    file.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// True when resuming from `checkpoint` into `out` continues that run: the checkpoint is the
/// folder's own last.safetensors.
pub fn continues_run(checkpoint: &Path, out: &Path) -> bool {
    checkpoint.file_name().is_some_and(|n| n == "last.safetensors")
        && folder_of(checkpoint).canonicalize().is_ok_and(|f| out.canonicalize().is_ok_and(|o| o == f))
}
