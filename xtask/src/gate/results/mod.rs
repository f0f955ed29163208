//! The gate's results in the run directory: the whole console with a time on every line
//! (`console.log`, [`console`]), the verdict as JSON (`result.json`) and as JUnit XML
//! (`junit.xml`, [`junit`]).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

mod console;
mod junit;
mod quota;

pub use console::{ConsoleFile, printable};
pub use junit::junit;
pub use quota::cut_line;

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
    /// Processes a console left running outside its group (a daemon it started with
    /// `setsid`), stopped after it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub strays: Vec<u32>,
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
    /// Whether console.log was cut at `gate.console_log_max_mib` (the gate judged all
    /// of the console all the same).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub console_cut: bool,
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

/// Writes result.json and junit.xml for the attempts (the last one decides), each under
/// [`FILE_LIMIT`]: what they quote of the console is cut until they fit ([`Quota`]).
pub fn write(
    dir: &Utf8Path,
    attempts: &[Attempt],
    backend: &str,
    image: Option<&Utf8Path>,
) -> Result<(Utf8PathBuf, Utf8PathBuf)> {
    let last = attempts.last().context("no boot attempt was made")?;
    let json = quota::fitted(|q| {
        let last = last.quoting(q);
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
            final_attempt: &last,
            attempts: attempts
                .iter()
                .map(|a| AttemptSummary {
                    attempt: a.attempt,
                    verdict: a.verdict,
                    reason: &a.reason,
                    console: &a.console,
                })
                .collect(),
        };
        let mut json = serde_json::to_vec_pretty(&result).context("cannot serialize the gate result")?;
        json.push(b'\n');
        Ok(json)
    })?;
    let json_path = dir.join("result.json");
    crate::fsx::write_atomic(&json_path, &json)?;
    let xml = quota::fitted(|q| Ok(junit(&last.quoting(q), attempts.len(), backend, image).into_bytes()))?;
    let junit_path = dir.join("junit.xml");
    crate::fsx::write_atomic(&junit_path, &xml)?;
    Ok((json_path, junit_path))
}
