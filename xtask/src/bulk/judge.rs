//! Judging a finished poudriere build from its status files and the repository it
//! committed (docs/reference/poudriere.md section 15), and `bulk --judge DIR`, which
//! reports any finished build without building.

use std::fs;

use anyhow::{Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::status::{self, BuildStatus, Ending, Outcome};
use super::{BuiltPackage, Source, Target};
use crate::failure;
use crate::failure::{Class, Failure};
use crate::poudriere::Paths;
use crate::stage::StageName;

/// PORTVERSION as bsd.port.mk derives it from DISTVERSION:
/// `${DISTVERSION:tl:C/([a-z])[a-z]+/\1/g:C/([0-9])([a-z])/\1.\2/g:C/:(.)/\1/g:C/[^a-z0-9+]+/./g}`.
pub fn portversion(distversion: &str) -> String {
    use regex::Regex;
    let v = distversion.to_lowercase();
    let v = Regex::new("([a-z])[a-z]+").map(|r| r.replace_all(&v, "$1").into_owned()).unwrap_or(v);
    let v = Regex::new("([0-9])([a-z])").map(|r| r.replace_all(&v, "$1.$2").into_owned()).unwrap_or(v);
    let v = Regex::new(":(.)").map(|r| r.replace_all(&v, "$1").into_owned()).unwrap_or(v);
    Regex::new("[^a-z0-9+]+").map(|r| r.replace_all(&v, ".").into_owned()).unwrap_or(v)
}

/// Whether a package version (`PORTVERSION[_PORTREVISION][,PORTEPOCH]`) is of `portversion`.
fn version_matches(pkg_version: &str, portversion: &str) -> bool {
    match pkg_version.strip_prefix(portversion) {
        Some(rest) => rest.is_empty() || rest.starts_with('_') || rest.starts_with(','),
        None => false,
    }
}

/// What the status files say about the target.
pub enum Verdict {
    Success {
        packages: Vec<BuiltPackage>,
        real: Utf8PathBuf,
    },
    /// What kind of failure it is (infrastructure: poudriere itself), the message, and
    /// what to do about it.
    Failure {
        class: Class,
        message: String,
        help: String,
    },
}

impl Verdict {
    fn product(message: String, help: impl Into<String>) -> Verdict {
        Verdict::Failure { class: Class::Product, message, help: help.into() }
    }
    fn infrastructure(message: String, help: impl Into<String>) -> Verdict {
        Verdict::Failure { class: Class::Infrastructure, message, help: help.into() }
    }
}

/// What `judge` looks at besides the status files.
pub struct Judging<'a> {
    pub target: &'a Target,
    /// `POUDRIERE_DATA/packages/MASTERNAME`.
    pub packages: &'a Utf8Path,
    pub log_lines: usize,
    /// The last `Error:` line poudriere printed, when its output is at hand (a crash's
    /// reason is only there).
    pub poudriere_error: Option<String>,
    /// Judged right after this bulk ran poudriere (so a signal it records was not this
    /// bulk's timeout or Ctrl-C, which stop the stage before any judging).
    pub just_ran: bool,
}

