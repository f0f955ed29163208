//! Notifications when a release ends: webhooks (a JSON POST whose body a Forgejo/Gitea,
//! Slack or Matrix endpoint takes, or mother-build's own) and a sendmail-style mail
//! command. A failed release says the stage, the error and the commands that rerun it;
//! a passed one, what changed since the last release.
//!
//! A notification that cannot be sent is logged (`RUN/logs/notify.log`) and shown,
//! and never changes the release's outcome. Each one is bounded in time. The secrets a
//! URL may carry (a token in its path or query, `user:password@`) never reach a log or
//! the terminal: URLs are shown as `scheme://host/…`, and the text of every error is
//! scrubbed of the URL's parts.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::config::Loaded;
use crate::engine::Engine;
use crate::proc::CmdLine;
use crate::report::Ended;
use crate::report::facts::Verdict;
use crate::run::{Log, Run};
use crate::settings;

/// When a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The release failed or was interrupted.
    Fail,
    /// The release passed.
    Pass,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Fail => "fail",
            Event::Pass => "pass",
        }
    }
}

/// The body a webhook takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// mother-build's own JSON: event, run, verdict, stage, error, commands, summary.
    #[default]
    Json,
    /// Slack's incoming webhooks (and Mattermost's, Discord's `/slack`): `{"text": ...}`.
    Slack,
    /// A Matrix `m.room.message` (`msgtype`, `body`, `formatted_body`). To a client-server
    /// URL ending in `/send/m.room.message` it is PUT with a transaction id, as the API
    /// asks; to any other URL (a bridge) POSTed.
    Matrix,
    /// A Forgejo/Gitea issue (`{"title", "body"}`), for `POST /api/v1/repos/OWNER/REPO/issues`.
    #[serde(alias = "gitea")]
    Forgejo,
}

/// One webhook of `notify.webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://`; a token may be in its path or query, or `user:password@`
    /// before the host (sent as basic authentication). Never shown in full.
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// Which endings it hears about.
    #[serde(default = "both")]
    pub on: Vec<Event>,
}

fn both() -> Vec<Event> {
    vec![Event::Fail, Event::Pass]
}

settings! {
    /// notify: who hears when a release ends. A notification that cannot be sent is
    /// logged (`RUN/logs/notify.log`) and shown, and never changes the release's outcome.
    pub struct NotifyConfig {
        /// Webhooks, each `{ url = "https://...", format = "json" | "slack" | "matrix" |
        /// "forgejo" (or "gitea"), on = ["fail", "pass"] }`. Every one gets a JSON request.
        pub webhooks: Vec<Webhook> = Vec::new(),
        /// A sendmail-style command (argument vector, no shell) that reads the message on
        /// stdin; the recipients follow as arguments, e.g. `["/usr/sbin/sendmail", "-oi"]`.
        pub mail_command: Vec<String> = Vec::new(),
        /// The mail's recipients.
        pub mail_to: Vec<String> = Vec::new(),
        /// The mail's From header; empty: none (the mail command's default).
        pub mail_from: String = String::new(),
        /// Which endings mail is sent for.
        pub mail_on: Vec<Event> = both(),
        /// Seconds each notification may take (connecting, sending and the answer; or the
        /// mail command from start to end).
        pub timeout_secs: u64 = 10,
    }
}

/// Checks `[notify]` when pipeline.toml is loaded.
pub fn validate(loaded: &Loaded) -> Result<()> {
    let cfg = &loaded.config.notify;
    for (i, w) in cfg.webhooks.iter().enumerate() {
        let key = format!("notify.webhooks.{i}.url");
        let parts = Url::parse(&w.url).map_err(|why| loaded.error_at(&key, format!("not a webhook URL: {why}")))?;
        let _ = parts;
    }
    if cfg.mail_command.is_empty() != cfg.mail_to.is_empty() {
        let key = if cfg.mail_command.is_empty() { "notify.mail_to" } else { "notify.mail_command" };
        return Err(loaded.error_at(key, "notify.mail_command and notify.mail_to go together: set both, or neither"));
    }
    if let Some(to) = cfg.mail_to.iter().find(|t| t.starts_with('-') || t.trim().is_empty()) {
        return Err(loaded.error_at("notify.mail_to", format!("`{to}` is not a mail address")));
    }
    if cfg.timeout_secs == 0 {
        return Err(loaded.error_at("notify.timeout_secs", "the timeout is 0 seconds"));
    }
    Ok(())
}

