//! Verifying a whole repository as a careful client would, and more: meta.conf, both
//! catalogues (a client may fall back from data.pkg to packagesite.pkg, so both must
//! hold), their signatures in the chosen trust mode, every entry's ABI and path, and
//! every listed package's presence, size and sum. Problems are collected, not thrown:
//! the report lists every one, each saying what failed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use camino::Utf8Path;

use crate::archive::{EntryHeader, HashingReader, read_entries};
use crate::catalogue::{Catalogue, Package, abi_matches};
use crate::error::{Error, Result};
use crate::hashing::{Job, hash_jobs};
use crate::meta::MetaConf;
use crate::sign::MessageReader;
use crate::signature::{Entry as SigEntry, Message, SignerType, check_entry_size};
use crate::sum::{Digests, Sum, hash_file};
use crate::trust::{Anchors, PublicKey, Trust};
use crate::{BoxError, CATALOGUES, CatalogueKind, TrustMode};

pub use crate::signature::MAX_SIGNATURE_ENTRIES;

/// What kind of thing failed: a signature (which signing can fix) or anything else
/// (which it must not paper over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A catalogue is not signed, or not in the client's trust mode, or its signature
    /// does not verify with what the client trusts.
    Signature,
    /// Anything else: meta.conf, the catalogues' contents, the package files.
    Content,
}

/// One thing wrong with a repository. `Display` writes `subject: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Signature or content.
    pub kind: ProblemKind,
    /// The file (relative to the repository) or entry concerned: `data.pkg`,
    /// `All/colibri-0.9.0.pkg`, `packagesite.pkg: colibri-0.9.0`.
    pub subject: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// A package whose file matched its catalogue entry, borrowed from the [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    /// `colibri`.
    pub name: &'a str,
    /// `0.9.0`.
    pub version: &'a str,
    /// `sysutils/colibri`.
    pub origin: &'a str,
    /// The file, relative to the repository.
    pub path: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// Its catalogue `sum`, as written.
    pub sum: &'a str,
    /// SHA-256 hex, when asked for ([`Options::sha256`]) or when the sum is SHA-256.
    pub sha256: Option<&'a str>,
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
    /// Everything wrong, in the order found; empty when the repository verifies.
    pub problems: Vec<Problem>,
    /// The catalogue archives that could be read (`files.pkg` too when present).
    pub catalogues: Vec<CatalogueInfo>,
    /// Number of the package files listed.
    pub listed: usize,
    /// Total bytes of the package files listed.
    pub bytes: u64,
    /// The entries of data.pkg (or of packagesite.pkg when data.pkg is unreadable),
    /// when the package files were checked.
    listing: Catalogue,
    /// The entries of `listing` whose files verified, in catalogue order, each with its
    /// file's place in `digests`.
    verified: Vec<(u32, u32)>,
    /// What hashing each verified file gave, with the first entry listing it, in
    /// catalogue order: a path listed twice is here once.
    digests: Vec<(u32, Digests)>,
}

impl Report {
    /// Whether the repository verified: no problem at all.
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

    /// What was found about the catalogue archive named `archive` (`data.pkg`).
    pub fn catalogue(&self, archive: &str) -> Option<&CatalogueInfo> {
        self.catalogues.iter().find(|c| c.archive == archive)
    }

    /// The packages of data.pkg (or packagesite.pkg when data.pkg is unreadable) that
    /// verified, in catalogue order.
    pub fn packages(&self) -> impl ExactSizeIterator<Item = Verified<'_>> + '_ {
        self.verified.iter().map(|&(entry, file)| {
            let p = self.listed_entry(entry);
            Verified {
                name: p.name,
                version: p.version,
                origin: p.origin,
                path: p.path,
                size: p.pkgsize,
                sum: p.sum,
                sha256: self.digests[file as usize].1.sha256.as_deref(),
            }
        })
    }

