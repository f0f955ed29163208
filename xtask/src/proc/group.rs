//! Process groups: the one routine that stops one (SIGTERM, grace, SIGKILL), the registry
//! a stop signal reaches, long commands streamed through duct with an optional timeout,
//! and teardown commands that outlive a Ctrl-C.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::cmdline::{CmdLine, Output};
use super::signals::{Teardown, check_interrupted, interrupted, start_signal_thread, tell};
use super::strays::{disown, spawn_owned};
use crate::run::Log;
use crate::ui::Ui;

/// How long a group may take to go after SIGKILL before whoever stops it gives up.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(5);

/// How often a group that has not gone yet is looked at again.
const POLL: Duration = Duration::from_millis(2);

/// The signals [`stop_group`] had to send.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sent {
    /// SIGTERM reached the group (it was not empty).
    pub term: bool,
    /// SIGTERM was not enough and SIGKILL reached the group.
    pub kill: bool,
}

/// The one way a process group is stopped: SIGTERM to the whole group, up to `grace`
/// for it to be gone, SIGKILL, up to [`KILL_WAIT`] more. `gone(wait)` says whether it
/// is gone and, when it is not, waits up to `wait` for news (it may reap what it can).
/// A `grace` of zero goes straight on to SIGKILL.
pub(super) fn stop_group(pgid: i32, grace: Duration, gone: impl FnMut(Duration) -> bool) -> Sent {
    stop_with(|sig| killpg(pgid, sig), grace, gone)
}

/// The routine behind [`stop_group`], for any set of processes: `signal(sig)` sends
/// `sig` to them and says whether any received it. SIGTERM, up to `grace` for `gone`,
/// SIGKILL, up to [`KILL_WAIT`] more. Processes that are not a group of ours (what a
/// console left behind, a console an earlier xtask left running) are stopped here too.
pub(super) fn stop_with(
    mut signal: impl FnMut(i32) -> bool,
    grace: Duration,
    mut gone: impl FnMut(Duration) -> bool,
) -> Sent {
    let mut sent = Sent::default();
    if !signal(libc::SIGTERM) {
        return sent;
    }
    sent.term = true;
    if wait_until_gone(grace, &mut gone) {
        return sent;
    }
    sent.kill = signal(libc::SIGKILL);
    wait_until_gone(KILL_WAIT, &mut gone);
    sent
}

fn wait_until_gone(limit: Duration, gone: &mut impl FnMut(Duration) -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if gone(left.min(POLL)) {
            return true;
        }
    }
}

/// The `gone` of a group whose members are someone else's to reap: it is gone once
/// empty.
pub(super) fn empty(pgid: i32) -> impl FnMut(Duration) -> bool {
    move |wait| {
        if !group_alive(pgid) {
            return true;
        }
        std::thread::sleep(wait);
        false
    }
}

/// The `gone` of a group whose leader has been reaped: members that are our children
/// (orphans, when we are their subreaper) are reaped here, or as zombies they would
/// keep the group alive.
pub(super) fn reaped(pgid: i32) -> impl FnMut(Duration) -> bool {
    let mut empty = empty(pgid);
    move |wait| {
        reap_members(pgid);
        empty(wait)
    }
}

