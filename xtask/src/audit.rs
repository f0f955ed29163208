//! Stage `audit`: colibri's Cargo.lock (as port kept it) against a local copy of the
//! RustSec advisory database, and the port's package against a VuXML file when one is
//! configured (read and matched as `pkg audit -f` does: [`pkgrepo::vuxml`]). The policy
//! in `[audit]` judges what applies: a severity at or above `fail_on` fails the stage,
//! an advisory without a score fails, informational advisories are only reported, and
//! `audit.ignore` entries (each with a reason and a last day) set one aside until they
//! expire. The database must have been updated within `max_age_days`.
//!
//! With `audit.advisory_db` unset the crates are not audited and the stage says so (the
//! stage passes: an unconfigured pipeline keeps working; docs/supply-chain.md). Every
//! run writes `RUN/audit/audit.json` (what `--json` prints and the report shows), also
//! when the stage fails.

pub mod check;

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Audit;
use crate::config::Loaded;
use crate::failure::{Class, ResultExt};
use crate::fingerprint::Fingerprint;
use crate::port::PortOutputs;
use crate::stage::{Cx, Plan, Stage, StageName};
pub use check::{Finding, Ignore, Severity, Verdict};

/// The report's file name in the stage directory.
pub const REPORT: &str = "audit.json";

crate::settings! {
    /// audit: what the release's crates and package are checked against, and the policy.
    pub struct AuditConfig {
        /// A local copy of the RustSec advisory database, kept current by the operator
        /// (`git clone https://github.com/rustsec/advisory-db`, then `git pull`), relative
        /// to pipeline.toml. Empty: the crates are not audited and the stage says so.
        pub advisory_db: Utf8PathBuf = Utf8PathBuf::new(),
        /// Days since the database was last updated (its checkout's last `git pull` or
        /// clone; without .git, its newest advisory file) after which the stage fails.
        pub max_age_days: u64 = 7,
        /// A VuXML file (the ports tree's security/vuxml/vuln.xml, or pkg's
        /// /var/db/pkg/vuln.xml) the port's package is checked against, as `pkg audit -f`
        /// reads it. Empty: none.
        pub vuxml: Utf8PathBuf = Utf8PathBuf::new(),
        /// The lowest CVSS severity that fails the stage: "none", "low", "medium", "high"
        /// or "critical". Advisories without a score (and every VuXML entry) fail whatever
        /// this says; informational ones (unmaintained, unsound) never do.
        pub fail_on: Severity = Severity::Low,
        /// Advisories set aside, each `{ id = "RUSTSEC-2024-0001" (or a CVE alias or a
        /// VuXML vid), reason = "why it does not apply", until = "YYYY-MM-DD" }`. After
        /// `until` the advisory fails the stage again, and the report says the entry expired.
        pub ignore: Vec<Ignore> = Vec::new(),
    }
}

/// Checks `[audit]` when pipeline.toml is loaded.
pub fn validate(loaded: &Loaded) -> Result<()> {
    for (i, entry) in loaded.config.audit.ignore.iter().enumerate() {
        if entry.id.trim().is_empty() {
            return Err(loaded.error_at(&format!("audit.ignore.{i}.id"), "an ignore entry names no advisory"));
        }
        if entry.reason.trim().is_empty() {
            return Err(loaded.error_at(
                &format!("audit.ignore.{i}.reason"),
                format!("ignoring {} needs a reason (say why it does not apply or is accepted)", entry.id),
            ));
        }
        if !check::is_date(&entry.until) {
            return Err(loaded.error_at(
                &format!("audit.ignore.{i}.until"),
                format!("`{}` is not a date YYYY-MM-DD (the last day {} is ignored)", entry.until, entry.id),
            ));
        }
    }
    if loaded.config.audit.fail_on == Severity::Unknown {
        return Err(
            loaded.error_at("audit.fail_on", "\"unknown\" is not a threshold: none, low, medium, high or critical")
        );
    }
    Ok(())
}

/// What audit records, and writes to `audit.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditOutputs {
    /// The advisory database, absolute; none when not configured.
    pub advisory_db: Option<Utf8PathBuf>,
    /// Its advisories (withdrawn ones included).
    pub advisories: usize,
    /// How old it is, in seconds, and what that was read from.
    pub db_age_secs: Option<u64>,
    pub db_age_from: Option<String>,
    /// The VuXML file and its entries.
    pub vuxml: Option<Utf8PathBuf>,
    pub vuxml_entries: usize,
    /// Crates of the lock, packages checked.
    pub crates: usize,
    pub packages: Vec<String>,
    pub fail_on: Option<Severity>,
    /// Every advisory that applies, with its verdict.
    pub findings: Vec<Finding>,
    /// Whether the crates were audited at all.
    pub audited: bool,
}

