//! The exchange: the login and the probes' commands as a state machine over the
//! console's bytes, fed and asked by the session (see the module above for its steps).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use regex::bytes::Regex;
use serde::Serialize;

use super::{MAX_LINE, OUTPUT_LIMIT, Probes};
use crate::gate::results::printable;
use crate::gate::scan::Escapes;

/// How often the shell is pinged until it answers: longer than resizewin's 2-second
/// wait for the terminal's answer, during which typed input is lost.
pub(super) const PING_EVERY: Duration = Duration::from_millis(2500);
/// How long the console must stay quiet after a password prompt before the password
/// is typed: a login that prints its prompt before it turns the terminal's echo off
/// (busybox's does) would otherwise show the password on the console.
pub(super) const PASSWORD_QUIET: Duration = Duration::from_millis(300);
/// How long the console must stay quiet after the login before the gate pings the
/// shell without having seen its prompt: syslogd may write `ROOT LOGIN ...` onto the
/// prompt's line in the same read, so the prompt never ends the unfinished line.
pub(super) const SHELL_QUIET: Duration = Duration::from_secs(5);
/// The answer to a cursor position request: a 24-line, 80-column terminal.
pub(super) const CURSOR_POSITION: &[u8] = b"\x1b[24;80R";

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
