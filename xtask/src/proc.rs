//! The one place that runs external programs.
//!
//! Short commands run through xshell (argument vectors, output captured and logged).
//! Long ones (poudriere, bhyve, qemu) run through duct in their own process group, with
//! their output streamed line by line to the stage log and the progress display, and an
//! optional timeout. Ctrl-C, SIGTERM and SIGHUP are caught once for the whole program:
//! every running process group gets SIGTERM, then SIGKILL after its grace period, and
//! the engine records the stage as interrupted (exit 130).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::config::{Tool, Tools};
use crate::run::Log;
use crate::ui::Ui;

/// A command: program, arguments, working directory and extra environment. Never a
/// shell string: it is executed as this exact argument vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmdLine {
    pub program: String,
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Utf8PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl CmdLine {
    pub fn new(program: impl Into<String>) -> CmdLine {
        CmdLine { program: program.into(), args: Vec::new(), cwd: None, env: BTreeMap::new() }
    }

    /// The configured path of `tool`.
    pub fn tool(tools: &Tools, tool: Tool) -> CmdLine {
        CmdLine::new(tools.get(tool))
    }

    pub fn arg(mut self, arg: impl Into<String>) -> CmdLine {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> CmdLine
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn cwd(mut self, dir: impl Into<Utf8PathBuf>) -> CmdLine {
        self.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> CmdLine {
        self.env.insert(key.into(), value.into());
        self
    }

    fn shell(&self) -> Result<xshell::Shell> {
        let sh = xshell::Shell::new().context("cannot set up the command runner")?;
        if let Some(dir) = &self.cwd {
            sh.change_dir(dir);
        }
        Ok(sh)
    }

    fn xshell_cmd<'a>(&self, sh: &'a xshell::Shell) -> xshell::Cmd<'a> {
        let program = &self.program;
        let args = &self.args;
        let mut cmd = xshell::cmd!(sh, "{program} {args...}").quiet().ignore_status();
        for (k, v) in &self.env {
            cmd = cmd.env(k, v);
        }
        cmd
    }

    /// Runs a short command to completion and returns its output, whatever its exit
    /// status. Both streams go to the log.
    pub fn output(&self, log: &Log) -> Result<Output> {
        let sh = self.shell()?;
        let cmd = self.xshell_cmd(&sh);
        log.line(&format!("$ {self}"));
        let out = cmd.output().map_err(|e| self.spawn_error(e))?;
        let output = Output::from(out);
        output.log_to(log);
        Ok(output)
    }

    /// Runs a short command with `input` on its stdin. Stderr goes to the log; stdout
    /// is returned but not logged (it may be binary, such as a signature).
    pub fn output_with_input(&self, log: &Log, input: &[u8]) -> Result<Output> {
        let sh = self.shell()?;
        let cmd = self.xshell_cmd(&sh).stdin(input);
        log.line(&format!("$ {self}   (stdin: {} bytes; stdout not logged)", input.len()));
        let out = cmd.output().map_err(|e| self.spawn_error(e))?;
        let output = Output::from(out);
        log.bytes(&output.stderr);
        log.line(&format!("[{}]", output.describe_status()));
        Ok(output)
    }

    /// Runs a short command and fails unless it exits 0. The error names the command,
    /// its status and the last lines it printed.
    pub fn run(&self, log: &Log) -> Result<Output> {
        let out = self.output(log)?;
        if out.success() { Ok(out) } else { Err(anyhow!("{}", self.failure(&out))) }
    }

    /// Runs a short command and returns its stdout (trimmed of the final newline).
    pub fn read(&self, log: &Log) -> Result<String> {
        let out = self.run(log)?;
        let mut s = String::from_utf8(out.stdout).map_err(|_| anyhow!("`{self}` printed output that is not UTF-8"))?;
        while s.ends_with('\n') {
            s.pop();
        }
        Ok(s)
    }

    /// The message for a command that exited unsuccessfully.
    pub fn failure(&self, out: &Output) -> String {
        let mut msg = format!("`{self}` {}", out.describe_status());
        if let Some(dir) = &self.cwd {
            msg.push_str(&format!(" (in {dir})"));
        }
        let tail = tail_lines(&[&out.stderr[..], &out.stdout[..]].concat(), 10);
        if !tail.is_empty() {
            msg.push_str(":\n");
            msg.push_str(&tail);
        }
        msg
    }

    fn spawn_error(&self, e: impl fmt::Display) -> anyhow::Error {
        let e = e.to_string();
        if e.contains("No such file") || e.contains("not found") {
            anyhow!(
                "cannot run `{}`: program not found\nhelp: install it, or set its path in [tools] of pipeline.toml",
                self.program
            )
        } else {
            anyhow!("cannot run `{self}`: {e}")
        }
    }

    /// Runs a long command in its own process group, streaming every line of its output
    /// (stdout and stderr merged) to the log and the latest line to the display.
    /// Returns its exit status; never fails because of the status itself.
    pub fn stream(&self, log: &Log, ui: &Ui, opts: &StreamOpts) -> Result<Output> {
        check_interrupted()?;
        log.line(&format!("$ {self}"));
        let mut expr = duct::cmd(&self.program, &self.args).stdin_null().stderr_to_stdout().unchecked();
        if let Some(dir) = &self.cwd {
            expr = expr.dir(dir);
        }
        for (k, v) in &self.env {
            expr = expr.env(k, v);
        }
        let expr = expr.before_spawn(|c| {
            c.process_group(0);
            Ok(())
        });
        let reader = expr.reader().map_err(|e| self.spawn_error(e))?;
        let pgid = reader.pids().first().copied().unwrap_or(0) as i32;
        let group = Group::register(pgid, opts.grace);
        let _watchdog = opts.timeout.map(|t| Watchdog::start(pgid, t, opts.grace));

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
        let status = reader.try_wait().map_err(|e| anyhow!("cannot wait for `{self}`: {e}"))?;
        let status = status.map(|o| o.status);
        // The child is gone; anything it left behind in its group goes too.
        group.terminate();
        let output = Output {
            status: status.and_then(|s| s.code()),
            signal: status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
            stdout: last,
            stderr: Vec::new(),
        };
        log.line(&format!("[{}]", output.describe_status()));
        if let Some(w) = &_watchdog
            && w.fired()
        {
            return Err(TimedOut { command: self.to_string(), after: opts.timeout.unwrap_or_default() }.into());
        }
        check_interrupted()?;
        Ok(output)
    }
}

