//! Verifying a version directory, and the `.verified.json` index of what that found:
//! a later release links a file listed there instead of copying it, and skips hashing
//! it again while its identity is unchanged.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, bail};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use pkgrepo::sum::{Digests, Sum};
use pkgrepo::trust::Trust;
use pkgrepo::verify;

/// What was found out when verifying a published file; kept in `.verified.json` so a
/// later release can link the file instead of copying it, and skip hashing it again
/// while its identity (device, inode, size, modification time) is unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub schema: u32,
    files: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IndexEntry {
    size: u64,
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    blake2b: Option<String>,
    sha256: Option<String>,
}

pub const INDEX: &str = ".verified.json";

impl Index {
    pub fn read(version_dir: &Utf8Path) -> Index {
        fs::read(version_dir.join(INDEX)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// The digests of `rel` under `dir`, if the file there is the one recorded.
    pub fn known(&self, dir: &Utf8Path, rel: &str) -> Option<Digests> {
        let e = self.files.get(rel)?;
        let m = fs::metadata(dir.join(rel)).ok()?;
        let same = m.dev() == e.dev
            && m.ino() == e.ino
            && m.len() == e.size
            && m.mtime() == e.mtime
            && m.mtime_nsec() == e.mtime_nsec;
        same.then(|| Digests { size: e.size, blake2b: e.blake2b.clone(), sha256: e.sha256.clone() })
    }

    /// Whether the recorded file matches a catalogue entry.
    pub fn matches(&self, rel: &str, size: u64, sum: &str) -> bool {
        let Some(e) = self.files.get(rel) else { return false };
        let digests = Digests { size: e.size, blake2b: e.blake2b.clone(), sha256: e.sha256.clone() };
        e.size == size && Sum::parse(sum).is_ok_and(|s| s.matches(&digests))
    }
}

/// Verifies a version directory; returns the report and an index of its files.
pub fn verify_version(
    abi: &str,
    dir: &Utf8Path,
    trust: &Trust,
    fingerprint: &str,
    known: &Index,
    known_dir: &Utf8Path,
) -> Result<(verify::Report, Index)> {
    let lookup = |rel: &str| known.known(known_dir, rel);
    let opts = verify::Options {
        stop: &|| Ok(crate::proc::check_interrupted()?),
        trust,
        abi,
        sha256: false,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        progress: &|_| {},
        known: Some(&lookup),
        files: true,
    };
    let report = verify::verify(dir, &opts)?;
    if !report.ok() {
        let lines: Vec<String> = report.problems.iter().map(|p| format!("  {p}")).collect();
        bail!("{dir} failed verification:\n{}", lines.join("\n"));
    }
    if !fingerprint.is_empty() && !report.signed_by(fingerprint) {
        bail!("{dir} is not signed by the release key {fingerprint}");
    }
    let mut index = Index { schema: 1, files: BTreeMap::new() };
    for (rel, d) in &report.digests {
        let m = fs::metadata(dir.join(rel)).with_context(|| format!("cannot stat {}", dir.join(rel)))?;
        index.files.insert(
            rel.clone(),
            IndexEntry {
                size: m.len(),
                dev: m.dev(),
                ino: m.ino(),
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec(),
                blake2b: d.blake2b.clone(),
                sha256: d.sha256.clone(),
            },
        );
    }
    Ok((report, index))
}