    /// What hashing each verified package file gave, by its path (each path once), in
    /// catalogue order.
    pub fn digests(&self) -> impl ExactSizeIterator<Item = (&str, &Digests)> + '_ {
        self.digests.iter().map(|(entry, d)| (self.listed_entry(*entry).path, d))
    }

    /// [`Report::digests`], by path, for answering [`Options::known`] after the
    /// report is dropped.
    pub fn into_digests(self) -> HashMap<String, Digests> {
        let Report { listing, digests, .. } = self;
        digests
            .into_iter()
            .filter_map(|(entry, d)| Some((listing.entry(entry as usize).ok()?.path.to_owned(), d)))
            .collect()
    }

    /// An entry of the listing that verified (so a package).
    fn listed_entry(&self, entry: u32) -> crate::catalogue::Package<'_> {
        self.listing.entry(entry as usize).expect("a verified entry is a package")
    }

    /// Keeps the digests of the files of the first catalogue (by the entry first
    /// listing each, in catalogue order) and which of its entries verified: those whose
    /// file (`first` has, for each entry, the first entry listing it) has digests.
    fn keep(&mut self, first: &[Option<u32>], digests: Vec<(u32, Digests)>) {
        let mut place: Vec<Option<u32>> = vec![None; first.len()];
        for (k, (entry, _)) in digests.iter().enumerate() {
            place[*entry as usize] = u32::try_from(k).ok();
        }
        self.verified =
            (0..first.len()).filter_map(|i| Some((u32::try_from(i).ok()?, place[first[i]? as usize]?))).collect();
        self.digests = digests;
    }

    fn problem(&mut self, kind: ProblemKind, subject: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { kind, subject: subject.into(), message: message.into() });
    }
}

/// Digests already known for a file (by its path relative to the repository, and its
/// metadata as just read, symlinks followed), to skip hashing it again: a caller that
/// keeps an index of files it verified earlier, by their identity, answers from it.
pub type Known<'a> = &'a (dyn Fn(&str, &std::fs::Metadata) -> Option<Digests> + Sync);

/// How to verify. [`Options::new`] gives the usual choices; change fields with struct
/// update syntax: `Options { files: false, ..Options::new(&trust, abi) }`.
pub struct Options<'a> {
    /// What the client trusts.
    pub trust: &'a Trust,
    /// The ABI every entry must match (`FreeBSD:15:amd64`).
    pub abi: &'a str,
    /// Also compute every package's SHA-256 (for a release manifest).
    pub sha256: bool,
    /// Threads hashing packages.
    pub threads: usize,
    /// Called once the catalogues are read, with the number of package files listed
    /// and their total size: what `progress` will count up to.
    pub listed: &'a (dyn Fn(usize, u64) + Sync),
    /// Called with the number of bytes hashed as hashing goes.
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Digests already known, to skip hashing files again.
    pub known: Option<Known<'a>>,
    /// Check the package files (false: only meta.conf, the catalogues and signatures).
    pub files: bool,
    /// Called before each batch of package files is hashed; an error stops verification
    /// and [`verify`] fails with it (see [`Error::is_stopped`]). Pass a check of a
    /// Ctrl-C flag, or of a deadline.
    pub stop: &'a (dyn Fn() -> Result<(), BoxError> + Sync),
}

impl<'a> Options<'a> {
    /// Checks everything, package files included, with one thread per core, no SHA-256s
    /// beyond what the sums need, no progress reports and no way to stop.
    pub fn new(trust: &'a Trust, abi: &'a str) -> Options<'a> {
        Options {
            trust,
            abi,
            sha256: false,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            listed: &|_, _| {},
            progress: &|_| {},
            known: None,
            files: true,
            stop: &|| Ok(()),
        }
    }
}