impl CmdLine {
    /// Runs a short teardown command (destroying a VM, removing firewall rules) that
    /// must run even after Ctrl-C: in its own process group, which the first interrupt
    /// does not stop, and never longer than `timeout` (then it is killed). Both streams
    /// go to the log; the status is the caller's to judge.
    pub fn cleanup(&self, log: &Log, timeout: Duration) -> Result<Output> {
        log.line(&format!("$ {self}"));
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(timeout) {
            Ok(out) => out.map_err(|e| anyhow!("cannot wait for `{self}`: {e}"))?,
            Err(_) => {
                killpg(pid, libc::SIGKILL);
                log.line(&format!("[did not finish within {}; killed]", crate::ui::duration(timeout)));
                return Err(anyhow!("`{self}` did not finish within {} and was killed", crate::ui::duration(timeout)));
            }
        };
        let output = Output::from(out);
        output.log_to(log);
        Ok(output)
    }
}

/// Shows the command as a shell would read it (for display only; never executed).
impl fmt::Display for CmdLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{}={} ", k, quote(v))?;
        }
        f.write_str(&quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quote(a))?;
        }
        Ok(())
    }
}

/// Quotes a word for display in the style of sh.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
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

/// What a command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, if it exited.
    pub status: Option<i32>,
    /// Signal, if one killed it.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Output {
        Output {
            status: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

impl Output {
    /// Both streams and the status, into the log.
    fn log_to(&self, log: &Log) {
        log.bytes(&self.stdout);
        log.bytes(&self.stderr);
        log.line(&format!("[{}]", self.describe_status()));
    }

    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn describe_status(&self) -> String {
        match (self.status, self.signal) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => "ended with an unknown status".into(),
        }
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The last `n` non-empty lines of some output, indented for an error message.
pub fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------
// Process groups and signals

/// The signal that interrupted us, or 0.
///
/// Set inside the signal handler itself (not by the thread that stops the process
/// groups), so a command killed by the same Ctrl-C can never be seen to fail before
/// the interruption is known.
fn interrupted_flag() -> &'static std::sync::Arc<std::sync::atomic::AtomicUsize> {
    static FLAG: OnceLock<std::sync::Arc<std::sync::atomic::AtomicUsize>> = OnceLock::new();
    FLAG.get_or_init(|| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)))
}

