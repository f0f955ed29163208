//! sign: make sure the repository bulk built is signed by the release key and that
//! every package in it is what its catalogue says; then write the release manifest.
//!
//! Verification is native (see [`pkgrepo::verify`]). A catalogue that is not
//! signed by the configured key (bulk ran without one, or the key was rotated) is
//! signed: natively (the key file, or `signing.command` speaking pkg's signing_command
//! protocol) or by `pkg repo` on FreeBSD. A repository whose packages do not match
//! their catalogue is never signed. `sign --verify-only` checks any repository and
//! prints one line per problem.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::bulk::BulkOutputs;
use crate::cli::Sign;
use crate::config::{Loaded, Tool, TrustMode};
use crate::failure;
use crate::failure::ResultExt;
use crate::fingerprint::{Fingerprint, sha256_bytes};
use crate::proc::CmdLine;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};
use crate::ui::Ui;
use pkgrepo::CATALOGUES;

use pkgrepo::meta::MetaConf;
use pkgrepo::sign::{Signer, sign_archive};
use pkgrepo::trust::Trust;
use pkgrepo::verify::{self, Report};

pub(crate) mod attestations;
mod signers;
pub use attestations::{ReleaseFile, port_lock};
use signers::{CommandSigner, key_signer};

mod verify_only;

/// How a catalogue that needs a signature gets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignMethod {
    /// In Rust: with signing.key (or signing.command, when set), rewriting only the
    /// signature entries of the catalogue archives.
    Native,
    /// With `pkg repo` (FreeBSD): regenerates the catalogues from the packages and signs
    /// them with signing.key (pubkey mode) or signing.command (fingerprints mode).
    Pkg,
}

settings! {
    /// sign: verify the repository bulk built, sign its catalogue with the release key when
    /// it is not signed by it yet, and write the release manifest. Trust and keys come from
    /// `[signing]`, the ABI from `[repository]`.
    pub struct SignConfig {
        /// How to sign a catalogue that is not signed by the configured key: `native` or
        /// `pkg` (`pkg repo`, FreeBSD only).
        pub method: SignMethod = SignMethod::Native,
        /// Threads hashing packages; 0 means one per CPU.
        pub threads: usize = 0,
        /// Write the release's SBOM (CycloneDX 1.6) and its provenance (in-toto statement,
        /// SLSA v1 predicate) in a DSSE envelope signed with signing.key; publish serves
        /// them beside the repository (docs/supply-chain.md). A signing command cannot sign
        /// the envelope (pkg's protocol hands it a SHA-256 hex, not the bytes to sign): with
        /// signing.command, set this to false.
        pub provenance: bool = true,
    }
}

/// Checks `[sign]` against `[signing]` when pipeline.toml is loaded.
pub fn validate(loaded: &Loaded) -> Result<()> {
    if loaded.config.sign.provenance && !loaded.config.signing.command.is_empty() {
        return Err(loaded
            .failure_at(
                "sign.provenance",
                "the provenance's DSSE envelope cannot be signed by signing.command: pkg's signing-command protocol gives the command a SHA-256 hex, and DSSE signs the envelope's own bytes",
            )
            .help("sign with the key file (signing.key, without signing.command), or set sign.provenance = false to release without SBOM and provenance")
            .into());
    }
    Ok(())
}

impl SignConfig {
    fn method_word(&self) -> &'static str {
        match self.method {
            SignMethod::Native => "natively",
            SignMethod::Pkg => "with pkg repo",
        }
    }
}

/// A package of a verified repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub origin: String,
    /// Path relative to the repository (`All/colibri-0.9.0.pkg`).
    pub path: camino::Utf8PathBuf,
    pub size: u64,
    /// The catalogue's `sum` (`2$...` BLAKE2b in pkg's base32, or bare SHA-256 hex).
    pub sum: String,
    pub sha256: String,
}