/// Reads and checks meta.conf; `meta`, when present, must be its exact copy. When it
/// cannot be used, checking goes on with pkg's defaults.
fn read_meta(dir: &Utf8Path, report: &mut Report) -> MetaConf {
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
            match std::str::from_utf8(&bytes).map_err(|e| Error::msg(e.to_string())).and_then(MetaConf::parse) {
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
    meta.unwrap_or_default()
}

/// meta.conf of the repository in `dir`, checked as [`verify`] checks it (usable, and
/// `meta` its exact copy), and what is wrong with it; pkg's defaults when it cannot be
/// used.
pub fn check_meta(dir: &Utf8Path) -> (MetaConf, Vec<Problem>) {
    let mut report = Report::default();
    let meta = read_meta(dir, &mut report);
    (meta, report.problems)
}

/// Verifies the repository in `dir`. Fails only when it cannot go on (the caller's
/// `stop`); everything wrong with the repository is in the [`Report`].
///
/// The two catalogues are read at the same time, each as a stream, and checked
/// (signatures in the trust's mode, each entry on its own, the two against each
/// other); then the package files are checked on [`Options::threads`] threads.
pub fn verify(dir: &Utf8Path, opts: &Options) -> Result<Report> {
    let mut report = Report::default();
    let meta = read_meta(dir, &mut report);

    let read: Vec<Read> = std::thread::scope(|s| {
        let threads: Vec<_> = CATALOGUES
            .map(|kind| {
                let (archive, inner) = meta.catalogue(kind);
                s.spawn(move || read_archive(dir, &archive, &inner, Some(kind), opts))
            })
            .into_iter()
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut listings: Vec<Listing> = Vec::new();
    for r in read {
        report.problems.extend(r.problems);
        report.catalogues.extend(r.info);
        listings.extend(r.listing);
    }
    // files.pkg is optional (`pkg repo -l`); when present it must be signed too.
    let (files_archive, files_inner) = meta.files();
    if dir.join(&files_archive).exists() {
        let r = read_archive(dir, &files_archive, &files_inner, None, opts);
        report.problems.extend(r.problems);
        report.catalogues.extend(r.info);
    }

    let same = compare_catalogues(&listings, &mut report);
    for l in &mut listings {
        report.problems.append(&mut l.problems);
    }
    let mut listings = listings.into_iter();
    let Some(Listing { catalogue: lead, checks, .. }) = listings.next() else {
        (opts.listed)(0, 0);
        return Ok(report);
    };
    // Catalogues that list the same packages in the same order add no file to check
    // and no disagreement.
    let others: Vec<Listing> = if same { Vec::new() } else { listings.collect() };
    let plan = plan_files(&lead, checks, &others, &mut report);
    (opts.listed)(report.listed, report.bytes);
    if !opts.files {
        return Ok(report);
    }
    let results = hash_jobs(dir, &plan.jobs, opts)?;
    let outcomes = plan.jobs.iter().zip(&plan.entries).zip(results).map(|((job, entry), r)| (job.path, *entry, r));
    let (digests, failed) = sort_outcomes(outcomes);
    for (path, msg) in failed {
        report.problem(ProblemKind::Content, path, msg);
    }
    report.keep(&plan.first, digests);
    drop(plan);
    report.listing = lead;
    Ok(report)
}

/// The files to check.
struct Plan<'a> {
    jobs: Vec<Job<'a>>,
    /// For each job: the entry of the first catalogue it is the file of (none for a
    /// file only another catalogue lists).
    entries: Vec<Option<u32>>,
    /// For each entry of the first catalogue: the first entry listing its file, when
    /// the file is checked.
    first: Vec<Option<u32>>,
}

/// The files to check: each file of the first catalogue (`lead`, whose entries'
/// `checks` these are), and each file only another lists (which must agree with the
/// first on the files both list). Counts them in the report.
fn plan_files<'a>(lead: &'a Catalogue, checks: Vec<Check>, others: &'a [Listing], report: &mut Report) -> Plan<'a> {
    let count = checks.len();
    let mut plan =
        Plan { jobs: Vec::with_capacity(count), entries: Vec::with_capacity(count), first: Vec::with_capacity(count) };
    for (i, (check, entry)) in checks.into_iter().zip(lead.entries()).enumerate() {
        let first = match (check, entry) {
            (Check::File(sum), Ok(p)) => {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                plan.jobs.push(Job { path: p.path, size: p.pkgsize, sum });
                plan.entries.push(Some(i));
                Some(i)
            }
            (Check::Same(j), _) => plan.first[j],
            _ => None,
        };
        plan.first.push(first);
    }
    if !others.is_empty() {
        let mut index: HashMap<&str, usize> = plan.jobs.iter().enumerate().map(|(j, job)| (job.path, j)).collect();
        for other in others {
            for (check, entry) in other.checks.iter().zip(other.catalogue.entries()) {
                let (Check::File(sum), Ok(p)) = (check, entry) else { continue };
                match index.get(p.path) {
                    Some(&j) if plan.jobs[j].size != p.pkgsize || plan.jobs[j].sum != *sum => report.problem(
                        ProblemKind::Content,
                        format!("{}: {}-{}", archive_name(other.kind), p.name, p.version),
                        format!("lists {} with another size or sum than an earlier entry", p.path),
                    ),
                    Some(_) => {}
                    None => {
                        index.insert(p.path, plan.jobs.len());
                        plan.jobs.push(Job { path: p.path, size: p.pkgsize, sum: sum.clone() });
                        plan.entries.push(None);
                    }
                }
            }
        }
    }
    report.listed = plan.jobs.len();
    report.bytes = plan.jobs.iter().map(|j| j.size).sum();
    plan
}

/// What checking the files gave: the digests of those of the first catalogue, by the
/// entry first listing each, in catalogue order; and what failed, in path order
/// (whatever order the catalogue lists the files in).
#[allow(clippy::type_complexity)]
fn sort_outcomes<'a>(
    outcomes: impl Iterator<Item = (&'a str, Option<u32>, Result<Digests, String>)>,
) -> (Vec<(u32, Digests)>, Vec<(&'a str, String)>) {
    let mut digests = Vec::new();
    let mut failed = Vec::new();
    for (path, entry, outcome) in outcomes {
        match (outcome, entry) {
            (Ok(d), Some(entry)) => digests.push((entry, d)),
            (Ok(_), None) => {}
            (Err(msg), _) => failed.push((path, msg)),
        }
    }
    digests.sort_unstable_by_key(|d| d.0);
    failed.sort_unstable_by(|a, b| a.0.cmp(b.0));
    (digests, failed)
}

/// What reading one catalogue archive found.
#[derive(Default)]
struct Read {
    problems: Vec<Problem>,
    /// When the archive could be read and holds one inner file.
    info: Option<CatalogueInfo>,
    /// The inner file's entries, when it is a catalogue that could be read.
    listing: Option<Listing>,
}

impl Read {
    fn problem(&mut self, kind: ProblemKind, subject: &str, message: impl Into<String>) {
        self.problems.push(Problem { kind, subject: subject.to_owned(), message: message.into() });
    }
}

/// A signature entry of an archive: its name, its size, and its bytes when it is no
/// larger than pkg allows.
struct Member {
    name: String,
    size: usize,
    data: Vec<u8>,
}

/// An archive's signature entries: how many of each layout, and the first ones (enough
/// to decide: more than one `signature`, or more than [`MAX_SIGNATURE_ENTRIES`]
/// `.sig`/`.pub`, is refused before any is read).
#[derive(Default)]
struct Signatures {
    pubkey: Vec<Member>,
    pubkey_count: usize,
    fingerprints: Vec<Member>,
    fingerprints_count: usize,
}

/// Reads one catalogue archive as a stream: checks its entries' names, parses the inner
/// file when it is a catalogue (`kind`) and checks each of its entries, digests it, and
/// checks its signature.
fn read_archive(dir: &Utf8Path, archive_name: &str, inner: &str, kind: Option<CatalogueKind>, opts: &Options) -> Read {
    let trust = opts.trust;
    let mut out = Read::default();
    let path = dir.join(archive_name);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.problem(ProblemKind::Content, archive_name, "is missing");
            return out;
        }
        Err(e) => {
            out.problem(ProblemKind::Content, archive_name, format!("cannot be read: {e}"));
            return out;
        }
    };
    let mut file = HashingReader::new(file);
    // Only a key file's ecc or ecdsa signature covers the BLAKE2b of the catalogue.
    let blake2b = match &trust.anchors {
        Anchors::Pubkey { key, .. } => key.algorithm().signer() != SignerType::Rsa,
        Anchors::Fingerprints { .. } => false,
    };
    let mut inner_count = 0usize;
    let mut message: Option<Message> = None;
    let mut parsed: Option<Result<(CatalogueKind, Catalogue)>> = None;
    let mut sigs = Signatures::default();
    let each = |h: &EntryHeader, data: &mut dyn std::io::Read| -> Result<()> {
        let name = &h.name;
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            out.problem(ProblemKind::Content, archive_name, format!("holds an entry named `{name}`"));
        } else if name != inner && !crate::sign::is_signature_entry(name) {
            // pkg ignores members it does not look for; a publication carries none.
            out.problem(
                ProblemKind::Content,
                archive_name,
                format!("holds an entry `{name}` that is neither `{inner}` nor a signature (clients ignore it)"),
            );
        }
        let is_pubkey = name == "signature";
        let is_fingerprint = name.ends_with(".sig") || name.ends_with(".pub");
        let mut held = None;
        if is_pubkey || is_fingerprint {
            let size = usize::try_from(h.size).unwrap_or(usize::MAX);
            let mut bytes = Vec::new();
            if size <= crate::signature::MAX_SIGNATURE_SIZE {
                data.read_to_end(&mut bytes)?;
            }
            let (kept, count, room) = match is_pubkey {
                true => (&mut sigs.pubkey, &mut sigs.pubkey_count, 2),
                false => (&mut sigs.fingerprints, &mut sigs.fingerprints_count, MAX_SIGNATURE_ENTRIES + 1),
            };
            *count += 1;
            if kept.len() < room {
                kept.push(Member { name: name.clone(), size, data: bytes.clone() });
            }
            held = Some(bytes);
        }
        if name == inner {
            inner_count += 1;
            if inner_count == 1 {
                let mut held_reader;
                let source: &mut dyn std::io::Read = match &held {
                    Some(bytes) => {
                        held_reader = &bytes[..];
                        &mut held_reader
                    }
                    None => data,
                };
                let hasher = if blake2b { Message::hasher() } else { Message::hex_hasher() };
                let mut hashing = MessageReader { inner: source, hasher };
                if let Some(kind) = kind {
                    parsed = Some(Catalogue::read(kind, &mut hashing).map(|c| (kind, c)));
                }
                // The digest covers the whole file, whatever the parser left unread.
                std::io::copy(&mut hashing, &mut std::io::sink())?;
                message = Some(hashing.hasher.finish());
            }
        }
        Ok(())
    };
    if let Err(e) = read_entries(&mut file, each) {
        // What the entries' names showed is moot: the archive cannot be read.
        out.problems.clear();
        out.problem(ProblemKind::Content, archive_name, format!("is not a readable catalogue archive: {e:#}"));
        return out;
    }
    if let Err(e) = std::io::copy(&mut file, &mut std::io::sink()) {
        out.problem(ProblemKind::Content, archive_name, format!("cannot be read: {e}"));
        return out;
    }
    let message = match (inner_count, message) {
        (1, Some(m)) => m,
        (0, _) => {
            out.problem(ProblemKind::Content, archive_name, format!("has no `{inner}` entry"));
            return out;
        }
        (many, _) => {
            out.problem(
                ProblemKind::Content,
                archive_name,
                format!("has {many} `{inner}` entries (pkg: duplicate repository archive entry: {inner})"),
            );
            return out;
        }
    };
    let mut info = CatalogueInfo {
        archive: archive_name.to_owned(),
        archive_sha256: file.finish(),
        inner: inner.to_owned(),
        inner_sha256: message.hex().to_owned(),
        verified_by: Vec::new(),
    };
    let problems = match &trust.anchors {
        Anchors::Pubkey { path, key } => check_pubkey(&sigs, &message, path, key, &mut info),
        Anchors::Fingerprints { dir, trusted, revoked } => {
            check_fingerprints(&sigs, &message, dir, trusted, revoked, &mut info)
        }
    };
    for p in problems {
        out.problem(ProblemKind::Signature, archive_name, p);
    }
    out.info = Some(info);
    match parsed {
        Some(Ok((kind, catalogue))) => {
            for e in catalogue.entries() {
                if let Err(msg) = e {
                    out.problem(ProblemKind::Content, archive_name, msg);
                }
            }
            out.listing = Some(Listing::check(kind, catalogue, opts.abi));
        }
        Some(Err(e)) => out.problem(ProblemKind::Content, archive_name, format!("`{inner}` cannot be read: {e:#}")),
        None => {}
    }
    out
}

