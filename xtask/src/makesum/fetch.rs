//! Getting distfiles into the distfiles directory: from where they already are, from
//! cargo's registry cache, from their URL, or made from the checkout; each one verified
//! before it is accepted.
//!
//! Nothing ever appears under a distfile's final name unless it is complete and its
//! SHA-256 is what Cargo.lock (or the existing distinfo) says: bytes are written to a
//! temporary name beside it (`.NAME.tmp.PID.N`), hashed as they are written, synced,
//! and renamed only then. A file that fails its check is moved to `DISTDIR/.quarantine/`,
//! never kept as the distfile. Work runs on a bounded pool of threads (downloads wait on
//! the network; hashing uses every core).
//!
//! No byte is read twice: `DISTDIR/.verified-distfiles.json` ([`INDEX`]) records each
//! distfile's SHA-256 with the identity it had when it was verified (device, inode,
//! size, modification and change time). A file whose identity is unchanged is taken
//! from the index without being read; one rewritten in place, even with its
//! modification time set back, has another change time and is hashed again.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};

use super::distfiles::Wanted;
use crate::fingerprint::hex;
use crate::identity::{Identity, Index, Strength};
use crate::proc::CmdLine;
use crate::stage::Cx;

/// Bytes read or written at a time.
const CHUNK: usize = 1 << 20;

/// The directory inside the distfiles directory that holds files which failed their check.
pub const QUARANTINE: &str = ".quarantine";

/// The index of verified distfiles, in the distfiles directory: their SHA-256 by name,
/// while their identity holds.
pub const INDEX: &str = ".verified-distfiles.json";

/// [`INDEX`]'s schema.
const INDEX_SCHEMA: u32 = 1;

/// An index larger than this is not read (a distfiles directory of 100,000 files needs
/// about 25 MB).
const MAX_INDEX: u64 = 64 << 20;

/// The index of the distfiles directory `distdir` (empty when there is none, or it
/// cannot be trusted as it is: see [`Index::read`]).
pub fn read_index(distdir: &Utf8Path) -> Index<String> {
    Index::read(&distdir.join(INDEX), INDEX_SCHEMA, Strength::Full, MAX_INDEX)
}

/// A place a distfile can be had from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Already in the distfiles directory.
    Distdir(Utf8PathBuf),
    /// cargo's registry cache (`$CARGO_HOME/registry/cache/INDEX/NAME-VERSION.crate`).
    Cache(Utf8PathBuf),
    /// Its download URL.
    Url(String),
    /// Made from the colibri checkout: `git archive` then `gzip -n`.
    Checkout(Box<Archive>),
}

/// How to make the port's source archive from the checkout.
#[derive(Debug, Clone)]
pub struct Archive {
    /// `git -C CHECKOUT`.
    pub git: CmdLine,
    /// `gzip`.
    pub gzip: CmdLine,
    /// The tag (or commit) to archive.
    pub reference: String,
    /// Top-level directory inside the archive.
    pub prefix: String,
}

impl Archive {
    /// The two commands that turn `tar` (a temporary path) into `tar.gz`.
    pub fn commands(&self, tar: &Utf8Path) -> [CmdLine; 2] {
        [
            self.git.clone().args([
                "archive".to_owned(),
                "--format=tar".to_owned(),
                format!("--prefix={}/", self.prefix),
                format!("--output={tar}"),
                self.reference.clone(),
            ]),
            self.gzip.clone().args(["-n", "-f", tar.as_str()]),
        ]
    }
}

/// What a distfile must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A SHA-256 and where it comes from (`Cargo.lock PATH`, `distinfo PATH`).
    Sha256 { sha256: String, from: String },
    /// Nothing pins it (no lock checksum, not in distinfo): accepted as first seen, with
    /// a warning naming it.
    FirstSeen,
    /// Made here from the checkout: it is what the checkout's tag gives.
    Made,
}

