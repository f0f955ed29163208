//! The run report as one self-contained HTML page: inline CSS, no script, nothing
//! fetched, readable printed. Every string that comes from a run (outputs, logs, errors,
//! the console) is escaped here, by [`esc`], and nowhere else.

use std::fmt::Write as _;

use camino::Utf8Path;

use super::console::{self, Mark, View};
use super::facts::{RunFacts, StageFacts, Table, Verdict};
use crate::diff::{RunDiff, ms, package_line};
use crate::run::Status;

/// Lines of a failed stage's log shown in the report.
pub const LOG_TAIL_LINES: usize = 40;

/// Escapes text for HTML (element content and quoted attributes alike).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page is made of.
pub struct Page<'a> {
    pub run: &'a RunFacts,
    /// Changes since the last successful release, when there is one.
    pub diff: Option<&'a RunDiff>,
    /// The gate's console, as read for the page.
    pub console: Option<View>,
    /// The end of each failed stage's log.
    pub log_tails: Vec<(crate::stage::StageName, String)>,
    /// The command that continues the run, for a run that did not pass.
    pub resume: Option<String>,
}

const CSS: &str = r#"
:root { --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; --skip:#6e7781; --ink:#1f2328; --line:#d0d7de; --soft:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 0 24px 48px; }
header.verdict { padding: 22px 24px; color: #fff; }
header.verdict .inner { max-width: 1180px; margin: 0 auto; }
header.pass { background: var(--ok); } header.fail { background: var(--bad); }
header.interrupted, header.running, header.incomplete { background: var(--warn); }
header h1 { margin: 0 0 4px; font-size: 28px; }
header p { margin: 2px 0; opacity: .95; }
header code { background: rgba(255,255,255,.18); padding: 1px 5px; border-radius: 4px; }
h2 { font-size: 20px; margin: 30px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 6px; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; white-space: pre-wrap; word-break: break-all; margin: 6px 0; }
.timeline { display: grid; grid-template-columns: 90px 1fr 150px; gap: 6px 12px; align-items: center; }
.timeline .name { font-weight: 600; }
.track { position: relative; height: 22px; background: var(--soft); border-radius: 4px; }
.bar { position: absolute; top: 0; bottom: 0; border-radius: 4px; min-width: 3px; }
.bar.succeeded { background: var(--ok); } .bar.failed { background: var(--bad); }
.bar.interrupted, .bar.running { background: var(--warn); }
.bar.up-to-date { background: repeating-linear-gradient(45deg, #d0d7de 0 5px, #eaeef2 5px 10px); border: 1px dashed var(--skip); }
.timeline .when { font-size: 13px; color: var(--skip); }
.badge { display: inline-block; font-size: 12px; font-weight: 600; padding: 1px 8px; border-radius: 10px; color: #fff; vertical-align: middle; }
.badge.succeeded, .badge.pass { background: var(--ok); } .badge.failed { background: var(--bad); }
.badge.interrupted, .badge.running { background: var(--warn); }
.badge.up-to-date, .badge.pending { background: var(--skip); }
.how { font-size: 13.5px; margin: 2px 0 8px; padding: 4px 10px; background: #ddf4ff; border-left: 4px solid #0969da; border-radius: 3px; }
.how b { margin-right: 6px; }
section.stage { border: 1px solid var(--line); border-radius: 8px; padding: 4px 16px 12px; margin: 14px 0; page-break-inside: avoid; }
section.stage.failed { border-color: var(--bad); box-shadow: 0 0 0 1px var(--bad) inset; }
section.stage h2 { border: 0; margin: 10px 0 6px; }
dl.figures { display: grid; grid-template-columns: 170px 1fr; gap: 3px 14px; margin: 6px 0; }
dl.figures dt { color: var(--skip); } dl.figures dd { margin: 0; word-break: break-word; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 13.5px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; word-break: break-word; }
th { background: var(--soft); font-weight: 600; }
tr.added td:first-child, tr.fixed td:first-child, tr.faster td:first-child { border-left: 4px solid var(--ok); }
tr.removed td:first-child, tr.newly-failing td:first-child, tr.slower td:first-child { border-left: 4px solid var(--bad); }
tr.updated td:first-child, tr.rebuilt td:first-child, tr.still-failing td:first-child { border-left: 4px solid var(--warn); }
.note, .cut { color: var(--skip); font-size: 13px; }
.error { color: var(--bad); font-weight: 600; }
pre.console { max-height: none; padding: 8px 0; }
pre.console .l { display: block; padding: 0 12px; }
pre.console .n { display: inline-block; width: 6ch; color: var(--skip); text-align: right; margin-right: 1.5ch; user-select: none; }
pre.console .gap { display: block; padding: 2px 12px; color: var(--skip); background: #fff; border-top: 1px dashed var(--line); border-bottom: 1px dashed var(--line); }
pre.console mark { display: block; background: #fff8c5; color: inherit; }
pre.console mark.deciding { background: #ffebe9; outline: 2px solid var(--bad); }
pre.console mark.deciding.pass-line { background: #dafbe1; outline-color: var(--ok); }
pre.console details.fold summary { display: block; padding: 3px 12px; color: var(--skip); cursor: pointer; border-top: 1px dashed var(--line); border-bottom: 1px dashed var(--line); }
pre.console .why { float: right; font-weight: 600; color: var(--warn); padding-right: 12px; }
pre.console mark.deciding .why { color: var(--bad); }
pre.console mark.deciding.pass-line .why { color: var(--ok); }
nav { margin: 14px 0 0; font-size: 14px; }
nav a { margin-right: 14px; }
a { color: #0969da; }
footer { margin-top: 36px; color: var(--skip); font-size: 13px; }
@media print {
  header.verdict { color: var(--ink); background: none !important; border: 3px solid var(--ink); }
  header code { background: none; }
  pre { white-space: pre-wrap; }
  section.stage, table, pre.console mark { page-break-inside: avoid; }
  nav { display: none; }
  a { color: inherit; text-decoration: none; }
}
"#;

impl Page<'_> {
    pub fn render(&self) -> String {
        let r = self.run;
        let mut h = String::with_capacity(64 * 1024);
        let title = headline(r);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{} · run {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
            esc(&title),
            esc(&r.id)
        );
        self.header(&mut h, &title);
        h.push_str("<main>\n<nav><a href=\"#timeline\">timeline</a>");
        if self.diff.is_some() {
            h.push_str("<a href=\"#changes\">what changed</a>");
        }
        for s in &r.stages {
            let _ = write!(h, "<a href=\"#stage-{0}\">{0}</a>", s.name.as_str());
        }
        if self.console.is_some() {
            h.push_str("<a href=\"#console\">gate console</a>");
        }
        h.push_str("</nav>\n");
        self.timeline(&mut h);
        self.changes(&mut h);
        for s in &r.stages {
            self.stage(&mut h, s);
        }
        self.console(&mut h);
        let _ = write!(
            h,
            "<footer>mother-build {} · written {} · state of run <code>{}</code></footer>\n</main>\n</body>\n</html>\n",
            esc(env!("CARGO_PKG_VERSION")),
            esc(&crate::run::now_rfc3339()),
            esc(r.dir.join("state.json").as_str())
        );
        h
    }

    fn header(&self, h: &mut String, title: &str) {
        let r = self.run;
        let total: u64 = r.stages.iter().filter_map(|s| s.duration_ms).sum();
        let _ = write!(
            h,
            "<header class=\"verdict {}\" id=\"verdict\"><div class=\"inner\">\n<h1>{}</h1>\n<p>run <code>{}</code> · started {} by <code>{}</code> · {} of work</p>\n",
            r.verdict.as_str(),
            esc(title),
            esc(&r.id),
            esc(&r.created),
            esc(&r.command),
            esc(&ms(Some(total)))
        );
        let ran = r.stages.iter().filter(|s| s.status == Status::Succeeded).count();
        let skipped = r.stages.iter().filter(|s| s.status == Status::UpToDate).count();
        let _ = writeln!(h, "<p>{ran} stage(s) ran, {skipped} up to date (skipped)</p>");
        if let Some(f) = r.failed_stage() {
            let first = f.error.as_deref().unwrap_or("").lines().next().unwrap_or("");
            let _ = writeln!(h, "<p>stage <code>{}</code>: {}</p>", f.name.as_str(), esc(first));
        }
        if let Some(resume) = &self.resume {
            let _ = writeln!(h, "<p>continue with <code>{}</code></p>", esc(resume));
        }
        h.push_str("</div></header>\n");
    }

    fn timeline(&self, h: &mut String) {
        let stages = &self.run.stages;
        let total: u64 = stages.iter().filter_map(|s| s.duration_ms).sum::<u64>().max(1);
        h.push_str("<section id=\"timeline\"><h2>Timeline</h2>\n<div class=\"timeline\">\n");
        let mut offset = 0u64;
        for s in stages {
            let d = s.duration_ms.unwrap_or(0);
            let left = offset as f64 * 100.0 / total as f64;
            let width = (d as f64 * 100.0 / total as f64).max(0.4);
            let status = s.status.as_str();
            let when = match s.status {
                Status::UpToDate => match &s.from_run {
                    Some(from) => format!("skipped: up to date since run {from}"),
                    None => "skipped: up to date".into(),
                },
                Status::Pending => "not run".into(),
                _ => format!("{} · {}", ms(Some(d)), status),
            };
            let bar = if s.status == Status::Pending {
                String::new()
            } else {
                format!(
                    "<div class=\"bar {status}\" style=\"left:{left:.2}%;width:{width:.2}%\" title=\"{}\"></div>",
                    esc(&when)
                )
            };
            let _ = writeln!(
                h,
                "<div class=\"name\"><a href=\"#stage-{0}\">{0}</a></div><div class=\"track\" data-stage=\"{0}\" data-status=\"{status}\">{bar}</div><div class=\"when\">{1}</div>",
                s.name.as_str(),
                esc(&when)
            );
            offset += d;
        }
        h.push_str("</div>\n<p class=\"note\">Bars are scaled to each stage's duration, in the order the stages ran; hatched bars are stages skipped as up to date.</p>\n</section>\n");
    }

    fn changes(&self, h: &mut String) {
        h.push_str("<section id=\"changes\"><h2>What changed since the last successful release</h2>\n");
        let Some(d) = self.diff else {
            h.push_str("<p class=\"note\">There is no earlier successful release in this state directory to compare with.</p>\n</section>\n");
            return;
        };
        let _ = writeln!(
            h,
            "<p>Compared with run <code>{}</code>. <span class=\"note\">(<code>cargo xtask diff {} {}</code> prints the same.)</span></p>",
            esc(&d.older),
            esc(&d.older),
            esc(&d.newer)
        );
        h.push_str("<h3>Packages</h3>\n");
        match &d.packages {
            None => h.push_str("<p class=\"note\">Not known: a run has no signed repository.</p>\n"),
            Some(p) if p.is_empty() => h.push_str("<p>Unchanged.</p>\n"),
            Some(p) => {
                h.push_str("<table id=\"diff-packages\"><tr><th>package</th><th>change</th><th>version</th><th>size</th><th>sum</th></tr>\n");
                for c in p {
                    let pick = |f: fn(&crate::report::facts::PackageFact) -> String| match (&c.old, &c.new) {
                        (Some(o), Some(n)) if f(o) != f(n) => format!("{} → {}", f(o), f(n)),
                        (_, Some(n)) => f(n),
                        (Some(o), None) => f(o),
                        (None, None) => String::new(),
                    };
                    let _ = writeln!(
                        h,
                        "<tr class=\"{0}\"><td>{1}</td><td>{0}</td><td>{2}</td><td>{3}</td><td><code>{4}</code></td></tr>",
                        c.change.as_str(),
                        esc(&c.name),
                        esc(&pick(|p| p.version.clone())),
                        esc(&pick(|p| crate::ui::bytes(p.size))),
                        esc(&pick(|p| p.sum.clone()))
                    );
                    let _ = package_line;
                }
                h.push_str("</table>\n");
            }
        }
        h.push_str("<h3>Crates in distinfo</h3>\n");
        match &d.crates {
            None => h.push_str("<p class=\"note\">Not known: a run has no distinfo.</p>\n"),
            Some(c)
                if c.added.is_empty()
                    && c.removed.is_empty()
                    && c.updated.is_empty()
                    && c.checksum_changed.is_empty() =>
            {
                h.push_str("<p>Unchanged.</p>\n")
            }
            Some(c) => {
                h.push_str("<table id=\"diff-crates\"><tr><th>crate</th><th>change</th><th>version</th></tr>\n");
                let mut rows: Vec<(&str, String, String)> = Vec::new();
                rows.extend(c.added.iter().map(|k| ("added", k.name.clone(), k.version.clone())));
                rows.extend(c.removed.iter().map(|k| ("removed", k.name.clone(), k.version.clone())));
                rows.extend(c.updated.iter().map(|u| ("updated", u.name.clone(), format!("{} → {}", u.old, u.new))));
                rows.extend(
                    c.checksum_changed.iter().map(|k| {
                        ("rebuilt", k.name.clone(), format!("{}: checksum changed to {}", k.version, k.sha256))
                    }),
                );
                let total = rows.len();
                for (class, name, version) in rows.into_iter().take(super::facts::LIST_ROWS) {
                    let word = if class == "rebuilt" { "CHECKSUM CHANGED" } else { class };
                    let _ = writeln!(
                        h,
                        "<tr class=\"{class}\"><td>{}</td><td>{word}</td><td>{}</td></tr>",
                        esc(&name),
                        esc(&version)
                    );
                }
                h.push_str("</table>\n");
                cut_note(h, total);
            }
        }
        h.push_str("<h3>Ports</h3>\n");
        match &d.ports {
            None => h.push_str("<p class=\"note\">Not known: a run's build status files cannot be read.</p>\n"),
            Some(p) if p.newly_failing.is_empty() && p.fixed.is_empty() && p.still_failing.is_empty() => {
                h.push_str("<p>No port failed in either run.</p>\n")
            }
            Some(p) => {
                h.push_str(
                    "<table id=\"diff-ports\"><tr><th>origin</th><th>change</th><th>package</th><th>phase</th></tr>\n",
                );
                let mut total = 0;
                for (class, word, list) in [
                    ("newly-failing", "newly failing", &p.newly_failing),
                    ("fixed", "fixed", &p.fixed),
                    ("still-failing", "still failing", &p.still_failing),
                ] {
                    for f in list {
                        total += 1;
                        if total <= super::facts::LIST_ROWS {
                            let _ = writeln!(
                                h,
                                "<tr class=\"{class}\"><td>{}</td><td>{word}</td><td>{}</td><td>{}</td></tr>",
                                esc(&f.origin),
                                esc(&f.pkgname),
                                esc(&f.phase)
                            );
                        }
                    }
                }
                h.push_str("</table>\n");
                cut_note(h, total);
            }
        }
        h.push_str("<h3>Durations</h3>\n<table id=\"diff-durations\"><tr><th>stage</th><th>this run</th><th>last release</th><th>median of the last releases</th></tr>\n");
        for s in &d.durations {
            let class = match (s.ms, s.median_ms) {
                (Some(now), Some(m)) if now > m + m / 4 + 500 => "slower",
                (Some(now), Some(m)) if now + now / 4 + 500 < m => "faster",
                _ => "",
            };
            let median = match s.median_ms {
                Some(m) => format!("{} (of {})", ms(Some(m)), s.median_of),
                None => "-".into(),
            };
            let _ = writeln!(
                h,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.stage.as_str(),
                esc(&ms(s.ms)),
                esc(&ms(s.older_ms)),
                esc(&median)
            );
        }
        h.push_str("</table>\n<p class=\"note\">A dash: the stage did not run there (up to date, or not reached).</p>\n</section>\n");
    }

    fn stage(&self, h: &mut String, s: &StageFacts) {
        let status = s.status.as_str();
        let failed = matches!(s.status, Status::Failed | Status::Interrupted);
        let _ = write!(
            h,
            "<section class=\"stage {status}\" id=\"stage-{0}\" data-stage=\"{0}\"><h2>{0} <span class=\"badge {status}\">{status}</span>",
            s.name.as_str()
        );
        h.push_str("</h2>\n");
        if let Some(note) = &s.note {
            let _ = writeln!(h, "<p class=\"how\"><b>how it ran here</b> {}</p>", esc(note));
        }
        h.push_str("<dl class=\"figures\">\n");
        let mut dl = |k: &str, v: &str| {
            let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
        };
        match s.status {
            Status::UpToDate => dl(
                "skipped",
                &format!(
                    "inputs unchanged since run {}: what it produced then is used",
                    s.from_run.as_deref().unwrap_or("?")
                ),
            ),
            Status::Pending => dl("not run", "this run did not reach it"),
            _ => {
                dl("took", &format!("{}{}", ms(s.duration_ms), attempts(s.attempts)));
                if let Some(started) = &s.started {
                    dl("started", started);
                }
            }
        }
        for f in &s.figures {
            dl(&f.label, &f.value);
        }
        h.push_str("</dl>\n");
        if failed {
            if let Some(err) = &s.error {
                let _ = write!(h, "<h3 class=\"error\">Error</h3>\n<pre class=\"error-text\">{}</pre>\n", esc(err));
            }
            if let Some((_, tail)) = self.log_tails.iter().find(|(n, _)| *n == s.name)
                && !tail.is_empty()
            {
                let _ = write!(h, "<h3>Last lines of the log</h3>\n<pre class=\"log-tail\">{}</pre>\n", esc(tail));
            }
        }
        if let Some(log) = &s.log {
            let href = relative_href(log, &self.run.dir);
            let _ = writeln!(h, "<p>full log: <a class=\"log\" href=\"{}\">{}</a></p>", esc(&href), esc(log.as_str()));
        }
        for t in &s.tables {
            table(h, t);
        }
        h.push_str("</section>\n");
    }

    fn console(&self, h: &mut String) {
        let Some(v) = &self.console else { return };
        h.push_str("<section id=\"console\"><h2>Gate console</h2>\n");
        if let Some(e) = &v.error {
            let _ = write!(h, "<p class=\"error\">{}</p>\n</section>\n", esc(e));
            return;
        }
        let _ = writeln!(
            h,
            "<p>{} lines, {}. Markers are highlighted; the line that decided the verdict is outlined.</p>",
            v.total_lines,
            esc(&crate::ui::bytes(v.bytes))
        );
        if v.left_out > 0 {
            let _ = writeln!(
                h,
                "<p class=\"cut\">The console is cut to a bound: {} of {} lines are shown (its start, its end and the lines around every marked line); {} are left out where marked. The whole console: <a href=\"{}\">{}</a>.</p>",
                v.lines.len(),
                v.total_lines,
                v.left_out,
                esc(&relative_href(&self.console_path(), &self.run.dir)),
                esc(self.console_path().as_str())
            );
        }
        let pass = self.run.verdict == Verdict::Pass;
        let marked: Vec<u64> = v.lines.iter().filter(|l| !l.marks.is_empty()).map(|l| l.number).collect();
        if let Some(d) = v.lines.iter().find(|l| l.marks.iter().any(|m| matches!(m, Mark::Deciding(_)))) {
            let _ = writeln!(h, "<p><a href=\"#L{0}\">the line that decided the verdict: {0}</a></p>", d.number);
        }
        // Lines far from every marked line are folded (a <details>, no script), so the
        // markers are in view at once; with nothing marked, every line shows.
        let near = |n: u64| marked.is_empty() || marked.iter().any(|m| m.abs_diff(n) <= FOLD_CONTEXT);
        h.push_str("<pre class=\"console\">");
        let mut i = 0;
        while i < v.lines.len() {
            let far = v.lines[i..].iter().take_while(|l| !near(l.number)).count();
            if far >= FOLD_AT {
                let (first, last) = (v.lines[i].number, v.lines[i + far - 1].number);
                let _ = write!(
                    h,
                    "<details class=\"fold\"><summary>lines {first} to {last}: far from every marker (show)</summary>"
                );
                for line in &v.lines[i..i + far] {
                    console_line(h, line, pass);
                }
                h.push_str("</details>");
                i += far;
            } else {
                console_line(h, &v.lines[i], pass);
                i += 1;
            }
        }
        h.push_str("</pre>\n</section>\n");
    }

    fn console_path(&self) -> camino::Utf8PathBuf {
        self.run.console.as_ref().map(|c| c.path.clone()).unwrap_or_default()
    }
}

/// Lines around a marked line that are never folded.
const FOLD_CONTEXT: u64 = 12;
/// Fewer far lines than this in a row are shown rather than folded.
const FOLD_AT: usize = 20;

fn console_line(h: &mut String, line: &console::Line, pass: bool) {
    if line.gap_before > 0 {
        let _ = write!(h, "<span class=\"gap\">… {} line(s) left out …</span>", line.gap_before);
    }
    let mut text = esc(&line.text);
    if line.cut_bytes > 0 {
        let _ = write!(text, "<span class=\"cut\"> … ({} more bytes of this line left out)</span>", line.cut_bytes);
    }
    let n = format!("<span class=\"n\">{}</span>", line.number);
    let deciding = line.marks.iter().find_map(|m| match m {
        Mark::Deciding(kind) => Some(kind.as_str()),
        Mark::Marker(_) => None,
    });
    let markers: Vec<&str> = line
        .marks
        .iter()
        .filter_map(|m| match m {
            Mark::Marker(name) => Some(name.as_str()),
            Mark::Deciding(_) => None,
        })
        .collect();
    let id = line.number;
    if let Some(kind) = deciding {
        let also = if markers.is_empty() { String::new() } else { format!(" (marker: {})", esc(&markers.join(", "))) };
        let _ = write!(
            h,
            "<mark class=\"deciding{}\" id=\"L{id}\" data-line=\"{id}\"><span class=\"why\">decided: {}{also}</span>{n}{text}</mark>",
            if pass { " pass-line" } else { "" },
            esc(kind)
        );
    } else if !markers.is_empty() {
        let _ = write!(
            h,
            "<mark class=\"marker\" id=\"L{id}\" data-line=\"{id}\"><span class=\"why\">marker: {}</span>{n}{text}</mark>",
            esc(&markers.join(", "))
        );
    } else {
        let _ = write!(h, "<span class=\"l\" id=\"L{id}\">{n}{text}</span>");
    }
}

fn headline(r: &RunFacts) -> String {
    let what = if r.command == "release" { "Release" } else { "Run" };
    match r.verdict {
        Verdict::Pass => format!("{what} passed: every stage done"),
        Verdict::Fail => {
            format!("{what} failed at {}", r.failed_stage().map_or("a stage".into(), |s| s.name.as_str().to_owned()))
        }
        Verdict::Interrupted => format!(
            "{what} interrupted at {}",
            r.failed_stage().map_or("a stage".into(), |s| s.name.as_str().to_owned())
        ),
        Verdict::Running => format!("{what} still running"),
        Verdict::Incomplete => {
            let done = r.stages.iter().filter(|s| s.status.is_done()).count();
            format!("{what} incomplete: {done} of {} stages done", r.stages.len())
        }
    }
}

fn attempts(n: u32) -> String {
    if n > 1 { format!(" (attempt {n})") } else { String::new() }
}

fn cut_note(h: &mut String, total: usize) {
    if total > super::facts::LIST_ROWS {
        let _ =
            writeln!(h, "<p class=\"cut\">The list is cut: {} of {total} rows are shown.</p>", super::facts::LIST_ROWS);
    }
}

fn table(h: &mut String, t: &Table) {
    let _ = write!(h, "<h3>{} ({})</h3>\n<table>\n<tr>", esc(&t.caption), t.total);
    for head in &t.headers {
        let _ = write!(h, "<th>{}</th>", esc(head));
    }
    h.push_str("</tr>\n");
    for row in &t.rows {
        h.push_str("<tr>");
        for cell in row {
            let _ = write!(h, "<td>{}</td>", esc(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    cut_note(h, t.total);
}

/// A link from the report (in the run directory) to a file: relative when below it.
fn relative_href(path: &Utf8Path, run_dir: &Utf8Path) -> String {
    match path.strip_prefix(run_dir) {
        Ok(rel) => rel.components().map(|c| percent(c.as_str())).collect::<Vec<_>>().join("/"),
        Err(_) => format!(
            "file://{}",
            path.components().skip(1).map(|c| percent(c.as_str())).fold(String::new(), |a, c| a + "/" + &c)
        ),
    }
}

/// Percent-encodes what a URL path segment cannot hold as it is.
fn percent(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Reads the console a page shows, with its marked lines.
pub fn console_view(run: &RunFacts) -> Option<View> {
    let c = run.console.as_ref()?;
    let mut marks: Vec<(u64, Mark)> = c.markers.iter().map(|(n, name)| (*n, Mark::Marker(name.clone()))).collect();
    if let Some((n, kind)) = &c.deciding {
        marks.push((*n, Mark::Deciding(kind.clone())));
    }
    Some(console::read(&c.path, &marks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn links_are_relative_inside_the_run() {
        assert_eq!(
            relative_href(Utf8Path::new("/s/runs/R/logs/bulk.log"), Utf8Path::new("/s/runs/R")),
            "logs/bulk.log"
        );
        assert_eq!(relative_href(Utf8Path::new("/d/a b/x.log"), Utf8Path::new("/s/runs/R")), "file:///d/a%20b/x.log");
    }
}
