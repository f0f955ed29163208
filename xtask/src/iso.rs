//! iso: install the release's packages into the ISO staging root with `pkg -r`, check
//! the root against the profile (production has no test agent), optionally enable the
//! services, and run the image build.
//!
//! pkg reads the release through a generated repos directory with the release's trust
//! settings, from the published URL or from a verified scratch copy of sign's repository
//! (never the canonical copy: pkg deletes a `file://` package whose size is wrong). The
//! catalogue is fetched by `pkg update` without `-r` (pkg 2.8.4 with `-r` looks for the
//! fingerprints under ROOT), into pkg's database inside ROOT; `pkg -r ROOT install` then
//! uses it. `pkg update` exits 0 even when it refuses a catalogue, so its words decide.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Iso;
use crate::config::{Loaded, Tool, TrustMode};
use crate::failure;
use crate::failure::{Class, Failure};
use crate::fingerprint::Fingerprint;
use crate::fsx;
use crate::proc::{CmdLine, StreamOpts};
use crate::publish::PublishOutputs;
use crate::settings;
use crate::sign::{SignOutputs, plural};
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};
use pkgrepo::trust::Trust;
use pkgrepo::verify;

/// Where pkg gets the packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsoSource {
    /// The published URL when publish ran in this run, else a scratch copy.
    Auto,
    /// The URL publish recorded (what clients get).
    Published,
    /// A verified copy of sign's repository in the run directory, as `file://`.
    Scratch,
}

/// What a profile requires and forbids under the prefix.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Files that must be installed (relative to iso.prefix).
    pub require: Vec<String>,
    /// Files that must not be installed.
    pub forbid: Vec<String>,
    /// Route kernel and daemon messages to the console (validation images), so the
    /// boot gate sees a process crash: ROOT/etc/syslog.d/ and ROOT/etc/rc.conf.d/syslogd
    /// (docs/reference/boot-gate.md, "The validation flavour's routing"). Without it,
    /// those two files are removed if a validation build left them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub console_syslog: bool,
}

const RUNTIME: [&str; 7] = [
    "bin/clawdie",
    "bin/colibri",
    "bin/colibri-daemon",
    "bin/colibri-mcp",
    "bin/colibri-tui",
    "etc/rc.d/colibri_daemon",
    "etc/rc.d/colibri_bridge",
];
const TEST_AGENT: &str = "bin/colibri-test-agent";

fn default_profiles() -> BTreeMap<String, Profile> {
    let runtime: Vec<String> = RUNTIME.iter().map(|s| s.to_string()).collect();
    let mut validation = runtime.clone();
    validation.push(TEST_AGENT.into());
    BTreeMap::from([
        ("production".into(), Profile { require: runtime, forbid: vec![TEST_AGENT.into()], console_syslog: false }),
        ("validation".into(), Profile { require: validation, forbid: Vec::new(), console_syslog: true }),
    ])
}

settings! {
    /// iso: install the release's packages into the ISO staging root with `pkg -r`, check
    /// the root against a profile, and build the image. ABI and OSVERSION come from
    /// `[repository]`, the trust settings from what sign verified.
    pub struct IsoConfig {
        /// The ISO staging root packages are installed into (the ISO build's mount point),
        /// relative to pipeline.toml.
        pub root: Utf8PathBuf = "target/iso/root".into(),
        /// Packages to install.
        pub packages: Vec<String> = vec!["colibri".into()],
        /// Profile the root is checked against (a key of `iso.profiles`); `--profile` overrides it.
        pub profile: String = "production".into(),
        /// Where pkg gets the packages: `auto` (the published URL when publish ran in this run,
        /// else `scratch`), `published`, or `scratch` (a verified copy of sign's repository).
        pub source: IsoSource = IsoSource::Auto,
        /// The installation prefix the profiles' paths are relative to.
        pub prefix: String = "/usr/local".into(),
        /// Each profile: files it requires and forbids (relative to `prefix`).
        pub profiles: BTreeMap<String, Profile> = default_profiles(),
        /// rc.d services enabled in ROOT/etc/rc.conf (`NAME_enable="YES"`); empty: rc.conf is left alone.
        pub enable_services: Vec<String> = Vec::new(),
        /// The image build command (argument vector), run after the checks with its output in the
        /// stage log; `{root}` and `{image}` in it are replaced. Empty: no image is built.
        pub build_command: Vec<String> = Vec::new(),
        /// Directory the build command runs in, relative to pipeline.toml.
        pub build_dir: Utf8PathBuf = ".".into(),
        /// The image the build command writes, relative to pipeline.toml; the build must
        /// create or change it.
        pub image: Utf8PathBuf = "target/iso/clawdie.iso".into(),
        /// Seconds the build command may take.
        pub build_timeout_secs: u64 = 3600,
        /// Seconds each pkg command may take.
        pub pkg_timeout_secs: u64 = 900,
    }
}

