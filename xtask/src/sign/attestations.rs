//! The release's SBOM and signed provenance, as sign writes them: built from what the
//! run recorded (port's Cargo.lock copy, members and commit; makesum's distinfo; bulk's
//! build; the verified packages), written beside the release manifest and at the top of
//! the repository (publish serves them from there), the provenance signed as a DSSE
//! envelope by the release key through pkgrepo's signer.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use super::Manifest;
use crate::attest::provenance::{self, Colibri, Poudriere};
use crate::attest::{PROVENANCE_FILE, SBOM_FILE, dsse, sbom};
use crate::fingerprint::sha256_bytes;
use crate::port::PortOutputs;
use crate::stage::{Cx, StageName};
use pkgrepo::sign::Signer;
use rustsec::cargo_lock::Lockfile;

/// A file sign wrote into the repository: its name there and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseFile {
    pub name: String,
    pub sha256: String,
}

/// What was written.
pub struct Attested {
    pub sbom: ReleaseFile,
    pub provenance: ReleaseFile,
}

/// colibri's Cargo.lock as port recorded it, checked against the SHA-256 port took.
pub fn port_lock(cx: &Cx, port: &PortOutputs) -> Result<Option<Lockfile>> {
    let Some(rel) = &port.lock else { return Ok(None) };
    let path = cx.run.abs(rel);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the Cargo.lock port kept, {path}"))
        .with_context(|| format!("rerun port: {}", cx.loaded.xtask("port")))?;
    if sha256_bytes(text.as_bytes()) != port.cargo_lock_sha256 {
        bail!(
            crate::failure!("{path} changed since port checked it (SHA-256 {})", port.cargo_lock_sha256)
                .help(format!("rerun port: {}", cx.loaded.xtask("port")))
        );
    }
    let lock: Lockfile = text.parse().with_context(|| format!("cannot read {path} as a Cargo.lock"))?;
    Ok(Some(lock))
}

/// Writes the SBOM and the signed provenance for the verified repository `repo`.
pub fn write(cx: &Cx, repo: &Utf8Path, manifest: &Manifest, signer: &dyn Signer) -> Result<Attested> {
    let port: Option<PortOutputs> =
        if cx.has_output(StageName::Port) { Some(cx.output(StageName::Port)?) } else { None };
    let lock = match &port {
        Some(p) => port_lock(cx, p)?,
        None => None,
    };
    let stage = cx.stage_dir(StageName::Sign)?;

    // Each document is dropped once it is bytes: for a full ports tree, the SBOM and
    // the statement each take tens of megabytes as structures.
    let bom = sbom::build(&sbom::Input {
        name: &manifest.repository.name,
        version: port.as_ref().map(|p| p.tag.as_str()),
        timestamp: &manifest.created,
        abi: &manifest.repository.abi,
        packages: &manifest.packages,
        port: match (&port, &lock) {
            (Some(p), Some(lock)) => Some(sbom::PortSide { origin: &p.origin, lock, members: &p.members }),
            _ => None,
        },
    });
    let sbom_sha = put_with(&stage, repo, SBOM_FILE, |w| bom.write_to(w))?;
    drop(bom);
    let crates = lock.as_ref().map_or(0, |l| l.packages.len());
    cx.say(format!(
        "wrote the SBOM {SBOM_FILE} (CycloneDX {}: {}, {})",
        sbom::SPEC_VERSION,
        super::plural(manifest.packages.len(), "package"),
        super::plural(crates, "crate")
    ));

    let mut subjects: Vec<(String, String)> =
        manifest.packages.iter().map(|p| (p.path.to_string(), p.sha256.clone())).collect();
    subjects.push((SBOM_FILE.to_owned(), sbom_sha.clone()));
    let owned = inputs(cx, port.as_ref(), subjects, &manifest.created)?;
    let statement = provenance::build(&as_input(&owned));
    drop(owned);
    let subjects = statement.subject.len();
    let statement = statement.to_bytes();
    let envelope = dsse::Envelope::sign(dsse::IN_TOTO, &statement, signer).with_context(|| {
        "cannot sign the provenance (a DSSE envelope, signed over its PAE bytes with the release key)".to_string()
    })?;
    let line = envelope.to_line();
    put(&stage, repo, PROVENANCE_FILE, &line)?;
    cx.say(format!(
        "wrote the provenance {PROVENANCE_FILE} (in-toto statement, SLSA v1 predicate, {} subjects; DSSE signed by {})",
        subjects, envelope.signatures[0].keyid
    ));
    Ok(Attested {
        sbom: ReleaseFile { name: SBOM_FILE.into(), sha256: sbom_sha },
        provenance: ReleaseFile { name: PROVENANCE_FILE.into(), sha256: sha256_bytes(&line) },
    })
}

/// Writes a file beside the manifest and into the repository, each atomically.
fn put(stage: &Utf8Path, repo: &Utf8Path, name: &str, bytes: &[u8]) -> Result<()> {
    crate::fsx::write_atomic(&stage.join(name), bytes)?;
    crate::fsx::write_atomic(&repo.join(name), bytes)
}

