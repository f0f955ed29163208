//! The gate's checks: the settings that describe them (markers, forbidden patterns, the
//! restart-loop rule), their FreeBSD defaults, and their compiled form, validated with
//! errors that point at the line of pipeline.toml.

use std::time::Duration;

use anyhow::Result;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

use crate::config::Loaded;
use crate::stage::Plan;

/// A required marker, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// Literal text to find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Or a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Deadline, counted from the previous marker (the first: from the start).
    pub within_secs: u64,
}

/// A forbidden pattern, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forbidden {
    /// A short name for reports (`kernel-panic`).
    pub name: String,
    /// The regular expression; `^` is the start of a console line.
    pub regex: String,
    /// Only forbidden until the last marker has been seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_last_marker: bool,
}

/// The restart-loop rule, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartLoop {
    /// The line a (re)start prints.
    pub regex: String,
    /// How many times within the window fail the boot; 0 turns the rule off.
    pub count: u32,
    /// The window, in seconds.
    pub within_secs: u64,
}

impl Default for RestartLoop {
    fn default() -> Self {
        RestartLoop { regex: r"Starting colibri_daemon\.".into(), count: 3, within_secs: 60 }
    }
}

/// The markers an image of ours prints, in order (docs/reference/boot-gate.md).
pub fn default_markers() -> Vec<Marker> {
    let m = |text: &str, within_secs| Marker { text: Some(text.into()), regex: None, within_secs };
    vec![
        m("Trying to mount root from", 300),
        m("Starting colibri_daemon.", 180),
        m("colibri_daemon: started", 60),
        m("login: ", 120),
    ]
}

/// The FreeBSD failure patterns (docs/reference/boot-gate.md, "FreeBSD console patterns").
pub fn default_forbidden() -> Vec<Forbidden> {
    let f = |name: &str, regex: &str| Forbidden { name: name.into(), regex: regex.into(), before_last_marker: false };
    vec![
        // Anchored: unanchored it also hits `reboot after panic:` from savecore.
        f("kernel-panic", r"^panic: "),
        f("fatal-trap", r"Fatal trap \d+:"),
        f("debugger-panic", r"KDB: enter: panic"),
        f("debugger-prompt", r"^db> "),
        f("debugger-stopped", r"Stopped at"),
        f("auto-reboot", r"Automatic reboot in \d+ seconds"),
        f("mountroot-prompt", r"^mountroot>"),
        f("root-not-found", r"Manual root filesystem specification:"),
        f("single-user", r"Enter full pathname of shell or RETURN for /bin/sh"),
        f("loader-no-kernel", r"can't load 'kernel'"),
        f("uefi-boot-failed", r"BdsDxe: failed to load Boot"),
        f("uefi-pxe", r"Start PXE over IPv4"),
        f("uefi-shell", r"^Shell> "),
        f("getty-loop", r"getty repeating too quickly on port"),
        f("colibri-permission-denied", r"colibri.*Permission denied|Permission denied.*colibri"),
        Forbidden { name: "shutdown".into(), regex: r"Uptime: ".into(), before_last_marker: true },
    ]
}

/// A compiled marker.
#[derive(Debug, Clone)]
pub struct MarkerCheck {
    /// How reports name it: the text, or `/regex/`.
    pub name: String,
    pub regex: Regex,
    pub within: Duration,
}

/// A compiled forbidden pattern.
#[derive(Debug, Clone)]
pub struct ForbiddenCheck {
    pub name: String,
    pub pattern: String,
    pub regex: Regex,
    pub before_last_marker: bool,
}

/// The compiled restart-loop rule.
#[derive(Debug, Clone)]
pub struct RestartCheck {
    pub pattern: String,
    pub regex: Regex,
    pub count: usize,
    pub window: Duration,
}

/// Everything the scanner looks for.
#[derive(Debug, Clone)]
pub struct Checks {
    pub markers: Vec<MarkerCheck>,
    pub forbidden: Vec<ForbiddenCheck>,
    /// All forbidden patterns at once: one pass over a line tells whether any matches.
    pub forbidden_set: RegexSet,
    pub restart: Option<RestartCheck>,
}

/// A pattern that cannot be used, and why.
struct BadPattern {
    reason: String,
    /// It parses, but compiled it exceeds the regex crate's size limit.
    too_big: bool,
}

impl From<regex::Error> for BadPattern {
    fn from(e: regex::Error) -> BadPattern {
        BadPattern { too_big: matches!(e, regex::Error::CompiledTooBig(_)), reason: e.to_string() }
    }
}

