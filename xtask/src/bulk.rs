//! bulk: builds the staged port with `poudriere bulk` under a fresh build name, then
//! judges the build from its status files, never from poudriere's exit status (which
//! counts failed and skipped ports modulo 256 and ignores ignored ones). Success means
//! the package for the port's version is in the repository poudriere serves.

mod status;

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Bulk;
use crate::failure;
use crate::failure::{Class, Failure};
use crate::fingerprint::Fingerprint;
use crate::poudriere::{self, Paths};
use crate::proc::{CmdLine, Interrupted, StreamOpts, TimedOut};
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};

pub use status::{BuildStatus, Ending, Stats};

settings! {
    /// bulk: building the port with `poudriere bulk` and judging the build.
    pub struct BulkConfig {
        /// `bulk -b BRANCH`: take prebuilt dependencies (rust!) from the FreeBSD package
        /// servers' `latest` or `quarterly` branch; empty builds every dependency.
        pub prebuilt: String = "latest".into(),
        /// Stop poudriere after this many seconds (0: no limit).
        pub timeout_secs: u64 = 14400,
        /// After a timeout or Ctrl-C, seconds poudriere gets to clean up its jails
        /// between SIGTERM and SIGKILL.
        pub grace_secs: u64 = 120,
        /// Lines of a failed port's build log shown with the error.
        pub log_lines: usize = 30,
    }
}

/// A package poudriere built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltPackage {
    /// `origin[@flavor]`, as in `.poudriere.ports.built`.
    pub origin: String,
    /// `name-version`, e.g. `colibri-0.9.0`.
    pub pkgname: String,
    pub version: String,
    /// The package file, relative to `repo` (`All/colibri-0.9.0.pkg`).
    pub file: camino::Utf8PathBuf,
}

/// What `bulk` records for later stages. (Contract: sign reads it; fields may be
/// added, not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkOutputs {
    /// The `-B` build name of this run's build.
    pub build_name: String,
    /// `JAIL-TREE[-SET]`.
    pub mastername: String,
    /// The poudriere set (`-z`), if any.
    pub set: Option<String>,
    /// `POUDRIERE_DATA/logs/bulk/MASTERNAME/BUILDNAME`.
    pub log_dir: camino::Utf8PathBuf,
    /// The repository: `POUDRIERE_DATA/packages/MASTERNAME/.latest` (absolute).
    pub repo: camino::Utf8PathBuf,
    /// What was built for the port's origin.
    pub packages: Vec<BuiltPackage>,
    /// The directory `.latest` pointed at when the build was judged
    /// (`POUDRIERE_DATA/packages/MASTERNAME/.real_EPOCH`, absolute). A later build
    /// switches `.latest` away from it.
    #[serde(default)]
    pub real: camino::Utf8PathBuf,
    /// poudriere's exit status (recorded, never trusted).
    #[serde(default)]
    pub poudriere_exit: Option<i32>,
    /// The build's counts from `.poudriere.stats_*`.
    #[serde(default)]
    pub stats: Stats,
}

/// The port bulk builds: from `port`'s outputs, or the configuration in a dry run.
#[derive(Debug, Clone)]
pub struct Target {
    pub origin: String,
    /// PORTNAME, when known.
    pub portname: Option<String>,
    /// PORTVERSION (from DISTVERSION), when known.
    pub version: Option<String>,
}

/// What bulk will run, and where poudriere will put the results.
pub struct BulkPlan {
    steps: Plan,
    cmd: CmdLine,
    target: Target,
    set: Option<String>,
    mastername: String,
    build: String,
    log_dir: Utf8PathBuf,
    packages: Utf8PathBuf,
}

impl StagePlan for BulkPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

impl Bulk {
    fn set(&self) -> Result<Option<String>> {
        match &self.set {
            Some(set) => {
                poudriere::check_set_name(set).map_err(|e| anyhow!("--set {set}: {e}"))?;
                Ok(Some(set.clone()))
            }
            None => Ok(None),
        }
    }

    fn mastername(&self, cx: &Cx) -> Result<String> {
        let p = &cx.config().poudriere;
        Ok(poudriere::mastername(&p.jail, &p.tree, self.set()?.as_deref()))
    }

    /// `cargo xtask bulk`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        if let Some(dir) = &self.judge {
            return judge_command(engine, dir);
        }
        engine.run_one(&self, self.dry_run)
    }
}

