//! The local target: the new version is staged beside the others with hard links for
//! unchanged packages, synced to disk, verified, renamed into place, and `latest`
//! switched to it with one atomic rename.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::check::{self, Served};
use super::client::{self, ClientFiles};
use super::pool::{self, Generation, Place};
use super::release::{Release, release_abi, release_trust};
use super::verified::verify_version;
use super::versions::{self, local_latest, local_versions, record_served, rollback_candidates, to_prune};
use super::{Publish, PublishOutputs, Work};
use crate::failure;
use crate::fingerprint::sha256_file;
use crate::fsx;
use crate::sign::{PackageRecord, SignOutputs, plural};
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

/// What `latest` serves after switching to `version`, and the data.pkg digest of the
/// version before it, to tell the two apart.
fn served_info(
    dir: &Utf8Path,
    version: &str,
    previous: Option<&str>,
    fetch: Vec<PackageRecord>,
    trust: Trust,
) -> Result<Served> {
    Served::from_dir(&dir.join(version), version, previous_digest(dir, version, previous), fetch, trust)
}

/// The version before `version` and its data.pkg's SHA-256, to tell the two apart.
fn previous_digest(dir: &Utf8Path, version: &str, previous: Option<&str>) -> Option<(String, String)> {
    previous
        .filter(|p| *p != version)
        .and_then(|p| sha256_file(&dir.join(p).join("data.pkg")).ok().map(|s| (p.to_owned(), s)))
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
    /// The pool generation the version's packages are in.
    generation: Option<String>,
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

/// Everything but the switch: the new version's packages put into the pool (those
/// already there shared), its repository files copied, synced, verified and renamed
/// into place; or, when `latest` already serves this release, that version verified
/// again.
pub fn stage(cx: &Cx, root: &Utf8Path, abi: &str, mut r: Release) -> Result<Staged> {
    let dir = root.join(abi);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let _lock = lock(&dir)?;
    fsx::remove_stale_temps(&dir);
    check_latest(cx, &dir, &r)?;
    // What interrupted publishes left in the pool, and generations nothing uses.
    pool::collect(cx, &dir)?;
    let trust = release_trust(cx, Some(&r.sign))?;
    // The package `served` fetches: the first one copied, or the first one.
    let fetch_of = |packages: &[PackageRecord], copied: &[usize]| -> Vec<PackageRecord> {
        copied.first().and_then(|&i| packages.get(i)).or(packages.first()).cloned().into_iter().collect()
    };

    // What is known of the files the new version shares or links, read since the plan.
    let known = std::mem::take(&mut r.index);
    if let Some(version) = r.already.clone() {
        r.read_packages(cx)?;
        let known = known.wait();
        let vdir = dir.join(&version);
        verify_version(&release_abi(cx, &r.sign), &vdir, &trust, &r.sign.key_fingerprint, &known)?;
        let fetch = fetch_of(&r.sign.packages, &[]);
        return Ok(Staged { r, trust, fetch, packages_copied: 0, linked: 0, generation: pool::generation_of(&vdir) });
    }
    // A publish killed after its rename may have left a complete version of the
    // same name (same second, same catalogue): never write into it.
    let base = r.version.clone();
    let mut n = 2;
    while dir.join(&r.version).exists() {
        r.version = format!("{base}-{n}");
        n += 1;
    }
    let staging_path = fsx::temp_beside(&dir.join(&r.version));
    fs::create_dir(&staging_path).with_context(|| format!("cannot create {staging_path}"))?;
    let mut staging = Staging { path: staging_path.clone(), armed: true };
    let bar = cx.ui.progress("publish", r.files.len() as u64 + 1, false);
    let packages_from = r.packages_from();
    let mut copied: BTreeMap<String, String> = BTreeMap::new();
    crate::proc::check_interrupted()?;
    // The repository files and the release manifest (the SBOM, the provenance and the
    // manifest of a ports tree are tens of megabytes) are copied, hashed and synced at
    // the same time, one thread each; meanwhile sign's packages are read (when the plan
    // left them as text) and which of them the pool has (what its index vouches for: a
    // `stat` each) decides where they go. The two share nothing: the copies are in the
    // staging directory, the pool is only looked at.
    let mut pairs: Vec<(String, Utf8PathBuf)> =
        r.files[..packages_from].iter().map(|f| (f.rel.clone(), r.sign.repo.join(&f.rel))).collect();
    pairs.push(("manifest.json".to_owned(), r.manifest.clone()));
    let planned = r.placement.take();
    let (hashed, placed): (Vec<Result<String>>, Result<_>) = std::thread::scope(|s| {
        let threads: Vec<_> = pairs
            .iter()
            .map(|(rel, from)| {
                let to = staging_path.join(rel);
                s.spawn(move || pool::copy_synced(from, &to))
            })
            .collect();
        let placed = match planned {
            Some(p) => Ok((p, known.wait())),
            None => {
                r.read_packages(cx).map(|()| pool::plan(&dir, r.previous.as_deref(), known.wait(), &r.sign.packages))
            }
        };
        (threads.into_iter().map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect(), placed)
    });
    let (placement, mut known) = placed?;
    bar.set_total(r.files.len() as u64 + 1);
    for (f, place) in r.files[packages_from..].iter_mut().zip(&placement.places) {
        f.place = *place;
    }
    let generation = match &placement.generation {
        Generation::Join(g) => g.clone(),
        Generation::Start { .. } => pool::new_name(&dir, &r.version),
    };
    // Nothing is seen before it is what sign verified: the catalogues byte for byte
    // (a version sees every package of its generation, so a catalogue of another
    // release could verify over it), meta.conf naming them, the key trusted, and each
    // package copied checked against its entry before it gets its name in the pool.
    // A package shared or linked is one the pool's index vouches for.
    let refused = |e: String| {
        anyhow::Error::new(
            failure!(
                "the new copy failed verification; nothing was switched and latest still serves {}:\n{e}",
                r.previous.as_deref().unwrap_or("nothing")
            )
            .help(format!(
                "{} changed after sign verified it: run `{}`, then publish again",
                r.sign.repo,
                cx.loaded.xtask(&format!("sign --repo {}", crate::proc::quote(r.sign.repo.as_str())))
            )),
        )
    };
    for ((rel, _), sha) in pairs.iter().zip(hashed) {
        copied.insert(rel.clone(), sha?);
        bar.inc(1, rel);
    }
    check_repository(&staging_path, &r.sign, &trust, &copied).map_err(refused)?;
    let packages = &r.sign.packages;
    let source = pool::Source { repo: &r.sign.repo, packages, known: &known };
    let placed =
        pool::fill(&dir, &generation, &placement, &source, &|rel| bar.inc(1, rel), &|e| refused(format!("  {e}")))?;
    pool::link_version(&staging_path, &generation, packages)?;
    drop(bar);
    crate::proc::check_interrupted()?;
    pool::sync_tree(&staging_path)?;
    let packages_copied = placed.copied.len();
    let prev = r.previous.as_deref().unwrap_or("nothing");
    let kept = match &placement.generation {
        Generation::Join(g) => {
            format!("{} shared with {prev} in the pool generation {g}", plural(placed.kept, "package"))
        }
        Generation::Start { reason, .. } => format!(
            "{} hard-linked from {prev} into the new pool generation {generation} ({reason})",
            plural(placed.kept, "package")
        ),
    };
    cx.say(format!(
        "copied {} and {} (catalogues, meta.conf, SBOM, provenance); {kept}",
        plural(packages_copied, "package"),
        plural(packages_from, "repository file"),
    ));

    // The generation vouches for every file of the version before the version is seen
    // (a generation whose index already does is not written again).
    let index = match &placement.generation {
        Generation::Join(_) => known.extend(placed.index).then_some(known),
        Generation::Start { .. } => Some(placed.index),
    };
    if let Some(index) = index {
        index.write(&pool::pool_dir(&dir).join(&generation))?;
    }

    let final_dir = dir.join(&r.version);
    fs::rename(&staging_path, &final_dir).with_context(|| format!("cannot rename {staging_path} to {final_dir}"))?;
    staging.armed = false;
    fsx::sync_dir(&dir)?;
    let fetch = fetch_of(&r.sign.packages, &placed.copied);
    Ok(Staged { r, trust, fetch, packages_copied, linked: placed.kept, generation: Some(generation) })
}

/// The repository files of a staged version against what sign verified: meta.conf
/// usable and naming the catalogues sign verified, each catalogue archive (`copied`:
/// SHA-256 of each file copied) byte for byte the one sign verified, the SBOM and the
/// provenance the ones sign wrote, and the key that signed the catalogues one the
/// release's trust accepts. What is wrong, a line each.
fn check_repository(
    staged: &Utf8Path,
    sign: &SignOutputs,
    trust: &Trust,
    copied: &BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    let (meta, problems) = verify::check_meta(staged);
    let mut lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    if sign.catalogues.is_empty() {
        lines.push("  sign recorded no catalogue digests (a record from an older mother-build)".into());
    }
    for kind in pkgrepo::CATALOGUES {
        let (archive, _) = meta.catalogue(kind);
        if !sign.catalogues.contains_key(&archive) {
            lines.push(format!("  {archive}: meta.conf names it, but it is not a catalogue sign verified"));
        }
    }
    for (archive, sha) in &sign.catalogues {
        let got = copied.get(archive).map_or("nothing", String::as_str);
        if got != sha {
            lines.push(format!("  {archive}: is not the catalogue sign verified (SHA-256 {got}; sign recorded {sha})"));
        }
    }
    for (what, f) in [("SBOM", &sign.sbom), ("provenance", &sign.provenance)] {
        if let Some(f) = f {
            let got = copied.get(&f.name).map_or("nothing", String::as_str);
            if got != f.sha256 {
                lines.push(format!(
                    "  {}: is not the {what} sign wrote (SHA-256 {got}; sign recorded {})",
                    f.name, f.sha256
                ));
            }
        }
    }
    if !sign.key_fingerprint.is_empty() && !trust.accepts(&sign.key_fingerprint) {
        lines.push(format!(
            "  the catalogues are signed by the key {}, which {} does not trust (it changed after sign)",
            sign.key_fingerprint,
            trust.describe()
        ));
    }
    if lines.is_empty() { Ok(()) } else { Err(lines.join("\n")) }
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
    let Staged { r, trust, fetch, packages_copied, linked, generation } = staged;
    let dir = root.join(abi);
    let _lock = lock(&dir)?;
    check_latest(cx, &dir, &r)?;
    if let Some(version) = &r.already {
        client::write_files(cx, root, client)?;
        cx.say(format!("latest ({version}) already serves this release; verified it again"));
        outputs.version = version.clone();
        outputs.local = Some(dir.join(version));
        outputs.previous = Some(version.clone());
        outputs.generation = generation;
        return served_info(&dir, version, None, fetch, trust);
    }
    let final_dir = dir.join(&r.version);
    // What the check over HTTP compares with, taken before the previous version can be
    // pruned: the new version's catalogues are byte for byte those sign verified (stage
    // checked each copy), so their digests are sign's.
    let checked = cx.config().publish.check;
    let previous = if checked { previous_digest(&dir, &r.version, r.previous.as_deref()) } else { None };
    let served = Served::new(&final_dir, &r.version, r.sign.catalogues.clone(), previous, fetch, trust)?;
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
    outputs.generation = generation;
    drop_aside(r);
    Ok(served)
}

/// Frees `value` in a thread of its own: a release of a ports tree (tens of thousands
/// of package records) takes tens of milliseconds to free, which the report need not
/// wait for.
fn drop_aside<T: Send + 'static>(value: T) {
    std::thread::spawn(move || drop(value));
}

