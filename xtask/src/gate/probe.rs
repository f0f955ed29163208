//! Probes: after the last marker the gate logs in on the serial console and runs
//! commands on the guest, each with the exit status or output it must give and a time
//! limit. A quiet console proves nothing (a daemon that crashed after syslogd started
//! leaves no line on a stock console: docs/reference/boot-gate.md, "What a console can
//! and cannot show"); asking the guest does.
//!
//! The exchange is our own, on top of the console stream the backends give (a pipe in,
//! a pipe out), not a crate such as expectrl: those spawn and own the process, with a
//! pty, which would bypass `proc` and the scanner that must keep reading the same bytes.
//! [`Exchange`] is a state machine without processes or clocks of its own: the session
//! feeds it console bytes and the time, and sends what it asks for.
//!
//! The exchange (docs/reference/boot-gate.md, "Probes"):
//! 1. wait for getty's `login: ` at the end of the console's unfinished line; send the
//!    account name;
//! 2. `Password:` gets the password from its file (once: a second prompt, `Login
//!    incorrect` or `login: ` again is a refusal); a cursor position request (root's
//!    .profile runs `resizewin`) is answered;
//! 3. once the shell prompt ends the unfinished line, ping the shell until it answers
//!    (`resizewin` throws away whatever was typed before it ran);
//! 4. run each command as
//!    `printf '__mb_%s_begin\n' NONCE; (CMD) </dev/null 2>&1; printf '\n__mb_%s_end_%s\n' NONCE $?`:
//!    its output is what comes between the two marker lines, its status the number in
//!    the second. The echoed command holds `%s` where the output holds the nonce, a
//!    random number per run, so neither the echo nor the guest can forge an answer.
//!
//! Everything is bounded: one line at a time (cut at [`MAX_LINE`]), at most
//! [`OUTPUT_LIMIT`] bytes of each probe's output kept (the rest counted and said to be
//! cut), and every wait has a deadline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use camino::Utf8PathBuf;
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};

use super::checks::{bad_regex, compile};
use super::results::printable;
use super::scan::Escapes;
use crate::config::Loaded;
use crate::stage::Plan;

/// The longest line kept whole; longer ones are taken in pieces.
pub const MAX_LINE: usize = 4096;
/// Bytes of a probe's output kept for the reports.
pub const OUTPUT_LIMIT: usize = 16 * 1024;
/// The longest command line a probe may type (the guest's terminal takes lines of a
/// few hundred bytes at least; the framing adds about 100).
pub const MAX_COMMAND: usize = 400;
/// How often the shell is pinged until it answers: longer than resizewin's 2-second
/// wait for the terminal's answer, during which typed input is lost.
const PING_EVERY: Duration = Duration::from_millis(2500);
/// How long the console must stay quiet after a password prompt before the password
/// is typed: a login that prints its prompt before it turns the terminal's echo off
/// (busybox's does) would otherwise show the password on the console.
const PASSWORD_QUIET: Duration = Duration::from_millis(300);
/// How long the console must stay quiet after the login before the gate pings the
/// shell without having seen its prompt: syslogd may write `ROOT LOGIN ...` onto the
/// prompt's line in the same read, so the prompt never ends the unfinished line.
const SHELL_QUIET: Duration = Duration::from_secs(5);
/// The answer to a cursor position request: a 24-line, 80-column terminal.
const CURSOR_POSITION: &[u8] = b"\x1b[24;80R";

/// A probe, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// How reports name it; by default the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The command line, typed into the guest's shell (one line).
    pub run: String,
    /// The exit status it must end with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// A regular expression some line of its output must match (`^` is a line's start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// How long it may take, in seconds, from typing it to its exit status.
    pub within_secs: u64,
}

/// The probe every image of ours answers: colibri-daemon runs (rc.subr
/// `run_rc_command` status: `NAME is running as pid N.`, exit 0).
pub fn default_probes() -> Vec<Probe> {
    vec![Probe {
        name: Some("colibri_daemon is running".into()),
        run: "service colibri_daemon status".into(),
        status: Some(0),
        output: Some(r"^colibri_daemon is running as pid \d+\.".into()),
        within_secs: 30,
    }]
}

/// A compiled probe.
#[derive(Debug, Clone)]
pub struct ProbeCheck {
    pub name: String,
    pub run: String,
    pub status: Option<i32>,
    pub output: Option<(String, Regex)>,
    pub within: Duration,
}

/// How the probes log in, compiled.
#[derive(Debug, Clone)]
pub struct LoginCheck {
    pub user: String,
    pub password_file: Option<Utf8PathBuf>,
    pub login_prompt: Regex,
    pub prompt_pattern: String,
    pub prompt: Regex,
    pub within: Duration,
}

/// Everything the probes need: the login and the commands.
#[derive(Debug, Clone)]
pub struct Probes {
    pub login: LoginCheck,
    pub probes: Vec<ProbeCheck>,
}

impl Probes {
    /// Compiles `gate.probes` and `gate.login`; `None` when there are no probes.
    pub fn compile(loaded: &Loaded) -> Result<Option<Probes>> {
        Self::build(loaded, true)
    }

    /// Checks the settings without building the matchers (at load time).
    pub fn validate(loaded: &Loaded) -> Result<()> {
        Self::build(loaded, false).map(|_| ())
    }

