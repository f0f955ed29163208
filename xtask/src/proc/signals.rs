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

/// What a stop signal makes the program do or wait for, for the display to tell the
/// operator (this module prints nothing: see [`on_teardown`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// The first stop signal arrived: running commands are being stopped.
    Interrupted(i32),
    /// A process group was sent SIGTERM; it gets `grace` to exit before SIGKILL.
    Stopping { command: String, pid: i32, grace: Duration },
    /// After the signal, a teardown command runs (destroying a VM, removing firewall
    /// rules), for at most `timeout`.
    Cleanup { command: String, timeout: Duration },
    /// A second stop signal: what is left is killed at once and the program exits.
    Abandoned,
}

impl fmt::Display for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let again = "interrupt again (Ctrl-C) to stop waiting";
        match self {
            Teardown::Interrupted(sig) => write!(f, "interrupted by {}: stopping", signal_name(*sig)),
            Teardown::Stopping { command, pid, grace } => write!(
                f,
                "waiting up to {} for `{command}` (process group {pid}) to exit after SIGTERM, then SIGKILL; {again} and kill it now",
                crate::ui::duration(*grace)
            ),
            Teardown::Cleanup { command, timeout } => write!(
                f,
                "tearing down: waiting up to {} for `{command}`; {again} (what it removes may then be left behind)",
                crate::ui::duration(*timeout)
            ),
            Teardown::Abandoned => f.write_str("interrupted again: killing what is left, without waiting"),
        }
    }
}

/// The display's hook for [`Teardown`] events.
type Hook = Box<dyn Fn(&Teardown) + Send + Sync>;

fn hook() -> &'static OnceLock<Hook> {
    static HOOK: OnceLock<Hook> = OnceLock::new();
    &HOOK
}

/// Sets, once, what is called on each [`Teardown`] event (from the signal thread, or from
/// whichever thread runs a teardown command). `main` has the display tell the operator.
pub fn on_teardown(f: impl Fn(&Teardown) + Send + Sync + 'static) {
    let _ = hook().set(Box::new(f));
}

pub(super) fn tell(event: &Teardown) {
    if let Some(f) = hook().get() {
        f(event);
    }
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
                tell(&Teardown::Abandoned);
                for group in running() {
                    stop_group(group.pgid, Duration::ZERO, |_| true);
                }
                std::process::exit(130);
            }
            tell(&Teardown::Interrupted(interrupted().unwrap_or(libc::SIGINT)));
            for group in running() {
                if !group.grace.is_zero() {
                    tell(&Teardown::Stopping { command: group.command, pid: group.pgid, grace: group.grace });
                }
                let (pgid, grace) = (group.pgid, group.grace);
                std::thread::spawn(move || stop_group(pgid, grace, empty(pgid)));
            }
        }
    });
    if spawned.is_err() {
        // Without the thread a stop signal still sets the flag the stages poll, and each
        // group is still stopped when its command returns.
    }
}