/// Process groups currently running, with their grace periods.
fn groups() -> &'static Mutex<BTreeMap<i32, Duration>> {
    static GROUPS: OnceLock<Mutex<BTreeMap<i32, Duration>>> = OnceLock::new();
    GROUPS.get_or_init(|| Mutex::new(BTreeMap::new()))
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
    let signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install signal handlers")?;
    *pending_signals().lock().unwrap_or_else(|e| e.into_inner()) = Some(signals);
    Ok(())
}

/// The handlers' queue, until the thread that acts on it starts.
fn pending_signals() -> &'static Mutex<Option<signal_hook::iterator::Signals>> {
    static SIGNALS: OnceLock<Mutex<Option<signal_hook::iterator::Signals>>> = OnceLock::new();
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
                kill_all(libc::SIGKILL);
                std::process::exit(130);
            }
            let running: Vec<(i32, Duration)> =
                groups().lock().map(|g| g.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default();
            for (pgid, grace) in running {
                std::thread::spawn(move || stop_group(pgid, grace));
            }
        }
    });
    if spawned.is_err() {
        // Without the thread a stop signal still sets the flag the stages poll, and each
        // group is still stopped when its command returns.
    }
}

fn kill_all(sig: i32) {
    if let Ok(g) = groups().lock() {
        for pgid in g.keys() {
            killpg(*pgid, sig);
        }
    }
}

fn killpg(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe { libc::killpg(pgid, sig) == 0 }
}

/// Whether any process is left in the group.
pub fn group_alive(pgid: i32) -> bool {
    killpg(pgid, 0)
}