    fn build(loaded: &Loaded, build: bool) -> Result<Option<Probes>> {
        let cfg = &loaded.config.gate;
        let login = &cfg.login;
        if login.user.is_empty() || !login.user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(loaded.error_at(
                "gate.login.user",
                format!("`{}` is not an account name (letters, digits, `.`, `_`, `-`)", login.user),
            ));
        }
        if login.within_secs == 0 {
            return Err(loaded.error_at("gate.login.within_secs", "the login has 0 seconds"));
        }
        let regex = |key: &str, what: &str, pattern: &str| -> Result<Option<Regex>> {
            if pattern.is_empty() {
                return Err(loaded.error_at(key, format!("{what} is empty (it would match everything)")));
            }
            compile(pattern, build).map_err(|e| bad_regex(loaded, key, what, pattern, &e))
        };
        let login_prompt = regex("gate.login.login_prompt", "the login prompt", &login.login_prompt)?;
        let prompt = regex("gate.login.prompt", "the shell prompt", &login.prompt)?;
        let mut probes = Vec::new();
        for (i, p) in cfg.probes.iter().enumerate() {
            let key = format!("gate.probes.{i}");
            let name = p.name.clone().unwrap_or_else(|| p.run.clone());
            if p.run.trim().is_empty() {
                return Err(loaded.error_at(&format!("{key}.run"), format!("probe {} has no command", i + 1)));
            }
            if p.run.chars().any(char::is_control) || p.run.len() > MAX_COMMAND {
                return Err(loaded
                    .failure_at(
                        &format!("{key}.run"),
                        format!("probe `{name}` is not one line of at most {MAX_COMMAND} printable characters"),
                    )
                    .help("put a longer script into the image and run that")
                    .into());
            }
            if p.status.is_none() && p.output.is_none() {
                return Err(loaded
                    .failure_at(&key, format!("probe `{name}` expects nothing, so it would prove nothing"))
                    .help("give it the exit status (`status = 0`) or a line of output (`output = \"regex\"`) it must give")
                    .into());
            }
            if p.status.is_some_and(|s| !(0..=255).contains(&s)) {
                return Err(
                    loaded.error_at(&format!("{key}.status"), format!("probe `{name}`: an exit status is 0 to 255"))
                );
            }
            if p.within_secs == 0 {
                return Err(loaded.error_at(&format!("{key}.within_secs"), format!("probe `{name}` has 0 seconds")));
            }
            if cfg.probes[..i].iter().any(|q| q.name.clone().unwrap_or_else(|| q.run.clone()) == name) {
                return Err(loaded.error_at(&format!("{key}.name"), format!("two probes are called `{name}`")));
            }
            let output = match &p.output {
                None => None,
                Some(o) => {
                    regex(&format!("{key}.output"), &format!("probe `{name}`'s output"), o)?.map(|re| (o.clone(), re))
                }
            };
            probes.push(ProbeCheck {
                name,
                run: p.run.clone(),
                status: p.status,
                output,
                within: Duration::from_secs(p.within_secs),
            });
        }
        let (Some(login_prompt), Some(prompt)) = (login_prompt, prompt) else { return Ok(None) };
        if cfg.probes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Probes {
            login: LoginCheck {
                user: login.user.clone(),
                password_file: login.password_file.as_ref().map(|p| loaded.resolve(p)),
                login_prompt,
                prompt_pattern: login.prompt.clone(),
                prompt,
                within: Duration::from_secs(login.within_secs),
            },
            probes,
        }))
    }

    /// The probes, as `--dry-run` shows them. The password file is checked (never read).
    pub fn plan(&self, steps: &mut Plan) -> Result<()> {
        let l = &self.login;
        let password = match &l.password_file {
            Some(file) => {
                check_password_file(file)?;
                format!(", with the password in {file} (mode checked; never printed, logged or copied)")
            }
            None => ", without a password".into(),
        };
        steps.check(format!(
            "after the last marker, log in on the serial console as `{}`{password}, to a shell prompt /{}/, within {}s",
            l.user,
            l.prompt_pattern,
            l.within.as_secs()
        ));
        for p in &self.probes {
            let mut wants = Vec::new();
            if let Some(s) = p.status {
                wants.push(format!("exit status {s}"));
            }
            if let Some((o, _)) = &p.output {
                wants.push(format!("a line matching /{o}/"));
            }
            steps.check(format!(
                "probe `{}`: `{}` gives {} within {}s",
                p.name,
                p.run,
                wants.join(" and "),
                p.within.as_secs()
            ));
        }
        Ok(())
    }
}

/// Checks the password file as the signing key is checked: a regular file, ours or
/// root's, mode 0600 or stricter.
pub fn check_password_file(path: &Utf8PathBuf) -> Result<()> {
    pkgrepo::key::check_secret(path, "the login password file", "the password").map_err(secret_failure)
}

/// pkgrepo's error as a failure of ours, its help line kept.
fn secret_failure(e: pkgrepo::Error) -> anyhow::Error {
    let help = e.help().unwrap_or(
        "write the password alone on the first line of a file of mode 0600, and name it in gate.login.password_file",
    );
    crate::failure::Failure::new(format!("{e:#}")).help(help).into()
}

