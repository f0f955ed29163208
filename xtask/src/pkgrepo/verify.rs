//! Verifying a whole repository as a careful client would, and more: meta.conf, both
//! catalogues (a client may fall back from data.pkg to packagesite.pkg, so both must
//! hold), their signatures in the chosen trust mode, every entry's ABI and path, and
//! every listed package's presence, size and sum. Problems are collected, not thrown:
//! the report lists every one, each saying what failed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};

use super::archive::Archive;
use super::catalogue::{Catalogue, Package, abi_matches};
use super::meta::MetaConf;
use super::sum::{Digests, Sum, Want, hash_file};
use super::trust::{PublicKey, Trust};
use super::{CATALOGUES, CatalogueKind};
use crate::fingerprint::sha256_bytes;

/// pkg reads at most this many `.sig`/`.pub` pairs.
pub const MAX_SIGNATURE_PAIRS: usize = 8;

/// What kind of thing failed: a signature (which signing can fix) or anything else
/// (which it must not paper over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    Signature,
    Content,
}

/// One thing wrong with a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The file (relative to the repository) or entry concerned.
    pub subject: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// A package whose file matched its catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub name: String,
    pub version: String,
    pub origin: String,
    pub path: String,
    pub size: u64,
    pub sum: String,
    /// SHA-256 hex, when asked for ([`Options::sha256`]) or when the sum is SHA-256.
    pub sha256: Option<String>,
}

/// What was found out about one catalogue archive.
#[derive(Debug, Clone, Default)]
pub struct CatalogueInfo {
    /// Archive file name (`data.pkg`).
    pub archive: String,
    /// SHA-256 hex of the archive file.
    pub archive_sha256: String,
    /// Inner file name (`data`).
    pub inner: String,
    /// SHA-256 hex of the inner file: the message that is signed.
    pub inner_sha256: String,
    /// Fingerprints (SHA-256 of the PEM) of the keys whose signatures verified.
    pub verified_by: Vec<String>,
}

/// The verdict on a repository.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub catalogues: Vec<CatalogueInfo>,
    /// The packages of data.pkg (or packagesite.pkg when data.pkg is unreadable) that
    /// verified, in catalogue order.
    pub packages: Vec<Verified>,
    /// Number and total bytes of the package files listed.
    pub listed: usize,
    pub bytes: u64,
    /// What hashing each package file gave, by path.
    pub digests: BTreeMap<String, Digests>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether every problem is a signature problem (so signing would fix it).
    pub fn only_signature_problems(&self) -> bool {
        self.problems.iter().all(|p| p.kind == ProblemKind::Signature)
    }

    /// Whether both catalogues carry a verified signature by the key with `fingerprint`.
    pub fn signed_by(&self, fingerprint: &str) -> bool {
        !self.catalogues.is_empty() && self.catalogues.iter().all(|c| c.verified_by.iter().any(|f| f == fingerprint))
    }

    #[cfg(test)]
    pub fn catalogue(&self, archive: &str) -> Option<&CatalogueInfo> {
        self.catalogues.iter().find(|c| c.archive == archive)
    }

    fn problem(&mut self, kind: ProblemKind, subject: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { kind, subject: subject.into(), message: message.into() });
    }
}

/// Digests already known for a file (by path relative to the repository), to skip
/// hashing it again; see publish's index of verified files.
pub type Known<'a> = &'a (dyn Fn(&str) -> Option<Digests> + Sync);

/// How to verify.
pub struct Options<'a> {
    pub trust: &'a Trust,
    /// The ABI every entry must match (`FreeBSD:15:amd64`).
    pub abi: &'a str,
    /// Also compute every package's SHA-256 (for the release manifest).
    pub sha256: bool,
    /// Threads hashing packages.
    pub threads: usize,
    /// Called with the number of bytes hashed as hashing goes.
    pub progress: &'a (dyn Fn(u64) + Sync),
    pub known: Option<Known<'a>>,
    /// Check the package files (false: only meta.conf, the catalogues and signatures).
    pub files: bool,
}

