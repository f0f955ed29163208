//! The package pool of a local ABI directory: the versions share their package files
//! through it, so that a new version costs work in proportion to what changed, not to
//! the size of the repository.
//!
//! ```text
//! ABI/.pool/GEN/All/...               one generation: hard links to package files
//! ABI/.pool/GEN/.verified.json        what verifying them found (identities, digests)
//! ABI/VERSION/.generation -> ../.pool/GEN
//! ABI/VERSION/All -> ../.pool/GEN/All each top directory of the packages' paths
//! ABI/VERSION/NAME.pkg                a package at the top, hard-linked from GEN
//! ```
//! A client asks for `latest/` + the catalogue's `repopath` (`All/x.pkg`), which
//! resolves through the symlinks to the generation's file.
//!
//! The rules that keep every served byte still:
//! - A path in a generation never changes its bytes. A new version joins the
//!   generation of the version `latest` names when none of its packages is there with
//!   other bytes: only the packages the generation lacks are added (copied to a hidden
//!   directory, synced, then hard-linked to their name, which fails rather than
//!   replace a file). A file there that the generation's index does not vouch for (one
//!   an interrupted publish added) is read, and shared when it has the bytes wanted. A
//!   package there with other bytes (a rebuild under the same name) starts a new
//!   generation (named after the version): the packages with the same bytes are
//!   hard-linked from the old one, the rest copied, all under a hidden name renamed into
//!   place.
//! - A generation also stops taking packages once more than a quarter of its files are
//!   ones the new release does not name (the packages of old versions): the next
//!   version starts a new one, and the old one goes with its last version. A
//!   generation's growth is bounded, and what it costs (one link per package) is paid
//!   once every that many changed packages.
//! - A generation is removed, whole, once no version directory uses it; nothing else
//!   of a generation is ever removed.
//! - The generation's index is written before the version that needs it is renamed
//!   into place: every file a visible version names is vouched for.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::verified::{Index, Vouch};
use crate::fsx;
use crate::sign::PackageRecord;
use crate::stage::Cx;

/// The pool's directory in an ABI directory.
pub const POOL: &str = ".pool";

/// The symlink in a version directory that names its generation.
pub const GENERATION: &str = ".generation";

/// The least number of stale files a generation may hold before a new one starts.
const STALE_MIN: usize = 16;

/// How a package file gets to the new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Copied from the signed repository.
    Copy,
    /// Hard-linked from the same path in the directory a new generation starts from.
    Link,
    /// Already in the generation the new version joins, with these bytes.
    Shared,
}

/// The generation the new version's packages are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generation {
    /// The generation of the version `latest` names, which the packages it lacks join.
    Join(String),
    /// A new generation, named after the version. Packages marked [`Place::Link`] are
    /// hard-linked from `from`.
    Start { reason: String, from: Option<Utf8PathBuf> },
}

/// Where the packages of a release go, decided when publish plans.
#[derive(Debug)]
pub struct Placement {
    pub generation: Generation,
    /// One per package of the release, in its order.
    pub places: Vec<Place>,
}

/// The pool of the ABI directory `dir`.
pub fn pool_dir(dir: &Utf8Path) -> Utf8PathBuf {
    dir.join(POOL)
}