/// A webhook URL taken apart: what is shown, what is sent.
struct Url {
    /// `scheme://host[:port]/…`: nothing a secret may be in.
    shown: String,
    /// The URL without `user:password@`.
    target: String,
    /// `user:password`, decoded, for basic authentication.
    userinfo: Option<String>,
    /// The pieces that may be secret, to scrub from error texts.
    secrets: Vec<String>,
    path: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, String> {
        let (scheme, rest) = url.split_once("://").ok_or("it has no scheme (http:// or https://)")?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("the scheme `{scheme}` is not http or https"));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err("it has no host".into());
        }
        let path = tail.split(['?', '#']).next().unwrap_or("").to_owned();
        let mut secrets: Vec<String> = vec![url.to_owned(), tail.to_owned()];
        secrets.extend(userinfo.map(str::to_owned));
        secrets.extend(tail.split(['/', '?', '&', '=', '#']).filter(|p| p.len() >= 4).map(str::to_owned));
        secrets.retain(|s| !s.is_empty());
        // Longest first, so a piece inside a longer one does not leave the rest behind.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Url {
            shown: format!("{scheme}://{host}/{}", if tail.trim_matches('/').is_empty() { "" } else { "…" }),
            target: format!("{scheme}://{host}{tail}"),
            userinfo: userinfo.map(percent_decode),
            secrets,
            path,
        })
    }

    /// `text` with every piece of the URL that may be secret replaced.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "…");
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a notification says.
pub struct Message {
    pub event: Event,
    pub run: String,
    pub title: String,
    /// Plain text, a line each.
    pub lines: Vec<String>,
    /// The JSON body of the `json` format.
    pub json: serde_json::Value,
}

/// The most of an error a notification carries.
const ERROR_CHARS: usize = 2000;

/// The message for a release that ended.
pub fn message(engine: &Engine, run: &Run, ended: &Ended, ok: bool) -> Message {
    let f = &ended.facts;
    let report = run.dir.join(crate::report::REPORT);
    let pass = ok && f.failed_stage().is_none();
    let event = if pass { Event::Pass } else { Event::Fail };
    let failed = f.failed_stage();
    let mut lines = Vec::new();
    let mut json = serde_json::json!({
        "schema": 1,
        "event": event.as_str(),
        "run": f.id,
        "verdict": f.verdict.as_str(),
        "report": report,
    });
    let title = match (pass, failed) {
        (true, _) if f.verdict == Verdict::Pass => format!("mother-build: release passed (run {})", f.id),
        (true, _) => format!(
            "mother-build: release passed up to {} (run {})",
            f.stages.iter().rev().find(|s| s.status.is_done()).map_or("its first stage", |s| s.name.as_str()),
            f.id
        ),
        (false, Some(s)) => format!("mother-build: release {} at {} (run {})", verb(f.verdict), s.name.as_str(), f.id),
        (false, None) => format!("mother-build: release {} (run {})", verb(f.verdict), f.id),
    };
    if let Some(s) = failed {
        let error: String = s.error.as_deref().unwrap_or("").chars().take(ERROR_CHARS).collect();
        let rerun = engine.loaded.xtask(s.name.as_str());
        let resume = engine.loaded.xtask("release --resume");
        lines.push(format!("stage {} {}:", s.name.as_str(), s.status.as_str()));
        lines.extend(error.lines().map(|l| format!("  {l}")));
        lines.push(format!("rerun the stage: {rerun}"));
        lines.push(format!("or continue the run: {resume}"));
        if let Some(log) = &s.log {
            lines.push(format!("log: {log}"));
        }
        json["stage"] = s.name.as_str().into();
        json["error"] = error.into();
        json["rerun"] = rerun.into();
        json["resume"] = resume.into();
    }
    if pass {
        if let Some(p) = f.stage(crate::stage::StageName::Publish) {
            for fig in p.figures.iter().filter(|x| x.label == "version" || x.label == "URL") {
                lines.push(format!("published {}: {}", fig.label, fig.value));
            }
        }
        let summary = match &ended.diff {
            Some(d) => format!("since run {}: {}", d.older, d.summary()),
            None => "the first successful release in this state directory".to_owned(),
        };
        lines.push(summary.clone());
        json["summary"] = summary.into();
        if let Some(d) = &ended.diff {
            json["diff"] = serde_json::to_value(d).unwrap_or_default();
        }
    }
    lines.push(format!("report: {report}"));
    json["title"] = title.clone().into();
    json["text"] = lines.join("\n").into();
    Message { event, run: f.id.clone(), title, lines, json }
}

