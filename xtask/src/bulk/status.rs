//! A poudriere build's status files, read as poudriere 3.4.8 writes them
//! (`POUDRIERE_DATA/logs/bulk/MASTERNAME/BUILDNAME/.poudriere.*`, docs/reference/poudriere.md
//! sections 5 and 6): the truth about a build, where poudriere's exit status is not.

use std::fs;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

/// How the build as a whole ended, from `.poudriere.status` (reference section 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `stopped:done:`: poudriere finished normally (ports may still have failed).
    Done,
    /// `crashed:` or `stopped:crashed:`: poudriere's main process called `err`; the reason
    /// went to its standard error, never into the status file. `stopped` says whether
    /// its exit handler stopped the jails afterwards.
    Crashed { stopped: bool },
    /// `sigterm:`, `sigint:`, `sighup:`, `sigpipe:` (and `stopped:` + one of them): a
    /// signal stopped poudriere, which exits 1 after cleaning up.
    Signal { signal: String, stopped: bool },
    /// Anything else: poudriere died (or was killed) while at this phase.
    Unfinished(String),
    /// No `.poudriere.status` at all.
    Unknown,
}

/// `.poudriere.stats_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub queued: u64,
    pub built: u64,
    pub failed: u64,
    pub skipped: u64,
    pub ignored: u64,
    pub fetched: u64,
}

/// A line of `.poudriere.ports.built` (`originspec pkgname elapsed`) or
/// `.poudriere.ports.fetched` (`originspec pkgname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub originspec: String,
    pub pkgname: String,
}

/// A line of `.poudriere.ports.failed`: `originspec pkgname phase errortype elapsed` for
/// a port that failed, `originspec pkgname phase phase` (four fields, no elapsed time)
/// for a builder that crashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub originspec: String,
    pub pkgname: String,
    /// The phase (`build`, `build/timeout`, `fetch/runaway`...), or for a crashed builder
    /// the word its status held (`crashed`, `starting`, a phase; possibly empty).
    pub phase: String,
    /// The classifier's word (`???` when nothing matched; tolerated empty); empty for a
    /// crashed builder.
    pub errortype: String,
    /// The builder crashed (the four-field line): not the port's fault.
    pub crashed: bool,
}

/// A line of `.poudriere.ports.skipped`: `originspec pkgname culprit-pkgname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub originspec: String,
    pub pkgname: String,
    pub culprit: String,
}

/// A line of `.poudriere.ports.ignored`: `originspec pkgname reason text...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub originspec: String,
    pub pkgname: String,
    pub reason: String,
}

/// A line of `.poudriere.ports.queued`: `originspec pkgname rdep`, where rdep is `listed`
/// for a port named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub originspec: String,
    pub pkgname: String,
    pub rdep: String,
}

impl Queued {
    /// Named on poudriere's command line (not only pulled in as a dependency).
    pub fn listed(&self) -> bool {
        self.rdep == "listed"
    }
}

/// Everything a build's status files say.
#[derive(Debug, Clone)]
pub struct BuildStatus {
    pub dir: Utf8PathBuf,
    /// `.poudriere.status`, as written.
    pub status: String,
    /// `.poudriere.status.journal%`: every status the build went through, in order.
    pub journal: Vec<String>,
    pub ending: Ending,
    pub stats: Stats,
    pub queued: Vec<Queued>,
    pub built: Vec<Built>,
    pub fetched: Vec<Built>,
    pub failed: Vec<Failed>,
    pub skipped: Vec<Skipped>,
    pub ignored: Vec<Ignored>,
    /// `.poudriere.status.NN`: each builder's number and last status (`crashed:`,
    /// `idle:`, `build:ORIGIN:PKGNAME:START:NOW`...).
    pub builders: Vec<(String, String)>,
}

/// `origin` of an `origin[@flavor][~subpkg]` originspec.
pub fn origin_of(originspec: &str) -> &str {
    originspec.split(['@', '~']).next().unwrap_or(originspec)
}

/// The version part of `name-version`.
pub fn version_of(pkgname: &str) -> &str {
    pkgname.rsplit_once('-').map_or("", |(_, v)| v)
}

