//! The local target: the new version is staged beside the others with hard links for
//! unchanged packages, synced to disk, verified, renamed into place, and `latest`
//! switched to it with one atomic rename.

use std::fs;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::check::{self, Served};
use super::client::{self, ClientFiles};
use super::release::{FileAction, Release, release_abi, release_trust};
use super::verified::{Index, verify_files, verify_version};
use super::versions::{self, local_latest, local_versions, record_served, rollback_candidates, to_prune};
use super::{Publish, PublishOutputs, Work};
use crate::failure;
use crate::fingerprint::sha256_file;
use crate::fsx;
use crate::sign::{PackageRecord, plural};
use crate::stage::{Cx, Plan, Step};
use pkgrepo::trust::Trust;
use pkgrepo::verify;

/// Holds `.publish.lock` in the ABI directory: one publish at a time per target.
struct TargetLock {
    _file: fs::File,
}

fn lock(dir: &Utf8Path) -> Result<TargetLock> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".publish.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {path}"))?;
    // SAFETY: flock on a valid, open descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(failure!("another publish to {dir} is in progress (it holds {path})").help("wait for it to finish"));
    }
    Ok(TargetLock { _file: file })
}

/// Removes a staging directory unless disarmed.
struct Staging {
    path: Utf8PathBuf,
    armed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Copies `from` to the new file `to`, not yet synced ([`sync_files`] does).
fn copy_file(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    let mut src = fs::File::open(from).with_context(|| format!("cannot open {from}"))?;
    let mut dst =
        fs::OpenOptions::new().write(true).create_new(true).open(to).with_context(|| format!("cannot create {to}"))?;
    std::io::copy(&mut src, &mut dst).with_context(|| format!("cannot copy {from} to {to}"))?;
    Ok(())
}

/// Places `to`: a hard link to `link_from` when given and possible, else a copy of
/// `from` (then true is returned: it must be synced). `made` is the directory created
/// last, so that a directory of thousands of packages is checked once.
fn place(from: &Utf8Path, to: &Utf8Path, link_from: Option<&Utf8Path>, made: &mut Utf8PathBuf) -> Result<bool> {
    // Compared as strings: a path compares component by component.
    if let Some(dir) = to.parent()
        && dir.as_str() != made.as_str()
    {
        if !dir.is_dir() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
        }
        *made = dir.to_owned();
    }
    if let Some(prev) = link_from
        && fs::hard_link(prev, to).is_ok()
    {
        return Ok(false);
    }
    copy_file(from, to)?;
    Ok(true)
}

