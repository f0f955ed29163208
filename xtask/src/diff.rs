//! What changed between two runs: packages (version, size, sum), the crates of distinfo
//! (added, removed, updated), the ports that fail (newly, fixed, still), and each stage's
//! duration against the older run and the median of the last ten releases. The run
//! report shows it against the last successful release; `cargo xtask diff [A] [B]`
//! prints it for any two runs, as text or `--json`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde::Serialize;

use crate::cli::Diff;
use crate::engine::Engine;
use crate::report::facts::{self, CrateFact, PackageFact, PortFailure, RunFacts};
use crate::run::Status;
use crate::stage::StageName;

/// Releases whose durations make the median.
pub const MEDIAN_OF: usize = 10;

/// The version of `diff --json`'s layout.
pub const DIFF_SCHEMA: u32 = 1;

/// How a package changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Added,
    Removed,
    /// Another version.
    Updated,
    /// The same version with other bytes (size or sum): rebuilt.
    Rebuilt,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Updated => "updated",
            Change::Rebuilt => "rebuilt",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageChange {
    pub name: String,
    pub change: Change,
    pub old: Option<PackageFact>,
    pub new: Option<PackageFact>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrateUpdate {
    pub name: String,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CrateChanges {
    pub added: Vec<CrateFact>,
    pub removed: Vec<CrateFact>,
    pub updated: Vec<CrateUpdate>,
    /// Same name and version, other checksum: a crate that is not what it was.
    pub checksum_changed: Vec<CrateFact>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PortChanges {
    pub newly_failing: Vec<PortFailure>,
    pub fixed: Vec<PortFailure>,
    pub still_failing: Vec<PortFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageDuration {
    pub stage: StageName,
    /// In the newer run; absent when it did not run there (up to date, or not reached).
    pub ms: Option<u64>,
    /// In the older run, when it ran there.
    pub older_ms: Option<u64>,
    /// The median of the runs (the last [`MEDIAN_OF`] successful releases before the newer
    /// run) in which it ran.
    pub median_ms: Option<u64>,
    pub median_of: usize,
}

/// What changed from `older` to `newer`.
#[derive(Debug, Clone, Serialize)]
pub struct RunDiff {
    pub schema: u32,
    pub older: String,
    pub newer: String,
    /// None when either run has no signed repository to compare.
    pub packages: Option<Vec<PackageChange>>,
    pub crates: Option<CrateChanges>,
    pub ports: Option<PortChanges>,
    pub durations: Vec<StageDuration>,
}

impl RunDiff {
    /// Compares two runs; `history` are earlier successful releases (newest first) for
    /// the medians.
    pub fn between(older: &RunFacts, newer: &RunFacts, history: &[RunFacts]) -> RunDiff {
        let packages = match (&older.packages, &newer.packages) {
            (Some(a), Some(b)) => Some(packages(a, b)),
            _ => None,
        };
        let crates = match (&older.crates, &newer.crates) {
            (Some(a), Some(b)) => Some(crates(a, b)),
            _ => None,
        };
        let ports = match (&older.failing, &newer.failing) {
            (Some(a), Some(b)) => Some(ports(a, b)),
            _ => None,
        };
        let ran = |f: &RunFacts, stage: StageName| {
            f.stage(stage).filter(|s| s.status == Status::Succeeded).and_then(|s| s.duration_ms)
        };
        let durations = newer
            .stages
            .iter()
            .map(|s| {
                let mut past: Vec<u64> = history.iter().take(MEDIAN_OF).filter_map(|h| ran(h, s.name)).collect();
                let median_of = past.len();
                StageDuration {
                    stage: s.name,
                    ms: ran(newer, s.name),
                    older_ms: ran(older, s.name),
                    median_ms: facts::median(&mut past),
                    median_of,
                }
            })
            .collect();
        RunDiff {
            schema: DIFF_SCHEMA,
            older: older.id.clone(),
            newer: newer.id.clone(),
            packages,
            crates,
            ports,
            durations,
        }
    }

    /// One line: what changed, for notifications and the terminal.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match &self.packages {
            Some(p) if p.is_empty() => parts.push("packages unchanged".to_owned()),
            Some(p) => {
                let shown: Vec<String> = p.iter().take(3).map(package_line).collect();
                let more = if p.len() > 3 { format!(" and {} more", p.len() - 3) } else { String::new() };
                parts.push(format!("packages: {}{more}", shown.join("; ")));
            }
            None => {}
        }
        if let Some(c) = &self.crates {
            let n = c.added.len() + c.removed.len() + c.updated.len() + c.checksum_changed.len();
            if n == 0 {
                parts.push("crates unchanged".into());
            } else {
                parts.push(format!(
                    "crates: {} added, {} removed, {} updated{}",
                    c.added.len(),
                    c.removed.len(),
                    c.updated.len(),
                    if c.checksum_changed.is_empty() {
                        String::new()
                    } else {
                        format!(", {} with another checksum", c.checksum_changed.len())
                    }
                ));
            }
        }
        if let Some(p) = &self.ports
            && (p.newly_failing.len() + p.fixed.len() + p.still_failing.len()) > 0
        {
            parts.push(format!(
                "ports: {} newly failing, {} fixed, {} still failing",
                p.newly_failing.len(),
                p.fixed.len(),
                p.still_failing.len()
            ));
        }
        if parts.is_empty() { "nothing to compare".into() } else { parts.join("; ") }
    }

    /// The whole diff as text.
    pub fn text(&self) -> String {
        let mut out = format!("changes from run {} to run {}\n", self.older, self.newer);
        out.push_str("\npackages:\n");
        match &self.packages {
            None => out.push_str("  (not known: a run has no signed repository)\n"),
            Some(p) if p.is_empty() => out.push_str("  unchanged\n"),
            Some(p) => p.iter().for_each(|c| out.push_str(&format!("  {}\n", package_line(c)))),
        }
        out.push_str("\ncrates in distinfo:\n");
        match &self.crates {
            None => out.push_str("  (not known: a run has no distinfo)\n"),
            Some(c) => {
                let before = out.len();
                for k in &c.added {
                    out.push_str(&format!("  added    {} {}\n", k.name, k.version));
                }
                for k in &c.removed {
                    out.push_str(&format!("  removed  {} {}\n", k.name, k.version));
                }
                for u in &c.updated {
                    out.push_str(&format!("  updated  {} {} -> {}\n", u.name, u.old, u.new));
                }
                for k in &c.checksum_changed {
                    out.push_str(&format!("  CHECKSUM CHANGED  {} {} (now {})\n", k.name, k.version, k.sha256));
                }
                if out.len() == before {
                    out.push_str("  unchanged\n");
                }
            }
        }
        out.push_str("\nports:\n");
        match &self.ports {
            None => out.push_str("  (not known: a run's build status files cannot be read)\n"),
            Some(p) => {
                let before = out.len();
                for (word, list) in
                    [("newly failing", &p.newly_failing), ("fixed", &p.fixed), ("still failing", &p.still_failing)]
                {
                    for f in list {
                        out.push_str(&format!("  {word:<14} {} ({}, {})\n", f.origin, f.pkgname, f.phase));
                    }
                }
                if out.len() == before {
                    out.push_str("  no port failed in either run\n");
                }
            }
        }
        out.push_str(&format!(
            "\ndurations:\n  {:<8} {:>10} {:>10} {:>16}\n",
            "stage",
            "this run",
            "older run",
            format!("median of {MEDIAN_OF}")
        ));
        for d in &self.durations {
            out.push_str(&format!(
                "  {:<8} {:>10} {:>10} {:>16}\n",
                d.stage.as_str(),
                ms(d.ms),
                ms(d.older_ms),
                match d.median_ms {
                    Some(m) => format!("{} ({})", ms(Some(m)), d.median_of),
                    None => "-".into(),
                }
            ));
        }
        out
    }
}

/// `12.3s`, or `-` for a stage that did not run.
pub fn ms(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |m| crate::ui::duration(std::time::Duration::from_millis(m)))
}

/// `colibri 0.9.0 -> 0.9.1 (4.1 MiB, sum 2$...)`.
pub fn package_line(c: &PackageChange) -> String {
    match (&c.old, &c.new) {
        (Some(o), Some(n)) if c.change == Change::Updated => format!("{} {} -> {}", c.name, o.version, n.version),
        (Some(_), Some(n)) => format!("{} {} rebuilt (size {}, sum {})", c.name, n.version, n.size, n.sum),
        (None, Some(n)) => format!("{} {} added", c.name, n.version),
        (Some(o), None) => format!("{} {} removed", c.name, o.version),
        (None, None) => c.name.clone(),
    }
}

fn packages(older: &[PackageFact], newer: &[PackageFact]) -> Vec<PackageChange> {
    let a: BTreeMap<&str, &PackageFact> = older.iter().map(|p| (p.name.as_str(), p)).collect();
    let b: BTreeMap<&str, &PackageFact> = newer.iter().map(|p| (p.name.as_str(), p)).collect();
    let names: BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (old, new) = (a.get(name).copied(), b.get(name).copied());
            let change = match (old, new) {
                (None, Some(_)) => Change::Added,
                (Some(_), None) => Change::Removed,
                (Some(o), Some(n)) if o.version != n.version => Change::Updated,
                (Some(o), Some(n)) if o != n => Change::Rebuilt,
                _ => return None,
            };
            Some(PackageChange { name: name.to_owned(), change, old: old.cloned(), new: new.cloned() })
        })
        .collect()
}

