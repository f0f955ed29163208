//! Consoles: programs whose stdout is a raw byte stream (a serial console), read as fast
//! as it comes, written to through an optional stdin pipe (the console's keyboard),
//! stopped with the group routine, their orphans reaped.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cmdline::CmdLine;
use super::group::{Group, KILL_WAIT, Sent, group_alive, reap_members};
use super::leftover::GroupRecord;
use super::signals::check_interrupted;
use super::strays::{disown, spawn_owned, stop_strays};
use crate::run::Log;

/// What a console program did, in the order it happened (see [`CmdLine::console`]).
#[derive(Debug)]
pub enum ConsoleEvent {
    /// Bytes of its stdout, as one read returned them, and when they arrived.
    Bytes { at: Instant, bytes: Vec<u8> },
    /// A piece of its stderr: a diagnostic of the program, not console output.
    Stderr(Vec<u8>),
    /// Its stdout and stderr reached end of file: every process holding them has gone,
    /// and everything they carried has been delivered.
    Closed,
    /// The program itself (the group leader) exited and has been reaped.
    Exited(ExitStatus),
}

/// How a console program ended, as [`Console::stop`] reports it.
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status, when it has been reaped.
    pub status: Option<ExitStatus>,
    /// Whether it was still running and had to be sent SIGTERM.
    pub terminated: bool,
    /// Whether SIGTERM was not enough and SIGKILL followed.
    pub killed: bool,
    /// Processes the program left outside its group (a daemon started with `setsid`),
    /// stopped as well: their pids.
    pub strays: Vec<u32>,
    /// Output that arrived while it was being stopped.
    pub late: Vec<ConsoleEvent>,
    /// When the program was gone (reaped, and its process group empty).
    pub gone_at: Instant,
}

/// A running program whose stdout is a raw byte stream (a serial console). It runs in
/// its own process group; its stdin is null, or a pipe [`Console::send`] writes to (the
/// console's keyboard: bhyve `-l com1,stdio` and QEMU `-serial stdio` pass what they
/// read there to the guest's serial port). A dedicated thread reads its stdout into a
/// large pipe as fast as it comes (bhyve drops console bytes when the pipe is full),
/// another reads its stderr, a third reaps it. Everything arrives as [`ConsoleEvent`]s.
/// Stopping it (or dropping it) stops the whole group, then whatever the program left
/// behind outside it (a daemon started with `setsid`: see `strays`).
pub struct Console {
    pid: u32,
    /// The write end of its stdin, when it has one (non-blocking: a guest that stops
    /// reading cannot hold the gate).
    input: Option<std::io::PipeWriter>,
    events: Receiver<ConsoleEvent>,
    group: Group,
    grace: Duration,
    status: Option<ExitStatus>,
    closed: bool,
    ended: bool,
}

/// Capacity of the console pipe where the kernel allows setting it (Linux).
const CONSOLE_PIPE_BYTES: i32 = 1 << 20;

/// Console events buffered between the reader threads and the consumer (each read is at
/// most [`READ_BYTES`]: 4 MiB in all); a full queue makes the reader wait, never drop.
/// Bounded so a console that floods faster than the gate judges cannot grow it, and
/// small: a deadline is judged once every byte that arrived before it has been read, so
/// the backlog is what a flood can add to the time of a verdict.
const CONSOLE_QUEUE: usize = 64;

/// The most one read of the console takes.
const READ_BYTES: usize = 64 * 1024;