/// pubkey mode: the `signature` entry, checked with the configured key
/// (`libpkg/pkg_repo.c`, `pkg_repo_archive_extract_check_archive`). Stricter than pkg:
/// one `signature` entry exactly (pkg concatenates several, which lets a doubled ecc
/// entry pass), its header naming the key's own type (pkg only fails later, in the
/// signer), nothing after the DER signature.
fn check_pubkey(
    sigs: &Signatures,
    message: &Message,
    path: &Utf8Path,
    key: &PublicKey,
    info: &mut CatalogueInfo,
) -> Vec<String> {
    let one = match (sigs.pubkey_count, sigs.pubkey.first()) {
        (0, _) if sigs.fingerprints_count > 0 => {
            return vec![
                "is not signed for pubkey clients: it has only fingerprints-mode signatures (.sig/.pub entries)".into(),
            ];
        }
        (1, Some(one)) => one,
        (0, _) | (1, None) => return vec!["is not signed (no `signature` entry)".into()],
        (many, _) => {
            return vec![format!(
                "has {many} `signature` entries; pkg would read them as one signature (their bytes concatenated), so only one is allowed"
            )];
        }
    };
    if let Err(e) = check_entry_size(one.size) {
        return vec![format!("its `signature` entry: {e}")];
    }
    let entry = SigEntry::parse(&one.data);
    let signer = match entry.signer() {
        Ok(s) => s,
        Err(e) => return vec![format!("its `signature` entry: {e}")],
    };
    if !key.algorithm().signs_as(signer) {
        return vec![format!(
            "is signed as {signer}, but the public key {path} is {} (pkg fails to verify it)",
            key.algorithm()
        )];
    }
    // A key file's rsa signature carries one NUL after it; the client strips it.
    let payload = match signer {
        SignerType::Rsa => entry.payload.strip_suffix(&[0]).unwrap_or(entry.payload),
        _ => entry.payload,
    };
    match key.verify(message, signer, TrustMode::Pubkey, payload) {
        Ok(()) => {
            info.verified_by.push(key.fingerprint().to_owned());
            Vec::new()
        }
        Err(e) => vec![format!("signature checked with {path}: {e}")],
    }
}