/// Judges a finished build for `target` (docs/reference/poudriere.md section 15).
pub fn judge(build: &BuildStatus, j: &Judging) -> Verdict {
    let origin = j.target.origin.as_str();
    let name = build.dir.file_name().unwrap_or("?");
    if let Some(verdict) = judge_ending(build, j) {
        return verdict;
    }
    let pkgnames = build.pkgnames_of(origin);
    if pkgnames.is_empty() {
        return Verdict::product(
            format!(
                "poudriere build {name} finished without {origin} in any of its lists (queued, built, fetched, failed, skipped, ignored; {})\n  logs: {}",
                build.counts(),
                build.dir
            ),
            "check that `cargo xtask port` staged the port and that the overlay tree is registered for this repository's ports/ (`cargo xtask setup --check`)",
        );
    }
    let mut done: Vec<(String, String, Source)> = Vec::new();
    for pkgname in pkgnames {
        let (originspec, source) = match build.outcome_of(pkgname) {
            Outcome::Failed(f) if f.crashed => return crashed_builder(build, j, f),
            Outcome::Failed(f) => return port_failed(build, j, f),
            Outcome::Skipped(s) => return skipped(build, j, s),
            Outcome::Ignored(i) => {
                return Verdict::product(
                    format!(
                        "poudriere ignored {origin} ({}) in build {name}: {}\n  nothing was built",
                        i.pkgname, i.reason
                    ),
                    "the port declares itself IGNORE, BROKEN or not for this jail's architecture or release: fix its Makefile in colibri",
                );
            }
            Outcome::Built(b) => (b.originspec.clone(), Source::Built),
            Outcome::Fetched(b) => (b.originspec.clone(), Source::Fetched),
            Outcome::UpToDate(q) => (q.originspec.clone(), Source::UpToDate),
            Outcome::Unlisted => continue,
        };
        done.push((originspec, pkgname.to_owned(), source));
    }
    committed(build, j, done)
}

/// How poudriere itself ended; `None` when it finished normally.
fn judge_ending(build: &BuildStatus, j: &Judging) -> Option<Verdict> {
    let name = build.dir.file_name().unwrap_or("?");
    let rerun = "what the build had finished stays in the repository's .building and is not built again; then rerun: cargo xtask bulk";
    Some(match &build.ending {
        Ending::Done => return None,
        Ending::Crashed { stopped } => {
            let said = match &j.poudriere_error {
                Some(line) => format!("poudriere said: {line}"),
                None => "poudriere's reason is the `Error:` line it printed (the bulk stage log has its output)".into(),
            };
            let cleanup = if *stopped {
                ""
            } else {
                "\n  its exit handler did not stop the build jails: look for leftovers (`poudriere status`, `jls`)"
            };
            Verdict::infrastructure(
                format!(
                    "poudriere crashed during build {name}, at `{}` (.poudriere.status `{}`; {}){cleanup}\n  {said}\n  this is an infrastructure error, not a port failure\n  logs: {}",
                    build.phase_when_stopped(),
                    build.status,
                    build.counts(),
                    build.dir
                ),
                format!("check the host (disk space, the ZFS pool, the jail) and poudriere's configuration; {rerun}"),
            )
        }
        Ending::Signal { signal, stopped } => {
            let how = if *stopped {
                "it stopped its builders and jails and exited 1"
            } else {
                "it did not finish stopping its builders and jails: look for leftovers (`poudriere status`, `jls`)"
            };
            let whence =
                if j.just_ran { "; the signal did not come from this bulk (its timeout or Ctrl-C)" } else { "" };
            Verdict::infrastructure(
                format!(
                    "poudriere was stopped by {signal} during build {name}, at `{}` (.poudriere.status `{}`; {}): {how}{whence}\n  this is an infrastructure error, not a port failure\n  logs: {}",
                    build.phase_when_stopped(),
                    build.status,
                    build.counts(),
                    build.dir
                ),
                format!("find out what stopped poudriere (a shutdown, an operator, another tool); {rerun}"),
            )
        }
        Ending::Unfinished(at) => Verdict::infrastructure(
            format!(
                "poudriere build {name} never finished: its status is still `{at}` ({})\n  poudriere died or was killed before it wrote `stopped:done:`: an infrastructure error, not a port failure\n  logs: {}",
                build.counts(),
                build.dir
            ),
            format!(
                "look for leftover jails (`poudriere status`, `jls`) and poudriere's output in the stage log; {rerun}"
            ),
        ),
        Ending::Unknown => Verdict::infrastructure(
            format!(
                "poudriere build {name} has no .poudriere.status in {}: it never got going (an infrastructure error)",
                build.dir
            ),
            "poudriere's own output is in the stage log; check the host with `cargo xtask setup --check`",
        ),
    })
}