/// The meta.conf pkg writes by default, used to go on checking when meta.conf is bad.
fn default_meta() -> MetaConf {
    MetaConf {
        version: 2,
        packing_format: super::archive::Compression::Zstd,
        manifests: "packagesite.yaml".into(),
        manifests_archive: "packagesite".into(),
        data: "data".into(),
        filesite: "files".into(),
        filesite_archive: "files".into(),
    }
}

/// Reads and checks meta.conf; `meta`, when present, must be its exact copy.
pub fn read_meta(dir: &Utf8Path, report: &mut Report) -> MetaConf {
    let path = dir.join("meta.conf");
    let meta = match std::fs::read(&path) {
        Ok(bytes) => {
            if let Ok(copy) = std::fs::read(dir.join("meta"))
                && copy != bytes
            {
                report.problem(
                    ProblemKind::Content,
                    "meta",
                    "differs from meta.conf (it must be a byte-identical copy)",
                );
            }
            match std::str::from_utf8(&bytes).map_err(anyhow::Error::from).and_then(MetaConf::parse) {
                Ok(m) => Some(m),
                Err(e) => {
                    report.problem(ProblemKind::Content, "meta.conf", format!("is not usable: {e:#}"));
                    None
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.problem(ProblemKind::Content, "meta.conf", "is missing");
            None
        }
        Err(e) => {
            report.problem(ProblemKind::Content, "meta.conf", format!("cannot be read: {e}"));
            None
        }
    };
    meta.unwrap_or_else(default_meta)
}

/// The archive and inner file names of a catalogue.
pub fn names(meta: &MetaConf, kind: CatalogueKind) -> (String, String) {
    match kind {
        CatalogueKind::Data => (format!("{}.pkg", meta.data), meta.data.clone()),
        CatalogueKind::Packagesite => (format!("{}.pkg", meta.manifests_archive), meta.manifests.clone()),
    }
}

/// Verifies the repository in `dir`.
pub fn verify(dir: &Utf8Path, opts: &Options) -> Result<Report> {
    let mut report = Report::default();
    let meta = read_meta(dir, &mut report);

    let mut catalogues: Vec<(CatalogueKind, Catalogue)> = Vec::new();
    for kind in CATALOGUES {
        let (archive, inner) = names(&meta, kind);
        if let Some((info, bytes)) = check_archive(dir, &archive, &inner, opts.trust, &mut report) {
            report.catalogues.push(info);
            match Catalogue::parse(kind, &bytes) {
                Ok(c) => {
                    for e in &c.entries {
                        if let Err(msg) = e {
                            report.problem(ProblemKind::Content, archive.clone(), msg.clone());
                        }
                    }
                    catalogues.push((kind, c));
                }
                Err(e) => report.problem(ProblemKind::Content, archive, format!("`{inner}` cannot be read: {e:#}")),
            }
        }
    }
    // files.pkg is optional (`pkg repo -l`); when present it must be signed too.
    let files_archive = format!("{}.pkg", meta.filesite_archive);
    if dir.join(&files_archive).exists()
        && let Some(info) = check_archive(dir, &files_archive, &meta.filesite, opts.trust, &mut report).map(|(i, _)| i)
    {
        report.catalogues.push(info);
    }

    compare_catalogues(&catalogues, &mut report);
    check_packages(dir, &catalogues, opts, &mut report)?;
    Ok(report)
}

/// Reads one catalogue archive, checks its entries and signature; returns what it
/// learnt and the inner file.
fn check_archive(
    dir: &Utf8Path,
    archive_name: &str,
    inner: &str,
    trust: &Trust,
    report: &mut Report,
) -> Option<(CatalogueInfo, Vec<u8>)> {
    let path = dir.join(archive_name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.problem(ProblemKind::Content, archive_name, "is missing");
            return None;
        }
        Err(e) => {
            report.problem(ProblemKind::Content, archive_name, format!("cannot be read: {e}"));
            return None;
        }
    };
    let archive = match Archive::parse(&bytes) {
        Ok(a) => a,
        Err(e) => {
            report.problem(ProblemKind::Content, archive_name, format!("is not a readable catalogue archive: {e:#}"));
            return None;
        }
    };
    for e in &archive.entries {
        if e.name.is_empty() || e.name.contains('/') || e.name.starts_with('.') {
            report.problem(ProblemKind::Content, archive_name, format!("holds an entry named `{}`", e.name));
        }
    }
    let inner_entries: Vec<_> = archive.find(inner).collect();
    let data = match inner_entries.as_slice() {
        [one] => one.data.clone(),
        [] => {
            report.problem(ProblemKind::Content, archive_name, format!("has no `{inner}` entry"));
            return None;
        }
        many => {
            report.problem(ProblemKind::Content, archive_name, format!("has {} `{inner}` entries", many.len()));
            return None;
        }
    };
    let mut info = CatalogueInfo {
        archive: archive_name.to_owned(),
        archive_sha256: sha256_bytes(&bytes),
        inner: inner.to_owned(),
        inner_sha256: sha256_bytes(&data),
        verified_by: Vec::new(),
    };
    check_signature(archive_name, &archive, &mut info, trust, report);
    Some((info, data))
}

fn check_signature(name: &str, archive: &Archive, info: &mut CatalogueInfo, trust: &Trust, report: &mut Report) {
    let sig = ProblemKind::Signature;
    let pairs = signature_pairs(archive);
    match trust {
        Trust::Pubkey { path, key } => {
            let sigs: Vec<_> = archive.find("signature").collect();
            match sigs.as_slice() {
                [] if !pairs.is_empty() => report.problem(
                    sig,
                    name,
                    "is not signed for pubkey clients: it has only fingerprints-mode signatures (.sig/.pub entries)",
                ),
                [] => report.problem(sig, name, "is not signed (no `signature` entry)"),
                [one] => {
                    // A key-file signature carries one NUL after it; clients strip it.
                    let bytes = one.data.strip_suffix(&[0]).unwrap_or(&one.data);
                    match key.verify(&info.inner_sha256, bytes) {
                        Ok(()) => info.verified_by.push(key.fingerprint.clone()),
                        Err(e) => report.problem(sig, name, format!("signature checked with {path}: {e}")),
                    }
                }
                many => report.problem(sig, name, format!("has {} `signature` entries", many.len())),
            }
        }
        Trust::Fingerprints { dir, trusted, revoked } => {
            if pairs.is_empty() {
                let why = if archive.find("signature").next().is_some() {
                    "is not signed for fingerprints clients: it has only a pubkey-mode `signature` entry"
                } else {
                    "is not signed (no .sig/.pub entries)"
                };
                report.problem(sig, name, why);
                return;
            }
            if pairs.len() > MAX_SIGNATURE_PAIRS {
                report.problem(
                    sig,
                    name,
                    format!("has {} signatures; pkg reads at most {MAX_SIGNATURE_PAIRS}", pairs.len()),
                );
                return;
            }
            let mut untrusted = Vec::new();
            for (stem, (sig_bytes, pub_bytes)) in &pairs {
                let (Some(sig_bytes), Some(pub_bytes)) = (sig_bytes, pub_bytes) else {
                    let missing = if sig_bytes.is_none() { "sig" } else { "pub" };
                    report.problem(sig, name, format!("`{stem}.{missing}` is missing (each .sig needs its .pub)"));
                    continue;
                };
                let fp = sha256_bytes(pub_bytes);
                if let Some(file) = revoked.get(&fp) {
                    report.problem(sig, name, format!("`{stem}.pub` has fingerprint {fp}, which is revoked ({file})"));
                    continue;
                }
                if !trusted.contains_key(&fp) {
                    untrusted.push(fp);
                    continue;
                }
                let key = match PublicKey::from_pem(pub_bytes) {
                    Ok(k) => k,
                    Err(e) => {
                        report.problem(sig, name, format!("`{stem}.pub` is trusted but not a usable key: {e:#}"));
                        continue;
                    }
                };
                match key.verify(&info.inner_sha256, sig_bytes) {
                    Ok(()) => info.verified_by.push(fp),
                    Err(e) => report.problem(sig, name, format!("`{stem}.sig` (key {fp}): {e}")),
                }
            }
            let any_revoked = report.problems.iter().any(|p| p.subject == name && p.message.contains("revoked"));
            if info.verified_by.is_empty() && !untrusted.is_empty() && !any_revoked {
                report.problem(
                    sig,
                    name,
                    format!("no trusted certificate: fingerprint {} is not in {dir}/trusted", untrusted.join(", ")),
                );
            }
        }
    }
}

/// Signature pairs by stem: `data.sig` + `data.pub` -> `data`.
type Pairs<'a> = BTreeMap<&'a str, (Option<&'a [u8]>, Option<&'a [u8]>)>;

fn signature_pairs(archive: &Archive) -> Pairs<'_> {
    let mut pairs = Pairs::new();
    for e in &archive.entries {
        if let Some(stem) = e.name.strip_suffix(".sig") {
            pairs.entry(stem).or_default().0 = Some(&e.data);
        } else if let Some(stem) = e.name.strip_suffix(".pub") {
            pairs.entry(stem).or_default().1 = Some(&e.data);
        }
    }
    pairs
}

