//! The gate's results in the run directory: the whole console with a time on every line
//! (`console.log`), the verdict as JSON (`result.json`) and as JUnit XML (`junit.xml`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use crate::run::Log;
use crate::ui::Ui;

/// Lines of the console kept in memory for reports.
const TAIL_LINES: usize = 200;
/// Longest console line copied into the stage log (the console file has all of it).
const LOG_LINE: usize = 1000;
/// The most of one console line held in memory: a longer line goes to the file as it
/// comes, so a guest that never ends its line cannot make the gate grow.
const LINE_HELD: usize = 64 * 1024;

/// The clock of one boot: every time is reported as seconds since its start, and as
/// wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub t0: Instant,
    wall0: SystemTime,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { t0: Instant::now(), wall0: SystemTime::now() }
    }

    pub fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// Seconds since the Unix epoch, to the microsecond.
    pub fn unix(&self, at: Instant) -> f64 {
        let wall = self.wall0 + at.saturating_duration_since(self.t0);
        let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        (d.as_micros() as f64) / 1e6
    }

    pub fn rfc3339(&self, at: Instant) -> String {
        let wall = self.wall0 + at.saturating_duration_since(self.t0);
        let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        crate::run::rfc3339(d.as_secs() as i64, d.subsec_millis())
    }
}

/// The console as it arrives, written line by line with the time each line began, to a
/// temporary name that becomes `console.log` when the boot is over. Complete lines also
/// go to the stage log and the progress display.
pub struct ConsoleFile {
    path: Utf8PathBuf,
    tmp: Utf8PathBuf,
    out: BufWriter<File>,
    clock: Clock,
    /// The current line's bytes not yet in the file.
    line: Vec<u8>,
    line_at: Option<Instant>,
    /// The current line began in the file already (it was too long to hold); its
    /// start, as the stage log shows it.
    spilled: Option<String>,
    pub bytes: u64,
    pub lines: u64,
    tail: VecDeque<String>,
    error: Option<std::io::Error>,
}

impl ConsoleFile {
    pub fn create(path: &Utf8Path, clock: Clock) -> Result<ConsoleFile> {
        let tmp = crate::fsx::temp_beside(path);
        let file = File::create(&tmp).with_context(|| format!("cannot create {tmp}"))?;
        Ok(ConsoleFile {
            path: path.to_owned(),
            tmp,
            out: BufWriter::with_capacity(256 * 1024, file),
            clock,
            line: Vec::new(),
            line_at: None,
            spilled: None,
            bytes: 0,
            lines: 0,
            tail: VecDeque::new(),
            error: None,
        })
    }