impl CmdLine {
    /// Starts a program whose stdout is a console (see [`Console`]). `grace` is the time
    /// between SIGTERM and SIGKILL when it is stopped; with `input` its stdin is a pipe
    /// that [`Console::send`] writes to, otherwise null.
    ///
    /// `on_start` is given the program's process group before the program runs (the
    /// child waits, in its own group, until `on_start` returns): the caller records it,
    /// so a console that outlives a killed xtask can be found and stopped later. When
    /// `on_start` fails, or this process dies meanwhile, the program never runs.
    pub fn console(
        &self,
        log: &Log,
        grace: Duration,
        input: bool,
        on_start: &mut dyn FnMut(&GroupRecord) -> Result<()>,
    ) -> Result<Console> {
        check_interrupted()?;
        log.line(&format!("$ {self}"));
        let (mut out_r, out_w) = std::io::pipe().context("cannot create the console pipe")?;
        let (mut err_r, err_w) = std::io::pipe().context("cannot create a pipe")?;
        enlarge_pipe(&out_r);
        let mut cmd = self.command()?;
        cmd.stdout(out_w).stderr(err_w).process_group(0);
        let input = if input {
            let (in_r, in_w) = std::io::pipe().context("cannot create the console's input pipe")?;
            set_nonblocking(&in_w).context("cannot make the console's input pipe non-blocking")?;
            cmd.stdin(in_r);
            Some(in_w)
        } else {
            None
        };
        become_subreaper();
        let mut child = self.spawn_recorded(cmd, grace, on_start)?;
        let pid = child.id();
        let group = Group::register(pid as i32, grace, self.to_string());
        let (tx, events) = std::sync::mpsc::sync_channel(CONSOLE_QUEUE);

        // The last reader to reach end of file says so.
        let open_streams = Arc::new(AtomicUsize::new(2));
        let close = |tx: &SyncSender<ConsoleEvent>, open: &AtomicUsize| {
            if open.fetch_sub(1, Ordering::SeqCst) == 1 {
                let _ = tx.send(ConsoleEvent::Closed);
            }
        };
        let out_tx = tx.clone();
        let out_open = open_streams.clone();
        let spawn_thread = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map(|_| ())
        };
        spawn_thread(
            "console-stdout",
            Box::new(move || {
                let mut buf = vec![0u8; READ_BYTES];
                loop {
                    match out_r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let event = ConsoleEvent::Bytes { at: Instant::now(), bytes: buf[..n].to_vec() };
                            if out_tx.send(event).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                close(&out_tx, &out_open);
            }),
        )
        .context("cannot start the console reader")?;
        let err_tx = tx.clone();
        spawn_thread(
            "console-stderr",
            Box::new(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match err_r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if err_tx.send(ConsoleEvent::Stderr(buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                close(&err_tx, &open_streams);
            }),
        )
        .context("cannot start the console's stderr reader")?;
        spawn_thread(
            "console-wait",
            Box::new(move || {
                let waited = child.wait();
                disown(pid);
                if let Ok(status) = waited {
                    let _ = tx.send(ConsoleEvent::Exited(status));
                }
            }),
        )
        .context("cannot start the console's waiter")?;
        Ok(Console { pid, input, events, group, grace, status: None, closed: false, ended: false })
    }

    /// Spawns `cmd` so that it stops, in its own process group, just before its program
    /// runs; hands that group to `on_start`; then lets it run. The child tells its pid
    /// through one pipe and waits on another; a failing `on_start` (or this process
    /// dying) closes the second, and the child ends without running anything.
    fn spawn_recorded(
        &self,
        mut cmd: std::process::Command,
        grace: Duration,
        on_start: &mut dyn FnMut(&GroupRecord) -> Result<()>,
    ) -> Result<std::process::Child> {
        use std::os::fd::AsRawFd;
        let (mut pid_r, pid_w) = std::io::pipe().context("cannot create a pipe")?;
        let (go_r, go_w) = std::io::pipe().context("cannot create a pipe")?;
        let (pid_w_fd, go_r_fd, go_w_fd) = (pid_w.as_raw_fd(), go_r.as_raw_fd(), go_w.as_raw_fd());
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (close, getpid, write, read) on descriptors that are
        // open in the child (the parent holds them until the spawn has returned).
        unsafe {
            cmd.pre_exec(move || {
                // The child's copy of the parent's end: without closing it, the child
                // would never see the parent go.
                libc::close(go_w_fd);
                let pid = libc::getpid().to_ne_bytes();
                if libc::write(pid_w_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                    return Err(std::io::Error::last_os_error());
                }
                let mut go = 0u8;
                loop {
                    match libc::read(go_r_fd, (&mut go as *mut u8).cast(), 1) {
                        1 => return Ok(()),
                        n if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                        _ => return Err(std::io::Error::other("the program's start was called off")),
                    }
                }
            });
        }
        // The spawn returns only once the program runs (or failed to): from a thread,
        // while this one records the group. Our ends the child uses are closed once the
        // spawn has returned, so reading the pid ends if no child ever writes it.
        let spawner = std::thread::Builder::new()
            .name("console-spawn".into())
            .spawn(move || {
                let spawned = spawn_owned(|| cmd.spawn(), |c| vec![c.id()]);
                drop((cmd, pid_w, go_r));
                spawned
            })
            .context("cannot start the console's spawner")?;
        let mut pid = [0u8; 4];
        let told = pid_r.read_exact(&mut pid);
        let told_pid = told.is_ok();
        let recorded = match told {
            Ok(()) => GroupRecord::new(i32::from_ne_bytes(pid) as u32, grace, self.to_string())
                .map_err(anyhow::Error::from)
                .and_then(|record| on_start(&record).map(|()| record)),
            Err(e) => Err(e.into()),
        };
        let mut go_w = go_w;
        let go = recorded.is_ok() && go_w.write_all(b"g").is_ok();
        drop(go_w);
        let spawned = spawner.join().map_err(|_| anyhow::anyhow!("the console's spawner panicked"))?;
        match (spawned, recorded) {
            (Ok(child), Ok(_)) if go => Ok(child),
            (Ok(mut child), recorded) => {
                // Called off after all (the program cannot have run): reap it.
                let _ = child.wait();
                disown(child.id());
                Err(recorded.err().unwrap_or_else(|| anyhow::anyhow!("cannot let `{self}` start")))
            }
            (Err(e), Ok(_)) => Err(self.spawn_error(e)),
            // The child waited for us and was called off: why is our error, not the spawn's.
            (Err(_), Err(recorded)) if told_pid => Err(recorded),
            (Err(e), Err(_)) => Err(self.spawn_error(e)),
        }
    }
}

/// Sets O_NONBLOCK on our end of a pipe (its own open file description: the program's
/// end is not affected, and bhyve sets O_NONBLOCK on its own).
fn set_nonblocking(pipe: &std::io::PipeWriter) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes this process the reaper of its descendants' orphans (once), so a console's
/// grandchildren that outlive their parent can still be reaped when the group is
/// stopped. Where the system cannot, stopping waits for whoever reaps them.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        #[cfg(target_os = "freebsd")]
        // SAFETY: procctl on our own pid; PROC_REAP_ACQUIRE takes no data.
        unsafe {
            libc::procctl(libc::P_PID, libc::getpid() as libc::id_t, libc::PROC_REAP_ACQUIRE, std::ptr::null_mut());
        }
    });
}