fn verb(v: Verdict) -> &'static str {
    match v {
        Verdict::Interrupted => "interrupted",
        _ => "failed",
    }
}

impl Message {
    fn text(&self) -> String {
        format!("{}\n{}", self.title, self.lines.join("\n"))
    }

    /// The body in a webhook's format.
    fn body(&self, format: Format) -> serde_json::Value {
        match format {
            Format::Json => self.json.clone(),
            Format::Slack => serde_json::json!({ "text": format!("*{}*\n{}", self.title, self.lines.join("\n")) }),
            Format::Matrix => {
                let mut html = format!("<strong>{}</strong>", crate::report::html::esc(&self.title));
                for l in &self.lines {
                    let _ = write!(html, "<br>{}", crate::report::html::esc(l));
                }
                serde_json::json!({
                    "msgtype": "m.text",
                    "body": self.text(),
                    "format": "org.matrix.custom.html",
                    "formatted_body": html,
                })
            }
            Format::Forgejo => {
                let body = format!("{}\n\n```\n{}\n```\n", self.title, self.lines.join("\n").replace("```", "'''"));
                serde_json::json!({ "title": self.title, "body": body })
            }
        }
    }

    fn mail(&self, cfg: &NotifyConfig) -> String {
        let mut m = String::new();
        if !cfg.mail_from.is_empty() {
            let _ = writeln!(m, "From: {}", header(&cfg.mail_from));
        }
        let _ = writeln!(m, "To: {}", header(&cfg.mail_to.join(", ")));
        let _ = writeln!(m, "Subject: {}", header(&self.title));
        m.push_str("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\nMIME-Version: 1.0\n\n");
        for l in &self.lines {
            // A line of one dot ends the message for sendmail without -i.
            let l = if l == "." { ".." } else { l.as_str() };
            let _ = writeln!(m, "{l}");
        }
        m
    }
}

