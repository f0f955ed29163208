//! bulk: builds the staged port with `poudriere bulk` under a fresh build name, then
//! judges the build from its status files, never from poudriere's exit status (which
//! counts failed and skipped ports modulo 256 and ignores ignored ones). Success means
//! the package for the port's version is in the repository poudriere serves.

mod judge;
pub mod reproduce;
mod status;

pub use judge::{Judging, Verdict, judge, portversion};
use judge::{error_line, judge_command, link_target};

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use crate::cli::Bulk;
use crate::failure;
use crate::failure::Failure;
use crate::fingerprint::Fingerprint;
use crate::poudriere::conf::{self, Conf, Names};
use crate::poudriere::{self, Paths};
use crate::proc::{CmdLine, Interrupted, StreamOpts, TimedOut};
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};

pub use status::{BuildStatus, Ending, Outcome, Stats, origin_of};

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
        /// Build the port a second time, fresh (its own set, `-c`), and compare every
        /// package byte for byte: `true` reports each difference (package, both sums, the
        /// files inside that differ), `"required"` also fails the stage on one.
        pub reproduce: reproduce::Reproduce = reproduce::Reproduce::Off,
    }
}

/// A package of the port, in the repository the build committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltPackage {
    /// `origin[@flavor][~subpackage]`, as poudriere's lists spell it.
    pub origin: String,
    /// `name-version`, e.g. `colibri-0.9.0`.
    pub pkgname: String,
    pub version: String,
    /// The package file, relative to `repo` (`All/colibri-0.9.0.pkg`).
    pub file: camino::Utf8PathBuf,
    /// How this build came by it.
    #[serde(default)]
    pub source: Source,
}

/// How a build came by a package (docs/reference/poudriere.md sections 8 and 9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Built by this build (`.poudriere.ports.built`).
    #[default]
    Built,
    /// Already current in the repository, so not rebuilt (only in `.poudriere.ports.queued`).
    UpToDate,
    /// Taken prebuilt from the package servers (`.poudriere.ports.fetched`).
    Fetched,
}

impl BuiltPackage {
    /// `built colibri-0.9.0`, `colibri-0.9.0 was already up to date (not rebuilt)`, ...
    pub fn describe(&self) -> String {
        match self.source {
            Source::Built => format!("built {}", self.pkgname),
            Source::UpToDate => format!("{} was already up to date (poudriere did not rebuild it)", self.pkgname),
            Source::Fetched => {
                format!("{} was fetched prebuilt from the package servers (bulk.prebuilt), not built", self.pkgname)
            }
        }
    }
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
    /// Each package file's identity when bulk judged the build, by its path in `real`: a
    /// package replaced or rewritten since makes bulk run again.
    #[serde(default)]
    pub produced: crate::identity::Produced,
    /// The second build and its comparison (bulk.reproduce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproduce: Option<reproduce::Reproduction>,
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
    /// The command up to the set and build name (what the second build reuses).
    base: CmdLine,
    paths: Paths,
    reproduce: reproduce::Reproduce,
    target: Target,
    set: Option<String>,
    mastername: String,
    build: String,
    log_dir: Utf8PathBuf,
    packages: Utf8PathBuf,
    /// Where poudriere's configuration puts results, when not where pipeline.toml says.
    data_note: Option<String>,
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

