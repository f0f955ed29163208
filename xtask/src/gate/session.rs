//! One gate run: boots the image (again after an infrastructure error, as often as
//! `gate.retries` allows), watches the console until the verdict (after the last
//! marker: the settle period, the probes' exchange and the heartbeat), tears everything
//! down on every path, and writes the results.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::backend::{Ending, Role, describe};
use super::probe::{self, Action, Exchange, Payload};
use super::results::{
    self, Attempt, Clock, ConsoleFile, Decision, DecisionKind, HeartbeatRecord, MarkerResult, Verdict,
};
use super::scan::{Found, Hit, Scanner};
use super::{GateOutputs, GatePlan, shown};
use crate::failure::{self, Failure};
use crate::proc::{self, Console, ConsoleEvent};
use crate::stage::{Cx, StageName};

/// The longest the watcher sleeps before looking at the clock and for Ctrl-C.
const TICK: Duration = Duration::from_millis(100);
/// Bytes taken from the queue before the unfinished line is searched again.
const BATCH: usize = 1 << 20;
/// After the VM exits, how long to wait for the rest of its console.
const DRAIN: Duration = Duration::from_millis(500);
/// Console lines quoted in an error message.
const QUOTED_LINES: usize = 8;
/// How long typing into the console may wait for room in its input pipe.
const SEND_WAIT: Duration = Duration::from_secs(5);

/// Runs the gate and returns its outputs on a pass; a failure of the image is an error
/// of class product (exit 1), an infrastructure error of class infrastructure (exit 2).
pub fn run(cx: &mut Cx, plan: GatePlan) -> Result<GateOutputs> {
    // A result that cannot be written is not the image's fault either.
    let (dir, attempts, json, junit) = boot_and_record(cx, &plan).map_err(super::infrastructure)?;
    let last = attempts.last().context("no boot attempt was made").map_err(super::infrastructure)?;
    for problem in &last.cleanup_problems {
        cx.say(format!("warning: cleaning up after the boot: {problem}"));
    }
    let console = dir.join(&last.console);
    match last.verdict {
        Verdict::Pass => {
            cx.say(format!("pass: {}", last.reason));
            Ok(GateOutputs {
                verdict: "pass".into(),
                result: cx.run.rel(&json),
                junit: cx.run.rel(&junit),
                console: cx.run.rel(&console),
                backend: plan.vm.backend.as_str().into(),
                image: plan.vm.image.clone(),
                decided_by: last.decided_by.as_ref().and_then(|d| d.name.clone()).unwrap_or_default(),
                seconds: last.decided_by.as_ref().map_or(last.seconds, |d| d.at_secs),
                attempts: attempts.len() as u32,
            })
        }
        Verdict::Fail => {
            cx.say(format!("fail: {}", last.reason));
            let message = format!("the image failed the boot gate: {}", report(last, &console, &json, &junit, None));
            Err(boot_failure(message, last).product().into())
        }
        Verdict::Error => {
            cx.say(format!("error: {}", last.reason));
            let retried = format!("after {} attempt(s) (gate.retries = {})", attempts.len(), plan.timing.retries);
            let message = format!(
                "the boot gate could not judge the image (an infrastructure error, not the image's fault): {}",
                report(last, &console, &json, &junit, Some(&retried))
            );
            Err(boot_failure(message, last).infrastructure().into())
        }
        Verdict::Interrupted => Err(proc::Interrupted(proc::interrupted().unwrap_or(libc::SIGINT)).into()),
    }
}

/// Boots until there is a verdict (retrying infrastructure errors) and writes the
/// results: the stage directory, the attempts, result.json and junit.xml.
fn boot_and_record(cx: &Cx, plan: &GatePlan) -> Result<(Utf8PathBuf, Vec<Attempt>, Utf8PathBuf, Utf8PathBuf)> {
    let dir = cx.stage_dir(StageName::Gate)?;
    clear_old_results(&dir);
    let tries = 1 + plan.timing.retries;
    let mut attempts: Vec<Attempt> = Vec::new();
    loop {
        let number = attempts.len() as u32 + 1;
        let what = match &plan.vm.image {
            Some(image) => format!("booting {image} with {}", plan.vm.backend.as_str()),
            None => format!("starting the {} console", plan.vm.backend.as_str()),
        };
        let of = if number > 1 { format!(" (attempt {number} of {tries})") } else { String::new() };
        cx.say(format!("{what}{of}"));
        let mut attempt = Watch::new(cx, plan, &dir)?.attempt(number)?;
        let again = attempt.verdict == Verdict::Error && number < tries && proc::interrupted().is_none();
        if again {
            let kept = format!("console-attempt-{number}.log");
            std::fs::rename(dir.join("console.log"), dir.join(&kept))
                .with_context(|| format!("cannot keep the console of attempt {number} as {kept}"))?;
            attempt.console = kept.into();
            cx.say(format!("infrastructure error: {}; trying again", attempt.reason));
        }
        attempts.push(attempt);
        if !again {
            break;
        }
    }
    let (json, junit) = results::write(&dir, &attempts, plan.vm.backend.as_str(), plan.vm.image.as_deref())?;
    Ok((dir, attempts, json, junit))
}

