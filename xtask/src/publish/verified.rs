//! Verifying a version directory, and the `.verified.json` index of what that found:
//! a later release links a file listed there instead of copying it, and skips hashing
//! it again while its identity is unchanged.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Result, bail};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use crate::identity::{self, Identity, Strength};
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
    pub fn linkable(&self, dir: &Utf8Path, rel: &str, size: u64, sum: &str) -> bool {
        let Ok(now) = std::fs::metadata(dir.join(rel)) else { return false };
        let Some(digests) = self.known(rel, &now) else { return false };
        digests.size == size && Sum::parse(sum).is_ok_and(|s| s.matches(&digests))
    }
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
    verify_files(abi, verify::read_catalogues(dir, trust), trust, fingerprint, known)
}

/// The rest of [`verify_version`] once its catalogues are read (by
/// [`verify::read_catalogues`], in the version directory, with `trust`).
pub fn verify_files(
    abi: &str,
    catalogues: verify::Catalogues,
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
        trust,
        abi,
        sha256: false,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        listed: &|_, _| {},
        progress: &|_| {},
        known: Some(&lookup),
        files: true,
    };
    let dir = catalogues.dir().to_owned();
    let report = catalogues.check_files(&opts)?;
    if !report.ok() {
        let lines: Vec<String> = report.problems.iter().map(|p| format!("  {p}")).collect();
        bail!("{dir} failed verification:\n{}", lines.join("\n"));
    }
    if !fingerprint.is_empty() && !report.signed_by(fingerprint) {
        bail!("{dir} is not signed by the release key {fingerprint}");
    }
    let seen: HashMap<String, Identity> = seen.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().collect();
    let mut index = Index::default();
    for (rel, d) in &report.digests {
        if let Some(id) = seen.get(rel) {
            index.0.insert(rel.clone(), *id, Found(d.blake2b.clone(), d.sha256.clone()));
        }
    }
    Ok((report, index))
}