/// Both catalogues must describe the same packages: a client may read either.
fn compare_catalogues(catalogues: &[(CatalogueKind, Catalogue)], report: &mut Report) {
    let [(_, a), (_, b)] = catalogues else { return };
    type Key = (String, String, String, String, u64, String);
    let key = |p: &Package| -> Key {
        (p.name.clone(), p.version.clone(), p.path.clone(), p.sum.clone(), p.pkgsize, p.abi.clone())
    };
    let mut left: Vec<Key> = a.packages().map(key).collect();
    let mut right: Vec<Key> = b.packages().map(key).collect();
    left.sort();
    right.sort();
    if left != right {
        let only = |x: &[Key], y: &[Key]| -> Vec<String> {
            x.iter().filter(|k| !y.contains(k)).map(|k| format!("{}-{}", k.0, k.1)).collect()
        };
        let (la, lb) = (only(&left, &right), only(&right, &left));
        report.problem(
            ProblemKind::Content,
            "packagesite.pkg",
            format!(
                "lists other packages than data.pkg (only in data: {}; only in packagesite: {})",
                if la.is_empty() { "none".into() } else { la.join(", ") },
                if lb.is_empty() { "none".into() } else { lb.join(", ") }
            ),
        );
    }
}

/// One package file to check.
struct Job {
    path: String,
    size: u64,
    sum: Sum,
}