/// What `sign` records for later stages. (Contract: publish and iso read it; fields
/// may be added, not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignOutputs {
    /// The verified, signed repository directory (absolute).
    pub repo: camino::Utf8PathBuf,
    /// The release manifest (JSON), relative to the state directory.
    pub manifest: camino::Utf8PathBuf,
    /// How clients verify it.
    pub trust: crate::config::TrustMode,
    /// SHA-256 (hex) of the public key the catalogue is signed with.
    pub key_fingerprint: String,
    pub packages: Vec<PackageRecord>,
    /// The public key clients are given (absolute; pubkey mode and native fingerprints).
    #[serde(default)]
    pub pubkey: Option<Utf8PathBuf>,
    /// The fingerprints directory clients trust (absolute; fingerprints mode).
    #[serde(default)]
    pub fingerprints: Option<Utf8PathBuf>,
    /// The ABI every package was checked against.
    #[serde(default)]
    pub abi: String,
    /// SHA-256 of each catalogue archive as verified (`data.pkg` -> hex).
    #[serde(default)]
    pub catalogues: BTreeMap<String, String>,
    /// Whether this stage (re)signed the catalogue, rather than finding it signed.
    #[serde(default)]
    pub signed: bool,
    #[serde(default)]
    pub build_name: Option<String>,
    /// The SBOM written into the repository (none with sign.provenance = false).
    #[serde(default)]
    pub sbom: Option<ReleaseFile>,
    /// The provenance's DSSE envelope written into the repository.
    #[serde(default)]
    pub provenance: Option<ReleaseFile>,
    /// The identity of the manifest (by its path in the state directory) and of each
    /// package (by its path in `repo`) when sign ended: one rewritten or replaced since
    /// makes sign run again.
    #[serde(default)]
    pub produced: crate::identity::Produced,
}