    /// Whether a line has begun and not ended (a prompt, or a console cut short).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.spilled.is_some()
    }

    /// Takes bytes that arrived at `at`. The stage log gets the complete lines in one
    /// write, the display the last of them.
    pub fn push(&mut self, bytes: &[u8], at: Instant, log: &Log, ui: &Ui) {
        self.bytes += bytes.len() as u64;
        let mut mirror = String::new();
        let mut ended = false;
        let mut rest = bytes;
        while !rest.is_empty() {
            self.line_at.get_or_insert(at);
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.line.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    self.end_line(&mut mirror);
                    ended = true;
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    if self.line.len() > LINE_HELD {
                        self.spill();
                    }
                }
            }
        }
        let last = self.tail.back().filter(|_| ended).map(|l| &l[STAMP_LEN..]);
        show(&mirror, last, log, ui);
    }

    /// Writes what is held of an over-long line to the file (its time first, when it
    /// is the line's start), keeping its start for the stage log.
    fn spill(&mut self) {
        let line = std::mem::take(&mut self.line);
        let mut written = Ok(());
        if self.spilled.is_none() {
            let mut stamp = String::new();
            push_stamp(&mut stamp, self.clock, self.line_at.unwrap_or(self.clock.t0));
            written = self.out.write_all(stamp.as_bytes());
            self.spilled = Some(printable(&line[..line.len().min(4 * LOG_LINE)]).chars().take(LOG_LINE).collect());
        }
        let written = written.and_then(|()| self.out.write_all(&line));
        self.note_error(written);
        self.line = line;
        self.line.clear();
    }

    fn note_error(&mut self, written: std::io::Result<()>) {
        if let Err(e) = written
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }

    /// Writes the current line with its time, appends it to `mirror` (for the stage
    /// log) and to the tail. Every console line passes here: it allocates nothing in
    /// the common case (the tail's oldest entry is reused).
    fn end_line(&mut self, mirror: &mut String) {
        let at = self.line_at.take().unwrap_or(self.clock.t0);
        let mut line = std::mem::take(&mut self.line);
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut entry = match self.tail.len() {
            TAIL_LINES => self.tail.pop_front().unwrap_or_default(),
            _ => String::with_capacity(128),
        };
        entry.clear();
        push_stamp(&mut entry, self.clock, at);
        let spilled = self.spilled.take();
        let written = match spilled {
            Some(_) => Ok(()),
            None => self.out.write_all(entry.as_bytes()),
        };
        let written = written.and_then(|()| self.out.write_all(&line)).and_then(|()| self.out.write_all(b"\n"));
        self.note_error(written);
        self.lines += 1;
        match spilled {
            Some(start) => entry.push_str(&start),
            None => push_printable(&mut entry, &line, LOG_LINE),
        }
        mirror.push_str(&entry);
        mirror.push('\n');
        self.tail.push_back(entry);
        // The buffer is kept for the next line.
        self.line = line;
        self.line.clear();
    }

    /// The last `n` lines (with their times), the unfinished one included.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let mut lines: Vec<String> = self.tail.iter().skip(self.tail.len().saturating_sub(n)).cloned().collect();
        if self.has_partial() {
            let mut entry = String::new();
            push_stamp(&mut entry, self.clock, self.line_at.unwrap_or(self.clock.t0));
            match &self.spilled {
                Some(start) => entry.push_str(start),
                None => push_printable(&mut entry, &self.line, LOG_LINE),
            }
            lines.push(entry);
            if lines.len() > n {
                lines.remove(0);
            }
        }
        lines
    }

    /// Ends the unfinished line and puts the file in place as `console.log`.
    pub fn finish(mut self, log: &Log, ui: &Ui) -> Result<Utf8PathBuf> {
        if self.has_partial() {
            let mut mirror = String::new();
            self.end_line(&mut mirror);
            show(&mirror, self.tail.back().map(|l| &l[STAMP_LEN..]), log, ui);
        }
        if let Some(e) = self.error.take() {
            return Err(e).with_context(|| format!("cannot write the console to {}", self.tmp));
        }
        let file =
            self.out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", self.tmp))?;
        file.sync_all().with_context(|| format!("cannot sync {}", self.tmp))?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot rename {} to {}", self.tmp, self.path))?;
        Ok(self.path)
    }
}

/// Copies console lines to the stage log (one write) and the last one to the display.
fn show(mirror: &str, last: Option<&str>, log: &Log, ui: &Ui) {
    if !mirror.is_empty() {
        log.bytes(mirror.as_bytes());
    }
    if let Some(line) = last.filter(|l| !l.trim().is_empty()) {
        ui.stage_line(line);
    }
}

/// Length of the time that begins each console line: `[    12.345] `.
const STAMP_LEN: usize = 13;

/// Appends `[    12.345] ` (seconds since the boot began, to the millisecond).
fn push_stamp(out: &mut String, clock: Clock, at: Instant) {
    use std::fmt::Write as _;
    let ms = at.saturating_duration_since(clock.t0).as_millis();
    let _ = write!(out, "[{:>6}.{:03}] ", ms / 1000, ms % 1000);
}

/// Appends at most `max` characters of [`printable`]`(line)`; plain ASCII, the usual
/// console line, is copied as it is.
fn push_printable(out: &mut String, line: &[u8], max: usize) {
    if line.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t') {
        let line = &line[..line.len().min(max)];
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
    } else {
        out.extend(printable(line).chars().take(max));
    }
}

/// A console line as text that is safe on a terminal: escape sequences (which could
/// clear the operator's screen) and control characters other than tab are dropped.
pub fn printable(line: &[u8]) -> String {
    if line.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t') {
        return std::str::from_utf8(line).unwrap_or_default().to_owned();
    }
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // A control sequence: parameters and intermediates, then a final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // ESC, an intermediate byte, a final byte (character set selection).
                Some(' '..='/') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The verdict of one boot attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every marker in order, nothing forbidden.
    Pass,
    /// The image failed.
    Fail,
    /// An infrastructure error: the gate could not judge the image.
    Error,
    /// Stopped by Ctrl-C or a signal.
    Interrupted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Interrupted => "interrupted",
        }
    }
}