/// One distfile to get.
#[derive(Debug, Clone)]
pub struct Job {
    pub wanted: Wanted,
    pub expect: Expect,
    /// Where to try, in order.
    pub sources: Vec<Source>,
    /// Why other places were not tried ("not in DISTDIR", "--offline forbids ...").
    pub skipped: Vec<String>,
}

/// Where a distfile came from this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Distdir,
    Cache,
    Download,
    Checkout,
}

/// A distfile that was had.
#[derive(Debug, Clone)]
pub struct Got {
    pub size: u64,
    pub sha256: String,
    pub from: From,
    /// Accepted without a checksum to hold it to.
    pub first_seen: bool,
    /// Its identity in the distfiles directory, as verified (none under --check for
    /// what is not there).
    pub identity: Option<Identity>,
    /// Taken from the index, not read: verified before and unchanged since.
    pub unread: bool,
}

/// What became of one job.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub got: Option<Got>,
    /// Why each place tried did not give it (all of them, when `got` is None).
    pub reasons: Vec<String>,
    /// Files that failed their check and were moved aside.
    pub quarantined: Vec<Utf8PathBuf>,
    /// A file failed its check somewhere (tampered or damaged).
    pub mismatch: bool,
    /// What to do about a reason (the help lines of the errors behind them).
    pub help: Vec<String>,
}

/// Settings for one pass.
pub struct Fetcher<'a> {
    pub cx: &'a Cx<'a>,
    pub distdir: Utf8PathBuf,
    /// `--check`: nothing in the distfiles directory changes; downloads and archives go
    /// to `scratch` and are removed.
    pub check: bool,
    pub scratch: Utf8PathBuf,
    pub agent: ureq::Agent,
    pub retries: u32,
    pub retry_delay: Duration,
    /// Downloads at a time.
    pub jobs: usize,
    /// What earlier runs verified ([`read_index`]).
    pub known: Index<String>,
}

/// One failed attempt.
struct Miss {
    reason: String,
    mismatch: bool,
    quarantined: Option<Utf8PathBuf>,
    help: Vec<String>,
}

impl Miss {
    fn plain(reason: String) -> Miss {
        Miss { reason, mismatch: false, quarantined: None, help: Vec::new() }
    }
}