impl Stage for Bulk {
    const NAME: StageName = StageName::Bulk;
    type Outputs = BulkOutputs;
    type Plan = BulkPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let paths = Paths::new(cx.loaded);
        let set = self.set()?;
        let mut fp = Fingerprint::new();
        fp.json("poudriere", &cx.config().poudriere).json("signing", &cx.config().signing).json("set", &set);
        fp.file("poudriere.conf", &paths.conf())?;
        if let Some(set) = &set {
            fp.file("set make.conf", &paths.set_make_conf(set))?;
        }
        Ok(fp)
    }

    fn outputs_intact(&self, _cx: &Cx, o: &BulkOutputs) -> bool {
        // Still the repository this build committed, with its packages in it.
        link_target(&o.repo).as_deref() == Some(o.real.as_path())
            && o.packages.iter().all(|p| o.real.join(&p.file).is_file())
    }

    fn plan(&self, cx: &Cx) -> Result<BulkPlan> {
        let cfg = cx.config();
        let p = &cfg.poudriere;
        let paths = Paths::new(cx.loaded);
        let mut steps = Plan::default();
        let set = self.set()?;
        let target = target(cx, &mut steps)?;
        check_poudriere_conf(cx, &paths, set.as_deref(), &mut steps)?;

        let mastername = self.mastername(cx)?;
        let build = fresh_build_name(cx, &paths, &mastername);
        let log_dir = paths.log_dir(&mastername, &build);
        let packages = paths.packages(&mastername);

        let mut cmd = poudriere::command(cx.loaded).args(["bulk", "-j", &p.jail, "-p", &p.tree, "-O", &p.overlay]);
        if let Some(set) = &set {
            cmd = cmd.args(["-z", set]);
        }
        cmd = cmd.args(["-B", &build]);
        if !cfg.bulk.prebuilt.is_empty() {
            cmd = cmd.args(["-b", &cfg.bulk.prebuilt]);
        }
        cmd = cmd.arg(&target.origin);
        let record = match cx.run.run() {
            Some(run) => run.dir.join("bulk/build.json"),
            None => Utf8PathBuf::from("RUN_DIR/bulk/build.json"),
        };
        steps.push(Step::Write { path: record, what: format!("the build name {build}, before poudriere starts") });
        steps.run(&cmd);
        steps.check(format!(
            "judge build {build} from its status files in {log_dir} (.poudriere.status, .poudriere.ports.*), not from poudriere's exit status"
        ));
        steps.check(format!(
            "{} in {}",
            match (&target.portname, &target.version) {
                (Some(n), Some(v)) => format!("the package {n}-{v}.pkg is"),
                _ => format!("the package of {}'s version is", target.origin),
            },
            packages.join(".latest/All")
        ));
        Ok(BulkPlan { steps, cmd, target, set, mastername, build, log_dir, packages })
    }

    fn execute(&self, cx: &mut Cx, plan: BulkPlan) -> Result<BulkOutputs> {
        let cfg = &cx.config().bulk;
        let record = serde_json::json!({
            "build_name": plan.build,
            "mastername": plan.mastername,
            "log_dir": plan.log_dir,
            "command": plan.cmd,
        });
        let record_path = cx.stage_dir(StageName::Bulk)?.join("build.json");
        crate::fsx::write_atomic(&record_path, format!("{record:#}\n").as_bytes())?;
        cx.say(format!(
            "poudriere bulk: build {} of {} for {}{}",
            plan.build,
            plan.mastername,
            plan.target.origin,
            plan.target.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default()
        ));
        let opts = StreamOpts {
            timeout: (cfg.timeout_secs > 0).then(|| Duration::from_secs(cfg.timeout_secs)),
            grace: Duration::from_secs(cfg.grace_secs),
        };
        let out = match plan.cmd.stream(&cx.log, cx.ui, &opts) {
            Ok(out) => out,
            Err(e) if e.downcast_ref::<Interrupted>().is_some() || crate::proc::interrupted().is_some() => {
                return Err(e);
            }
            Err(e) if e.downcast_ref::<TimedOut>().is_some() => return Err(timed_out(e, &plan, cx)),
            Err(e) => return Err(e.context(format!("poudriere bulk could not run build {}", plan.build))),
        };
        cx.note(format!("poudriere {} (recorded; the status files decide)", out.describe_status()));
        let Some(build) = BuildStatus::read(&plan.log_dir)? else {
            return Err(failure!(
                "poudriere bulk {} and wrote no status files for build {} ({} does not exist): it stopped before the build began; this is an infrastructure error, not a port failure\n  last lines poudriere printed:\n{}",
                out.describe_status(),
                plan.build,
                plan.log_dir,
                crate::proc::tail_lines(&out.stdout, 10)
            )
            .help("check the host with `cargo xtask setup --check` (poudriere.conf, the jail, the ports and overlay trees)")
            .infrastructure()
            .into());
        };
        let verdict = judge(&build, &plan.target, &plan.packages, cfg.log_lines);
        match verdict {
            Verdict::Success { packages, real } => {
                if out.status != Some(0) {
                    cx.say(format!(
                        "note: poudriere {} (its exit status counts every failed and skipped port of the build), but its status files show {} built and the package is in the repository",
                        out.describe_status(),
                        plan.target.origin
                    ));
                }
                for p in &packages {
                    cx.say(format!("built {} -> {}", p.pkgname, plan.packages.join(".latest").join(&p.file)));
                }
                cx.say(format!("build {}: {}", plan.build, build.counts()));
                Ok(BulkOutputs {
                    build_name: plan.build,
                    mastername: plan.mastername,
                    set: plan.set,
                    log_dir: plan.log_dir,
                    repo: plan.packages.join(".latest"),
                    packages,
                    real,
                    poudriere_exit: out.status,
                    stats: build.stats,
                })
            }
            Verdict::Failure { class, mut message, help } => {
                if out.status == Some(0) {
                    message.push_str(
                        "\n  poudriere exited 0 all the same: its exit status counts failed and skipped ports modulo 256 and never ignored ones",
                    );
                }
                Err(Failure::new(message).help(help).class(class).into())
            }
        }
    }
}