/// A builder died under the port (the four-field failed line).
fn crashed_builder(build: &BuildStatus, j: &Judging, f: &status::Failed) -> Verdict {
    let name = build.dir.file_name().unwrap_or("?");
    let crashed: Vec<&str> = build.crashed_builders().collect();
    let mut message = format!(
        "the poudriere builder building {} ({}) crashed in build {name}, {}: .poudriere.ports.failed has `{} {} {} {}` (phase twice, no error type, no elapsed time){}\n  this is an infrastructure error (the builder's process or jail died), not a port failure",
        f.originspec,
        f.pkgname,
        if f.phase.is_empty() { "before it reported any status".to_owned() } else { format!("at `{}`", f.phase) },
        f.originspec,
        f.pkgname,
        f.phase,
        f.phase,
        match crashed.as_slice() {
            [] => String::new(),
            ids => format!(", and .poudriere.status.{} is `crashed:`", ids.join(", .poudriere.status.")),
        },
    );
    message.push_str(&log_excerpt(build, &f.pkgname, j.log_lines));
    Verdict::infrastructure(
        message,
        "check the host (memory, tmpfs and disk space, the jail's mounts: the end of the build log says `Build crashed`); then rerun: cargo xtask bulk",
    )
}

/// The port failed in a phase.
fn port_failed(build: &BuildStatus, j: &Judging, f: &status::Failed) -> Verdict {
    let name = build.dir.file_name().unwrap_or("?");
    let mut message = format!(
        "{} ({}) failed in the `{}` phase of poudriere build {name}{}",
        j.target.origin,
        f.pkgname,
        f.phase,
        errortype(f),
    );
    if let Some(why) = phase_limit(&f.phase) {
        message.push_str(&format!("\n  {why}"));
    }
    message.push_str(&log_excerpt(build, &f.pkgname, j.log_lines));
    Verdict::product(message, phase_help(&f.phase))
}

fn errortype(f: &status::Failed) -> String {
    if f.errortype.is_empty() { String::new() } else { format!(" (error type: {})", f.errortype) }
}

/// A dependency failed, crashed or was ignored, so the port was skipped.
fn skipped(build: &BuildStatus, j: &Judging, s: &status::Skipped) -> Verdict {
    let name = build.dir.file_name().unwrap_or("?");
    let mut message = format!("{} ({}) was skipped in poudriere build {name}: ", j.target.origin, s.pkgname);
    match build.failure_of_pkg(&s.culprit) {
        Some(c) if c.crashed => {
            message.push_str(&format!(
                "the poudriere builder building its dependency {} ({}) crashed{}: .poudriere.ports.failed has its four-field line\n  this is an infrastructure error, not a port failure",
                c.originspec,
                c.pkgname,
                if c.phase.is_empty() { String::new() } else { format!(" at `{}`", c.phase) },
            ));
            message.push_str(&log_excerpt(build, &c.pkgname, j.log_lines));
            return Verdict::infrastructure(
                message,
                "check the host (memory, tmpfs and disk space, the jail's mounts); then rerun: cargo xtask bulk",
            );
        }
        Some(c) => {
            message.push_str(&format!(
                "its dependency {} ({}) failed in the `{}` phase{}",
                c.originspec,
                c.pkgname,
                c.phase,
                errortype(c)
            ));
            if let Some(why) = phase_limit(&c.phase) {
                message.push_str(&format!("\n  {why}"));
            }
            message.push_str(&log_excerpt(build, &c.pkgname, j.log_lines));
        }
        None => match build.ignored.iter().find(|i| i.pkgname == s.culprit) {
            Some(i) => {
                message.push_str(&format!("its dependency {} ({}) was ignored: {}", i.originspec, i.pkgname, i.reason))
            }
            None => message.push_str(&format!("its dependency {} could not be built", s.culprit)),
        },
    }
    Verdict::product(
        message,
        "the dependency must build first: read its log; bulk.prebuilt = \"latest\" takes dependencies such as rust prebuilt from the FreeBSD package servers instead of building them",
    )
}

