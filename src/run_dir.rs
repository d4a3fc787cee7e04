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

/// The previous run's files, moved aside by `prepare_fresh`: `settle` deletes them once the
/// new run has saved a whole epoch; dropped unsettled (an error, a signal, a panic), it puts
/// them back in place of whatever the new run wrote. A run killed outright leaves the folder
/// aside, and the next run to lock the directory puts them back (`recover`).
#[derive(Debug)]
pub struct Replaced {
    dir: PathBuf,
    settled: bool,
}

impl Replaced {
    /// The new run has saved an epoch (checkpoints and history): the old files can go.
    pub fn settle(&mut self) {
        if !self.settled {
            self.settled = true;
            discard_aside(&self.dir);
        }
    }
}

impl Drop for Replaced {
    fn drop(&mut self) {
        if !self.settled {
            restore_aside(&self.dir);
        }
    }
}

/// Deletes the folder of replaced files: renamed first, so a kill halfway through deleting
/// never leaves a partial one where `recover` would put it back.
fn discard_aside(dir: &Path) {
    let doomed = dir.join(format!("{REPLACED_FOLDER}.settled-{}", std::process::id()));
    if std::fs::rename(dir.join(REPLACED_FOLDER), &doomed).is_ok() {
        let _ = std::fs::remove_dir_all(&doomed);
    }
}

/// Written into the folder aside once every old file is in it: from then on the new run may
/// write, so a run file in the directory without a copy aside is the new run's. Before it, the
/// move was interrupted, and such a file is an old one not yet moved.
const ALL_ASIDE: &str = ".all-moved";

/// Puts the replaced files back. Once the move had finished, the unsettled run's own files go
/// first, so none of them is left beside the old run's; if it was interrupted, only the files
/// aside move back and the rest stay. False when there was nothing aside.
fn restore_aside(dir: &Path) -> bool {
    let aside = dir.join(REPLACED_FOLDER);
    if !aside.is_dir() {
        return false;
    }
    let new_run_wrote = aside.join(ALL_ASIDE).exists();
    for name in RUN_FILES {
        if aside.join(name).exists() {
            let _ = std::fs::rename(aside.join(name), dir.join(name));
        } else if new_run_wrote {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    let _ = std::fs::remove_file(aside.join(ALL_ASIDE));
    let _ = std::fs::remove_dir(&aside);
    true
}

/// What a run killed outright (SIGKILL, power loss, a second Ctrl-C) left in a directory,
/// settled by the next run that locks it: an --overwrite run's folder of replaced files (that
/// run never saved an epoch, so the old files go back), a half-deleted settled one, and the
/// temporary files of interrupted writes whose process is gone. Returns notes to print.
fn recover(dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    if restore_aside(dir) {
        notes.push(format!(
            "{}: put back the files of the run before, which an --overwrite run that stopped before saving an epoch had moved aside",
            dir.display()
        ));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(&format!("{REPLACED_FOLDER}.settled-")) {
            let _ = std::fs::remove_dir_all(&path);
        } else if let Some(pid) = crate::atomic_file::temp_file_pid(&name).filter(|&pid| !process_alive(pid)) {
            // Only the temporary files of what a run writes here: `.notes.txt.1.2.tmp` is a user's.
            let ours = RUN_FILES.iter().any(|f| name.starts_with(&format!(".{f}.")));
            if ours && path.symlink_metadata().is_ok_and(|m| m.is_file()) && std::fs::remove_file(&path).is_ok() {
                notes.push(format!("{}: removed, a write interrupted when process {pid} stopped", path.display()));
            }
        }
    }
    notes
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
pub(crate) fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes `dir`'s lock (creating the folder), which also proves the folder is writable before
/// any training. A lock left by a process that is gone is taken over, and what that process
/// left half done is settled (`recover`).
pub fn lock(dir: &Path) -> Result<RunDirLock> {
    let lock = take_lock(dir)?;
    for note in recover(dir) {
        crate::stderr_line!("note: {note}");
    }
    Ok(lock)
}

fn take_lock(dir: &Path) -> Result<RunDirLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the run directory", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    for _ in 0..3 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                // A half-written lock would read as stale to the next run: remove it on failure.
                if let Err(e) = f.write_all(std::process::id().to_string().as_bytes()) {
                    let _ = std::fs::remove_file(&path);
                    return Err(e).with_context(|| format!("{}: cannot write", path.display()));
                }
                return Ok(RunDirLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Read only a regular file: a FIFO put there would block the read for ever.
                let text = match path.symlink_metadata() {
                    Ok(m) if m.is_file() => std::fs::read_to_string(&path).unwrap_or_default(),
                    Ok(_) => bail!("{}: is not a file (the run directory's lock must be); remove it", path.display()),
                    Err(_) => String::new(),
                };
                match text.trim().parse::<u32>() {
                    // Our own pid is stale by definition: we do not hold this lock yet (a run
                    // as PID 1 in a container finds the lock of the container's last run).
                    Ok(pid) if pid != std::process::id() && process_alive(pid) => bail!(
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
    // `lock` has put back any folder aside that a killed run left, so there is none here.
    let aside = dir.join(REPLACED_FOLDER);
    std::fs::create_dir(&aside).with_context(|| format!("{}: cannot create (--overwrite)", aside.display()))?;
    let replaced = Replaced { dir: dir.to_path_buf(), settled: false };
    for name in RUN_FILES {
        let path = dir.join(name);
        if path.exists() {
            std::fs::rename(&path, aside.join(name)).with_context(|| format!("{}: cannot move aside (--overwrite)", path.display()))?;
        }
    }
    std::fs::write(aside.join(ALL_ASIDE), b"").with_context(|| format!("{}: cannot write (--overwrite)", aside.display()))?;
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