/// fingerprints mode: `.sig`/`.pub` pairs whose `.pub` is trusted and not revoked
/// (`libpkg/pkg_repo.c`, `pkg_repo_meta_extract_signature_fingerprints`,
/// `pkg_repo_parse_sigkeys`, `pkg_repo_check_fingerprint`), in pkg's order. Stricter
/// than pkg: a repeated entry is refused (pkg keeps the last), a `.sig` without its
/// `.pub` is refused (pkg would look for meta.conf's legacy `cert`), and the two
/// entries of a pair must name the same type.
fn check_fingerprints(
    sigs: &Signatures,
    message: &Message,
    dir: &Utf8Path,
    trusted: &BTreeMap<String, String>,
    revoked: &BTreeMap<String, String>,
    info: &mut CatalogueInfo,
) -> Vec<String> {
    let members = &sigs.fingerprints;
    if sigs.fingerprints_count == 0 {
        return vec![if sigs.pubkey_count > 0 {
            "is not signed for fingerprints clients: it has only a pubkey-mode `signature` entry".into()
        } else {
            "is not signed (no .sig/.pub entries)".into()
        }];
    }
    if sigs.fingerprints_count > MAX_SIGNATURE_ENTRIES {
        return vec![format!(
            "has {} .sig/.pub entries; pkg reads at most {MAX_SIGNATURE_ENTRIES} (too many repository signature entries)",
            sigs.fingerprints_count
        )];
    }
    let mut problems = Vec::new();
    /// By name without `.sig`/`.pub`: the two entries' bytes.
    type Pairs<'a> = BTreeMap<&'a str, (Option<&'a [u8]>, Option<&'a [u8]>)>;
    let mut pairs: Pairs = BTreeMap::new();
    for m in members {
        if let Err(e) = check_entry_size(m.size) {
            problems.push(format!("`{}`: {e}", m.name));
            continue;
        }
        let (stem, is_sig) = match m.name.strip_suffix(".sig") {
            Some(stem) => (stem, true),
            None => (&m.name[..m.name.len() - 4], false),
        };
        let pair = pairs.entry(stem).or_default();
        let slot = if is_sig { &mut pair.0 } else { &mut pair.1 };
        if slot.is_some() {
            problems.push(format!("`{}` appears twice (pkg would use the last one)", m.name));
        }
        *slot = Some(&m.data);
    }
    if !problems.is_empty() {
        return problems;
    }
    // Pairs whose .pub is trusted, checked after every pair's trust is known.
    let mut candidates = Vec::new();
    let mut untrusted = Vec::new();
    for (stem, (sig, public)) in &pairs {
        let (Some(sig), Some(public)) = (sig, public) else {
            let missing = if sig.is_none() { "sig" } else { "pub" };
            problems.push(format!("`{stem}.{missing}` is missing (each .sig needs its .pub)"));
            continue;
        };
        let (sig, public) = (SigEntry::parse(sig), SigEntry::parse(public));
        if sig.type_name != public.type_name {
            problems.push(format!(
                "`{stem}.sig` says {} but `{stem}.pub` says {} (pkg goes by the .pub)",
                sig.type_name.escape_default(),
                public.type_name.escape_default()
            ));
            continue;
        }
        let fp = crate::sha256_hex(public.payload);
        if let Some(file) = revoked.get(&fp) {
            problems.push(format!(
                "`{stem}.pub` has fingerprint {fp}, which is revoked ({file}; pkg: At least one of the certificates has been revoked)"
            ));
            continue;
        }
        if trusted.contains_key(&fp) {
            candidates.push((*stem, sig, public, fp));
        } else {
            untrusted.push(fp);
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    if candidates.is_empty() {
        return vec![format!(
            "no trusted certificate: fingerprint {} is not in {dir}/trusted (pkg: No trusted public keys found)",
            untrusted.join(", ")
        )];
    }
    for (stem, sig, public, fp) in candidates {
        let signer = match public.signer() {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("`{stem}.pub`: {e}"));
                continue;
            }
        };
        let key = match PublicKey::parse(public.payload) {
            Ok(k) if k.algorithm().signs_as(signer) => k,
            Ok(k) => {
                problems.push(format!("`{stem}.pub` is typed {signer} but holds {} key", k.algorithm()));
                continue;
            }
            Err(e) => {
                problems.push(format!("`{stem}.pub` is trusted but not a usable key: {e:#}"));
                continue;
            }
        };
        match key.verify(message, signer, TrustMode::Fingerprints, sig.payload) {
            Ok(()) => info.verified_by.push(fp),
            Err(e) => problems.push(format!("`{stem}.sig` (key {fp}): {e}")),
        }
    }
    problems
}

