//! The gate's checks: the settings that describe them (markers, forbidden patterns, the
//! restart-loop rule, the heartbeat), their FreeBSD defaults, and their compiled form,
//! validated with errors that point at the line of pipeline.toml.
//!
//! Every default is written from the source of the program that prints it; each one's
//! file and function is in docs/reference/boot-gate.md, "Default forbidden patterns".
//! Patterns may use placeholders, replaced before they are compiled:
//! - `{kernel}`: the prefix syslogd puts before a kernel line it writes to the console
//!   (`Mmm dd hh:mm:ss HOST kernel: `), optional: before syslogd runs, kernel `log()`
//!   lines reach the console without it;
//! - `{syslog}`: the time and host syslogd puts before a program's `TAG[PID]: `
//!   (`Mmm dd hh:mm:ss HOST `), optional;
//! - `{rc}`: the port's rc.d service names (`colibri_daemon|colibri_bridge`), as rc
//!   prints them;
//! - `{bin}`: the port's programs as the kernel names a process (`colibri-daemon|...`:
//!   the executable's basename, at most 19 characters).
//!
//! The names come from the port (see [`crate::port::PortNames`]); an empty list matches
//! nothing.

use std::time::Duration;

use anyhow::Result;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

use crate::config::Loaded;
use crate::port::PortNames;
use crate::stage::Plan;

/// A required marker, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// Literal text to find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Or a regular expression (placeholders allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// How reports name it; by default the text, or `/regex/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Deadline, counted from the previous marker (the first: from the start).
    pub within_secs: u64,
}

/// A forbidden pattern, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forbidden {
    /// A short name for reports (`kernel-panic`).
    pub name: String,
    /// The regular expression; `^` is the start of a console line, `$` its end. A group
    /// named `process` (`(?P<process>...)`) makes a line about a process listed in
    /// `gate.expected_crashes` harmless.
    pub regex: String,
    /// A line that also matches this is harmless (`uefi-boot-failed` and the network
    /// boot options the firmware tries before the disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<String>,
    /// Only forbidden until the last marker has been seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_last_marker: bool,
}

/// The restart-loop rule, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartLoop {
    /// The line a (re)start prints. With a group named `service`, each service is
    /// counted on its own.
    pub regex: String,
    /// How many times within the window fail the boot; 0 turns the rule off.
    pub count: u32,
    /// The window, in seconds.
    pub within_secs: u64,
}

impl Default for RestartLoop {
    /// daemon(8) restarts its child silently and rc prints `Starting NAME.` once per
    /// boot, so what repeats per restart is the service's own start line, as it
    /// reaches the console: `NAME: started` written to the console, or
    /// `... NAME[PID]: started` through syslogd (docs/reference/boot-gate.md,
    /// "Restart loops"). Three within a minute: a single deliberate restart passes.
    fn default() -> Self {
        RestartLoop { regex: r"^{syslog}(?P<service>{rc})(?:\[\d+\])?: started".into(), count: 3, within_secs: 60 }
    }
}

/// A line that must keep arriving after the last marker, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The line (a regular expression, placeholders allowed).
    pub regex: String,
    /// The longest gap allowed, in seconds: from the last marker to the first beat, and
    /// between beats, until the verdict.
    pub max_gap_secs: u64,
}

/// The markers an image of ours prints, in order (docs/reference/boot-gate.md).
pub fn default_markers() -> Vec<Marker> {
    let m = |text: &str, within_secs| Marker { text: Some(text.into()), regex: None, name: None, within_secs };
    vec![
        m("Trying to mount root from", 300),
        m("Starting colibri_daemon.", 180),
        // The daemon's own start line, written to the console or through syslogd.
        Marker {
            text: None,
            regex: Some(r"colibri_daemon(?:\[\d+\])?: started".into()),
            name: Some("colibri_daemon: started".into()),
            within_secs: 60,
        },
        m("login: ", 120),
    ]
}

