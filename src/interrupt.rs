//! Ctrl-C and SIGTERM during training: while the training loop runs (`armed`), the first one
//! asks the run to stop at the end of the step in progress, so a checkpoint being written is
//! finished, an `--overwrite` run that has saved nothing puts the old run's files back, and the
//! lock is released. A second signal, or one outside the loop, ends the process at once (the
//! next run in the folder settles what it left: `run_dir::lock`). Without a handler a run
//! started as PID 1 in a container ignores SIGTERM altogether.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The signal received, 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Whether a training loop is running that checks for the signal; outside one (loading the
/// data, writing the report) a signal takes its default action at once.
static ARMED: AtomicBool = AtomicBool::new(false);

/// The run was stopped by a signal; `main` exits with 128 + its number, as a shell reports it.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let name = match self.signal {
            2 => "SIGINT (Ctrl-C)".to_string(),
            15 => "SIGTERM".to_string(),
            n => format!("signal {n}"),
        };
        // Not "resume from last.safetensors": after an --overwrite run's first epoch that file
        // is the previous run's again.
        write!(f, "stopped by {name} between two training steps; what the run folder held or saved stays as it was")
    }
}

impl std::error::Error for Interrupted {}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 || !ARMED.load(Ordering::SeqCst) {
        // SAFETY: signal() and raise() are async-signal-safe; the default action ends the process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Installs the handler for SIGINT and SIGTERM (training only; other commands keep the
/// default, which ends them at once with nothing to lose).
pub fn install() {
    #[cfg(unix)]
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic and async-signal-safe calls.
        unsafe {
            libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}

/// While the returned guard lives, the first signal only asks the loop to stop (`check`).
pub fn armed() -> Armed {
    ARMED.store(true, Ordering::SeqCst);
    Armed
}

pub struct Armed;

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.store(false, Ordering::SeqCst);
    }
}

/// Err once a signal has arrived: called between training steps.
pub fn check() -> Result<(), Interrupted> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => Ok(()),
        signal => Err(Interrupted { signal }),
    }
}