/// The port's packages are built, fetched or current: the build must have committed
/// them, at the version `port` staged (reference section 7).
fn committed(build: &BuildStatus, j: &Judging, done: Vec<(String, String, Source)>) -> Verdict {
    let name = build.dir.file_name().unwrap_or("?");
    let latest = j.packages.join(".latest");
    let what = describe_all(&done);
    let Some(real) = link_target(&latest) else {
        return Verdict::product(
            format!(
                "poudriere build {name} {what}, but {latest} is not a link to a repository: the build was not committed"
            ),
            "see poudriere's output in the stage log (pkgrepo and committing phases); rerun: cargo xtask bulk",
        );
    };
    // `.latest/.buildname` names the build that committed the repository it serves.
    let served = read_trimmed(&real.join(".buildname"));
    if served.as_deref() != Some(name) {
        let pending = read_trimmed(&j.packages.join(".building/.buildname"));
        let failed = build.stats.failed.max(build.failed.len() as u64);
        let served = match &served {
            Some(b) => format!("build {b}"),
            None => format!("a repository without .buildname ({real})"),
        };
        if failed > 0 && pending.as_deref() == Some(name) {
            return Verdict::product(
                format!(
                    "poudriere build {name} {what}, but committed nothing: {failed} other port(s) failed, and with COMMIT_PACKAGES_ON_FAILURE=no poudriere then keeps the build's packages in {} and leaves {latest} serving {served} (.poudriere.status is `{}` all the same)",
                    j.packages.join(".building"),
                    build.status
                ),
                "fix or drop the failing ports (.poudriere.ports.failed), or set COMMIT_PACKAGES_ON_FAILURE=yes in poudriere's configuration; then rerun: cargo xtask bulk",
            );
        }
        return Verdict::product(
            format!(
                "poudriere build {name} {what}, but {latest} serves {served}, not this build: it was never committed, or a later build has replaced it"
            ),
            "see poudriere's output in the stage log (pkgrepo and committing phases); rerun: cargo xtask bulk",
        );
    }
    let mut packages = Vec::new();
    for (origin, pkgname, source) in done {
        let version = status::version_of(&pkgname).to_owned();
        if let Some(want) = &j.target.version
            && !version_matches(&version, want)
        {
            return Verdict::product(
                format!(
                    "poudriere's package for {} is {pkgname}, but `port` staged version {want}: this build did not use the port this run staged",
                    j.target.origin
                ),
                "the overlay tree must be registered at this repository's ports/ (`cargo xtask setup --check`); then rerun: cargo xtask bulk",
            );
        }
        let file = Utf8PathBuf::from(format!("All/{pkgname}.pkg"));
        if !real.join(&file).is_file() {
            return Verdict::product(
                format!(
                    "poudriere build {name} {what}, but the repository it committed has no {file} ({latest} -> {real})"
                ),
                "see poudriere's output in the stage log; rerun: cargo xtask bulk",
            );
        }
        packages.push(BuiltPackage { origin, pkgname, version, file, source });
    }
    Verdict::Success { packages, real }
}

/// `lists colibri-0.9.0 as built`, `found colibri-0.9.0 already up to date`, ...
fn describe_all(done: &[(String, String, Source)]) -> String {
    let parts: Vec<String> = done
        .iter()
        .map(|(_, pkgname, source)| match source {
            Source::Built => format!("lists {pkgname} as built"),
            Source::Fetched => format!("lists {pkgname} as fetched from the package servers"),
            Source::UpToDate => format!("found {pkgname} already up to date"),
        })
        .collect();
    parts.join(" and ")
}

fn read_trimmed(path: &Utf8Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// The last `Error:` line in poudriere's output (`[00:00:04] Error: ...`).
pub(super) fn error_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    text.lines().rev().find(|l| l.contains("Error: ")).map(|l| l.trim().to_owned())
}