impl AuditOutputs {
    pub fn failing(&self) -> usize {
        self.findings.iter().filter(|f| f.fails()).count()
    }
}

/// The stage's plan: the inputs it reads.
pub struct AuditPlan {
    steps: Plan,
    db: Option<Utf8PathBuf>,
    vuxml: Option<Utf8PathBuf>,
}

impl crate::stage::StagePlan for AuditPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

fn configured(cx: &Cx, path: &Utf8Path) -> Option<Utf8PathBuf> {
    (!path.as_str().is_empty()).then(|| cx.resolve(path))
}

impl Stage for Audit {
    const NAME: StageName = StageName::Audit;
    type Outputs = AuditOutputs;
    type Plan = AuditPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let mut fp = Fingerprint::new();
        let port: PortOutputs = cx.output(StageName::Port)?;
        fp.str("lock", &port.cargo_lock_sha256).str("package", &format!("{}-{}", port.portname, port.distversion));
        // Expiry and age depend on the day: audit runs again each day.
        fp.str("today", &today());
        if let Some(db) = configured(cx, &cx.config().audit.advisory_db) {
            fp.str("db", db.as_str());
            let (when, from) = db_updated(&db);
            fp.str("db.updated", &format!("{from} {:?}", when));
        }
        if let Some(v) = configured(cx, &cx.config().audit.vuxml) {
            fp.file("vuxml", &v)?;
        }
        Ok(fp)
    }

    fn plan(&self, cx: &Cx) -> Result<AuditPlan> {
        let mut steps = Plan::default();
        let cfg = &cx.config().audit;
        let db = configured(cx, &cfg.advisory_db);
        match &db {
            Some(d) => steps.check(format!(
                "Cargo.lock against the RustSec advisory database {d} (at most {} days old)",
                cfg.max_age_days
            )),
            None => steps.note("audit.advisory_db is not set: the crates are not audited"),
        }
        let vuxml = configured(cx, &cfg.vuxml);
        if let Some(v) = &vuxml {
            steps.check(format!("the port's package against the VuXML file {v}"));
        }
        steps.check(format!("fail on severity {} and above, and on expired ignore entries", cfg.fail_on.as_str()));
        Ok(AuditPlan { steps, db, vuxml })
    }

    fn execute(&self, cx: &mut Cx, plan: AuditPlan) -> Result<AuditOutputs> {
        let cfg = &cx.config().audit;
        let port: PortOutputs = cx.output(StageName::Port)?;
        let package = format!("{}-{}", port.portname, port.distversion);
        let mut out =
            AuditOutputs { packages: vec![package.clone()], fail_on: Some(cfg.fail_on), ..Default::default() };
        let mut too_old = None;
        if let Some(dir) = &plan.db {
            let lock = crate::sign::attestations::port_lock(cx, &port)?.with_context(|| {
                format!("port recorded no copy of Cargo.lock; rerun it: {}", cx.loaded.xtask("port"))
            })?;
            let db = open_db(dir)?;
            let (updated, from) = db_updated(dir);
            let age = updated.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or(Duration::ZERO);
            cx.say(format!(
                "advisory database {dir}: {} advisories, last updated {} ago ({from})",
                db.iter().count(),
                days(age)
            ));
            if age > Duration::from_secs(cfg.max_age_days.saturating_mul(86_400)) {
                too_old = Some((dir.clone(), age));
            }
            let members: Vec<String> = port.members.iter().map(|m| m.name.clone()).collect();
            out.findings = check::rustsec(&db, &lock, &check::Packaging { package: &package, members: &members });
            out.advisory_db = Some(dir.clone());
            out.advisories = db.iter().count();
            out.db_age_secs = Some(age.as_secs());
            out.db_age_from = Some(from.to_owned());
            out.crates = lock.packages.len();
            out.audited = true;
        } else {
            cx.say("not audited: audit.advisory_db is not set (see docs/supply-chain.md)");
        }
        if let Some(path) = &plan.vuxml {
            let entries = read_vuxml(path)?;
            out.vuxml_entries = entries.len();
            out.vuxml = Some(path.clone());
            out.findings.extend(check::vuxml(&entries, &[(port.portname.clone(), port.distversion.clone())]));
            cx.say(format!("VuXML {path}: {} entries, checked {package}", entries.len()));
        }
        out.findings.sort_by(|a, b| (a.id.as_str(), a.name.as_str()).cmp(&(b.id.as_str(), b.name.as_str())));
        check::judge(&mut out.findings, cfg.fail_on, &cfg.ignore, &today());
        for f in &out.findings {
            cx.say(f.line());
        }
        let report = cx.stage_dir(StageName::Audit)?.join(REPORT);
        let mut json = serde_json::to_vec_pretty(&out)?;
        json.push(b'\n');
        crate::fsx::write_atomic(&report, &json)?;
        if self.json {
            cx.ui.println(String::from_utf8_lossy(&json).trim_end());
        }
        if let Some((dir, age)) = too_old {
            bail!(
                crate::failure!(
                    "the advisory database {dir} was last updated {} ago, more than audit.max_age_days = {}",
                    days(age),
                    cfg.max_age_days
                )
                .help(format!("update it, then rerun: git -C {dir} pull && {}", cx.loaded.xtask("audit")))
                .infrastructure()
            );
        }
        let failing: Vec<&Finding> = out.findings.iter().filter(|f| f.fails()).collect();
        if !failing.is_empty() {
            let expired = failing.iter().filter(|f| matches!(f.verdict, Verdict::Expired { .. })).count();
            let ids: Vec<&str> = failing.iter().map(|f| f.id.as_str()).collect();
            bail!(
                crate::failure!(
                    "{} against the policy (audit.fail_on = {}{}): {}",
                    if failing.len() == 1 { "1 advisory applies".to_owned() } else { format!("{} advisories apply", failing.len()) },
                    cfg.fail_on.as_str(),
                    if expired > 0 { format!("; {expired} whose ignore entry expired") } else { String::new() },
                    ids.join(", ")
                )
                .help("update the crates named (cargo update -p CRATE in colibri, then a new tag), or add an entry with a reason and a last day to audit.ignore")
                .product()
            );
        }
        let apply = match out.findings.len() {
            0 => "no advisory applies".to_owned(),
            1 => "1 advisory applies".to_owned(),
            n => format!("{n} advisories apply"),
        };
        cx.say(format!("{} checked: {apply}, none fails the policy", crate::sign::plural(out.crates, "crate")));
        Ok(out)
    }
}