fn crates(older: &[CrateFact], newer: &[CrateFact]) -> CrateChanges {
    let by_name = |list: &[CrateFact]| {
        let mut m: BTreeMap<String, BTreeMap<String, CrateFact>> = BTreeMap::new();
        for c in list {
            m.entry(c.name.clone()).or_default().insert(c.version.clone(), c.clone());
        }
        m
    };
    let (a, b) = (by_name(older), by_name(newer));
    let mut out = CrateChanges::default();
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let empty = BTreeMap::new();
    for name in names {
        let (old, new) = (a.get(name).unwrap_or(&empty), b.get(name).unwrap_or(&empty));
        let gone: Vec<&CrateFact> = old.iter().filter(|(v, _)| !new.contains_key(*v)).map(|(_, c)| c).collect();
        let came: Vec<&CrateFact> = new.iter().filter(|(v, _)| !old.contains_key(*v)).map(|(_, c)| c).collect();
        for (v, c) in new {
            if old.get(v).is_some_and(|o| o.sha256 != c.sha256) {
                out.checksum_changed.push(c.clone());
            }
        }
        // One version replaced by another is an update; anything else is added or removed.
        if let ([g], [c]) = (gone.as_slice(), came.as_slice()) {
            out.updated.push(CrateUpdate { name: name.clone(), old: g.version.clone(), new: c.version.clone() });
        } else {
            out.removed.extend(gone.into_iter().cloned());
            out.added.extend(came.into_iter().cloned());
        }
    }
    out
}

