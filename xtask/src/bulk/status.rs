//! A poudriere build's status files, read as poudriere writes them
//! (`POUDRIERE_DATA/logs/bulk/MASTERNAME/BUILDNAME/.poudriere.*`): the truth about a
//! build, where poudriere's exit status is not.

use std::fs;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

/// How the build as a whole ended, from `.poudriere.status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `stopped:done:`: poudriere finished normally (ports may still have failed).
    Done,
    /// Anything with `crashed:`: an infrastructure error; the message after it.
    Crashed(String),
    /// Not stopped: poudriere died (or was stopped) while at this phase.
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

/// A line of `.poudriere.ports.built`: `originspec pkgname elapsed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub originspec: String,
    pub pkgname: String,
}

/// A line of `.poudriere.ports.failed`: `originspec pkgname phase errortype elapsed`
/// (errortype may be empty, leaving two spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub originspec: String,
    pub pkgname: String,
    pub phase: String,
    pub errortype: String,
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

/// Everything a build's status files say.
#[derive(Debug, Clone)]
pub struct BuildStatus {
    pub dir: Utf8PathBuf,
    /// `.poudriere.status`, as written.
    pub status: String,
    pub ending: Ending,
    pub stats: Stats,
    pub built: Vec<Built>,
    pub failed: Vec<Failed>,
    pub skipped: Vec<Skipped>,
    pub ignored: Vec<Ignored>,
}

/// `origin` of an `origin[@flavor][~subpkg]` originspec.
pub fn origin_of(originspec: &str) -> &str {
    originspec.split(['@', '~']).next().unwrap_or(originspec)
}

/// The version part of `name-version`.
pub fn version_of(pkgname: &str) -> &str {
    pkgname.rsplit_once('-').map_or("", |(_, v)| v)
}

/// The name part of `name-version`.
pub fn name_of(pkgname: &str) -> &str {
    pkgname.rsplit_once('-').map_or(pkgname, |(n, _)| n)
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
            ending,
            stats,
            built: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            ignored: Vec::new(),
        };
        for_lines(&dir.join(".poudriere.ports.built"), |line| {
            let mut f = line.split(' ');
            if let (Some(o), Some(p)) = (f.next(), f.next()) {
                build.built.push(Built { originspec: o.into(), pkgname: p.into() });
            }
        })?;
        for_lines(&dir.join(".poudriere.ports.failed"), |line| {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() >= 3 {
                // The errortype sits between the phase and the elapsed time, and may be empty.
                let errortype = if f.len() >= 5 { f[3..f.len() - 1].join(" ") } else { String::new() };
                build.failed.push(Failed {
                    originspec: f[0].into(),
                    pkgname: f[1].into(),
                    phase: f[2].into(),
                    errortype: errortype.trim().into(),
                });
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

    pub fn built_of<'a>(&'a self, origin: &'a str) -> impl Iterator<Item = &'a Built> + 'a {
        self.built.iter().filter(move |b| origin_of(&b.originspec) == origin)
    }
    pub fn failed_of<'a>(&'a self, origin: &'a str) -> impl Iterator<Item = &'a Failed> + 'a {
        self.failed.iter().filter(move |b| origin_of(&b.originspec) == origin)
    }
    pub fn skipped_of<'a>(&'a self, origin: &'a str) -> impl Iterator<Item = &'a Skipped> + 'a {
        self.skipped.iter().filter(move |b| origin_of(&b.originspec) == origin)
    }
    pub fn ignored_of<'a>(&'a self, origin: &'a str) -> impl Iterator<Item = &'a Ignored> + 'a {
        self.ignored.iter().filter(move |b| origin_of(&b.originspec) == origin)
    }

    /// The failure that made `culprit` (a pkgname) unavailable, if it failed in this build.
    pub fn failure_of_pkg(&self, pkgname: &str) -> Option<&Failed> {
        self.failed.iter().find(|f| f.pkgname == pkgname)
    }

    /// `queued 3, built 1, failed 1, skipped 1, ignored 0`.
    pub fn counts(&self) -> String {
        let s = &self.stats;
        format!(
            "queued {}, built {}, failed {}, skipped {}, ignored {}, fetched {}",
            s.queued, s.built, s.failed, s.skipped, s.ignored, s.fetched
        )
    }
}

/// What `.poudriere.status` says about the end of the build.
pub fn ending(status: &str) -> Ending {
    if let Some(at) = status.find("crashed:") {
        let rest = &status[at + "crashed:".len()..];
        let msg = rest.strip_prefix("err:").unwrap_or(rest).trim_end_matches(':').trim();
        return Ending::Crashed(if msg.is_empty() { status.to_owned() } else { msg.to_owned() });
    }
    if status.starts_with("stopped:") && status.contains("done") {
        return Ending::Done;
    }
    Ending::Unfinished(status.to_owned())
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
        fs::write(p.join(".poudriere.stats_failed"), "1").unwrap();
        fs::write(p.join(".poudriere.ports.built"), "devel/a@py311 py311-a-1.0 12\n").unwrap();
        fs::write(
            p.join(".poudriere.ports.failed"),
            "lang/rust rust-1.89.0 build  3600\nx/y y-1 fetch fetch_error 2\n",
        )
        .unwrap();
        fs::write(
            p.join(".poudriere.ports.skipped"),
            "sysutils/colibri colibri-0.9.0 rust-1.89.0\nsysutils/colibri colibri-0.9.0 rust-1.89.0\n",
        )
        .unwrap();
        fs::write(p.join(".poudriere.ports.ignored"), "a/b b-2 is marked as broken: needs a newer rust\n").unwrap();
        let b = BuildStatus::read(&p).unwrap().unwrap();
        assert_eq!(b.ending, Ending::Done);
        assert_eq!((b.stats.queued, b.stats.failed, b.stats.built), (4, 1, 0));
        assert_eq!(b.built_of("devel/a").next().unwrap().pkgname, "py311-a-1.0");
        assert_eq!(b.failed[0].phase, "build");
        assert_eq!(b.failed[0].errortype, "");
        assert_eq!(b.failed[1].errortype, "fetch_error");
        assert_eq!(b.skipped.len(), 1, "repeated lines count once");
        assert_eq!(b.failure_of_pkg(&b.skipped[0].culprit).unwrap().originspec, "lang/rust");
        assert_eq!(b.ignored[0].reason, "is marked as broken: needs a newer rust");
    }

    #[test]
    fn endings() {
        assert_eq!(ending("stopped:done:"), Ending::Done);
        assert_eq!(
            ending("stopped:crashed:err:Failed to sign the repository"),
            Ending::Crashed("Failed to sign the repository".into())
        );
        assert_eq!(ending("parallel_build:"), Ending::Unfinished("parallel_build:".into()));
        assert!(BuildStatus::read(Utf8Path::new("/nonexistent/build")).unwrap().is_none());
    }

    #[test]
    fn originspecs_and_pkgnames() {
        assert_eq!(origin_of("devel/py-a@py311~man"), "devel/py-a");
        assert_eq!(origin_of("sysutils/colibri"), "sysutils/colibri");
        assert_eq!(version_of("py311-a-1.0_1,1"), "1.0_1,1");
        assert_eq!(name_of("py311-a-1.0_1,1"), "py311-a");
    }
}