/// What a catalogue's entries say of the package files each on its own: how each
/// entry's file is to be checked.
#[derive(Debug)]
enum Check {
    /// It is not: the entry is not a package, or its path or sum is unusable.
    Not,
    /// Against this sum: the entry is the first listing the file.
    File(Sum),
    /// As the file of this earlier entry (which lists the same path).
    Same(usize),
}

/// A catalogue as its thread read it, with what checking each entry on its own found.
struct Listing {
    kind: CatalogueKind,
    catalogue: Catalogue,
    /// For each entry, how its file is checked.
    checks: Vec<Check>,
    /// What the checks of the entries found, in entry order.
    problems: Vec<Problem>,
}

impl Listing {
    /// Checks each entry's ABI, path, repopath and sum, and each path listed again
    /// against its first entry: in the catalogue's own thread.
    fn check(kind: CatalogueKind, catalogue: Catalogue, abi: &str) -> Listing {
        let archive = archive_name(kind);
        let mut checks: Vec<Check> = Vec::with_capacity(catalogue.len());
        let mut problems = Vec::new();
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(catalogue.len());
        for (i, entry) in catalogue.entries().enumerate() {
            let check = match entry {
                Ok(p) => check_entry(archive, i, &p, abi, &catalogue, &checks, &mut first, &mut problems),
                Err(_) => Check::Not,
            };
            checks.push(check);
        }
        drop(first);
        Listing { kind, catalogue, checks, problems }
    }
}