/// Removes the versions beyond `publish.keep`, then the pool generations none of the
/// versions left uses.
fn prune(cx: &Cx, dir: &Utf8Path, latest: &str) -> Result<()> {
    for old in to_prune(&local_versions(dir), cx.config().publish.keep, latest) {
        let path = dir.join(&old);
        // Out of sight first (a hidden name), then removed. A version in the pool holds
        // its repository files and symlinks; one from before the pool, its own tree.
        let aside = fsx::temp_beside(&path);
        fs::rename(&path, &aside).with_context(|| format!("cannot rename {path} to {aside}"))?;
        // Out of sight, it is removed while the run's report is written.
        fsx::remove_dir_all_later(aside);
        cx.say(format!("removed the old version {old}"));
    }
    pool::collect(cx, dir)
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
    let index = pool::index_of(&vdir);
    verify_version(&cx.config().repository.abi, &vdir, &trust, "", &index)
        .map_err(|e| anyhow::anyhow!("cannot roll back to {to}: {e:#}"))?;
    fsx::symlink_atomic(Utf8Path::new(to), &dir.join("latest"))?;
    cx.say(format!("rolled back: latest -> {to} (was {})", from.unwrap_or("nothing")));
    outputs.version = to.to_owned();
    outputs.local = Some(vdir.clone());
    outputs.previous = from.map(str::to_owned);
    outputs.generation = pool::generation_of(&vdir);
    served_info(&dir, to, from, check::first_package(&vdir), trust)
}

