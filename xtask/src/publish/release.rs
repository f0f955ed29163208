//! The release to publish: what sign recorded, the files it consists of and how each
//! gets to the new version, and the trust its clients use.

use std::collections::BTreeMap;

use anyhow::Result;
use camino::Utf8PathBuf;
use serde_json::value::RawValue;

use super::Target;
use super::pool::{self, Place, Placement};
use super::remote;
use super::verified::Index;
use super::versions::{local_latest, version_name};
use crate::config::TrustMode;
use crate::fingerprint::sha256_file;
use crate::sign::{PackageRecord, SignOutputs};
use crate::stage::{Cx, Plan, StageName};
use pkgrepo::trust::Trust;

/// The index of what `latest` serves (tens of megabytes of JSON at tens of thousands of
/// packages): read in a thread of its own from the start of the plan until the stage
/// needs it, or read.
#[derive(Debug)]
pub enum Known {
    Reading(std::thread::JoinHandle<Index>),
    Read(Index),
}

impl Default for Known {
    fn default() -> Known {
        Known::Read(Index::default())
    }
}

impl Known {
    /// The index of the version directory `vdir` (or its pool generation's), read in a
    /// thread; read here when no thread can be had.
    fn read(vdir: Utf8PathBuf) -> Known {
        let thread = std::thread::Builder::new().name("index".into());
        match thread.spawn({
            let vdir = vdir.clone();
            move || pool::index_of(&vdir)
        }) {
            Ok(h) => Known::Reading(h),
            Err(_) => Known::Read(pool::index_of(&vdir)),
        }
    }

    /// The index, once read.
    pub fn wait(self) -> Index {
        match self {
            Known::Reading(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Known::Read(i) => i,
        }
    }
}

/// One file of a release and how it gets to the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAction {
    /// Path relative to the repository.
    pub rel: String,
    /// Copied from the source, linked, or already in the pool (local packages only:
    /// every other file is copied; rsync decides for itself).
    pub place: Place,
}

/// A release to publish.
#[derive(Debug)]
pub struct Release {
    pub sign: SignOutputs,
    /// The manifest sign wrote (absolute).
    pub manifest: Utf8PathBuf,
    pub version: String,
    pub previous: Option<String>,
    /// The files: first those that are not packages (meta.conf, meta, the catalogue
    /// archives), then the packages, in the order of `sign.packages`.
    pub files: Vec<FileAction>,
    /// Where the packages go in the local target's pool: planned here for a dry run's
    /// steps; a real publish plans it while the repository files are copied
    /// ([`super::local::stage`]). None for a remote target, or when `latest` already
    /// serves this release.
    pub placement: Option<Placement>,
    /// What is known of the files the new version shares or links (local targets): the
    /// index its packages are verified with.
    pub index: Known,
    /// `latest` already serves exactly this release: nothing to copy or switch.
    pub already: Option<String>,
    /// sign's packages as its record has them, not yet read (a real publish to a local
    /// target reads them while the repository files are copied: [`Release::read_packages`]).
    pub packages_text: Option<Box<RawValue>>,
}

impl Release {
    /// How many of `files` are not packages: where the packages start.
    pub fn packages_from(&self) -> usize {
        self.files.len().saturating_sub(self.sign.packages.len())
    }

    /// Reads sign's packages, when [`plan`] left them as text; adds each to `files`.
    pub fn read_packages(&mut self, cx: &Cx) -> Result<()> {
        if let Some(text) = self.packages_text.take() {
            self.sign.packages = cx.output_with(StageName::Sign, |_| serde_json::from_str(text.get()))?;
            add_packages(&mut self.files, &self.sign.packages, None);
        }
        Ok(())
    }
}

/// Each package to `files`, in the order of `packages`, placed as `placement` says
/// (copied where it says nothing: rsync decides by itself, with --link-dest).
fn add_packages(files: &mut Vec<FileAction>, packages: &[PackageRecord], placement: Option<&Placement>) {
    for (i, p) in packages.iter().enumerate() {
        let place = placement.and_then(|pl| pl.places.get(i).copied()).unwrap_or(Place::Copy);
        files.push(FileAction { rel: p.path.to_string(), place });
    }
}

/// sign's record read but for its packages, which are most of its text (35,000 packages
/// are 10 MB): those are kept as text, read by [`Release::read_packages`].
fn sign_without_packages(cx: &Cx) -> Result<(SignOutputs, Box<RawValue>)> {
    cx.output_with(StageName::Sign, |value| {
        let mut fields: BTreeMap<&str, &RawValue> = serde_json::from_str(value.text()?)?;
        // A record without packages stays one: read whole, it says what is missing.
        let Some(packages) = fields.remove("packages") else { return value.parse().map(|s| (s, empty_list())) };
        let mut rest = String::from("{\"packages\":[]");
        for (name, v) in &fields {
            rest.push(',');
            rest.push_str(&serde_json::to_string(name)?);
            rest.push(':');
            rest.push_str(v.get());
        }
        rest.push('}');
        Ok((serde_json::from_str(&rest)?, packages.to_owned()))
    })
}

/// `[]` as JSON text.
fn empty_list() -> Box<RawValue> {
    RawValue::from_string("[]".to_owned()).unwrap_or_else(|_| unreachable!("[] is JSON"))
}