/// The generation a version directory's packages are in; none for a version with a
/// package tree of its own (published before the pool).
pub fn generation_of(vdir: &Utf8Path) -> Option<String> {
    let target = fs::read_link(vdir.join(GENERATION)).ok()?;
    let name = target.to_str()?.strip_prefix("../.pool/")?.trim_end_matches('/');
    (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then(|| name.to_owned())
}

/// What verifying a version's packages found: its generation's index, or its own.
pub fn index_of(vdir: &Utf8Path) -> Index {
    match (generation_of(vdir), vdir.parent()) {
        (Some(g), Some(dir)) => Index::read(&pool_dir(dir).join(g)),
        _ => Index::read(vdir),
    }
}

/// Decides where each package of a release goes, given the version `latest` names and
/// what is known of its files (its [`index_of`]); and returns what is known of the
/// files the new version will share or link: the index its packages are verified with.
pub fn plan(dir: &Utf8Path, previous: Option<&str>, known: Index, packages: &[PackageRecord]) -> (Placement, Index) {
    let Some(prev) = previous else { return plan_start("nothing is published yet".into(), None, packages) };
    let vdir = dir.join(prev);
    let Some(g) = generation_of(&vdir) else {
        // A version with its own tree: its files are linked as before the pool.
        let at = crate::identity::Dir::open(&vdir);
        let places = packages
            .iter()
            .map(|p| if known.linkable(&at, p.path.as_str(), p.size, &p.sum) { Place::Link } else { Place::Copy })
            .collect();
        let reason = format!("{prev} has a package tree of its own (published before the pool)");
        return (Placement { generation: Generation::Start { reason, from: Some(vdir) }, places }, known);
    };
    let gdir = pool_dir(dir).join(&g);
    if !gdir.is_dir() {
        return plan_start(format!("{g}, the generation of {prev}, is missing"), None, packages);
    }
    let mut conflict: Option<String> = None;
    let mut places = Vec::with_capacity(packages.len());
    for (p, vouch) in packages.iter().zip(vouch_all(&known, &gdir, packages)) {
        let rel = p.path.as_str();
        places.push(match vouch {
            Vouch::Same => Place::Shared,
            Vouch::Absent => Place::Copy,
            _ => {
                conflict
                    .get_or_insert_with(|| format!("{rel} is in {g} with other bytes (rebuilt under the same name)"));
                Place::Copy
            }
        });
    }
    let shared = places.iter().filter(|p| **p == Place::Shared).count();
    let stale = known.len().saturating_sub(shared);
    if conflict.is_none() && stale > (packages.len() / 4).max(STALE_MIN) {
        conflict = Some(format!("{stale} files of {g} are not in this release (more than a quarter)"));
    }
    match conflict {
        None => (Placement { generation: Generation::Join(g), places }, known),
        Some(reason) => {
            let places =
                places.into_iter().map(|p| if p == Place::Shared { Place::Link } else { Place::Copy }).collect();
            (Placement { generation: Generation::Start { reason, from: Some(gdir) }, places }, known)
        }
    }
}

/// What `known` says of each package's file in the generation `gdir` (one `stat`
/// each, on every core). A file the index does not know (left by an interrupted
/// publish, or the index lost) is read: the same bytes are shared, never replaced.
fn vouch_all(known: &Index, gdir: &Utf8Path, packages: &[PackageRecord]) -> Vec<Vouch> {
    let at = crate::identity::Dir::open(gdir);
    let one = |p: &PackageRecord| match known.vouch(&at, p.path.as_str(), p.size, &p.sum) {
        Vouch::Unknown => match pkgrepo::verify::check_download(&gdir.join(&p.path), p.size, &p.sum) {
            Ok(()) => Vouch::Same,
            Err(_) => Vouch::Differs,
        },
        vouch => vouch,
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = packages.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> =
            packages.chunks(chunk).map(|part| s.spawn(move || part.iter().map(one).collect::<Vec<_>>())).collect();
        parts.into_iter().flat_map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// A new generation of copies of every package.
fn plan_start(reason: String, from: Option<Utf8PathBuf>, packages: &[PackageRecord]) -> (Placement, Index) {
    let places = vec![Place::Copy; packages.len()];
    (Placement { generation: Generation::Start { reason, from }, places }, Index::default())
}

/// Copies `from` to the new file `to` and syncs it, giving the SHA-256 (hex) of what
/// was copied. Synced here, in the copying thread: the copies made beside it go on
/// while this one is written out.
pub fn copy_synced(from: &Utf8Path, to: &Utf8Path) -> Result<String> {
    let (src, dst) = open_copy(from, to)?;
    let mut out = crate::fingerprint::Sha256Writer::new(&dst);
    // In large pieces: an SBOM of a ports tree is tens of megabytes, and io::copy's own
    // buffer is 8 KiB (two system calls each).
    let mut src = std::io::BufReader::with_capacity(1 << 20, src);
    std::io::copy(&mut src, &mut out).with_context(|| format!("cannot copy {from} to {to}"))?;
    let sha = out.hex();
    dst.sync_all().with_context(|| format!("cannot sync {to}"))?;
    Ok(sha)
}

/// `from` opened to be copied to `to`, a new file (never one that is there).
fn open_copy(from: &Utf8Path, to: &Utf8Path) -> Result<(fs::File, fs::File)> {
    let src = fs::File::open(from).with_context(|| format!("cannot open {from}"))?;
    let dst =
        fs::OpenOptions::new().write(true).create_new(true).open(to).with_context(|| format!("cannot create {to}"))?;
    Ok((src, dst))
}

/// Creates the parent directory of `to` unless it is `made`, the one created last (so
/// that a directory of thousands of packages is checked once).
fn make_parent(to: &Utf8Path, made: &mut Utf8PathBuf) -> Result<()> {
    // Compared as strings: a path compares component by component.
    if let Some(dir) = to.parent()
        && dir.as_str() != made.as_str()
    {
        if !dir.is_dir() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
        }
        *made = dir.to_owned();
    }
    Ok(())
}

/// Makes `to` a hard link to `link_from` when given and possible (its parent created
/// as needed); whether it did.
fn link(to: &Utf8Path, link_from: Option<&Utf8Path>, made: &mut Utf8PathBuf) -> Result<bool> {
    make_parent(to, made)?;
    Ok(link_from.is_some_and(|prev| fs::hard_link(prev, to).is_ok()))
}

/// How many files are copied or synced at once: one `fsync` after another costs a
/// journal commit each (most of a first publish of thousands of small packages); issued
/// together, the file system commits them in a few.
const AT_ONCE: usize = 16;

/// `work` for each of `0..count`, on up to [`AT_ONCE`] threads, the results in order.
/// The first error fails it (the threads then take no more work).
fn at_once<T: Send>(count: usize, work: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    let results: Vec<std::sync::Mutex<Option<T>>> = (0..count).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..AT_ONCE.min(count) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count || failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        return;
                    }
                    match work(i) {
                        Ok(r) => *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r),
                        Err(e) => {
                            failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results.into_iter().filter_map(|r| r.into_inner().unwrap_or_else(|p| p.into_inner())).collect())
}

/// Syncs the files copied, [`AT_ONCE`] at a time.
pub fn sync_files(files: &[Utf8PathBuf]) -> Result<()> {
    at_once(files.len(), |i| {
        let path = &files[i];
        fs::File::open(path).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {path}"))
    })?;
    Ok(())
}

/// Copies each package of `copies` (an index into `packages`, and the new file to copy
/// it to) from `repo`, each checked against its catalogue entry as it is copied
/// ([`pkgrepo::verify::copy_checked`]: no copy is read again), then syncs them
/// [`AT_ONCE`] at a time; records each copy's identity and digests in `index`. What
/// does not match is `Ok(Err)`, naming the first such package.
///
/// The copies are made one after another: files created side by side in one directory
/// wait for each other in the file system (ext4 took twice the system time with 16).
fn copy_packages(
    repo: &Utf8Path,
    packages: &[PackageRecord],
    copies: &[(usize, Utf8PathBuf)],
    index: &mut Index,
) -> Result<std::result::Result<(), String>> {
    for (i, to) in copies {
        let p = &packages[*i];
        match copy_package(&repo.join(&p.path), to, p)? {
            Ok((id, digests)) => index.record(p.path.as_str(), id, &digests),
            Err(e) => return Ok(Err(e)),
        }
    }
    let paths: Vec<Utf8PathBuf> = copies.iter().map(|(_, to)| to.clone()).collect();
    sync_files(&paths)?;
    Ok(Ok(()))
}

/// Copies the package `p` from `from` to the new file `to`, checked as it is copied
/// (not synced): its identity and digests, or `Ok(Err)` saying how it does not match
/// its entry. Failing to read or write is an error.
fn copy_package(
    from: &Utf8Path,
    to: &Utf8Path,
    p: &PackageRecord,
) -> Result<std::result::Result<(crate::identity::Identity, pkgrepo::sum::Digests), String>> {
    crate::proc::check_interrupted()?;
    let (src, mut dst) = open_copy(from, to)?;
    let (mut reading, mut writing) = (Watched::new(src), Watched::new(&mut dst));
    let checked = pkgrepo::verify::copy_checked(&mut reading, &mut writing, p.size, &p.sum);
    if let Some(e) = reading.error {
        return Err(anyhow::Error::new(e).context(format!("cannot copy {from} to {to}")));
    }
    if let Some(e) = writing.error {
        return Err(anyhow::Error::new(e).context(format!("cannot copy {from} to {to}")));
    }
    let digests = match checked {
        Ok(d) => d,
        Err(m) => return Ok(Err(format!("{}: {m}", p.path))),
    };
    let meta = dst.metadata().with_context(|| format!("cannot read {to}"))?;
    Ok(Ok((crate::identity::Identity::of(&meta), digests)))
}

/// A reader or writer that keeps the error it failed with (an interrupted call is
/// retried by its caller, not kept).
struct Watched<T> {
    inner: T,
    error: Option<std::io::Error>,
}

impl<T> Watched<T> {
    fn new(inner: T) -> Watched<T> {
        Watched { inner, error: None }
    }

    fn keep<U>(&mut self, r: std::io::Result<U>) -> std::io::Result<U> {
        r.map_err(|e| {
            if e.kind() == std::io::ErrorKind::Interrupted {
                return e;
            }
            let told = std::io::Error::new(e.kind(), e.to_string());
            self.error.get_or_insert(e);
            told
        })
    }
}

impl<T: std::io::Read> std::io::Read for Watched<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.inner.read(buf);
        self.keep(r)
    }
}