/// Below this weight (see [`weight`]) a pattern, or all forbidden patterns together,
/// cannot come near the regex crate's size limit (10 MiB of compiled program): there,
/// validation only parses. At or above it, validation compiles to find out.
const SMALL: u64 = 20_000;

/// Patterns match bytes (a console is not always valid UTF-8), so `.` is any byte.
/// A pattern compiled, or (when only validating) just parsed: parsing finds every
/// syntax error at a fraction of the cost of building the matcher, which matters
/// because every command validates pipeline.toml. A pattern heavy enough to approach
/// the size limit (a counted repetition of a counted repetition) is compiled anyway,
/// so one that can never be built is refused when the file is loaded. Returns the
/// pattern's weight too.
fn compile(pattern: &str, build: bool) -> Result<(Option<Regex>, u64), BadPattern> {
    if build {
        let regex = RegexBuilder::new(pattern).unicode(false).build()?;
        return Ok((Some(regex), 0));
    }
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| BadPattern { reason: e.to_string(), too_big: false })?;
    let weight = weight(&hir);
    if weight >= SMALL {
        RegexBuilder::new(pattern).unicode(false).build()?;
    }
    Ok((None, weight))
}

/// An upper estimate of the states a pattern compiles to: literals and classes count
/// their bytes and ranges, a repetition multiplies its body by its count.
fn weight(hir: &regex_syntax::hir::Hir) -> u64 {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 1,
        HirKind::Literal(lit) => lit.0.len() as u64,
        HirKind::Class(Class::Bytes(c)) => c.ranges().len() as u64,
        // A range beyond ASCII (`(?u)\w`) becomes many UTF-8 byte sequences.
        HirKind::Class(Class::Unicode(c)) => {
            c.ranges().iter().map(|r| if r.end().is_ascii() { 1 } else { 16 }).fold(0, u64::saturating_add)
        }
        HirKind::Repetition(r) => {
            let copies = u64::from(r.max.unwrap_or(r.min.saturating_add(1)).max(1));
            weight(&r.sub).saturating_mul(copies).saturating_add(1)
        }
        HirKind::Capture(c) => weight(&c.sub).saturating_add(2),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => subs.iter().map(weight).fold(1, u64::saturating_add),
    }
}

impl Checks {
    /// Compiles the `[gate]` checks; an error names the key and its line.
    pub fn compile(loaded: &Loaded) -> Result<Checks> {
        Ok(Self::build(loaded, true)?.expect("built when asked to"))
    }

    /// Checks the `[gate]` settings without building the matchers (at load time).
    pub fn validate(loaded: &Loaded) -> Result<()> {
        Self::build(loaded, false).map(|_| ())
    }