/// Takes a switch back: `latest` names `previous` again (or nothing, when there was
/// nothing before), with one rename. Says what it did.
pub fn switch_back(root: &Utf8Path, abi: &str, version: &str, previous: Option<&str>) -> Result<String> {
    let dir = root.join(abi);
    let _lock = lock(&dir)?;
    match previous.filter(|p| *p != version) {
        // Never a `latest` that names nothing: the version it switched to stays.
        Some(p) if !dir.join(p).is_dir() => bail!(
            failure!(
                "latest in {dir} still names {version}: {p}, which it named before, is gone (pruned: publish.keep)"
            )
            .help("it was not among the publish.keep newest versions; publish again once the other targets are fixed")
        ),
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
            let Some(placement) = &r.placement else { return };
            let count = |place: Place| r.files.iter().filter(|f| f.place == place).count();
            let prev = r.previous.as_deref().unwrap_or("nothing");
            let pool = pool::pool_dir(&dir);
            let into = match &placement.generation {
                Generation::Join(g) => {
                    steps.note(format!(
                        "latest is {prev}; {} shared with it in the pool generation {g}",
                        plural(count(Place::Shared), "package")
                    ));
                    pool.join(g)
                }
                Generation::Start { reason, .. } => {
                    steps.note(format!(
                        "a new pool generation, as {reason}; {} hard-linked from {prev}",
                        plural(count(Place::Link), "package")
                    ));
                    pool.join(format!(".{}.tmp.PID.N", r.version))
                }
            };
            let (repository, packages) = r.files.split_at(r.packages_from());
            for f in repository {
                steps.push(Step::Copy { from: r.sign.repo.join(&f.rel), to: staging.join(&f.rel) });
            }
            for f in packages.iter().filter(|f| f.place == Place::Copy) {
                steps.push(Step::Copy { from: r.sign.repo.join(&f.rel), to: into.join(&f.rel) });
            }
            if let Generation::Start { .. } = &placement.generation {
                steps.push(Step::Rename { from: into, to: pool.join(&r.version) });
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
            steps.note(format!("then the generations of {pool} that no version uses are removed"));
        }
        Work::Rollback { to, from } => {
            steps.check(format!("{}: verify it, as sign does", dir.join(to)));
            steps.push(Step::Rename { from: dir.join(".latest.tmp.PID.N"), to: dir.join("latest") });
            steps.note(format!("latest -> {to} (was {})", from.as_deref().unwrap_or("nothing")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_back_never_leaves_latest_naming_a_version_that_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(tmp.path()).unwrap();
        let dir = root.join("ABI");
        fs::create_dir_all(dir.join("v2")).unwrap();
        std::os::unix::fs::symlink("v2", dir.join("latest")).unwrap();
        let err = switch_back(root, "ABI", "v2", Some("v1")).unwrap_err();
        assert!(format!("{err:#}").contains("still names v2: v1, which it named before, is gone"), "{err:#}");
        assert_eq!(local_latest(&dir).as_deref(), Some("v2"));
        fs::create_dir(dir.join("v1")).unwrap();
        assert_eq!(switch_back(root, "ABI", "v2", Some("v1")).unwrap(), format!("latest -> v1 in {dir}, was v2"));
        assert_eq!(local_latest(&dir).as_deref(), Some("v1"));
    }
}
