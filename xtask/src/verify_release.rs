//! `cargo xtask verify-release (URL | DIR)`: what a user runs to check a published
//! release, as sign and publish left it: the provenance's DSSE envelope is signed by the
//! release key; every subject it lists is served with that SHA-256 and every package of
//! the catalogue is a subject; the catalogue's signatures, sizes and sums hold (the same
//! checks as `sign --verify-only`); the SBOM lists exactly the catalogue's packages with
//! their sums. One line per problem on stdout, exit 1; exit 0 when all hold. Over HTTP
//! every download is bounded in size and time, into a temporary directory removed after.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::attest::provenance::Statement;
use crate::attest::sbom::{self, Bom};
use crate::attest::{PROVENANCE_FILE, SBOM_FILE, dsse};
use crate::cli::VerifyRelease;
use crate::config::{Loaded, TrustMode};
use crate::failure::{Class, Failure, ResultExt};
use crate::fingerprint::sha256_bytes;
use crate::ui::Ui;
use pkgrepo::archive::Archive;
use pkgrepo::catalogue::{Catalogue, Package};
use pkgrepo::keys::PublicKey;
use pkgrepo::meta::MetaConf;
use pkgrepo::trust::Trust;
use pkgrepo::{CatalogueKind, verify};

/// The most meta.conf may weigh.
const MAX_META: u64 = 1 << 20;
/// The most a catalogue archive may weigh.
const MAX_CATALOGUE: u64 = 256 << 20;

/// Where the release is read from.
enum Source {
    Dir(Utf8PathBuf),
    Http { agent: ureq::Agent, base: String },
}

/// What asking for a file gave.
enum Got {
    Bytes(Vec<u8>),
    Missing,
    /// Larger than the limit for it.
    TooLarge(u64),
}

impl Source {
    /// The bytes of `rel`, at most `limit`.
    fn get(&self, rel: &str, limit: u64) -> Result<Got> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(rel);
                let file = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Got::Missing),
                    Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
                };
                let mut bytes = Vec::new();
                file.take(limit + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {path}"))?;
                if bytes.len() as u64 > limit {
                    return Ok(Got::TooLarge(limit));
                }
                Ok(Got::Bytes(bytes))
            }
            Source::Http { agent, base } => {
                let url = format!("{base}{rel}");
                let mut resp = agent.get(&url).call().map_err(|e| anyhow::anyhow!("cannot fetch {url}: {e}"))?;
                match resp.status().as_u16() {
                    200 => {}
                    404 | 410 => return Ok(Got::Missing),
                    code => bail!("{url} answered HTTP {code}"),
                }
                match resp.body_mut().with_config().limit(limit).read_to_vec() {
                    Ok(bytes) => Ok(Got::Bytes(bytes)),
                    Err(ureq::Error::BodyExceedsLimit(_)) => Ok(Got::TooLarge(limit)),
                    Err(e) => bail!("cannot fetch {url}: {e}"),
                }
            }
        }
    }

    /// [`Source::get`] where a missing or too large file is a problem line.
    fn fetch(&self, rel: &str, limit: u64, what: &str, lines: &mut Vec<String>) -> Result<Option<Vec<u8>>> {
        Ok(match self.get(rel, limit)? {
            Got::Bytes(b) => Some(b),
            Got::Missing => {
                lines.push(format!("{rel}: not served ({what})"));
                None
            }
            Got::TooLarge(limit) => {
                lines.push(format!("{rel}: larger than the {limit} bytes allowed for it"));
                None
            }
        })
    }
}

impl VerifyRelease {
    /// `cargo xtask verify-release`.
    pub fn invoke(self, loaded: &Loaded, ui: &Ui) -> Result<()> {
        let trust = self.trust(loaded)?;
        let abi = self.trust.abi(loaded);
        let (source, shown) = self.source()?;
        let scratch = tempfile::Builder::new()
            .prefix("mother-build-verify-release.")
            .tempdir()
            .context("cannot create a temporary directory")
            .class(Class::Infrastructure)?;
        let scratch_dir = Utf8Path::from_path(scratch.path()).context("the temporary directory is not UTF-8")?;
        let problems = check(&source, scratch_dir, &trust, &abi).class(Class::Infrastructure)?;
        if problems.lines.is_empty() {
            ui.println(&format!(
                "ok: {shown}: the provenance is signed by {} and lists all {} ({}) and the SBOM; the catalogue verifies; the SBOM lists exactly its packages",
                problems.key,
                crate::sign::plural(problems.packages, "package"),
                crate::ui::bytes(problems.bytes)
            ));
            return Ok(());
        }
        for line in &problems.lines {
            ui.println(line);
        }
        ui.eprintln(&format!(
            "{} {shown} failed verification: {}",
            ui.red("error:"),
            crate::sign::plural(problems.lines.len(), "problem")
        ));
        Err(Failure::reported(Class::Product).into())
    }