/// The release manifest: what was released, from what, signed by which key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    /// When the manifest was written (RFC 3339, UTC).
    pub created: String,
    pub repository: ManifestRepository,
    /// poudriere's build name (`-B`), when bulk built it in this run.
    pub build_name: Option<String>,
    pub colibri: Option<ManifestColibri>,
    /// SHA-256 of colibri's Cargo.lock.
    pub cargo_lock_sha256: Option<String>,
    pub key: ManifestKey,
    pub catalogues: Vec<ManifestCatalogue>,
    pub packages: Vec<PackageRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRepository {
    pub name: String,
    pub abi: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestColibri {
    pub commit: String,
    pub tag: String,
    pub dirty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestKey {
    pub trust: TrustMode,
    /// SHA-256 hex of the public key file's bytes (PEM for rsa, DER for ecc and ecdsa): what fingerprints mode trusts.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestCatalogue {
    pub archive: String,
    pub sha256: String,
    pub inner: String,
    /// SHA-256 of the inner file: the signed message.
    pub inner_sha256: String,
}

/// What happens to the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Already signed by the configured key.
    Keep,
    /// Sign it (the plan's best knowledge; execute decides again after verifying).
    Sign,
}

/// The sign stage's plan.
pub struct SignPlan {
    steps: Plan,
    repo: Utf8PathBuf,
    action: Action,
}

impl StagePlan for SignPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

/// The default repository when bulk has not run: poudriere's layout for the configured
/// jail and tree, under poudriere.data (`POUDRIERE_DATA/packages/JAIL-TREE/.latest`).
pub fn implied_repo(loaded: &Loaded) -> Utf8PathBuf {
    let p = &loaded.config.poudriere;
    crate::poudriere::Paths::new(loaded).packages(&crate::poudriere::mastername(&p.jail, &p.tree, None)).join(".latest")
}

/// The trust anchors and the key the release is signed with.
struct Keys {
    trust: Trust,
    /// The public key of the release key (its path), when there is one to name.
    pubkey: Option<Utf8PathBuf>,
    /// SHA-256 of the release key's public key file: the signature the catalogue must carry.
    fingerprint: String,
}

impl Sign {
    /// The repository: --repo, or what bulk recorded.
    fn locate(&self, cx: &Cx) -> Result<(Utf8PathBuf, Option<String>)> {
        if let Some(repo) = &self.repo {
            return Ok((crate::config::absolute(repo)?, None));
        }
        if cx.has_output(StageName::Bulk) || !cx.dry_run {
            let bulk: BulkOutputs =
                cx.output(StageName::Bulk).help("or name a repository directory: cargo xtask sign --repo DIR")?;
            return Ok((bulk.repo, None));
        }
        let implied = implied_repo(cx.loaded);
        Ok((implied.clone(), Some(format!("bulk has not run in this run; using poudriere's repository {implied}"))))
    }

    /// Trust from --pubkey/--fingerprints, or from [signing].
    fn keys(&self, loaded: &Loaded) -> Result<Keys> {
        let signing = &loaded.config.signing;
        if let Some(path) = &self.trust.pubkey {
            let path = crate::config::absolute(path)?;
            let trust = Trust::pubkey(&path)?;
            let fingerprint = pubkey_fingerprint(&trust);
            return Ok(Keys { trust, pubkey: Some(path), fingerprint });
        }
        if let Some(dir) = &self.trust.fingerprints {
            let trust = Trust::fingerprints(&crate::config::absolute(dir)?)?;
            let pubkey = loaded.resolve(&signing.pubkey);
            let fingerprint = std::fs::read(&pubkey).map(|b| sha256_bytes(&b)).unwrap_or_default();
            return Ok(Keys { trust, pubkey: pubkey.exists().then_some(pubkey), fingerprint });
        }
        let pubkey = loaded.resolve(&signing.pubkey);
        match signing.trust {
            TrustMode::Pubkey => {
                let trust = Trust::pubkey(&pubkey).map_err(|e| loaded.error_at("signing.pubkey", format!("{e:#}")))?;
                let fingerprint = pubkey_fingerprint(&trust);
                Ok(Keys { trust, pubkey: Some(pubkey), fingerprint })
            }
            TrustMode::Fingerprints => {
                let dir = loaded.resolve(&signing.fingerprints);
                let trust =
                    Trust::fingerprints(&dir).map_err(|e| loaded.error_at("signing.fingerprints", format!("{e:#}")))?;
                let bytes = std::fs::read(&pubkey).map_err(|e| {
                    loaded.error_at("signing.pubkey", format!("cannot read the release public key {pubkey}: {e}"))
                })?;
                Ok(Keys { trust, pubkey: Some(pubkey), fingerprint: sha256_bytes(&bytes) })
            }
        }
    }

    fn options<'a>(&self, loaded: &Loaded, trust: &'a Trust, abi: &'a str) -> verify::Options<'a> {
        let threads = match loaded.config.sign.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        verify::Options {
            trust,
            abi,
            sha256: true,
            threads,
            listed: &|_, _| {},
            progress: &|_| {},
            known: None,
            files: true,
            stop: &|| Ok(crate::proc::check_interrupted()?),
        }
    }

    /// `cargo xtask sign`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        if self.verify_only {
            return self.verify_only(engine);
        }
        engine.run_one(&self, self.dry_run)
    }
}

fn pubkey_fingerprint(trust: &Trust) -> String {
    trust.key().map(|k| k.fingerprint().to_owned()).unwrap_or_default()
}

/// What verification checks, as plan steps.
fn check_steps(repo: &Utf8Path, trust: &Trust, abi: &str) -> Vec<Step> {
    vec![
        Step::Check(format!(
            "{repo}: meta.conf, and data.pkg and packagesite.pkg signed for {} clients ({})",
            trust.mode(),
            trust.describe()
        )),
        Step::Check(format!(
            "{repo}: every listed package present, its size and sum as listed, ABI {abi}, no path escaping"
        )),
    ]
}

/// Runs verification with a byte progress bar, whose length is set once the catalogues
/// are read.
fn verify_with_progress(repo: &Utf8Path, opts: &verify::Options, ui: &Ui) -> Result<Report> {
    let bar = ui.progress("verify", 0, true);
    let listed = |_: usize, bytes: u64| bar.set_total(bytes);
    let progress = |n: u64| bar.inc(n, "hashing packages");
    Ok(verify::verify(repo, &verify::Options { listed: &listed, progress: &progress, ..*opts })?)
}