fn ports(older: &[PortFailure], newer: &[PortFailure]) -> PortChanges {
    let failed_before: BTreeSet<&str> = older.iter().map(|p| p.origin.as_str()).collect();
    let failed_now: BTreeSet<&str> = newer.iter().map(|p| p.origin.as_str()).collect();
    let mut out = PortChanges::default();
    for p in newer {
        if failed_before.contains(p.origin.as_str()) {
            out.still_failing.push(p.clone());
        } else {
            out.newly_failing.push(p.clone());
        }
    }
    out.fixed = older.iter().filter(|p| !failed_now.contains(p.origin.as_str())).cloned().collect();
    out
}

/// The diff a report shows: `run` against the last successful release before it, with
/// the releases before that for the medians. None when there is no earlier release.
pub fn since_last_release(engine: &Engine, run: &RunFacts) -> Option<RunDiff> {
    let history: Vec<RunFacts> = facts::releases_before(&engine.state, &run.id, MEDIAN_OF)
        .iter()
        .map(|r| facts::read(r, &engine.loaded.config))
        .collect();
    let last = history.first()?;
    Some(RunDiff::between(last, run, &history))
}

impl Diff {
    /// `cargo xtask diff [A] [B]`.
    pub fn run(&self, engine: &Engine) -> Result<()> {
        let state = &engine.state;
        let config = &engine.loaded.config;
        let newer = match &self.b {
            Some(b) => facts::find_run(state, b)?,
            None => match (&self.a, state.current()?) {
                (_, Some(run)) => run,
                (_, None) => {
                    return Err(crate::failure!("there is no run in {} to compare", state.root())
                        .help(format!("start one with `{}`", engine.loaded.xtask("release")))
                        .usage()
                        .into());
                }
            },
        };
        let history: Vec<RunFacts> =
            facts::releases_before(state, newer.id(), MEDIAN_OF).iter().map(|r| facts::read(r, config)).collect();
        let older = match &self.a {
            Some(a) => facts::read(&facts::find_run(state, a)?, config),
            None => match history.first() {
                Some(last) => last.clone(),
                None => {
                    return Err(crate::failure!(
                        "run {} has no successful release before it to compare with",
                        newer.id()
                    )
                    .help(format!("name the runs to compare: {}", engine.loaded.xtask("diff OLDER NEWER")))
                    .usage()
                    .into());
                }
            },
        };
        let diff = RunDiff::between(&older, &facts::read(&newer, config), &history);
        if self.json {
            engine.ui.println(&serde_json::to_string_pretty(&diff)?);
        } else {
            engine.ui.print_raw(&diff.text());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, version: &str, sum: &str) -> CrateFact {
        CrateFact { name: name.into(), version: version.into(), sha256: sum.into() }
    }

    #[test]
    fn crates_added_removed_updated() {
        let a = [c("anyhow", "1.0.99", "a"), c("libc", "0.2.1", "l"), c("old", "1.0.0", "o"), c("same", "1.0.0", "s")];
        let b = [c("anyhow", "1.0.100", "b"), c("libc", "0.2.1", "X"), c("new", "2.0.0", "n"), c("same", "1.0.0", "s")];
        let d = crates(&a, &b);
        assert_eq!(d.updated.len(), 1);
        assert_eq!((d.updated[0].name.as_str(), d.updated[0].new.as_str()), ("anyhow", "1.0.100"));
        assert_eq!(d.added, [c("new", "2.0.0", "n")]);
        assert_eq!(d.removed, [c("old", "1.0.0", "o")]);
        assert_eq!(d.checksum_changed, [c("libc", "0.2.1", "X")]);
    }

    #[test]
    fn ports_newly_failing_fixed_still() {
        let f = |o: &str| PortFailure {
            origin: o.into(),
            pkgname: format!("{o}-1"),
            phase: "build".into(),
            errortype: "???".into(),
        };
        let d = ports(&[f("a/a"), f("b/b")], &[f("b/b"), f("c/c")]);
        assert_eq!(d.newly_failing, [f("c/c")]);
        assert_eq!(d.fixed, [f("a/a")]);
        assert_eq!(d.still_failing, [f("b/b")]);
    }
}