/// Reaps the members of a group that have exited and are our children. Only once its
/// leader has been reaped by its owner: this would take the leader's status too.
pub(super) fn reap_members(pgid: i32) {
    // SAFETY: waitpid on the members of a process group, without blocking.
    while unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

pub(super) fn killpg(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe { libc::killpg(pgid, sig) == 0 }
}

/// Whether any process is left in the group.
pub(super) fn group_alive(pgid: i32) -> bool {
    killpg(pgid, 0)
}

/// A process group running now, as the signal thread sees it.
#[derive(Debug, Clone)]
pub(super) struct Running {
    pub pgid: i32,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// The command that leads it, as the operator reads it.
    pub command: String,
}

/// Process groups currently running, with their grace periods and commands.
fn groups() -> &'static Mutex<BTreeMap<i32, (Duration, String)>> {
    static GROUPS: OnceLock<Mutex<BTreeMap<i32, (Duration, String)>>> = OnceLock::new();
    GROUPS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// The process groups running now (for the signal thread).
pub(super) fn running() -> Vec<Running> {
    groups()
        .lock()
        .map(|g| {
            g.iter()
                .map(|(pgid, (grace, command))| Running { pgid: *pgid, grace: *grace, command: command.clone() })
                .collect()
        })
        .unwrap_or_default()
}

/// A running process group. Registered so a stop signal reaches it; stopped (SIGTERM,
/// grace, SIGKILL) when dropped, so no path leaves it running.
pub(super) struct Group {
    pgid: i32,
    grace: Duration,
    stopped: bool,
}

impl Group {
    /// Registers the group led by `pgid`, running `command` (for the operator to read
    /// when a stop signal makes the program wait for it).
    pub fn register(pgid: i32, grace: Duration, command: String) -> Group {
        start_signal_thread();
        if let Ok(mut g) = groups().lock() {
            g.insert(pgid, (grace, command.clone()));
        }
        // A signal that arrived between spawn and registration must still reach it.
        if interrupted().is_some() {
            if !grace.is_zero() {
                tell(&Teardown::Stopping { command, pid: pgid, grace });
            }
            std::thread::spawn(move || stop_group(pgid, grace, empty(pgid)));
        }
        Group { pgid, grace, stopped: false }
    }

    /// Stops what is left of the group, `gone` saying when it is gone (see
    /// [`stop_group`]), and forgets it.
    pub fn stop(&mut self, gone: impl FnMut(Duration) -> bool) -> Sent {
        let sent = stop_group(self.pgid, self.grace, gone);
        self.stopped = true;
        if let Ok(mut g) = groups().lock() {
            g.remove(&self.pgid);
        }
        sent
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.stopped {
            // Its leader may still be waited for by its owner: nothing is reaped here.
            self.stop(empty(self.pgid));
        }
    }
}

/// Stops a process group when its time is up.
struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(pgid: i32, timeout: Duration, grace: Duration) -> Watchdog {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let fired = Arc::new(AtomicBool::new(false));
        let (d, f) = (done.clone(), fired.clone());
        std::thread::spawn(move || {
            let (lock, cvar) = &*d;
            let Ok(guard) = lock.lock() else { return };
            let Ok((guard, res)) = cvar.wait_timeout_while(guard, timeout, |done| !*done) else { return };
            if res.timed_out() && !*guard {
                f.store(true, Ordering::SeqCst);
                drop(guard);
                stop_group(pgid, grace, empty(pgid));
            }
        });
        Watchdog { done, fired }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.done;
        if let Ok(mut done) = lock.lock() {
            *done = true;
            cvar.notify_all();
        }
    }
}