/// What `iso` records for later stages. (Contract: gate reads it; fields may be added,
/// not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsoOutputs {
    /// The ISO staging root the packages were installed into (absolute).
    pub root: camino::Utf8PathBuf,
    /// The profile it was checked against (`production` or `validation`).
    pub profile: String,
    /// The image the build command produced (absolute), if one is configured.
    pub image: Option<camino::Utf8PathBuf>,
    /// The repository URL pkg installed from (`https://...` or `file://` of the scratch copy).
    #[serde(default)]
    pub source: String,
    /// The packages installed.
    #[serde(default)]
    pub packages: Vec<String>,
    /// The identity of the image and of each file the profile requires, when iso ended,
    /// by absolute path: one replaced or rewritten since makes iso run again.
    #[serde(default)]
    pub produced: crate::identity::Produced,
}

/// The iso stage's plan.
pub struct IsoPlan {
    steps: Plan,
    root: Utf8PathBuf,
    profile: String,
    source: Source,
    trust: TrustMode,
    trust_path: Utf8PathBuf,
    repos_conf: String,
    update: CmdLine,
    install: CmdLine,
    build: Option<CmdLine>,
    image: Utf8PathBuf,
}

impl StagePlan for IsoPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

/// Where the packages come from.
#[derive(Debug, Clone)]
enum Source {
    Url(String),
    /// Copy this verified repository here, then use it as `file://`.
    Scratch {
        from: Box<SignOutputs>,
        to: Utf8PathBuf,
    },
}

impl Source {
    fn url(&self) -> String {
        match self {
            Source::Url(u) => u.clone(),
            Source::Scratch { to, .. } => format!("file://{to}"),
        }
    }
}

/// Checks `[iso]` when pipeline.toml is loaded: settings that can never work are refused
/// there, with their location, not when iso plans.
pub fn validate(loaded: &Loaded) -> Result<()> {
    let cfg = &loaded.config.iso;
    if !cfg.profiles.contains_key(&cfg.profile) {
        let names: Vec<&str> = cfg.profiles.keys().map(String::as_str).collect();
        return Err(loaded
            .failure_at("iso.profile", format!("there is no profile `{}`", cfg.profile))
            .help(format!(
                "the profiles are: {} (iso.profiles)",
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ))
            .into());
    }
    if cfg.packages.is_empty() {
        return Err(loaded.error_at("iso.packages", "no packages to install"));
    }
    if cfg.pkg_timeout_secs == 0 {
        return Err(loaded.error_at("iso.pkg_timeout_secs", "a timeout of 0 seconds would stop every pkg command"));
    }
    if cfg.build_timeout_secs == 0 && !cfg.build_command.is_empty() {
        return Err(loaded.error_at("iso.build_timeout_secs", "a timeout of 0 seconds would stop the image build"));
    }
    Ok(())
}

impl Iso {
    fn profile_name(&self, loaded: &Loaded) -> String {
        self.profile.clone().unwrap_or_else(|| loaded.config.iso.profile.clone())
    }

