//! The gate's error message: the reason, the deciding console line or probe output, the
//! markers seen and missing, and where the console and results are.

use camino::Utf8Path;

use super::QUOTED_LINES;
use crate::failure::Failure;
use crate::gate::probe;
use crate::gate::results::{Attempt, DecisionKind, Verdict, cut_line};
use crate::gate::shown;

/// Characters of a console line quoted in the message (state.json records it too).
const QUOTED_CHARS: usize = 500;

/// The body of the error message: the reason, the deciding console line, the markers,
/// where the console and results are, and what to do.
pub(super) fn report(
    a: &Attempt,
    console: &Utf8Path,
    json: &Utf8Path,
    junit: &Utf8Path,
    retried: Option<&str>,
) -> String {
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
            out.push_str(&format!("\n  | {}", cut_line(line, QUOTED_CHARS)));
        }
        if lines.len() > QUOTED_LINES || p.output_cut {
            out.push_str(&format!(
                "\n  | [{} bytes of output in all; result.json has {}]",
                p.output_bytes,
                if p.output_cut {
                    format!("at most the first {} KiB", probe::OUTPUT_LIMIT / 1024)
                } else {
                    "all of it".into()
                }
            ));
        }
        if let Some(status) = p.status {
            out.push_str(&format!("\n  [exit status {status}]"));
        }
    } else if let Some(line) = a.decided_by.as_ref().and_then(|d| d.line.as_ref()) {
        out.push_str(&format!("\n  | {}", cut_line(line, QUOTED_CHARS)));
    } else if !a.stderr.is_empty() && a.verdict != Verdict::Fail {
        for line in a.stderr.lines().filter(|l| !l.trim().is_empty()) {
            out.push_str(&format!("\n  | {}", cut_line(line, QUOTED_CHARS)));
        }
    } else if a.verdict == Verdict::Fail {
        out.push_str("\n  the console's last lines:");
        for line in a.tail.iter().rev().take(QUOTED_LINES).rev() {
            out.push_str(&format!("\n  | {}", cut_line(line, QUOTED_CHARS)));
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
    if a.console_cut {
        out.push_str(&format!(
            " (cut at gate.console_log_max_mib; the gate read all {} bytes of the console)",
            a.console_bytes
        ));
    }
    out.push_str(&format!("\n  results: {}, {}", shown(json), shown(junit)));
    out
}

/// A failure of the boot (`report`'s text), with the attempt's help lines.
pub(super) fn boot_failure(message: String, a: &Attempt) -> Failure {
    a.help.iter().fold(Failure::new(message), |f, line| f.help(line.clone()))
}