/// Syncs the files copied, many at a time: one `fsync` after another costs a journal
/// commit each (most of a first publish of thousands of small packages); issued
/// together, the file system commits them in a few.
fn sync_files(files: &[Utf8PathBuf]) -> Result<()> {
    const AT_ONCE: usize = 16;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..AT_ONCE.min(files.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = files.get(i) else { return };
                    let synced = fs::File::open(path).and_then(|f| f.sync_all());
                    if let Err(e) = synced {
                        let e = anyhow::Error::new(e).context(format!("cannot sync {path}"));
                        failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn sync_tree(dir: &Utf8Path) -> Result<()> {
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(entry.path())?;
        }
    }
    fsx::sync_dir(dir)
}

/// What `latest` serves after switching to `version`, and the data.pkg digest of the
/// version before it, to tell the two apart.
fn served_info(
    dir: &Utf8Path,
    version: &str,
    previous: Option<&str>,
    fetch: Vec<PackageRecord>,
    trust: Trust,
) -> Result<Served> {
    let previous = previous
        .filter(|p| *p != version)
        .and_then(|p| sha256_file(&dir.join(p).join("data.pkg")).ok().map(|s| (p.to_owned(), s)));
    Served::from_dir(&dir.join(version), version, previous, fetch, trust)
}

/// A new version copied, verified and renamed into place beside `latest`, which does
/// not name it yet ([`switch`] does).
pub struct Staged {
    r: Release,
    trust: Trust,
    /// The files copied rather than linked (the package `served` fetches is one of them).
    fetch: Vec<PackageRecord>,
    packages_copied: usize,
    linked: usize,
}

/// Publishes `r`: [`stage`], then [`switch`].
pub fn publish(
    cx: &Cx,
    root: &Utf8Path,
    abi: &str,
    r: Release,
    client: &ClientFiles,
    outputs: &mut PublishOutputs,
) -> Result<Served> {
    let staged = stage(cx, root, abi, r)?;
    switch(cx, root, abi, staged, client, outputs)
}

/// Everything but the switch: the new version copied (unchanged packages hard-linked),
/// synced, verified and renamed into place; or, when `latest` already serves this
/// release, that version verified again.
pub fn stage(cx: &Cx, root: &Utf8Path, abi: &str, mut r: Release) -> Result<Staged> {
    let dir = root.join(abi);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let _lock = lock(&dir)?;
    fsx::remove_stale_temps(&dir);
    check_latest(cx, &dir, &r)?;
    let trust = release_trust(cx, Some(&r.sign))?;
    let fetch_of = |copied: &[&FileAction]| -> Vec<PackageRecord> {
        let first_copied = r.sign.packages.iter().find(|p| copied.iter().any(|f| f.rel == p.path.as_str()));
        first_copied.or(r.sign.packages.first()).cloned().into_iter().collect()
    };

    // The index of the version `latest` names, read by the plan.
    let prev_index = std::mem::take(&mut r.index);
    if let Some(version) = &r.already {
        let vdir = dir.join(version);
        verify_version(&release_abi(cx, &r.sign), &vdir, &trust, &r.sign.key_fingerprint, &prev_index)?;
        let fetch = fetch_of(&[]);
        return Ok(Staged { r, trust, fetch, packages_copied: 0, linked: 0 });
    }
    // A publish killed after its rename may have left a complete version of the
    // same name (same second, same catalogue): never write into it.
    let base = r.version.clone();
    let mut n = 2;
    while dir.join(&r.version).exists() {
        r.version = format!("{base}-{n}");
        n += 1;
    }
    let prev_dir = r.previous.as_ref().map(|p| dir.join(p));
    let staging_path = fsx::temp_beside(&dir.join(&r.version));
    fs::create_dir(&staging_path).with_context(|| format!("cannot create {staging_path}"))?;
    let mut staging = Staging { path: staging_path.clone(), armed: true };
    let bar = cx.ui.progress("publish", r.files.len() as u64 + 1, false);
    let (mut copied, mut linked, mut to_sync) = (Vec::new(), 0usize, Vec::new());
    let mut made = staging_path.clone();
    let mut place_all = |files: std::ops::Range<usize>| -> Result<()> {
        for f in &r.files[files] {
            crate::proc::check_interrupted()?;
            let from = r.sign.repo.join(&f.rel);
            let to = staging_path.join(&f.rel);
            let link_from = prev_dir.as_ref().filter(|_| f.link).map(|d| d.join(&f.rel));
            if place(&from, &to, link_from.as_deref(), &mut made)? {
                copied.push(f);
                to_sync.push(to);
            } else {
                linked += 1;
            }
            bar.inc(1, &f.rel);
        }
        Ok(())
    };
    // The catalogues are placed first and read (the CPU's work) while the packages are
    // linked (the file system's); each is read from the staged copy, once placed.
    let packages_from = r.packages_from();
    place_all(0..packages_from)?;
    let catalogues = std::thread::scope(|s| -> Result<_> {
        let reading = s.spawn(|| verify::read_catalogues(&staging_path, &trust));
        let placed = place_all(packages_from..r.files.len());
        let catalogues = reading.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        placed.map(|()| catalogues)
    })?;
    copy_file(&r.manifest, &staging_path.join("manifest.json"))?;
    to_sync.push(staging_path.join("manifest.json"));
    bar.inc(1, "manifest.json");
    drop(bar);
    crate::proc::check_interrupted()?;
    sync_files(&to_sync)?;
    sync_tree(&staging_path)?;
    let packages_copied = copied.iter().filter(|f| f.rel.ends_with(".pkg") && f.rel.contains('/')).count();
    cx.say(format!(
        "copied {} and {} (catalogues, meta.conf, SBOM, provenance) into {}; {} hard-linked from {}",
        plural(packages_copied, "package"),
        plural(copied.len() - packages_copied, "repository file"),
        staging_path,
        plural(linked, "package"),
        r.previous.as_deref().unwrap_or("nothing")
    ));

    // The copy must verify before anyone can see it.
    let (_, index) = verify_files(&release_abi(cx, &r.sign), catalogues, &trust, &r.sign.key_fingerprint, &prev_index)
        .map_err(|e| {
            anyhow::anyhow!(
                "the new copy failed verification; nothing was switched and latest still serves {}:\n{e:#}",
                r.previous.as_deref().unwrap_or("nothing")
            )
        })?;
    index.write(&staging_path)?;

    let final_dir = dir.join(&r.version);
    fs::rename(&staging_path, &final_dir).with_context(|| format!("cannot rename {staging_path} to {final_dir}"))?;
    staging.armed = false;
    fsx::sync_dir(&dir)?;
    let fetch = fetch_of(&copied);
    Ok(Staged { r, trust, fetch, packages_copied, linked })
}

/// `latest` must still name what the plan saw.
fn check_latest(cx: &Cx, dir: &Utf8Path, r: &Release) -> Result<()> {
    let now = local_latest(dir);
    if now != r.previous {
        bail!(
            failure!(
                "`latest` in {dir} changed while this publish was planned (now {})",
                now.as_deref().unwrap_or("nothing")
            )
            .help(format!("run `{}` again", cx.loaded.xtask("publish")))
        );
    }
    Ok(())
}

/// Switches `latest` to a staged version (one rename), records it as served, writes
/// the client files and prunes old versions.
pub fn switch(
    cx: &Cx,
    root: &Utf8Path,
    abi: &str,
    staged: Staged,
    client: &ClientFiles,
    outputs: &mut PublishOutputs,
) -> Result<Served> {
    let Staged { r, trust, fetch, packages_copied, linked } = staged;
    let dir = root.join(abi);
    let _lock = lock(&dir)?;
    check_latest(cx, &dir, &r)?;
    if let Some(version) = &r.already {
        client::write_files(cx, root, client)?;
        cx.say(format!("latest ({version}) already serves this release; verified it again"));
        outputs.version = version.clone();
        outputs.local = Some(dir.join(version));
        outputs.previous = Some(version.clone());
        return served_info(&dir, version, None, fetch, trust);
    }
    let final_dir = dir.join(&r.version);
    client::write_files(cx, root, client)?;
    fsx::symlink_atomic(Utf8Path::new(&r.version), &dir.join("latest"))?;
    if let Err(e) = record_served(&dir, &r.version) {
        // A switch is whole or not at all: `latest` goes back before the error is told.
        drop(_lock);
        let back = switch_back(root, abi, &r.version, r.previous.as_deref())
            .unwrap_or_else(|b| format!("and could not be switched back: {b:#}"));
        return Err(
            e.context(format!("`latest` was switched to {} but its history was not recorded; {back}", r.version))
        );
    }
    cx.say(format!(
        "latest -> {} (was {}): {url}",
        r.version,
        r.previous.as_deref().unwrap_or("nothing"),
        url = Publish::url(cx, abi)
    ));
    prune(cx, &dir, &r.version)?;

    outputs.version = r.version.clone();
    outputs.local = Some(final_dir);
    outputs.previous = r.previous.clone();
    outputs.copied = packages_copied;
    outputs.linked = linked;
    served_info(&dir, &r.version, r.previous.as_deref(), fetch, trust)
}

fn prune(cx: &Cx, dir: &Utf8Path, latest: &str) -> Result<()> {
    for old in to_prune(&local_versions(dir), cx.config().publish.keep, latest) {
        let path = dir.join(&old);
        // Out of sight first (a hidden name), then removed.
        let aside = fsx::temp_beside(&path);
        fs::rename(&path, &aside).with_context(|| format!("cannot rename {path} to {aside}"))?;
        fs::remove_dir_all(&aside).with_context(|| format!("cannot remove {aside}"))?;
        cx.say(format!("removed the old version {old}"));
    }
    Ok(())
}

pub fn rollback(
    cx: &Cx,
    root: &Utf8Path,
    abi: &str,
    to: &str,
    from: Option<&str>,
    outputs: &mut PublishOutputs,
) -> Result<Served> {
    let dir = root.join(abi);
    let _lock = lock(&dir)?;
    let vdir = dir.join(to);
    let trust = release_trust(cx, None)?;
    let index = Index::read(&vdir);
    verify_version(&cx.config().repository.abi, &vdir, &trust, "", &index)
        .map_err(|e| anyhow::anyhow!("cannot roll back to {to}: {e:#}"))?;
    fsx::symlink_atomic(Utf8Path::new(to), &dir.join("latest"))?;
    cx.say(format!("rolled back: latest -> {to} (was {})", from.unwrap_or("nothing")));
    outputs.version = to.to_owned();
    outputs.local = Some(vdir.clone());
    outputs.previous = from.map(str::to_owned);
    served_info(&dir, to, from, check::first_package(&vdir), trust)
}

/// Takes a switch back: `latest` names `previous` again (or nothing, when there was
/// nothing before), with one rename. Says what it did.
pub fn switch_back(root: &Utf8Path, abi: &str, version: &str, previous: Option<&str>) -> Result<String> {
    let dir = root.join(abi);
    let _lock = lock(&dir)?;
    match previous.filter(|p| *p != version) {
        Some(p) => {
            fsx::symlink_atomic(Utf8Path::new(p), &dir.join("latest"))?;
            match record_served(&dir, p) {
                Ok(()) => Ok(format!("latest -> {p} in {dir}, was {version}")),
                Err(e) => Ok(format!("latest -> {p} in {dir}, was {version} (its history not updated: {e:#})")),
            }
        }
        None if previous.is_some() => Ok(format!("latest in {dir} still names {version}, which it named before")),
        None => {
            let latest = dir.join("latest");
            fs::remove_file(&latest).with_context(|| format!("cannot remove {latest}"))?;
            fsx::sync_dir(&dir)?;
            Ok(format!("{latest} removed: nothing was published there before"))
        }
    }
}

/// The versions a rollback may choose from in `dir`, and the one `latest` names.
pub fn rollback_choice(dir: &Utf8Path, wanted: &str) -> (Vec<String>, Option<String>) {
    let versions = if wanted.is_empty() { rollback_candidates(dir) } else { local_versions(dir) };
    (versions, local_latest(dir))
}

pub fn plan_steps(cx: &Cx, root: &Utf8Path, abi: &str, work: &Work, steps: &mut Plan) {
    let dir = root.join(abi);
    match work {
        Work::Publish(r) => {
            if let Some(v) = &r.already {
                steps.note(format!("latest ({v}) already serves this release: nothing to copy or switch"));
                steps.check(format!("{}: verify the published copy", dir.join(v)));
                return;
            }
            steps.push(Step::Mkdir { path: dir.clone() });
            let staging = dir.join(format!(".{}.tmp.PID.N", r.version));
            let linked = r.files.iter().filter(|f| f.link).count();
            if let Some(prev) = &r.previous {
                steps.note(format!("latest is {prev}; {} hard-linked from it, unchanged", plural(linked, "package")));
            } else {
                steps.note("nothing is published for this ABI yet");
            }
            for f in r.files.iter().filter(|f| !f.link) {
                steps.push(Step::Copy { from: r.sign.repo.join(&f.rel), to: staging.join(&f.rel) });
            }
            steps.push(Step::Copy { from: r.manifest.clone(), to: staging.join("manifest.json") });
            steps.check(format!("{staging}: signatures ({} mode), sizes and sums, as sign does", r.sign.trust));
            steps.push(Step::Rename { from: staging, to: dir.join(&r.version) });
            client::plan_steps(cx, root.as_str(), steps);
            steps.push(Step::Rename { from: dir.join(".latest.tmp.PID.N"), to: dir.join("latest") });
            steps.note(format!("latest -> {}", r.version));
            let versions = versions::among(local_versions(&dir).into_iter().chain([r.version.clone()]));
            for old in to_prune(&versions, cx.config().publish.keep, &r.version) {
                steps.push(Step::Remove { path: dir.join(old) });
            }
        }
        Work::Rollback { to, from } => {
            steps.check(format!("{}: verify it, as sign does", dir.join(to)));
            steps.push(Step::Rename { from: dir.join(".latest.tmp.PID.N"), to: dir.join("latest") });
            steps.note(format!("latest -> {to} (was {})", from.as_deref().unwrap_or("nothing")));
        }
    }
}
