//! What consoles leave behind. Every child proc starts is registered while it runs
//! ([`spawn_owned`], [`disown`]); xtask is the subreaper of its descendants, so a
//! process that left its group (a daemon started with `setsid`) and lost its parent is
//! re-parented to us. Our *strays* are our descendants that no child we still own leads
//! to, found by walking the process table down from us; [`stop_strays`] stops them
//! through the routine that stops groups (SIGTERM, grace, SIGKILL). On FreeBSD the
//! signals also go through procctl(2)'s PROC_REAP_KILL to the console's whole reaper
//! subtree, the kernel's own walk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::group::stop_with;
use super::table::{self, ProcInfo};

/// How often the strays are looked for again while they are being stopped (each look
/// reads the whole process table).
const STRAY_POLL: Duration = Duration::from_millis(20);

/// The children proc started that their owner has not reaped yet.
fn owned() -> MutexGuard<'static, BTreeSet<i32>> {
    static OWNED: OnceLock<Mutex<BTreeSet<i32>>> = OnceLock::new();
    OWNED.get_or_init(|| Mutex::new(BTreeSet::new())).lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a child with `spawn` while holding the registry, so no sweep can take the new
/// child for a stray before it is registered, then registers the pids `pids` names.
pub(super) fn spawn_owned<T, E>(
    spawn: impl FnOnce() -> Result<T, E>,
    pids: impl FnOnce(&T) -> Vec<u32>,
) -> Result<T, E> {
    let mut own = owned();
    let spawned = spawn()?;
    own.extend(pids(&spawned).into_iter().map(|p| p as i32));
    Ok(spawned)
}

/// Forgets a child its owner has reaped.
pub(super) fn disown(pid: u32) {
    owned().remove(&(pid as i32));
}

/// Our descendants that no child we still own leads to (zombies left out; those that
/// are our children are reaped on the way).
fn strays() -> Vec<ProcInfo> {
    let own = owned();
    let me = std::process::id() as i32;
    let all = table::all();
    let mut children: BTreeMap<i32, Vec<&ProcInfo>> = BTreeMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut found = Vec::new();
    let mut todo = vec![me];
    while let Some(parent) = todo.pop() {
        for c in children.get(&parent).into_iter().flatten() {
            if own.contains(&c.pid) {
                continue;
            }
            if c.zombie {
                if c.ppid == me {
                    // SAFETY: waitpid on one child of ours that is no child we own.
                    unsafe { libc::waitpid(c.pid, std::ptr::null_mut(), libc::WNOHANG) };
                }
                continue;
            }
            found.push(**c);
            todo.push(c.pid);
        }
    }
    found
}

/// Stops every stray: SIGTERM, up to `grace`, SIGKILL ([`stop_with`]), until none is
/// left (reaping those re-parented to us). `subtree` is the pid of the console whose
/// stopping may have left them (FreeBSD signals its reaper subtree). Returns the
/// strays there were.
pub(super) fn stop_strays(subtree: u32, grace: Duration) -> Vec<ProcInfo> {
    let found = strays();
    if found.is_empty() {
        return found;
    }
    let gone = |wait: Duration| {
        if strays().is_empty() {
            return true;
        }
        std::thread::sleep(wait.max(STRAY_POLL));
        false
    };
    stop_with(|sig| signal_strays(subtree, sig), grace, gone);
    found
}

/// Sends `sig` to every stray (each checked to still be the process found); says
/// whether any received it.
fn signal_strays(subtree: u32, sig: i32) -> bool {
    let mut any = reap_kill(subtree, sig);
    for p in strays() {
        any |= table::signal(&p, sig);
    }
    any
}

/// procctl(2) PROC_REAP_KILL with REAPER_KILL_SUBTREE: `sig` to every descendant of ours
/// that descends from `subtree` (a child of ours), wherever it has moved since.
#[cfg(target_os = "freebsd")]
fn reap_kill(subtree: u32, sig: i32) -> bool {
    /// `struct procctl_reaper_kill` of sys/procctl.h, as procctl(2) documents it.
    #[repr(C)]
    struct ReaperKill {
        rk_sig: libc::c_int,
        rk_flags: libc::c_uint,
        rk_subtree: libc::pid_t,
        rk_killed: libc::c_uint,
        rk_fpid: libc::pid_t,
        rk_pad0: [libc::c_uint; 15],
    }
    /// sys/procctl.h: only the reaper subtree named by `rk_subtree`.
    const REAPER_KILL_SUBTREE: libc::c_uint = 0x0000_0002;
    let mut rk = ReaperKill {
        rk_sig: sig,
        rk_flags: REAPER_KILL_SUBTREE,
        rk_subtree: subtree as libc::pid_t,
        rk_killed: 0,
        rk_fpid: -1,
        rk_pad0: [0; 15],
    };
    // SAFETY: procctl on our own pid (we are a reaper: PROC_REAP_ACQUIRE), with a
    // valid procctl_reaper_kill for the kernel to read and fill in.
    let rc = unsafe {
        libc::procctl(
            libc::P_PID,
            libc::getpid() as libc::id_t,
            libc::PROC_REAP_KILL,
            (&mut rk as *mut ReaperKill).cast(),
        )
    };
    rc == 0 && rk.rk_killed > 0
}

/// Elsewhere the walk of the process table is the only way.
#[cfg(not(target_os = "freebsd"))]
fn reap_kill(_subtree: u32, _sig: i32) -> bool {
    false
}