impl Audit {
    /// `cargo xtask audit`: in the current run; `--json` prints the report on stdout.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        if self.json {
            // Always checks now (records nothing): CI reads the report it printed.
            engine.run_unrecorded(&self, self.dry_run).map(drop)
        } else {
            engine.run_one(&self, self.dry_run)
        }
    }
}

/// Opens the advisory database, with an error that says how to get one.
pub fn open_db(dir: &Utf8Path) -> Result<rustsec::Database> {
    if !dir.join("crates").is_dir() {
        bail!(
            crate::failure!(
                "audit.advisory_db = {dir} is not a RustSec advisory database (it has no crates/ directory)"
            )
            .help(format!("clone it: git clone https://github.com/rustsec/advisory-db {dir}"))
            .infrastructure()
        );
    }
    rustsec::Database::open(dir.as_std_path())
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot read the advisory database {dir}")))
        .class(Class::Infrastructure)
}

/// Reads a VuXML file, bounded.
fn read_vuxml(path: &Utf8Path) -> Result<Vec<pkgrepo::vuxml::Entry>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read audit.vuxml = {path}"))?;
    if meta.len() > pkgrepo::vuxml::MAX_VUXML {
        bail!(crate::failure!("audit.vuxml = {path} is {} bytes, more than a VuXML file may be", meta.len()));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read audit.vuxml = {path}"))?;
    pkgrepo::vuxml::parse(&bytes).map_err(|e| {
        crate::failure!("audit.vuxml = {path}: {e}")
            .help("give the ports tree's security/vuxml/vuln.xml, or pkg's /var/db/pkg/vuln.xml (pkg audit -F fetches it)")
            .into()
    })
}

/// When the database was last updated, and what that was read from: in a git checkout
/// the newest of .git/FETCH_HEAD (every `git pull`/`fetch`), .git/HEAD and .git/index (a
/// clone, a checkout); otherwise the newest advisory file.
pub fn db_updated(dir: &Utf8Path) -> (Option<SystemTime>, &'static str) {
    let mtime = |p: &Utf8Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let git = dir.join(".git");
    if git.is_dir() {
        let newest = ["FETCH_HEAD", "HEAD", "index"].iter().filter_map(|f| mtime(&git.join(f))).max();
        return (newest, "its git checkout's last fetch");
    }
    let mut newest = None;
    if let Ok(crates) = std::fs::read_dir(dir.join("crates")) {
        for krate in crates.flatten() {
            for file in std::fs::read_dir(krate.path()).into_iter().flatten().flatten() {
                let t = file.metadata().and_then(|m| m.modified()).ok();
                newest = newest.max(t);
            }
        }
    }
    (newest, "its newest advisory file")
}

/// `YYYY-MM-DD`, UTC.
pub fn today() -> String {
    crate::run::now_rfc3339()[..10].to_owned()
}

fn days(d: Duration) -> String {
    let days = d.as_secs() / 86_400;
    if days == 0 { format!("{} hours", d.as_secs() / 3600) } else { crate::sign::plural(days as usize, "day") }
}