    fn source(&self) -> Result<(Source, String)> {
        let loc = &self.location;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            let secs = self.timeout_secs.max(1);
            let agent = ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(secs)))
                .timeout_recv_response(Some(Duration::from_secs(secs)))
                .timeout_global(Some(Duration::from_secs(secs.saturating_mul(10))))
                .http_status_as_error(false)
                .build()
                .into();
            let base = if loc.ends_with('/') { loc.clone() } else { format!("{loc}/") };
            return Ok((Source::Http { agent, base }, loc.clone()));
        }
        let dir = crate::config::absolute(Utf8Path::new(loc))?;
        if !dir.is_dir() {
            bail!(
                crate::failure!("{loc} is neither an http(s) URL nor a directory")
                    .help("give the repository's URL (the repo conf's url, ${ABI} expanded) or its directory")
                    .usage()
            );
        }
        Ok((Source::Dir(dir), loc.clone()))
    }

    /// Trust from --pubkey / --fingerprints, else from [signing].
    fn trust(&self, loaded: &Loaded) -> Result<Trust> {
        let signing = &loaded.config.signing;
        Ok(match (&self.trust.pubkey, &self.trust.fingerprints) {
            (Some(p), _) => Trust::pubkey(&crate::config::absolute(p)?)?,
            (None, Some(d)) => Trust::fingerprints(&crate::config::absolute(d)?)?,
            (None, None) => match signing.trust {
                TrustMode::Pubkey => Trust::pubkey(&loaded.resolve(&signing.pubkey))
                    .map_err(|e| loaded.error_at("signing.pubkey", format!("{e:#}")))
                    .help("or name the release's public key: --pubkey FILE")?,
                TrustMode::Fingerprints => Trust::fingerprints(&loaded.resolve(&signing.fingerprints))
                    .map_err(|e| loaded.error_at("signing.fingerprints", format!("{e:#}")))
                    .help("or name the trusted fingerprints: --fingerprints DIR")?,
            },
        })
    }
}

/// What checking found.
struct Verdict {
    lines: Vec<String>,
    key: String,
    packages: usize,
    bytes: u64,
}

/// Checks the release at `source`, downloading into `scratch` when it is remote.
fn check(source: &Source, scratch: &Utf8Path, trust: &Trust, abi: &str) -> Result<Verdict> {
    let mut v = Verdict { lines: Vec::new(), key: trust.describe(), packages: 0, bytes: 0 };
    // Files refused for their size: already a problem line, not also "missing".
    let mut oversize = BTreeSet::new();
    let dir = match source {
        Source::Dir(d) => d.clone(),
        Source::Http { .. } => {
            download(source, scratch, &mut v.lines, &mut oversize)?;
            scratch.to_owned()
        }
    };

    // The catalogue and its packages, as `sign --verify-only` checks them.
    let report = verify::verify(&dir, &verify::Options { sha256: true, ..verify::Options::new(trust, abi) })?;
    v.lines.extend(report.problems.iter().filter(|p| !oversize.contains(&p.subject)).map(ToString::to_string));
    // data.pkg's entries, as verify read them (read again only when it could not).
    let read_again;
    let catalogue = match report.listing() {
        Some((CatalogueKind::Data, c)) => c,
        _ => {
            read_again = listed_catalogue(&dir);
            &read_again
        }
    };
    let listed = by_path(catalogue);
    // The SHA-256 of each package that verified, which verify computed as it read it.
    let hashed: BTreeMap<&str, &str> = report.packages().filter_map(|p| Some((p.path, p.sha256?))).collect();
    v.packages = listed.len();
    v.bytes = listed.values().map(|p| p.pkgsize).sum();

    // The provenance: signed by the release key, an in-toto statement.
    let statement = match source.fetch(PROVENANCE_FILE, dsse::MAX_ENVELOPE, "the release's provenance", &mut v.lines)? {
        None => None,
        Some(bytes) => provenance(&bytes, &dir, trust, &report, &mut v.lines),
    };

    // Each subject is served with its digest; each package is a subject.
    let sbom_bytes = source.fetch(SBOM_FILE, sbom::MAX_SBOM, "the release's SBOM", &mut v.lines)?;
    if let Some(statement) = &statement {
        let digests = statement.digests();
        for (name, want) in &digests {
            if oversize.contains(*name) {
                continue;
            }
            let have = if *name == SBOM_FILE {
                sbom_bytes.as_deref().map(sha256_bytes)
            } else if crate::fsx::check_contained(Utf8Path::new(name)).is_err() {
                v.lines.push(format!("{PROVENANCE_FILE}: subject `{name}` is not a path inside the repository"));
                continue;
            } else if let Some(sha) = hashed.get(*name) {
                Some((*sha).to_owned())
            } else {
                crate::fingerprint::sha256_file(&dir.join(name)).ok()
            };
            match have {
                None => v.lines.push(format!("{name}: a subject of the provenance, not served")),
                Some(have) if have != *want => {
                    v.lines.push(format!("{name}: SHA-256 {have}, but the provenance says {want}"))
                }
                Some(_) => {}
            }
        }
        for path in listed.keys() {
            if !digests.contains_key(path) {
                v.lines.push(format!("{path}: in the catalogue, but not a subject of the provenance"));
            }
        }
        if !digests.contains_key(SBOM_FILE) {
            v.lines.push(format!("{SBOM_FILE}: not a subject of the provenance"));
        }
    }

    // The SBOM lists exactly the catalogue's packages.
    if let Some(bytes) = &sbom_bytes {
        sbom_matches(bytes, &dir, &listed, &mut v.lines);
    }
    Ok(v)
}