    fn profile(&self, loaded: &Loaded) -> Result<(String, Profile)> {
        let name = self.profile_name(loaded);
        match loaded.config.iso.profiles.get(&name) {
            Some(p) => Ok((name, p.clone())),
            None => {
                let names: Vec<&str> = loaded.config.iso.profiles.keys().map(String::as_str).collect();
                let msg = format!("there is no profile `{name}`");
                let failure =
                    if self.profile.is_some() { Failure::new(msg) } else { loaded.failure_at("iso.profile", msg) };
                Err(failure
                    .help(format!(
                        "the profiles are: {} (iso.profiles)",
                        if names.is_empty() { "none".into() } else { names.join(", ") }
                    ))
                    .into())
            }
        }
    }

    /// `pkg` with the options every call shares.
    fn pkg(cx: &Cx, root: Option<&Utf8Path>, dbdir: &Utf8Path, repos: &Utf8Path, cache: &Utf8Path) -> CmdLine {
        let repo = &cx.config().repository;
        let mut cmd = CmdLine::tool(&cx.config().tools, Tool::pkg);
        if let Some(root) = root {
            cmd = cmd.args(["-r", root.as_str()]);
        }
        cmd.args(["-o", &format!("ABI={}", repo.abi)])
            .args(["-o", &format!("OSVERSION={}", repo.osversion)])
            .args(["-o", &format!("REPOS_DIR={repos}")])
            .args(["-o", &format!("PKG_DBDIR={dbdir}")])
            .args(["-o", &format!("PKG_CACHEDIR={cache}")])
            .env("ASSUME_ALWAYS_YES", "yes")
    }

    fn source(&self, cx: &Cx, stage: &Utf8Path, steps: &mut Plan) -> Result<(Source, Option<SignOutputs>)> {
        let sign: Option<SignOutputs> =
            if cx.has_output(StageName::Sign) { Some(cx.output(StageName::Sign)?) } else { None };
        let published = cx.has_output(StageName::Publish);
        let mode = cx.config().iso.source;
        let use_url = match mode {
            IsoSource::Published => true,
            IsoSource::Scratch => false,
            IsoSource::Auto => published,
        };
        if use_url {
            if !published && cx.dry_run {
                let url = format!(
                    "{}/{}/latest",
                    cx.config().repository.url.trim_end_matches('/'),
                    cx.config().repository.abi
                );
                steps.note(format!("publish has not run in this run; installing from the URL it would publish: {url}"));
                return Ok((Source::Url(url), sign));
            }
            let publish: PublishOutputs = cx.output(StageName::Publish)?;
            return Ok((Source::Url(publish.url), sign));
        }
        let to = stage.join("repo");
        match sign {
            Some(s) => Ok((Source::Scratch { from: Box::new(s.clone()), to }, Some(s))),
            None if cx.dry_run => {
                steps.note(
                    "sign has not run in this run; installing from a verified scratch copy of the repository it signs",
                );
                let placeholder = SignOutputs {
                    repo: Utf8PathBuf::from("SIGNED-REPOSITORY"),
                    manifest: Utf8PathBuf::new(),
                    trust: cx.config().signing.trust,
                    key_fingerprint: String::new(),
                    packages: Vec::new(),
                    pubkey: None,
                    fingerprints: None,
                    abi: cx.config().repository.abi.clone(),
                    catalogues: BTreeMap::new(),
                    signed: false,
                    build_name: None,
                    sbom: None,
                    provenance: None,
                    produced: Default::default(),
                };
                Ok((Source::Scratch { from: Box::new(placeholder), to }, None))
            }
            None => Err(cx
                .output::<SignOutputs>(StageName::Sign)
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("sign has not run"))),
        }
    }

    /// The client repo conf pkg reads: the release's URL and trust settings.
    fn repos_conf(cx: &Cx, url: &str, mode: TrustMode, trust_path: &Utf8Path) -> String {
        let name = &cx.config().repository.name;
        let trust = match mode {
            TrustMode::Pubkey => format!("  signature_type: \"pubkey\",\n  pubkey: \"{trust_path}\",\n"),
            TrustMode::Fingerprints => {
                format!("  signature_type: \"fingerprints\",\n  fingerprints: \"{trust_path}\",\n")
            }
        };
        format!(
            "# Written by `cargo xtask iso`: the release repository and nothing else.\n{name}: {{\n  url: \"{url}\",\n  enabled: yes,\n{trust}  priority: 10\n}}\n"
        )
    }
}