/// Reads the password: the file's first line, without its line end.
pub fn read_password(path: &Utf8PathBuf) -> Result<pkgrepo::key::SecretBytes> {
    let secret = pkgrepo::key::read_secret(path, "the login password file", "the password").map_err(secret_failure)?;
    let bytes = secret.expose();
    let end = bytes.iter().position(|b| *b == b'\n').unwrap_or(bytes.len());
    let line = &bytes[..end];
    let len = line.strip_suffix(b"\r").unwrap_or(line).len();
    if bytes[..len].iter().any(|b| b.is_ascii_control()) || end + 1 < bytes.len() {
        anyhow::bail!(
            crate::failure!("the login password file {path} holds more than one line, or control characters")
                .help("write the password alone on its first line")
        );
    }
    Ok(secret.prefix(len))
}

/// A nonce for one run's markers: 16 hex digits from the system's random source.
pub fn nonce() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the probes' nonce")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the exchange wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// These bytes.
    Text(Vec<u8>),
    /// The password, then a carriage return (the session has it; it is never logged).
    Password,
}

/// What the session should do next for the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this to the console; `what` says what it is, for the log.
    Send { payload: Payload, what: String },
    /// Nothing to send before this time (or before more console bytes arrive).
    Wait(Instant),
    /// The exchange is over: see [`Exchange::failure`].
    Done,
}

/// Why the probes failed. Every kind is the image's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The login went wrong (`None`), or this probe.
    pub probe: Option<usize>,
    pub reason: String,
    pub help: String,
}

/// How the login went, for result.json and junit.xml.
#[derive(Debug, Clone, Serialize)]
pub struct LoginRecord {
    pub user: String,
    /// Whether the guest asked for the password and was sent it.
    pub password_sent: bool,
    /// `pass`, `fail`, or `not-run` (the boot failed first).
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds from the last marker to the shell's first answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// One probe's result, for result.json and junit.xml.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRecord {
    pub name: String,
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    pub within_secs: u64,
    /// `pass`, `fail`, or `not-run`.
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exit status it printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// Its output (escape sequences removed), cut after [`OUTPUT_LIMIT`] bytes.
    pub output: String,
    /// Bytes of output it printed, all of them.
    pub output_bytes: u64,
    /// Whether `output` is cut.
    pub output_cut: bool,
    /// Seconds from typing it to its exit status (or to the deadline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// Where the exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for getty's login prompt.
    Login,
    /// The account name was sent: waiting for `Password:`, the shell prompt, or a
    /// refusal. `asked`: a password prompt came, and the password waits for quiet;
    /// `answered`: a line came back since the name (or the password) was sent.
    User {
        password_sent: bool,
        asked: bool,
        answered: bool,
    },
    /// The shell prompt appeared: pinging until the shell answers.
    Ready {
        last_ping: Option<Instant>,
    },
    /// Probe `index` was typed at `sent` (once the session took it); `begun` once its
    /// begin marker came.
    Running {
        index: usize,
        sent: Option<Instant>,
        begun: bool,
    },
    Done,
}

/// The login and the probes, as a state machine over the console's bytes.
pub struct Exchange<'p> {
    probes: &'p Probes,
    has_password: bool,
    begin: Vec<u8>,
    ready: Vec<u8>,
    end: Regex,
    escapes: Escapes,
    /// The current line (escape sequences removed), at most [`MAX_LINE`] bytes.
    line: Vec<u8>,
    /// The last byte was `\r` (so a `\n` after it ends no second line).
    after_cr: bool,
    /// Where the line stood when the exchange last sent something, while that line
    /// lasts: only what came after it can be the guest's answer (a prompt arriving in
    /// two reads, `Password:` then ` `, is one prompt, not two).
    sent_at: Option<usize>,
    state: State,
    started: Instant,
    deadline: Instant,
    /// When the last console byte arrived.
    last_byte: Instant,
    queue: VecDeque<(Payload, String)>,
    failure: Option<Failure>,
    login: LoginRecord,
    records: Vec<ProbeRecord>,
    /// Whether the current probe's output matched its pattern.
    matched: bool,
}

