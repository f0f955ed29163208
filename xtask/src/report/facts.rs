//! What a run did, read back from its state.json and the files its stages left: the
//! verdict, each stage with its key figures, and what the diff between runs compares
//! (packages, crates, failing ports, durations). Reads only; every list it keeps is
//! bounded, so a 35,000-port bulk makes a report of a bounded size.

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bulk::{BuildStatus, BulkOutputs};
use crate::config::Config;
use crate::gate::GateOutputs;
use crate::iso::IsoOutputs;
use crate::makesum::MakesumOutputs;
use crate::outputs::Outputs;
use crate::port::PortOutputs;
use crate::publish::PublishOutputs;
use crate::run::{Run, StateDir, Status};
use crate::stage::StageName;

/// Rows a list of the report keeps (ports, packages, crates); the rest is counted.
pub const LIST_ROWS: usize = 300;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every stage of the run is done (succeeded or up to date).
    Pass,
    /// A stage failed.
    Fail,
    /// A stop signal ended a stage.
    Interrupted,
    /// A stage is running now.
    Running,
    /// Some stages have not run (a run of single stages, or a release stopped by --to).
    Incomplete,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Interrupted => "interrupted",
            Verdict::Running => "running",
            Verdict::Incomplete => "incomplete",
        }
    }
}

/// One figure of a stage: `distfiles` = `212 (203 already in place, 9 fetched)`.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub label: String,
    pub value: String,
}

/// A table of a stage (failed ports, markers, packages), cut at [`LIST_ROWS`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Table {
    pub caption: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Rows in all (more than `rows.len()` when cut).
    pub total: usize,
}

impl Table {
    fn new(caption: impl Into<String>, headers: &[&str]) -> Table {
        Table { caption: caption.into(), headers: headers.iter().map(|h| h.to_string()).collect(), ..Table::default() }
    }

    fn push(&mut self, row: Vec<String>) {
        self.push_with(|| row);
    }

    /// Counts a row, made only when it is kept.
    fn push_with(&mut self, row: impl FnOnce() -> Vec<String>) {
        self.total += 1;
        if self.rows.len() < LIST_ROWS {
            self.rows.push(row());
        }
    }
}

/// One stage of a run.
#[derive(Debug, Clone, Serialize)]
pub struct StageFacts {
    pub name: StageName,
    pub status: Status,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_ms: Option<u64>,
    pub attempts: u32,
    /// Its log (absolute).
    pub log: Option<Utf8PathBuf>,
    pub error: Option<String>,
    /// The run whose success it reused, when up to date.
    pub from_run: Option<String>,
    /// `[report] notes` for it (how the stage ran on this host).
    pub note: Option<String>,
    pub figures: Vec<Figure>,
    pub tables: Vec<Table>,
}

impl StageFacts {
    fn figure(&mut self, label: &str, value: impl Into<String>) {
        self.figures.push(Figure { label: label.into(), value: value.into() });
    }
}

/// A package of the signed repository (read from sign's outputs: the fields of
/// [`crate::sign::PackageRecord`] the report shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PackageFact {
    pub name: String,
    pub version: String,
    pub size: u64,
    pub sum: String,
}

/// What the report shows of sign's outputs: read as this rather than as
/// [`crate::sign::SignOutputs`], a full ports tree's record is one pass over its text
/// without the files' identities or a string per field the report does not show.
#[derive(serde::Deserialize)]
struct SignFacts {
    key_fingerprint: String,
    trust: crate::config::TrustMode,
    #[serde(default)]
    signed: bool,
    #[serde(default)]
    abi: String,
    packages: Vec<PackageFact>,
}

/// A crate of distinfo (`rust/crates/NAME-VERSION.crate`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CrateFact {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// A port that failed in the run's bulk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortFailure {
    pub origin: String,
    pub pkgname: String,
    pub phase: String,
    pub errortype: String,
}

/// Where the gate's console of the run is, and the lines to mark in it.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleRef {
    pub path: Utf8PathBuf,
    /// (1-based line, marker name) for each marker seen, when result.json has its line.
    pub markers: Vec<(u64, String)>,
    /// The line that decided the verdict, and what it was.
    pub deciding: Option<(u64, String)>,
}