/// What kind of event decided a boot's verdict. Written into result.json and junit.xml
/// as its kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    /// The last marker appeared (and the settle period passed): a pass.
    Marker,
    /// A forbidden pattern appeared.
    Forbidden,
    /// The restart-loop rule fired.
    RestartLoop,
    /// A marker missed its own deadline.
    Deadline,
    /// The whole boot's timeout passed.
    Timeout,
    /// The VM ended before the last marker.
    Exit,
    /// The VM ended during the settle period after the last marker.
    SettleExit,
    /// The probes could not log in after the last marker.
    Login,
    /// A probe did not give what it must.
    Probe,
    /// The heartbeat stopped for longer than its gap.
    Heartbeat,
    /// The gate could not judge the image.
    Infrastructure,
    /// Ctrl-C or a signal stopped the gate.
    Interrupted,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Marker => "marker",
            DecisionKind::Forbidden => "forbidden",
            DecisionKind::RestartLoop => "restart-loop",
            DecisionKind::Deadline => "deadline",
            DecisionKind::Timeout => "timeout",
            DecisionKind::Exit => "exit",
            DecisionKind::SettleExit => "settle-exit",
            DecisionKind::Login => "login",
            DecisionKind::Probe => "probe",
            DecisionKind::Heartbeat => "heartbeat",
            DecisionKind::Infrastructure => "infrastructure",
            DecisionKind::Interrupted => "interrupted",
        }
    }

    /// Whether this kind means a marker never arrived (its JUnit case fails).
    pub fn is_missed_marker(self) -> bool {
        matches!(self, DecisionKind::Deadline | DecisionKind::Timeout | DecisionKind::Exit)
    }
}

impl std::fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What decided the verdict, and when.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub kind: DecisionKind,
    /// The marker or forbidden pattern's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its regular expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The console line (number and text up to the deciding byte).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// When the deciding byte arrived (or the deadline passed, or the VM exited):
    /// seconds since the start, RFC 3339, and Unix time.
    pub at_secs: f64,
    pub at: String,
    pub at_unix: f64,
}

/// A marker's result.
#[derive(Debug, Clone, Serialize)]
pub struct MarkerResult {
    pub name: String,
    pub within_secs: u64,
    /// Seconds since the start when it appeared; absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_at_secs: Option<f64>,
    /// The console line it appeared on (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_number: Option<u64>,
}

/// The heartbeat after the last marker, as result.json records it.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatRecord {
    pub pattern: String,
    pub max_gap_secs: u64,
    /// Beats seen after the last marker.
    pub beats: u64,
    /// The longest gap seen (from the last marker, between beats, to the verdict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_gap_secs: Option<f64>,
}

/// One boot attempt, as result.json records it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub verdict: Verdict,
    /// One sentence.
    pub reason: String,
    /// What to do about it, a line each (result.json has them as one string, a line each).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "lines")]
    pub help: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Decision>,
    pub started_at: String,
    pub started_at_unix: f64,
    /// When the verdict was in (before the teardown).
    pub decided_at_unix: f64,
    /// Seconds from the start to the verdict.
    pub seconds: f64,
    /// When the last console process was gone (reaped, its process group empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_gone_at_unix: Option<f64>,
    /// The console processes' ids (each led its own process group).
    pub pids: Vec<u32>,
    /// The commands that ran as the console, exactly.
    pub commands: Vec<crate::proc::CmdLine>,
    /// How the VM process ended, if it ended by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    pub markers: Vec<MarkerResult>,
    /// How the probes' login went (absent without probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<super::probe::LoginRecord>,
    /// Each probe: its command, what it must give, what it gave (output quoted, cut).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<super::probe::ProbeRecord>,
    /// The heartbeat: its pattern, beats seen after the last marker, the longest gap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatRecord>,
    /// The console file, relative to the stage directory.
    pub console: Utf8PathBuf,
    pub console_bytes: u64,
    pub console_lines: u64,
    /// What could not be cleaned up (VM, network) after the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cleanup_problems: Vec<String>,
    /// The VM program's stderr, last lines.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// The console's last lines, for the reports.
    #[serde(skip)]
    pub tail: Vec<String>,
}