/// Checks entry `i` of `catalogue`, `p`: its ABI, path and sum, and, when an earlier
/// entry (`first` has the first one for each path) lists the same path, that it agrees.
#[allow(clippy::too_many_arguments)]
fn check_entry<'a>(
    archive: &str,
    i: usize,
    p: &Package<'a>,
    abi: &str,
    catalogue: &'a Catalogue,
    checks: &[Check],
    first: &mut HashMap<&'a str, usize>,
    problems: &mut Vec<Problem>,
) -> Check {
    let mut problem = |message: String| {
        problems.push(Problem {
            kind: ProblemKind::Content,
            subject: format!("{archive}: {}-{}", p.name, p.version),
            message,
        })
    };
    if !abi_matches(p.abi, abi) {
        problem(format!("has ABI {} but the repository is for {abi}", p.abi));
    }
    if let Err(e) = check_path(p.path) {
        problem(format!("path `{}` {e}", p.path));
        return Check::Not;
    }
    if let Some(rp) = p.repopath
        && rp != p.path
    {
        problem(format!("repopath `{rp}` differs from path `{}`", p.path));
    }
    // An entry for a path listed before is checked against it, its sum parsed only
    // when written differently.
    let earlier = first.get(p.path).and_then(|&j| match (&checks[j], catalogue.entry(j)) {
        (Check::File(sum), Ok(e)) => Some((j, sum, e)),
        _ => None,
    });
    let sum = match earlier {
        Some((_, sum, e)) if e.sum == p.sum => Ok(sum.clone()),
        _ => Sum::parse(p.sum),
    };
    let sum = match sum {
        Ok(s) => s,
        Err(e) => {
            problem(format!("{e:#}"));
            return Check::Not;
        }
    };
    match earlier {
        Some((j, earlier_sum, e)) => {
            if e.pkgsize != p.pkgsize || *earlier_sum != sum {
                problem(format!("lists {} with another size or sum than an earlier entry", p.path));
            }
            Check::Same(j)
        }
        None => {
            first.insert(p.path, i);
            Check::File(sum)
        }
    }
}