/// The port to build: `port`'s outputs, or (in a dry run without them) pipeline.toml.
fn target(cx: &Cx, steps: &mut Plan) -> Result<Target> {
    if cx.dry_run && !cx.has_output(StageName::Port) {
        let origin = cx.config().port.origin.clone();
        steps.note(format!(
            "no `port` outputs in this run: building port.origin = {origin} from pipeline.toml; its version is known once `cargo xtask port` has run"
        ));
        return Ok(Target { origin, portname: None, version: None });
    }
    let port = cx.output::<crate::port::PortOutputs>(StageName::Port)?;
    Ok(Target { origin: port.origin, version: Some(portversion(&port.distversion)), portname: Some(port.portname) })
}

/// poudriere must read the poudriere.conf setup wrote, with the POUDRIERE_DATA bulk reads.
fn check_poudriere_conf(cx: &Cx, paths: &Paths, set: Option<&str>, steps: &mut Plan) -> Result<()> {
    let conf = paths.conf();
    let text = match fs::read_to_string(&conf) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cx.dry_run {
                steps.note(format!("{conf} does not exist yet: `cargo xtask setup` writes it"));
                return Ok(());
            }
            bail!(
                failure!("{conf} does not exist, so poudriere has no configuration")
                    .help("provision the host first: cargo xtask setup")
            );
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {conf}")),
    };
    let values = poudriere::parse_assignments(&text);
    let data = match values.get("POUDRIERE_DATA") {
        Some(d) => Utf8PathBuf::from(d),
        None => Utf8PathBuf::from(values.get("BASEFS").cloned().unwrap_or_default()).join("data"),
    };
    if data != paths.data {
        bail!(
            failure!(
                "{conf} puts poudriere's results in {data}, but pipeline.toml's poudriere.data is {}; bulk would look for the build in the wrong place",
                paths.data
            )
            .help(
                "see what differs with `cargo xtask setup --check`; `cargo xtask setup --write` makes poudriere.conf follow pipeline.toml"
            )
        );
    }
    steps.check(format!("{conf} has POUDRIERE_DATA={data}"));
    if let Some(set) = set {
        let make_conf = paths.set_make_conf(set);
        if !make_conf.is_file() && set == cx.config().poudriere.validation_set {
            if cx.dry_run {
                steps.note(format!("{make_conf} does not exist yet: `cargo xtask setup` writes it"));
            } else {
                bail!(
                    failure!("{make_conf} does not exist, so set `{set}` would build without its options")
                        .help("write it with `cargo xtask setup`")
                );
            }
        }
    }
    Ok(())
}