/// result.json.
#[derive(Debug, Serialize)]
pub struct GateResult<'a> {
    pub schema: u32,
    pub verdict: Verdict,
    pub reason: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty", serialize_with = "lines")]
    pub help: &'a [String],
    pub backend: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<&'a Utf8Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<&'a Decision>,
    pub decided_at_unix: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_gone_at_unix: Option<f64>,
    pub seconds: f64,
    pub console: &'a Utf8Path,
    /// Every detail of the final attempt (the one that decided).
    pub final_attempt: &'a Attempt,
    /// Every attempt in order, the final one included.
    pub attempts: Vec<AttemptSummary<'a>>,
}

#[derive(Debug, Serialize)]
pub struct AttemptSummary<'a> {
    pub attempt: u32,
    pub verdict: Verdict,
    pub reason: &'a str,
    pub console: &'a Utf8Path,
}

/// Help lines as one JSON string, a line each.
fn lines<S: serde::Serializer>(lines: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&lines.join("\n"))
}

/// Writes result.json and junit.xml for the attempts (the last one decides).
pub fn write(
    dir: &Utf8Path,
    attempts: &[Attempt],
    backend: &str,
    image: Option<&Utf8Path>,
) -> Result<(Utf8PathBuf, Utf8PathBuf)> {
    let last = attempts.last().context("no boot attempt was made")?;
    let result = GateResult {
        schema: 1,
        verdict: last.verdict,
        reason: &last.reason,
        help: &last.help,
        backend,
        image,
        decided_by: last.decided_by.as_ref(),
        decided_at_unix: last.decided_at_unix,
        console_gone_at_unix: last.console_gone_at_unix,
        seconds: last.seconds,
        console: &last.console,
        final_attempt: last,
        attempts: attempts
            .iter()
            .map(|a| AttemptSummary { attempt: a.attempt, verdict: a.verdict, reason: &a.reason, console: &a.console })
            .collect(),
    };
    let json_path = dir.join("result.json");
    let mut json = serde_json::to_vec_pretty(&result).context("cannot serialize the gate result")?;
    json.push(b'\n');
    crate::fsx::write_atomic(&json_path, &json)?;
    let junit_path = dir.join("junit.xml");
    crate::fsx::write_atomic(&junit_path, junit(last, attempts.len(), backend, image).as_bytes())?;
    Ok((json_path, junit_path))
}