    /// bulk.reproduce, or `true` with --reproduce.
    fn reproduce(&self, cx: &Cx) -> reproduce::Reproduce {
        match cx.config().bulk.reproduce {
            reproduce::Reproduce::Off if self.reproduce => reproduce::Reproduce::Report,
            mode => mode,
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
        let p = &cx.config().poudriere;
        let mut fp = Fingerprint::new();
        fp.json("poudriere", p).json("signing", &cx.config().signing).json("set", &set);
        fp.json("reproduce", &self.reproduce(cx));
        // Every file poudriere reads for this bulk, present or not.
        for file in conf::files(&paths.etc, Names { jail: Some(&p.jail), tree: Some(&p.tree), set: set.as_deref() }) {
            fp.file(file.as_str(), &file)?;
        }
        if let Some(set) = &set {
            fp.file("set make.conf", &paths.set_make_conf(set))?;
        }
        Ok(fp)
    }

    fn outputs_intact(&self, _cx: &Cx, o: &BulkOutputs) -> bool {
        // Still the repository this build committed, with its packages in it.
        link_target(&o.repo).as_deref() == Some(o.real.as_path())
            && o.packages.iter().all(|p| o.real.join(&p.file).is_file())
            && o.produced.intact(|file| o.real.join(file))
    }

    fn plan(&self, cx: &Cx) -> Result<BulkPlan> {
        let cfg = cx.config();
        let p = &cfg.poudriere;
        let mut paths = Paths::new(cx.loaded);
        let mut steps = Plan::default();
        let set = self.set()?;
        let target = target(cx, &mut steps)?;
        let data_note = check_poudriere_conf(cx, &mut paths, set.as_deref(), &mut steps)?;

        let mastername = self.mastername(cx)?;
        let build = fresh_build_name(cx, &paths, &mastername);
        let log_dir = paths.log_dir(&mastername, &build);
        let packages = paths.packages(&mastername);

        let base = poudriere::command(cx.loaded).args(["bulk", "-j", &p.jail, "-p", &p.tree, "-O", &p.overlay]);
        let mut cmd = base.clone();
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
        let mode = self.reproduce(cx);
        if mode != reproduce::Reproduce::Off {
            steps.note(format!(
                "then build it again, fresh, in set {} (-c), and compare every package byte for byte ({})",
                reproduce::second_set(set.as_deref()),
                if mode == reproduce::Reproduce::Required {
                    "a difference fails bulk"
                } else {
                    "differences are reported"
                }
            ));
        }
        Ok(BulkPlan {
            steps,
            cmd,
            base,
            paths,
            reproduce: mode,
            target,
            set,
            mastername,
            build,
            log_dir,
            packages,
            data_note,
        })
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
        if let Some(note) = &plan.data_note {
            cx.say(format!("note: {note}"));
        }
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
        let judging = Judging {
            target: &plan.target,
            packages: &plan.packages,
            log_lines: cfg.log_lines,
            poudriere_error: error_line(&out.stdout),
            just_ran: true,
        };
        match judge(&build, &judging) {
            Verdict::Success { packages, real } => {
                if out.status != Some(0) {
                    cx.say(format!(
                        "note: poudriere {} (its exit status counts every failed and skipped port of the build), but its status files show {} done and its package is in the repository",
                        out.describe_status(),
                        plan.target.origin
                    ));
                }
                for p in &packages {
                    cx.say(format!("{} -> {}", p.describe(), plan.packages.join(".latest").join(&p.file)));
                }
                cx.say(format!("build {}: {}", plan.build, build.counts()));
                let mut produced = crate::identity::Produced::default();
                for p in &packages {
                    produced.add(p.file.clone(), &real.join(&p.file))?;
                }
                let reproduction = self.reproduce_build(cx, &plan, &real, &packages)?;
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
                    produced,
                    reproduce: reproduction,
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

impl Bulk {
    /// The second build and its verdict, when bulk.reproduce asks for one.
    fn reproduce_build(
        &self,
        cx: &Cx,
        plan: &BulkPlan,
        real: &camino::Utf8Path,
        packages: &[BuiltPackage],
    ) -> Result<Option<reproduce::Reproduction>> {
        if plan.reproduce == reproduce::Reproduce::Off {
            return Ok(None);
        }
        let p = &cx.config().poudriere;
        let set2 = reproduce::second_set(plan.set.as_deref());
        let build = fresh_build_name(cx, &plan.paths, &poudriere::mastername(&p.jail, &p.tree, Some(&set2)));
        let first = reproduce::First {
            cmd_base: plan.base.clone(),
            target: &plan.target,
            set: plan.set.as_deref(),
            paths: &plan.paths,
            jail: &p.jail,
            tree: &p.tree,
            real,
            packages,
        };
        let r = reproduce::run(cx, &first, plan.reproduce, &build, &reproduce::opts(&cx.config().bulk))?;
        let path = cx.stage_dir(StageName::Bulk)?.join("reproduce.json");
        crate::fsx::write_atomic(&path, format!("{:#}\n", serde_json::to_value(&r)?).as_bytes())?;
        for c in &r.packages {
            if c.identical {
                cx.say(format!("reproduced {}: identical (sha256 {})", c.file, c.first_sha256));
                continue;
            }
            cx.say(format!(
                "NOT reproduced {}: sha256 {} (build {}) vs {} (build {}); {} differ:",
                c.file,
                c.first_sha256,
                plan.build,
                c.second_sha256.as_deref().unwrap_or("none"),
                r.build_name,
                if c.members_differing == 1 {
                    "1 member".to_owned()
                } else {
                    format!("{} members", c.members_differing)
                }
            ));
            for m in &c.members {
                cx.say(format!("  {m}"));
            }
        }
        let differing = r.differing();
        if differing > 0 && r.required {
            bail!(
                failure!(
                    "{differing} of {} packages differ between two builds of the same sources (bulk.reproduce = \"required\"); both builds: {} and {}",
                    r.packages.len(),
                    plan.log_dir,
                    r.log_dir
                )
                .help("make the build reproducible (poudriere.reproducible = true writes BUILDER_HOSTNAME and PRESERVE_TIMESTAMP; then cargo xtask setup), or set bulk.reproduce = true to report differences without failing")
                .product()
            );
        }
        if differing == 0 {
            cx.say(format!("reproduce: all {} packages identical in both builds", r.packages.len()));
        }
        Ok(Some(r))
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

/// Reads poudriere's configuration as poudriere will for this bulk (its files in its
/// order) and points `paths.data` at the POUDRIERE_DATA it derives, which is where the
/// build's status files and repository will be. Returns a note when that is not
/// pipeline.toml's poudriere.data.
fn check_poudriere_conf(cx: &Cx, paths: &mut Paths, set: Option<&str>, steps: &mut Plan) -> Result<Option<String>> {
    let p = &cx.config().poudriere;
    let names = Names { jail: Some(&p.jail), tree: Some(&p.tree), set };
    let globals = &conf::files(&paths.etc, names)[..2];
    if cx.dry_run && globals.iter().all(|f| !f.exists()) {
        steps.note(format!("{} does not exist yet: `cargo xtask setup` writes it", paths.conf()));
        return Ok(None);
    }
    let conf = Conf::load(&paths.etc, names)?;
    let data = conf::data_dir(&conf, &cx.config().tools, &cx.log)?;
    let read: Vec<&str> = conf.files_read().iter().map(|f| f.as_str()).collect();
    steps.check(format!("poudriere reads {}; POUDRIERE_DATA is {} (from {})", read.join(", "), data.path, data.from));
    let configured = paths.data.canonicalize_utf8().unwrap_or_else(|_| paths.data.clone());
    let note = (data.path != configured).then(|| {
        format!(
            "poudriere's configuration puts its results in {} (from {}), not in pipeline.toml's poudriere.data {}: bulk follows poudriere",
            data.path, data.from, paths.data
        )
    });
    if let Some(note) = &note {
        steps.note(note.clone());
    }
    paths.data = data.path;
    if let Some(set) = set {
        let make_conf = paths.set_make_conf(set);
        if !make_conf.is_file() && set == p.validation_set {
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
    Ok(note)
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

/// The error for a bulk that timed out: what the build had done by then.
fn timed_out(e: anyhow::Error, plan: &BulkPlan, cx: &Cx) -> anyhow::Error {
    let progress = match BuildStatus::read(&plan.log_dir) {
        Ok(Some(b)) if b.status != b.phase_when_stopped() => format!(
            "build {} was at `{}` ({}); its status is now `{}`",
            plan.build,
            b.phase_when_stopped(),
            b.counts(),
            b.status
        ),
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