impl Stage for Iso {
    const NAME: StageName = StageName::Iso;
    type Outputs = IsoOutputs;
    type Plan = IsoPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let cfg = cx.config();
        let mut fp = Fingerprint::new();
        fp.json("repository", &cfg.repository)
            .json("signing", &cfg.signing)
            .str("profile", &self.profile_name(cx.loaded));
        Ok(fp)
    }

    fn outputs_intact(&self, cx: &Cx, outputs: &IsoOutputs) -> bool {
        let prefix = cx.config().iso.prefix.trim_start_matches('/');
        let profile = cx.config().iso.profiles.get(&outputs.profile).cloned().unwrap_or_default();
        outputs.image.as_ref().is_none_or(|i| i.is_file())
            && profile.require.iter().all(|f| outputs.root.join(prefix).join(f).is_file())
            && outputs.produced.intact(|path| path.to_owned())
    }

    fn plan(&self, cx: &Cx) -> Result<IsoPlan> {
        let cfg = &cx.config().iso;
        let (profile, _) = self.profile(cx.loaded)?;
        let root = cx.resolve(&cfg.root);
        let stage = cx.stage_dir(StageName::Iso)?;
        let mut steps = Plan::default();
        let (source, sign) = self.source(cx, &stage, &mut steps)?;
        let signing = &cx.config().signing;
        let mode = sign.as_ref().map_or(signing.trust, |s| s.trust);
        let trust_path = match mode {
            TrustMode::Pubkey => {
                sign.as_ref().and_then(|s| s.pubkey.clone()).unwrap_or_else(|| cx.resolve(&signing.pubkey))
            }
            TrustMode::Fingerprints => {
                sign.as_ref().and_then(|s| s.fingerprints.clone()).unwrap_or_else(|| cx.resolve(&signing.fingerprints))
            }
        };
        if let Source::Scratch { from, to } = &source {
            steps.push(Step::Copy { from: from.repo.clone(), to: to.clone() });
            steps.check(format!("{to}: the copy verifies ({}), as sign does", trust_path));
        }
        let repos = stage.join("repos");
        let dbdir = root.join("var/db/pkg");
        let cache = stage.join("cache");
        let repos_conf = Self::repos_conf(cx, &source.url(), mode, &trust_path);
        steps.push(Step::Write {
            path: repos.join(format!("{}.conf", cx.config().repository.name)),
            what: format!("repo conf: {}, {mode} trust", source.url()),
        });
        steps.push(Step::Mkdir { path: dbdir.clone() });
        let update = Self::pkg(cx, None, &dbdir, &repos, &cache).args(["update", "-f"]);
        let install = Self::pkg(cx, Some(&root), &dbdir, &repos, &cache)
            .args(["-o", "REPO_AUTOUPDATE=false", "install", "-y"])
            .args(cfg.packages.iter().cloned());
        steps.run(&update);
        steps.check(format!(
            "pkg accepted the catalogue (`{} repository update completed`)",
            cx.config().repository.name
        ));
        steps.run(&install);
        let prefix = cfg.prefix.trim_start_matches('/');
        steps.check(format!("{}: the {profile} profile (iso.profiles.{profile})", root.join(prefix)));
        console_syslog_plan(&root, cx.config().iso.profiles.get(&profile), &mut steps);
        if !cfg.enable_services.is_empty() {
            steps.push(Step::Write {
                path: root.join("etc/rc.conf"),
                what: cfg.enable_services.iter().map(|s| format!("{s}_enable=\"YES\"")).collect::<Vec<_>>().join(" "),
            });
        }
        let image = cx.resolve(&cfg.image);
        let build = match cfg.build_command.split_first() {
            Some((program, args)) => {
                let subst = |s: &str| s.replace("{root}", root.as_str()).replace("{image}", image.as_str());
                let cmd =
                    CmdLine::new(subst(program)).args(args.iter().map(|a| subst(a))).cwd(cx.resolve(&cfg.build_dir));
                steps.run(&cmd);
                steps.check(format!("{image} was written by the build"));
                Some(cmd)
            }
            None => {
                steps.note("iso.build_command is empty: no image is built");
                None
            }
        };
        Ok(IsoPlan { steps, root, profile, source, trust: mode, trust_path, repos_conf, update, install, build, image })
    }

    fn execute(&self, cx: &mut Cx, plan: IsoPlan) -> Result<IsoOutputs> {
        let cfg = &cx.config().iso;
        let stage = cx.stage_dir(StageName::Iso)?;
        if let Source::Scratch { from, to } = &plan.source {
            scratch_copy(cx, from, to, plan.trust, &plan.trust_path)?;
        }
        let repos = stage.join("repos");
        let _ = fs::remove_dir_all(&repos);
        fsx::write_atomic(&repos.join(format!("{}.conf", cx.config().repository.name)), plan.repos_conf.as_bytes())?;
        // Every verdict from fresh client state (pkg-client.md §5): an earlier good
        // catalogue survives a refused update and would be installed from, and a cached
        // package of the right size is installed without its sum checked (§7). So the
        // package cache and the repositories' catalogues (PKG_DBDIR/repos/, pkg 2.8.4's
        // libpkg/repo/binary/common.c) go before `pkg update`; local.sqlite, the
        // database of what is installed in ROOT, stays.
        let _ = fs::remove_dir_all(stage.join("cache"));
        let dbdir = plan.root.join("var/db/pkg");
        match fs::remove_dir_all(dbdir.join("repos")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove pkg's earlier catalogues in {dbdir}/repos"));
            }
            _ => {}
        }
        fs::create_dir_all(&dbdir).with_context(|| format!("cannot create {dbdir}"))?;

        let opts = StreamOpts { timeout: Some(Duration::from_secs(cfg.pkg_timeout_secs)), ..Default::default() };
        let url = plan.source.url();
        cx.say(format!("pkg update from {url}"));
        let out = plan.update.stream(&cx.log, cx.ui, &opts)?;
        judge_update(cx, &plan.update, &out, &url)?;
        cx.say(format!("pkg -r {} install {}", plan.root, cfg.packages.join(" ")));
        let out = plan.install.stream(&cx.log, cx.ui, &opts)?;
        if !out.success() {
            bail!(
                Failure::new(plan.install.failure(&out))
                    .help(format!("the pkg output above says why; the repository was {url}"))
            );
        }

        check_profile(cx, &plan.root, &plan.profile)?;
        let routed = cfg.profiles.get(&plan.profile).is_some_and(|p| p.console_syslog);
        if console_syslog(&plan.root, routed)? {
            cx.say(format!("kernel and daemon messages go to the console ({})", plan.root.join(SYSLOG_CONSOLE)));
        }
        if !cfg.enable_services.is_empty() {
            enable_services(&plan.root, &cfg.enable_services)?;
            cx.say(format!("enabled {} in {}", cfg.enable_services.join(", "), plan.root.join("etc/rc.conf")));
        }

        let image = match &plan.build {
            Some(cmd) => Some(build_image(cx, cmd, &plan.image)?),
            None => None,
        };
        let mut produced = crate::identity::Produced::default();
        let prefix = plan.root.join(cfg.prefix.trim_start_matches('/'));
        let required = cfg.profiles.get(&plan.profile).map(|p| p.require.clone()).unwrap_or_default();
        for path in image.iter().cloned().chain(required.iter().map(|f| prefix.join(f))) {
            produced.add(path.clone(), &path)?;
        }
        Ok(IsoOutputs {
            root: plan.root.clone(),
            profile: plan.profile.clone(),
            image,
            source: url,
            packages: cfg.packages.clone(),
            produced,
        })
    }
}