/// Downloads meta.conf, the catalogues and every package they list into `to`; what is
/// missing or too large becomes a problem line.
fn download(source: &Source, to: &Utf8Path, lines: &mut Vec<String>, oversize: &mut BTreeSet<String>) -> Result<()> {
    let mut save = |rel: &str, limit: u64, lines: &mut Vec<String>| -> Result<()> {
        match source.get(rel, limit)? {
            Got::Bytes(bytes) => {
                let path = to.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {parent}"))?;
                }
                std::fs::write(&path, bytes).with_context(|| format!("cannot write {path}"))?;
            }
            // verify names what is missing.
            Got::Missing => {}
            Got::TooLarge(limit) => {
                lines.push(format!("{rel}: served larger than the {limit} bytes allowed for it"));
                oversize.insert(rel.to_owned());
            }
        }
        Ok(())
    };
    save("meta.conf", MAX_META, lines)?;
    save("meta", MAX_META, lines)?;
    let meta = MetaConf::load(to).unwrap_or_default();
    for kind in pkgrepo::CATALOGUES {
        save(&meta.catalogue(kind).0, MAX_CATALOGUE, lines)?;
    }
    let catalogue = listed_catalogue(to);
    for (path, p) in by_path(&catalogue) {
        if crate::fsx::check_contained(Utf8Path::new(path)).is_err() {
            continue; // verify names it
        }
        save(path, p.pkgsize, lines)?;
    }
    Ok(())
}

/// The entries of data.pkg (unverified: verify checks it); none when it cannot be read.
fn listed_catalogue(dir: &Utf8Path) -> Catalogue {
    let meta = MetaConf::load(dir).unwrap_or_default();
    let (archive, inner) = meta.catalogue(CatalogueKind::Data);
    let Ok(archive) = Archive::read(&dir.join(archive)) else { return Catalogue::default() };
    let Some(entry) = archive.find(&inner).next() else { return Catalogue::default() };
    Catalogue::parse(CatalogueKind::Data, &entry.data).unwrap_or_default()
}

/// A catalogue's packages by path.
fn by_path(catalogue: &Catalogue) -> BTreeMap<&str, Package<'_>> {
    catalogue.packages().map(|p| (p.path, p)).collect()
}