/// The problems as an error of `class`: the product's (exit 1) when the packages do not
/// match their catalogue; the machinery's (exit 2) when signing made a catalogue that
/// does not verify.
fn failure(repo: &Utf8Path, report: &Report, help: &str, class: crate::failure::Class) -> anyhow::Error {
    let lines: Vec<String> = report.problems.iter().map(|p| format!("  {p}")).collect();
    failure::Failure::new(format!(
        "the repository {repo} failed verification ({}):\n{}",
        plural(report.problems.len(), "problem"),
        lines.join("\n")
    ))
    .help(help)
    .class(class)
    .into()
}

/// `1 package`, `2 packages`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

impl Sign {
    fn signing_command(&self, cx: &Cx) -> Option<CmdLine> {
        let cmd = &cx.config().signing.command;
        let (program, args) = cmd.split_first()?;
        Some(CmdLine::new(program.clone()).args(args.iter().cloned()))
    }

    fn pkg_repo_command(&self, cx: &Cx, repo: &Utf8Path) -> Result<CmdLine> {
        let signing = &cx.config().signing;
        let base = CmdLine::tool(&cx.config().tools, Tool::pkg).arg("repo").arg(repo.as_str());
        match signing.trust {
            TrustMode::Pubkey => Ok(base.arg(crate::poudriere::signing_key_argument(cx.loaded))),
            TrustMode::Fingerprints => {
                if signing.command.is_empty() {
                    return Err(cx.loaded.error_at(
                        "signing.command",
                        "fingerprints mode with sign.method = \"pkg\" needs a signing command",
                    ));
                }
                Ok(base.arg("signing_command:").args(signing.command.iter().cloned()))
            }
        }
    }

    /// The key file signing reads: signing.key, unless a signing command signs (natively,
    /// or through `pkg repo` in fingerprints mode).
    fn key_used(&self, cx: &Cx) -> Option<Utf8PathBuf> {
        let uses_key = match cx.config().sign.method {
            SignMethod::Native => self.signing_command(cx).is_none(),
            SignMethod::Pkg => cx.config().signing.trust == TrustMode::Pubkey,
        };
        uses_key.then(|| cx.resolve(&cx.config().signing.key))
    }

    /// Signs every catalogue archive natively.
    fn sign_native(&self, cx: &Cx, repo: &Utf8Path, mode: TrustMode) -> Result<()> {
        let command = self.signing_command(cx);
        let by_key;
        let command_signer;
        let signer: &dyn Signer = match command {
            Some(cmd) => {
                command_signer = CommandSigner { cmd, log: &cx.log };
                &command_signer
            }
            None => {
                by_key = key_signer(cx)?;
                &by_key
            }
        };
        let meta = MetaConf::load(repo).unwrap_or_default();
        let mut archives: Vec<(String, String)> = CATALOGUES.iter().map(|k| meta.catalogue(*k)).collect();
        let files = meta.files();
        if repo.join(&files.0).exists() {
            archives.push(files);
        }
        for (archive, inner) in archives {
            let path = repo.join(&archive);
            let digest = sign_archive(&path, &inner, mode, signer)?;
            cx.say(format!("signed {archive} ({inner} sha256 {digest}, {mode} layout)"));
        }
        Ok(())
    }

    fn manifest(&self, cx: &Cx, report: &Report, keys: &Keys, abi: &str) -> Result<Manifest> {
        let port = if cx.has_output(StageName::Port) {
            Some(cx.output::<crate::port::PortOutputs>(StageName::Port)?)
        } else {
            None
        };
        let build_name = if cx.has_output(StageName::Bulk) && self.repo.is_none() {
            Some(cx.output::<BulkOutputs>(StageName::Bulk)?.build_name)
        } else {
            None
        };
        let repo_cfg = &cx.config().repository;
        Ok(Manifest {
            schema: 1,
            created: crate::run::now_rfc3339(),
            repository: ManifestRepository {
                name: repo_cfg.name.clone(),
                abi: abi.to_owned(),
                url: repo_cfg.url.clone(),
            },
            build_name,
            colibri: port.as_ref().map(|p| ManifestColibri {
                commit: p.commit.clone(),
                tag: p.tag.clone(),
                dirty: p.dirty,
            }),
            cargo_lock_sha256: port.map(|p| p.cargo_lock_sha256),
            key: ManifestKey { trust: keys.trust.mode(), fingerprint: keys.fingerprint.clone() },
            catalogues: report
                .catalogues
                .iter()
                .map(|c| ManifestCatalogue {
                    archive: c.archive.clone(),
                    sha256: c.archive_sha256.clone(),
                    inner: c.inner.clone(),
                    inner_sha256: c.inner_sha256.clone(),
                })
                .collect(),
            packages: records(report),
        })
    }
}