    fn build(loaded: &Loaded, build: bool) -> Result<Option<Checks>> {
        let cfg = &loaded.config.gate;
        let bad_regex = |key: String, what: String, pattern: &str, e: BadPattern| {
            if e.too_big {
                return loaded
                    .failure_at(&key, format!("{what}: `{pattern}` is too big to compile:\n{}", e.reason))
                    .help("make it smaller: a counted repetition (`{1000}`) copies what it repeats that many times");
            }
            loaded.failure_at(&key, format!("{what}: `{pattern}` is not a valid regular expression:\n{}", e.reason)).help(
                "the syntax is Rust's regex crate (https://docs.rs/regex); escape `.`, `(`, `[` and friends with `\\\\` to match them literally",
            )
        };

        if cfg.markers.is_empty() {
            return Err(loaded
                .failure_at("gate.markers", "there are no required markers, so nothing would prove the image booted")
                .help("list at least the login prompt, e.g. markers = [{ text = \"login: \", within_secs = 300 }]")
                .into());
        }
        let mut markers = Vec::new();
        for (i, m) in cfg.markers.iter().enumerate() {
            let key = format!("gate.markers.{i}");
            let (name, pattern) = match (&m.text, &m.regex) {
                (Some(text), None) => (text.clone(), regex::escape(text)),
                (None, Some(re)) => (format!("/{re}/"), re.clone()),
                _ => {
                    return Err(loaded
                        .error_at(&key, format!("marker {} needs exactly one of `text` (literal) or `regex`", i + 1)));
                }
            };
            if name.is_empty() || pattern.is_empty() {
                return Err(loaded.error_at(&key, format!("marker {} is empty", i + 1)));
            }
            let (regex, _) = compile(&pattern, build)
                .map_err(|e| bad_regex(format!("{key}.regex"), format!("marker {}", i + 1), &pattern, e))?;
            if m.within_secs == 0 {
                return Err(loaded.error_at(
                    &format!("{key}.within_secs"),
                    format!("marker {} (`{name}`) has a deadline of 0 seconds", i + 1),
                ));
            }
            if let Some(regex) = regex {
                markers.push(MarkerCheck { name, regex, within: Duration::from_secs(m.within_secs) });
            }
        }

        let mut forbidden = Vec::new();
        let mut forbidden_weight = 0u64;
        let lists = [("gate.forbidden", &cfg.forbidden), ("gate.forbidden_extra", &cfg.forbidden_extra)];
        for (table, list) in lists {
            for (i, f) in list.iter().enumerate() {
                let key = format!("{table}.{i}");
                if f.name.trim().is_empty() {
                    return Err(loaded.error_at(&format!("{key}.name"), "a forbidden pattern needs a name"));
                }
                let earlier = cfg.forbidden.iter().chain(&cfg.forbidden_extra);
                if earlier.take_while(|g| !std::ptr::eq(*g, f)).any(|g| g.name == f.name) {
                    return Err(loaded.error_at(
                        &format!("{key}.name"),
                        format!("the forbidden pattern name `{}` is used twice", f.name),
                    ));
                }
                if f.regex.is_empty() {
                    return Err(loaded.error_at(
                        &format!("{key}.regex"),
                        format!("the forbidden pattern `{}` is empty (it would match everything)", f.name),
                    ));
                }
                let (regex, weight) = compile(&f.regex, build).map_err(|e| {
                    bad_regex(format!("{key}.regex"), format!("forbidden pattern `{}`", f.name), &f.regex, e)
                })?;
                forbidden_weight = forbidden_weight.saturating_add(weight);
                if let Some(regex) = regex {
                    forbidden.push(ForbiddenCheck {
                        name: f.name.clone(),
                        pattern: f.regex.clone(),
                        regex,
                        before_last_marker: f.before_last_marker,
                    });
                }
            }
        }

        let r = &cfg.restart_loop;
        let restart = if r.count == 0 {
            None
        } else {
            if r.count < 2 {
                return Err(loaded.error_at(
                    "gate.restart_loop.count",
                    "a restart loop needs at least 2 starts (0 turns the rule off)",
                ));
            }
            if r.within_secs == 0 {
                return Err(loaded.error_at("gate.restart_loop.within_secs", "the restart-loop window is 0 seconds"));
            }
            if r.regex.is_empty() {
                return Err(loaded.error_at("gate.restart_loop.regex", "the restart-loop pattern is empty"));
            }
            let (regex, _) = compile(&r.regex, build).map_err(|e| {
                bad_regex("gate.restart_loop.regex".into(), "the restart-loop pattern".into(), &r.regex, e)
            })?;
            regex.map(|regex| RestartCheck {
                pattern: r.regex.clone(),
                regex,
                count: r.count as usize,
                window: Duration::from_secs(r.within_secs),
            })
        };
        // All forbidden patterns are also compiled into one set, which has the same size
        // limit: patterns fine one by one can be too big together.
        let patterns = || cfg.forbidden.iter().chain(&cfg.forbidden_extra).map(|f| &f.regex);
        let set = || {
            RegexSetBuilder::new(patterns()).unicode(false).build().map_err(|e| {
                let key = if cfg.forbidden_extra.is_empty() { "gate.forbidden" } else { "gate.forbidden_extra" };
                let failure = loaded.failure_at(key, format!("the forbidden patterns do not compile together: {e}"));
                match e {
                    regex::Error::CompiledTooBig(_) => failure.help("make them smaller, or fewer"),
                    _ => failure,
                }
            })
        };
        if !build {
            if forbidden_weight >= SMALL {
                set()?;
            }
            return Ok(None);
        }
        let forbidden_set = set()?;
        Ok(Some(Checks { markers, forbidden, forbidden_set, restart }))
    }

