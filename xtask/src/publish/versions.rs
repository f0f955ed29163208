//! Versions of a published repository: their names, their order, the `.served` history
//! a rollback chooses from, and which versions pruning removes.

use std::fs;

use anyhow::{Result, bail};
use camino::Utf8Path;

use crate::fsx;

/// A version name: the UTC time to the millisecond (names sort in publishing order),
/// plus the start of the catalogue's digest.
pub fn version_name(data_sha256: &str) -> String {
    let now = crate::run::now_rfc3339();
    // 2026-06-20T12:00:00.123Z -> 20260620T120000.123Z
    let stamp: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{stamp}-{}", &data_sha256[..data_sha256.len().min(8)])
}

/// Whether a directory entry name is a version (not `latest`, not hidden).
pub fn is_version(name: &str) -> bool {
    !name.starts_with('.') && name != "latest" && !name.is_empty()
}

/// The versions in a local ABI directory, oldest first.
pub fn local_versions(dir: &Utf8Path) -> Vec<String> {
    let Ok(entries) = dir.read_dir_utf8() else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && is_version(e.file_name()))
        .map(|e| e.file_name().to_owned())
        .collect();
    out.sort();
    out
}

/// The version `latest` names in a local ABI directory.
pub fn local_latest(dir: &Utf8Path) -> Option<String> {
    let target = fs::read_link(dir.join("latest")).ok()?;
    let name = target.to_str()?.trim_end_matches('/').to_owned();
    (is_version(&name) && !name.contains('/') && dir.join(&name).is_dir()).then_some(name)
}

/// Versions `latest` has named, kept in `.served` so a rollback never lands on a
/// version that was copied but never switched to (a publish killed in between).
const SERVED: &str = ".served";

fn served_history(dir: &Utf8Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(dir.join(SERVED)).ok()?;
    Some(text.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

pub fn record_served(dir: &Utf8Path, version: &str) -> Result<()> {
    let mut history = served_history(dir).unwrap_or_default();
    if history.last().map(String::as_str) != Some(version) {
        history.push(version.to_owned());
    }
    let keep = history.len().saturating_sub(1000);
    let text: String = history[keep..].iter().map(|v| format!("{v}\n")).collect();
    fsx::write_atomic(&dir.join(SERVED), text.as_bytes())
}

/// The versions a rollback may choose: those ever served (all, without a history).
pub fn rollback_candidates(dir: &Utf8Path) -> Vec<String> {
    let versions = local_versions(dir);
    match served_history(dir) {
        Some(served) => versions.into_iter().filter(|v| served.contains(v)).collect(),
        None => versions,
    }
}

/// The version to roll back to: `wanted`, or the newest one older than `current`.
pub fn rollback_target(versions: &[String], current: Option<&str>, wanted: &str) -> Result<String> {
    if !wanted.is_empty() {
        if versions.iter().any(|v| v == wanted) {
            return Ok(wanted.to_owned());
        }
        bail!(
            "there is no version {wanted} to roll back to\nhelp: the versions kept are: {}",
            if versions.is_empty() { "none".into() } else { versions.join(", ") }
        );
    }
    let older: Vec<&String> = versions.iter().filter(|v| current.is_none_or(|c| v.as_str() < c)).collect();
    match older.last() {
        Some(v) => Ok((*v).clone()),
        None => bail!(
            "there is no version older than {} to roll back to (kept: {})\nhelp: publish.keep decides how many versions are kept",
            current.unwrap_or("the current one"),
            if versions.is_empty() { "none".into() } else { versions.join(", ") }
        ),
    }
}

/// Versions to remove so that `keep` remain, never `latest`'s.
pub fn to_prune(versions: &[String], keep: usize, latest: &str) -> Vec<String> {
    let mut kept: Vec<&String> = versions.iter().rev().take(keep.max(1)).collect();
    if !kept.iter().any(|v| v.as_str() == latest) {
        kept.pop();
    }
    versions.iter().filter(|v| v.as_str() != latest && !kept.contains(v)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_and_latest() {
        let v: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(to_prune(&v, 2, "d"), ["a", "b"]);
        assert_eq!(to_prune(&v, 2, "b"), ["a", "c"]);
        assert_eq!(to_prune(&v, 1, "d"), ["a", "b", "c"]);
        assert!(to_prune(&v, 9, "d").is_empty());
    }

    #[test]
    fn rollback_picks_the_version_before_latest() {
        let v: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(rollback_target(&v, Some("c"), "").unwrap(), "b");
        assert_eq!(rollback_target(&v, Some("c"), "a").unwrap(), "a");
        assert!(rollback_target(&v, Some("a"), "").is_err());
        assert!(rollback_target(&v, Some("c"), "z").unwrap_err().to_string().contains("a, b, c"));
    }

    #[test]
    fn version_names_sort_by_time() {
        let v = version_name("3e37873f895788288a5c");
        assert_eq!(v.len(), "20260620T120000.123Z-3e37873f".len(), "{v}");
        assert!(v.ends_with("Z-3e37873f"));
    }
}