/// The body of the error message: the reason, the deciding console line, the markers,
/// where the console and results are, and what to do.
fn report(a: &Attempt, console: &Utf8Path, json: &Utf8Path, junit: &Utf8Path, retried: Option<&str>) -> String {
    let mut out = a.reason.clone();
    let line_number = a.decided_by.as_ref().and_then(|d| d.line_number);
    let failed_probe = match a.decided_by.as_ref().map(|d| (d.kind, d.name.as_ref())) {
        Some((DecisionKind::Probe, Some(name))) => a.probes.iter().find(|p| p.name == *name),
        _ => None,
    };
    if let Some(p) = failed_probe {
        out.push_str(&format!("\n  $ {}", p.command));
        let lines: Vec<&str> = p.output.lines().collect();
        for line in lines.iter().take(QUOTED_LINES) {
            out.push_str(&format!("\n  | {line}"));
        }
        if lines.len() > QUOTED_LINES || p.output_cut {
            out.push_str(&format!(
                "\n  | [{} bytes of output in all; result.json has {}]",
                p.output_bytes,
                if p.output_cut { format!("the first {} KiB", probe::OUTPUT_LIMIT / 1024) } else { "all of it".into() }
            ));
        }
        if let Some(status) = p.status {
            out.push_str(&format!("\n  [exit status {status}]"));
        }
    } else if let Some(line) = a.decided_by.as_ref().and_then(|d| d.line.as_ref()) {
        out.push_str(&format!("\n  | {line}"));
    } else if !a.stderr.is_empty() && a.verdict != Verdict::Fail {
        for line in a.stderr.lines().filter(|l| !l.trim().is_empty()) {
            out.push_str(&format!("\n  | {line}"));
        }
    } else if a.verdict == Verdict::Fail {
        out.push_str("\n  the console's last lines:");
        for line in a.tail.iter().rev().take(QUOTED_LINES).rev() {
            out.push_str(&format!("\n  | {line}"));
        }
    }
    let seen: Vec<String> =
        a.markers.iter().filter_map(|m| m.seen_at_secs.map(|t| format!("`{}` at {t:.1}s", m.name))).collect();
    let missing: Vec<String> =
        a.markers.iter().filter(|m| m.seen_at_secs.is_none()).map(|m| format!("`{}`", m.name)).collect();
    if a.verdict == Verdict::Fail || !seen.is_empty() {
        out.push_str(&format!("\n  markers: {} of {} seen", seen.len(), a.markers.len()));
        if !seen.is_empty() {
            out.push_str(&format!(" ({})", seen.join(", ")));
        }
        if !missing.is_empty() {
            out.push_str(&format!("; missing {}", missing.join(", ")));
        }
    }
    if let Some(retried) = retried {
        out.push_str(&format!("\n  {retried}"));
    }
    match line_number {
        Some(n) => out.push_str(&format!("\n  console: {} (line {n})", shown(console))),
        None => out.push_str(&format!("\n  console: {}", shown(console))),
    }
    out.push_str(&format!("\n  results: {}, {}", shown(json), shown(junit)));
    out
}

/// A failure of the boot (`report`'s text), with the attempt's help lines.
fn boot_failure(message: String, a: &Attempt) -> Failure {
    a.help.iter().fold(Failure::new(message), |f, line| f.help(line.clone()))
}