impl Fetcher<'_> {
    /// Gets every job; the outcomes are in the jobs' order. Files already in the
    /// distfiles directory are verified first on every core; the rest (and those that
    /// failed) are then fetched `jobs` at a time.
    pub fn run(&self, jobs: &[Job], progress: &crate::ui::Progress) -> Result<Vec<Outcome>> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let bytes = AtomicUsize::new(0);
        // Pass 1 counts only what it got: what it refused is counted when pass 2 ends.
        let done = |o: &Outcome, job: &Job, last: bool| match &o.got {
            Some(g) => {
                let total = bytes.fetch_add(g.size as usize, Ordering::Relaxed) + g.size as usize;
                progress.inc(1, &format!("{} done; {}", crate::ui::bytes(total as u64), job.wanted.name));
            }
            None if last => progress.inc(1, &format!("could not get {}", job.wanted.name)),
            None => {}
        };

        // Pass 1: what is already in place, hashed on every core.
        let present: Vec<usize> =
            (0..jobs.len()).filter(|i| matches!(jobs[*i].sources.first(), Some(Source::Distdir(_)))).collect();
        let mut outcomes: Vec<Outcome> = vec![Outcome::default(); jobs.len()];
        let first = parallel(
            &present,
            cores,
            || vec![0u8; CHUNK],
            |buf, &i| {
                let o = self.get(&jobs[i], 0, 1, buf);
                done(&o, &jobs[i], false);
                o
            },
        );
        for (&i, o) in present.iter().zip(first) {
            outcomes[i] = o.unwrap_or_else(interrupted);
        }
        crate::proc::check_interrupted()?;

        // Pass 2: everything else, and what pass 1 refused, from the other places.
        let rest: Vec<usize> = (0..jobs.len()).filter(|i| outcomes[*i].got.is_none()).collect();
        let second = parallel(
            &rest,
            self.jobs.max(1),
            || vec![0u8; CHUNK],
            |buf, &i| {
                let start = usize::from(present.binary_search(&i).is_ok());
                let o = self.get(&jobs[i], start, jobs[i].sources.len(), buf);
                done(&o, &jobs[i], true);
                o
            },
        );
        for (&i, o) in rest.iter().zip(second) {
            let o = o.unwrap_or_else(interrupted);
            let before = std::mem::take(&mut outcomes[i]);
            outcomes[i] = Outcome {
                got: o.got,
                reasons: before.reasons.into_iter().chain(o.reasons).collect(),
                quarantined: before.quarantined.into_iter().chain(o.quarantined).collect(),
                mismatch: before.mismatch || o.mismatch,
                help: before.help.into_iter().chain(o.help).collect(),
            };
        }
        crate::proc::check_interrupted()?;
        if !self.check {
            self.write_index(jobs, &outcomes)?;
            let mut dirs: Vec<Utf8PathBuf> = jobs
                .iter()
                .filter_map(|j| self.distdir.join(&j.wanted.name).parent().map(Utf8Path::to_owned))
                .collect();
            dirs.sort();
            dirs.dedup();
            for dir in dirs {
                if dir.is_dir() {
                    crate::fsx::sync_dir(&dir)?;
                }
            }
        }
        Ok(outcomes)
    }

    /// Writes [`INDEX`] (when it changes): the distfiles verified now, and those recorded
    /// for other ports (a distfiles directory is shared) while they are unchanged.
    fn write_index(&self, jobs: &[Job], outcomes: &[Outcome]) -> Result<()> {
        let mut index = self.known.clone();
        let names: std::collections::HashSet<&str> = jobs.iter().map(|j| j.wanted.name.as_str()).collect();
        index.retain(|name, id, _| {
            !names.contains(name)
                && fs::metadata(self.distdir.join(name)).is_ok_and(|m| Identity::of(&m).same(id, Strength::Full))
        });
        for (job, o) in jobs.iter().zip(outcomes) {
            if let Some(Got { identity: Some(id), sha256, .. }) = &o.got {
                index.insert(job.wanted.name.clone(), *id, sha256.clone());
            }
        }
        if index != self.known {
            index.write(&self.distdir.join(INDEX))?;
        }
        Ok(())
    }

    /// Tries `job.sources[from..to]` in order until one gives a verified file.
    fn get(&self, job: &Job, from: usize, to: usize, buf: &mut [u8]) -> Outcome {
        let mut outcome = Outcome::default();
        for source in &job.sources[from.min(job.sources.len())..to.min(job.sources.len())] {
            if crate::proc::interrupted().is_some() {
                outcome.reasons.push("interrupted".into());
                return outcome;
            }
            match self.attempt(job, source, buf) {
                Ok(got) => {
                    outcome.got = Some(got);
                    return outcome;
                }
                Err(miss) => {
                    self.cx.note(format!("{}: {}", job.wanted.name, miss.reason));
                    outcome.mismatch |= miss.mismatch;
                    outcome.quarantined.extend(miss.quarantined);
                    outcome.reasons.push(miss.reason);
                    outcome.help.extend(miss.help);
                }
            }
        }
        outcome
    }

    fn attempt(&self, job: &Job, source: &Source, buf: &mut [u8]) -> Result<Got, Miss> {
        let name = &job.wanted.name;
        let target = self.distdir.join(name);
        match source {
            Source::Distdir(path) => {
                let cannot = |e: std::io::Error| Miss::plain(format!("cannot read {path}: {e}"));
                let file = File::open(path).map_err(cannot)?;
                let meta = file.metadata().map_err(cannot)?;
                // The identity before any byte is read: a file written while it is
                // hashed is not recorded as what was hashed.
                let identity = Identity::of(&meta);
                let known = self.known.get(name, &meta);
                let (size, sha256) = match known {
                    Some(sha256) => (meta.len(), sha256.clone()),
                    None => hash_open(file, buf).map_err(cannot)?,
                };
                let got = self.accept(job, path, size, sha256, From::Distdir, false)?;
                Ok(Got { identity: Some(identity), unread: known.is_some(), ..got })
            }
            Source::Cache(path) if self.check => {
                let (size, sha256) =
                    hash_file(path, buf).map_err(|e| Miss::plain(format!("cannot read {path}: {e}")))?;
                self.accept(job, path, size, sha256, From::Cache, false)
            }
            Source::Cache(path) => {
                let tmp = self.temp_for(&target);
                let copied = copy_hashing(path, &tmp, buf);
                let (size, sha256) = copied.map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    Miss::plain(format!("cannot copy {path} from cargo's cache: {e}"))
                })?;
                self.cx.note(format!("{name}: copied from {path}"));
                self.accept(job, &tmp, size, sha256, From::Cache, true).map_err(|mut m| {
                    m.reason = format!("cargo's cache holds a damaged copy, {path}: {}", m.reason);
                    m
                })
            }
            Source::Url(url) => {
                let tmp = self.temp_for(&target);
                let (size, sha256) = self.download(url, &tmp, buf).map_err(Miss::plain)?;
                self.cx.note(format!("{name}: downloaded {url} ({size} bytes)"));
                self.accept(job, &tmp, size, sha256, From::Download, true).map_err(|mut m| {
                    m.reason = format!("the download from {url} {}", m.reason);
                    m
                })
            }
            Source::Checkout(archive) => {
                let tmp = self.temp_for(&target);
                let tar = Utf8PathBuf::from(format!("{tmp}.tar"));
                let made = self.make_archive(archive, &tar, buf);
                let gz = Utf8PathBuf::from(format!("{tar}.gz"));
                let (size, sha256) = made.map_err(|e| {
                    let _ = fs::remove_file(&tar);
                    let _ = fs::remove_file(&gz);
                    Miss {
                        help: crate::failure::help_lines(&e),
                        ..Miss::plain(format!("cannot make it from the checkout: {}", crate::ui::render_message(&e)))
                    }
                })?;
                self.cx.note(format!("{name}: made from the checkout ({size} bytes)"));
                self.accept(job, &gz, size, sha256, From::Checkout, true)
            }
        }
    }

    /// Holds a file to its expected checksum. `owned` files (our temporaries) are renamed
    /// into place when good and moved to quarantine when bad; a bad file already in the
    /// distfiles directory is moved to quarantine too (unless --check).
    fn accept(
        &self,
        job: &Job,
        path: &Utf8Path,
        size: u64,
        sha256: String,
        from: From,
        owned: bool,
    ) -> Result<Got, Miss> {
        let name = &job.wanted.name;
        if let Expect::Sha256 { sha256: want, from: said } = &job.expect
            && *want != sha256
        {
            let mut reason = format!("has SHA-256 {sha256}, but {said} says {want}");
            if !owned {
                reason = format!("{path} {reason}");
            }
            let mut quarantined = None;
            if self.check {
                if owned {
                    let _ = fs::remove_file(path);
                    reason.push_str("; discarded (--check keeps nothing)");
                } else {
                    reason.push_str("; left in place (--check changes nothing)");
                }
            } else {
                match self.quarantine(path, name, &sha256) {
                    Ok(q) => {
                        reason.push_str(&format!("; moved aside to {q}"));
                        quarantined = Some(q);
                    }
                    Err(e) => {
                        let _ = fs::remove_file(path);
                        reason.push_str(&format!("; removed it (cannot move it aside: {e})"));
                    }
                }
            }
            return Err(Miss { reason, mismatch: true, quarantined, help: Vec::new() });
        }
        let first_seen = job.expect == Expect::FirstSeen;
        let mut identity = None;
        if owned {
            if self.check {
                let _ = fs::remove_file(path);
            } else {
                let target = self.distdir.join(name);
                fs::rename(path, &target).map_err(|e| {
                    let _ = fs::remove_file(path);
                    Miss::plain(format!("cannot rename {path} to {target}: {e}"))
                })?;
                // Hashed as it was written; its identity once in place (a rename moves
                // the change time).
                identity = fs::metadata(&target).ok().map(|m| Identity::of(&m));
            }
        }
        Ok(Got { size, sha256, from, first_seen, identity, unread: false })
    }

    /// A temporary name for `target`'s bytes: beside it, or in the scratch directory
    /// under --check.
    fn temp_for(&self, target: &Utf8Path) -> Utf8PathBuf {
        if self.check {
            crate::fsx::temp_beside(&self.scratch.join(target.file_name().unwrap_or("distfile")))
        } else {
            crate::fsx::temp_beside(target)
        }
    }

    fn quarantine(&self, path: &Utf8Path, name: &str, sha256: &str) -> Result<Utf8PathBuf> {
        let dir = self.distdir.join(QUARANTINE);
        fs::create_dir_all(&dir)?;
        let base = Utf8Path::new(name).file_name().unwrap_or(name);
        let dest = dir.join(format!("{base}.{}", &sha256[..16]));
        fs::rename(path, &dest)?;
        Ok(dest)
    }

    fn make_archive(&self, archive: &Archive, tar: &Utf8Path, buf: &mut [u8]) -> Result<(u64, String)> {
        for cmd in archive.commands(tar) {
            cmd.run(&self.cx.log)?;
        }
        let gz = Utf8PathBuf::from(format!("{tar}.gz"));
        File::open(&gz).and_then(|f| f.sync_all())?;
        Ok(hash_file(&gz, buf)?)
    }

    /// Downloads `url` to `tmp`, retrying what may pass (connection trouble, a cut-off
    /// body, 5xx, 408, 429) with a doubling delay. Returns the size and SHA-256.
    fn download(&self, url: &str, tmp: &Utf8Path, buf: &mut [u8]) -> Result<(u64, String), String> {
        let tries = self.retries + 1;
        let mut last = String::new();
        let mut tried = 0;
        for attempt in 0..tries {
            if attempt > 0 {
                let delay = self.retry_delay.saturating_mul(1 << (attempt - 1).min(16)).min(Duration::from_secs(60));
                self.cx.note(format!("{url}: {last}; retrying in {}", crate::ui::duration(delay)));
                if !sleep_interruptibly(delay) {
                    break;
                }
            }
            tried += 1;
            match self.download_once(url, tmp, buf) {
                Ok(done) => return Ok(done),
                Err((message, permanent)) => {
                    let _ = fs::remove_file(tmp);
                    last = message;
                    if permanent || crate::proc::interrupted().is_some() {
                        break;
                    }
                }
            }
        }
        let times = if tried > 1 { format!(" (tried {tried} times)") } else { String::new() };
        Err(format!("download {url}: {last}{times}"))
    }

    /// One try. The error says whether trying again could help.
    fn download_once(&self, url: &str, tmp: &Utf8Path, buf: &mut [u8]) -> Result<(u64, String), (String, bool)> {
        let response = self.agent.get(url).call().map_err(|e| (e.to_string(), false))?;
        let status = response.status();
        if status.as_u16() != 200 {
            let code = status.as_u16();
            let permanent = (400..500).contains(&code) && code != 408 && code != 429;
            return Err((
                format!("HTTP {code} {}", status.canonical_reason().unwrap_or("")).trim_end().to_owned(),
                permanent,
            ));
        }
        let length = response.body().content_length();
        let mut reader = response.into_body().into_reader();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(tmp)
            .map_err(|e| (format!("cannot create {tmp}: {e}"), true))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let cut = |size: u64, e: &dyn std::fmt::Display| match length {
            Some(l) => format!("the body broke off after {size} of {l} bytes ({e})"),
            None => format!("the body broke off after {size} bytes ({e})"),
        };
        loop {
            if crate::proc::interrupted().is_some() {
                return Err(("interrupted".into(), true));
            }
            let n = match reader.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err((cut(size, &e), false)),
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| (format!("cannot write {tmp}: {e}"), true))?;
            size += n as u64;
        }
        if let Some(l) = length
            && size != l
        {
            return Err((cut(size, &"connection closed"), false));
        }
        file.sync_all().map_err(|e| (format!("cannot sync {tmp}: {e}"), true))?;
        Ok((size, hex(&hasher.finalize())))
    }
}

