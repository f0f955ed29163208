//! `junit.xml`: the verdict as a JUnit report, a test case per marker, check and probe.

use camino::Utf8Path;

use super::{Attempt, DecisionKind, Verdict};

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

/// An attribute value: quotes, newlines and tabs escaped too (an XML parser would
/// normalise them to spaces).
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Element text.
fn text(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in xml_safe(s) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_what_it_must() {
        assert_eq!(attr("a<\"b\">&\n"), "a&lt;&quot;b&quot;&gt;&amp;&#10;");
        assert_eq!(text("x\x1b[0m]]> y"), "x\u{fffd}[0m]]&gt; y");
    }
}