impl BuildStatus {
    /// Reads a build's log directory. `None` when the directory does not exist (the
    /// build never started).
    pub fn read(dir: &Utf8Path) -> Result<Option<BuildStatus>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        let status = read_optional(&dir.join(".poudriere.status"))?.map(|s| s.trim().to_owned());
        let ending = match &status {
            None => Ending::Unknown,
            Some(s) => ending(s),
        };
        let stat = |name: &str| -> Result<u64> {
            let path = dir.join(format!(".poudriere.stats_{name}"));
            Ok(read_optional(&path)?.and_then(|s| s.trim().parse().ok()).unwrap_or(0))
        };
        let stats = Stats {
            queued: stat("queued")?,
            built: stat("built")?,
            failed: stat("failed")?,
            skipped: stat("skipped")?,
            ignored: stat("ignored")?,
            fetched: stat("fetched")?,
        };
        let mut build = BuildStatus {
            dir: dir.to_owned(),
            status: status.unwrap_or_default(),
            journal: Vec::new(),
            ending,
            stats,
            queued: Vec::new(),
            built: Vec::new(),
            fetched: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            ignored: Vec::new(),
            builders: read_builders(dir)?,
        };
        for_lines(&dir.join(".poudriere.status.journal%"), |line| build.journal.push(line.trim().to_owned()))?;
        for_lines(&dir.join(".poudriere.ports.queued"), |line| {
            let mut f = line.split(' ');
            if let (Some(o), Some(p)) = (f.next(), f.next()) {
                let rdep = f.next().unwrap_or_default().to_owned();
                build.queued.push(Queued { originspec: o.into(), pkgname: p.into(), rdep });
            }
        })?;
        for (file, list) in [("built", &mut build.built), ("fetched", &mut build.fetched)] {
            for_lines(&dir.join(format!(".poudriere.ports.{file}")), |line| {
                let mut f = line.split(' ');
                if let (Some(o), Some(p)) = (f.next(), f.next()) {
                    list.push(Built { originspec: o.into(), pkgname: p.into() });
                }
            })?;
        }
        for_lines(&dir.join(".poudriere.ports.failed"), |line| {
            if let Some(f) = failed_line(line) {
                build.failed.push(f);
            }
        })?;
        for_lines(&dir.join(".poudriere.ports.skipped"), |line| {
            let mut f = line.split(' ');
            if let (Some(o), Some(p), Some(c)) = (f.next(), f.next(), f.next()) {
                let entry = Skipped { originspec: o.into(), pkgname: p.into(), culprit: c.into() };
                // A port skipped for several reasons may repeat.
                if !build.skipped.contains(&entry) {
                    build.skipped.push(entry);
                }
            }
        })?;
        for_lines(&dir.join(".poudriere.ports.ignored"), |line| {
            let mut f = line.splitn(3, ' ');
            if let (Some(o), Some(p)) = (f.next(), f.next()) {
                let reason = f.next().unwrap_or_default().trim().to_owned();
                build.ignored.push(Ignored { originspec: o.into(), pkgname: p.into(), reason });
            }
        })?;
        Ok(Some(build))
    }

    /// The build log of a package: `logs/PKGNAME.log`.
    pub fn log_of(&self, pkgname: &str) -> Utf8PathBuf {
        self.dir.join("logs").join(format!("{pkgname}.log"))
    }

    /// The failure that made `pkgname` unavailable, if it failed in this build.
    pub fn failure_of_pkg(&self, pkgname: &str) -> Option<&Failed> {
        self.failed.iter().find(|f| f.pkgname == pkgname)
    }

    /// Every package name the build's lists give for `origin` (any flavor or
    /// subpackage), each once, in the order poudriere listed them: the ports named on
    /// the command line first (`.poudriere.ports.queued`, `listed`), then whatever the
    /// other lists add.
    pub fn pkgnames_of<'a>(&'a self, origin: &str) -> Vec<&'a str> {
        let mut names: Vec<&'a str> = Vec::new();
        let mut add = |originspec: &str, pkgname: &'a str| {
            if origin_of(originspec) == origin && !names.contains(&pkgname) {
                names.push(pkgname);
            }
        };
        for q in self.queued.iter().filter(|q| q.listed()) {
            add(&q.originspec, &q.pkgname);
        }
        for b in self.built.iter().chain(&self.fetched) {
            add(&b.originspec, &b.pkgname);
        }
        for f in &self.failed {
            add(&f.originspec, &f.pkgname);
        }
        for s in &self.skipped {
            add(&s.originspec, &s.pkgname);
        }
        for i in &self.ignored {
            add(&i.originspec, &i.pkgname);
        }
        names
    }

    /// What the build did with one package (reference sections 6 and 8).
    pub fn outcome_of(&self, pkgname: &str) -> Outcome<'_> {
        if let Some(f) = self.failed.iter().find(|f| f.pkgname == pkgname) {
            return Outcome::Failed(f);
        }
        if let Some(s) = self.skipped.iter().find(|s| s.pkgname == pkgname) {
            return Outcome::Skipped(s);
        }
        if let Some(i) = self.ignored.iter().find(|i| i.pkgname == pkgname) {
            return Outcome::Ignored(i);
        }
        if let Some(b) = self.built.iter().find(|b| b.pkgname == pkgname) {
            return Outcome::Built(b);
        }
        if let Some(b) = self.fetched.iter().find(|b| b.pkgname == pkgname) {
            return Outcome::Fetched(b);
        }
        match self.queued.iter().find(|q| q.pkgname == pkgname) {
            Some(q) => Outcome::UpToDate(q),
            None => Outcome::Unlisted,
        }
    }

    /// The phase the build was in when a signal or a crash stopped it: the journal's last
    /// status before the stop (or the status itself when there is no journal).
    pub fn phase_when_stopped(&self) -> &str {
        let stop = |s: &str| {
            s.starts_with("stopped:") || matches!(s, "crashed:" | "sigterm:" | "sigint:" | "sighup:" | "sigpipe:")
        };
        self.journal.iter().rev().map(String::as_str).find(|s| !stop(s)).unwrap_or(&self.status)
    }

    /// The builder whose status is `crashed:`, if any.
    pub fn crashed_builders(&self) -> impl Iterator<Item = &str> {
        self.builders.iter().filter(|(_, s)| s.starts_with("crashed:")).map(|(id, _)| id.as_str())
    }

    /// `queued 3, built 1, failed 1, skipped 1, ignored 0, fetched 0`.
    pub fn counts(&self) -> String {
        let s = &self.stats;
        format!(
            "queued {}, built {}, failed {}, skipped {}, ignored {}, fetched {}",
            s.queued, s.built, s.failed, s.skipped, s.ignored, s.fetched
        )
    }
}