impl<'p> Exchange<'p> {
    /// An exchange starting at `now` (the last marker). `line` is the console's
    /// unfinished line; `at_login_prompt` says that the last marker was the login prompt
    /// itself (it may have been followed by other lines since).
    pub fn new(
        probes: &'p Probes,
        has_password: bool,
        nonce: &str,
        line: &[u8],
        at_login_prompt: bool,
        now: Instant,
    ) -> Exchange<'p> {
        let (login, records) = not_run(probes);
        let mut x = Exchange {
            probes,
            has_password,
            begin: format!("__mb_{nonce}_begin").into_bytes(),
            ready: format!("__mb_{nonce}_ready").into_bytes(),
            end: Regex::new(&format!(r"__mb_{nonce}_end_(\d{{1,3}})(?:[^0-9]|$)")).expect("a valid pattern"),
            escapes: Escapes::default(),
            line: line[..line.len().min(MAX_LINE)].to_vec(),
            after_cr: false,
            sent_at: None,
            state: State::Login,
            started: now,
            deadline: now + probes.login.within,
            last_byte: now,
            queue: VecDeque::new(),
            failure: None,
            login,
            records,
            matched: false,
        };
        if at_login_prompt {
            x.send_user();
        } else {
            x.check();
        }
        x
    }

    /// Takes console bytes that arrived at `at`. Complete lines are judged now; the
    /// unfinished line waits for [`Exchange::check`] after the batch.
    pub fn feed(&mut self, bytes: &[u8], at: Instant) {
        if self.state == State::Done {
            return;
        }
        self.last_byte = self.last_byte.max(at);
        for &b in bytes {
            let Some(b) = self.escapes.byte(b) else { continue };
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.sent_at = None;
                    let line = std::mem::take(&mut self.line);
                    self.complete_line(&line, true, at);
                    self.line = line;
                    self.line.clear();
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                    if self.line.len() >= MAX_LINE {
                        // A piece of an over-long line: output, never a marker (each
                        // marker follows a line end the framing prints).
                        self.sent_at = None;
                        let line = std::mem::take(&mut self.line);
                        self.complete_line(&line, false, at);
                        self.line = line;
                        self.line.clear();
                    }
                }
            }
            if self.state == State::Done {
                return;
            }
        }
        if self.escapes.take_query() && !matches!(self.state, State::Login | State::Done) {
            self.queue.push_back((Payload::Text(CURSOR_POSITION.to_vec()), "the terminal's size".into()));
        }
    }

    /// Looks at the unfinished line (after a batch of [`Exchange::feed`]s): the prompts.
    pub fn check(&mut self) {
        let from = self.sent_at.unwrap_or(0);
        if from >= self.line.len() {
            return;
        }
        let line = &self.line[from..];
        match self.state {
            State::Login if self.probes.login.login_prompt.is_match(line) => self.send_user(),
            State::User { password_sent, asked: false, .. } => {
                if self.probes.login.login_prompt.is_match(line) {
                    self.refused("the login prompt came back");
                } else if password_prompt(line) {
                    if password_sent {
                        self.refused("the password was asked for again");
                    } else if !self.has_password {
                        self.fail(
                            None,
                            format!(
                                "the guest asks `{}` for a password, and gate.login.password_file is unset",
                                self.probes.login.user
                            ),
                            "set gate.login.password_file to a file (mode 0600) holding the account's password".into(),
                        );
                    } else {
                        self.state = State::User { password_sent: false, asked: true, answered: false };
                    }
                } else if self.probes.login.prompt.is_match(line) {
                    self.state = State::Ready { last_ping: None };
                }
            }
            // A shell that was only assumed (see SHELL_QUIET) may turn out to be login.
            State::Ready { .. } if self.probes.login.login_prompt.is_match(line) => {
                self.refused("the login prompt came back");
            }
            _ => {}
        }
    }

    /// What to do next, at `now`.
    pub fn next(&mut self, now: Instant) -> Action {
        if let Some((payload, what)) = self.queue.pop_front() {
            self.sent_at = Some(self.line.len());
            if let State::Running { index, sent: None, begun } = self.state {
                self.state = State::Running { index, sent: Some(now), begun };
            }
            return Action::Send { payload, what };
        }
        match self.state {
            State::Done => return Action::Done,
            State::Login | State::User { .. } | State::Ready { .. } if now >= self.deadline => {
                let what = match self.state {
                    State::Login => "the login prompt did not appear",
                    State::User { .. } => "no shell prompt followed the login",
                    _ => "the shell did not answer",
                };
                self.fail(
                    None,
                    format!(
                        "{what} within {}s after the last marker (gate.login.within_secs)",
                        self.probes.login.within.as_secs()
                    ),
                    "the console's last lines show where the login stopped; every marker was seen, so the image (its getty, login or shell) did not let the gate in".into(),
                );
                return Action::Done;
            }
            State::User { asked: true, .. } => {
                let quiet = self.last_byte + PASSWORD_QUIET;
                if now < quiet {
                    return Action::Wait(quiet.min(self.deadline));
                }
                self.state = State::User { password_sent: true, asked: false, answered: false };
                self.login.password_sent = true;
                self.sent_at = Some(self.line.len());
                return Action::Send { payload: Payload::Password, what: "the password".into() };
            }
            State::User { answered: true, .. } => {
                let quiet = self.last_byte + SHELL_QUIET;
                if now < quiet {
                    return Action::Wait(quiet.min(self.deadline));
                }
                // The login went quiet after answering: a shell whose prompt was not
                // seen. A ping finds out.
                self.state = State::Ready { last_ping: None };
                return self.next(now);
            }
            State::Ready { last_ping } => {
                if last_ping.is_none_or(|t| now >= t + PING_EVERY) {
                    self.state = State::Ready { last_ping: Some(now) };
                    let ping = format!("printf '__mb_%s_ready\\n' {}\r", self.nonce());
                    self.sent_at = Some(self.line.len());
                    return Action::Send { payload: Payload::Text(ping.into_bytes()), what: "a ping".into() };
                }
                let next = last_ping.map_or(now, |t| t + PING_EVERY);
                return Action::Wait(next.min(self.deadline));
            }
            State::Running { index, sent: Some(sent), .. } => {
                let deadline = sent + self.probes.probes[index].within;
                if now >= deadline {
                    let p = &self.probes.probes[index];
                    self.records[index].seconds = Some(deadline.duration_since(sent).as_secs_f64());
                    self.fail(
                        Some(index),
                        format!("probe `{}` (`{}`) did not finish within {}s", p.name, p.run, p.within.as_secs()),
                        format!("its output so far is quoted; raise gate.probes.{index}.within_secs if the guest is just slow"),
                    );
                    return Action::Done;
                }
                return Action::Wait(deadline);
            }
            _ => {}
        }
        Action::Wait(self.deadline)
    }

    /// Why the exchange failed, once it is over.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The login's and the probes' records (a failure marks the rest `not-run`).
    pub fn records(&self) -> (LoginRecord, Vec<ProbeRecord>) {
        let mut records = self.records.clone();
        for r in &mut records {
            // The last line's end, and the one the framing prints before its marker.
            let kept = r.output.trim_end_matches('\n').len();
            r.output.truncate(kept);
        }
        (self.login.clone(), records)
    }

    fn nonce(&self) -> &str {
        let b = std::str::from_utf8(&self.begin).unwrap_or("");
        b.trim_start_matches("__mb_").trim_end_matches("_begin")
    }

    fn send(&mut self, payload: Payload, what: String) {
        // What is on the line now came before this, so it cannot answer it.
        self.sent_at = Some(self.line.len());
        self.queue.push_back((payload, what));
    }

    fn send_user(&mut self) {
        self.state = State::User { password_sent: false, asked: false, answered: false };
        let user = format!("{}\r", self.probes.login.user);
        self.send(Payload::Text(user.into_bytes()), format!("the account name `{}`", self.probes.login.user));
    }

    fn refused(&mut self, what: &str) {
        let user = &self.probes.login.user;
        let help = if self.has_password {
            "check that gate.login.password_file holds the image's password for the account, and that the account may log in on the serial console"
        } else {
            "check that the account may log in on the serial console without a password (or set gate.login.password_file)"
        };
        self.fail(None, format!("the guest refused the login as `{user}`: {what}"), help.into());
    }

    fn fail(&mut self, probe: Option<usize>, reason: String, help: String) {
        match probe {
            None => {
                self.login.verdict = "fail";
                self.login.reason = Some(reason.clone());
            }
            Some(i) => {
                self.records[i].verdict = "fail";
                self.records[i].reason = Some(reason.clone());
            }
        }
        self.failure = Some(Failure { probe, reason, help });
        self.state = State::Done;
        self.queue.clear();
    }

    /// A line ended (`whole`) at `at`, or a piece of an over-long one was taken.
    fn complete_line(&mut self, line: &[u8], whole: bool, at: Instant) {
        match self.state {
            State::User { .. } | State::Ready { .. } if whole && contains(line, b"Login incorrect") => {
                self.refused("Login incorrect");
            }
            State::User { password_sent, asked, answered: false } if whole => {
                self.state = State::User { password_sent, asked, answered: true };
            }
            State::Ready { .. } if whole && contains(line, &self.ready) => {
                self.login.verdict = "pass";
                self.login.seconds = Some(at.saturating_duration_since(self.started).as_secs_f64());
                self.start_probe(0);
            }
            State::Running { index, sent, begun } => {
                if !begun {
                    if whole && contains(line, &self.begin) {
                        self.state = State::Running { index, sent, begun: true };
                    }
                    return;
                }
                if let Some(status) = whole.then(|| self.end_status(line)).flatten() {
                    self.finish_probe(index, sent.unwrap_or(at), status, at);
                    return;
                }
                self.capture(index, line, whole);
            }
            _ => {}
        }
    }

    fn end_status(&self, line: &[u8]) -> Option<i32> {
        let c = self.end.captures(line)?;
        std::str::from_utf8(c.get(1)?.as_bytes()).ok()?.parse().ok()
    }

    /// Keeps a line of the running probe's output (within the limit) and matches it.
    fn capture(&mut self, index: usize, line: &[u8], whole: bool) {
        let p = &self.probes.probes[index];
        if let Some((_, re)) = &p.output
            && re.is_match(line)
        {
            self.matched = true;
        }
        let r = &mut self.records[index];
        r.output_bytes += line.len() as u64 + u64::from(whole);
        if r.output_cut {
            return;
        }
        let text = printable(line);
        if r.output.len() + text.len() + 1 > OUTPUT_LIMIT {
            r.output_cut = true;
            return;
        }
        r.output.push_str(&text);
        if whole {
            r.output.push('\n');
        }
    }

    fn start_probe(&mut self, index: usize) {
        let p = &self.probes.probes[index];
        let nonce = self.nonce().to_owned();
        let line = format!(
            "printf '__mb_%s_begin\\n' {nonce}; ({}) </dev/null 2>&1; printf '\\n__mb_%s_end_%s\\n' {nonce} $?\r",
            p.run
        );
        self.matched = false;
        self.state = State::Running { index, sent: None, begun: false };
        self.send(Payload::Text(line.into_bytes()), format!("probe `{}`: {}", p.name, p.run));
    }

    fn finish_probe(&mut self, index: usize, sent: Instant, status: i32, at: Instant) {
        let p = &self.probes.probes[index];
        let r = &mut self.records[index];
        r.status = Some(status);
        r.seconds = Some(at.saturating_duration_since(sent).as_secs_f64());
        let mut wrong = Vec::new();
        if let Some(want) = p.status
            && want != status
        {
            wrong.push(format!("exited with status {status}, not {want}"));
        }
        if let Some((o, _)) = &p.output
            && !self.matched
        {
            wrong.push(format!("no line of its output matched /{o}/"));
        }
        if !wrong.is_empty() {
            let reason = format!("probe `{}` (`{}`) {}", p.name, p.run, wrong.join(", and "));
            let help = "its output is quoted; the service it asks about is not what the image promises".to_owned();
            self.fail(Some(index), reason, help);
            return;
        }
        r.verdict = "pass";
        if index + 1 < self.probes.probes.len() {
            self.start_probe(index + 1);
        } else {
            self.send(Payload::Text(b"exit\r".to_vec()), "exit".into());
            self.state = State::Done;
        }
    }
}