impl<T: std::io::Write> std::io::Write for Watched<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.keep(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.keep(r)
    }
}

/// Syncs `dir` and every directory under it (symlinks are not followed).
pub fn sync_tree(dir: &Utf8Path) -> Result<()> {
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(entry.path())?;
        }
    }
    fsx::sync_dir(dir)
}

/// The packages placed in a generation: those copied from the signed repository (each
/// to be synced, and fetched first by the check over HTTP) and how many were not.
#[derive(Debug, Default)]
pub struct Placed {
    /// Indexes into the release's packages.
    pub copied: Vec<usize>,
    pub kept: usize,
    /// What the generation's index is to record of the packages placed: each copy's
    /// identity (as synced) and digests, checked against its catalogue entry as it was copied;
    /// in a new generation also each package linked, as the index it came from had it.
    pub index: Index,
}

/// A hidden directory packages are copied into first (those that join a generation, or
/// a whole new generation); removed when dropped unless it was renamed into place.
struct Incoming {
    dir: Utf8PathBuf,
    armed: bool,
}

impl Incoming {
    fn new(dir: Utf8PathBuf) -> Result<Incoming> {
        fs::create_dir(&dir).with_context(|| format!("cannot create {dir}"))?;
        Ok(Incoming { dir, armed: true })
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where the packages [`fill`] places come from: the repository sign verified, its
/// packages, and the index of the files the plan would link them from.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub repo: &'a Utf8Path,
    pub packages: &'a [PackageRecord],
    pub known: &'a Index,
}

/// Puts the packages of a release into the pool of `dir` as `placement` says: into the
/// existing generation `name` (joining) or into a new one made under a hidden name
/// and renamed to `name` once complete and synced. `each` is called once per package.
///
/// Each copy is checked against its catalogue entry (size and sum) before it gets its
/// name in the pool; one that does not match is `refuse`d (the repository changed
/// after sign verified it). A package linked rather than copied is one `known` (the
/// index of where it is linked from) vouches for.
pub fn fill(
    dir: &Utf8Path,
    name: &str,
    placement: &Placement,
    source: &Source,
    each: &dyn Fn(&str),
    refuse: &dyn Fn(String) -> anyhow::Error,
) -> Result<Placed> {
    let Source { repo, packages, known } = *source;
    let pool = pool_dir(dir);
    fs::create_dir_all(&pool).with_context(|| format!("cannot create {pool}"))?;
    let mut placed = Placed::default();
    match &placement.generation {
        Generation::Start { from, .. } => {
            let mut guard = Incoming::new(fsx::temp_beside(&pool.join(name)))?;
            let building = guard.dir.clone();
            let mut made = building.clone();
            let mut copies: Vec<(usize, Utf8PathBuf)> = Vec::new();
            // Linked from a file the plan vouched for, whose index has since lost it:
            // checked like a copy.
            let mut unknown: (Vec<usize>, Vec<Utf8PathBuf>) = (Vec::new(), Vec::new());
            for (i, (p, how)) in packages.iter().zip(&placement.places).enumerate() {
                crate::proc::check_interrupted()?;
                let rel = p.path.as_str();
                let to = building.join(rel);
                let link_from = from.as_ref().filter(|_| *how == Place::Link).map(|d| d.join(rel));
                if !link(&to, link_from.as_deref(), &mut made)? {
                    placed.copied.push(i);
                    copies.push((i, to));
                } else {
                    placed.kept += 1;
                    match known.recorded(rel) {
                        Some(entry) => placed.index.insert(rel, entry),
                        None => {
                            placed.copied.push(i);
                            unknown.0.push(i);
                            unknown.1.push(to);
                        }
                    }
                }
                each(rel);
            }
            copy_packages(repo, packages, &copies, &mut placed.index)?.map_err(refuse)?;
            sync_files(&unknown.1)?;
            check_copies(&unknown.0, &unknown.1, packages, &mut placed.index).map_err(refuse)?;
            sync_tree(&building)?;
            let done = pool.join(name);
            fs::rename(&building, &done).with_context(|| format!("cannot rename {building} to {done}"))?;
            guard.armed = false;
            fsx::sync_dir(&pool)?;
        }
        Generation::Join(_) => {
            let gdir = pool.join(name);
            let incoming = Incoming::new(fsx::temp_beside(&pool.join("incoming")))?;
            let mut copies: Vec<(usize, Utf8PathBuf)> = Vec::new();
            for (i, (p, how)) in packages.iter().zip(&placement.places).enumerate() {
                crate::proc::check_interrupted()?;
                if *how == Place::Shared {
                    placed.kept += 1;
                } else {
                    placed.copied.push(i);
                    copies.push((i, incoming.dir.join(i.to_string())));
                }
                each(p.path.as_str());
            }
            copy_packages(repo, packages, &copies, &mut placed.index)?.map_err(refuse)?;
            // Each copy, complete, synced and checked, gets its name in the generation:
            // a hard link, which fails rather than replace a file there.
            let mut made = gdir.clone();
            let mut dirs: BTreeSet<Utf8PathBuf> = BTreeSet::new();
            for (i, staged) in &copies {
                let i = *i;
                let to = gdir.join(&packages[i].path);
                make_parent(&to, &mut made)?;
                fs::hard_link(staged, &to).with_context(|| format!("cannot link {staged} to {to}"))?;
                dirs.extend(to.parent().map(Utf8Path::to_owned));
            }
            // New directories are synced with their parents, up to the generation's.
            let mut all: BTreeSet<Utf8PathBuf> = BTreeSet::new();
            for d in dirs {
                let mut at = Some(d.as_path());
                while let Some(d) = at.filter(|d| d.starts_with(&gdir)) {
                    all.insert(d.to_owned());
                    at = d.parent();
                }
            }
            for d in &all {
                fsx::sync_dir(d)?;
            }
        }
    }
    Ok(placed)
}

/// Checks each copied package (`copied[k]` of `packages`, at `paths[k]`) against its
/// catalogue entry, on one thread per core, and records in `index` its identity as it
/// was before it was read and what hashing found. The first package that does not match
/// fails it, naming the package and what differs.
fn check_copies(
    copied: &[usize],
    paths: &[Utf8PathBuf],
    packages: &[PackageRecord],
    index: &mut Index,
) -> std::result::Result<(), String> {
    let one = |(&i, path): (&usize, &Utf8PathBuf)| -> std::result::Result<_, String> {
        let p = &packages[i];
        let before = fs::symlink_metadata(path).map_err(|e| format!("{}: cannot be read: {e}", p.path))?;
        let digests = pkgrepo::verify::check_file(path, p.size, &p.sum).map_err(|m| format!("{}: {m}", p.path))?;
        Ok((i, crate::identity::Identity::of(&before), digests))
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = copied.len().div_ceil(threads).max(1);
    let checked: Vec<_> = std::thread::scope(|s| {
        let parts: Vec<_> = copied
            .chunks(chunk)
            .zip(paths.chunks(chunk))
            .map(|(c, p)| s.spawn(move || c.iter().zip(p).map(one).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    for result in checked {
        let (i, id, digests) = result?;
        index.record(packages[i].path.as_str(), id, &digests);
    }
    Ok(())
}

/// Makes the version directory `vdir` (still under its staging name, beside the pool)
/// use the generation `name`: `.generation` names it, each top directory of the
/// packages' paths is a symlink into it, and each package at the top a hard link.
pub fn link_version(vdir: &Utf8Path, name: &str, packages: &[PackageRecord]) -> Result<()> {
    let target = Utf8PathBuf::from(format!("../{POOL}/{name}"));
    let symlink = |target: &Utf8Path, link: &Utf8Path| {
        std::os::unix::fs::symlink(target, link).with_context(|| format!("cannot create the symlink {link}"))
    };
    symlink(&target, &vdir.join(GENERATION))?;
    let mut tops: BTreeSet<&str> = BTreeSet::new();
    for p in packages {
        match p.path.as_str().split_once('/') {
            Some((top, _)) => {
                tops.insert(top);
            }
            None => {
                let from = vdir.join(&target).join(&p.path);
                let to = vdir.join(&p.path);
                fs::hard_link(&from, &to).with_context(|| format!("cannot link {from} to {to}"))?;
            }
        }
    }
    for top in tops {
        if vdir.join(top).symlink_metadata().is_ok() {
            bail!("the packages' directory {top} has the name of a repository file");
        }
        symlink(&target.join(top), &vdir.join(top))?;
    }
    Ok(())
}

/// A name for a new generation: the version's, with `-N` when a generation has it.
pub fn new_name(dir: &Utf8Path, version: &str) -> String {
    let pool = pool_dir(dir);
    let mut name = version.to_owned();
    let mut n = 2;
    while pool.join(&name).symlink_metadata().is_ok() {
        name = format!("{version}-{n}");
        n += 1;
    }
    name
}

/// Removes the generations of `dir`'s pool that no directory of `dir` uses (a version,
/// kept or not, or anything else), and what interrupted publishes left in the pool.
/// Says what it removed.
pub fn collect(cx: &Cx, dir: &Utf8Path) -> Result<()> {
    let pool = pool_dir(dir);
    if !pool.is_dir() {
        return Ok(());
    }
    fsx::remove_stale_temps(&pool);
    let mut used: BTreeSet<String> = BTreeSet::new();
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))? {
        let entry = entry.with_context(|| format!("cannot read {dir}"))?;
        // A hidden `.NAME.tmp.*` is on its way out (a pruned version being removed, or
        // what an interrupted publish left): it uses nothing.
        let leaving = entry.file_name().starts_with('.') && entry.file_name().contains(".tmp.");
        if entry.file_name() != POOL && !leaving && entry.file_type().is_ok_and(|t| t.is_dir()) {
            used.extend(generation_of(entry.path()));
        }
    }
    for entry in pool.read_dir_utf8().with_context(|| format!("cannot read {pool}"))? {
        let entry = entry.with_context(|| format!("cannot read {pool}"))?;
        let name = entry.file_name();
        if name.starts_with('.') {
            continue;
        }
        if used.contains(name) {
            // An index write an interrupted publish left half done.
            fsx::remove_stale_temps(entry.path());
            continue;
        }
        // Out of sight first (a hidden name, which the next publish removes if this
        // one is interrupted), then removed.
        let path = entry.path();
        let aside = fsx::temp_beside(path);
        fs::rename(path, &aside).with_context(|| format!("cannot rename {path} to {aside}"))?;
        fsx::remove_dir_all_later(aside);
        cx.say(format!("removed the pool generation {name}: no version uses it"));
    }
    Ok(())
}