    /// The checks, as `--dry-run` shows them.
    pub fn plan(&self, steps: &mut Plan) {
        let markers: Vec<String> =
            self.markers.iter().map(|m| format!("`{}` within {}s", m.name, m.within.as_secs())).collect();
        steps.check(format!("console markers, in order: {}", markers.join(", then ")));
        let names: Vec<String> = self
            .forbidden
            .iter()
            .map(|f| {
                let until = if f.before_last_marker { ", before the last marker" } else { "" };
                format!("{} /{}/{until}", f.name, f.pattern)
            })
            .collect();
        steps.check(format!("forbidden, failing at once: {}", names.join("; ")));
        match &self.restart {
            Some(r) => steps.check(format!(
                "restart loop: /{}/ {} times within {}s fails",
                r.pattern,
                r.count,
                r.window.as_secs()
            )),
            None => steps.note("restart-loop rule off (gate.restart_loop.count = 0)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(extra: &str) -> Result<Checks> {
        let text = format!("[gate]\n{extra}\n");
        let config: crate::config::Config = toml::from_str(&text).unwrap();
        let l = Loaded::from_parts(config, "pipeline.toml".into(), ".".into());
        Checks::compile(&l)
    }

    #[test]
    fn the_defaults_compile() {
        let c = loaded("").unwrap();
        assert_eq!(c.markers.len(), 4);
        assert_eq!(c.markers[3].name, "login: ");
        assert!(c.forbidden.iter().any(|f| f.name == "shutdown" && f.before_last_marker));
        assert!(c.restart.is_some());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(loaded("markers = []").is_err());
        assert!(loaded("markers = [{ within_secs = 3 }]").is_err());
        assert!(loaded("markers = [{ text = \"a\", regex = \"b\", within_secs = 3 }]").is_err());
        assert!(loaded("markers = [{ text = \"a\", within_secs = 0 }]").is_err());
        assert!(loaded("forbidden_extra = [{ name = \"x\", regex = \"(\" }]").is_err());
        assert!(loaded("forbidden_extra = [{ name = \"kernel-panic\", regex = \"x\" }]").is_err());
        assert!(loaded("restart_loop = { regex = \"x\", count = 1, within_secs = 3 }").is_err());
        assert!(loaded("restart_loop = { regex = \"x\", count = 0, within_secs = 3 }").unwrap().restart.is_none());
    }

    #[test]
    fn non_ascii_literals_still_match() {
        let c = loaded("forbidden_extra = [{ name = \"x\", regex = \"čaj\" }]").unwrap();
        assert!(c.forbidden.last().unwrap().regex.is_match("vroč čaj".as_bytes()));
    }

    /// What validation (at load time, without building) says of `[gate]` with `extra`.
    fn validated(extra: &str) -> Result<()> {
        let text = format!("[gate]\n{extra}\n");
        let config: crate::config::Config = toml::from_str(&text).unwrap();
        Checks::validate(&Loaded::from_parts(config, "pipeline.toml".into(), ".".into()))
    }

    #[test]
    fn a_pattern_over_the_size_limit_is_refused_when_loaded() {
        for extra in [
            "forbidden_extra = [{ name = \"huge\", regex = \"a{1000}{1000}\" }]",
            "markers = [{ regex = \"(?:[a-z]{1000}x){1000}\", within_secs = 3 }]",
            "restart_loop = { regex = \"(?:ab){5000}{300}\", count = 2, within_secs = 3 }",
        ] {
            let err = crate::ui::render_error(&validated(extra).expect_err(extra));
            assert!(err.contains("is too big to compile") && err.contains("help: make it smaller"), "{extra}: {err}");
        }
    }

    #[test]
    fn patterns_too_big_only_together_are_refused_when_loaded() {
        // Each is under the limit; the set of all forbidden patterns is not.
        let one = "(?:[a-z]{100}x){160}";
        assert!(RegexBuilder::new(one).unicode(false).build().is_ok());
        let list: Vec<String> = (0..100).map(|i| format!("{{ name = \"p{i}\", regex = \"{one}{i}\" }}")).collect();
        let err = crate::ui::render_error(&validated(&format!("forbidden_extra = [{}]", list.join(", "))).unwrap_err());
        assert!(err.contains("do not compile together"), "{err}");
    }

    /// The bound validation trusts without building: anything lighter than [`SMALL`]
    /// compiles, whatever its shape.
    #[test]
    fn what_weighs_less_than_the_bound_compiles() {
        let n = SMALL - 2;
        for pattern in [
            format!("a{{{n}}}"),
            format!("[a-z]{{{n}}}"),
            format!("[\\x00\\x02\\x04\\x06\\x08\\x0a\\x0c\\x0e\\x10\\x12]{{{}}}", n / 10 - 1),
            format!("(?:a|b|c|d){{{}}}", n / 6),
            format!("(?u:\\w){{{}}}", n / (16 * 800)),
            format!("(?:x{{100}}){{{}}}", n / 102),
        ] {
            let hir = regex_syntax::ParserBuilder::new().unicode(false).utf8(false).build().parse(&pattern).unwrap();
            assert!(weight(&hir) < SMALL, "{pattern} weighs {}", weight(&hir));
            let built = RegexBuilder::new(&pattern).unicode(false).build();
            assert!(built.is_ok(), "{pattern} weighs {} but does not compile: {:?}", weight(&hir), built.err());
        }
    }
}