/// A build name no earlier build of this MASTERNAME used: the run id, then `-2`, `-3`...
/// (reusing a name resumes that build and does not retry its failed ports).
fn fresh_build_name(cx: &Cx, paths: &Paths, mastername: &str) -> String {
    let base = match cx.run.run() {
        Some(run) => run.id().to_owned(),
        None => "dry-run".to_owned(),
    };
    let mut name = base.clone();
    let mut n = 2;
    while paths.log_dir(mastername, &name).exists() {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

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

/// The error for a bulk that timed out: what the build had done by then.
fn timed_out(e: anyhow::Error, plan: &BulkPlan, cx: &Cx) -> anyhow::Error {
    let progress = match BuildStatus::read(&plan.log_dir) {
        Ok(Some(b)) => format!("build {} was at `{}` ({})", plan.build, b.status, b.counts()),
        _ => format!("build {} had written no status files yet", plan.build),
    };
    let cfg = &cx.config().bulk;
    failure!(
        "{}\n  {progress}\n  poudriere got SIGTERM and up to {}s to clean up its jails (then SIGKILL)\n  logs: {}",
        crate::ui::render_message(&e),
        cfg.grace_secs,
        plan.log_dir
    )
    .help(format!(
        "raise bulk.timeout_secs (now {}) if the build needs longer, or see the end of poudriere's output below",
        cfg.timeout_secs
    ))
    .into()
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

/// Judges a finished build for `target`. `packages` is `POUDRIERE_DATA/packages/MASTERNAME`.
pub fn judge(build: &BuildStatus, target: &Target, packages: &Utf8Path, log_lines: usize) -> Verdict {
    let origin = target.origin.as_str();
    let name = build.dir.file_name().unwrap_or("?");
    let fail = |message: String, help: &str| Verdict::Failure { class: Class::Product, message, help: help.to_owned() };
    match &build.ending {
        Ending::Done => {}
        Ending::Crashed(msg) => {
            return Verdict::Failure {
                class: Class::Infrastructure,
                message: format!(
                    "poudriere build {name} crashed: {msg}\n  this is an infrastructure error, not a port failure (.poudriere.status: `{}`; {})\n  logs: {}",
                    build.status,
                    build.counts(),
                    build.dir
                ),
                help: "check the host (disk space, the ZFS pool, the jail: poudriere jail -i -j JAIL); poudriere's own output is in the stage log; then rerun: cargo xtask bulk".into(),
            };
        }
        Ending::Unfinished(at) => {
            return Verdict::Failure {
                class: Class::Infrastructure,
                message: format!(
                    "poudriere build {name} never finished: its status is still `{at}` ({})\n  poudriere died or was killed before it wrote `stopped:done:`: an infrastructure error, not a port failure\n  logs: {}",
                    build.counts(),
                    build.dir
                ),
                help: "look for leftover jails (`poudriere status`, `jls`) and poudriere's output in the stage log; then rerun: cargo xtask bulk".into(),
            };
        }
        Ending::Unknown => {
            return Verdict::Failure {
                class: Class::Infrastructure,
                message: format!(
                    "poudriere build {name} has no .poudriere.status in {}: it never got going (an infrastructure error)",
                    build.dir
                ),
                help: "poudriere's own output is in the stage log; check the host with `cargo xtask setup --check`"
                    .into(),
            };
        }
    }

    if let Some(f) = build.failed_of(origin).next() {
        let mut message = format!(
            "{origin} ({}) failed in the `{}` phase of poudriere build {name}{}",
            f.pkgname,
            f.phase,
            if f.errortype.is_empty() { String::new() } else { format!(" (error type: {})", f.errortype) },
        );
        message.push_str(&log_excerpt(build, &f.pkgname, log_lines));
        return fail(message, phase_help(&f.phase));
    }
    if let Some(s) = build.skipped_of(origin).next() {
        let mut message = format!("{origin} ({}) was skipped in poudriere build {name}: ", s.pkgname);
        match build.failure_of_pkg(&s.culprit) {
            Some(c) => {
                message.push_str(&format!(
                    "its dependency {} ({}) failed in the `{}` phase{}",
                    c.originspec,
                    c.pkgname,
                    c.phase,
                    if c.errortype.is_empty() { String::new() } else { format!(" (error type: {})", c.errortype) }
                ));
                message.push_str(&log_excerpt(build, &c.pkgname, log_lines));
            }
            None => match build.ignored.iter().find(|i| i.pkgname == s.culprit) {
                Some(i) => message
                    .push_str(&format!("its dependency {} ({}) was ignored: {}", i.originspec, i.pkgname, i.reason)),
                None => message.push_str(&format!("its dependency {} could not be built", s.culprit)),
            },
        }
        return fail(
            message,
            "the dependency must build first: read its log; bulk.prebuilt = \"latest\" takes dependencies such as rust prebuilt from the FreeBSD package servers instead of building them",
        );
    }
    if let Some(i) = build.ignored_of(origin).next() {
        return fail(
            format!("poudriere ignored {origin} ({}) in build {name}: {}\n  nothing was built", i.pkgname, i.reason),
            "the port declares itself IGNORE, BROKEN or not for this jail's architecture or release: fix its Makefile in colibri",
        );
    }
    let built: Vec<&status::Built> = build.built_of(origin).collect();
    if built.is_empty() {
        return fail(
            format!(
                "poudriere build {name} finished without {origin} in any of its lists (built, failed, skipped, ignored; {})\n  logs: {}",
                build.counts(),
                build.dir
            ),
            "check that `cargo xtask port` staged the port and that the overlay tree is registered for this repository's ports/ (`cargo xtask setup --check`)",
        );
    }

    // Built, says poudriere: the package must be in the repository it serves, at the
    // version `port` staged.
    let latest = packages.join(".latest");
    let real = match link_target(&latest) {
        Some(real) => real,
        None => {
            return fail(
                format!(
                    "poudriere lists {} as built in build {name}, but {latest} is not a link to a repository: the build was not committed",
                    built[0].pkgname
                ),
                "see poudriere's output in the stage log (pkgrepo and committing phases); rerun: cargo xtask bulk",
            );
        }
    };
    let mut packages_out = Vec::new();
    for b in built {
        let version = status::version_of(&b.pkgname).to_owned();
        if let (Some(want), Some(portname)) = (&target.version, &target.portname)
            && (!version_matches(&version, want) || status::name_of(&b.pkgname) != portname)
        {
            return fail(
                format!(
                    "poudriere built {} for {origin}, but `port` staged {portname} {want}: this build did not use the port this run staged",
                    b.pkgname
                ),
                "the overlay tree must be registered at this repository's ports/ (`cargo xtask setup --check`); then rerun: cargo xtask bulk",
            );
        }
        let file = Utf8PathBuf::from(format!("All/{}.pkg", b.pkgname));
        if !real.join(&file).is_file() {
            return fail(
                format!(
                    "poudriere lists {} as built in build {name}, but the repository has no {file} ({latest} -> {real})",
                    b.pkgname
                ),
                "the package was not committed to the repository; see poudriere's output in the stage log; rerun: cargo xtask bulk",
            );
        }
        packages_out.push(BuiltPackage { origin: b.originspec.clone(), pkgname: b.pkgname.clone(), version, file });
    }
    Verdict::Success { packages: packages_out, real }
}

/// Where a symlink points, as a path (relative targets resolved against its directory).
fn link_target(link: &Utf8Path) -> Option<Utf8PathBuf> {
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

/// What a failure in a phase usually means.
fn phase_help(phase: &str) -> &'static str {
    match phase {
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

fn judge_command(engine: &crate::engine::Engine, dir: &Utf8Path) -> Result<()> {
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

    let port = engine
        .state
        .current()
        .ok()
        .flatten()
        .and_then(|run| run.state.usable_outputs(StageName::Port).cloned())
        .and_then(|v| serde_json::from_value::<crate::port::PortOutputs>(v).ok());
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
        format!(
            "{}  {}  {}{}",
            f.originspec,
            f.pkgname,
            f.phase,
            if f.errortype.is_empty() { String::new() } else { format!(" ({})", f.errortype) }
        )
    });
    report_list(ui, "skipped", build.skipped.len(), &dir.join(".poudriere.ports.skipped"), |i| {
        let s = &build.skipped[i];
        format!("{}  {}  because of {}", s.originspec, s.pkgname, s.culprit)
    });
    report_list(ui, "ignored", build.ignored.len(), &dir.join(".poudriere.ports.ignored"), |i| {
        let s = &build.ignored[i];
        format!("{}  {}  {}", s.originspec, s.pkgname, s.reason)
    });
    match judge(&build, &target, &packages, loaded.config.bulk.log_lines) {
        Verdict::Success { packages: built, real } => {
            for p in &built {
                ui.println(&format!("{}: built {} ({} in {real})", target.origin, p.pkgname, p.file));
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