/// Where a symlink points, as a path (relative targets resolved against its directory).
pub(super) fn link_target(link: &Utf8Path) -> Option<Utf8PathBuf> {
    let target = link.read_link_utf8().ok()?;
    Some(match link.parent() {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target,
    })
}

/// The build log's path and its last lines, for a failure message.
fn log_excerpt(build: &BuildStatus, pkgname: &str, lines: usize) -> String {
    let log = build.log_of(pkgname);
    let errors = build.dir.join("logs/errors").join(format!("{pkgname}.log"));
    let shown = if log.is_file() { &log } else { &errors };
    let tail = crate::run::tail_file(shown, lines);
    let mut out = format!("\n  build log: {shown}");
    if tail.is_empty() {
        out.push_str(" (missing or empty)");
    } else {
        out.push_str(&format!("\n  last lines of the build log:\n{tail}"));
    }
    out
}

/// What a `PHASE/timeout` or `PHASE/runaway` phase means (common.sh `build_port`:
/// nohang's limits).
fn phase_limit(phase: &str) -> Option<String> {
    let (name, how) = phase.rsplit_once('/')?;
    match how {
        "timeout" => Some(format!(
            "poudriere killed the `{name}` phase for running longer than MAX_EXECUTION_TIME (86400 s by default; extract and install 3600 s, package 7200 s)"
        )),
        "runaway" => Some(format!(
            "poudriere killed the `{name}` phase as a runaway: its log got no new output for NOHANG_TIME (7200 s by default)"
        )),
        _ => None,
    }
}

/// What a failure in a phase usually means.
fn phase_help(phase: &str) -> &'static str {
    match phase {
        p if p.ends_with("/timeout") || p.ends_with("/runaway") => {
            "read the end of the build log for what the phase was doing; if it legitimately needs longer, raise MAX_EXECUTION_TIME or NOHANG_TIME in a poudriere.d/JAIL-poudriere.conf (read after poudriere.conf, left alone by setup)"
        }
        "fetch" | "checksum" => {
            "a distfile could not be fetched or does not match distinfo: rerun `cargo xtask makesum`, and check that poudriere.distfiles is poudriere's DISTFILES_CACHE"
        }
        "check-sanity" => "the port's Makefile is not valid for this jail: read the build log",
        p if p.ends_with("-depends") => {
            "a dependency could not be installed in the jail: read the build log; bulk.prebuilt = \"latest\" takes prebuilt dependencies"
        }
        "extract" | "patch" => "the source archive did not unpack or a patch did not apply: read the build log",
        "configure" | "build" => {
            "the code did not compile in the jail: read the build log, fix colibri, tag the fix, and rerun from `cargo xtask port`"
        }
        "stage" | "install" => "installing into the staging area failed: read the build log",
        "check-plist" | "stage-qa" | "leftovers" | "package" => {
            "the staged files do not match the port's pkg-plist (or the package could not be made): fix pkg-plist in colibri's port"
        }
        _ => "read the build log",
    }
}

// ---------------------------------------------------------------------------------
// `bulk --judge DIR`: an existing build, re-read without building

/// How many entries of each list the report shows.
const REPORT_LIMIT: usize = 20;

