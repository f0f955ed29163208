//! Verifying a version directory, and the `.verified.json` index of what that found:
//! a later release links a file listed there instead of copying it, and skips hashing
//! it again while its identity is unchanged.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Result, bail};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use crate::identity::{self, Dir, Identity, Strength};
use pkgrepo::sum::{Digests, Sum};
use pkgrepo::trust::Trust;
use pkgrepo::verify;

pub const INDEX: &str = ".verified.json";

/// The index's schema: 2 since it is an [`identity::Index`] (compact rows, change times).
const SCHEMA: u32 = 2;

/// An index larger than this is not read (a million packages need about 200 MB).
const MAX_INDEX: u64 = 256 << 20;

/// What was found out when verifying a published file: its digests, as
/// `[BLAKE2B, SHA256]` (either may be null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Found(Option<String>, Option<String>);

/// A version's `.verified.json`: what verifying each of its files found, while the file's
/// identity (device, inode, size, modification time) is unchanged. The change time is
/// left out: linking a file into the next version moves it.
#[derive(Debug, Clone)]
pub struct Index(identity::Index<Found>);

impl Default for Index {
    fn default() -> Index {
        Index(identity::Index::new(SCHEMA, Strength::WithoutCtime))
    }
}

impl Index {
    /// The index of a version directory, or of a pool generation's directory.
    pub fn read(version_dir: &Utf8Path) -> Index {
        Index(identity::Index::read(&version_dir.join(INDEX), SCHEMA, Strength::WithoutCtime, MAX_INDEX))
    }

    pub fn write(&self, version_dir: &Utf8Path) -> Result<()> {
        self.0.write(&version_dir.join(INDEX))
    }

    /// The digests of `rel`, if the file (whose metadata is `now`) is the one recorded.
    pub fn known(&self, rel: &str, now: &std::fs::Metadata) -> Option<Digests> {
        let found = self.0.get(rel, now)?;
        Some(Digests { size: now.len(), blake2b: found.0.clone(), sha256: found.1.clone() })
    }

    /// Whether `dir/rel` is the file recorded and that matches a catalogue entry: it can
    /// be linked into a new version without being read.
    pub fn linkable(&self, dir: &Dir, rel: &str, size: u64, sum: &str) -> bool {
        self.vouch(dir, rel, size, sum) == Vouch::Same
    }

    /// What the index says of `dir/rel` against a catalogue entry (`size`, `sum`).
    pub fn vouch(&self, dir: &Dir, rel: &str, size: u64, sum: &str) -> Vouch {
        let now = match dir.lstat(rel) {
            Ok(identity::Found::File(id)) => id,
            // A symlink or a directory is not a package file.
            Ok(identity::Found::Other) => return Vouch::Differs,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vouch::Absent,
            Err(_) => return Vouch::Unknown,
        };
        let Some(found) = self.0.get_by_identity(rel, &now) else { return Vouch::Unknown };
        let digests = Digests { size: now.size, blake2b: found.0.clone(), sha256: found.1.clone() };
        let Ok(sum) = Sum::parse(sum) else { return Vouch::Differs };
        let comparable = match &sum {
            Sum::Blake2b(_) => digests.blake2b.is_some(),
            Sum::Sha256(_) => digests.sha256.is_some(),
        };
        match (digests.size == size, comparable) {
            (false, _) => Vouch::Differs,
            // A sum of another kind than the digests recorded says nothing either way.
            (true, false) => Vouch::Unknown,
            (true, true) if sum.matches(&digests) => Vouch::Same,
            (true, true) => Vouch::Differs,
        }
    }

    /// What it records of `rel`, whatever the file is now.
    pub fn recorded(&self, rel: &str) -> Option<&(Identity, Found)> {
        self.0.recorded(rel)
    }

    /// Records an entry [`Index::recorded`] gave (of another index).
    pub fn insert(&mut self, rel: &str, entry: &(Identity, Found)) {
        self.0.insert(rel.to_owned(), entry.0, entry.1.clone());
    }

    /// Records what hashing the file `rel`, of identity `id` before it was read, found.
    pub fn record(&mut self, rel: &str, id: Identity, d: &Digests) {
        self.0.insert(rel.to_owned(), id, Found(d.blake2b.clone(), d.sha256.clone()));
    }

    /// How many files it records.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds what `other` records (its entries win); whether that changed anything.
    pub fn extend(&mut self, other: Index) -> bool {
        self.0.extend(other.0)
    }
}

/// What an [`Index`] says of a file against a catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vouch {
    /// There is no file at that path.
    Absent,
    /// The file is the one recorded, with the entry's size and sum.
    Same,
    /// The file is the one recorded, with another size or sum: other bytes.
    Differs,
    /// A file is there that the index does not vouch for (not recorded, changed since,
    /// or recorded with digests that cannot be compared with the entry's sum).
    Unknown,
}

/// Verifies a version directory; returns the report and an index of its files. Files
/// whose identity `known` vouches for are not hashed again.
pub fn verify_version(
    abi: &str,
    dir: &Utf8Path,
    trust: &Trust,
    fingerprint: &str,
    known: &Index,
) -> Result<(verify::Report, Index)> {
    // Each file's identity as verification found it, before it was read: a file that
    // changes while or after it is hashed is not recorded as what was hashed.
    let seen: Mutex<Vec<(String, Identity)>> = Mutex::new(Vec::new());
    let lookup = |rel: &str, now: &std::fs::Metadata| {
        seen.lock().unwrap_or_else(|p| p.into_inner()).push((rel.to_owned(), Identity::of(now)));
        known.known(rel, now)
    };
    let opts = verify::Options {
        stop: &|| Ok(crate::proc::check_interrupted()?),
        known: Some(&lookup),
        ..verify::Options::new(trust, abi)
    };
    let report = verify::verify(dir, &opts)?;
    if !report.ok() {
        let lines: Vec<String> = report.problems.iter().map(|p| format!("  {p}")).collect();
        bail!("{dir} failed verification:\n{}", lines.join("\n"));
    }
    if !fingerprint.is_empty() && !report.signed_by(fingerprint) {
        bail!("{dir} is not signed by the release key {fingerprint}");
    }
    let seen: HashMap<String, Identity> = seen.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().collect();
    let mut index = Index::default();
    for (rel, d) in report.digests() {
        if let Some(id) = seen.get(rel) {
            index.0.insert(rel.to_owned(), *id, Found(d.blake2b.clone(), d.sha256.clone()));
        }
    }
    Ok((report, index))
}
