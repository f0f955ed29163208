//! Stop signals: SIGINT, SIGTERM and SIGHUP are caught once for the whole program. The
//! first one stops every running process group and makes [`check_interrupted`] fail; a
//! second one kills the groups at once and exits 130.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use signal_hook::iterator::Signals;

use super::group::{empty, running, stop_group};

/// The signal that interrupted us, or 0.
///
/// Set inside the signal handler itself (not by the thread that stops the process
/// groups), so a command killed by the same Ctrl-C can never be seen to fail before
/// the interruption is known.
fn interrupted_flag() -> &'static Arc<AtomicUsize> {
    static FLAG: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// The error a stage returns when Ctrl-C, SIGTERM or SIGHUP stopped it.
#[derive(Debug, Clone, Copy)]
pub struct Interrupted(pub i32);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}", signal_name(self.0))
    }
}

impl std::error::Error for Interrupted {}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    }
}

/// The signal that interrupted this process, if any.
pub fn interrupted() -> Option<i32> {
    match interrupted_flag().load(Ordering::SeqCst) {
        0 => None,
        s => Some(s as i32),
    }
}

/// Fails with [`Interrupted`] once a stop signal has arrived. Long native loops call it.
pub fn check_interrupted() -> Result<()> {
    match interrupted() {
        Some(sig) => Err(Interrupted(sig).into()),
        None => Ok(()),
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP for the whole program. The first one stops every
/// running process group (SIGTERM, then SIGKILL after its grace period) and makes
/// [`check_interrupted`] fail; a second one kills the groups at once and exits 130.
pub fn install_signal_handlers() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register_usize(sig, interrupted_flag().clone(), sig as usize)
            .context("cannot install signal handlers")?;
    }
    let signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install signal handlers")?;
    *pending_signals().lock().unwrap_or_else(|e| e.into_inner()) = Some(signals);
    Ok(())
}

/// The handlers' queue, until the thread that acts on it starts.
fn pending_signals() -> &'static Mutex<Option<Signals>> {
    static SIGNALS: OnceLock<Mutex<Option<Signals>>> = OnceLock::new();
    SIGNALS.get_or_init(|| Mutex::new(None))
}

/// Starts the thread that stops the running process groups on a signal (and exits on a
/// second one), once, before the first stage does any work. Commands that only read
/// state (a no-op `release`, `status`) never start it: a second thread makes every
/// later `munmap` a cross-CPU TLB shootdown, which costs more than their whole work.
/// Signals that arrived before it starts wait in the queue and are acted on at once.
pub fn start_signal_thread() {
    let Some(mut signals) = pending_signals().lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut seen = 0;
        for _ in signals.forever() {
            seen += 1;
            if seen > 1 {
                // No more grace, and no waiting either: the program exits next.
                for (pgid, _) in running() {
                    stop_group(pgid, Duration::ZERO, |_| true);
                }
                std::process::exit(130);
            }
            for (pgid, grace) in running() {
                std::thread::spawn(move || stop_group(pgid, grace, empty(pgid)));
            }
        }
    });
    if spawned.is_err() {
        // Without the thread a stop signal still sets the flag the stages poll, and each
        // group is still stopped when its command returns.
    }
}