/// Checks every entry's ABI and path, then every file's size and sum (hashed in
/// parallel, largest first).
fn check_packages(
    dir: &Utf8Path,
    catalogues: &[(CatalogueKind, Catalogue)],
    opts: &Options,
    report: &mut Report,
) -> Result<()> {
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    let mut listed: Vec<&Package> = Vec::new();
    for (kind, cat) in catalogues {
        let archive = match kind {
            CatalogueKind::Data => "data.pkg",
            CatalogueKind::Packagesite => "packagesite.pkg",
        };
        for p in cat.packages() {
            let subject = format!("{archive}: {}-{}", p.name, p.version);
            if !abi_matches(&p.abi, opts.abi) {
                report.problem(
                    ProblemKind::Content,
                    &subject,
                    format!("has ABI {} but the repository is for {}", p.abi, opts.abi),
                );
            }
            if let Err(e) = check_path(&p.path) {
                report.problem(ProblemKind::Content, &subject, format!("path `{}` {e}", p.path));
                continue;
            }
            if let Some(rp) = &p.repopath
                && rp != &p.path
            {
                report.problem(
                    ProblemKind::Content,
                    &subject,
                    format!("repopath `{rp}` differs from path `{}`", p.path),
                );
            }
            let sum = match Sum::parse(&p.sum) {
                Ok(s) => s,
                Err(e) => {
                    report.problem(ProblemKind::Content, &subject, format!("{e:#}"));
                    continue;
                }
            };
            if let Some(job) = jobs.get(&p.path) {
                if job.size != p.pkgsize || job.sum != sum {
                    report.problem(
                        ProblemKind::Content,
                        &subject,
                        format!("lists {} with another size or sum than an earlier entry", p.path),
                    );
                }
            } else {
                jobs.insert(p.path.clone(), Job { path: p.path.clone(), size: p.pkgsize, sum });
            }
            if *kind == catalogues[0].0 {
                listed.push(p);
            }
        }
    }
    report.bytes = jobs.values().map(|j| j.size).sum();
    report.listed = jobs.len();
    if !opts.files {
        return Ok(());
    }

    let results = hash_jobs(dir, jobs.values().collect(), opts)?;
    let mut good: BTreeMap<&str, Digests> = BTreeMap::new();
    for (job, outcome) in jobs.values().zip(results) {
        match outcome {
            Ok(d) => {
                good.insert(&job.path, d);
            }
            Err(msg) => report.problem(ProblemKind::Content, &job.path, msg),
        }
    }
    for p in listed {
        if let Some(d) = good.get(p.path.as_str()) {
            report.digests.insert(p.path.clone(), d.clone());
            report.packages.push(Verified {
                name: p.name.clone(),
                version: p.version.clone(),
                origin: p.origin.clone(),
                path: p.path.clone(),
                size: p.pkgsize,
                sum: p.sum.clone(),
                sha256: d.sha256.clone(),
            });
        }
    }
    Ok(())
}