/// The release sign recorded (or, in a dry run before sign, the one it would record),
/// and what `latest` serves now.
pub fn plan(cx: &Cx, target: &Target, abi: &str, steps: &mut Plan) -> Result<Release> {
    let local = match target {
        Target::Local(root) => Some(root.join(abi)),
        Target::Remote { .. } => None,
    };
    // What `latest` serves; the index of its files is read in a thread while sign's
    // record is, and the stage copies (each is tens of megabytes of JSON at tens of
    // thousands of packages).
    let seen = local.as_deref().map(|dir| {
        let previous = local_latest(dir);
        let known = previous.as_ref().map_or_else(Known::default, |p| Known::read(dir.join(p)));
        (previous, known)
    });
    let sign = if !cx.has_output(StageName::Sign) && cx.dry_run {
        steps.note("sign has not run in this run; publishing the repository it would sign");
        placeholder_sign(cx).map(|s| (s, None))
    } else if local.is_some() && !cx.dry_run {
        // The packages are read while the repository files are copied.
        sign_without_packages(cx).map(|(s, text)| (s, Some(text)))
    } else {
        cx.output::<SignOutputs>(StageName::Sign).map(|s| (s, None))
    };
    let (sign, packages_text) = sign?;
    let manifest = cx.run.abs(&sign.manifest);
    let data_sha = sign.catalogues.get("data.pkg").cloned().unwrap_or_default();
    let version = version_name(&data_sha);
    let mut files: Vec<FileAction> = Vec::new();
    for top in ["meta.conf", "meta"] {
        if sign.repo.join(top).exists() {
            files.push(FileAction { rel: top.into(), place: Place::Copy });
        }
    }
    for archive in sign.catalogues.keys() {
        files.push(FileAction { rel: archive.clone(), place: Place::Copy });
    }
    // The SBOM and the provenance, which sign wrote at the top of the repository.
    for f in [&sign.sbom, &sign.provenance].into_iter().flatten() {
        files.push(FileAction { rel: f.name.clone(), place: Place::Copy });
    }
    let (previous, placement, index, already) = match (target, local, seen) {
        (Target::Local(_), Some(dir), Some((previous, known))) => {
            let already = previous.clone().filter(|p| {
                sign.catalogues
                    .iter()
                    .all(|(archive, sha)| sha256_file(&dir.join(p).join(archive)).is_ok_and(|s| s == *sha))
            });
            let (placement, index) = match &already {
                // Nothing is placed: the version is verified again with what is known of it.
                Some(_) => (None, known),
                // What the pool's index vouches for (a `stat` per package) is found out
                // while the repository files are copied.
                None if !cx.dry_run => (None, known),
                None => {
                    let (placement, index) = pool::plan(&dir, previous.as_deref(), known.wait(), &sign.packages);
                    (Some(placement), Known::Read(index))
                }
            };
            (previous, placement, index, already)
        }
        (Target::Local(_), ..) => unreachable!("a local target's directory and `latest` are read above"),
        (Target::Remote { host, root }, ..) => {
            let dir = format!("{root}/{abi}");
            steps.run(&remote::ssh(cx, host).args(["ls", "-1a", &crate::proc::quote(&dir)]));
            let (_, latest) = remote::state(cx, host, &dir)?;
            (latest, None, Known::default(), None)
        }
    };
    add_packages(&mut files, &sign.packages, placement.as_ref());
    Ok(Release { sign, manifest, version, previous, files, placement, index, already, packages_text })
}

/// What a dry run assumes sign will record when it has not run: the repository bulk
/// recorded (or poudriere's, under poudriere.data) and the configured key.
fn placeholder_sign(cx: &Cx) -> Result<SignOutputs> {
    let repo = if cx.has_output(StageName::Bulk) {
        cx.output::<crate::bulk::BulkOutputs>(StageName::Bulk)?.repo
    } else {
        crate::sign::implied_repo(cx.loaded)
    };
    let signing = &cx.config().signing;
    Ok(SignOutputs {
        repo,
        manifest: cx.stage_dir(StageName::Sign)?.join("manifest.json"),
        trust: signing.trust,
        key_fingerprint: String::new(),
        packages: Vec::new(),
        pubkey: Some(cx.resolve(&signing.pubkey)),
        fingerprints: None,
        abi: cx.config().repository.abi.clone(),
        catalogues: ["data.pkg", "packagesite.pkg"].iter().map(|a| (a.to_string(), "00000000".to_string())).collect(),
        signed: false,
        build_name: None,
        sbom: None,
        provenance: None,
        produced: Default::default(),
    })
}

/// The ABI sign checked the packages against.
pub fn release_abi(cx: &Cx, sign: &SignOutputs) -> String {
    if sign.abi.is_empty() { cx.config().repository.abi.clone() } else { sign.abi.clone() }
}

/// The trust clients of this release use: what sign verified with.
pub fn release_trust(cx: &Cx, sign: Option<&SignOutputs>) -> Result<Trust> {
    let signing = &cx.config().signing;
    Ok(match (sign.map_or(signing.trust, |s| s.trust), sign) {
        (TrustMode::Fingerprints, Some(SignOutputs { fingerprints: Some(dir), .. })) => Trust::fingerprints(dir),
        (TrustMode::Fingerprints, _) => Trust::fingerprints(&cx.resolve(&signing.fingerprints)),
        (TrustMode::Pubkey, Some(SignOutputs { pubkey: Some(p), .. })) => Trust::pubkey(p),
        (TrustMode::Pubkey, _) => Trust::pubkey(&cx.resolve(&signing.pubkey)),
    }?)
}