/// A JUnit report: one test case per marker, one for forbidden patterns, one for
/// restart loops, one for the guest staying up; infrastructure errors are `<error>`s.
pub fn junit(a: &Attempt, attempts: usize, backend: &str, image: Option<&Utf8Path>) -> String {
    struct Case {
        class: &'static str,
        name: String,
        time: f64,
        outcome: Outcome,
        /// The case's own output (a probe's), quoted in its `<system-out>`.
        out: String,
    }
    enum Outcome {
        Passed,
        Failed(String),
        Skipped(String),
        Error(String),
    }
    let kind = a.decided_by.as_ref().map(|d| d.kind);
    let kind_name = kind.map_or("", DecisionKind::as_str);
    let failed_marker = a.markers.iter().position(|m| m.seen_at_secs.is_none());
    let mut cases = Vec::new();
    let mut previous = 0.0;
    for (i, m) in a.markers.iter().enumerate() {
        let (time, outcome) = match m.seen_at_secs {
            Some(t) => (t - previous, Outcome::Passed),
            None if Some(i) == failed_marker
                && a.verdict == Verdict::Fail
                && kind.is_some_and(DecisionKind::is_missed_marker) =>
            {
                (0.0, Outcome::Failed(a.reason.clone()))
            }
            None => (0.0, Outcome::Skipped("not reached".into())),
        };
        if let Some(t) = m.seen_at_secs {
            previous = t;
        }
        cases.push(Case {
            class: "gate.markers",
            name: format!("{} {}", i + 1, m.name),
            time,
            outcome,
            out: String::new(),
        });
    }
    let judged = a.verdict == Verdict::Pass || a.verdict == Verdict::Fail;
    let check = |failed_kind: DecisionKind, name: &str| {
        let outcome = if kind == Some(failed_kind) && a.verdict == Verdict::Fail {
            Outcome::Failed(a.reason.clone())
        } else if judged {
            Outcome::Passed
        } else {
            Outcome::Skipped("not judged".into())
        };
        Case { class: "gate.console", name: name.into(), time: 0.0, outcome, out: String::new() }
    };
    cases.push(check(DecisionKind::Forbidden, "no forbidden pattern"));
    cases.push(check(DecisionKind::RestartLoop, "no restart loop"));
    cases.push(check(DecisionKind::SettleExit, "the guest stays up after the last marker"));
    if let Some(h) = &a.heartbeat {
        let mut case = check(DecisionKind::Heartbeat, &format!("the heartbeat /{}/ keeps coming", h.pattern));
        if a.markers.iter().any(|m| m.seen_at_secs.is_none()) {
            case.outcome = Outcome::Skipped("not reached".into());
        } else {
            let gap = h.longest_gap_secs.map_or("-".into(), |g| format!("{g:.1}s"));
            case.out = format!("{} beat(s) after the last marker; the longest gap {gap}", h.beats);
        }
        cases.push(case);
    }
    if let Some(login) = &a.login {
        let outcome = match login.verdict {
            "pass" => Outcome::Passed,
            "fail" => Outcome::Failed(login.reason.clone().unwrap_or_default()),
            _ => Outcome::Skipped("not reached".into()),
        };
        let name = format!("log in as {}", login.user);
        cases.push(Case {
            class: "gate.probes",
            name,
            time: login.seconds.unwrap_or(0.0),
            outcome,
            out: String::new(),
        });
    }
    for p in &a.probes {
        let outcome = match p.verdict {
            "pass" => Outcome::Passed,
            "fail" => Outcome::Failed(p.reason.clone().unwrap_or_default()),
            _ => Outcome::Skipped("not reached".into()),
        };
        let mut out = format!("$ {}\n{}", p.command, p.output);
        if p.output_cut {
            out.push_str(&format!(
                "\n[output cut: {} bytes in all, the first {} kept]",
                p.output_bytes,
                p.output.len()
            ));
        }
        if let Some(s) = p.status {
            out.push_str(&format!("\n[exit status {s}]"));
        }
        cases.push(Case { class: "gate.probes", name: p.name.clone(), time: p.seconds.unwrap_or(0.0), outcome, out });
    }
    match a.verdict {
        Verdict::Error => cases.push(Case {
            class: "gate",
            name: "the VM runs".into(),
            time: a.seconds,
            outcome: Outcome::Error(a.reason.clone()),
            out: String::new(),
        }),
        Verdict::Interrupted => cases.push(Case {
            class: "gate",
            name: "the gate runs to a verdict".into(),
            time: a.seconds,
            outcome: Outcome::Error(a.reason.clone()),
            out: String::new(),
        }),
        _ => {}
    }

    let count = |f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let failures = count(|o| matches!(o, Outcome::Failed(_)));
    let errors = count(|o| matches!(o, Outcome::Error(_)));
    let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"mother-build gate\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        cases.len(),
        a.seconds
    ));
    x.push_str(&format!(
        "  <testsuite name=\"gate\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\">\n",
        cases.len(),
        a.seconds,
        attr(&a.started_at)
    ));
    x.push_str("    <properties>\n");
    let mut props = vec![
        ("verdict", a.verdict.as_str().to_owned()),
        ("backend", backend.to_owned()),
        ("attempts", attempts.to_string()),
    ];
    if let Some(image) = image {
        props.push(("image", image.to_string()));
    }
    for (k, v) in props {
        x.push_str(&format!("      <property name=\"{k}\" value=\"{}\"/>\n", attr(&v)));
    }
    x.push_str("    </properties>\n");
    for c in &cases {
        let open = format!("    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"", c.class, attr(&c.name), c.time);
        let own =
            if c.out.is_empty() { String::new() } else { format!("      <system-out>{}</system-out>\n", text(&c.out)) };
        match &c.outcome {
            Outcome::Passed if own.is_empty() => x.push_str(&format!("{open}/>\n")),
            Outcome::Passed => x.push_str(&format!("{open}>\n{own}    </testcase>\n")),
            Outcome::Failed(msg) => x.push_str(&format!(
                "{open}>\n      <failure message=\"{}\" type=\"{kind_name}\">{}</failure>\n{own}    </testcase>\n",
                attr(msg),
                text(&failure_text(a))
            )),
            Outcome::Error(msg) => x.push_str(&format!(
                "{open}>\n      <error message=\"{}\" type=\"{kind_name}\">{}</error>\n    </testcase>\n",
                attr(msg),
                text(&failure_text(a))
            )),
            Outcome::Skipped(msg) => {
                x.push_str(&format!("{open}>\n      <skipped message=\"{}\"/>\n    </testcase>\n", attr(msg)))
            }
        }
    }
    x.push_str("    <system-out>");
    x.push_str(&text(&a.tail.join("\n")));
    x.push_str("</system-out>\n  </testsuite>\n</testsuites>\n");
    x
}