/// The archive each catalogue is named for in problems.
fn archive_name(kind: CatalogueKind) -> &'static str {
    match kind {
        CatalogueKind::Data => "data.pkg",
        CatalogueKind::Packagesite => "packagesite.pkg",
    }
}

/// Both catalogues must describe the same packages: a client may read either. Whether
/// they list the same packages in the same order (as pkg writes them).
fn compare_catalogues(listings: &[Listing], report: &mut Report) -> bool {
    let [a, b] = listings else { return false };
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str, u64, &'a str);
    fn key(p: Package<'_>) -> Key<'_> {
        (p.name, p.version, p.path, p.sum, p.pkgsize, p.abi)
    }
    // pkg writes both in the same order: then no sorting is needed to see they agree.
    if a.catalogue.packages().map(key).eq(b.catalogue.packages().map(key)) {
        return true;
    }
    let mut left: Vec<Key> = a.catalogue.packages().map(key).collect();
    let mut right: Vec<Key> = b.catalogue.packages().map(key).collect();
    left.sort_unstable();
    right.sort_unstable();
    if left != right {
        let only = |x: &[Key], y: &[Key]| -> Vec<String> {
            x.iter().filter(|k| y.binary_search(k).is_err()).map(|k| format!("{}-{}", k.0, k.1)).collect()
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
    false
}

/// Checks one file (a download) against a catalogue entry's `pkgsize` and `sum`: size
/// first, then sum. The error says what differs.
pub fn check_download(path: &Utf8Path, size: u64, sum: &str) -> Result<(), String> {
    check_file(path, size, sum).map(|_| ())
}

/// [`check_download`], giving what hashing the file found.
pub fn check_file(path: &Utf8Path, size: u64, sum: &str) -> Result<Digests, String> {
    let sum = Sum::parse(sum).map_err(|e| format!("{e:#}"))?;
    let len = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?.len();
    if len != size {
        return Err(format!("is {len} bytes but the catalogue says {size} (pkgsize)"));
    }
    let digests = hash_file(path, sum.needs(), &|_| {}).map_err(|e| format!("{e:#}"))?;
    if !sum.matches(&digests) {
        return Err(format!("does not match the catalogue's sum {sum} (same size, different bytes)"));
    }
    Ok(digests)
}

/// A catalogue path must be relative and stay inside the repository.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.contains('\\') || path.contains('\0') {
        return Err("has characters pkg paths never have");
    }
    if !crate::fsx::is_contained(Utf8Path::new(path)) {
        return Err("escapes the repository");
    }
    Ok(())
}
