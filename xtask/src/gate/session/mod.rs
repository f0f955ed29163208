//! One gate run: boots the image (again after an infrastructure error, as often as
//! `gate.retries` allows), watches the console until the verdict (after the last
//! marker: the settle period, the probes' exchange and the heartbeat), tears everything
//! down on every path, and writes the results.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::backend::{Role, describe};
use super::probe::{self, Action, Exchange, Payload};
use super::results::{self, Attempt, Clock, ConsoleFile, Decision, HeartbeatRecord, MarkerResult, Verdict};
use super::scan::{Hit, Scanner};
use super::{GateOutputs, GatePlan};
use crate::proc::{self, Console, ConsoleEvent};
use crate::stage::{Cx, StageName};

mod report;
mod verdict;

use report::{boot_failure, report};

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
            let mut produced = crate::fingerprint::Produced::default();
            for file in [&json, &junit, &console] {
                produced.add(cx.run.rel(file), file).map_err(super::infrastructure)?;
            }
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
                produced,
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
    /// The consoles' groups, as recorded in state.json before each ran.
    started: Vec<proc::GroupRecord>,
    /// Processes a console left outside its group, stopped after it.
    strays: Vec<u32>,
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
            record: ConsoleFile::create(&dir.join("console.log"), clock, plan.timing.console_log_max)?,
            seen: vec![None; plan.checks.markers.len()],
            seen_lines: vec![None; plan.checks.markers.len()],
            after: None,
            exchange: None,
            exchange_wake: None,
            password: None,
            nonce: String::new(),
            stderr: Vec::new(),
            pids: Vec::new(),
            started: Vec::new(),
            strays: Vec::new(),
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
            // Each console's group goes into state.json before its program runs: if this
            // process is killed, the next command stops what it left running.
            let (run, started) = (self.cx.run, &mut self.started);
            let mut record = |group: &proc::GroupRecord| {
                started.push(group.clone());
                run.record_processes(StageName::Gate, started)
            };
            let mut console = match phase.cmd.console(&self.cx.log, self.plan.timing.grace, input, &mut record) {
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
            if !stopped.strays.is_empty() {
                let pids: Vec<String> = stopped.strays.iter().map(u32::to_string).collect();
                self.cx.say(format!(
                    "stopped what the console left running outside its process group: pid {}",
                    pids.join(", ")
                ));
                self.strays.extend(&stopped.strays);
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
        let console_cut = self.record.is_cut();
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
            strays: self.strays,
            commands: self.commands,
            exit: self.exit,
            markers,
            login,
            probes,
            heartbeat,
            console: Utf8PathBuf::from(path.file_name().unwrap_or("console.log")),
            console_cut,
            console_bytes: bytes,
            console_lines: lines,
            cleanup_problems: self.cleanup_problems,
            stderr: crate::proc::tail_lines(&self.stderr, 10).replace("  | ", ""),
            tail,
        })
    }
}