/// Checks one file (a download) against a catalogue entry: size first, then sum.
pub fn check_download(path: &Utf8Path, size: u64, sum: &str) -> Result<(), String> {
    let sum = Sum::parse(sum).map_err(|e| format!("{e:#}"))?;
    let len = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?.len();
    if len != size {
        return Err(format!("is {len} bytes but the catalogue says {size} (pkgsize)"));
    }
    let digests = hash_file(path, sum.needs(), &|_| {}).map_err(|e| format!("{e:#}"))?;
    if !sum.matches(&digests) {
        return Err(format!("does not match the catalogue's sum {sum} (same size, different bytes)"));
    }
    Ok(())
}

/// A catalogue path must be relative and stay inside the repository.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.contains('\\') || path.contains('\0') {
        return Err("has characters pkg paths never have");
    }
    crate::fsx::check_contained(Utf8Path::new(path)).map_err(|_| "escapes the repository")
}

/// Hashes the files in parallel. Each result is the digests, or what was wrong.
///
/// Threads take the files, largest first, a few at a time: files that need only
/// BLAKE2b are hashed together with `blake2b_simd::many` (4 states per SIMD pass with
/// AVX2), which is how one core outruns `b2sum`.
fn hash_jobs(dir: &Utf8Path, jobs: Vec<&Job>, opts: &Options) -> Result<Vec<Result<Digests, String>>> {
    let root = dir.canonicalize_utf8().unwrap_or_else(|_| dir.to_owned());
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].size));
    let results: Vec<Mutex<Option<Result<Digests, String>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = opts.threads.clamp(1, jobs.len().max(1));
    // Small batches keep the threads evenly loaded to the end.
    let batch = blake2b_simd::many::degree().clamp(1, (jobs.len() / threads).max(1));
    let stop: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= order.len() {
                        break;
                    }
                    if let Err(e) = crate::proc::check_interrupted() {
                        *stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        break;
                    }
                    let indexes = &order[first..(first + batch).min(order.len())];
                    let mut together = Vec::new();
                    for &index in indexes {
                        match precheck(&root, jobs[index], opts) {
                            Pre::Hash(path, Want { blake2b: true, sha256: false }) => {
                                together.push((index, path));
                            }
                            Pre::Hash(path, want) => {
                                let outcome = hash_file(&path, want, opts.progress)
                                    .map_err(|e| format!("{e:#}"))
                                    .and_then(|d| finish(jobs[index], d));
                                *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                            }
                            Pre::Done(outcome) => {
                                *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                            }
                        }
                    }
                    let paths: Vec<&Utf8Path> = together.iter().map(|(_, p)| p.as_path()).collect();
                    for ((index, _), outcome) in together.iter().zip(blake2b_many(&paths, opts.progress)) {
                        let outcome = outcome.and_then(|d| finish(jobs[*index], d));
                        *results[*index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                    }
                }
            });
        }
    });
    if let Some(e) = stop.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| Err("was not checked".into())))
        .collect())
}