/// The FreeBSD failure patterns, each from the source that prints it
/// (docs/reference/boot-gate.md, "Default forbidden patterns", has file and function).
pub fn default_forbidden() -> Vec<Forbidden> {
    let f = |name: &str, regex: &str| Forbidden {
        name: name.into(),
        regex: regex.into(),
        except: None,
        before_last_marker: false,
    };
    vec![
        // Firmware (edk2, bhyve's UEFI). Loading or starting the shell means every boot
        // option before it failed; a failed option is final unless it is a network
        // boot, which the firmware may try before the disk and fall through.
        f("uefi-no-bootable", r"BdsDxe: No bootable option or device was found"),
        f("uefi-shell-boot", r#"BdsDxe: (?:loading|starting) Boot[0-9A-Fa-f]{4} "EFI Internal Shell""#),
        Forbidden {
            except: Some(r#"Boot[0-9A-Fa-f]{4} "UEFI (?:PXEv[46]|HTTPv[46])"#.into()),
            ..f("uefi-boot-failed", r#"BdsDxe: failed to (?:load|start) Boot[0-9A-Fa-f]{4} ""#)
        },
        f("uefi-shell-startup", r"Press ESC in \d+ seconds to skip startup\.nsh"),
        f("uefi-shell", r"^Shell> "),
        // Loader (stand/). Its lines carry a spinner and carriage returns: unanchored.
        f("loader-kernel-failed", r"Failed to load kernel '"),
        f("loader-no-kernel", r"can't load '[^']*'"),
        f("loader-no-kernel-set", r"No kernel set, failed to load from module_path"),
        f("loader-prompt", r"Type '\?' for a list of commands, 'help' for more detailed help\."),
        // Kernel. Anchored: savecore's `reboot after panic: ...` must pass.
        f("kernel-panic", r"^panic: "),
        f("fatal-trap", r"^Fatal trap \d+: .* while in (?:user|kernel) mode"),
        f("double-fault", r"^Fatal double fault"),
        f("debugger-enter", r"^KDB: enter: "),
        f("debugger-prompt", r"^db> "),
        f("debugger-stopped", r"^Stopped at\s"),
        f("panic-reboot", r"^Automatic reboot in \d+ seconds - press a key on the console to abort"),
        f("panic-wait", r"^--> Press a key on the console to reboot"),
        f("mountroot-prompt", r"^mountroot> "),
        f("root-not-found", r"^Manual root filesystem specification:"),
        f("kernel-kill", r"^{kernel}pid \d+ \([^)]*\), jid \d+, uid \d+, was killed: "),
        f(
            "process-crash",
            r"^{kernel}pid \d+ \((?P<process>[^)]*)\), jid \d+, uid \d+: exited on signal (?:4|6|8|10|11|12)(?: \(|$)",
        ),
        Forbidden { before_last_marker: true, ..f("shutdown", r"^Uptime: ") },
        // rc and init.
        f("rc-failed-start", r"^\S+: WARNING: failed to start (?:{rc})$"),
        f("rc-failed-precmd", r"^\S+: WARNING: failed precmd routine for (?:{rc})$"),
        f("rc-failed-setup", r"^\S+: WARNING: failed to setup (?:{rc})$"),
        f("rc-cannot-run", r"^\S+: WARNING: run_rc_command: cannot run "),
        f("rc-abort", r"^ERROR: ABORTING BOOT \(sending SIGTERM to parent\)!"),
        f("daemon-refused", r"^daemon: (?:p?pidfile ``|process already running, pid: )"),
        f("fsck-inconsistency", r": UNEXPECTED (?:SOFT UPDATE )?INCONSISTENCY; RUN fsck\S* MANUALLY\."),
        f("fsck-summary", r"^THE FOLLOWING FILE SYSTEMS? HAD AN UNEXPECTED INCONSISTENCY:"),
        f("fsck-help", r"^(?:Automatic file system check failed|Unknown error \d+|Reboot failed); help!"),
        f("mount-aborted", r"^Mounting /etc/fstab filesystems failed, startup aborted"),
        f("rc-terminated", r"on /etc/rc terminated abnormally, going to single user mode"),
        f("single-user-password", r"Enter root password, or \^D to go multi-user"),
        f("single-user-shell", r"Enter full pathname of shell or RETURN for \S+: "),
        f("getty-loop", r"getty repeating too quickly on port \S+, sleeping \d+ secs"),
        // The port's own programs (a known regression of colibri's).
        f("service-permission-denied", r"(?:{bin}|{rc}).*Permission denied|Permission denied.*(?:{bin}|{rc})"),
    ]
}

/// syslogd's console prefix, `Mmm dd hh:mm:ss HOST ` (usr.sbin/syslogd/syslogd.c
/// `fprintlog_rfc3164()`: the day is padded with a space).
const SYSLOG_TIME_HOST: &str = r"[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} [^ ]+ ";

/// Replaces the placeholders in `pattern`; an unknown one is an error. `{` that is
/// escaped (`\{`) or that belongs to a repetition (`{2}`) is left alone.
pub fn expand(pattern: &str, names: &PortNames) -> Result<String, String> {
    let alternation = |list: &[String]| -> String {
        if list.is_empty() {
            // An empty class: matches nothing, as an empty list should.
            return r"[^\x00-\xFF]".into();
        }
        list.iter().map(|n| regex::escape(n)).collect::<Vec<_>>().join("|")
    };
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(i) = rest.find('{') {
        let escaped = rest[..i].chars().rev().take_while(|c| *c == '\\').count() % 2 == 1;
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let word_len = after.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(after.len());
        let closed = after[word_len..].starts_with('}');
        if escaped || word_len == 0 || !closed {
            out.push('{');
            rest = after;
            continue;
        }
        let word = &after[..word_len];
        match word {
            "kernel" => out.push_str(&format!("(?:{SYSLOG_TIME_HOST}kernel: )?")),
            "syslog" => out.push_str(&format!("(?:{SYSLOG_TIME_HOST})?")),
            "rc" => out.push_str(&format!("(?:{})", alternation(&names.services))),
            "bin" => out.push_str(&format!("(?:{})", alternation(&names.binaries))),
            other => {
                return Err(format!(
                    "`{{{other}}}` is not a placeholder; the placeholders are {{kernel}}, {{syslog}}, {{rc}} and {{bin}} (write `\\{{` for a literal brace)"
                ));
            }
        }
        rest = &after[word_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A compiled marker.
#[derive(Debug, Clone)]
pub struct MarkerCheck {
    /// How reports name it: its name, the text, or `/regex/`.
    pub name: String,
    pub regex: Regex,
    pub within: Duration,
}

/// A compiled forbidden pattern.
#[derive(Debug, Clone)]
pub struct ForbiddenCheck {
    pub name: String,
    /// As configured (placeholders and all), for reports.
    pub pattern: String,
    /// With the placeholders replaced.
    pub expanded: String,
    pub regex: Regex,
    pub except: Option<Regex>,
    /// Whether the regex has a `process` group (crashes the operator expects pass).
    pub has_process: bool,
    pub before_last_marker: bool,
}

/// The compiled restart-loop rule.
#[derive(Debug, Clone)]
pub struct RestartCheck {
    pub pattern: String,
    pub regex: Regex,
    /// Whether the regex has a `service` group: each service counts on its own.
    pub per_service: bool,
    pub count: usize,
    pub window: Duration,
}

/// The compiled heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatCheck {
    pub pattern: String,
    pub regex: Regex,
    pub max_gap: Duration,
}

/// Everything the scanner looks for.
#[derive(Debug, Clone)]
pub struct Checks {
    pub markers: Vec<MarkerCheck>,
    pub forbidden: Vec<ForbiddenCheck>,
    /// All forbidden patterns at once: one pass over a line tells whether any matches.
    pub forbidden_set: RegexSet,
    pub restart: Option<RestartCheck>,
    pub heartbeat: Option<HeartbeatCheck>,
    /// Processes (as the kernel names them) whose crash does not fail the boot.
    pub expected_crashes: Vec<Vec<u8>>,
    /// The names the placeholders stood for.
    pub names: PortNames,
}

/// A pattern that cannot be used, and why.
#[derive(Debug)]
pub struct BadPattern {
    reason: String,
    /// It parses, but compiled it exceeds the regex crate's size limit.
    too_big: bool,
}

impl From<regex::Error> for BadPattern {
    fn from(e: regex::Error) -> BadPattern {
        BadPattern { too_big: matches!(e, regex::Error::CompiledTooBig(_)), reason: e.to_string() }
    }
}

impl std::fmt::Display for BadPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Below this weight (see [`weight`]) a pattern, or all forbidden patterns together,
/// cannot come near the regex crate's size limit (10 MiB of compiled program): there,
/// validation only parses. At or above it, validation compiles to find out.
const SMALL: u64 = 20_000;

/// What a built-in forbidden pattern (or its exception) weighs at the most, with no
/// port names: validation counts this for one instead of parsing it.
const BUILTIN_WEIGHT: u64 = 128;

/// Patterns match bytes (a console is not always valid UTF-8), so `.` is any byte.
/// A pattern compiled, or (when only validating) just parsed: parsing finds every
/// syntax error at a fraction of the cost of building the matcher, which matters
/// because every command validates pipeline.toml. A pattern heavy enough to approach
/// the size limit (a counted repetition of a counted repetition) is compiled anyway,
/// so one that can never be built is refused when the file is loaded.
/// When only validating, also gives the pattern's weight (for the set's).
pub fn compile(pattern: &str, build: bool) -> Result<(Option<Regex>, u64), BadPattern> {
    if build {
        return Ok((Some(RegexBuilder::new(pattern).unicode(false).build()?), 0));
    }
    let weight = parse(pattern).map(|hir| weight(&hir))?;
    if weight >= SMALL {
        RegexBuilder::new(pattern).unicode(false).build()?;
    }
    Ok((None, weight))
}

fn parse(pattern: &str) -> Result<regex_syntax::hir::Hir, BadPattern> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| BadPattern { reason: e.to_string(), too_big: false })
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

/// Whether a pattern has a capture group of this name.
fn has_group(pattern: &str, name: &str) -> bool {
    pattern.contains(&format!("(?P<{name}>")) || pattern.contains(&format!("(?<{name}>"))
}

/// The error for a pattern that does not compile, pointing at its key.
pub fn bad_regex(loaded: &Loaded, key: &str, what: &str, pattern: &str, e: &BadPattern) -> anyhow::Error {
    if e.too_big {
        return loaded
            .failure_at(key, format!("{what}: `{pattern}` is too big to compile:\n{e}"))
            .help("make it smaller: a counted repetition (`{1000}`) copies what it repeats that many times")
            .into();
    }
    loaded
        .failure_at(key, format!("{what}: `{pattern}` is not a valid regular expression:\n{e}"))
        .help(
            "the syntax is Rust's regex crate (https://docs.rs/regex); escape `.`, `(`, `[` and friends with `\\\\` to match them literally",
        )
        .into()
}

/// Expands and compiles one pattern of the settings; errors point at `key`.
fn pattern(
    loaded: &Loaded,
    names: &PortNames,
    key: &str,
    what: &str,
    pattern: &str,
    build: bool,
) -> Result<(String, Option<Regex>, u64)> {
    let expanded = expand(pattern, names).map_err(|e| loaded.error_at(key, format!("{what}: {e}")))?;
    let (regex, weight) = compile(&expanded, build).map_err(|e| bad_regex(loaded, key, what, pattern, &e))?;
    Ok((expanded, regex, weight))
}

impl Checks {
    /// Compiles the `[gate]` checks with the port's names; an error names the key and
    /// its line.
    pub fn compile(loaded: &Loaded, names: &PortNames) -> Result<Checks> {
        Ok(Self::build(loaded, names, true)?.expect("built when asked to"))
    }

    /// Checks the `[gate]` settings without building the matchers (at load time).
    pub fn validate(loaded: &Loaded) -> Result<()> {
        Self::build(loaded, &PortNames::default(), false).map(|_| ())
    }

    fn build(loaded: &Loaded, names: &PortNames, build: bool) -> Result<Option<Checks>> {
        let cfg = &loaded.config.gate;
        if cfg.markers.is_empty() {
            return Err(loaded
                .failure_at("gate.markers", "there are no required markers, so nothing would prove the image booted")
                .help("list at least the login prompt, e.g. markers = [{ text = \"login: \", within_secs = 300 }]")
                .into());
        }
        let mut markers = Vec::new();
        for (i, m) in cfg.markers.iter().enumerate() {
            let key = format!("gate.markers.{i}");
            let (name, source) = match (&m.text, &m.regex) {
                (Some(text), None) => (text.clone(), regex::escape(text)),
                (None, Some(re)) => (format!("/{re}/"), re.clone()),
                _ => {
                    return Err(loaded
                        .error_at(&key, format!("marker {} needs exactly one of `text` (literal) or `regex`", i + 1)));
                }
            };
            let name = m.name.clone().unwrap_or(name);
            if name.is_empty() || source.is_empty() {
                return Err(loaded.error_at(&key, format!("marker {} is empty", i + 1)));
            }
            let (_, regex, _) =
                pattern(loaded, names, &format!("{key}.regex"), &format!("marker {}", i + 1), &source, build)?;
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
        // The built-in patterns are known to parse and to be light (a test holds both),
        // so validating does not parse them again on every command.
        let builtin = if build { Vec::new() } else { default_forbidden() };
        // Every forbidden pattern, expanded: they are also compiled into one set.
        let mut set_patterns: Vec<String> = Vec::new();
        // What they weigh together, when only validating.
        let mut set_weight = 0u64;
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
                let what = format!("forbidden pattern `{}`", f.name);
                if builtin.iter().any(|b| b.regex == f.regex && b.except == f.except) {
                    let expanded =
                        expand(&f.regex, names).map_err(|e| loaded.error_at(&key, format!("{what}: {e}")))?;
                    set_weight = set_weight.saturating_add(BUILTIN_WEIGHT);
                    set_patterns.push(expanded);
                    continue;
                }
                let (expanded, regex, weight) =
                    pattern(loaded, names, &format!("{key}.regex"), &what, &f.regex, build)?;
                set_weight = set_weight.saturating_add(weight);
                set_patterns.push(expanded.clone());
                let except = match &f.except {
                    None => None,
                    Some(e) if e.is_empty() => {
                        return Err(loaded.error_at(
                            &format!("{key}.except"),
                            format!("the exception of `{}` is empty (it would excuse everything)", f.name),
                        ));
                    }
                    Some(e) => {
                        let what = format!("the exception of `{}`", f.name);
                        pattern(loaded, names, &format!("{key}.except"), &what, e, build)?.1
                    }
                };
                if let Some(regex) = regex {
                    forbidden.push(ForbiddenCheck {
                        name: f.name.clone(),
                        pattern: f.regex.clone(),
                        expanded,
                        regex,
                        except,
                        has_process: has_group(&f.regex, "process"),
                        before_last_marker: f.before_last_marker,
                    });
                }
            }
        }
        for (i, name) in cfg.expected_crashes.iter().enumerate() {
            if name.is_empty() || name.contains(['(', ')']) || name.chars().any(char::is_control) {
                return Err(loaded.error_at(
                    &format!("gate.expected_crashes.{i}"),
                    format!("`{name}` is not a process name as the kernel prints it (the executable's basename)"),
                ));
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
            let (_, regex, _) =
                pattern(loaded, names, "gate.restart_loop.regex", "the restart-loop pattern", &r.regex, build)?;
            regex.map(|regex| RestartCheck {
                pattern: r.regex.clone(),
                regex,
                per_service: has_group(&r.regex, "service"),
                count: r.count as usize,
                window: Duration::from_secs(r.within_secs),
            })
        };

        let heartbeat = match &cfg.heartbeat {
            None => None,
            Some(h) => {
                if h.regex.is_empty() {
                    return Err(loaded.error_at("gate.heartbeat.regex", "the heartbeat pattern is empty"));
                }
                if h.max_gap_secs == 0 {
                    return Err(loaded.error_at("gate.heartbeat.max_gap_secs", "the heartbeat's gap is 0 seconds"));
                }
                if cfg.settle_secs < h.max_gap_secs {
                    return Err(loaded
                        .failure_at(
                            "gate.heartbeat.max_gap_secs",
                            format!(
                                "the heartbeat may pause {}s, longer than the {}s the gate watches after the last marker (gate.settle_secs), so it could never be missed",
                                h.max_gap_secs, cfg.settle_secs
                            ),
                        )
                        .help("raise gate.settle_secs to at least the gap, or shorten the gap")
                        .into());
                }
                let (_, regex, _) =
                    pattern(loaded, names, "gate.heartbeat.regex", "the heartbeat pattern", &h.regex, build)?;
                regex.map(|regex| HeartbeatCheck {
                    pattern: h.regex.clone(),
                    regex,
                    max_gap: Duration::from_secs(h.max_gap_secs),
                })
            }
        };
        // The set has the same size limit as each pattern: patterns fine one by one can
        // be too big together.
        let set = |patterns: Vec<&String>| {
            RegexSetBuilder::new(patterns).unicode(false).build().map_err(|e| {
                let key = if cfg.forbidden_extra.is_empty() { "gate.forbidden" } else { "gate.forbidden_extra" };
                let failure = loaded.failure_at(key, format!("the forbidden patterns do not compile together: {e}"));
                match e {
                    regex::Error::CompiledTooBig(_) => failure.help("make them smaller, or fewer"),
                    _ => failure,
                }
            })
        };
        if !build {
            if set_weight >= SMALL {
                set(set_patterns.iter().collect())?;
            }
            return Ok(None);
        }
        let forbidden_set = set(forbidden.iter().map(|f| &f.expanded).collect())?;
        Ok(Some(Checks {
            markers,
            forbidden,
            forbidden_set,
            restart,
            heartbeat,
            expected_crashes: cfg.expected_crashes.iter().map(|n| n.as_bytes().to_vec()).collect(),
            names: names.clone(),
        }))
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
        let list = |l: &[String]| if l.is_empty() { "none".to_owned() } else { l.join(", ") };
        steps.note(format!(
            "in the patterns, {{rc}} is the port's services ({}), {{bin}} its programs ({})",
            list(&self.names.services),
            list(&self.names.binaries)
        ));
        if !self.expected_crashes.is_empty() {
            let names: Vec<String> = self.expected_crashes.iter().map(|n| String::from_utf8_lossy(n).into()).collect();
            steps.note(format!("expected to crash (gate.expected_crashes): {}", names.join(", ")));
        }
        match &self.restart {
            Some(r) => steps.check(format!(
                "restart loop: /{}/ {} times within {}s fails",
                r.pattern,
                r.count,
                r.window.as_secs()
            )),
            None => steps.note("restart-loop rule off (gate.restart_loop.count = 0)"),
        }
        if let Some(h) = &self.heartbeat {
            steps.check(format!(
                "heartbeat: after the last marker, /{}/ at least every {}s until the verdict",
                h.pattern,
                h.max_gap.as_secs()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    /// What lets validation skip parsing the built-in patterns: each parses, and each
    /// (and each exception) weighs no more than [`BUILTIN_WEIGHT`] without port names.
    #[test]
    fn the_builtin_patterns_parse_and_are_light() {
        let none = PortNames::default();
        for f in default_forbidden() {
            for regex in std::iter::once(&f.regex).chain(f.except.as_ref()) {
                let hir = parse(&expand(regex, &none).unwrap()).unwrap();
                assert!(weight(&hir) <= BUILTIN_WEIGHT, "{}: weighs {}", f.name, weight(&hir));
            }
        }
        assert!(default_forbidden().len() as u64 * BUILTIN_WEIGHT < SMALL);
    }

    #[test]
    fn a_changed_builtin_pattern_is_validated_like_any_other() {
        let mut config: crate::config::Config = toml::from_str("").unwrap();
        config.gate.forbidden[0].regex.push_str("(unclosed");
        let err = Checks::validate(&Loaded::from_parts(config, "pipeline.toml".into(), ".".into())).unwrap_err();
        let text = crate::ui::render_error(&err);
        assert!(text.contains("`uefi-no-bootable`") && text.contains("is not a valid regular expression"), "{text}");
    }

    use super::*;

    fn loaded(extra: &str) -> Result<Checks> {
        let text = format!("[gate]\n{extra}\n");
        let config: crate::config::Config = toml::from_str(&text).unwrap();
        let l = Loaded::from_parts(config, "pipeline.toml".into(), ".".into());
        Checks::validate(&l)?;
        Checks::compile(&l, &PortNames::default())
    }

    #[test]
    fn the_defaults_compile() {
        let c = loaded("").unwrap();
        assert_eq!(c.markers.len(), 4);
        assert_eq!(c.markers[3].name, "login: ");
        assert_eq!(c.markers[2].name, "colibri_daemon: started");
        assert!(c.forbidden.iter().any(|f| f.name == "shutdown" && f.before_last_marker));
        assert!(c.forbidden.iter().any(|f| f.name == "process-crash" && f.has_process));
        let r = c.restart.unwrap();
        assert!(r.per_service);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(loaded("markers = []").is_err());
        assert!(loaded("markers = [{ within_secs = 3 }]").is_err());
        assert!(loaded("markers = [{ text = \"a\", regex = \"b\", within_secs = 3 }]").is_err());
        assert!(loaded("markers = [{ text = \"a\", within_secs = 0 }]").is_err());
        assert!(loaded("forbidden_extra = [{ name = \"x\", regex = \"(\" }]").is_err());
        assert!(loaded("forbidden_extra = [{ name = \"kernel-panic\", regex = \"x\" }]").is_err());
        assert!(loaded("forbidden_extra = [{ name = \"x\", regex = \"x\", except = \"\" }]").is_err());
        assert!(loaded("forbidden_extra = [{ name = \"x\", regex = \"{nope}\" }]").is_err());
        assert!(loaded("restart_loop = { regex = \"x\", count = 1, within_secs = 3 }").is_err());
        assert!(loaded("restart_loop = { regex = \"x\", count = 0, within_secs = 3 }").unwrap().restart.is_none());
        assert!(loaded("expected_crashes = [\"a (b)\"]").is_err());
        assert!(loaded("heartbeat = { regex = \"beat\", max_gap_secs = 0 }").is_err());
        // A heartbeat the settle period could never miss.
        assert!(loaded("settle_secs = 2\nheartbeat = { regex = \"beat\", max_gap_secs = 5 }").is_err());
        assert!(
            loaded("settle_secs = 5\nheartbeat = { regex = \"beat\", max_gap_secs = 5 }").unwrap().heartbeat.is_some()
        );
    }

    #[test]
    fn non_ascii_literals_still_match() {
        let c = loaded("forbidden_extra = [{ name = \"x\", regex = \"čaj\" }]").unwrap();
        assert!(c.forbidden.last().unwrap().regex.is_match("vroč čaj".as_bytes()));
    }

    #[test]
    fn placeholders_become_the_ports_names() {
        let names = PortNames {
            services: vec!["colibri_daemon".into(), "a.b".into()],
            binaries: vec!["colibri-daemon".into()],
        };
        assert_eq!(expand("x{rc}y", &names).unwrap(), r"x(?:colibri_daemon|a\.b)y");
        assert_eq!(expand("{bin}", &names).unwrap(), "(?:colibri\\-daemon)");
        // Repetitions, escaped braces and lone braces stay as they are.
        assert_eq!(expand(r"a{2}\{rc} {", &names).unwrap(), r"a{2}\{rc} {");
        assert!(expand("{nope}", &names).unwrap_err().contains("`{nope}` is not a placeholder"));
        // No names: the placeholder matches nothing.
        let none = Regex::new(&expand("^{rc}$", &PortNames::default()).unwrap()).unwrap();
        assert!(!none.is_match(b"") && !none.is_match(b"colibri_daemon"));
        let kernel = Regex::new(&expand("^{kernel}pid ", &names).unwrap()).unwrap();
        assert!(kernel.is_match(b"pid 1"));
        assert!(kernel.is_match(b"Apr  4 23:02:43 clawdie kernel: pid 1"));
        assert!(kernel.is_match(b"Dec 14 03:02:43 clawdie kernel: pid 1"));
        assert!(!kernel.is_match(b"Apr  4 23:02:43 clawdie sshd[4]: pid 1"));
        let syslog = Regex::new(&expand(r"^{syslog}{rc}(?:\[\d+\])?: started", &names).unwrap()).unwrap();
        assert!(syslog.is_match(b"Apr  4 23:02:43 clawdie colibri_daemon[812]: started"));
        assert!(syslog.is_match(b"colibri_daemon: started"));
        assert!(!syslog.is_match(b"Apr  4 23:02:43 clawdie kernel: started"));
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