/// Removes the results of an earlier gate in this run directory, so none is mistaken
/// for this one's.
fn clear_old_results(dir: &Utf8Path) {
    crate::fsx::remove_stale_temps(dir);
    let Ok(entries) = dir.read_dir_utf8() else { return };
    for entry in entries.flatten() {
        if entry.file_name().starts_with("console-attempt-") || entry.file_name() == "pf-allow.conf" {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// How a boot ended.
struct Outcome {
    verdict: Verdict,
    reason: String,
    help: Vec<String>,
    decision: Option<Decision>,
    decided_at: Instant,
}

/// What watching one console process led to.
enum Watched {
    /// The loader finished; boot the VM.
    Next,
    Done(Box<Outcome>),
}

/// After the last marker: what still has to happen before the verdict.
struct After {
    /// The end of the settle period.
    until: Instant,
    /// The last marker.
    last: Hit,
    /// The last heartbeat (the last marker, before the first).
    beat: Instant,
    beats: u64,
    longest_gap: Duration,
}

/// One boot attempt: the console, the scanner and what has been seen so far.
struct Watch<'a> {
    cx: &'a Cx<'a>,
    plan: &'a GatePlan,
    dir: &'a Utf8Path,
    clock: Clock,
    scanner: Scanner<'a>,
    record: ConsoleFile,
    /// When each marker appeared.
    seen: Vec<Option<Instant>>,
    /// The console line each marker appeared on.
    seen_lines: Vec<Option<u64>>,
    /// Once the last marker is seen.
    after: Option<After>,
    /// The probes' login and commands, from the last marker on.
    exchange: Option<Exchange<'a>>,
    /// When the exchange wants to be asked again.
    exchange_wake: Option<Instant>,
    /// The login password (read when the boot starts; wiped when dropped).
    password: Option<pkgrepo::key::SecretBytes>,
    /// This attempt's nonce for the probes' markers.
    nonce: String,
    stderr: Vec<u8>,
    pids: Vec<u32>,
    commands: Vec<crate::proc::CmdLine>,
    exit: Option<String>,
    gone_at: Option<Instant>,
    cleanup_problems: Vec<String>,
    /// Console bytes before the current console process started.
    phase_start: u64,
}

impl<'a> Watch<'a> {
    fn new(cx: &'a Cx<'a>, plan: &'a GatePlan, dir: &'a Utf8Path) -> Result<Watch<'a>> {
        let clock = Clock::start();
        Ok(Watch {
            cx,
            plan,
            dir,
            clock,
            scanner: Scanner::new(&plan.checks),
            record: ConsoleFile::create(&dir.join("console.log"), clock)?,
            seen: vec![None; plan.checks.markers.len()],
            seen_lines: vec![None; plan.checks.markers.len()],
            after: None,
            exchange: None,
            exchange_wake: None,
            password: None,
            nonce: String::new(),
            stderr: Vec::new(),
            pids: Vec::new(),
            commands: Vec::new(),
            exit: None,
            gone_at: None,
            cleanup_problems: Vec::new(),
            phase_start: 0,
        })
    }

    fn attempt(mut self, number: u32) -> Result<Attempt> {
        let outcome = self.boot();
        self.finish(number, outcome)
    }

    /// Everything set up is torn down again before this returns, whatever happened.
    fn boot(&mut self) -> Outcome {
        if let Some(sig) = proc::interrupted() {
            return self.interrupted(sig);
        }
        if let Err((message, help)) = self.plan.vm.preflight() {
            return self.infra(message, help);
        }
        if let Some(probes) = &self.plan.probes {
            match probe::nonce() {
                Ok(nonce) => self.nonce = nonce,
                Err(e) => {
                    return self.infra_error(crate::ui::render_message(&e), &e, "this machine has no random source");
                }
            }
            if let Some(file) = &probes.login.password_file {
                match probe::read_password(file) {
                    Ok(password) => self.password = Some(password),
                    Err(e) => {
                        return self.infra_error(
                            crate::ui::render_message(&e),
                            &e,
                            "fix gate.login.password_file in pipeline.toml",
                        );
                    }
                }
            }
        }
        // The VM is destroyed before (one left by an earlier run) and after, even when a
        // panic unwinds through here.
        let vm = match self.plan.vm.claim(&self.cx.log) {
            Ok(vm) => vm,
            Err(e) => {
                return self.infra_error(
                    crate::ui::render_message(&e),
                    &e,
                    "install it, or set its path in [tools] of pipeline.toml",
                );
            }
        };
        let outcome = match &self.plan.network {
            None => self.phases(None),
            Some(net) => match net.open(self.dir, &self.cx.log, self.cx.ui) {
                Err(_) if proc::interrupted().is_some() => self.interrupted(proc::interrupted().unwrap_or(libc::SIGINT)),
                Err(e) => self.infra_error(
                    crate::ui::render_message(&e),
                    &e,
                    &format!(
                        "check that the bridge {} exists, and that pf is enabled with the anchor referenced by the main ruleset ([gate.bhyve])",
                        net.bridge()
                    ),
                ),
                Ok(mut net) => {
                    let tap = net.tap().to_owned();
                    self.cx.say(format!("guest network open: {tap} on the bridge, pf rules loaded"));
                    let outcome = self.phases(Some(&tap));
                    self.cleanup_problems.extend(net.close());
                    outcome
                }
            },
        };
        self.cleanup_problems.extend(vm.release());
        outcome
    }

    /// Runs the console processes in turn until the verdict.
    fn phases(&mut self, tap: Option<&str>) -> Outcome {
        for phase in self.plan.vm.phases(tap) {
            self.phase_start = self.record.bytes;
            // The probes type into the VM's console; nothing else needs its keyboard.
            let input = self.plan.probes.is_some() && phase.role == Role::Vm;
            let mut console = match phase.cmd.console(&self.cx.log, self.plan.timing.grace, input) {
                Ok(c) => c,
                Err(e) => {
                    if let Some(sig) = proc::interrupted() {
                        return self.interrupted(sig);
                    }
                    return self.infra_error(
                        format!("cannot start the console: {}", crate::ui::render_message(&e)),
                        &e,
                        "check the program and its path in [tools] of pipeline.toml",
                    );
                }
            };
            self.pids.push(console.pid());
            self.commands.push(phase.cmd.clone());
            let watched = self.watch(&mut console, phase.role);
            let stopped = console.stop();
            if stopped.terminated {
                let how = if stopped.killed { "SIGTERM was not enough; killed" } else { "stopped with SIGTERM" };
                self.cx.note(format!("[console process {} {how}]", console.pid()));
            }
            for event in stopped.late {
                match event {
                    ConsoleEvent::Bytes { at, bytes } => self.record.push(&bytes, at, &self.cx.log, self.cx.ui),
                    ConsoleEvent::Stderr(bytes) => self.take_stderr(&bytes),
                    _ => {}
                }
            }
            self.gone_at = Some(stopped.gone_at);
            match watched {
                Watched::Next => continue,
                Watched::Done(outcome) => return *outcome,
            }
        }
        self.infra("the backend started no console".into(), "this is a bug in the gate".into())
    }

    /// Reads one console process until the verdict, or until it ends. Deadlines are
    /// judged by when bytes arrived, not when they were scanned: a marker that came in
    /// time counts even when a flood kept the scanner busy, and a flood cannot hold a
    /// deadline off.
    fn watch(&mut self, console: &mut Console, role: Role) -> Watched {
        let mut ended: Option<(ExitStatus, Instant)> = None;
        let mut closed = false;
        loop {
            if let Some(sig) = proc::interrupted() {
                return Watched::Done(Box::new(self.interrupted(sig)));
            }
            let now = Instant::now();
            if let Some((status, at)) = ended
                && (closed || now >= at + DRAIN)
            {
                return self.ended(role, status, at);
            }
            let mut wait = self.next_deadline().saturating_duration_since(now).min(TICK);
            if let Some((_, at)) = ended {
                wait = wait.min((at + DRAIN).saturating_duration_since(now));
            }
            let Some(first) = console.recv(wait) else {
                // Nothing is waiting: every byte that arrived has been judged.
                if let Some(outcome) = self.converse(console) {
                    return Watched::Done(Box::new(outcome));
                }
                if let Some(outcome) = self.deadline_passed(Instant::now()) {
                    return Watched::Done(Box::new(outcome));
                }
                continue;
            };
            let mut found = Vec::new();
            let mut batch = 0;
            let mut latest = None;
            let mut event = Some(first);
            while let Some(e) = event {
                match e {
                    ConsoleEvent::Bytes { at, bytes } => {
                        batch += bytes.len();
                        latest = Some(at);
                        self.record.push(&bytes, at, &self.cx.log, self.cx.ui);
                        self.scanner.push(&bytes, at, &mut found);
                        if let Some(x) = &mut self.exchange {
                            x.feed(&bytes, at);
                        }
                    }
                    ConsoleEvent::Stderr(bytes) => self.take_stderr(&bytes),
                    ConsoleEvent::Closed => closed = true,
                    ConsoleEvent::Exited(status) => {
                        if role == Role::Vm {
                            self.exit = Some(describe(status));
                        }
                        ended = Some((status, Instant::now()));
                    }
                }
                event = if batch < BATCH { console.try_recv() } else { None };
            }
            self.scanner.check(&mut found);
            for f in found {
                if let Some(outcome) = self.found(f) {
                    return Watched::Done(Box::new(outcome));
                }
            }
            if let Some(outcome) = self.converse(console) {
                return Watched::Done(Box::new(outcome));
            }
            if let Some(at) = latest
                && let Some(outcome) = self.deadline_passed(at)
            {
                return Watched::Done(Box::new(outcome));
            }
        }
    }

    fn take_stderr(&mut self, bytes: &[u8]) {
        self.cx.log.bytes(bytes);
        self.stderr.extend_from_slice(bytes);
        if self.stderr.len() > 4096 {
            self.stderr.drain(..self.stderr.len() - 2048);
        }
    }

    /// Where the markers stand: the next one's index and when its deadline starts.
    fn next_marker(&self) -> (usize, Instant) {
        let k = self.scanner.markers_seen();
        let since = k.checked_sub(1).and_then(|i| self.seen[i]).unwrap_or(self.clock.t0);
        (k, since)
    }

    fn next_deadline(&self) -> Instant {
        if let Some(after) = &self.after {
            // The end of the settle period decides only once the probes have passed;
            // until then the exchange says when to look again.
            let mut next = self.probes_passed().then_some(after.until);
            if let Some(wake) = self.exchange_wake {
                next = Some(next.map_or(wake, |n| n.min(wake)));
            }
            if let Some(h) = &self.plan.checks.heartbeat {
                let beat = after.beat + h.max_gap;
                next = Some(next.map_or(beat, |n| n.min(beat)));
            }
            return next.unwrap_or_else(|| Instant::now() + TICK);
        }
        let (k, since) = self.next_marker();
        let marker = since + self.plan.checks.markers[k].within;
        marker.min(self.clock.t0 + self.plan.timing.timeout)
    }

    fn deadline_passed(&mut self, now: Instant) -> Option<Outcome> {
        if let Some(after) = &self.after {
            if let Some(h) = &self.plan.checks.heartbeat
                && now >= after.beat + h.max_gap
            {
                return Some(self.heartbeat_missed(after.beat + h.max_gap, None));
            }
            if now < after.until || !self.probes_passed() {
                return None;
            }
            let hit = after.last.clone();
            return Some(self.pass(&hit));
        }
        let (k, since) = self.next_marker();
        let marker = since + self.plan.checks.markers[k].within;
        let global = self.clock.t0 + self.plan.timing.timeout;
        if now < marker.min(global) {
            return None;
        }
        Some(self.missed(k, since, global <= marker, None))
    }

    /// Marker `k` did not appear in time: within its own deadline, or (`global`) the
    /// whole boot's. `late` is the marker arriving after all.
    fn missed(&mut self, k: usize, since: Instant, global: bool, late: Option<&Hit>) -> Outcome {
        let markers = &self.plan.checks.markers;
        let m = &markers[k];
        let n = markers.len();
        let (deadline, kind) = if global {
            (self.clock.t0 + self.plan.timing.timeout, DecisionKind::Timeout)
        } else {
            (since + m.within, DecisionKind::Deadline)
        };
        if self.record.bytes == 0 {
            let secs = self.clock.secs(deadline);
            return self.infra(
                format!("the console stayed silent for {secs:.0}s: the VM printed nothing at all"),
                "check that the VM starts and that its console is the serial port the gate reads (gate.bhyve.console, console=ttyS0); the stage log has the VM's own messages".into(),
            );
        }
        let what = format!("marker {} of {n}, `{}`", k + 1, m.name);
        let window = if global {
            format!("the whole boot's {}s (gate.timeout_secs)", self.plan.timing.timeout.as_secs())
        } else if k == 0 {
            format!("its {}s from the start (gate.markers.{k}.within_secs)", m.within.as_secs())
        } else {
            format!("its {}s after the previous marker (gate.markers.{k}.within_secs)", m.within.as_secs())
        };
        let reason = match late {
            Some(hit) => format!("{what}, appeared at {:.1}s, after {window}", self.clock.secs(hit.at)),
            None => format!("{what}, did not appear within {window}"),
        };
        let help = match late {
            Some(_) => format!("if this machine is just slow, raise gate.markers.{k}.within_secs or gate.timeout_secs"),
            None => format!(
                "the console's last lines show where the boot stopped; if this machine is just slow, raise gate.markers.{k}.within_secs or gate.timeout_secs"
            ),
        };
        let at = late.map_or(deadline, |h| h.at);
        let decision = self.decision(kind, Some(m.name.clone()), Some(m.regex.as_str().to_owned()), late, at);
        self.fail(reason, help, decision)
    }

    /// Whether the probes are over and passed (or there are none).
    fn probes_passed(&self) -> bool {
        self.exchange.as_ref().is_none_or(|x| x.is_done() && x.failure().is_none())
    }

    /// Lets the probes' exchange look at what arrived, and types what it asks for;
    /// `Some` when it decides.
    fn converse(&mut self, console: &mut Console) -> Option<Outcome> {
        self.exchange.as_mut()?.check();
        loop {
            let now = Instant::now();
            let action = self.exchange.as_mut()?.next(now);
            match action {
                Action::Send { payload, what } => {
                    self.cx.note(format!("[gate types into the console: {what}]"));
                    let deadline = now + SEND_WAIT;
                    let sent = match payload {
                        Payload::Text(bytes) => console.send(&bytes, deadline),
                        Payload::Password => match &self.password {
                            Some(p) => console.send(p.expose(), deadline).and_then(|()| console.send(b"\r", deadline)),
                            None => console.send(b"\r", deadline),
                        },
                    };
                    if let Err(e) = sent {
                        return Some(self.infra(
                            format!("cannot type into the console ({what}): {e}"),
                            "the VM program stopped reading its stdin; its own messages are in the stage log".into(),
                        ));
                    }
                }
                Action::Wait(at) => {
                    self.exchange_wake = Some(at);
                    return None;
                }
                Action::Done => {
                    self.exchange_wake = None;
                    let failure = self.exchange.as_ref()?.failure().cloned();
                    if let Some(f) = failure {
                        return Some(self.probe_failed(f, now));
                    }
                    let after = self.after.as_ref()?;
                    if now >= after.until {
                        let last = after.last.clone();
                        return Some(self.pass(&last));
                    }
                    return None;
                }
            }
        }
    }

    /// The login or a probe failed.
    fn probe_failed(&mut self, f: probe::Failure, at: Instant) -> Outcome {
        let (kind, name) = match f.probe {
            None => (DecisionKind::Login, None),
            Some(i) => (DecisionKind::Probe, self.plan.probes.as_ref().map(|p| p.probes[i].name.clone())),
        };
        let decision = self.decision(kind, name, None, None, at);
        self.fail(f.reason, f.help, decision)
    }

    /// The heartbeat stopped for longer than its gap: at `at`, or (`late`) it came
    /// after the gap had passed.
    fn heartbeat_missed(&mut self, at: Instant, late: Option<&Hit>) -> Outcome {
        let Some(h) = &self.plan.checks.heartbeat else { unreachable!("only called with a heartbeat") };
        let since = self.after.as_ref().map_or(at, |a| a.beat);
        let reason = match late {
            Some(hit) => format!(
                "the heartbeat /{}/ came {:.1}s after the previous one, more than its {}s (gate.heartbeat.max_gap_secs)",
                h.pattern,
                hit.at.saturating_duration_since(since).as_secs_f64(),
                h.max_gap.as_secs()
            ),
            None => format!(
                "the heartbeat /{}/ stopped: nothing for {}s after {:.1}s (gate.heartbeat.max_gap_secs)",
                h.pattern,
                h.max_gap.as_secs(),
                self.clock.secs(since)
            ),
        };
        let pattern = Some(h.pattern.clone());
        let decision = self.decision(DecisionKind::Heartbeat, None, pattern, late, late.map_or(at, |l| l.at));
        self.fail(
            reason,
            "what prints the heartbeat stopped or hung: the console's last lines show what came instead".into(),
            decision,
        )
    }

    /// Every marker was seen: the settle period, the probes and the heartbeat begin.
    fn last_marker(&mut self, hit: Hit) -> Option<Outcome> {
        let settle = self.plan.timing.settle;
        if settle.is_zero() && self.plan.probes.is_none() {
            return Some(self.pass(&hit));
        }
        let mut doing = Vec::new();
        if let Some(probes) = &self.plan.probes {
            let n = probes.probes.len();
            doing.push(format!("logging in to run {n} probe{}", if n == 1 { "" } else { "s" }));
            let at_prompt = probes.login.login_prompt.is_match(hit.line.as_bytes());
            let line = self.scanner.current_line();
            self.exchange = Some(Exchange::new(probes, self.password.is_some(), &self.nonce, line, at_prompt, hit.at));
        }
        if !settle.is_zero() {
            doing.push(format!("watching {}s more for trouble", settle.as_secs()));
        }
        self.cx.say(format!("every marker seen; {}", doing.join(" and ")));
        self.after =
            Some(After { until: hit.at + settle, beat: hit.at, last: hit, beats: 0, longest_gap: Duration::ZERO });
        None
    }

    /// A finding of the scanner; `Some` when it decides.
    fn found(&mut self, found: Found) -> Option<Outcome> {
        // Anything that arrived after the settle period, with the probes passed, came
        // after the verdict.
        if let Some(after) = &self.after
            && hit_of(&found).at >= after.until
            && self.probes_passed()
        {
            let last = after.last.clone();
            return Some(self.pass(&last));
        }
        match found {
            Found::Marker { index, hit } => {
                let m = &self.plan.checks.markers[index];
                let since = index.checked_sub(1).and_then(|i| self.seen[i]).unwrap_or(self.clock.t0);
                let global = self.clock.t0 + self.plan.timing.timeout;
                if hit.at > since + m.within || hit.at > global {
                    let global = hit.at > global && global <= since + m.within;
                    return Some(self.missed(index, since, global, Some(&hit)));
                }
                self.seen[index] = Some(hit.at);
                self.seen_lines[index] = Some(hit.line_number);
                let n = self.plan.checks.markers.len();
                self.cx.say(format!("marker {}/{n} `{}` at {:.1}s", index + 1, m.name, self.clock.secs(hit.at)));
                if index + 1 == n {
                    return self.last_marker(hit);
                }
                None
            }
            Found::Heartbeat { hit } => {
                let h = self.plan.checks.heartbeat.as_ref()?;
                let after = self.after.as_mut()?;
                let gap = hit.at.saturating_duration_since(after.beat);
                if gap > h.max_gap {
                    return Some(self.heartbeat_missed(hit.at, Some(&hit)));
                }
                after.longest_gap = after.longest_gap.max(gap);
                after.beat = after.beat.max(hit.at);
                after.beats += 1;
                None
            }
            Found::Forbidden { index, hit } => {
                let f = &self.plan.checks.forbidden[index];
                let reason = format!(
                    "forbidden pattern `{}` (/{}/) appeared at {:.1}s, console line {}",
                    f.name,
                    f.pattern,
                    self.clock.secs(hit.at),
                    hit.line_number
                );
                let decision = self.decision(
                    DecisionKind::Forbidden,
                    Some(f.name.clone()),
                    Some(f.pattern.clone()),
                    Some(&hit),
                    hit.at,
                );
                Some(self.fail(reason, image_help(hit.line_number), decision))
            }
            Found::RestartLoop { count, first, hit } => {
                let Some(rule) = &self.plan.checks.restart else { return None };
                let reason = format!(
                    "a restart loop: /{}/ appeared {count} times within {:.1}s (from {:.1}s to {:.1}s; the rule is {} within {}s)",
                    rule.pattern,
                    hit.at.duration_since(first).as_secs_f64(),
                    self.clock.secs(first),
                    self.clock.secs(hit.at),
                    rule.count,
                    rule.window.as_secs()
                );
                let decision =
                    self.decision(DecisionKind::RestartLoop, None, Some(rule.pattern.clone()), Some(&hit), hit.at);
                Some(self.fail(reason, image_help(hit.line_number), decision))
            }
        }
    }

    /// The console process ended before the verdict.
    fn ended(&mut self, role: Role, status: ExitStatus, at: Instant) -> Watched {
        let (k, _) = self.next_marker();
        let n = self.plan.checks.markers.len();
        let console_seen = self.record.bytes > self.phase_start;
        let outcome = match self.plan.vm.judge_exit(role, status, console_seen) {
            Ending::Continue => return Watched::Next,
            Ending::Infra(message, help) => self.infra(message, help),
            Ending::Failure(what, detail) => match self.after.as_ref().map(|a| &a.last) {
                Some(last) => {
                    let after = at.saturating_duration_since(last.at).as_secs_f64();
                    let reason = format!(
                        "{what} {after:.1}s after the last marker, during the settle period (gate.settle_secs = {}; {detail})",
                        self.plan.timing.settle.as_secs()
                    );
                    let decision = self.decision(DecisionKind::SettleExit, None, None, None, at);
                    self.fail(reason, image_help_unlined(), decision)
                }
                None => {
                    let m = &self.plan.checks.markers[k];
                    let reason = format!("{what} before marker {} of {n}, `{}` ({detail})", k + 1, m.name);
                    let decision = self.decision(DecisionKind::Exit, Some(m.name.clone()), None, None, at);
                    self.fail(reason, image_help_unlined(), decision)
                }
            },
        };
        Watched::Done(Box::new(outcome))
    }

    fn decision(
        &self,
        kind: DecisionKind,
        name: Option<String>,
        pattern: Option<String>,
        hit: Option<&Hit>,
        at: Instant,
    ) -> Decision {
        Decision {
            kind,
            name,
            pattern,
            line_number: hit.map(|h| h.line_number),
            line: hit.map(|h| h.line.clone()),
            at_secs: self.clock.secs(at),
            at: self.clock.rfc3339(at),
            at_unix: self.clock.unix(at),
        }
    }

    fn pass(&mut self, last: &Hit) -> Outcome {
        let n = self.plan.checks.markers.len();
        let m = &self.plan.checks.markers[n - 1];
        let settle = self.plan.timing.settle;
        let mut also = Vec::new();
        if let Some(probes) = &self.plan.probes {
            let names: Vec<String> = probes.probes.iter().map(|p| format!("`{}`", p.name)).collect();
            also.push(format!("the probes passed ({})", names.join(", ")));
        }
        if let (Some(_), Some(after)) = (&self.plan.checks.heartbeat, &self.after) {
            also.push(format!("the heartbeat came {} times", after.beats));
        }
        if !settle.is_zero() {
            also.push(format!("nothing forbidden followed for {}s", settle.as_secs()));
        }
        let also = match also.len() {
            0 => String::new(),
            1 => format!(", and {}", also[0]),
            _ => {
                let last = also.pop().unwrap_or_default();
                format!(", {}, and {last}", also.join(", "))
            }
        };
        let reason = format!(
            "all {n} markers appeared in order (the last, `{}`, at {:.1}s){also}",
            m.name,
            self.clock.secs(last.at)
        );
        let decision = self.decision(
            DecisionKind::Marker,
            Some(m.name.clone()),
            Some(m.regex.as_str().to_owned()),
            Some(last),
            last.at,
        );
        Outcome {
            verdict: Verdict::Pass,
            reason,
            help: Vec::new(),
            decision: Some(decision),
            decided_at: Instant::now(),
        }
    }

    fn fail(&mut self, reason: String, help: String, decision: Decision) -> Outcome {
        Outcome {
            verdict: Verdict::Fail,
            reason,
            help: vec![help],
            decision: Some(decision),
            decided_at: Instant::now(),
        }
    }

    fn infra(&mut self, reason: String, help: String) -> Outcome {
        self.infra_lines(reason, vec![help])
    }

    /// An infrastructure error from an error: `reason` shows its messages; its own help
    /// (about its cause, such as a program that is missing) comes before `help`.
    fn infra_error(&mut self, reason: String, e: &anyhow::Error, help: &str) -> Outcome {
        let mut lines = failure::help_lines(e);
        if !lines.iter().any(|l| l == help) {
            lines.push(help.to_owned());
        }
        self.infra_lines(reason, lines)
    }

    fn infra_lines(&mut self, reason: String, help: Vec<String>) -> Outcome {
        let now = Instant::now();
        let decision = self.decision(DecisionKind::Infrastructure, None, None, None, now);
        Outcome { verdict: Verdict::Error, reason, help, decision: Some(decision), decided_at: now }
    }

    fn interrupted(&mut self, sig: i32) -> Outcome {
        let now = Instant::now();
        let decision = self.decision(DecisionKind::Interrupted, None, None, None, now);
        Outcome {
            verdict: Verdict::Interrupted,
            reason: format!("interrupted by {}", proc::signal_name(sig)),
            help: Vec::new(),
            decision: Some(decision),
            decided_at: now,
        }
    }

    /// Puts the console in place and describes the attempt.
    fn finish(self, number: u32, outcome: Outcome) -> Result<Attempt> {
        let (login, probes) = match (&self.exchange, &self.plan.probes) {
            (Some(x), _) => {
                let (login, probes) = x.records();
                (Some(login), probes)
            }
            (None, Some(p)) => {
                let (login, probes) = probe::not_run(p);
                (Some(login), probes)
            }
            (None, None) => (None, Vec::new()),
        };
        let heartbeat = self.plan.checks.heartbeat.as_ref().map(|h| HeartbeatRecord {
            pattern: h.pattern.clone(),
            max_gap_secs: h.max_gap.as_secs(),
            beats: self.after.as_ref().map_or(0, |a| a.beats),
            longest_gap_secs: self.after.as_ref().map(|a| {
                let end = a.beat.max(outcome.decided_at.min(a.beat + h.max_gap));
                a.longest_gap.max(end.saturating_duration_since(a.beat)).as_secs_f64()
            }),
        });
        let tail = self.record.tail(50);
        let bytes = self.record.bytes;
        let lines = self.record.lines + u64::from(self.record.has_partial());
        let clock = self.clock;
        let path = self.record.finish(&self.cx.log, self.cx.ui)?;
        let markers = self
            .plan
            .checks
            .markers
            .iter()
            .zip(self.seen.iter().zip(&self.seen_lines))
            .map(|(m, (seen, line))| MarkerResult {
                name: m.name.clone(),
                within_secs: m.within.as_secs(),
                seen_at_secs: seen.map(|t| clock.secs(t)),
                line_number: *line,
            })
            .collect();
        Ok(Attempt {
            attempt: number,
            verdict: outcome.verdict,
            reason: outcome.reason,
            help: outcome.help,
            decided_by: outcome.decision,
            started_at: clock.rfc3339(clock.t0),
            started_at_unix: clock.unix(clock.t0),
            decided_at_unix: clock.unix(outcome.decided_at),
            seconds: clock.secs(outcome.decided_at),
            console_gone_at_unix: self.gone_at.map(|t| clock.unix(t)),
            pids: self.pids,
            commands: self.commands,
            exit: self.exit,
            markers,
            login,
            probes,
            heartbeat,
            console: Utf8PathBuf::from(path.file_name().unwrap_or("console.log")),
            console_bytes: bytes,
            console_lines: lines,
            cleanup_problems: self.cleanup_problems,
            stderr: crate::proc::tail_lines(&self.stderr, 10).replace("  | ", ""),
            tail,
        })
    }
}

fn hit_of(found: &Found) -> &Hit {
    match found {
        Found::Marker { hit, .. }
        | Found::Forbidden { hit, .. }
        | Found::RestartLoop { hit, .. }
        | Found::Heartbeat { hit } => hit,
    }
}

fn image_help(line: u64) -> String {
    format!(
        "this is the image, not the machine (failures are not retried): read the console up to line {line} for what led to it"
    )
}

fn image_help_unlined() -> String {
    "this is the image, not the machine (failures are not retried): the console's last lines show where it stopped"
        .into()
}