/// What is left to do for a file after the cheap checks.
enum Pre {
    /// Decided without hashing (a problem, or digests known from an earlier check).
    Done(Result<Digests, String>),
    /// Hash this file for these digests.
    Hash(Utf8PathBuf, Want),
}

/// The checks that need no hashing: present, inside the repository, a regular file of
/// the catalogue's size.
fn precheck(root: &Utf8Path, job: &Job, opts: &Options) -> Pre {
    let path = root.join(&job.path);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Pre::Done(Err("is listed in the catalogue but missing".into()));
        }
        Err(e) => return Pre::Done(Err(format!("cannot be read: {e}"))),
    };
    if meta.file_type().is_symlink() {
        match path.canonicalize_utf8() {
            Ok(real) if real.starts_with(root) => {}
            Ok(real) => return Pre::Done(Err(format!("is a symlink to {real}, outside the repository"))),
            Err(_) => return Pre::Done(Err("is a dangling symlink".into())),
        }
    }
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => return Pre::Done(Err(format!("cannot be read: {e}"))),
    };
    if !meta.is_file() {
        return Pre::Done(Err("is not a regular file".into()));
    }
    if meta.len() != job.size {
        return Pre::Done(Err(format!("is {} bytes but the catalogue says {} (pkgsize)", meta.len(), job.size)));
    }
    let want = job.sum.needs().or(Want { blake2b: false, sha256: opts.sha256 });
    let known = opts.known.and_then(|k| k(&job.path)).filter(|d| {
        d.size == job.size && (!want.blake2b || d.blake2b.is_some()) && (!want.sha256 || d.sha256.is_some())
    });
    match known {
        Some(d) => {
            (opts.progress)(job.size);
            Pre::Done(finish(job, d))
        }
        None => Pre::Hash(path, want),
    }
}

/// The verdict once the digests are known.
fn finish(job: &Job, digests: Digests) -> Result<Digests, String> {
    if digests.size != job.size {
        return Err(format!("changed while it was read ({} bytes, the catalogue says {})", digests.size, job.size));
    }
    if !job.sum.matches(&digests) {
        return Err(format!(
            "does not match the catalogue's sum {} (same size, different bytes: the file was changed or swapped)",
            job.sum
        ));
    }
    Ok(digests)
}

