//! Versions of a published repository: their names, their order, the `.served` history
//! a rollback chooses from, and which versions pruning removes.

use std::fs;

use anyhow::{Result, bail};
use camino::Utf8Path;

use crate::failure;
use crate::fsx;

/// A version name: the UTC time to the millisecond (names sort in publishing order),
/// plus the start of the catalogue's digest.
pub fn version_name(data_sha256: &str) -> String {
    version_name_at(&crate::run::now_rfc3339(), data_sha256)
}

/// The version name for a time given in RFC 3339 (`2026-06-20T12:00:00.123Z` gives
/// `20260620T120000.123Z-DIGEST`).
fn version_name_at(rfc3339: &str, data_sha256: &str) -> String {
    let stamp: String = rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{stamp}-{}", &data_sha256[..data_sha256.len().min(8)])
}

/// Whether a directory entry name is a version (not `latest`, not hidden).
pub fn is_version(name: &str) -> bool {
    !name.starts_with('.') && name != "latest" && !name.is_empty()
}

/// Where a version name sorts. Ours (`DATE T TIME[.FRACTION] Z-DIGEST[-N]`) by their
/// time, then digest, then the `-N` a taken name gets, as numbers: `-2` before `-10`, a
/// longer year after a shorter one. Any other name (a directory copied there by hand)
/// after all of ours, by name; pruning leaves those alone.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'a> {
    Ours {
        /// The date's digits without leading zeros, shorter first.
        date: (usize, &'a str),
        hms: &'a str,
        /// The fraction of a second without trailing zeros (`5` is after `123`).
        fraction: &'a str,
        digest: &'a str,
        suffix: u64,
    },
    Other(&'a str),
}

fn sort_key(name: &str) -> SortKey<'_> {
    parse(name).unwrap_or(SortKey::Other(name))
}

fn parse(name: &str) -> Option<SortKey<'_>> {
    let (stamp, rest) = name.split_once('-')?;
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let (digest, suffix) = match rest.split_once('-') {
        Some((digest, n)) => (digest, n.parse::<u64>().ok().filter(|_| n.bytes().all(|b| b.is_ascii_digit()))?),
        None => (rest, 1),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = date.len() >= 8
        && digits(date)
        && hms.len() == 6
        && digits(hms)
        && digits(fraction)
        && !digest.is_empty()
        && digest.bytes().all(|b| b.is_ascii_hexdigit());
    let date = date.trim_start_matches('0');
    ok.then_some(SortKey::Ours {
        date: (date.len(), date),
        hms,
        fraction: fraction.trim_end_matches('0'),
        digest,
        suffix,
    })
}

/// Compares two version names in publishing order.
pub fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    sort_key(a).cmp(&sort_key(b)).then_with(|| a.cmp(b))
}

/// Sorts version names oldest first.
pub fn sort(versions: &mut [String]) {
    versions.sort_by(|a, b| compare(a, b));
}

/// The versions among the names of a directory's entries, oldest first.
pub fn among(entries: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut versions: Vec<String> = entries.into_iter().filter(|e| is_version(e)).collect();
    sort(&mut versions);
    versions
}

/// The versions in a local ABI directory, oldest first.
pub fn local_versions(dir: &Utf8Path) -> Vec<String> {
    let Ok(entries) = dir.read_dir_utf8() else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && is_version(e.file_name()))
        .map(|e| e.file_name().to_owned())
        .collect();
    sort(&mut out);
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
/// `versions` are sorted oldest first.
pub fn rollback_target(versions: &[String], current: Option<&str>, wanted: &str) -> Result<String> {
    if !wanted.is_empty() {
        if versions.iter().any(|v| v == wanted) {
            return Ok(wanted.to_owned());
        }
        bail!(failure!("there is no version {wanted} to roll back to").help(format!(
            "the versions kept are: {}",
            if versions.is_empty() { "none".into() } else { versions.join(", ") }
        )));
    }
    let older: Vec<&String> = versions.iter().filter(|v| current.is_none_or(|c| compare(v, c).is_lt())).collect();
    match older.last() {
        Some(v) => Ok((*v).clone()),
        None => bail!(
            failure!(
                "there is no version older than {} to roll back to (kept: {})",
                current.unwrap_or("the current one"),
                if versions.is_empty() { "none".into() } else { versions.join(", ") }
            )
            .help("publish.keep decides how many versions are kept")
        ),
    }
}

