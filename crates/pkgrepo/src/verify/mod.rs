//! Verifying a whole repository as a careful client would, and more: meta.conf, both
//! catalogues (a client may fall back from data.pkg to packagesite.pkg, so both must
//! hold), their signatures in the chosen trust mode, every entry's ABI and path, and
//! every listed package's presence, size and sum. Problems are collected, not thrown:
//! the report lists every one, each saying what failed.

use std::collections::HashMap;
use std::fmt;

use camino::Utf8Path;

use crate::archive::{EntryHeader, HashingReader, read_entries};
use crate::catalogue::{Catalogue, twin};
use crate::error::{Error, Result};
use crate::hashing::hash_jobs;
use crate::meta::MetaConf;
use crate::sign::MessageReader;
use crate::signature::{Message, SignerType};
use crate::sum::{Digests, Sum, hash_file};
use crate::trust::{Anchors, Trust};
use crate::{BoxError, CATALOGUES, CatalogueKind};

pub use crate::signature::MAX_SIGNATURE_ENTRIES;

mod entries;
mod signatures;

use entries::{Listing, Solo, compare_catalogues, plan_files, solo, sort_outcomes};
use signatures::{Member, Signatures, check_fingerprints, check_pubkey};

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
    /// Which catalogue `listing` is, when there is one.
    listing_kind: Option<CatalogueKind>,
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

    /// The entries of the catalogue the package files were checked against (data.pkg's,
    /// or packagesite.pkg's when data.pkg is unreadable), and which it is; `None` when
    /// the files were not checked or no catalogue could be read.
    pub fn listing(&self) -> Option<(CatalogueKind, &Catalogue)> {
        self.listing_kind.map(|kind| (kind, &self.listing))
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

    let read = read_catalogues(dir, &meta, opts);
    let mut listings: Vec<Listing> = Vec::new();
    for r in read {
        report.problems.extend(r.problems);
        report.catalogues.extend(r.info);
        listings.extend(r.listing);
    }
    // files.pkg is optional (`pkg repo -l`); when present it must be signed too.
    let (files_archive, files_inner) = meta.files();
    if dir.join(&files_archive).exists() {
        let r = read_archive(dir, &files_archive, &files_inner, Parse::Not, opts);
        report.problems.extend(r.problems);
        report.catalogues.extend(r.info);
    }

    let same = compare_catalogues(&listings, &mut report);
    for l in &mut listings {
        report.problems.append(&mut l.problems);
    }
    let mut listings = listings.into_iter();
    let Some(Listing { kind, catalogue: lead, checks, .. }) = listings.next() else {
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
    report.listing_kind = Some(kind);
    Ok(report)
}

/// What reading one catalogue archive found.
#[derive(Default)]
struct Read {
    problems: Vec<Problem>,
    /// When the archive could be read and holds one inner file.
    info: Option<CatalogueInfo>,
    /// The inner file's entries, when it is a catalogue that could be read.
    listing: Option<Listing>,
    /// The entries this side parsed, when the catalogues are read together and this
    /// side found no difference, each checked on its own.
    part: Option<(twin::Part, Vec<Solo>)>,
}

/// What to make of a catalogue archive's inner file.
enum Parse {
    /// Nothing: it is not a catalogue (files.pkg); it is only digested.
    Not,
    /// Read it on its own.
    Whole(CatalogueKind),
    /// Read it together with the other catalogue, on the data side.
    Data(twin::FromLines),
    /// Read it together with the other catalogue, on the packagesite side.
    Lines(twin::ToData),
}

/// Both catalogues, each read in its own thread: together when pkg wrote them alike
/// (each entry parsed once, by one thread or the other), else each on its own.
fn read_catalogues(dir: &Utf8Path, meta: &MetaConf, opts: &Options) -> Vec<Read> {
    let (to_data, from_lines) = twin::channel();
    let mut together = read_both(dir, meta, opts, [Parse::Data(from_lines), Parse::Lines(to_data)]);
    if let [data, lines] = &mut together[..]
        && let (Some((a, a_solos)), Some((b, b_solos))) = (data.part.take(), lines.part.take())
    {
        let mut solos = Vec::with_capacity(a_solos.len() + b_solos.len());
        let (mut a_solos, mut b_solos) = (a_solos.into_iter(), b_solos.into_iter());
        for (from_data, range) in twin::order(&a, &b) {
            let from = if from_data { &mut a_solos } else { &mut b_solos };
            solos.extend(from.take(range.len()));
        }
        let Ok(catalogue) = twin::join(a, b) else {
            return read_both(dir, meta, opts, CATALOGUES.map(Parse::Whole));
        };
        // What reading each on its own would have found of its entries, for each.
        for r in [&mut *data, &mut *lines] {
            let archive = r.info.as_ref().map_or("", |i| i.archive.as_str()).to_owned();
            for why in catalogue.entries().filter_map(Result::err) {
                r.problem(ProblemKind::Content, &archive, why);
            }
        }
        let first = Listing::finish(CatalogueKind::Data, catalogue, solos);
        lines.listing = Some(first.twin(CatalogueKind::Packagesite));
        data.listing = Some(first);
        return together;
    }
    read_both(dir, meta, opts, CATALOGUES.map(Parse::Whole))
}

/// Reads data.pkg and packagesite.pkg, each in its own thread, as `parse` says.
fn read_both(dir: &Utf8Path, meta: &MetaConf, opts: &Options, parse: [Parse; 2]) -> Vec<Read> {
    std::thread::scope(|s| {
        let threads: Vec<_> = CATALOGUES
            .into_iter()
            .zip(parse)
            .map(|(kind, parse)| {
                let (archive, inner) = meta.catalogue(kind);
                s.spawn(move || read_archive(dir, &archive, &inner, parse, opts))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

impl Read {
    fn problem(&mut self, kind: ProblemKind, subject: &str, message: impl Into<String>) {
        self.problems.push(Problem { kind, subject: subject.to_owned(), message: message.into() });
    }
}

/// Reads one catalogue archive as a stream: checks its entries' names, parses the inner
/// file when it is a catalogue (`kind`) and checks each of its entries, digests it, and
/// checks its signature.
fn read_archive(dir: &Utf8Path, archive_name: &str, inner: &str, parse: Parse, opts: &Options) -> Read {
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
    let mut part: Option<Result<twin::Part, twin::Apart>> = None;
    let mut parse = Some(parse);
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
                match parse.take() {
                    Some(Parse::Whole(kind)) => parsed = Some(Catalogue::read(kind, &mut hashing).map(|c| (kind, c))),
                    Some(Parse::Data(from)) => part = Some(twin::read_data(&mut hashing, from)),
                    Some(Parse::Lines(to)) => part = Some(twin::read_lines(&mut hashing, to)),
                    Some(Parse::Not) | None => {}
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
    // Each entry this side parsed is checked on its own here, in its thread.
    out.part = part.and_then(Result::ok).map(|p| {
        let solos = solo(p.catalogue(), opts.abi);
        (p, solos)
    });
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
        return Err(wrong_size(len, size));
    }
    let digests = hash_file(path, sum.needs(), &|_| {}).map_err(|e| format!("{e:#}"))?;
    verdict(&sum, digests)
}

/// Copies `from` to `to` (read and written a piece at a time) and checks what was
/// copied against a catalogue entry's `pkgsize` and `sum`, as [`check_file`] would check
/// the copy, without reading it again: size, then sum. The error says what differs, or
/// what could not be read or written (`to` then holds what was copied).
pub fn copy_checked(
    from: &mut impl std::io::Read,
    to: &mut impl std::io::Write,
    size: u64,
    sum: &str,
) -> Result<Digests, String> {
    let sum = Sum::parse(sum).map_err(|e| format!("{e:#}"))?;
    let mut hasher = crate::sum::Hasher::new(sum.needs());
    // One read for a file the size it should be (a short read then says it ended).
    let piece = usize::try_from(size.saturating_add(1)).unwrap_or(usize::MAX).clamp(1, 1 << 20);
    let mut buf = vec![0u8; piece];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot be read: {e}")),
        };
        to.write_all(&buf[..n]).map_err(|e| format!("cannot be copied: {e}"))?;
        hasher.update(&buf[..n]);
    }
    let digests = hasher.finish();
    if digests.size != size {
        return Err(wrong_size(digests.size, size));
    }
    verdict(&sum, digests)
}

fn wrong_size(len: u64, size: u64) -> String {
    format!("is {len} bytes but the catalogue says {size} (pkgsize)")
}

/// The digests of a file of the right size, against its sum.
fn verdict(sum: &Sum, digests: Digests) -> Result<Digests, String> {
    if !sum.matches(&digests) {
        return Err(format!("does not match the catalogue's sum {sum} (same size, different bytes)"));
    }
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Archive;

    /// A copy of the unsigned sample whose two catalogues both list `entries`, as pkg
    /// writes them.
    fn repo_listing(entries: &[String]) -> (tempfile::TempDir, camino::Utf8PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap().to_owned();
        let sample = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pkg-repo/unsigned");
        for name in ["meta.conf", "meta", "data.pkg", "packagesite.pkg"] {
            std::fs::copy(sample.join(name), root.join(name)).unwrap();
        }
        let data = format!(r#"{{"groups":[],"expired_packages":[],"packages":[{}]}}"#, entries.join(","));
        let lines: String = entries.iter().map(|e| format!("{e}\n")).collect();
        for (archive, inner, text) in [("data.pkg", "data", data), ("packagesite.pkg", "packagesite.yaml", lines)] {
            let path = root.join(archive);
            let mut a = Archive::read(&path).unwrap();
            a.entries.iter_mut().find(|e| e.name == inner).unwrap().data = text.into_bytes();
            a.write(&path).unwrap();
        }
        (dir, root)
    }

    #[test]
    fn a_copy_checked_as_it_is_copied_gets_the_verdict_the_copy_would_get() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8Path::from_path(dir.path()).unwrap().join("p.pkg");
        for len in [0usize, 1, 4096, (1 << 20) + 3] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            let d = hash_file(&path, crate::sum::Want { blake2b: true, sha256: false }, &|_| {}).unwrap();
            let sum = format!("2${}", d.blake2b.unwrap());
            let size = len as u64;
            for (size, sum) in
                [(size, sum.as_str()), (size + 1, sum.as_str()), (size, &sum.replacen('a', "b", 1)), (size, "x")]
            {
                let mut copy = Vec::new();
                let copied = copy_checked(&mut &bytes[..], &mut copy, size, sum);
                assert_eq!(copied, check_file(&path, size, sum), "{len} bytes, {size}, {sum}");
                assert!(copy.is_empty() || copy == bytes);
            }
        }
    }

    #[test]
    fn catalogues_read_together_give_what_reading_each_alone_gives() {
        // Entries with every kind of problem an entry can have on its own or with an
        // earlier one, over several blocks of the files.
        let desc = "d".repeat(1500);
        let entries: Vec<String> = (0..600)
            .map(|i| {
                let (mut abi, mut path, mut repopath, mut sum, mut size) =
                    ("FreeBSD:15:amd64", format!("All/p{i}.pkg"), format!("All/p{i}.pkg"), format!("{i:064x}"), i);
                match i % 50 {
                    1 => abi = "FreeBSD:14:amd64",
                    2 => path = "../../etc/passwd".into(),
                    3 => repopath = "All/other.pkg".into(),
                    4 => sum = "not a sum".into(),
                    5 => (path, repopath) = ("All/p4.pkg".into(), "All/p4.pkg".into()),
                    6 => (path, repopath, size) = ("All/p0.pkg".into(), "All/p0.pkg".into(), 1),
                    7 => return r#"{"name":"incomplete"}"#.to_owned(),
                    _ => {}
                }
                format!(
                    r#"{{"name":"p{i}","origin":"x/p{i}","version":"1.{i}","abi":"{abi}","sum":"{sum}","pkgsize":{size},"path":"{path}","repopath":"{repopath}","desc":"{desc}"}}"#
                )
            })
            .collect();
        let (_dir, repo) = repo_listing(&entries);
        let (meta, _) = check_meta(&repo);
        let trust =
            Trust::pubkey(&Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pkg-repo/keys/test-repo.pub"))
                .unwrap();
        let opts = Options::new(&trust, "FreeBSD:15:amd64");
        let together = read_catalogues(&repo, &meta, &opts);
        let alone = read_both(&repo, &meta, &opts, CATALOGUES.map(Parse::Whole));
        assert!(together[1].listing.as_ref().unwrap().twin, "read together");
        for (t, a) in together.iter().zip(&alone) {
            assert_eq!(t.problems, a.problems);
            let (t, a) = (t.listing.as_ref().unwrap(), a.listing.as_ref().unwrap());
            assert_eq!(t.problems, a.problems);
            assert!(!t.problems.is_empty());
            if !t.twin {
                assert!(t.catalogue.entries().eq(a.catalogue.entries()));
                assert_eq!(format!("{:?}", t.checks), format!("{:?}", a.checks));
            }
        }
        // What verify() reports then is what it reported reading them alone.
        let report = verify(&repo, &Options { files: false, ..opts }).unwrap();
        let mut listings: Vec<Listing> = alone.into_iter().filter_map(|r| r.listing).collect();
        let mut scratch = Report::default();
        assert!(compare_catalogues(&listings, &mut scratch));
        let lead = listings.remove(0);
        let plan = plan_files(&lead.catalogue, lead.checks, &[], &mut scratch);
        assert_eq!((report.listed, report.bytes), (scratch.listed, scratch.bytes));
        assert!(plan.jobs.len() > 500);
    }
}
