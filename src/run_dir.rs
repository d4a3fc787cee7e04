//! A training run's folder: one run at a time (a lock file naming the process that holds it),
//! and never another run's files replaced unless asked (`--overwrite`).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file inside a run directory; holds the pid of the run writing there.
pub const LOCK_FILE: &str = ".gpu-cnn.lock";

/// The files a training run writes, which `--overwrite` replaces: moved aside first (so the
/// new run's best starts from nothing), deleted once the new run has saved an epoch, put back
/// when it saves none (a run that fails in its first epoch loses nothing).
const RUN_FILES: [&str; 9] = [
    "last.safetensors",
    "best.safetensors",
    "history.json",
    "report.html",
    "predictions.png",
    "curves.png",
    "confusion.png",
    "confusion.json",
    "top_losses.png",
];

/// Whether `dir` is a training run's folder: it holds a run's history, checkpoint or lock.
pub fn is_run_folder(dir: &Path) -> bool {
    ["history.json", "last.safetensors", LOCK_FILE].iter().any(|f| dir.join(f).exists())
}

/// Where `--overwrite` keeps the previous run's files while the new one has saved nothing.
pub const REPLACED_FOLDER: &str = ".gpu-cnn.replaced";

/// The previous run's files, moved aside by `prepare_fresh`; dropping it settles them (see
/// RUN_FILES).
#[derive(Debug)]
pub struct Replaced {
    dir: PathBuf,
    names: Vec<&'static str>,
}

impl Drop for Replaced {
    fn drop(&mut self) {
        let aside = self.dir.join(REPLACED_FOLDER);
        if self.dir.join("last.safetensors").exists() {
            let _ = std::fs::remove_dir_all(&aside);
            return;
        }
        for name in &self.names {
            let _ = std::fs::rename(aside.join(name), self.dir.join(name));
        }
        let _ = std::fs::remove_dir(&aside);
    }
}

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
/// `overwrite`, and with it moves the previous run's files aside until the new run has saved
/// an epoch (keep the returned guard for the run's length).
pub fn prepare_fresh(dir: &Path, overwrite: bool) -> Result<Option<Replaced>> {
    let files = existing_files(dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    if !overwrite {
        let shown: Vec<&str> = files.iter().take(4).map(String::as_str).collect();
        let more = if files.len() > 4 { format!(" and {} more", files.len() - 4) } else { String::new() };
        bail!("{}: the run directory is not empty ({}{more}); pass --overwrite to replace its files, or choose another --out", dir.display(), shown.join(", "));
    }
    let aside = dir.join(REPLACED_FOLDER);
    // Left by a run that was killed before it saved: the files of the run before that one.
    if aside.exists() {
        std::fs::remove_dir_all(&aside).with_context(|| format!("{}: cannot remove (--overwrite)", aside.display()))?;
    }
    std::fs::create_dir(&aside).with_context(|| format!("{}: cannot create (--overwrite)", aside.display()))?;
    let mut replaced = Replaced { dir: dir.to_path_buf(), names: Vec::new() };
    for name in RUN_FILES {
        let path = dir.join(name);
        if path.exists() {
            std::fs::rename(&path, aside.join(name)).with_context(|| format!("{}: cannot move aside (--overwrite)", path.display()))?;
            replaced.names.push(name);
        }
    }
    Ok(Some(replaced))
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