/// Versions to remove so that `keep` of publish's own remain, never `latest`'s and never
/// a directory publish did not name. `versions` are sorted oldest first.
pub fn to_prune(versions: &[String], keep: usize, latest: &str) -> Vec<String> {
    let ours: Vec<&String> = versions.iter().filter(|v| parse(v).is_some() || v.as_str() == latest).collect();
    let mut kept: Vec<&String> = ours.iter().rev().take(keep.max(1)).copied().collect();
    if !kept.iter().any(|v| v.as_str() == latest) {
        kept.pop();
    }
    ours.into_iter().filter(|v| v.as_str() != latest && !kept.contains(v)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_and_latest() {
        let [a, b, c, d] =
            ["20260101", "20260102", "20260103", "20260104"].map(|day| format!("{day}T120000.000Z-3e37"));
        let v = [a.clone(), b.clone(), c.clone(), d.clone()];
        assert_eq!(to_prune(&v, 2, &d), [a.as_str(), &b]);
        assert_eq!(to_prune(&v, 2, &b), [a.as_str(), &c]);
        assert_eq!(to_prune(&v, 1, &d), [a.as_str(), &b, &c]);
        assert!(to_prune(&v, 9, &d).is_empty());
        // A directory publish did not name is never removed, nor counted.
        let mut with_other = v.to_vec();
        with_other.push("by-hand".into());
        assert_eq!(to_prune(&with_other, 2, &d), [a.as_str(), &b]);
        assert_eq!(to_prune(&with_other, 1, "by-hand"), [a.as_str(), &b, &c, &d]);
    }

    #[test]
    fn rollback_picks_the_version_before_latest() {
        let v: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(rollback_target(&v, Some("c"), "").unwrap(), "b");
        assert_eq!(rollback_target(&v, Some("c"), "a").unwrap(), "a");
        assert!(rollback_target(&v, Some("a"), "").is_err());
        let err = rollback_target(&v, Some("c"), "z").unwrap_err();
        assert_eq!(crate::failure::help_lines(&err), ["the versions kept are: a, b, c"]);
    }

    #[test]
    fn version_names_are_the_time_and_the_digest() {
        assert_eq!(
            version_name_at("2026-06-20T12:00:00.123Z", "3e37873f895788288a5c"),
            "20260620T120000.123Z-3e37873f"
        );
        assert_eq!(version_name_at("2026-06-20T12:00:00.123Z", "3e37"), "20260620T120000.123Z-3e37");
    }

    #[test]
    fn versions_sort_by_time_then_by_the_number_a_taken_name_gets() {
        let at = |t: &str| version_name_at(t, "3e37873f895788288a5c");
        // A millisecond, a second, a year apart: the later name sorts after.
        for (earlier, later) in [
            ("2026-06-20T12:00:00.122Z", "2026-06-20T12:00:00.123Z"),
            ("2026-06-20T12:00:00.999Z", "2026-06-20T12:00:01.000Z"),
            ("2026-12-31T23:59:59.999Z", "2027-01-01T00:00:00.000Z"),
        ] {
            assert!(compare(&at(earlier), &at(later)).is_lt(), "{earlier} < {later}");
            assert!(compare(&at(later), &at(earlier)).is_gt(), "{later} > {earlier}");
        }
        let base = at("2026-06-20T12:00:00.123Z");
        assert!(compare(&base, &base).is_eq());
        let mut names: Vec<String> = [
            "manual-copy",
            "20260620T120000.5Z-00000000",
            "120000101T000000.000Z-aaaaaaaa",
            &format!("{base}-10"),
            &format!("{base}-2"),
            "20260620T115959.999Z-ffffffff",
            &base,
            &format!("{base}-9"),
        ]
        .map(String::from)
        .to_vec();
        sort(&mut names);
        assert_eq!(
            names,
            [
                "20260620T115959.999Z-ffffffff",
                "20260620T120000.123Z-3e37873f",
                "20260620T120000.123Z-3e37873f-2",
                "20260620T120000.123Z-3e37873f-9",
                "20260620T120000.123Z-3e37873f-10",
                // Half a second is after 123 milliseconds; a five-digit year after 2026.
                "20260620T120000.5Z-00000000",
                "120000101T000000.000Z-aaaaaaaa",
                // Not a name publish makes: after all of them.
                "manual-copy",
            ]
        );
    }

    #[test]
    fn rollback_and_pruning_follow_that_order() {
        let base = "20260620T120000.123Z-3e37873f";
        let mut v: Vec<String> =
            [format!("{base}-10"), format!("{base}-2"), base.to_owned(), format!("{base}-9")].to_vec();
        sort(&mut v);
        // The version before `-10` is `-9`, not the unsuffixed one.
        assert_eq!(rollback_target(&v, Some(&format!("{base}-10")), "").unwrap(), format!("{base}-9"));
        assert_eq!(rollback_target(&v, Some(&format!("{base}-2")), "").unwrap(), base);
        // Keeping two keeps the newest two.
        assert_eq!(to_prune(&v, 2, &format!("{base}-10")), [base.to_owned(), format!("{base}-2")]);
    }
}