fn interrupted() -> Outcome {
    Outcome { reasons: vec!["interrupted".into()], ..Outcome::default() }
}

/// Sleeps, waking early (false) when a stop signal arrives.
fn sleep_interruptibly(total: Duration) -> bool {
    let end = std::time::Instant::now() + total;
    while std::time::Instant::now() < end {
        if crate::proc::interrupted().is_some() {
            return false;
        }
        std::thread::sleep((end - std::time::Instant::now()).min(Duration::from_millis(50)));
    }
    crate::proc::interrupted().is_none()
}

/// SHA-256 and size of a file, read in large chunks.
pub fn hash_file(path: &Utf8Path, buf: &mut [u8]) -> std::io::Result<(u64, String)> {
    hash_open(File::open(path)?, buf)
}

/// The size and SHA-256 of what is left to read of `file`.
fn hash_open(mut file: File, buf: &mut [u8]) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Copies `from` to the new file `to`, hashing on the way; synced before returning.
fn copy_hashing(from: &Utf8Path, to: &Utf8Path, buf: &mut [u8]) -> std::io::Result<(u64, String)> {
    let mut src = File::open(from)?;
    let mut dst = OpenOptions::new().write(true).create_new(true).mode(0o644).open(to)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        size += n as u64;
    }
    dst.sync_all()?;
    Ok((size, hex(&hasher.finalize())))
}

