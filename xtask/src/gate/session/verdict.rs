//! The verdict side of a boot: what each finding, deadline and exit means (pass, fail,
//! or infrastructure), the decision that records it, and the attempt described.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::{After, Outcome, TICK, Watch, Watched};
use crate::failure;
use crate::gate::backend::{Ending, Role};
use crate::gate::probe::{self, Exchange};
use crate::gate::results::{Decision, DecisionKind, Verdict};
use crate::gate::scan::{Found, Hit};
use crate::proc;

impl<'a> Watch<'a> {
    /// Where the markers stand: the next one's index and when its deadline starts.
    pub(super) fn next_marker(&self) -> (usize, Instant) {
        let k = self.scanner.markers_seen();
        let since = k.checked_sub(1).and_then(|i| self.seen[i]).unwrap_or(self.clock.t0);
        (k, since)
    }

    pub(super) fn next_deadline(&self) -> Instant {
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

    pub(super) fn deadline_passed(&mut self, now: Instant) -> Option<Outcome> {
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
    pub(super) fn missed(&mut self, k: usize, since: Instant, global: bool, late: Option<&Hit>) -> Outcome {
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
    pub(super) fn probes_passed(&self) -> bool {
        self.exchange.as_ref().is_none_or(|x| x.is_done() && x.failure().is_none())
    }

    /// The login or a probe failed.
    pub(super) fn probe_failed(&mut self, f: probe::Failure, at: Instant) -> Outcome {
        let (kind, name) = match f.probe {
            None => (DecisionKind::Login, None),
            Some(i) => (DecisionKind::Probe, self.plan.probes.as_ref().map(|p| p.probes[i].name.clone())),
        };
        let decision = self.decision(kind, name, None, None, at);
        self.fail(f.reason, f.help, decision)
    }

    /// The heartbeat stopped for longer than its gap: at `at`, or (`late`) it came
    /// after the gap had passed.
    pub(super) fn heartbeat_missed(&mut self, at: Instant, late: Option<&Hit>) -> Outcome {
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
    pub(super) fn last_marker(&mut self, hit: Hit) -> Option<Outcome> {
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
    pub(super) fn found(&mut self, found: Found) -> Option<Outcome> {
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
    pub(super) fn ended(&mut self, role: Role, status: ExitStatus, at: Instant) -> Watched {
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

    pub(super) fn decision(
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

    pub(super) fn pass(&mut self, last: &Hit) -> Outcome {
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

    pub(super) fn fail(&mut self, reason: String, help: String, decision: Decision) -> Outcome {
        Outcome {
            verdict: Verdict::Fail,
            reason,
            help: vec![help],
            decision: Some(decision),
            decided_at: Instant::now(),
        }
    }

    pub(super) fn infra(&mut self, reason: String, help: String) -> Outcome {
        self.infra_lines(reason, vec![help])
    }

    /// An infrastructure error from an error: `reason` shows its messages; its own help
    /// (about its cause, such as a program that is missing) comes before `help`.
    pub(super) fn infra_error(&mut self, reason: String, e: &anyhow::Error, help: &str) -> Outcome {
        let mut lines = failure::help_lines(e);
        if !lines.iter().any(|l| l == help) {
            lines.push(help.to_owned());
        }
        self.infra_lines(reason, lines)
    }

    pub(super) fn infra_lines(&mut self, reason: String, help: Vec<String>) -> Outcome {
        let now = Instant::now();
        let decision = self.decision(DecisionKind::Infrastructure, None, None, None, now);
        Outcome { verdict: Verdict::Error, reason, help, decision: Some(decision), decided_at: now }
    }

    pub(super) fn interrupted(&mut self, sig: i32) -> Outcome {
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
}

pub(super) fn hit_of(found: &Found) -> &Hit {
    match found {
        Found::Marker { hit, .. }
        | Found::Forbidden { hit, .. }
        | Found::RestartLoop { hit, .. }
        | Found::Heartbeat { hit } => hit,
    }
}

pub(super) fn image_help(line: u64) -> String {
    format!(
        "this is the image, not the machine (failures are not retried): read the console up to line {line} for what led to it"
    )
}

pub(super) fn image_help_unlined() -> String {
    "this is the image, not the machine (failures are not retried): the console's last lines show where it stopped"
        .into()
}