#[cfg(target_os = "linux")]
fn enlarge_pipe(pipe: &std::io::PipeReader) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a pipe descriptor we own; failure (a size above the system's
    // limit) leaves the default size, which is still correct, only smaller.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, CONSOLE_PIPE_BYTES) };
}

#[cfg(not(target_os = "linux"))]
fn enlarge_pipe(_pipe: &std::io::PipeReader) {
    // FreeBSD grows pipes on demand; the reader thread keeps them drained.
}

impl Console {
    /// The program's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next event, waiting at most `timeout`; `None` when nothing came.
    pub fn recv(&mut self, timeout: Duration) -> Option<ConsoleEvent> {
        let event = self.events.recv_timeout(timeout).ok()?;
        self.note(&event);
        Some(event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<ConsoleEvent> {
        let event = self.events.try_recv().ok()?;
        self.note(&event);
        Some(event)
    }

    fn note(&mut self, event: &ConsoleEvent) {
        match event {
            ConsoleEvent::Exited(status) => self.status = Some(*status),
            ConsoleEvent::Closed => self.closed = true,
            _ => {}
        }
    }

    /// The exit status, once the program has exited.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Writes `bytes` to the program's stdin (the console's keyboard), waiting at most
    /// until `deadline` while the pipe is full. An error when the console was started
    /// without input, the program closed its stdin, or the pipe stayed full.
    pub fn send(&mut self, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
        let Some(pipe) = self.input.as_mut() else {
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "the console was started without input"));
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            match pipe.write(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the console does not read its input (the pipe stayed full)",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Stops the program and everything in its group: SIGTERM, up to the grace period,
    /// SIGKILL. Returns once the program is reaped and the group is empty.
    pub fn stop(&mut self) -> Stopped {
        let running = self.status.is_none();
        let mut late = Vec::new();
        let (sent, strays) = self.end(&mut late);
        let gone_at = Instant::now();
        // Take what is still in the pipe, briefly: a process outside the group may hold it.
        let until = Instant::now() + Duration::from_millis(200);
        while !self.closed {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => take(event, &mut self.status, &mut self.closed, &mut late),
                Err(_) => break,
            }
        }
        Stopped {
            status: self.status,
            terminated: running && sent.term,
            killed: running && sent.kill,
            strays,
            late,
            gone_at,
        }
    }

    /// Stops the group with the one routine; it is gone once the program is reaped and
    /// the group is empty. Its orphans are our children (we are their subreaper): they
    /// are reaped here, or they would linger as zombies that still count as members.
    /// Then whatever it left outside its group is stopped too (the pids are returned).
    fn end(&mut self, late: &mut Vec<ConsoleEvent>) -> (Sent, Vec<u32>) {
        self.ended = true;
        // Its keyboard goes first: nothing is typed into a console that is stopping.
        self.input = None;
        let pgid = self.pid as i32;
        let Console { group, events, status, closed, .. } = self;
        let mut gone = |wait: Duration| {
            if status.is_none() {
                // Reap it here as soon as it is gone, rather than wait for the waiter
                // thread to wake and pass the news on: on a busy machine each wakeup
                // costs a tick.
                let mut raw = 0;
                // SAFETY: waitpid on our own child, without blocking.
                if unsafe { libc::waitpid(pgid, &mut raw, libc::WNOHANG) } == pgid {
                    *status = Some(ExitStatus::from_raw(raw));
                    disown(pgid as u32);
                }
            }
            if status.is_some() {
                reap_members(pgid);
                if !group_alive(pgid) {
                    return true;
                }
            }
            match events.recv_timeout(wait) {
                Ok(event) => take(event, status, closed, late),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
            false
        };
        let sent = group.stop(&mut gone);
        // An empty group whose program we have not seen exit: the waiter thread reaped
        // it, and its news is on the way.
        let until = Instant::now() + KILL_WAIT;
        while status.is_none() && !group_alive(pgid) {
            match events.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(event) => take(event, status, closed, late),
                Err(_) => break,
            }
        }
        let strays = stop_strays(self.pid, self.grace).iter().map(|p| p.pid as u32).collect();
        (sent, strays)
    }
}

/// Takes an event that came while the console was being stopped: its news into `status`
/// and `closed`, its output into `late`.
fn take(event: ConsoleEvent, status: &mut Option<ExitStatus>, closed: &mut bool, late: &mut Vec<ConsoleEvent>) {
    match event {
        ConsoleEvent::Exited(s) => *status = Some(s),
        ConsoleEvent::Closed => *closed = true,
        output => late.push(output),
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if !self.ended {
            self.end(&mut Vec::new());
        }
    }
}