/// The error of a streamed command stopped by its timeout (SIGTERM, grace, SIGKILL).
#[derive(Debug, Clone)]
pub struct TimedOut {
    pub command: String,
    pub after: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` timed out after {} and was stopped", self.command, crate::ui::duration(self.after))
    }
}

impl std::error::Error for TimedOut {}

/// Options for [`CmdLine::stream`].
#[derive(Debug, Clone)]
pub struct StreamOpts {
    /// Stop the command after this long.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when stopping it.
    pub grace: Duration,
}

impl Default for StreamOpts {
    fn default() -> Self {
        StreamOpts { timeout: None, grace: Duration::from_secs(10) }
    }
}

/// The duct expression that starts `cmd` (made by [`CmdLine::command`]) in its own
/// process group. duct makes its own `Command` from the program and arguments; the
/// working directory and environment reach it through `before_spawn` rather than duct's
/// `dir`, so a relative program path reads the same as for every other command.
fn expression(cmd: &Command) -> duct::Expression {
    let dir = cmd.get_current_dir().map(|d| d.to_path_buf());
    let env: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
    // The one use of duct: long commands start here.
    #[allow(clippy::disallowed_methods)]
    let expr = duct::cmd(cmd.get_program(), cmd.get_args());
    expr.before_spawn(move |c| {
        if let Some(dir) = &dir {
            c.current_dir(dir);
        }
        for (k, v) in &env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.process_group(0);
        Ok(())
    })
}

impl CmdLine {
    /// Runs a long command in its own process group, streaming every line of its output
    /// (stdout and stderr merged) to the log and the latest line to the display.
    /// Returns its exit status; never fails because of the status itself.
    pub fn stream(&self, log: &Log, ui: &Ui, opts: &StreamOpts) -> Result<Output> {
        check_interrupted()?;
        log.line(&format!("$ {self}"));
        let expr = expression(&self.command()?).stdin_null().stderr_to_stdout().unchecked();
        let reader = spawn_owned(|| expr.reader(), |r| r.pids()).map_err(|e| self.spawn_error(e))?;
        let pgid = reader.pids().first().copied().unwrap_or(0) as i32;
        let mut group = Group::register(pgid, opts.grace, self.to_string());
        let watchdog = opts.timeout.map(|t| Watchdog::start(pgid, t, opts.grace));

        let mut lines = BufReader::new(&reader);
        let mut buf = Vec::new();
        let mut last = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    log.bytes(&buf);
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end();
                    if !line.is_empty() {
                        ui.stage_line(line);
                    }
                    last.extend_from_slice(&buf);
                    if last.len() > 64 * 1024 {
                        last.drain(..last.len() - 32 * 1024);
                    }
                }
                Err(e) => {
                    log.line(&format!("[error reading output: {e}]"));
                    break;
                }
            }
        }
        let status = reader.try_wait().map_err(|e| anyhow!("cannot wait for `{self}`: {e}"));
        if matches!(status, Ok(Some(_))) {
            disown(pgid as u32);
        }
        let status = status?.map(|o| o.status);
        if status.is_some() {
            // The child is gone; anything it left behind in its group goes too. (Otherwise
            // dropping the group stops it without reaping: the leader is duct's to wait for.)
            group.stop(reaped(pgid));
        }
        let output = Output {
            status: status.and_then(|s| s.code()),
            signal: status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
            stdout: last,
            stderr: Vec::new(),
        };
        log.line(&format!("[{}]", output.describe_status()));
        if let Some(w) = &watchdog
            && w.fired()
        {
            return Err(TimedOut { command: self.to_string(), after: opts.timeout.unwrap_or_default() }.into());
        }
        check_interrupted()?;
        Ok(output)
    }

    /// Runs a short teardown command (destroying a VM, removing firewall rules) that
    /// must run even after Ctrl-C: in its own process group, which the first interrupt
    /// does not stop, and never longer than `timeout` (then it is killed). Both streams
    /// go to the log; the status is the caller's to judge.
    pub fn cleanup(&self, log: &Log, timeout: Duration) -> Result<Output> {
        log.line(&format!("$ {self}"));
        if interrupted().is_some() {
            tell(&Teardown::Cleanup { command: self.to_string(), timeout });
        }
        let mut cmd = self.command()?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let child = spawn_owned(|| cmd.spawn(), |c| vec![c.id()]).map_err(|e| self.spawn_error(e))?;
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let out = child.wait_with_output();
            disown(pid as u32);
            let _ = tx.send(out);
        });
        let out = match rx.recv_timeout(timeout) {
            Ok(out) => out.map_err(|e| anyhow!("cannot wait for `{self}`: {e}"))?,
            Err(_) => {
                // Its time is spent: no grace. The waiter thread reaps it.
                stop_group(pid, Duration::ZERO, empty(pid));
                log.line(&format!("[did not finish within {}; killed]", crate::ui::duration(timeout)));
                return Err(anyhow!("`{self}` did not finish within {} and was killed", crate::ui::duration(timeout)));
            }
        };
        let output = Output::from(out);
        output.log_to(log);
        Ok(output)
    }
}

impl CmdLine {
    /// Runs a short command with `input` on its stdin, in its own process group, never
    /// longer than `timeout` (then the group is killed and this is an error). For
    /// commands a program waits on but must not hang on (a mail command). Stderr and
    /// the status go to the log, stdout is returned.
    pub fn output_within(&self, log: &Log, input: &[u8], timeout: Duration) -> Result<Output> {
        use std::io::Write as _;
        log.line(&format!("$ {self}   (stdin: {} bytes)", input.len()));
        let mut cmd = self.command()?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        let input = input.to_vec();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Written beside the wait: a command that answers before reading all of its
            // input must not block us.
            let writer = stdin.map(|mut s| std::thread::spawn(move || s.write_all(&input)));
            let out = child.wait_with_output();
            let written = writer.map(|w| w.join());
            let _ = tx.send((out, written));
        });
        let (out, written) = match rx.recv_timeout(timeout) {
            Ok(done) => done,
            Err(_) => {
                stop_group(pid, Duration::ZERO, empty(pid));
                log.line(&format!("[did not finish within {}; killed]", crate::ui::duration(timeout)));
                return Err(anyhow!("`{self}` did not finish within {} and was killed", crate::ui::duration(timeout)));
            }
        };
        let out = Output::from(out.map_err(|e| anyhow!("cannot wait for `{self}`: {e}"))?);
        log.bytes(&out.stderr);
        log.line(&format!("[{}]", out.describe_status()));
        if let Some(Ok(Err(e))) = written
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(anyhow!("cannot write to the stdin of `{self}`: {e}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `script` under sh in its own process group; returns the group id and the
    /// child (ours to reap).
    fn group(script: &str) -> (i32, std::process::Child) {
        let mut cmd = CmdLine::new("sh").args(["-c", script]).command().unwrap();
        let child = cmd.stdout(Stdio::piped()).process_group(0).spawn().unwrap();
        (child.id() as i32, child)
    }

    /// A `gone` for a group whose leader is `child`: reaps it, then its members.
    fn leader_reaped(pgid: i32, child: &mut std::process::Child) -> impl FnMut(Duration) -> bool {
        let mut reaped = reaped(pgid);
        move |wait| {
            let _ = child.try_wait();
            reaped(wait)
        }
    }

    #[test]
    fn a_group_that_obeys_sigterm_gets_no_sigkill() {
        let (pgid, mut child) = group("sleep 30");
        let sent = stop_group(pgid, Duration::from_secs(5), leader_reaped(pgid, &mut child));
        assert!(sent.term && !sent.kill, "{sent:?}");
        assert!(!group_alive(pgid));
    }

    #[test]
    fn a_group_that_ignores_sigterm_is_killed_after_its_grace() {
        // SIGTERM comes after `ready`, once the trap is set; sleep inherits the trap.
        let (pgid, mut child) = group("trap '' TERM; echo ready; sleep 30 & wait");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
        assert_eq!(ready, "ready\n");
        let start = Instant::now();
        let sent = stop_group(pgid, Duration::from_millis(300), leader_reaped(pgid, &mut child));
        assert!(sent.term && sent.kill, "{sent:?}");
        assert!(start.elapsed() >= Duration::from_millis(300), "killed before the grace was over");
        assert!(!group_alive(pgid));
    }

    #[test]
    fn an_empty_group_gets_no_signal() {
        let (pgid, mut child) = group("exit 0");
        child.wait().unwrap();
        let sent = stop_group(pgid, Duration::from_secs(5), reaped(pgid));
        assert!(!sent.term && !sent.kill, "{sent:?}");
    }
}
