//! The audit itself, without the stage around it: colibri's Cargo.lock against a RustSec
//! advisory database, packages against VuXML entries, and the policy that judges what
//! was found. Pure functions over parsed inputs (the benchmark times them).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustsec::cargo_lock::{Lockfile, Package};
use rustsec::database::Query;
use serde::{Deserialize, Serialize};

/// How bad an advisory is: its CVSS severity; `unknown` when it has no score (every
/// VuXML entry, and RustSec advisories without `cvss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    None,
    Low,
    Medium,
    High,
    Critical,
    /// No score: fails whatever `audit.fail_on` says (unless ignored).
    Unknown,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
            Severity::Unknown => "unknown",
        }
    }

    fn of(cvss: Option<&cvss::Cvss>) -> Severity {
        match cvss.map(|c| c.severity()) {
            None => Severity::Unknown,
            Some(cvss::Severity::None) => Severity::None,
            Some(cvss::Severity::Low) => Severity::Low,
            Some(cvss::Severity::Medium) => Severity::Medium,
            Some(cvss::Severity::High) => Severity::High,
            Some(cvss::Severity::Critical) => Severity::Critical,
        }
    }
}

/// Where a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A RustSec advisory against a crate of Cargo.lock.
    Rustsec,
    /// A VuXML entry against a package.
    Vuxml,
}

/// One advisory that applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub source: Source,
    /// `RUSTSEC-2024-0001`, or the VuXML entry's vid.
    pub id: String,
    /// The crate (rustsec) or package (vuxml) it is about.
    pub name: String,
    pub version: String,
    /// The versions that fix it (`>= 1.2.3`; VuXML: the range's upper bound).
    pub fixed: Vec<String>,
    pub severity: Severity,
    pub title: String,
    /// Informational advisories (unmaintained, unsound, notice) are reported, never fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub informational: Option<String>,
    /// The packages that contain it (the crate's package, with the workspace members
    /// that depend on it).
    pub packages: Vec<String>,
    /// Aliases (CVE ids).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The verdict under the policy.
    pub verdict: Verdict,
}

/// What the policy made of a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "is", rename_all = "lowercase")]
pub enum Verdict {
    /// At or above `audit.fail_on` (or of unknown severity): fails the stage.
    Fails,
    /// Below `audit.fail_on`, or informational: reported only.
    Reported,
    /// Ignored by an entry of `audit.ignore` that has not expired.
    Ignored { reason: String, until: String },
    /// Its ignore entry expired: fails, saying so.
    Expired { reason: String, until: String },
}

/// An entry of `audit.ignore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ignore {
    /// The advisory: `RUSTSEC-...`, a CVE alias, or a VuXML vid.
    pub id: String,
    /// Why it does not apply or is accepted (required, shown in every report).
    pub reason: String,
    /// `YYYY-MM-DD`: the last day it is ignored; after it the stage fails again.
    pub until: String,
}

/// What the lock's crates are part of: the package name and the members it installs.
pub struct Packaging<'a> {
    /// The package the port builds (`colibri-0.9.0`).
    pub package: &'a str,
    /// The workspace members the port installs (crate names).
    pub members: &'a [String],
}

/// Every advisory of `db` that applies to a crate of `lock` (crates.io crates only, as
/// RustSec's own query does), withdrawn ones left out, informational ones included.
pub fn rustsec(db: &rustsec::Database, lock: &Lockfile, packaging: &Packaging) -> Vec<Finding> {
    let containing = containing(lock, packaging);
    let query = Query::new().collection(rustsec::Collection::Crates).withdrawn(false);
    let mut out = Vec::new();
    for vuln in db.query_vulnerabilities(lock, &query) {
        let meta = &vuln.advisory;
        let key = (vuln.package.name.as_str().to_owned(), vuln.package.version.to_string());
        out.push(Finding {
            source: Source::Rustsec,
            id: meta.id.to_string(),
            name: key.0.clone(),
            version: key.1.clone(),
            fixed: vuln.versions.patched().iter().map(ToString::to_string).collect(),
            severity: Severity::of(meta.cvss.as_ref()),
            title: meta.title.clone(),
            informational: meta.informational.as_ref().map(|i| i.as_str().to_owned()),
            packages: containing.get(&key).cloned().unwrap_or_default(),
            aliases: meta.aliases.iter().map(ToString::to_string).collect(),
            verdict: Verdict::Reported,
        });
    }
    out
}