/// A fresh copy of the signed repository (only the files the release consists of),
/// verified before pkg is pointed at it.
fn scratch_copy(cx: &Cx, from: &SignOutputs, to: &Utf8Path, mode: TrustMode, trust_path: &Utf8Path) -> Result<()> {
    let staging = fsx::temp_beside(to);
    let mut files: Vec<String> = vec!["meta.conf".into()];
    if from.repo.join("meta").exists() {
        files.push("meta".into());
    }
    files.extend(from.catalogues.keys().cloned());
    files.extend(from.packages.iter().map(|p| p.path.to_string()));
    let copied = (|| -> Result<()> {
        for rel in &files {
            let (src, dst) = (from.repo.join(rel), staging.join(rel));
            if let Some(dir) = dst.parent() {
                fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
            }
            fs::copy(&src, &dst).with_context(|| format!("cannot copy {src} to {dst}"))?;
        }
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    fsx::replace_dir(&staging, to)?;
    let trust = match mode {
        TrustMode::Pubkey => Trust::pubkey(trust_path)?,
        TrustMode::Fingerprints => Trust::fingerprints(trust_path)?,
    };
    let abi = &cx.config().repository.abi;
    let opts = verify::Options { stop: &|| Ok(crate::proc::check_interrupted()?), ..verify::Options::new(&trust, abi) };
    let report = verify::verify(to, &opts)?;
    if !report.ok() {
        let lines: Vec<String> = report.problems.iter().map(|p| format!("  {p}")).collect();
        bail!(
            failure!("the scratch copy {to} of {} failed verification:\n{}", from.repo, lines.join("\n"))
                .help(format!("the signed repository changed after sign; sign it again: {}", cx.loaded.xtask("sign")))
        );
    }
    cx.say(format!("copied and verified {} in {to}", plural(report.packages().len(), "package")));
    Ok(())
}

/// What pkg 2.8.4 says when it refuses a catalogue, whatever its exit status (it exits
/// 0 after most refusals): docs/reference/pkg-client.md §4, which names the rows of §3
/// each comes from (and pkg's source file: libpkg/pkg_repo.c, libpkg/pkgsign_ossl.c,
/// libpkg/pkgsign_ecc.c, libpkg/utils.c, libpkg/repo/binary/update.c, src/update.c).
pub const REFUSALS: [&str; 34] = [
    "signature verification failure",
    "Invalid signature, removing repository.",
    "No signature found",
    "signer not found",
    "No trusted public keys found",
    "At least one of the certificates has been revoked",
    "No trusted certificate has been used to sign the repository",
    "Error opening the trusted directory",
    "Error loading trusted certificates",
    "No trusted certificates",
    "cannot load fingerprints from",
    "too many repository signature entries",
    "invalid repository signature entry size",
    "duplicate repository archive entry",
    "repository archive entry is too large",
    "No PUBKEY defined",
    "Invalid signature_type",
    "contains packages with wrong ABI",
    "contains packages for wrong OS version",
    "wrong architecture",
    // is_valid_os_version() (libpkg/utils.c): packages for a newer FreeBSD than
    // repository.osversion; answered "yes" by ASSUME_ALWAYS_YES, so judged here.
    "Newer FreeBSD version",
    "Unable to update repository",
    "Error updating repositories!",
    "failed to parse key",
    "failed to decode signature",
    "failed to import key",
    "failed to verify signature",
    "ecc signature verification failure",
    "error reading public key",
    "No key with name",
    "No signature with name",
    "cannot be opened",
    "No active remote repositories configured",
    "fetch exceeds configured size limit",
];

/// The refusals of [`REFUSALS`] pkg also prints when it could not reach or read the
/// repository at all (src/update.c, libpkg/repo/binary/update.c): alone, they blame no
/// catalogue.
const GENERIC_REFUSALS: [&str; 5] = [
    "Unable to update repository",
    "Error updating repositories!",
    "cannot be opened",
    "No active remote repositories configured",
    "fetch exceeds configured size limit",
];

/// Judges `pkg update` from its words (pkg-client.md §4): any refusal fails it, and
/// acceptance needs `NAME repository update completed.` as well; the exit status alone
/// is never trusted.
fn judge_update(cx: &Cx, cmd: &CmdLine, out: &crate::proc::Output, url: &str) -> Result<()> {
    let text = String::from_utf8_lossy(&out.stdout);
    let name = &cx.config().repository.name;
    if let Some(refused) = refusal(&text) {
        // Refusing the release's own catalogue (its signature, its ABI, its OS version)
        // is the product failing its clients; a repository pkg could not reach at all
        // (only pkg's generic words) is the machinery's.
        let class = if refused.iter().any(|l| !GENERIC_REFUSALS.iter().any(|g| l.contains(g))) {
            Class::Product
        } else {
            Class::Infrastructure
        };
        bail!(
            failure!("pkg refused the repository {url}:\n  {}\n`{cmd}` {}", refused.join("\n  "), out.describe_status())
                .help(format!(
                    "the repository's signature, trust settings, ABI or OS version do not match what the release trusts (run `{}` on it), or its packages are for a newer FreeBSD than repository.osversion",
                    cx.loaded.xtask("sign --verify-only")
                ))
                .class(class)
        );
    }
    if !out.success() {
        bail!(
            failure!("pkg refused the repository {url}:\n  (no reason given)\n`{cmd}` {}", out.describe_status())
                .help(format!("its output is in the stage log; the repository was {url}"))
        );
    }
    if !text.contains(&format!("{name} repository update completed")) {
        bail!(
            failure!("`{cmd}` did not say that the {name} repository was updated")
                .help(format!("its output is in the stage log; the repository was {url}"))
        );
    }
    Ok(())
}

/// The lines of pkg's output that refuse the catalogue, if any. A public key pkg
/// prints whole (rsa's failure message starts with the PEM) is left out.
pub fn refusal(text: &str) -> Option<Vec<&str>> {
    let lines: Vec<&str> =
        text.lines().filter(|l| REFUSALS.iter().any(|r| l.contains(r)) && !l.contains("BEGIN PUBLIC KEY")).collect();
    (!lines.is_empty()).then_some(lines)
}

/// Checks the installed root against the profile; every missing or forbidden file is named.
fn check_profile(cx: &Cx, root: &Utf8Path, name: &str) -> Result<()> {
    let cfg = &cx.config().iso;
    let profile = cfg.profiles.get(name).cloned().unwrap_or_default();
    let prefix = root.join(cfg.prefix.trim_start_matches('/'));
    let mut problems = Vec::new();
    for f in &profile.require {
        let path = prefix.join(f);
        if !path.is_file() {
            problems.push(format!("{path}: required by the {name} profile, but not installed"));
        }
    }
    for f in &profile.forbid {
        let path = prefix.join(f);
        if fs::symlink_metadata(&path).is_ok() {
            problems.push(format!("{path}: forbidden in the {name} profile, but installed"));
        }
    }
    if !problems.is_empty() {
        bail!(
            failure!("{root} does not match the {name} profile:\n  {}", problems.join("\n  "))
                .help(
                    "install the build made for this profile (the validation build carries colibri-test-agent; production must not), or choose the profile with --profile"
                )
                .product()
        );
    }
    cx.say(format!(
        "{root} matches the {name} profile ({} required, {} forbidden)",
        profile.require.len(),
        profile.forbid.len()
    ));
    Ok(())
}

/// The validation flavour's syslogd routing, in the root (usr.sbin/syslogd/syslogd.c:
/// the stock syslog.conf includes /etc/syslog.d/*.conf; a selector is that priority or
/// worse). kern.info carries the kernel's process-crash line (sigexit, LOG_INFO),
/// daemon.* what daemons log; the stock file sends neither to the console.
const SYSLOG_CONSOLE: &str = "etc/syslog.d/mother-build-console.conf";
const SYSLOG_CONSOLE_TEXT: &str = "# Written by `cargo xtask iso` for a validation image: kernel and daemon messages on the\n\
# console, where the boot gate reads them. Production images do not have this file.\n\
kern.info\t\t\t\t\t/dev/console\n\
daemon.*\t\t\t\t\t/dev/console\n";
/// syslogd's flags for it (libexec/rc/rc.subr `load_rc_config` reads
/// /etc/rc.conf.d/NAME after rc.conf): `-cc` so identical lines are not folded into
/// "last message repeated N times" on the console (`logmsg()`); `-s` as the default.
const SYSLOGD_FLAGS: &str = "etc/rc.conf.d/syslogd";
const SYSLOGD_FLAGS_TEXT: &str = "# Written by `cargo xtask iso` for a validation image (see /etc/syslog.d/mother-build-console.conf).\n\
syslogd_flags=\"-s -cc\"\n";

fn console_syslog_plan(root: &Utf8Path, profile: Option<&Profile>, steps: &mut Plan) {
    if profile.is_some_and(|p| p.console_syslog) {
        steps.push(Step::Write {
            path: root.join(SYSLOG_CONSOLE),
            what: "kern.info and daemon.* to /dev/console".into(),
        });
        steps.push(Step::Write { path: root.join(SYSLOGD_FLAGS), what: "syslogd_flags=\"-s -cc\"".into() });
    } else {
        for path in [SYSLOG_CONSOLE, SYSLOGD_FLAGS].map(|f| root.join(f)).into_iter().filter(|p| p.exists()) {
            steps.push(Step::Remove { path });
        }
    }
}

/// Writes the console routing into the root (`routed`), or removes what a validation
/// build left there. Returns whether it is in place. A file of that name that this
/// command did not write is refused, never replaced.
fn console_syslog(root: &Utf8Path, routed: bool) -> Result<bool> {
    let ours = |text: &str| text.starts_with("# Written by `cargo xtask iso`");
    for (file, text) in [(SYSLOG_CONSOLE, SYSLOG_CONSOLE_TEXT), (SYSLOGD_FLAGS, SYSLOGD_FLAGS_TEXT)] {
        let path = root.join(file);
        let existing = fs::read_to_string(&path).ok();
        if existing.as_deref().is_some_and(|t| !ours(t)) {
            bail!(
                failure!("{path} exists and was not written by `cargo xtask iso`; it is left alone")
                    .help("remove it from the image, or merge its settings by hand")
            );
        }
        if routed {
            if existing.as_deref() != Some(text) {
                fsx::write_atomic(&path, text.as_bytes())?;
            }
        } else if existing.is_some() {
            fs::remove_file(&path).with_context(|| format!("cannot remove {path}"))?;
        }
    }
    Ok(routed)
}

/// Sets `NAME_enable="YES"` for each service in ROOT/etc/rc.conf.
fn enable_services(root: &Utf8Path, services: &[String]) -> Result<()> {
    let path = root.join("etc/rc.conf");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for s in services {
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("`{s}` is not an rc.d service name (iso.enable_services)");
        }
        let key = format!("{s}_enable=");
        let line = format!("{s}_enable=\"YES\"");
        match lines.iter_mut().find(|l| l.trim_start().starts_with(&key)) {
            Some(l) => *l = line,
            None => lines.push(line),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    fsx::write_atomic(&path, out.as_bytes())
}

/// A file's identity: what changes when anything writes it.
fn identity(path: &Utf8Path) -> Option<crate::identity::Identity> {
    crate::identity::Identity::of_path(path).ok()
}

/// Runs the image build and checks that it wrote the image.
fn build_image(cx: &Cx, cmd: &CmdLine, image: &Utf8Path) -> Result<Utf8PathBuf> {
    let cfg = &cx.config().iso;
    let before = identity(image);
    cx.say(format!("building the image: {cmd}"));
    let opts = StreamOpts { timeout: Some(Duration::from_secs(cfg.build_timeout_secs)), ..Default::default() };
    let out = cmd.stream(&cx.log, cx.ui, &opts)?;
    if !out.success() {
        bail!("the image build failed: {}", cmd.failure(&out));
    }
    let after = identity(image);
    match (after, before) {
        (None, _) => {
            bail!(
                failure!("the image build succeeded but did not write {image}")
                    .help("set iso.image to the file it produces")
            )
        }
        (Some(a), Some(b)) if a == b => bail!(
            failure!("{image} is unchanged by this build: the build command did not write it")
                .help("set iso.image to the file it produces")
        ),
        _ => {}
    }
    let size = fs::metadata(image).map(|m| m.len()).unwrap_or(0);
    cx.say(format!("image {image} ({})", crate::ui::bytes(size)));
    Ok(image.to_owned())
}

impl Iso {
    /// `cargo xtask iso`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}
