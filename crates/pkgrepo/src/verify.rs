//! Verifying a whole repository as a careful client would, and more: meta.conf, both
//! catalogues (a client may fall back from data.pkg to packagesite.pkg, so both must
//! hold), their signatures in the chosen trust mode, every entry's ABI and path, and
//! every listed package's presence, size and sum. Problems are collected, not thrown:
//! the report lists every one, each saying what failed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use camino::Utf8Path;

use crate::archive::{EntryHeader, HashingReader, read_entries};
use crate::catalogue::{self, Catalogue, Package, abi_matches};
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

/// A package whose file matched its catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `colibri`.
    pub name: String,
    /// `0.9.0`.
    pub version: String,
    /// `sysutils/colibri`.
    pub origin: String,
    /// The file, relative to the repository.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its catalogue `sum`, as written.
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
    /// Everything wrong, in the order found; empty when the repository verifies.
    pub problems: Vec<Problem>,
    /// The catalogue archives that could be read (`files.pkg` too when present).
    pub catalogues: Vec<CatalogueInfo>,
    /// The packages of data.pkg (or packagesite.pkg when data.pkg is unreadable) that
    /// verified, in catalogue order.
    pub packages: Vec<Verified>,
    /// Number of the package files listed.
    pub listed: usize,
    /// Total bytes of the package files listed.
    pub bytes: u64,
    /// What hashing each package file gave, by path.
    pub digests: BTreeMap<String, Digests>,
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
/// (signatures in the trust's mode, the two against each other); then the package files
/// are checked on [`Options::threads`] threads.
pub fn verify(dir: &Utf8Path, opts: &Options) -> Result<Report> {
    let trust = opts.trust;
    let mut report = Report::default();
    let meta = read_meta(dir, &mut report);

    let read: Vec<Read> = std::thread::scope(|s| {
        let threads: Vec<_> = CATALOGUES
            .map(|kind| {
                let (archive, inner) = meta.catalogue(kind);
                s.spawn(move || read_archive(dir, &archive, &inner, Some(kind), trust))
            })
            .into_iter()
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut catalogues: Vec<(CatalogueKind, Catalogue)> = Vec::new();
    for (kind, r) in CATALOGUES.into_iter().zip(read) {
        report.problems.extend(r.problems);
        if let Some(info) = r.info {
            report.catalogues.push(info);
        }
        if let Some(c) = r.catalogue {
            catalogues.push((kind, c));
        }
    }
    // files.pkg is optional (`pkg repo -l`); when present it must be signed too.
    let (files_archive, files_inner) = meta.files();
    if dir.join(&files_archive).exists() {
        let r = read_archive(dir, &files_archive, &files_inner, None, trust);
        report.problems.extend(r.problems);
        report.catalogues.extend(r.info);
    }

    compare_catalogues(&catalogues, &mut report);
    check_packages(dir, catalogues, opts, &mut report)?;
    Ok(report)
}

/// What reading one catalogue archive found.
#[derive(Default)]
struct Read {
    problems: Vec<Problem>,
    /// When the archive could be read and holds one inner file.
    info: Option<CatalogueInfo>,
    /// The inner file's entries, when it is a catalogue that could be read.
    catalogue: Option<Catalogue>,
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
/// file when it is a catalogue (`kind`), digests it, and checks its signature.
fn read_archive(dir: &Utf8Path, archive_name: &str, inner: &str, kind: Option<CatalogueKind>, trust: &Trust) -> Read {
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
    let mut parsed: Option<Result<Catalogue>> = None;
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
                    let mut entries = Vec::new();
                    let result = catalogue::read(kind, &mut hashing, |e| entries.push(e));
                    parsed = Some(result.map(|()| Catalogue { entries }));
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
        Some(Ok(c)) => {
            for e in &c.entries {
                if let Err(msg) = e {
                    out.problem(ProblemKind::Content, archive_name, msg.clone());
                }
            }
            out.catalogue = Some(c);
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

/// Both catalogues must describe the same packages: a client may read either.
fn compare_catalogues(catalogues: &[(CatalogueKind, Catalogue)], report: &mut Report) {
    let [(_, a), (_, b)] = catalogues else { return };
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str, u64, &'a str);
    fn key(p: &Package) -> Key<'_> {
        (&p.name, &p.version, &p.path, &p.sum, p.pkgsize, &p.abi)
    }
    let mut left: Vec<Key> = a.packages().map(key).collect();
    let mut right: Vec<Key> = b.packages().map(key).collect();
    // pkg writes both in the same order: then no sorting is needed to see they agree.
    if left == right {
        return;
    }
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
}

/// Checks every entry's ABI and path, then every file's size and sum (hashed in
/// parallel, largest first). The verified packages are moved out of the first
/// catalogue's entries.
fn check_packages(
    dir: &Utf8Path,
    mut catalogues: Vec<(CatalogueKind, Catalogue)>,
    opts: &Options,
    report: &mut Report,
) -> Result<()> {
    let count: usize = catalogues.first().map_or(0, |(_, c)| c.entries.len());
    // The files to check, in the order first listed, and where each path is.
    let mut jobs: Vec<Job> = Vec::with_capacity(count);
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(count);
    // For each entry of the first catalogue: its file's job, when the entry is checked.
    let mut listed: Vec<Option<usize>> = Vec::with_capacity(count);
    for (n, (kind, cat)) in catalogues.iter().enumerate() {
        let archive = match kind {
            CatalogueKind::Data => "data.pkg",
            CatalogueKind::Packagesite => "packagesite.pkg",
        };
        for entry in &cat.entries {
            let job = entry.as_ref().ok().and_then(|p| check_entry(archive, p, opts, &mut jobs, &mut index, report));
            if n == 0 {
                listed.push(job);
            }
        }
    }
    report.bytes = jobs.iter().map(|j| j.size).sum();
    report.listed = jobs.len();
    (opts.listed)(report.listed, report.bytes);
    if !opts.files {
        return Ok(());
    }

    let results = hash_jobs(dir, &jobs, opts)?;
    // Problems in path order, whatever order the catalogue lists the files in.
    let mut failed: Vec<(&str, String)> = Vec::new();
    let mut good: Vec<Option<Digests>> = Vec::with_capacity(results.len());
    for (job, outcome) in jobs.iter().zip(results) {
        match outcome {
            Ok(d) => good.push(Some(d)),
            Err(msg) => {
                failed.push((job.path, msg));
                good.push(None);
            }
        }
    }
    failed.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (path, msg) in failed {
        report.problem(ProblemKind::Content, path, msg);
    }
    drop((jobs, index));

    let Some((_, first)) = catalogues.drain(..).next() else { return Ok(()) };
    let mut digests: Vec<(String, Digests)> = Vec::with_capacity(good.len());
    report.packages.reserve(first.entries.len());
    for (entry, job) in first.entries.into_iter().zip(listed) {
        let (Ok(p), Some(job)) = (entry, job) else { continue };
        let Some(d) = good[job].as_ref() else { continue };
        let Package { name, origin, version, sum, pkgsize, path, .. } = p;
        digests.push((path.clone(), d.clone()));
        report.packages.push(Verified { name, version, origin, path, size: pkgsize, sum, sha256: d.sha256.clone() });
    }
    report.digests = digests.into_iter().collect();
    Ok(())
}

/// Checks one catalogue entry's ABI, path and sum, and adds its file to `jobs` (or
/// checks it against the job of an earlier entry for the same path). Returns the job.
fn check_entry<'a>(
    archive: &str,
    p: &'a Package,
    opts: &Options,
    jobs: &mut Vec<Job<'a>>,
    index: &mut HashMap<&'a str, usize>,
    report: &mut Report,
) -> Option<usize> {
    let subject = || format!("{archive}: {}-{}", p.name, p.version);
    if !abi_matches(&p.abi, opts.abi) {
        report.problem(
            ProblemKind::Content,
            subject(),
            format!("has ABI {} but the repository is for {}", p.abi, opts.abi),
        );
    }
    if let Err(e) = check_path(&p.path) {
        report.problem(ProblemKind::Content, subject(), format!("path `{}` {e}", p.path));
        return None;
    }
    if let Some(rp) = &p.repopath
        && rp != &p.path
    {
        report.problem(ProblemKind::Content, subject(), format!("repopath `{rp}` differs from path `{}`", p.path));
    }
    // An entry for a path listed before is checked against it, its sum parsed only
    // when written differently.
    let earlier = index.get(p.path.as_str()).copied();
    let sum = match earlier {
        Some(j) if jobs[j].sum_text == p.sum => Ok(jobs[j].sum.clone()),
        _ => Sum::parse(&p.sum),
    };
    let sum = match sum {
        Ok(s) => s,
        Err(e) => {
            report.problem(ProblemKind::Content, subject(), format!("{e:#}"));
            return None;
        }
    };
    match earlier {
        Some(j) => {
            if jobs[j].size != p.pkgsize || jobs[j].sum != sum {
                report.problem(
                    ProblemKind::Content,
                    subject(),
                    format!("lists {} with another size or sum than an earlier entry", p.path),
                );
            }
            Some(j)
        }
        None => {
            index.insert(&p.path, jobs.len());
            jobs.push(Job { path: &p.path, size: p.pkgsize, sum, sum_text: &p.sum });
            Some(jobs.len() - 1)
        }
    }
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