/// Everything a report, a diff or a notification says about one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunFacts {
    pub id: String,
    pub dir: Utf8PathBuf,
    pub created: String,
    pub command: String,
    pub verdict: Verdict,
    pub stages: Vec<StageFacts>,
    /// The signed repository's packages (sign's outputs), when known.
    pub packages: Option<Vec<PackageFact>>,
    /// The crates of distinfo (makesum's outputs), when known.
    pub crates: Option<Vec<CrateFact>>,
    /// The ports that failed in the bulk, when its status files can be read.
    pub failing: Option<Vec<PortFailure>>,
    #[serde(skip)]
    pub console: Option<ConsoleRef>,
}

impl RunFacts {
    /// The stage that failed or was interrupted, if any.
    pub fn failed_stage(&self) -> Option<&StageFacts> {
        self.stages.iter().find(|s| matches!(s.status, Status::Failed | Status::Interrupted))
    }

    pub fn stage(&self, name: StageName) -> Option<&StageFacts> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// Reads one run.
pub fn read(run: &Run, config: &Config) -> RunFacts {
    let state = &run.state;
    let verdict = verdict(run);
    let outputs = |stage: StageName| state.usable_outputs(stage);
    // Read once for its stage's facts and the release's packages: a full ports tree's
    // record is tens of megabytes.
    let signed = outputs(StageName::Sign).and_then(parse::<SignFacts>);
    let mut stages = Vec::new();
    for name in &state.stages {
        let rec = state.record(*name);
        let mut s = StageFacts {
            name: *name,
            status: rec.map_or(Status::Pending, |r| r.status),
            started: rec.and_then(|r| r.started.clone()),
            ended: rec.and_then(|r| r.ended.clone()),
            duration_ms: rec.and_then(|r| r.duration_ms),
            attempts: rec.map_or(0, |r| r.attempts),
            log: rec.and_then(|r| r.log.as_ref()).map(|l| run.abs(l)),
            error: rec.and_then(|r| r.error.clone()),
            from_run: rec
                .filter(|r| r.status == Status::UpToDate)
                .and_then(|r| r.last_success.as_ref())
                .map(|l| l.run.clone()),
            note: config.report.notes.get(name).cloned(),
            figures: Vec::new(),
            tables: Vec::new(),
        };
        let value = outputs(*name);
        match name {
            StageName::Port => port(&mut s, value),
            StageName::Makesum => {
                let dir = rec.and_then(|r| r.last_success.as_ref()).and_then(|l| Some(run.dir.parent()?.join(&l.run)));
                makesum(&mut s, value, dir.as_deref())
            }
            StageName::Audit => audit(&mut s, run, value),
            StageName::Bulk => bulk(&mut s, run, value),
            StageName::Sign => sign(&mut s, signed.as_ref()),
            StageName::Publish => publish(&mut s, value, config),
            StageName::Iso => iso(&mut s, value),
            StageName::Gate => gate(&mut s, run),
            StageName::Setup => {}
        }
        stages.push(s);
    }
    let packages = signed.map(|o| o.packages);
    let crates = outputs(StageName::Makesum).and_then(parse::<MakesumOutputs>).map(|o| crates_of(&o));
    let failing = build_status(run).map(|b| {
        b.failed
            .iter()
            .map(|f| PortFailure {
                origin: crate::bulk::origin_of(&f.originspec).to_owned(),
                pkgname: f.pkgname.clone(),
                phase: f.phase.clone(),
                errortype: f.errortype.clone(),
            })
            .collect()
    });
    RunFacts {
        id: state.id.clone(),
        dir: run.dir.clone(),
        created: state.created.clone(),
        command: state.command.clone(),
        verdict,
        stages,
        packages,
        crates,
        failing,
        console: console_ref(run),
    }
}

fn verdict(run: &Run) -> Verdict {
    let statuses: Vec<Status> =
        run.state.stages.iter().map(|s| run.state.record(*s).map_or(Status::Pending, |r| r.status)).collect();
    if statuses.contains(&Status::Running) {
        Verdict::Running
    } else if statuses.contains(&Status::Interrupted) {
        Verdict::Interrupted
    } else if statuses.contains(&Status::Failed) {
        Verdict::Fail
    } else if statuses.iter().all(|s| s.is_done()) {
        Verdict::Pass
    } else {
        Verdict::Incomplete
    }
}

fn parse<T: DeserializeOwned>(value: &Outputs) -> Option<T> {
    // Straight from the text into the type: a full ports tree's outputs are tens of
    // megabytes of JSON.
    value.parse().ok()
}

fn port(s: &mut StageFacts, value: Option<&Outputs>) {
    let Some(o) = value.and_then(parse::<PortOutputs>) else { return };
    s.figure("port", format!("{} {}", o.origin, o.distversion));
    let commit: String = o.commit.chars().take(12).collect();
    s.figure("colibri", format!("{} at {commit}{}", o.tag, if o.dirty { " (with local changes)" } else { "" }));
    s.figure("crates", o.crates.to_string());
}

/// `succeeded_in`: the directory of the run whose success these outputs are.
fn makesum(s: &mut StageFacts, value: Option<&Outputs>, succeeded_in: Option<&Utf8Path>) {
    let Some(o) = value.and_then(parse::<MakesumOutputs>) else { return };
    let total: u64 = o.distfiles.iter().map(|d| d.size).sum();
    s.figure("distfiles", format!("{} ({}), every one verified", o.distfiles.len(), crate::ui::bytes(total)));
    let obtained = succeeded_in
        .and_then(|d| std::fs::read_to_string(d.join("makesum").join(crate::makesum::OBTAINED)).ok())
        .and_then(|t| serde_json::from_str::<crate::makesum::Obtained>(&t).ok());
    if let Some(got) = &obtained {
        s.figure(
            "how",
            format!(
                "{} already in place, {} fetched ({} from cargo's cache, {} downloaded, {} made from the checkout)",
                got.in_place,
                got.cache + got.downloaded + got.checkout,
                got.cache,
                got.downloaded,
                got.checkout
            ),
        );
    }
    s.figure("distinfo", o.distinfo.to_string());
}

/// The build's status files, from bulk's outputs or (for a failed bulk) the
/// `bulk/build.json` it wrote before poudriere started.
fn build_status(run: &Run) -> Option<BuildStatus> {
    let log_dir = match run.state.usable_outputs(StageName::Bulk).and_then(parse::<BulkOutputs>) {
        Some(o) => o.log_dir,
        None => {
            let text = std::fs::read_to_string(run.dir.join("bulk/build.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Utf8PathBuf::from(v.get("log_dir")?.as_str()?)
        }
    };
    BuildStatus::read(&log_dir).ok().flatten()
}

fn bulk(s: &mut StageFacts, run: &Run, value: Option<&Outputs>) {
    let outputs = value.and_then(parse::<BulkOutputs>);
    if let Some(o) = &outputs {
        s.figure("build", format!("{} of {}", o.build_name, o.mastername));
        for p in &o.packages {
            s.figure("package", p.describe());
        }
        if let Some(r) = &o.reproduce {
            s.figure(
                "reproduced",
                format!(
                    "built again in {} as {}: {} of {} packages identical",
                    r.set,
                    r.build_name,
                    r.packages.len() - r.differing(),
                    r.packages.len()
                ),
            );
            for c in r.packages.iter().filter(|c| !c.identical) {
                s.figure(
                    "differs",
                    format!(
                        "{}: sha256 {} vs {}; {}",
                        c.file,
                        c.first_sha256,
                        c.second_sha256.as_deref().unwrap_or("none"),
                        c.members.join("; ")
                    ),
                );
            }
        }
    }
    let Some(b) = build_status(run) else { return };
    s.figure("poudriere", format!("{} ({})", b.status, b.counts()));
    if outputs.is_none() {
        s.figure("stopped at", b.phase_when_stopped().to_owned());
    }
    let mut failed =
        Table::new("failed ports, with poudriere's phase", &["origin", "package", "phase", "error type", "log"]);
    for f in &b.failed {
        failed.push(vec![
            f.originspec.clone(),
            f.pkgname.clone(),
            f.phase.clone(),
            f.errortype.clone(),
            b.log_of(&f.pkgname).to_string(),
        ]);
    }
    let mut skipped = Table::new("skipped ports (a dependency failed)", &["origin", "package", "because of"]);
    for k in &b.skipped {
        skipped.push(vec![k.originspec.clone(), k.pkgname.clone(), k.culprit.clone()]);
    }
    let mut ignored = Table::new("ignored ports", &["origin", "package", "reason"]);
    for i in &b.ignored {
        ignored.push(vec![i.originspec.clone(), i.pkgname.clone(), i.reason.clone()]);
    }
    let mut built = Table::new("built ports", &["origin", "package"]);
    for p in b.built.iter().chain(&b.fetched) {
        built.push(vec![p.originspec.clone(), p.pkgname.clone()]);
    }
    s.tables.extend([failed, skipped, ignored, built].into_iter().filter(|t| t.total > 0));
}

/// The audit's report: its outputs, or (for a failed audit) the audit.json it wrote.
fn audit(s: &mut StageFacts, run: &Run, value: Option<&Outputs>) {
    let o = value.and_then(parse::<crate::audit::AuditOutputs>).or_else(|| {
        let text = std::fs::read_to_string(run.dir.join("audit").join(crate::audit::REPORT)).ok()?;
        serde_json::from_str(&text).ok()
    });
    let Some(o) = o else { return };
    match (&o.advisory_db, o.db_age_secs) {
        (Some(db), Some(age)) => s.figure(
            "advisory database",
            format!(
                "{db}: {} advisories, updated {} days ago ({})",
                o.advisories,
                age / 86_400,
                o.db_age_from.as_deref().unwrap_or("")
            ),
        ),
        _ => s.figure("advisory database", "not configured: the crates were not audited (audit.advisory_db)"),
    }
    if let Some(v) = &o.vuxml {
        s.figure("VuXML", format!("{v}: {} entries, checked {}", o.vuxml_entries, o.packages.join(", ")));
    }
    s.figure(
        "verdict",
        format!(
            "{} crates checked, {}, {} fail the policy (fail on {} and above)",
            o.crates,
            match o.findings.len() {
                1 => "1 advisory applies".to_owned(),
                n => format!("{n} advisories apply"),
            },
            o.failing(),
            o.fail_on.map_or("?", |f| f.as_str())
        ),
    );
    let mut t = Table::new(
        "advisories",
        &["advisory", "severity", "crate or package", "version", "fixed in", "contained in", "verdict"],
    );
    for f in &o.findings {
        let verdict = match &f.verdict {
            crate::audit::Verdict::Fails => "fails".to_owned(),
            crate::audit::Verdict::Reported => f.informational.clone().unwrap_or_else(|| "reported".to_owned()),
            crate::audit::Verdict::Ignored { reason, until } => format!("ignored until {until}: {reason}"),
            crate::audit::Verdict::Expired { reason, until } => format!("fails: ignore expired {until} ({reason})"),
        };
        t.push(vec![
            format!("{}: {}", f.id, f.title),
            f.severity.as_str().to_owned(),
            f.name.clone(),
            f.version.clone(),
            f.fixed.join(", "),
            f.packages.join(", "),
            verdict,
        ]);
    }
    if t.total > 0 {
        s.tables.push(t);
    }
}

fn sign(s: &mut StageFacts, outputs: Option<&SignFacts>) {
    let Some(o) = outputs else { return };
    s.figure("key fingerprint", format!("SHA-256 {}", o.key_fingerprint));
    s.figure("trust mode", o.trust.to_string());
    s.figure(
        "catalogue",
        if o.signed { "signed by this stage" } else { "found signed with the release key" }.to_owned(),
    );
    s.figure("packages", format!("{} verified (ABI {})", o.packages.len(), o.abi));
    let mut t = Table::new("packages", &["name", "version", "size", "sum"]);
    for p in &o.packages {
        t.push_with(|| vec![p.name.clone(), p.version.clone(), crate::ui::bytes(p.size), p.sum.clone()]);
    }
    s.tables.push(t);
}

fn publish(s: &mut StageFacts, value: Option<&Outputs>, config: &Config) {
    let Some(o) = value.and_then(parse::<PublishOutputs>) else { return };
    s.figure("version", o.version.clone());
    s.figure("URL", o.url.clone());
    s.figure(
        "files",
        match &o.generation {
            Some(g) => format!(
                "{} copied, {} kept from the previous version (package pool generation {g})",
                o.copied, o.linked
            ),
            None => format!("{} copied, {} linked to the previous version", o.copied, o.linked),
        },
    );
    s.figure(
        "HTTP check",
        if config.publish.check { format!("what {} serves was verified", o.url) } else { "off (publish.check)".into() },
    );
    let candidates = match &o.local {
        Some(local) => local
            .parent()
            .map(crate::publish::rollback_candidates)
            .unwrap_or_default()
            .into_iter()
            .filter(|v| *v != o.version)
            .collect(),
        None => o.previous.iter().cloned().collect::<Vec<_>>(),
    };
    s.figure(
        "rollback candidates",
        if candidates.is_empty() { "none (the first version)".into() } else { candidates.join(", ") },
    );
}

fn iso(s: &mut StageFacts, value: Option<&Outputs>) {
    let Some(o) = value.and_then(parse::<IsoOutputs>) else { return };
    s.figure("profile", format!("{}: the ISO root passed its checks", o.profile));
    s.figure("installed", o.packages.join(", "));
    s.figure("from", o.source.clone());
    if let Some(image) = &o.image {
        s.figure("image", image.to_string());
    }
}

/// The gate's result.json of the run (written on every verdict).
fn gate_result(run: &Run) -> Option<serde_json::Value> {
    let path = match run.state.usable_outputs(StageName::Gate).and_then(parse::<GateOutputs>) {
        Some(o) => run.abs(&o.result),
        None => run.dir.join("gate/result.json"),
    };
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn gate(s: &mut StageFacts, run: &Run) {
    let Some(r) = gate_result(run) else { return };
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    s.figure("verdict", format!("{}: {}", str_of(&r["verdict"]), str_of(&r["reason"])));
    s.figure("backend", str_of(&r["backend"]));
    if let Some(d) = r.get("decided_by") {
        let mut what = str_of(&d["kind"]);
        if let Some(n) = d.get("name").and_then(|n| n.as_str()) {
            what.push_str(&format!(" `{n}`"));
        }
        s.figure("decided by", format!("{what} at {:.1}s", d["at_secs"].as_f64().unwrap_or(0.0)));
    }
    let a = &r["final_attempt"];
    let mut markers = Table::new("markers", &["marker", "appeared at", "console line", "allowed within"]);
    for m in a["markers"].as_array().into_iter().flatten() {
        let seen = m["seen_at_secs"].as_f64().map_or("not seen".into(), |t| format!("{t:.2}s"));
        let line = m["line_number"].as_u64().map_or("-".into(), |n| n.to_string());
        markers.push(vec![str_of(&m["name"]), seen, line, format!("{}s", m["within_secs"].as_u64().unwrap_or(0))]);
    }
    s.tables.push(markers);
    let mut probes = Table::new("probes", &["probe", "verdict", "took", "why"]);
    for p in a["probes"].as_array().into_iter().flatten() {
        let took = p["seconds"].as_f64().map_or("-".into(), |t| format!("{t:.2}s"));
        probes.push(vec![str_of(&p["name"]), str_of(&p["verdict"]), took, str_of(&p["reason"])]);
    }
    if probes.total > 0 {
        s.tables.push(probes);
    }
    let console = format!(
        "{} lines, {} received",
        a["console_lines"].as_u64().unwrap_or(0),
        crate::ui::bytes(a["console_bytes"].as_u64().unwrap_or(0))
    );
    s.figure("console", console);
}

fn console_ref(run: &Run) -> Option<ConsoleRef> {
    let r = gate_result(run)?;
    let a = &r["final_attempt"];
    let rel = a["console"].as_str().or_else(|| r["console"].as_str())?;
    let path = run.dir.join("gate").join(rel);
    let markers = a["markers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["line_number"].as_u64()?, m["name"].as_str()?.to_owned())))
        .collect();
    let deciding = r
        .get("decided_by")
        .and_then(|d| Some((d["line_number"].as_u64()?, d["kind"].as_str().unwrap_or_default().to_owned())));
    Some(ConsoleRef { path, markers, deciding })
}

/// The crates of a distinfo, by name and version.
pub fn crates_of(o: &MakesumOutputs) -> Vec<CrateFact> {
    let mut out: Vec<CrateFact> = o
        .distfiles
        .iter()
        .filter_map(|d| {
            let file = d.name.strip_prefix("rust/crates/")?.strip_suffix(".crate")?;
            let (name, version) = split_crate(file)?;
            Some(CrateFact { name: name.into(), version: version.into(), sha256: d.sha256.clone() })
        })
        .collect();
    out.sort();
    out
}

/// `NAME-VERSION` split where the version begins: the first `-` followed by
/// `DIGITS.DIGITS` (crate names may hold `-` and digits, versions `-` too).
pub fn split_crate(file: &str) -> Option<(&str, &str)> {
    file.match_indices('-').map(|(i, _)| i).find_map(|i| {
        let version = &file[i + 1..];
        let mut parts = version.splitn(3, '.');
        let numeric = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        (numeric(parts.next()) && numeric(parts.next())).then(|| (&file[..i], version))
    })
}

/// The runs of a state directory, oldest first (ids sort by time). A directory without
/// a readable state.json is left out.
pub fn run_ids(state: &StateDir) -> Vec<String> {
    let Ok(entries) = state.root().join("runs").read_dir_utf8() else { return Vec::new() };
    let mut ids: Vec<String> =
        entries.flatten().filter(|e| e.path().join("state.json").is_file()).map(|e| e.file_name().to_owned()).collect();
    ids.sort();
    ids
}

/// Runs read when looking back for earlier releases: the history a report compares with
/// is bounded whatever the number of runs kept.
const LOOK_BACK: usize = 200;

/// The successful runs (every stage done) before `id`, newest first, at most `n`.
pub fn releases_before(state: &StateDir, id: &str, n: usize) -> Vec<Run> {
    let ids = run_ids(state);
    let before = ids.iter().filter(|i| i.as_str() < id).rev().take(LOOK_BACK);
    before.filter_map(|i| state.load(i).ok()).filter(|r| verdict(r) == Verdict::Pass).take(n).collect()
}

/// Finds a run by id or by a prefix of exactly one id.
pub fn find_run(state: &StateDir, wanted: &str) -> Result<Run> {
    let ids = run_ids(state);
    if ids.iter().any(|i| i == wanted) {
        return state.load(wanted);
    }
    let matching: Vec<&String> = ids.iter().filter(|i| i.starts_with(wanted)).collect();
    match matching.as_slice() {
        [one] => state.load(one),
        [] => Err(crate::failure!("there is no run `{wanted}` in {}", state.root())
            .help(match ids.last() {
                Some(last) => format!(
                    "runs are named by their start time, e.g. {last}; they are in {}",
                    state.root().join("runs")
                ),
                None => "no run has been recorded there yet".to_owned(),
            })
            .usage()
            .into()),
        many => Err(crate::failure!(
            "`{wanted}` names {} runs: {}",
            many.len(),
            many.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )
        .help("give more of the run's id")
        .usage()
        .into()),
    }
}

/// The median of some durations (the mean of the middle two for an even count).
pub fn median(values: &mut [u64]) -> Option<u64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2),
    }
}

/// A path shown relative to `base` when below it.
pub fn shown(path: &Utf8Path, base: &Utf8Path) -> String {
    crate::fsx::relative_to(path, base).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_split_at_their_version() {
        assert_eq!(split_crate("anyhow-1.0.100"), Some(("anyhow", "1.0.100")));
        assert_eq!(split_crate("windows-x86_64-msvc-0.52.6"), Some(("windows-x86_64-msvc", "0.52.6")));
        assert_eq!(split_crate("r-efi-5.3.0"), Some(("r-efi", "5.3.0")));
        assert_eq!(split_crate("foo-1.0.0-beta.1"), Some(("foo", "1.0.0-beta.1")));
        assert_eq!(split_crate("noversion"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5, 1, 3]), Some(3));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
    }
}