fn failure_text(a: &Attempt) -> String {
    let mut t = a.reason.clone();
    if let Some(d) = &a.decided_by
        && let (Some(n), Some(line)) = (d.line_number, &d.line)
    {
        t.push_str(&format!("\nconsole line {n}: {line}"));
    }
    for help in &a.help {
        t.push_str(&format!("\n{help}"));
    }
    t
}

/// Text that XML 1.0 can hold: control characters (other than tab and newline) and
/// invalid UTF-8 become U+FFFD.
fn xml_safe(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars()
        .map(|c| if (c < ' ' && c != '\t' && c != '\n') || c == '\u{fffe}' || c == '\u{ffff}' { '\u{fffd}' } else { c })
}

fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in xml_safe(s) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in xml_safe(s) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_drops_what_would_upset_a_terminal() {
        assert_eq!(printable(b"\x1b[0m\x1b[2J\x1b[01;01HBdsDxe: x\x07\r"), "BdsDxe: x");
        assert_eq!(printable(b"a\x1b(Bb\tc\xff"), "ab\tc\u{fffd}");
    }

    #[test]
    fn xml_escapes_what_it_must() {
        assert_eq!(attr("a<\"b\">&\n"), "a&lt;&quot;b&quot;&gt;&amp;&#10;");
        assert_eq!(text("x\x1b[0m]]> y"), "x\u{fffd}[0m]]&gt; y");
    }

    #[test]
    fn console_lines_carry_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("console.log")).unwrap();
        let clock = Clock::start();
        let mut c = ConsoleFile::create(&path, clock).unwrap();
        let ui = Ui::new(crate::ui::Mode::Plain, false, false);
        let log = Log::sink();
        c.push(b"one\r\ntw", clock.t0, &log, &ui);
        c.push(b"o\nlogin: ", clock.t0 + std::time::Duration::from_millis(1500), &log, &ui);
        assert_eq!(c.tail(2), ["[     0.000] two", "[     1.500] login: "]);
        c.finish(&log, &ui).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "[     0.000] one\n[     0.000] two\n[     1.500] login: \n");
    }

    #[test]
    fn a_line_that_never_ends_is_not_held_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("console.log")).unwrap();
        let clock = Clock::start();
        let mut c = ConsoleFile::create(&path, clock).unwrap();
        let ui = Ui::new(crate::ui::Mode::Plain, false, false);
        let log = Log::sink();
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            c.push(&block, clock.t0, &log, &ui);
            assert!(c.line.len() <= LINE_HELD, "{} bytes held", c.line.len());
        }
        assert!(c.has_partial());
        // The report shows its start, cut.
        assert_eq!(c.tail(1)[0], format!("[     0.000] {}", "x".repeat(LOG_LINE)));
        c.push(b"x\nnext\n", clock.t0, &log, &ui);
        c.finish(&log, &ui).unwrap();
        let text = std::fs::read(&path).unwrap();
        let mut want = b"[     0.000] ".to_vec();
        want.extend(std::iter::repeat_n(b'x', 64 * 64 * 1024 + 1));
        want.extend_from_slice(b"\n[     0.000] next\n");
        assert!(text == want, "the file holds the whole line, once, with one time");
    }
}