/// A header value on one line.
fn header(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Sends a release's notifications; reports what could not be sent. Never fails.
pub fn release_ended(engine: &Engine, run: &Run, ended: &Ended, ok: bool) {
    let cfg = &engine.loaded.config.notify;
    if cfg.webhooks.is_empty() && cfg.mail_command.is_empty() {
        return;
    }
    if ended.facts.verdict == Verdict::Running {
        return;
    }
    let msg = message(engine, run, ended, ok);
    let log = Log::open(&run.dir.join("logs/notify.log")).unwrap_or_else(|_| Log::sink());
    log.line(&format!(
        "==== notifications for run {} ({}) at {} ====",
        msg.run,
        msg.event.as_str(),
        crate::run::now_rfc3339()
    ));
    let timeout = Duration::from_secs(cfg.timeout_secs);
    let mut sent = 0;
    let mut failed = Vec::new();
    for w in cfg.webhooks.iter().filter(|w| w.on.contains(&msg.event)) {
        let Ok(url) = Url::parse(&w.url) else { continue };
        let what = format!("webhook {} ({})", url.shown, format_name(w.format));
        match post(&url, w.format, &msg, timeout) {
            Ok(status) => {
                log.line(&format!("{what}: sent, HTTP {status}"));
                sent += 1;
            }
            Err(e) => {
                let why = url.scrub(&crate::ui::render_message(&e));
                log.line(&format!("{what}: NOT sent: {why}"));
                failed.push(format!("{what}: {why}"));
            }
        }
    }
    if !cfg.mail_command.is_empty() && cfg.mail_on.contains(&msg.event) {
        let cmd = CmdLine::new(&cfg.mail_command[0])
            .args(cfg.mail_command[1..].iter().cloned())
            .args(cfg.mail_to.iter().cloned());
        let what = format!("mail to {}", cfg.mail_to.join(", "));
        match cmd.output_within(&log, msg.mail(cfg).as_bytes(), timeout) {
            Ok(out) if out.success() => {
                log.line(&format!("{what}: sent"));
                sent += 1;
            }
            Ok(out) => {
                log.line(&format!("{what}: NOT sent"));
                failed.push(format!("{what}: {}", cmd.failure(&out)));
            }
            Err(e) => {
                log.line(&format!("{what}: NOT sent: {}", crate::ui::render_message(&e)));
                failed.push(format!("{what}: {}", crate::ui::render_message(&e)));
            }
        }
    }
    let ui = engine.ui;
    if sent > 0 {
        ui.eprintln(&format!("notify: sent {sent} notification(s) ({})", msg.event.as_str()));
    }
    for f in &failed {
        ui.eprintln(&format!("{} notification not sent: {f}", ui.yellow("warning:")));
    }
    if !failed.is_empty()
        && let Some(path) = log.path()
    {
        ui.eprintln(&format!(
            "  (the release's outcome is unchanged; details in {})",
            crate::engine::display_path(path)
        ));
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Json => "json",
        Format::Slack => "slack",
        Format::Matrix => "matrix",
        Format::Forgejo => "forgejo",
    }
}

/// Sends one webhook; the HTTP status of a 2xx answer.
fn post(url: &Url, format: Format, msg: &Message, timeout: Duration) -> Result<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(format!("mother-build/{} (notify)", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let body = serde_json::to_vec(&msg.body(format))?;
    let put = format == Format::Matrix && url.path.trim_end_matches('/').ends_with("/send/m.room.message");
    let response = if put {
        let (base, query) = match url.target.split_once('?') {
            Some((b, q)) => (b.trim_end_matches('/').to_owned(), format!("?{q}")),
            None => (url.target.trim_end_matches('/').to_owned(), String::new()),
        };
        let txn = format!("mother-build-{}-{}", msg.run, msg.event.as_str());
        let mut req = agent.put(format!("{base}/{txn}{query}")).header("Content-Type", "application/json");
        if let Some(u) = &url.userinfo {
            req = req.header("Authorization", format!("Basic {}", base64(u.as_bytes())));
        }
        req.send(&body[..])
    } else {
        let mut req = agent.post(&url.target).header("Content-Type", "application/json");
        if let Some(u) = &url.userinfo {
            req = req.header("Authorization", format!("Basic {}", base64(u.as_bytes())));
        }
        req.send(&body[..])
    };
    let response = response.map_err(|e| anyhow!("{e}"))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(anyhow!("the server answered HTTP {status}"));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_show_no_secret() {
        let u =
            Url::parse("https://bot:s3cr%40t@hooks.example.org/services/T000/B000/XXXXSECRET?token=abcd1234").unwrap();
        assert_eq!(u.shown, "https://hooks.example.org/…");
        assert_eq!(u.target, "https://hooks.example.org/services/T000/B000/XXXXSECRET?token=abcd1234");
        assert_eq!(u.userinfo.as_deref(), Some("bot:s3cr@t"));
        let scrubbed = u.scrub("error sending to https://hooks.example.org/services/T000/B000/XXXXSECRET?token=abcd1234: XXXXSECRET abcd1234 bot:s3cr%40t");
        for secret in ["XXXXSECRET", "abcd1234", "s3cr"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("https:///x").is_err());
    }

    #[test]
    fn basic_authentication_is_base64() {
        assert_eq!(base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