/// BLAKE2b-512 of several files at once, a chunk of each per SIMD pass.
fn blake2b_many(paths: &[&Utf8Path], progress: &(dyn Fn(u64) + Sync)) -> Vec<Result<Digests, String>> {
    use std::io::Read;
    const CHUNK: usize = 1 << 18;
    let mut files: Vec<Option<std::fs::File>> = Vec::with_capacity(paths.len());
    let mut out: Vec<Option<Result<Digests, String>>> = Vec::with_capacity(paths.len());
    for p in paths {
        match std::fs::File::open(p) {
            Ok(f) => {
                files.push(Some(f));
                out.push(None);
            }
            Err(e) => {
                files.push(None);
                out.push(Some(Err(format!("cannot open it: {e}"))));
            }
        }
    }
    let mut states: Vec<blake2b_simd::State> =
        paths.iter().map(|_| blake2b_simd::Params::new().hash_length(64).to_state()).collect();
    let mut sizes = vec![0u64; paths.len()];
    let mut bufs: Vec<Vec<u8>> = paths.iter().map(|_| vec![0u8; CHUNK]).collect();
    let mut lens = vec![0usize; paths.len()];
    loop {
        let mut any = false;
        for i in 0..paths.len() {
            lens[i] = 0;
            let Some(f) = files[i].as_mut() else { continue };
            // Fill the chunk (a short read is not the end of the file).
            while lens[i] < CHUNK {
                match f.read(&mut bufs[i][lens[i]..]) {
                    Ok(0) => break,
                    Ok(n) => lens[i] += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        out[i] = Some(Err(format!("cannot read it: {e}")));
                        files[i] = None;
                        lens[i] = 0;
                        break;
                    }
                }
            }
            if lens[i] == 0 {
                files[i] = None;
            } else {
                any = true;
                sizes[i] += lens[i] as u64;
            }
        }
        if !any {
            break;
        }
        blake2b_simd::many::update_many(
            states
                .iter_mut()
                .zip(bufs.iter().zip(&lens))
                .filter(|(_, (_, n))| **n > 0)
                .map(|(s, (b, n))| (s, &b[..*n])),
        );
        progress(lens.iter().sum::<usize>() as u64);
    }
    states
        .iter()
        .zip(out)
        .zip(sizes)
        .map(|((state, outcome), size)| {
            outcome.unwrap_or_else(|| {
                Ok(Digests { size, blake2b: Some(super::base32::encode(state.finalize().as_bytes())), sha256: None })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Utf8PathBuf {
        Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pkg-repo").join(name)
    }

    fn run(repo: &str, trust: &Trust) -> Report {
        let opts = Options {
            trust,
            abi: "FreeBSD:15:amd64",
            sha256: true,
            threads: 2,
            progress: &|_| {},
            known: None,
            files: true,
        };
        verify(&sample(repo), &opts).unwrap()
    }

    #[test]
    fn the_samples_verify_with_the_trust_their_readme_names() {
        let pubkey = Trust::pubkey(&sample("keys/test-repo.pub")).unwrap();
        let fps = Trust::fingerprints(&sample("fingerprints")).unwrap();
        for repo in ["production-pubkey", "validation-pubkey"] {
            let r = run(repo, &pubkey);
            assert!(r.ok(), "{repo}: {:?}", r.problems);
            assert_eq!(r.packages.len(), 1);
            assert!(r.signed_by("9f458105021fe487f134ba26d87a755969bb8cd9c29db888144e9685000a981a"));
        }
        let r = run("production-fingerprints", &fps);
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(
            r.catalogue("data.pkg").unwrap().inner_sha256,
            "3e37873f895788288a5c4977c7fb0564db8fa36ad6ef5ada362f28d03eee6d48"
        );
        assert_eq!(
            r.packages[0].sha256.as_deref(),
            Some("3f0080a2f497472d8974f5647b3f154d76834cc4636949bcbd3f64b3278bff32")
        );
        // The wrong mode, and no signature at all, are refused.
        for (repo, trust) in [
            ("production-pubkey", &fps),
            ("production-fingerprints", &pubkey),
            ("unsigned", &pubkey),
            ("unsigned", &fps),
        ] {
            let r = run(repo, trust);
            assert_eq!(r.problems.len(), 2, "{repo}: {:?}", r.problems);
            assert!(r.only_signature_problems());
        }
    }

    #[test]
    fn hashing_many_files_at_once_equals_hashing_each() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let sizes = [0usize, 1, 127, 128, 129, 300_000, 1 << 18, (1 << 18) + 5, 700_001];
        let paths: Vec<Utf8PathBuf> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let p = dir.join(format!("f{i}"));
                std::fs::write(&p, (0..*n).map(|b| (b * 7 + i) as u8).collect::<Vec<u8>>()).unwrap();
                p
            })
            .collect();
        let refs: Vec<&Utf8Path> = paths.iter().map(|p| p.as_path()).collect();
        let together = blake2b_many(&refs, &|_| {});
        for (p, got) in paths.iter().zip(together) {
            let want = hash_file(p, Want { blake2b: true, sha256: false }, &|_| {}).unwrap();
            assert_eq!(got.unwrap(), want, "{p}");
        }
        let missing = blake2b_many(&[dir.join("absent").as_path()], &|_| {});
        assert!(missing[0].as_ref().unwrap_err().contains("cannot open"));
    }
}