/// For each crate of the lock, the package and members that contain it: the members
/// (by name) and everything they depend on, through the lock's dependency graph.
fn containing(lock: &Lockfile, packaging: &Packaging) -> BTreeMap<(String, String), Vec<String>> {
    let key = |p: &Package| (p.name.as_str().to_owned(), p.version.to_string());
    let index: BTreeMap<(String, String), &Package> = lock.packages.iter().map(|p| (key(p), p)).collect();
    let by_name: BTreeMap<&str, Vec<&Package>> = lock.packages.iter().fold(BTreeMap::new(), |mut m, p| {
        m.entry(p.name.as_str()).or_insert_with(Vec::new).push(p);
        m
    });
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for member in packaging.members {
        let Some(roots) = by_name.get(member.as_str()) else { continue };
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        let mut queue: VecDeque<&Package> = roots.iter().copied().collect();
        while let Some(p) = queue.pop_front() {
            if !seen.insert(key(p)) {
                continue;
            }
            for d in &p.dependencies {
                if let Some(dep) = index.get(&(d.name.as_str().to_owned(), d.version.to_string())) {
                    queue.push_back(dep);
                }
            }
        }
        for k in seen {
            out.entry(k).or_default().insert(format!("{} ({member})", packaging.package));
        }
    }
    out.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect()
}

/// Every VuXML entry that affects one of `packages` (`name`, `version`).
pub fn vuxml(entries: &[pkgrepo::vuxml::Entry], packages: &[(String, String)]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, version) in packages {
        for e in entries {
            if let Some((_, range)) = e.affects(name, version) {
                out.push(Finding {
                    source: Source::Vuxml,
                    id: e.vid.clone(),
                    name: name.clone(),
                    version: version.clone(),
                    fixed: range.fixed_in().into_iter().collect(),
                    severity: Severity::Unknown,
                    title: e.topic.clone(),
                    informational: None,
                    packages: vec![format!("{name}-{version}")],
                    aliases: e.cves.clone(),
                    verdict: Verdict::Reported,
                });
            }
        }
    }
    out
}

/// Gives each finding its verdict: `today` is `YYYY-MM-DD` (UTC).
pub fn judge(findings: &mut [Finding], fail_on: Severity, ignore: &[Ignore], today: &str) {
    for f in findings {
        let entry = ignore.iter().find(|i| i.id == f.id || f.aliases.contains(&i.id));
        f.verdict = match entry {
            Some(i) if i.until.as_str() >= today => {
                Verdict::Ignored { reason: i.reason.clone(), until: i.until.clone() }
            }
            Some(i) => Verdict::Expired { reason: i.reason.clone(), until: i.until.clone() },
            None if f.informational.is_some() => Verdict::Reported,
            None if f.severity >= fail_on => Verdict::Fails,
            None => Verdict::Reported,
        };
    }
}

/// Whether `s` is a date `YYYY-MM-DD`.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
        && (1..=12).contains(&s[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u32>().unwrap_or(0))
}

impl Finding {
    /// One line for the terminal and the log.
    pub fn line(&self) -> String {
        let fixed = if self.fixed.is_empty() { "no fixed version".to_owned() } else { self.fixed.join(", ") };
        let inside =
            if self.packages.is_empty() { String::new() } else { format!(", in {}", self.packages.join(", ")) };
        let kind = self.informational.as_deref().map_or(String::new(), |i| format!(" ({i})"));
        let verdict = match &self.verdict {
            Verdict::Fails => "FAILS".to_owned(),
            Verdict::Reported => "reported".to_owned(),
            Verdict::Ignored { reason, until } => format!("ignored until {until}: {reason}"),
            Verdict::Expired { reason, until } => format!("FAILS: its ignore entry expired on {until} ({reason})"),
        };
        format!(
            "{} {}{kind} {} {} {}: {}; fixed: {fixed}{inside}; {verdict}",
            self.id,
            self.severity.as_str(),
            self.name,
            self.version,
            match self.source {
                Source::Rustsec => "(crate)",
                Source::Vuxml => "(package)",
            },
            self.title
        )
    }

    pub fn fails(&self) -> bool {
        matches!(self.verdict, Verdict::Fails | Verdict::Expired { .. })
    }
}