/// [`put`] of what `write` writes, streamed to the stage directory's file and copied
/// from there; returns its SHA-256.
fn put_with(
    stage: &Utf8Path,
    repo: &Utf8Path,
    name: &str,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<String> {
    let made = stage.join(name);
    let mut sha256 = String::new();
    crate::fsx::write_atomic_with(&made, 0o644, |f, tmp| {
        let mut out = crate::fingerprint::Sha256Writer::new(f);
        write(&mut out).with_context(|| format!("cannot write {tmp}"))?;
        sha256 = out.hex();
        Ok(())
    })?;
    crate::fsx::write_atomic_with(&repo.join(name), 0o644, |f, tmp| {
        let mut from = std::fs::File::open(&made).with_context(|| format!("cannot read {made}"))?;
        std::io::copy(&mut from, f).with_context(|| format!("cannot copy {made} to {tmp}"))?;
        Ok(())
    })?;
    Ok(sha256)
}

/// What the provenance says about the build, from the run's records and poudriere's
/// metadata.
fn inputs<'a>(
    cx: &'a Cx,
    port: Option<&'a PortOutputs>,
    subjects: Vec<(String, String)>,
    finished: &'a str,
) -> Result<ProvenanceInputs<'a>> {
    let makesum: Option<crate::makesum::MakesumOutputs> =
        if cx.has_output(StageName::Makesum) { Some(cx.output(StageName::Makesum)?) } else { None };
    let bulk: Option<crate::bulk::BulkOutputs> =
        if cx.has_output(StageName::Bulk) { Some(cx.output(StageName::Bulk)?) } else { None };
    let pipeline = std::fs::read(&cx.loaded.path).with_context(|| format!("cannot read {}", cx.loaded.path))?;
    let p = &cx.config().poudriere;
    let etc = crate::poudriere::Paths::new(cx.loaded).etc.join("poudriere.d");
    let run = cx.run.run();
    Ok(ProvenanceInputs {
        subjects,
        port,
        distinfo: makesum.map(|m| m.distinfo_sha256).filter(|s| !s.is_empty()),
        pipeline: sha256_bytes(&pipeline),
        jail: (p.jail.clone(), metadata(&etc.join("jails").join(&p.jail), &["version", "arch", "method"])),
        tree: (p.tree.clone(), metadata(&etc.join("ports").join(&p.tree), &["method", "mnt"])),
        set: bulk.as_ref().and_then(|b| b.set.clone()),
        build_name: bulk.map(|b| b.build_name),
        host: crate::run::hostname(),
        run_id: run.map(|r| r.id().to_owned()).unwrap_or_default(),
        started: run.map(|r| r.state.created.clone()).unwrap_or_else(|| finished.to_owned()),
        finished,
    }
    .with_version(&p.version))
}

/// poudriere's metadata files of a jail or tree (ETC/poudriere.d/{jails,ports}/NAME/),
/// those that exist.
fn metadata(dir: &Utf8Path, files: &[&str]) -> BTreeMap<String, String> {
    files
        .iter()
        .filter_map(|f| {
            let value = std::fs::read_to_string(dir.join(f)).ok()?;
            let value = value.lines().next()?.trim().to_owned();
            (!value.is_empty()).then(|| (f.to_string(), value))
        })
        .collect()
}

/// The provenance's inputs, owned, before they are lent to [`provenance::build`].
struct ProvenanceInputs<'a> {
    subjects: Vec<(String, String)>,
    port: Option<&'a PortOutputs>,
    distinfo: Option<String>,
    pipeline: String,
    jail: (String, BTreeMap<String, String>),
    tree: (String, BTreeMap<String, String>),
    set: Option<String>,
    build_name: Option<String>,
    host: String,
    run_id: String,
    started: String,
    finished: &'a str,
}

impl ProvenanceInputs<'_> {
    /// Fills in what poudriere's metadata leaves out: the jail's configured version.
    fn with_version(mut self, configured: &str) -> Self {
        self.jail.1.entry("version".into()).or_insert_with(|| configured.to_owned());
        self
    }
}

fn as_input<'b>(i: &'b ProvenanceInputs) -> provenance::Input<'b> {
    let tree_commit = i.tree.1.get("mnt").and_then(|mnt| crate::git::head_commit(Utf8Path::new(mnt)));
    provenance::Input {
        subjects: i.subjects.clone(),
        colibri: i.port.map(|p| Colibri {
            repository: p.repository.as_deref(),
            tag: &p.tag,
            commit: &p.commit,
            dirty: p.dirty,
        }),
        cargo_lock_sha256: i.port.map(|p| p.cargo_lock_sha256.as_str()),
        distinfo_sha256: i.distinfo.as_deref(),
        pipeline_sha256: &i.pipeline,
        jail: Poudriere { name: &i.jail.0, metadata: i.jail.1.clone(), commit: None },
        ports_tree: Poudriere { name: &i.tree.0, metadata: i.tree.1.clone(), commit: tree_commit },
        set: i.set.as_deref(),
        build_name: i.build_name.as_deref(),
        host: &i.host,
        run_id: &i.run_id,
        started: &i.started,
        finished: i.finished,
    }
}