pub(super) fn judge_command(engine: &crate::engine::Engine, dir: &Utf8Path) -> Result<()> {
    let loaded = engine.loaded;
    let ui = engine.ui;
    let dir = crate::config::absolute(dir)?;
    let Some(build) = BuildStatus::read(&dir)? else {
        bail!(
            failure!("{dir} does not exist")
                .help("pass a build's log directory, POUDRIERE_DATA/logs/bulk/MASTERNAME/BUILDNAME")
        );
    };
    // POUDRIERE_DATA/logs/bulk/MASTERNAME/BUILDNAME -> POUDRIERE_DATA/packages/MASTERNAME.
    let mastername = dir.parent().and_then(Utf8Path::file_name).unwrap_or_default().to_owned();
    let data = dir.ancestors().nth(4).filter(|_| dir.ancestors().nth(2).and_then(Utf8Path::file_name) == Some("bulk"));
    let data = data.map(Utf8Path::to_owned).unwrap_or_else(|| Paths::new(loaded).data);
    let packages = data.join("packages").join(&mastername);

    let port = engine.state.current().ok().flatten().and_then(|run| {
        run.state.usable_outputs(StageName::Port).and_then(|o| o.parse::<crate::port::PortOutputs>().ok())
    });
    let target = match port {
        Some(p) => Target { origin: p.origin, version: Some(portversion(&p.distversion)), portname: Some(p.portname) },
        None => Target { origin: loaded.config.port.origin.clone(), portname: None, version: None },
    };

    ui.println(&format!(
        "build {} of {mastername}: {}",
        dir.file_name().unwrap_or("?"),
        if build.status.is_empty() { "(no .poudriere.status)" } else { &build.status }
    ));
    ui.println(&format!("  {}", build.counts()));
    report_list(ui, "failed", build.failed.len(), &dir.join(".poudriere.ports.failed"), |i| {
        let f = &build.failed[i];
        let why = match (f.crashed, f.errortype.is_empty()) {
            (true, _) => " (builder crashed)".to_owned(),
            (false, true) => String::new(),
            (false, false) => format!(" ({})", f.errortype),
        };
        format!("{}  {}  {}{why}", f.originspec, f.pkgname, f.phase)
    });
    report_list(ui, "skipped", build.skipped.len(), &dir.join(".poudriere.ports.skipped"), |i| {
        let s = &build.skipped[i];
        format!("{}  {}  because of {}", s.originspec, s.pkgname, s.culprit)
    });
    report_list(ui, "ignored", build.ignored.len(), &dir.join(".poudriere.ports.ignored"), |i| {
        let s = &build.ignored[i];
        format!("{}  {}  {}", s.originspec, s.pkgname, s.reason)
    });
    report_list(ui, "fetched", build.fetched.len(), &dir.join(".poudriere.ports.fetched"), |i| {
        let s = &build.fetched[i];
        format!("{}  {}", s.originspec, s.pkgname)
    });
    let judging = Judging {
        target: &target,
        packages: &packages,
        log_lines: loaded.config.bulk.log_lines,
        poudriere_error: None,
        just_ran: false,
    };
    match judge(&build, &judging) {
        Verdict::Success { packages: built, real } => {
            for p in &built {
                ui.println(&format!("{}: {} ({} in {real})", target.origin, p.describe(), p.file));
            }
            Ok(())
        }
        Verdict::Failure { class, message, help } => {
            ui.println(&crate::ui::render_error(&Failure::new(message).help(help).into()));
            Err(Failure::reported(class).into())
        }
    }
}

fn report_list(ui: &crate::ui::Ui, what: &str, len: usize, file: &Utf8Path, line: impl Fn(usize) -> String) {
    if len == 0 {
        return;
    }
    ui.println(&format!("  {what} ({len}):"));
    for i in 0..len.min(REPORT_LIMIT) {
        ui.println(&format!("    {}", line(i)));
    }
    if len > REPORT_LIMIT {
        ui.println(&format!("    ... and {} more in {file}", len - REPORT_LIMIT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portversion_follows_bsd_port_mk() {
        assert_eq!(portversion("0.9.0"), "0.9.0");
        assert_eq!(portversion("1.0-RC1"), "1.0.r1");
        assert_eq!(portversion("2.3beta4"), "2.3.b4");
        assert_eq!(portversion("1_2_3"), "1.2.3");
    }

    #[test]
    fn versions_match_with_revision_and_epoch() {
        assert!(version_matches("0.9.0", "0.9.0"));
        assert!(version_matches("0.9.0_1", "0.9.0"));
        assert!(version_matches("0.9.0_1,1", "0.9.0"));
        assert!(!version_matches("0.9.01", "0.9.0"));
        assert!(!version_matches("0.8.0", "0.9.0"));
    }
}