fn records(report: &Report) -> Vec<PackageRecord> {
    report
        .packages()
        .map(|p| PackageRecord {
            name: p.name.to_owned(),
            version: p.version.to_owned(),
            origin: p.origin.to_owned(),
            path: p.path.into(),
            size: p.size,
            sum: p.sum.to_owned(),
            sha256: p.sha256.unwrap_or_default().to_owned(),
        })
        .collect()
}

/// A digest of the repository that signing does not change: meta.conf, the inner
/// catalogue files, and the identity of every package file.
fn repo_fingerprint(fp: &mut Fingerprint, repo: &Utf8Path) -> Result<()> {
    fp.str("repo", repo.as_str());
    fp.file("meta.conf", &repo.join("meta.conf"))?;
    let meta = MetaConf::load(repo).unwrap_or_default();
    for kind in CATALOGUES {
        let (archive, inner) = meta.catalogue(kind);
        // Read as a stream: the catalogue of a whole ports tree is tens of megabytes.
        let mut digests = Vec::new();
        let read = pkgrepo::archive::scan(&repo.join(&archive), |entry, data| {
            if entry.name == inner {
                use sha2::Digest;
                let (mut hasher, mut buf) = (sha2::Sha256::new(), vec![0u8; 1 << 16]);
                loop {
                    match data.read(&mut buf)? {
                        0 => break,
                        n => hasher.update(&buf[..n]),
                    }
                }
                digests.push(crate::fingerprint::hex(&hasher.finalize()));
            }
            Ok(())
        });
        match read {
            Ok(_) => {
                for d in &digests {
                    fp.str(&archive, d);
                }
            }
            Err(_) => {
                fp.file(&archive, &repo.join(&archive))?;
            }
        }
    }
    let all = repo.join("All");
    if let Ok(entries) = all.read_dir_utf8() {
        let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_owned()).collect();
        names.sort();
        for name in names {
            fp.identity(&name, &all.join(&name))?;
        }
    }
    Ok(())
}

