//! The entries of the catalogues: each checked on its own (ABI, path, sum, a path
//! listed twice), the catalogues against each other, and the package files to check.

use std::collections::HashMap;

use camino::Utf8Path;

use super::{Problem, ProblemKind, Report};
use crate::CatalogueKind;
use crate::catalogue::{Catalogue, Package, abi_matches};
use crate::hashing::Job;
use crate::sum::{Digests, Sum};

/// The files to check.
pub(super) struct Plan<'a> {
    pub(super) jobs: Vec<Job<'a>>,
    /// For each job: the entry of the first catalogue it is the file of (none for a
    /// file only another catalogue lists).
    pub(super) entries: Vec<Option<u32>>,
    /// For each entry of the first catalogue: the first entry listing its file, when
    /// the file is checked.
    pub(super) first: Vec<Option<u32>>,
}

/// The files to check: each file of the first catalogue (`lead`, whose entries'
/// `checks` these are), and each file only another lists (which must agree with the
/// first on the files both list). Counts them in the report.
pub(super) fn plan_files<'a>(
    lead: &'a Catalogue,
    checks: Vec<Check>,
    others: &'a [Listing],
    report: &mut Report,
) -> Plan<'a> {
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
pub(super) fn sort_outcomes<'a>(
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

/// What a catalogue's entries say of the package files each on its own: how each
/// entry's file is to be checked.
#[derive(Debug)]
pub(super) enum Check {
    /// It is not: the entry is not a package, or its path or sum is unusable.
    Not,
    /// Against this sum: the entry is the first listing the file.
    File(Sum),
    /// As the file of this earlier entry (which lists the same path).
    Same(usize),
}

/// A catalogue as its thread read it, with what checking each entry on its own found.
pub(super) struct Listing {
    pub(super) kind: CatalogueKind,
    pub(super) catalogue: Catalogue,
    /// For each entry, how its file is checked.
    pub(super) checks: Vec<Check>,
    /// What the checks of the entries found, in entry order.
    pub(super) problems: Vec<Problem>,
    /// It lists the same entries as the first catalogue (whose entries, not held
    /// again, the checks and problems are of).
    pub(super) twin: bool,
}

/// What checking one entry on its own found: its ABI, path, repopath and sum.
#[derive(Debug, Default)]
pub(super) struct Solo {
    /// What is wrong with it, in the order checked.
    problems: Vec<String>,
    /// Its sum, when its path and sum are usable.
    sum: Option<Sum>,
}

/// Checks each entry of `catalogue` on its own (each that is a package).
pub(super) fn solo(catalogue: &Catalogue, abi: &str) -> Vec<Solo> {
    catalogue.entries().map(|e| e.map_or_else(|_| Solo::default(), |p| solo_entry(&p, abi))).collect()
}

fn solo_entry(p: &Package<'_>, abi: &str) -> Solo {
    let mut problems = Vec::new();
    if !abi_matches(p.abi, abi) {
        problems.push(format!("has ABI {} but the repository is for {abi}", p.abi));
    }
    if let Err(e) = check_path(p.path) {
        problems.push(format!("path `{}` {e}", p.path));
        return Solo { problems, sum: None };
    }
    if let Some(rp) = p.repopath
        && rp != p.path
    {
        problems.push(format!("repopath `{rp}` differs from path `{}`", p.path));
    }
    let sum = Sum::parse(p.sum).map_err(|e| problems.push(format!("{e:#}"))).ok();
    Solo { problems, sum }
}

impl Listing {
    /// Checks each entry's ABI, path, repopath and sum, and each path listed again
    /// against its first entry: in the catalogue's own thread.
    pub(super) fn check(kind: CatalogueKind, catalogue: Catalogue, abi: &str) -> Listing {
        let solos = solo(&catalogue, abi);
        Listing::finish(kind, catalogue, solos)
    }

    /// [`Listing::check`] with each entry checked on its own already (`solos`, one for
    /// each entry): checks each path listed again against its first entry.
    pub(super) fn finish(kind: CatalogueKind, catalogue: Catalogue, solos: Vec<Solo>) -> Listing {
        let archive = archive_name(kind);
        let mut checks: Vec<Check> = Vec::with_capacity(catalogue.len());
        let mut problems = Vec::new();
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(catalogue.len());
        for (i, (entry, solo)) in catalogue.entries().zip(solos).enumerate() {
            let Ok(p) = entry else {
                checks.push(Check::Not);
                continue;
            };
            let subject = || format!("{archive}: {}-{}", p.name, p.version);
            for message in solo.problems {
                problems.push(Problem { kind: ProblemKind::Content, subject: subject(), message });
            }
            let Some(sum) = solo.sum else {
                checks.push(Check::Not);
                continue;
            };
            // An entry for a path listed before is checked against it.
            let check = match first.get(p.path) {
                Some(&j) => {
                    if let (Check::File(earlier), Ok(e)) = (&checks[j], catalogue.entry(j))
                        && (e.pkgsize != p.pkgsize || *earlier != sum)
                    {
                        problems.push(Problem {
                            kind: ProblemKind::Content,
                            subject: subject(),
                            message: format!("lists {} with another size or sum than an earlier entry", p.path),
                        });
                    }
                    Check::Same(j)
                }
                None => {
                    first.insert(p.path, i);
                    Check::File(sum)
                }
            };
            checks.push(check);
        }
        drop(first);
        Listing { kind, catalogue, checks, problems, twin: false }
    }

    /// The listing of a catalogue of `kind` that lists exactly this one's entries: what
    /// checking them found, said of it.
    pub(super) fn twin(&self, kind: CatalogueKind) -> Listing {
        let (mine, its) = (archive_name(self.kind), archive_name(kind));
        let problems = self
            .problems
            .iter()
            .map(|p| Problem {
                subject: p.subject.strip_prefix(mine).map_or_else(|| p.subject.clone(), |rest| format!("{its}{rest}")),
                ..p.clone()
            })
            .collect();
        Listing { kind, catalogue: Catalogue::default(), checks: Vec::new(), problems, twin: true }
    }
}

/// The archive each catalogue is named for in problems.
pub(super) fn archive_name(kind: CatalogueKind) -> &'static str {
    match kind {
        CatalogueKind::Data => "data.pkg",
        CatalogueKind::Packagesite => "packagesite.pkg",
    }
}

/// Both catalogues must describe the same packages: a client may read either. Whether
/// they list the same packages in the same order (as pkg writes them).
pub(super) fn compare_catalogues(listings: &[Listing], report: &mut Report) -> bool {
    let [a, b] = listings else { return false };
    if b.twin {
        return true;
    }
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
