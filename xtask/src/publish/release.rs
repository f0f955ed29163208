//! The release to publish: what sign recorded, the files it consists of and how each
//! gets to the new version, and the trust its clients use.

use anyhow::Result;
use camino::Utf8PathBuf;

use super::Target;
use super::remote;
use super::verified::Index;
use super::versions::{local_latest, version_name};
use crate::config::TrustMode;
use crate::fingerprint::sha256_file;
use crate::sign::SignOutputs;
use crate::stage::{Cx, Plan, StageName};
use pkgrepo::trust::Trust;

/// One file of a release and how it gets to the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAction {
    /// Path relative to the repository.
    pub rel: String,
    /// Hard-link it from the previous version (else copy it from the source).
    pub link: bool,
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
    /// The `.verified.json` index of `previous` as the plan read it (local targets).
    pub index: Index,
    /// `latest` already serves exactly this release: nothing to copy or switch.
    pub already: Option<String>,
}

impl Release {
    /// How many of `files` are not packages: where the packages start.
    pub fn packages_from(&self) -> usize {
        self.files.len().saturating_sub(self.sign.packages.len())
    }
}

/// The release sign recorded (or, in a dry run before sign, the one it would record),
/// and what `latest` serves now.
pub fn plan(cx: &Cx, target: &Target, abi: &str, steps: &mut Plan) -> Result<Release> {
    let sign: SignOutputs = if !cx.has_output(StageName::Sign) && cx.dry_run {
        steps.note("sign has not run in this run; publishing the repository it would sign");
        placeholder_sign(cx)?
    } else {
        cx.output(StageName::Sign)?
    };
    let manifest = cx.run.abs(&sign.manifest);
    let data_sha = sign.catalogues.get("data.pkg").cloned().unwrap_or_default();
    let version = version_name(&data_sha);
    let mut files: Vec<FileAction> = Vec::new();
    for top in ["meta.conf", "meta"] {
        if sign.repo.join(top).exists() {
            files.push(FileAction { rel: top.into(), link: false });
        }
    }
    for archive in sign.catalogues.keys() {
        files.push(FileAction { rel: archive.clone(), link: false });
    }
    // The SBOM and the provenance, which sign wrote at the top of the repository.
    for f in [&sign.sbom, &sign.provenance].into_iter().flatten() {
        files.push(FileAction { rel: f.name.clone(), link: false });
    }
    let (previous, index, already) = match target {
        Target::Local(root) => {
            let dir = root.join(abi);
            let previous = local_latest(&dir);
            let index = previous.as_ref().map(|p| Index::read(&dir.join(p))).unwrap_or_default();
            let already = previous.clone().filter(|p| {
                sign.catalogues
                    .iter()
                    .all(|(archive, sha)| sha256_file(&dir.join(p).join(archive)).is_ok_and(|s| s == *sha))
            });
            (previous, Some((dir, index)), already)
        }
        Target::Remote { host, root } => {
            let dir = format!("{root}/{abi}");
            steps.run(&remote::ssh(cx, host).args(["ls", "-1a", &crate::proc::quote(&dir)]));
            let (_, latest) = remote::state(cx, host, &dir)?;
            (latest, None, None)
        }
    };
    let prev_dir = index.as_ref().zip(previous.as_ref()).map(|((dir, index), prev)| (dir.join(prev), index));
    for p in &sign.packages {
        let rel = p.path.to_string();
        let link = match &prev_dir {
            Some((dir, index)) => index.linkable(dir, &rel, p.size, &p.sum),
            // rsync decides by itself, with --link-dest.
            None => false,
        };
        files.push(FileAction { rel, link });
    }
    let index = index.map(|(_, index)| index).unwrap_or_default();
    Ok(Release { sign, manifest, version, previous, files, index, already })
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