/// Runs `work` over `items` on up to `threads` threads, each with its own state from
/// `init`. Results keep the items' order; an item not reached because a stop signal
/// arrived gives `None`.
fn parallel<T: Sync, R: Send, S>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<Option<R>> {
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut state = init();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() || crate::proc::interrupted().is_some() {
                        break;
                    }
                    let r = work(&mut state, &items[i]);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Removes what interrupted or killed runs left in `dir`: `.NAME.tmp.PID.N...` files
/// whose process is gone. A living process's temporaries are left alone.
pub fn remove_dead_temps(dir: &Utf8Path) {
    let Ok(entries) = dir.read_dir_utf8() else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.strip_prefix('.').and_then(|n| n.split_once(".tmp.")).map(|(_, rest)| rest) else {
            continue;
        };
        let pid: Option<i32> = rest.split('.').next().and_then(|p| p.parse().ok());
        if let Some(pid) = pid
            && !alive(pid)
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn alive(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    // SAFETY: kill with signal 0 only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `CARGO_HOME/registry/cache/*/`: the directories cargo keeps downloaded crates in.
pub fn cargo_caches() -> (Utf8PathBuf, Vec<Utf8PathBuf>) {
    let home = match std::env::var("CARGO_HOME") {
        Ok(h) if !h.is_empty() => Utf8PathBuf::from(h),
        _ => Utf8PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"),
    };
    let root = home.join("registry/cache");
    let mut dirs: Vec<Utf8PathBuf> = root
        .read_dir_utf8()
        .map(|e| e.flatten().filter(|e| e.path().is_dir()).map(|e| e.path().to_owned()).collect())
        .unwrap_or_default();
    dirs.sort();
    (root, dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_keeps_order() {
        let items: Vec<u32> = (0..100).collect();
        let out = parallel(
            &items,
            7,
            || 0u32,
            |count, x| {
                *count += 1;
                x * 2
            },
        );
        assert_eq!(
            out.into_iter().map(Option::unwrap).collect::<Vec<_>>(),
            (0..100).map(|x| x * 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn hashes_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("f")).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        fs::write(&path, &data).unwrap();
        let (size, sha) = hash_file(&path, &mut [0u8; 4096]).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(sha, crate::fingerprint::sha256_bytes(&data));
    }
}