/// Checks the envelope's signature and reads its statement (even when the signature
/// fails, so every other problem is still listed).
fn provenance(
    bytes: &[u8],
    dir: &Utf8Path,
    trust: &Trust,
    report: &verify::Report,
    lines: &mut Vec<String>,
) -> Option<Statement> {
    let envelope = match dsse::Envelope::parse(bytes) {
        Ok(e) => e,
        Err(e) => {
            lines.push(format!("{PROVENANCE_FILE}: {e:#}"));
            return None;
        }
    };
    if envelope.payload_type != dsse::IN_TOTO {
        lines.push(format!("{PROVENANCE_FILE}: payloadType is `{}`, not {}", envelope.payload_type, dsse::IN_TOTO));
    }
    let keys = release_keys(dir, trust, report);
    if keys.is_empty() {
        lines.push(format!("{PROVENANCE_FILE}: no trusted key to check its signature with ({})", trust.describe()));
    } else {
        let errors: Vec<String> =
            keys.iter().filter_map(|k| envelope.verify(k).err()).map(|e| format!("{e:#}")).collect();
        if errors.len() == keys.len() {
            lines.push(format!("{PROVENANCE_FILE}: the DSSE signature does not verify: {}", errors.join("; ")));
        }
    }
    let payload = match envelope.payload_bytes() {
        Ok(p) => p,
        Err(e) => {
            lines.push(format!("{PROVENANCE_FILE}: {e:#}"));
            return None;
        }
    };
    match Statement::parse(&payload) {
        Ok(s) => Some(s),
        Err(e) => {
            lines.push(format!("{PROVENANCE_FILE}: {e:#}"));
            None
        }
    }
}

/// The keys the provenance may be signed with: the trusted public key (pubkey mode), or
/// the public keys the catalogue carries whose signatures verified with a trusted,
/// unrevoked fingerprint (fingerprints mode).
fn release_keys(dir: &Utf8Path, trust: &Trust, report: &verify::Report) -> Vec<PublicKey> {
    if let Some(key) = trust.key() {
        return vec![key.clone()];
    }
    let trusted: Vec<&String> = report.catalogues.iter().flat_map(|c| &c.verified_by).collect();
    let meta = MetaConf::load(dir).unwrap_or_default();
    let mut keys = Vec::new();
    for kind in pkgrepo::CATALOGUES {
        let (archive, inner) = meta.catalogue(kind);
        let Ok(archive) = Archive::read(&dir.join(archive)) else { continue };
        for entry in archive.find(&format!("{inner}.pub")) {
            let cert = pkgrepo::signature::Entry::parse(&entry.data).payload;
            if trusted.contains(&&sha256_bytes(cert))
                && let Ok(key) = PublicKey::parse(cert)
                && !keys.contains(&key)
            {
                keys.push(key);
            }
        }
    }
    keys
}

/// The SBOM against the catalogue: the same packages, each with the catalogue's name,
/// version and sum and the served file's SHA-256.
fn sbom_matches(bytes: &[u8], dir: &Utf8Path, listed: &BTreeMap<&str, Package>, lines: &mut Vec<String>) {
    let bom = match Bom::parse(bytes) {
        Ok(b) => b,
        Err(e) => {
            lines.push(format!("{SBOM_FILE}: {e:#}"));
            return;
        }
    };
    if bom.spec_version != sbom::SPEC_VERSION {
        lines.push(format!("{SBOM_FILE}: specVersion {}, not {}", bom.spec_version, sbom::SPEC_VERSION));
    }
    let components = bom.packages();
    for (path, p) in listed {
        let Some(c) = components.get(path) else {
            lines.push(format!("{SBOM_FILE}: does not list the package {path}"));
            continue;
        };
        let mut differs = Vec::new();
        if c.name != p.name {
            differs.push(format!("name {} (catalogue: {})", c.name, p.name));
        }
        if c.version.as_deref() != Some(p.version) {
            differs.push(format!("version {} (catalogue: {})", c.version.as_deref().unwrap_or("none"), p.version));
        }
        if c.property(sbom::PKG_SUM) != Some(p.sum) {
            differs.push(format!("sum {} (catalogue: {})", c.property(sbom::PKG_SUM).unwrap_or("none"), p.sum));
        }
        if let Ok(served) = crate::fingerprint::sha256_file(&dir.join(path))
            && c.sha256() != Some(served.as_str())
        {
            differs.push(format!("SHA-256 {} (served: {served})", c.sha256().unwrap_or("none")));
        }
        if !differs.is_empty() {
            lines.push(format!("{SBOM_FILE}: {path}: {}", differs.join(", ")));
        }
    }
    for path in components.keys() {
        if !listed.contains_key(*path) {
            lines.push(format!("{SBOM_FILE}: lists {path}, which the catalogue does not"));
        }
    }
}