impl Stage for Sign {
    const NAME: StageName = StageName::Sign;
    type Outputs = SignOutputs;
    type Plan = SignPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let mut fp = Fingerprint::new();
        let cfg = cx.config();
        fp.json("signing", &cfg.signing).json("repository", &cfg.repository);
        fp.json("flags", &(&self.repo, &self.trust.pubkey, &self.trust.fingerprints, &self.trust.abi));
        fp.file("pubkey", &cx.resolve(&cfg.signing.pubkey))?;
        fp.tree("fingerprints", &cx.resolve(&cfg.signing.fingerprints))?;
        fp.identity("key", &cx.resolve(&cfg.signing.key))?;
        if let Ok((repo, _)) = self.locate(cx) {
            repo_fingerprint(&mut fp, &repo)?;
        }
        Ok(fp)
    }

    fn outputs_intact(&self, cx: &Cx, outputs: &SignOutputs) -> bool {
        cx.run.abs(&outputs.manifest).is_file()
            && outputs.catalogues.iter().all(|(archive, sha)| {
                std::fs::read(outputs.repo.join(archive)).map(|b| sha256_bytes(&b) == *sha).unwrap_or(false)
            })
            && outputs
                .produced
                .intact(|name| if name == outputs.manifest { cx.run.abs(name) } else { outputs.repo.join(name) })
    }

    fn plan(&self, cx: &Cx) -> Result<SignPlan> {
        let (repo, note) = self.locate(cx)?;
        let abi = self.trust.abi(cx.loaded);
        let mut steps = Plan::default();
        if let Some(note) = note {
            steps.note(note);
        }
        let keys = match self.keys(cx.loaded) {
            Ok(k) => k,
            Err(e) if cx.dry_run => {
                // A dry run on a machine without the release key still shows the plan.
                steps.note(format!("the trust anchors cannot be read here: {e:#}"));
                steps.check(format!(
                    "{repo}: meta.conf, both catalogues and their signatures, every package's size, sum and ABI {abi}"
                ));
                steps.note(format!(
                    "sign them if they are not signed by the release key ({})",
                    cx.config().sign.method_word()
                ));
                steps.push(Step::Write {
                    path: cx.stage_dir(StageName::Sign)?.join("manifest.json"),
                    what: "release manifest".into(),
                });
                return Ok(SignPlan { steps, repo, action: Action::Sign });
            }
            Err(e) => return Err(e),
        };
        for s in check_steps(&repo, &keys.trust, &abi) {
            steps.push(s);
        }
        // Reading the catalogues is cheap and side-effect free: say now whether the
        // repository will be signed.
        let action = if repo.is_dir() {
            let quick =
                verify::verify(&repo, &verify::Options { files: false, ..self.options(cx.loaded, &keys.trust, &abi) })?;
            if quick.ok() && quick.signed_by(&keys.fingerprint) {
                steps.note(format!(
                    "the catalogues are signed by the release key ({}); no signing needed",
                    keys.fingerprint
                ));
                Action::Keep
            } else {
                Action::Sign
            }
        } else if !cx.dry_run {
            bail!(
                failure!("the repository {repo} does not exist")
                    .help("run `cargo xtask bulk`, or name one with --repo DIR")
            );
        } else {
            Action::Sign
        };
        if action == Action::Sign {
            let mode = keys.trust.mode();
            // The key is checked as signing will read it (a dry run finds a key sign
            // would refuse); it is read and checked, never shown.
            if let Some(key) = self.key_used(cx) {
                let signer = key_signer(cx)?;
                steps.check(format!(
                    "the signing key {key}: mode 0600 or stricter, a {} key, the private half of {}",
                    signer.algorithm(),
                    cx.resolve(&cx.config().signing.pubkey)
                ));
            }
            match cx.config().sign.method {
                SignMethod::Native => {
                    let by = match self.signing_command(cx) {
                        Some(cmd) => format!("signing command `{cmd}`"),
                        None => format!("key {}", cx.resolve(&cx.config().signing.key)),
                    };
                    for archive in ["data.pkg", "packagesite.pkg"] {
                        steps.push(Step::Write {
                            path: repo.join(archive),
                            what: format!("re-signed with the {by}, {mode} layout; written beside, renamed"),
                        });
                    }
                }
                SignMethod::Pkg => steps.run(&self.pkg_repo_command(cx, &repo)?),
            }
            steps.check(format!("{repo}: verify again, as above"));
        }
        let stage = cx.stage_dir(StageName::Sign)?;
        steps.push(Step::Write { path: stage.join("manifest.json"), what: "release manifest".into() });
        if cx.config().sign.provenance {
            for (name, what) in [
                (crate::attest::SBOM_FILE, "SBOM, CycloneDX 1.6: the packages and the crates of Cargo.lock"),
                (
                    crate::attest::PROVENANCE_FILE,
                    "provenance: in-toto statement, SLSA v1, in a DSSE envelope signed with signing.key",
                ),
            ] {
                steps.push(Step::Write { path: stage.join(name), what: what.into() });
                steps.push(Step::Write {
                    path: repo.join(name),
                    what: "the same, published with the repository".into(),
                });
            }
        }
        Ok(SignPlan { steps, repo, action })
    }

    fn execute(&self, cx: &mut Cx, plan: SignPlan) -> Result<SignOutputs> {
        let repo = plan.repo;
        let keys = self.keys(cx.loaded)?;
        let abi = self.trust.abi(cx.loaded);
        let opts = self.options(cx.loaded, &keys.trust, &abi);
        cx.say(format!("verifying {repo} for {} clients ({})", keys.trust.mode(), keys.trust.describe()));
        let mut report = verify_with_progress(&repo, &opts, cx.ui)?;
        for p in &report.problems {
            cx.note(format!("first check: {p}"));
        }
        let needs_signing = !report.ok() || !report.signed_by(&keys.fingerprint);
        if !report.only_signature_problems() {
            return Err(failure(
                &repo,
                &report,
                &format!(
                    "the packages do not match the catalogue poudriere wrote; rebuild them ({}) rather than signing this",
                    cx.loaded.xtask("bulk")
                ),
                crate::failure::Class::Product,
            ));
        }
        let mut signed = false;
        if needs_signing {
            if plan.action == Action::Keep {
                cx.note("the catalogue changed since the plan was made");
            }
            let mode = keys.trust.mode();
            match cx.config().sign.method {
                SignMethod::Native => self.sign_native(cx, &repo, mode)?,
                SignMethod::Pkg => {
                    let cmd = self.pkg_repo_command(cx, &repo)?;
                    cx.say(format!("signing with {cmd}"));
                    let out = cmd.stream(&cx.log, cx.ui, &Default::default())?;
                    if !out.success() {
                        bail!("{}", cmd.failure(&out));
                    }
                }
            }
            signed = true;
            // Package files were not touched: reuse their digests; everything else is
            // checked again from scratch.
            // The first report is not needed again: not held through the second.
            let digests = std::mem::take(&mut report).into_digests();
            let known = |path: &str, _: &std::fs::Metadata| digests.get(path).cloned();
            report = verify::verify(&repo, &verify::Options { known: Some(&known), ..opts })?;
            if !report.ok() {
                return Err(failure(
                    &repo,
                    &report,
                    "signing did not give a catalogue that verifies; check signing.key, signing.pubkey and the trust settings",
                    crate::failure::Class::Infrastructure,
                ));
            }
            if !report.signed_by(&keys.fingerprint) {
                bail!(
                    failure!(
                        "after signing, {repo} still carries no signature by the release key ({})",
                        keys.fingerprint
                    )
                    .help("check that signing.command signs with the key signing.pubkey names")
                );
            }
        }
        cx.say(format!(
            "{repo}: {} ({}) verified; catalogue {} the release key {}",
            plural(report.packages().len(), "package"),
            crate::ui::bytes(report.bytes),
            if signed { "signed with" } else { "already signed by" },
            keys.fingerprint
        ));

        let manifest = self.manifest(cx, &report, &keys, &abi)?;
        let catalogues = report.catalogues.iter().map(|c| (c.archive.clone(), c.archive_sha256.clone())).collect();
        drop(report);
        let path = cx.stage_dir(StageName::Sign)?.join("manifest.json");
        let mut text = serde_json::to_vec_pretty(&manifest)?;
        text.push(b'\n');
        crate::fsx::write_atomic(&path, &text)?;
        drop(text);
        cx.say(format!("wrote the release manifest {}", cx.run.rel(&path)));
        let attested = if cx.config().sign.provenance {
            Some(attestations::write(cx, &repo, &manifest, &key_signer(cx)?)?)
        } else {
            cx.say("sign.provenance = false: no SBOM or provenance for this release");
            None
        };

        let fingerprints = keys.trust.fingerprints_dir().map(Utf8Path::to_owned);
        let mut produced = crate::identity::Produced::default();
        produced.add(cx.run.rel(&path), &path)?;
        for p in &manifest.packages {
            produced.add(p.path.clone(), &repo.join(&p.path))?;
        }
        Ok(SignOutputs {
            repo: repo.clone(),
            manifest: cx.run.rel(&path),
            trust: keys.trust.mode(),
            key_fingerprint: keys.fingerprint.clone(),
            packages: manifest.packages,
            pubkey: keys.pubkey.clone(),
            fingerprints,
            abi,
            catalogues,
            signed,
            build_name: manifest.build_name.clone(),
            sbom: attested.as_ref().map(|a| a.sbom.clone()),
            provenance: attested.map(|a| a.provenance),
            produced,
        })
    }
}