/// SIGTERM to the group, up to `grace` for it to go, then SIGKILL.
pub fn stop_group(pgid: i32, grace: Duration) {
    if !killpg(pgid, libc::SIGTERM) {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !group_alive(pgid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    killpg(pgid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while group_alive(pgid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running process group. Registered so a stop signal reaches it; stopped (SIGTERM,
/// grace, SIGKILL) when dropped, so no path leaves it running.
pub struct Group {
    pgid: i32,
    grace: Duration,
}

impl Group {
    /// Registers the group led by `pgid`.
    pub fn register(pgid: i32, grace: Duration) -> Group {
        start_signal_thread();
        if let Ok(mut g) = groups().lock() {
            g.insert(pgid, grace);
        }
        // A signal that arrived between spawn and registration must still reach it.
        if interrupted().is_some() {
            std::thread::spawn(move || stop_group(pgid, grace));
        }
        Group { pgid, grace }
    }

    /// Stops whatever is left of the group and forgets it.
    pub fn terminate(&self) {
        stop_group(self.pgid, self.grace);
        if let Ok(mut g) = groups().lock() {
            g.remove(&self.pgid);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Stops a process group when its time is up.
struct Watchdog {
    done: std::sync::Arc<(Mutex<bool>, std::sync::Condvar)>,
    fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    fn start(pgid: i32, timeout: Duration, grace: Duration) -> Watchdog {
        let done = std::sync::Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, f) = (done.clone(), fired.clone());
        std::thread::spawn(move || {
            let (lock, cvar) = &*d;
            let Ok(guard) = lock.lock() else { return };
            let Ok((guard, res)) = cvar.wait_timeout_while(guard, timeout, |done| !*done) else { return };
            if res.timed_out() && !*guard {
                f.store(true, Ordering::SeqCst);
                drop(guard);
                stop_group(pgid, grace);
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

// ---------------------------------------------------------------------------------
// Raw consoles

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
    Exited(std::process::ExitStatus),
}

/// How a console program ended, as [`Console::stop`] reports it.
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status, when it has been reaped.
    pub status: Option<std::process::ExitStatus>,
    /// Whether it was still running and had to be sent SIGTERM.
    pub terminated: bool,
    /// Whether SIGTERM was not enough and SIGKILL followed.
    pub killed: bool,
    /// Output that arrived while it was being stopped.
    pub late: Vec<ConsoleEvent>,
    /// When the program was gone (reaped, and its process group empty).
    pub gone_at: Instant,
}

/// A running program whose stdout is a raw byte stream (a serial console). It runs in
/// its own process group with a null stdin; a dedicated thread reads its stdout into a
/// large pipe as fast as it comes (bhyve drops console bytes when the pipe is full),
/// another reads its stderr, a third reaps it. Everything arrives as [`ConsoleEvent`]s.
/// Dropping it stops the whole group.
pub struct Console {
    pid: u32,
    events: std::sync::mpsc::Receiver<ConsoleEvent>,
    group: Group,
    grace: Duration,
    status: Option<std::process::ExitStatus>,
    closed: bool,
}

/// Capacity of the console pipe where the kernel allows setting it (Linux).
const CONSOLE_PIPE_BYTES: i32 = 1 << 20;

/// Console events buffered between the reader threads and the consumer; a full queue
/// makes the reader wait, never drop.
const CONSOLE_QUEUE: usize = 1024;

impl CmdLine {
    /// Starts a program whose stdout is a console (see [`Console`]). `grace` is the time
    /// between SIGTERM and SIGKILL when it is stopped.
    pub fn console(&self, log: &Log, grace: Duration) -> Result<Console> {
        use std::io::Read;
        check_interrupted()?;
        log.line(&format!("$ {self}"));
        let (mut out_r, out_w) = std::io::pipe().context("cannot create the console pipe")?;
        let (mut err_r, err_w) = std::io::pipe().context("cannot create a pipe")?;
        enlarge_pipe(&out_r);
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args).stdin(std::process::Stdio::null()).stdout(out_w).stderr(err_w).process_group(0);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        become_subreaper();
        let spawned = cmd.spawn();
        // The command holds our copies of the write ends: without dropping it, the
        // console would never reach end of file.
        drop(cmd);
        let mut child = spawned.map_err(|e| self.spawn_error(e))?;
        let pid = child.id();
        let group = Group::register(pid as i32, grace);
        let (tx, events) = std::sync::mpsc::sync_channel(CONSOLE_QUEUE);

        // The last reader to reach end of file says so.
        let open_streams = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let close = |tx: &std::sync::mpsc::SyncSender<ConsoleEvent>, open: &std::sync::atomic::AtomicUsize| {
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
                let mut buf = vec![0u8; 64 * 1024];
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
                if let Ok(status) = child.wait() {
                    let _ = tx.send(ConsoleEvent::Exited(status));
                }
            }),
        )
        .context("cannot start the console's waiter")?;
        Ok(Console { pid, events, group, grace, status: None, closed: false })
    }
}

/// Makes this process the reaper of its descendants' orphans (once), so a console's
/// grandchildren that outlive their parent can still be reaped when the group is
/// stopped. Where the system cannot, stopping waits for whoever reaps them.
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
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

/// Stops what is left of a group whose leader has been reaped: SIGTERM, then reaping
/// every member that has become our child, SIGKILL after `grace`. Returns when the group
/// is empty, or after `grace` and two more seconds.
fn reap_group(pgid: i32, grace: Duration) {
    let reap = || {
        // SAFETY: waitpid on our own process group's members, without blocking.
        while unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    };
    reap();
    if !killpg(pgid, libc::SIGTERM) {
        return;
    }
    let start = Instant::now();
    let mut killed = false;
    while group_alive(pgid) {
        reap();
        if !group_alive(pgid) {
            return;
        }
        if !killed && start.elapsed() >= grace {
            killed = killpg(pgid, libc::SIGKILL);
        }
        if start.elapsed() >= grace + Duration::from_secs(2) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
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
    pub fn status(&self) -> Option<std::process::ExitStatus> {
        self.status
    }

    /// Stops the program and everything in its group: SIGTERM, up to the grace period,
    /// SIGKILL. Returns once the program is reaped and the group is empty.
    pub fn stop(&mut self) -> Stopped {
        let mut late = Vec::new();
        let (mut terminated, mut killed) = (false, false);
        if self.status.is_none() {
            terminated = killpg(self.pid as i32, libc::SIGTERM);
            self.wait_exit(self.grace, &mut late);
            if self.status.is_none() {
                killed = killpg(self.pid as i32, libc::SIGKILL);
                self.wait_exit(Duration::from_secs(5), &mut late);
            }
        }
        // Whatever else the program started in its group goes too. Its orphans are our
        // children (we are their subreaper): reap them, or they would linger as zombies
        // that still count as members of the group.
        if self.status.is_some() {
            reap_group(self.pid as i32, self.grace);
        }
        self.group.terminate();
        let gone_at = Instant::now();
        // Take what is still in the pipe, briefly: a process outside the group may hold it.
        let until = Instant::now() + Duration::from_millis(200);
        while !self.closed {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.note(&event);
                    if !matches!(event, ConsoleEvent::Closed | ConsoleEvent::Exited(_)) {
                        late.push(event);
                    }
                }
                Err(_) => break,
            }
        }
        Stopped { status: self.status, terminated, killed, late, gone_at }
    }

    fn wait_exit(&mut self, timeout: Duration, late: &mut Vec<ConsoleEvent>) {
        let until = Instant::now() + timeout;
        while self.status.is_none() {
            // Reap it here as soon as it is gone, rather than wait for the waiter thread
            // to wake and pass the news on: on a busy machine each wakeup costs a tick.
            let mut raw = 0;
            // SAFETY: waitpid on our own child, without blocking.
            if unsafe { libc::waitpid(self.pid as i32, &mut raw, libc::WNOHANG) } == self.pid as i32 {
                self.status = Some(std::os::unix::process::ExitStatusExt::from_raw(raw));
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.events.recv_timeout(left.min(Duration::from_millis(1))) {
                Ok(event) => {
                    self.note(&event);
                    if !matches!(event, ConsoleEvent::Closed | ConsoleEvent::Exited(_)) {
                        late.push(event);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.status.is_none() {
            killpg(self.pid as i32, libc::SIGTERM);
            let mut late = Vec::new();
            self.wait_exit(self.grace, &mut late);
            if self.status.is_none() {
                killpg(self.pid as i32, libc::SIGKILL);
                self.wait_exit(Duration::from_secs(5), &mut late);
            }
        }
        // `group` drops next and stops whatever is left in the group.
    }
}

/// Finds a program on PATH (or checks an explicit path) without running it.
pub fn find_program(program: &str) -> Option<Utf8PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Utf8Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if program.contains('/') {
        let p = Utf8PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':').filter(|d| !d.is_empty()).map(|d| Utf8Path::new(d).join(program)).find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let c = CmdLine::new("poudriere").args(["bulk", "-j", "clawdie-amd64", "it's here", ""]);
        assert_eq!(c.to_string(), r"poudriere bulk -j clawdie-amd64 'it'\''s here' ''");
    }
}