/// What a build did with one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    Failed(&'a Failed),
    Skipped(&'a Skipped),
    Ignored(&'a Ignored),
    Built(&'a Built),
    /// Taken prebuilt from the package servers (`bulk -b`).
    Fetched(&'a Built),
    /// In `.poudriere.ports.queued` and no other list: its package was current, so
    /// poudriere took it out of the queue without building it.
    UpToDate(&'a Queued),
    /// In no list at all.
    Unlisted,
}

/// A `.poudriere.ports.failed` line: four fields are a crashed builder
/// (`originspec pkgname phase phase`), five or more a port that failed.
fn failed_line(line: &str) -> Option<Failed> {
    let f: Vec<&str> = line.split(' ').collect();
    let (originspec, pkgname) = (f.first()?.to_string(), f.get(1)?.to_string());
    let phase = f.get(2).copied().unwrap_or_default().to_owned();
    let (errortype, crashed) = match f.len() {
        4 => (String::new(), true),
        // The errortype sits between the phase and the elapsed time.
        n if n >= 5 => (f[3..n - 1].join(" ").trim().to_owned(), false),
        _ => (String::new(), false),
    };
    Some(Failed { originspec, pkgname, phase, errortype, crashed })
}

/// What `.poudriere.status` says about the end of the build. poudriere writes a bare
/// word with a colon; its exit handler prefixes `stopped:` once the jails are stopped.
pub fn ending(status: &str) -> Ending {
    let (stopped, word) = match status.strip_prefix("stopped:") {
        Some(rest) => (true, rest),
        None => (false, status),
    };
    match word {
        "done:" if stopped => Ending::Done,
        "crashed:" => Ending::Crashed { stopped },
        "sigterm:" | "sigint:" | "sighup:" | "sigpipe:" => {
            Ending::Signal { signal: word.trim_end_matches(':').to_uppercase(), stopped }
        }
        _ => Ending::Unfinished(status.to_owned()),
    }
}

/// `.poudriere.status.NN` (two digits), sorted by builder.
fn read_builders(dir: &Utf8Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let entries = dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {dir}"))?;
        let Some(id) = entry.file_name().strip_prefix(".poudriere.status.") else { continue };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some(status) = read_optional(entry.path())? {
            out.push((id.to_owned(), status.trim().to_owned()));
        }
    }
    out.sort();
    Ok(out)
}

fn read_optional(path: &Utf8Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => {
            Ok(Some(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
    }
}

/// Calls `f` on each non-empty line of a file that may be absent.
fn for_lines(path: &Utf8Path, mut f: impl FnMut(&str)) -> Result<()> {
    if let Some(text) = read_optional(path)? {
        for line in text.lines() {
            if !line.trim().is_empty() {
                f(line);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Utf8PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(d.path().to_owned()).unwrap();
        (d, p)
    }

    #[test]
    fn reads_every_list_in_poudriere_columns() {
        let (_d, p) = dir();
        fs::write(p.join(".poudriere.status"), "stopped:done:\n").unwrap();
        fs::write(p.join(".poudriere.stats_queued"), "4\n").unwrap();
        fs::write(p.join(".poudriere.stats_failed"), "2").unwrap();
        fs::write(
            p.join(".poudriere.ports.queued"),
            "devel/a a-1.0 listed\nlang/rust rust-1.89.0 sysutils/colibri\nsysutils/colibri colibri-0.9.0 listed\n",
        )
        .unwrap();
        fs::write(p.join(".poudriere.ports.built"), "devel/a@py311 py311-a-1.0 12\n").unwrap();
        fs::write(p.join(".poudriere.ports.fetched"), "devel/b b-2.0\n").unwrap();
        fs::write(
            p.join(".poudriere.ports.failed"),
            "lang/rust rust-1.89.0 build ??? 3600\nx/y y-1 fetch fetch 2\nz/z z-1 build  7\nc/c c-1 starting starting\n",
        )
        .unwrap();
        fs::write(
            p.join(".poudriere.ports.skipped"),
            "sysutils/colibri colibri-0.9.0 rust-1.89.0\nsysutils/colibri colibri-0.9.0 rust-1.89.0\n",
        )
        .unwrap();
        fs::write(p.join(".poudriere.ports.ignored"), "a/b b-2 is marked as broken: needs a newer rust\n").unwrap();
        fs::write(p.join(".poudriere.status.01"), "crashed:\n").unwrap();
        fs::write(p.join(".poudriere.status.02"), "idle:\n").unwrap();
        fs::write(p.join(".poudriere.status.journal%"), "building:\nparallel_build:\nsigterm:\nstopped:sigterm:\n")
            .unwrap();
        let b = BuildStatus::read(&p).unwrap().unwrap();
        assert_eq!(b.ending, Ending::Done);
        assert_eq!((b.stats.queued, b.stats.failed, b.stats.built), (4, 2, 0));
        assert!(b.queued[0].listed() && !b.queued[1].listed());
        assert_eq!(b.fetched[0].pkgname, "b-2.0");
        assert_eq!(b.failed[0].phase, "build");
        assert_eq!(b.failed[0].errortype, "???");
        assert_eq!(b.failed[1].errortype, "fetch");
        assert_eq!(b.failed[2].errortype, "", "an empty errortype leaves two spaces");
        assert!(!b.failed[0].crashed && !b.failed[2].crashed);
        assert!(b.failed[3].crashed, "four fields: a crashed builder");
        assert_eq!(b.failed[3].phase, "starting");
        assert_eq!(b.skipped.len(), 1, "repeated lines count once");
        assert_eq!(b.failure_of_pkg(&b.skipped[0].culprit).unwrap().originspec, "lang/rust");
        assert_eq!(b.ignored[0].reason, "is marked as broken: needs a newer rust");
        assert_eq!(b.builders, [("01".to_owned(), "crashed:".to_owned()), ("02".into(), "idle:".into())]);
        assert_eq!(b.crashed_builders().collect::<Vec<_>>(), ["01"]);
        assert_eq!(b.journal.len(), 4);
        assert_eq!(b.phase_when_stopped(), "parallel_build:");
        assert_eq!(b.pkgnames_of("devel/a"), ["a-1.0", "py311-a-1.0"]);
        assert!(matches!(b.outcome_of("a-1.0"), Outcome::UpToDate(_)));
        assert!(matches!(b.outcome_of("py311-a-1.0"), Outcome::Built(_)));
        assert!(matches!(b.outcome_of("b-2.0"), Outcome::Fetched(_)));
        assert!(matches!(b.outcome_of("colibri-0.9.0"), Outcome::Skipped(_)));
        assert!(matches!(b.outcome_of("nothing-1"), Outcome::Unlisted));
    }

    #[test]
    fn a_crashed_builder_with_no_status_has_an_empty_phase() {
        let f = failed_line("sysutils/colibri colibri-0.9.0  ").unwrap();
        assert!(f.crashed);
        assert_eq!(f.phase, "");
    }

    #[test]
    fn endings() {
        assert_eq!(ending("stopped:done:"), Ending::Done);
        assert_eq!(ending("crashed:"), Ending::Crashed { stopped: false });
        assert_eq!(ending("stopped:crashed:"), Ending::Crashed { stopped: true });
        assert_eq!(ending("stopped:sigterm:"), Ending::Signal { signal: "SIGTERM".into(), stopped: true });
        assert_eq!(ending("sigint:"), Ending::Signal { signal: "SIGINT".into(), stopped: false });
        assert_eq!(ending("done:"), Ending::Unfinished("done:".into()));
        assert_eq!(ending("parallel_build:"), Ending::Unfinished("parallel_build:".into()));
        assert!(BuildStatus::read(Utf8Path::new("/nonexistent/build")).unwrap().is_none());
    }

    #[test]
    fn originspecs_and_pkgnames() {
        assert_eq!(origin_of("devel/py-a@py311~man"), "devel/py-a");
        assert_eq!(origin_of("sysutils/colibri"), "sysutils/colibri");
        assert_eq!(version_of("py311-a-1.0_1,1"), "1.0_1,1");
    }
}