/// The records of a login and probes that did not run (the boot failed first).
pub fn not_run(probes: &Probes) -> (LoginRecord, Vec<ProbeRecord>) {
    let login = LoginRecord {
        user: probes.login.user.clone(),
        password_sent: false,
        verdict: "not-run",
        reason: None,
        seconds: None,
    };
    let records = probes
        .probes
        .iter()
        .map(|p| ProbeRecord {
            name: p.name.clone(),
            command: p.run.clone(),
            expected_status: p.status,
            expected_output: p.output.as_ref().map(|(o, _)| o.clone()),
            within_secs: p.within.as_secs(),
            verdict: "not-run",
            reason: None,
            status: None,
            output: String::new(),
            output_bytes: 0,
            output_cut: false,
            seconds: None,
        })
        .collect();
    (login, records)
}

/// OpenPAM's prompt (`Password:`) at the end of the unfinished line.
fn password_prompt(line: &[u8]) -> bool {
    let line = line.strip_suffix(b" ").unwrap_or(line);
    line.ends_with(b"Password:") || line.ends_with(b"password:")
}

fn contains(line: &[u8], needle: &[u8]) -> bool {
    line.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn probes(extra: &str) -> Probes {
        let config: Config = toml::from_str(&format!("[gate]\n{extra}\n")).unwrap();
        let loaded = Loaded::from_parts(config, "pipeline.toml".into(), ".".into());
        Probes::validate(&loaded).unwrap();
        Probes::compile(&loaded).unwrap().unwrap()
    }

    /// A guest for the exchange: what it was sent, and the clock.
    struct Guest<'p> {
        x: Exchange<'p>,
        now: Instant,
        sent: Vec<String>,
    }

    impl<'p> Guest<'p> {
        fn new(p: &'p Probes, password: bool, line: &[u8], at_prompt: bool) -> Guest<'p> {
            let now = Instant::now();
            Guest { x: Exchange::new(p, password, "0123456789abcdef", line, at_prompt, now), now, sent: Vec::new() }
        }

        /// The console prints `bytes`; returns what the exchange then sends.
        fn print(&mut self, bytes: &[u8]) -> Vec<String> {
            self.now += Duration::from_millis(10);
            self.x.feed(bytes, self.now);
            self.x.check();
            self.drain()
        }

        fn drain(&mut self) -> Vec<String> {
            let mut out = Vec::new();
            while let Action::Send { payload, .. } = self.x.next(self.now) {
                out.push(match payload {
                    Payload::Text(t) => String::from_utf8(t).unwrap(),
                    Payload::Password => "<password>".into(),
                });
            }
            self.sent.extend(out.clone());
            out
        }

        fn later(&mut self, d: Duration) -> Action {
            self.now += d;
            self.x.next(self.now)
        }

        /// Logs in without a password and answers the ping.
        fn log_in(&mut self) {
            assert_eq!(self.drain(), ["root\r"]);
            let sent = self.print(b"root\r\nLast login: Thu Jan  1 00:00:00 on ttyu0\r\nroot@clawdie:~ # ");
            assert_eq!(sent, ["printf '__mb_%s_ready\\n' 0123456789abcdef\r"]);
            let sent = self.print(b"printf '__mb_%s_ready\\n' 0123456789abcdef\r\n__mb_0123456789abcdef_ready\r\n");
            assert_eq!(sent.len(), 1, "{sent:?}");
            assert!(sent[0].starts_with("printf '__mb_%s_begin\\n' 0123456789abcdef; ("), "{sent:?}");
        }

        /// The shell runs the command: the echo, the framing, `output`, its status.
        fn answer(&mut self, output: &str, status: i32) -> Vec<String> {
            let echo = self.sent.last().unwrap().trim_end_matches('\r').to_owned();
            let text = format!(
                "{echo}\r\n__mb_0123456789abcdef_begin\r\n{output}\r\n__mb_0123456789abcdef_end_{status}\r\nroot@clawdie:~ # "
            );
            self.print(text.as_bytes())
        }
    }

    const ONE: &str = "probes = [{ name = 'daemon', run = 'service colibri_daemon status', status = 0, output = '^colibri_daemon is running as pid \\d+\\.', within_secs = 5 }]";

    #[test]
    fn a_login_without_password_then_a_passing_probe() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, false, b"clawdie login: ", true);
        g.log_in();
        assert_eq!(
            g.sent[2],
            "printf '__mb_%s_begin\\n' 0123456789abcdef; (service colibri_daemon status) </dev/null 2>&1; printf '\\n__mb_%s_end_%s\\n' 0123456789abcdef $?\r"
        );
        let sent = g.answer("colibri_daemon is running as pid 812.\r\n", 0);
        assert_eq!(sent, ["exit\r"]);
        assert_eq!(g.x.next(g.now), Action::Done);
        assert!(g.x.failure().is_none());
        let (login, records) = g.x.records();
        assert_eq!(login.verdict, "pass");
        assert!(!login.password_sent);
        assert_eq!(records[0].verdict, "pass");
        assert_eq!(records[0].status, Some(0));
        assert_eq!(records[0].output, "colibri_daemon is running as pid 812.");
    }

    #[test]
    fn the_login_prompt_may_come_later() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, false, b"", false);
        assert!(g.drain().is_empty());
        // getty's banner, then its prompt split across reads.
        assert!(g.print(b"\r\nFreeBSD/amd64 (clawdie) (ttyu0)\r\n\r\nlog").is_empty());
        assert_eq!(g.print(b"in: "), ["root\r"]);
        g.sent.clear();
    }

    #[test]
    fn a_password_is_sent_once_and_a_refusal_fails() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, true, b"login: ", true);
        assert_eq!(g.drain(), ["root\r"]);
        // The prompt still on the line is not the guest asking again.
        assert!(g.drain().is_empty());
        // The password waits until the console has been quiet for a moment.
        assert!(g.print(b"root\r\nPassword:").is_empty());
        // The rest of the same prompt, in another read, is not a second prompt.
        assert!(g.print(b" ").is_empty());
        assert!(matches!(g.later(Duration::from_millis(100)), Action::Wait(_)));
        assert!(matches!(g.later(Duration::from_millis(250)), Action::Send { payload: Payload::Password, .. }));
        assert!(g.x.failure().is_none());
        assert!(g.print(b"\r\nLogin incorrect\r\n").is_empty());
        let f = g.x.failure().unwrap();
        assert_eq!(f.reason, "the guest refused the login as `root`: Login incorrect");
        assert!(f.probe.is_none() && f.help.contains("gate.login.password_file"));
        assert_eq!(g.x.records().0.verdict, "fail");
        assert_eq!(g.x.records().1[0].verdict, "not-run");

        // A second `Password:` is a refusal too, and so is getty's prompt again.
        let mut g = Guest::new(&p, true, b"login: ", true);
        g.drain();
        g.print(b"root\r\nPassword:");
        g.later(PASSWORD_QUIET);
        g.print(b"\r\nPassword:");
        assert!(g.x.failure().unwrap().reason.contains("the password was asked for again"));
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.drain();
        g.print(b"root\r\n\r\nclawdie login: ");
        assert!(g.x.failure().unwrap().reason.contains("the login prompt came back"));
    }

    #[test]
    fn a_password_prompt_without_a_password_file_fails() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.drain();
        g.print(b"root\r\nPassword:");
        let f = g.x.failure().unwrap();
        assert!(f.reason.contains("asks `root` for a password, and gate.login.password_file is unset"), "{f:?}");
    }

    #[test]
    fn a_wrong_status_or_missing_output_fails_with_the_output() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.log_in();
        g.answer("colibri_daemon is not running.", 1);
        let f = g.x.failure().unwrap();
        assert_eq!(f.probe, Some(0));
        assert_eq!(
            f.reason,
            "probe `daemon` (`service colibri_daemon status`) exited with status 1, not 0, and no line of its output matched /^colibri_daemon is running as pid \\d+\\./"
        );
        let r = &g.x.records().1[0];
        assert_eq!((r.verdict, r.status, r.output.as_str()), ("fail", Some(1), "colibri_daemon is not running."));

        // The right status, the wrong words.
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.log_in();
        g.answer("colibri_daemon is running as pid soon", 0);
        assert!(
            g.x.failure()
                .unwrap()
                .reason
                .ends_with("no line of its output matched /^colibri_daemon is running as pid \\d+\\./")
        );
    }

    #[test]
    fn the_echo_and_other_nonces_cannot_answer() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.log_in();
        let echo = g.sent.last().unwrap().clone();
        // The echoed command, a forged marker and one with another nonce: no answer.
        let forged = format!("{echo}\n__mb_0123456789abcdef_end_0 (before the begin)\n__mb_ffffffffffffffff_begin\n");
        assert!(g.print(forged.as_bytes()).is_empty());
        assert!(!g.x.is_done());
        assert!(g.print(b"__mb_0123456789abcdef_begin\nx\n__mb_ffffffffffffffff_end_0\n").is_empty());
        assert!(!g.x.is_done());
        assert_eq!(g.print(b"colibri_daemon is running as pid 9.\n__mb_0123456789abcdef_end_0\n"), ["exit\r"]);
        assert!(g.x.failure().is_none());
        // Only what came between the markers is its output.
        assert_eq!(g.x.records().1[0].output, "x\n__mb_ffffffffffffffff_end_0\ncolibri_daemon is running as pid 9.");
    }

    #[test]
    fn probes_and_the_login_time_out() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.log_in();
        let sent = g.now;
        g.print(b"__mb_0123456789abcdef_begin\r\nworking...\r\n");
        assert_eq!(g.later(Duration::from_secs(4)), Action::Wait(sent + Duration::from_secs(5)));
        assert_eq!(g.later(Duration::from_secs(2)), Action::Done);
        let f = g.x.failure().unwrap();
        assert_eq!(f.reason, "probe `daemon` (`service colibri_daemon status`) did not finish within 5s");
        assert_eq!(g.x.records().1[0].output, "working...");

        let p = probes(&format!("{ONE}\nlogin = {{ within_secs = 3 }}"));
        let mut g = Guest::new(&p, false, b"", false);
        assert!(matches!(g.later(Duration::from_secs(2)), Action::Wait(_)));
        assert_eq!(g.later(Duration::from_secs(2)), Action::Done);
        assert_eq!(
            g.x.failure().unwrap().reason,
            "the login prompt did not appear within 3s after the last marker (gate.login.within_secs)"
        );
    }

    #[test]
    fn a_prompt_hidden_by_a_syslog_line_is_found_by_a_ping() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.drain();
        // syslogd writes root's login onto the prompt's line, in the same read.
        let hidden = b"root\r\nroot@clawdie:~ # Jan  1 00:00:09 clawdie login[901]: ROOT LOGIN (root) ON ttyu0\r\n";
        assert!(g.print(hidden).is_empty());
        assert!(matches!(g.later(Duration::from_secs(4)), Action::Wait(_)));
        let Action::Send { payload: Payload::Text(ping), .. } = g.later(Duration::from_secs(1)) else { panic!() };
        assert!(String::from_utf8(ping).unwrap().contains("__mb_%s_ready"));

        // A login that only paused (busybox waits 3 s before `Login incorrect`) is
        // still refused when it speaks.
        let mut g = Guest::new(&p, true, b"login: ", true);
        g.drain();
        g.print(b"root\r\nPassword:");
        g.later(PASSWORD_QUIET);
        g.print(b"\r\n");
        g.later(SHELL_QUIET);
        g.print(b"Login incorrect\r\n");
        assert!(g.x.failure().unwrap().reason.ends_with("Login incorrect"));
    }

    #[test]
    fn the_shell_is_pinged_until_it_answers() {
        let p = probes(ONE);
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.drain();
        // resizewin asks for the cursor position and is answered; then the prompt.
        assert_eq!(g.print(b"root\r\n\x1b7\x1b[r\x1b[999;999H\x1b[6n\x1b8"), ["\x1b[24;80R"]);
        assert_eq!(g.print(b"root@clawdie:~ # ").len(), 1);
        // The ping was thrown away: another one after a while, not before.
        assert!(matches!(g.later(Duration::from_secs(1)), Action::Wait(_)));
        let Action::Send { payload: Payload::Text(ping), .. } = g.later(Duration::from_secs(2)) else { panic!() };
        assert!(String::from_utf8(ping).unwrap().contains("__mb_%s_ready"));
    }

    #[test]
    fn output_is_kept_up_to_its_limit_and_said_to_be_cut() {
        let p = probes("probes = [{ run = 'yes', output = 'never', within_secs = 5 }]");
        let mut g = Guest::new(&p, false, b"login: ", true);
        g.log_in();
        g.print(b"__mb_0123456789abcdef_begin\n");
        let line = vec![b'y'; 1000];
        for _ in 0..100 {
            g.print(&line);
            g.print(b"\n");
        }
        // An endless line is taken in pieces too.
        g.print(&vec![b'z'; 3 * MAX_LINE]);
        g.print(b"\n__mb_0123456789abcdef_end_0\n");
        let r = &g.x.records().1[0];
        assert!(r.output_cut && r.output.len() <= OUTPUT_LIMIT, "{}", r.output.len());
        assert_eq!(r.output_bytes, 100 * 1001 + 3 * MAX_LINE as u64 + 1);
        assert_eq!(g.x.failure().unwrap().reason, "probe `yes` (`yes`) no line of its output matched /never/");
    }

    #[test]
    fn bad_probe_settings_are_refused() {
        let refused = |extra: &str| {
            let config: Config = toml::from_str(&format!("[gate]\n{extra}\n")).unwrap();
            Probes::validate(&Loaded::from_parts(config, "pipeline.toml".into(), ".".into())).is_err()
        };
        assert!(refused("probes = [{ run = 'true', within_secs = 5 }]"));
        assert!(refused("probes = [{ run = '', status = 0, within_secs = 5 }]"));
        assert!(refused("probes = [{ run = \"a\\nb\", status = 0, within_secs = 5 }]"));
        assert!(refused("probes = [{ run = 'true', status = 0, within_secs = 0 }]"));
        assert!(refused("probes = [{ run = 'true', status = 256, within_secs = 5 }]"));
        assert!(refused("probes = [{ run = 'true', output = '(', within_secs = 5 }]"));
        assert!(refused(
            "probes = [{ run = 'true', status = 0, within_secs = 5 }, { run = 'true', status = 1, within_secs = 5 }]"
        ));
        assert!(refused("login = { user = 'root; reboot' }"));
        assert!(refused("login = { prompt = '' }"));
        // No probes: no login either.
        let config: Config = toml::from_str("[gate]\nprobes = []\n").unwrap();
        assert!(Probes::compile(&Loaded::from_parts(config, "p".into(), ".".into())).unwrap().is_none());
    }
}
