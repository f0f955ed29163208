//! makesum: fetch and verify every distfile of the staged port into the distfiles
//! directory, and write its distinfo exactly as `make makesum` would.
//!
//! The distfile list comes from the port's Makefile and Makefile.crates
//! ([`distfiles`]); each file is had from the distfiles directory, cargo's registry
//! cache, its URL, or (for the port's own source, when pipeline.toml says so) made from
//! the checkout ([`fetch`]); crates are held to their Cargo.lock checksum before they
//! are accepted; distinfo follows makesum's format and TIMESTAMP rule ([`distinfo`]).
//! `makesum.method = "ports"` runs the framework's own `make makesum` instead.

mod distfiles;
mod distinfo;
mod fetch;

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Makesum;
use crate::config::{Loaded, Tool};
use crate::failure;
use crate::failure::{Failure, ResultExt};
use crate::fingerprint::{Fingerprint, sha256_bytes};
use crate::port::PortOutputs;
use crate::proc::{CmdLine, StreamOpts};
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};
use distfiles::{Kind, PortDistfiles, Site};
use fetch::{Archive, Expect, Fetcher, From, Job, Source};

/// How distinfo is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Computed here, on any host.
    #[default]
    Native,
    /// The ports framework's own `make makesum` in the staged port (FreeBSD only).
    Ports,
}

settings! {
    /// makesum: fetch and verify every distfile of the staged port into the distfiles
    /// directory (`poudriere.distfiles`, laid out as the ports tree lays it out:
    /// `rust/crates/NAME-VERSION.crate`, the port's source at the top) and write its
    /// distinfo. Crates are checked against their Cargo.lock checksum before they are
    /// accepted; a file that fails is moved to `DISTDIR/.quarantine/`. For the staged
    /// port that is the checkout's Cargo.lock; with `--port DIR` it is `--lock PATH`,
    /// else `DIR/Cargo.lock`, else the SHA256 lines of `DIR/distinfo`, and a crate none
    /// of them pins is refused.
    pub struct MakesumConfig {
        /// `native` (computed here, on any host) or `ports` (runs the framework's
        /// `make -C PORT makesum DISTDIR=...` in the staged port; needs a FreeBSD host).
        pub method: Method = Method::Native,
        /// Use only the distfiles directory, cargo's cache and the checkout; never the
        /// network (as `--offline`).
        pub offline: bool = false,
        /// Make the port's own source archive from the colibri checkout (`git archive` of
        /// the release tag, then `gzip -n`) instead of downloading it. The archive's top
        /// directory is where the port's WRKSRC points below WRKDIR: `PROJ-VERSION/` for
        /// USE_GITHUB (byte for byte GitHub's tag tarball), for plain MASTER_SITES the
        /// port's WRKSRC (`colibri/` for the Forgejo archive), by default `${DISTNAME}/`.
        pub source_from_checkout: bool = false,
        /// Download URL of a crate; `{name}` and `{version}` are replaced.
        pub crate_url: String = "https://crates.io/api/v1/crates/{name}/{version}/download".into(),
        /// Download URL of a GitHub tarball (a USE_GITHUB port's source, git crates);
        /// `{account}`, `{project}` and `{tag}` are replaced.
        pub github_url: String = "https://codeload.github.com/{account}/{project}/tar.gz/{tag}".into(),
        /// Downloads at a time.
        pub jobs: usize = 8,
        /// Further tries of a download that failed in a way that may pass (connection
        /// refused or reset, a cut-off body, HTTP 5xx, 408, 429).
        pub retries: u32 = 3,
        /// Wait before the first retry, in milliseconds; doubled for each further one.
        pub retry_delay_ms: u64 = 1000,
        /// Seconds to wait for a connection, and for each read of a download.
        pub timeout_secs: u64 = 60,
        /// PEM file of the certificate authorities HTTPS downloads trust. Empty: the file
        /// SSL_CERT_FILE names when it is set (as curl and OpenSSL do), else Mozilla's
        /// roots built into the program.
        pub ca_file: Utf8PathBuf = Utf8PathBuf::new(),
    }
}

/// One distfile, as distinfo lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distfile {
    /// Path relative to the distfiles directory (`rust/crates/NAME-VERSION.crate`).
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What `makesum` records for later stages. (Contract: bulk reads it; fields may be
/// added, not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MakesumOutputs {
    /// The distinfo written (in the staged port).
    pub distinfo: camino::Utf8PathBuf,
    /// The distfiles directory (poudriere's DISTFILES_CACHE).
    pub distdir: camino::Utf8PathBuf,
    /// Every distfile, in distinfo order.
    pub distfiles: Vec<Distfile>,
    /// SHA-256 of the distinfo file as left by this stage (to notice it being replaced).
    #[serde(default)]
    pub distinfo_sha256: String,
    /// How it was made.
    #[serde(default)]
    pub method: Method,
    /// Each distfile's identity when makesum ended, by its name in `distdir`: a file
    /// overwritten since (even at the same size) makes makesum run again.
    #[serde(default)]
    pub produced: crate::fingerprint::Produced,
}

/// The file in makesum's stage directory that holds [`Obtained`].
pub const OBTAINED: &str = "obtained.json";

/// How many distfiles makesum found in place and how many it fetched, by source:
/// `STAGE_DIR/obtained.json`, for the run's report. (Not an output: later stages'
/// fingerprints cover makesum's outputs, and where a file came from changes nothing.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obtained {
    /// Already in the distfiles directory (verified again).
    pub in_place: usize,
    /// Copied from cargo's cache.
    pub cache: usize,
    pub downloaded: usize,
    /// The source archive made from the checkout.
    pub checkout: usize,
}

/// makesum's plan: the steps `--dry-run` prints, and what execute needs.
pub struct MakesumPlan {
    steps: Plan,
    target: Target,
    work: Work,
}

impl StagePlan for MakesumPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

enum Work {
    Native(Vec<Job>),
    Ports(CmdLine),
}

/// The port and directories one invocation works on.
struct Target {
    /// The port directory (absolute).
    port_dir: Utf8PathBuf,
    /// The distinfo written: the port's, or (dry run before `port`) where the staged
    /// port's will be.
    distinfo: Utf8PathBuf,
    /// The distfiles directory (absolute).
    distdir: Utf8PathBuf,
    /// The Cargo.lock crates are held to, and the SHA-256 `port` recorded for it.
    lock: Option<(Utf8PathBuf, Option<String>)>,
    /// The checkout and the reference to archive (None: the port's tag).
    checkout: Option<(Utf8PathBuf, Option<String>)>,
    notes: Vec<String>,
}

impl Makesum {
    fn offline(&self, cx: &Cx) -> bool {
        self.offline || cx.config().makesum.offline
    }

    /// Where this invocation works: `--port` and `--distdir` when given, else the port
    /// `port` staged in this run and `poudriere.distfiles`. A dry run without a `port`
    /// run plans from the checkout's copy of the port.
    fn target(&self, cx: &Cx) -> Result<Target> {
        let cfg = cx.config();
        let distdir = match &self.distdir {
            Some(d) => crate::config::absolute(d)?,
            None => cx.resolve(&cfg.poudriere.distfiles),
        };
        if let Some(port) = &self.port {
            let port_dir = crate::config::absolute(port)?;
            let lock = match &self.lock {
                Some(l) => Some(crate::config::absolute(l)?),
                None => Some(port_dir.join("Cargo.lock")).filter(|l| l.is_file()),
            };
            let mut notes = Vec::new();
            if cfg.makesum.source_from_checkout {
                notes.push(
                    "makesum.source_from_checkout applies to the staged port (it needs the checkout `port` recorded); with --port the source is fetched".into(),
                );
            }
            return Ok(Target {
                distinfo: port_dir.join("distinfo"),
                port_dir,
                distdir,
                lock: lock.map(|l| (l, None)),
                checkout: None,
                notes,
            });
        }
        match cx.output::<PortOutputs>(StageName::Port) {
            Ok(port) => {
                let reference = if port.dirty { port.commit.clone() } else { port.tag.clone() };
                let port_dir = cx.resolve(&port.port_dir);
                let checkout = cx.resolve(&port.checkout);
                if !port_dir.join("Makefile").is_file() {
                    bail!(
                        failure!("the port `port` staged at {port_dir} is gone")
                            .help(format!("stage it again: {}", cx.loaded.xtask("port")))
                    );
                }
                Ok(Target {
                    distinfo: port_dir.join("distinfo"),
                    port_dir,
                    distdir,
                    lock: Some((checkout.join(&cfg.port.lock), Some(port.cargo_lock_sha256.clone()))),
                    checkout: Some((checkout, Some(reference))),
                    notes: Vec::new(),
                })
            }
            Err(e) if cx.dry_run => {
                let checkout = lexical(&cx.resolve(&cfg.port.colibri));
                let staged = lexical(&cx.resolve(&cfg.port.overlay).join(&cfg.port.origin));
                let port_dir =
                    if staged.join("Makefile").is_file() { staged.clone() } else { checkout.join(&cfg.port.source) };
                let first = crate::ui::render_message(&e).lines().next().unwrap_or_default().to_owned();
                Ok(Target {
                    distinfo: staged.join("distinfo"),
                    port_dir: port_dir.clone(),
                    distdir,
                    lock: Some((checkout.join(&cfg.port.lock), None)),
                    checkout: Some((checkout, None)),
                    notes: vec![format!(
                        "{first}; planning from {port_dir} (`cargo xtask port` stages it at {staged})"
                    )],
                })
            }
            Err(e) => Err(e),
        }
    }

    /// A distinfo that cannot be read, with the way out. With `--port`, it is that
    /// port's own. Otherwise the staged copy: when colibri's copy reads well, restaging
    /// the port replaces the damaged one (a problem of this host, not the product);
    /// when colibri's own is damaged too, the product's port is at fault.
    fn damaged_distinfo(&self, cx: &Cx, e: anyhow::Error) -> anyhow::Error {
        if let Some(port) = &self.port {
            let again = cx.loaded.xtask(&format!("makesum --port {}", crate::config::shown_path(port)));
            return Err::<(), _>(e)
                .help(format!("fix that distinfo, or remove it (makesum writes a new one), then: {again}"))
                .class(failure::Class::Usage)
                .unwrap_err();
        }
        let (port, makesum) = (cx.loaded.xtask("port"), cx.loaded.xtask("makesum"));
        let source = cx
            .output::<PortOutputs>(StageName::Port)
            .ok()
            .map(|p| lexical(&cx.resolve(&p.checkout).join(&cx.config().port.source).join("distinfo")));
        let source_damaged = source
            .as_ref()
            .filter(|s| fs::read_to_string(s).is_ok_and(|text| distinfo::parse(&text, s.as_str()).is_err()));
        let (first, class) = match source_damaged {
            Some(source) => (
                format!(
                    "colibri's own copy, {source}, is damaged too: fix it there (or remove it: makesum writes a new one), then stage the port again: {port}"
                ),
                failure::Class::Product,
            ),
            None => (format!("the staged copy is damaged; stage the port again from colibri: {port}"), {
                failure::Class::Infrastructure
            }),
        };
        Err::<(), _>(e).help(first).help(format!("then write its distinfo: {makesum}")).class(class).unwrap_err()
    }

    /// The jobs for the native method, with the steps that show them.
    fn plan_native(&self, cx: &Cx, target: &Target, steps: &mut Plan) -> Result<Vec<Job>> {
        let cfg = &cx.config().makesum;
        let port = PortDistfiles::read(&target.port_dir)?;
        let offline = self.offline(cx);
        let locked = match &target.lock {
            Some((path, recorded)) => Some((path, lock_checksums(cx, path, recorded.as_deref())?)),
            None => None,
        };
        // The distinfo the port has now (in a dry run before `port`: the checkout's copy).
        let distinfo_path = target.port_dir.join("distinfo");
        let listed: HashMap<String, Distfile> = match read_optional(&distinfo_path)? {
            Some(text) => distinfo::parse(&text, distinfo_path.as_str())
                .map_err(|e| self.damaged_distinfo(cx, e))?
                .into_iter()
                .map(|d| (d.name.clone(), d))
                .collect(),
            None => HashMap::new(),
        };
        let (cache_root, caches) = fetch::cargo_caches();
        let archive = match (&target.checkout, cfg.source_from_checkout) {
            (Some((dir, reference)), true) => Some(Archive {
                git: crate::git::git(&cx.config().tools, dir),
                gzip: CmdLine::tool(&cx.config().tools, Tool::gzip),
                reference: reference.clone().unwrap_or_else(|| port.tag.clone()),
                prefix: port.prefix.clone(),
            }),
            _ => None,
        };
        let from_distinfo = |name: &str| {
            listed.get(name).map(|d| Expect::Sha256 { sha256: d.sha256.clone(), from: format!("{distinfo_path}") })
        };

        let mut jobs = Vec::new();
        let mut unverifiable = Vec::new();
        for wanted in port.files {
            let in_distdir = target.distdir.join(&wanted.name);
            let mut sources = Vec::new();
            let mut skipped = Vec::new();
            let mut urls = Vec::new();
            let expect = match &wanted.kind {
                Kind::Crate { name, version } => {
                    let entry = format!("{name}-{version}");
                    let pinned = locked.as_ref().and_then(|(path, sums)| {
                        sums.get(&entry).map(|s| Expect::Sha256 { sha256: s.clone(), from: format!("{path}") })
                    });
                    let Some(expect) = pinned.or_else(|| from_distinfo(&wanted.name)) else {
                        unverifiable.push(wanted.name.clone());
                        continue;
                    };
                    let cached: Vec<Utf8PathBuf> =
                        caches.iter().map(|d| d.join(format!("{entry}.crate"))).filter(|p| p.is_file()).collect();
                    if in_distdir.is_file() {
                        sources.push(Source::Distdir(in_distdir.clone()));
                    } else {
                        skipped.push(format!("not in {}", target.distdir));
                    }
                    if cached.is_empty() {
                        skipped.push(format!("not in cargo's cache ({cache_root})"));
                    }
                    sources.extend(cached.into_iter().map(Source::Cache));
                    urls.push(cfg.crate_url.replace("{name}", name).replace("{version}", version));
                    expect
                }
                Kind::Git { account, project, commit, .. } => {
                    if in_distdir.is_file() {
                        sources.push(Source::Distdir(in_distdir.clone()));
                    } else {
                        skipped.push(format!("not in {}", target.distdir));
                    }
                    urls.push(github_url(&cfg.github_url, account, project, commit));
                    from_distinfo(&wanted.name).unwrap_or(Expect::FirstSeen)
                }
                Kind::Source(site) => match &archive {
                    Some(a) if wanted.name.ends_with(".tar.gz") || wanted.name.ends_with(".tgz") => {
                        sources.push(Source::Checkout(Box::new(a.clone())));
                        Expect::Made
                    }
                    Some(_) => bail!(
                        failure!(
                            "makesum.source_from_checkout makes a .tar.gz, but the port's source is {}",
                            wanted.name
                        )
                        .help("turn makesum.source_from_checkout off for this port")
                    ),
                    None => {
                        if in_distdir.is_file() {
                            sources.push(Source::Distdir(in_distdir.clone()));
                        } else {
                            skipped.push(format!("not in {}", target.distdir));
                        }
                        match site {
                            Site::GitHub { account, project, tag } => {
                                urls.push(github_url(&cfg.github_url, account, project, tag))
                            }
                            Site::Sites(sites) => urls.extend(sites.iter().map(|s| format!("{s}{}", wanted.name))),
                        }
                        from_distinfo(&wanted.name).unwrap_or(Expect::FirstSeen)
                    }
                },
            };
            for url in urls {
                if offline {
                    skipped.push(format!("--offline forbids downloading it from {url}"));
                } else {
                    sources.push(Source::Url(url));
                }
            }
            jobs.push(Job { wanted, expect, sources, skipped });
        }
        if !unverifiable.is_empty() {
            let against = match &target.lock {
                Some((lock, _)) => format!("neither {lock} nor {distinfo_path} gives their SHA-256"),
                None => format!("there is no Cargo.lock, and {distinfo_path} does not list them"),
            };
            bail!(
                failure!(
                    "{} crate(s) cannot be verified: {against}:\n  {}",
                    unverifiable.len(),
                    unverifiable.join("\n  ")
                )
                .help(
                    "pass the Cargo.lock the port's CARGO_CRATES was made from: --lock PATH (or put it in the port directory as Cargo.lock)"
                )
            );
        }
        plan_steps(steps, &jobs, target, self.check);
        Ok(jobs)
    }

    fn execute_native(&self, cx: &mut Cx, target: &Target, jobs: Vec<Job>) -> Result<MakesumOutputs> {
        let cfg = &cx.config().makesum;
        let cx: &Cx = cx;
        if !self.check {
            for job in &jobs {
                if let Some(dir) = target.distdir.join(&job.wanted.name).parent() {
                    fs::create_dir_all(dir).with_context(|| format!("cannot create the distfiles directory {dir}"))?;
                }
            }
            let mut dirs: Vec<Utf8PathBuf> = jobs
                .iter()
                .filter_map(|j| target.distdir.join(&j.wanted.name).parent().map(Utf8Path::to_owned))
                .collect();
            dirs.sort();
            dirs.dedup();
            dirs.iter().for_each(|d| fetch::remove_dead_temps(d));
        }
        let scratch = cx.stage_dir(StageName::Makesum)?.join("scratch");
        if self.check {
            fs::create_dir_all(&scratch).with_context(|| format!("cannot create {scratch}"))?;
        }
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let downloads = jobs.iter().any(|j| j.sources.iter().any(|s| matches!(s, Source::Url(_))));
        let tls = if downloads { tls_config(cx)? } else { ureq::tls::TlsConfig::default() };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_per_read(Some(timeout))
            .user_agent(format!("mother-build/{} (makesum)", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .max_idle_connections_per_host(cfg.jobs.max(1))
            .build()
            .into();
        let fetcher = Fetcher {
            cx,
            distdir: target.distdir.clone(),
            check: self.check,
            scratch: scratch.clone(),
            agent,
            retries: cfg.retries,
            retry_delay: Duration::from_millis(cfg.retry_delay_ms),
            jobs: cfg.jobs,
        };
        cx.say(format!("{} distfiles for {} into {}", jobs.len(), target.port_dir, target.distdir));
        let outcomes = {
            let progress = cx.ui.progress("makesum", jobs.len() as u64, false);
            fetcher.run(&jobs, &progress)
        };
        if self.check {
            let _ = fs::remove_dir_all(&scratch);
        }
        let outcomes = outcomes?;

        for (job, o) in jobs.iter().zip(&outcomes) {
            if let Some(got) = &o.got {
                for reason in o.reasons.iter().filter(|_| o.mismatch) {
                    cx.say(format!("warning: {}: {reason}", job.wanted.name));
                }
                if got.first_seen {
                    cx.say(format!(
                        "warning: {}: nothing pins its checksum (no Cargo.lock entry, not in distinfo); recorded as first seen, SHA-256 {}",
                        job.wanted.name, got.sha256
                    ));
                }
            }
        }
        let files: Vec<Distfile> = jobs
            .iter()
            .zip(&outcomes)
            .filter_map(|(j, o)| {
                o.got.as_ref().map(|g| Distfile { name: j.wanted.name.clone(), size: g.size, sha256: g.sha256.clone() })
            })
            .collect();
        if files.len() < jobs.len() {
            return Err(self.failure(cx, target, &jobs, &outcomes, &files));
        }
        let count = |from: From| outcomes.iter().filter(|o| o.got.as_ref().is_some_and(|g| g.from == from)).count();
        let total: u64 = files.iter().map(|f| f.size).sum();
        cx.say(format!(
            "{} distfiles, {}: {} already in place, {} from cargo's cache, {} downloaded, {} made from the checkout",
            files.len(),
            crate::ui::bytes(total),
            count(From::Distdir),
            count(From::Cache),
            count(From::Download),
            count(From::Checkout)
        ));

        let distinfo_path = target.distinfo.clone();
        let old = read_optional(&distinfo_path)?;
        let (text, changed) = distinfo::decide(old.as_deref(), &files, now_secs());
        if self.check {
            if changed {
                let diff =
                    distinfo::diff(old.as_deref().unwrap_or(""), &text, distinfo_path.as_str(), "distinfo (computed)");
                cx.ui.print_raw(&diff);
                bail!(
                    failure!(
                        "{distinfo_path} is stale: it does not list these distfiles as they are (the diff is on stdout)"
                    )
                    .help(format!(
                        "rewrite it with: {}",
                        cx.loaded.xtask(&match &self.port {
                            Some(p) => format!("makesum --port {}", crate::config::shown_path(p)),
                            None => "makesum".to_owned(),
                        })
                    ))
                    .product()
                );
            }
            cx.say(format!("{distinfo_path} is current"));
        } else if changed {
            crate::fsx::write_atomic(&distinfo_path, text.as_bytes())?;
            cx.say(format!("wrote {distinfo_path} ({} distfiles)", files.len()));
        } else {
            cx.say(format!("{distinfo_path} is unchanged (TIMESTAMP kept)"));
        }
        if !self.check {
            let obtained = Obtained {
                in_place: count(From::Distdir),
                cache: count(From::Cache),
                downloaded: count(From::Download),
                checkout: count(From::Checkout),
            };
            let path = cx.stage_dir(StageName::Makesum)?.join(OBTAINED);
            crate::fsx::write_atomic(&path, format!("{}\n", serde_json::to_string(&obtained)?).as_bytes())?;
        }
        self.outputs(cx, target, files, &text, Method::Native)
    }

    /// The error for distfiles that could not be had: every one of them, with every
    /// place tried and why it did not give the file.
    fn failure(
        &self,
        cx: &Cx,
        target: &Target,
        jobs: &[Job],
        outcomes: &[fetch::Outcome],
        had: &[Distfile],
    ) -> anyhow::Error {
        let mut msg = String::new();
        let missing: Vec<_> = jobs.iter().zip(outcomes).filter(|(_, o)| o.got.is_none()).collect();
        msg.push_str(&format!("{} of {} distfiles could not be had:", missing.len(), jobs.len()));
        for (job, o) in &missing {
            msg.push_str(&format!("\n  {} ({})", job.wanted.name, job.wanted.describe()));
            for why in job.skipped.iter().chain(&o.reasons) {
                msg.push_str(&format!("\n    - {why}"));
            }
        }
        let distinfo_path = target.distinfo.clone();
        if !self.check && !had.is_empty() {
            let partial = cx.stage_dir(StageName::Makesum).map(|d| d.join("distinfo.partial"));
            if let Ok(partial) = partial
                && crate::fsx::write_atomic(&partial, distinfo::render(now_secs(), had).as_bytes()).is_ok()
            {
                let what = match had.len() {
                    1 => "the 1 distfile that was had is".to_owned(),
                    n => format!("the {n} distfiles that were had are"),
                };
                msg.push_str(&format!(
                    "\n{what} in {} and listed in {partial}; {distinfo_path} is unchanged",
                    target.distdir
                ));
            }
        } else {
            msg.push_str(&format!("\n{distinfo_path} is unchanged"));
        }
        // What the errors behind the reasons say to do, then what to do about the rest.
        let mut failure = missing.iter().flat_map(|(_, o)| &o.help).fold(Failure::new(msg), |f, l| f.help(l.clone()));
        if missing.iter().any(|(_, o)| o.mismatch) {
            // What the pins refuse is not the release's source: the product cannot be
            // built as pinned (never retried). Files that could not be reached are the
            // network's (exit 2).
            failure = failure
                .help(format!(
                    "a checksum mismatch means the file is not the one its checksum pins (damaged or tampered with); the bad copies are in {} for inspection, never use them",
                    target.distdir.join(fetch::QUARANTINE)
                ))
                .product();
        } else {
            failure = failure.infrastructure();
        }
        if missing.iter().any(|(j, _)| j.skipped.iter().any(|s| s.starts_with("--offline"))) {
            failure =
                failure.help(format!("run without --offline to download them, or put them in {}", target.distdir));
        } else {
            failure = failure.help(format!(
                "check the network and the URLs (makesum.crate_url, makesum.github_url, the port's MASTER_SITES), or put the files in {}",
                target.distdir
            ));
        }
        failure.into()
    }

    fn outputs(
        &self,
        cx: &Cx,
        target: &Target,
        files: Vec<Distfile>,
        text: &str,
        method: Method,
    ) -> Result<MakesumOutputs> {
        let mut produced = crate::fingerprint::Produced::default();
        for f in &files {
            produced.add(f.name.as_str(), &target.distdir.join(&f.name))?;
        }
        Ok(MakesumOutputs {
            distinfo: crate::fsx::relative_to(&target.distinfo, &cx.loaded.base),
            distdir: target.distdir.clone(),
            distfiles: files,
            distinfo_sha256: sha256_bytes(text.as_bytes()),
            method,
            produced,
        })
    }

    fn execute_ports(&self, cx: &mut Cx, target: &Target, cmd: &CmdLine) -> Result<MakesumOutputs> {
        fs::create_dir_all(&target.distdir)
            .with_context(|| format!("cannot create the distfiles directory {}", target.distdir))?;
        cx.say(format!("running the ports framework's makesum in {}", target.port_dir));
        let out = cmd.stream(&cx.log, cx.ui, &StreamOpts::default())?;
        if !out.success() {
            bail!(Failure::new(cmd.failure(&out)).help("the stage log has make's whole output"));
        }
        let path = target.distinfo.clone();
        let text = fs::read_to_string(&path)
            .with_context(|| format!("`{cmd}` succeeded but left no readable distinfo at {path}"))?;
        let files = distinfo::parse(&text, path.as_str())?;
        cx.say(format!("{path}: {} distfiles", files.len()));
        self.outputs(cx, target, files, &text, Method::Ports)
    }
}

/// The steps `--dry-run` shows for the native method.
fn plan_steps(steps: &mut Plan, jobs: &[Job], target: &Target, check: bool) {
    let present = jobs.iter().filter(|j| matches!(j.sources.first(), Some(Source::Distdir(_)))).count();
    if present > 0 {
        steps.check(format!(
            "{present} distfiles already in {}: SHA-256 of each against Cargo.lock or distinfo",
            target.distdir
        ));
    }
    let verified = |j: &Job| match &j.expect {
        Expect::Sha256 { from, .. } => format!("verified against {from}"),
        Expect::FirstSeen => "nothing pins its checksum: recorded as first seen".into(),
        Expect::Made => "made from the checkout".into(),
    };
    for job in jobs {
        let target_file = target.distdir.join(&job.wanted.name);
        let tmp = temp_placeholder(&target_file);
        match job.sources.first() {
            Some(Source::Distdir(_)) => {}
            Some(Source::Cache(path)) => {
                steps.push(Step::Copy { from: path.clone(), to: tmp.clone() });
                steps.push(Step::Rename { from: tmp, to: target_file });
            }
            Some(Source::Url(url)) => {
                steps.push(Step::Fetch { url: url.clone(), to: tmp.clone() });
                steps.note(format!("{}: {}", job.wanted.name, verified(job)));
                steps.push(Step::Rename { from: tmp, to: target_file });
            }
            Some(Source::Checkout(archive)) => {
                let tar = Utf8PathBuf::from(format!("{tmp}.tar"));
                for cmd in archive.commands(&tar) {
                    steps.run(&cmd);
                }
                steps.push(Step::Rename { from: format!("{tar}.gz").into(), to: target_file });
            }
            None => steps.note(format!(
                "{} ({}) cannot be had: {}",
                job.wanted.name,
                job.wanted.describe(),
                job.skipped.join("; ")
            )),
        }
    }
    let distinfo = target.distinfo.clone();
    if check {
        steps.check(format!("{distinfo} lists these {} distfiles as they are (no file is changed)", jobs.len()));
    } else {
        steps.push(Step::Write {
            path: distinfo,
            what: format!("distinfo of {} distfiles; left untouched when only its TIMESTAMP would change", jobs.len()),
        });
    }
}

/// `a/b/../c` -> `a/c`, without touching the file system (for paths shown to people).
fn lexical(path: &Utf8Path) -> Utf8PathBuf {
    let mut out = Utf8PathBuf::new();
    for c in path.components() {
        match c {
            camino::Utf8Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            camino::Utf8Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// What the plan shows for a temporary name (the real one carries the process id).
fn temp_placeholder(path: &Utf8Path) -> Utf8PathBuf {
    path.with_file_name(format!(".{}.tmp.PID.N", path.file_name().unwrap_or("distfile")))
}

/// The roots HTTPS downloads trust: makesum.ca_file, else SSL_CERT_FILE, else
/// Mozilla's (built in).
fn tls_config(cx: &Cx) -> Result<ureq::tls::TlsConfig> {
    let configured = &cx.config().makesum.ca_file;
    let (file, from) = if !configured.as_str().is_empty() {
        (cx.resolve(configured), "makesum.ca_file")
    } else {
        match std::env::var("SSL_CERT_FILE") {
            Ok(f) if !f.is_empty() => (Utf8PathBuf::from(f), "SSL_CERT_FILE"),
            _ => return Ok(ureq::tls::TlsConfig::default()),
        }
    };
    let pem = fs::read(&file).with_context(|| format!("cannot read the CA certificates {file} ({from})"))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.with_context(|| format!("{file} ({from}) is not a PEM file of certificates"))?
        {
            roots.push(c);
        }
    }
    if roots.is_empty() {
        bail!("{file} ({from}) holds no certificates");
    }
    cx.note(format!("HTTPS downloads trust the {} certificate authorities in {file} ({from})", roots.len()));
    Ok(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots)).build())
}

fn github_url(template: &str, account: &str, project: &str, tag: &str) -> String {
    template.replace("{account}", account).replace("{project}", project).replace("{tag}", tag)
}

/// `NAME-VERSION` -> checksum from a Cargo.lock; refuses a lock that changed since
/// `port` recorded it.
fn lock_checksums(cx: &Cx, path: &Utf8Path, recorded: Option<&str>) -> Result<HashMap<String, String>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read the Cargo.lock {path}"))?;
    if let Some(recorded) = recorded
        && sha256_bytes(text.as_bytes()) != recorded
    {
        bail!(
            failure!("{path} changed since `port` staged the port")
                .help(format!("rerun it first: {}", cx.loaded.xtask("port")))
        );
    }
    let crates = crate::cargo_crates::parse(&text, path.as_str())?;
    Ok(crates.registry.into_iter().filter_map(|c| Some((c.entry(), c.checksum?))).collect())
}

fn read_optional(path: &Utf8Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks `[makesum]` when pipeline.toml is loaded: settings that can never work are
/// refused there, with their location, not when makesum plans.
pub fn validate(l: &Loaded) -> Result<()> {
    let cfg = &l.config.makesum;
    for (key, value, words) in [
        ("makesum.crate_url", &cfg.crate_url, &["{name}", "{version}"][..]),
        ("makesum.github_url", &cfg.github_url, &["{account}", "{project}", "{tag}"][..]),
    ] {
        if let Some(w) = words.iter().find(|w| !value.contains(**w)) {
            return Err(l.error_at(key, format!("the URL template `{value}` lacks {w}")));
        }
    }
    if cfg.jobs == 0 {
        return Err(l.error_at("makesum.jobs", "at least one download at a time is needed"));
    }
    if cfg.timeout_secs == 0 {
        return Err(l.error_at("makesum.timeout_secs", "a timeout of 0 seconds would fail every download"));
    }
    Ok(())
}

impl Stage for Makesum {
    const NAME: StageName = StageName::Makesum;
    type Outputs = MakesumOutputs;
    type Plan = MakesumPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let target = self.target(cx)?;
        let mut fp = Fingerprint::new();
        fp.str("port_dir", target.port_dir.as_str()).str("distdir", target.distdir.as_str());
        fp.file("makefile", &target.port_dir.join("Makefile"))?;
        fp.file("makefile.crates", &target.port_dir.join("Makefile.crates"))?;
        if let Some((lock, _)) = &target.lock {
            fp.file("lock", lock)?;
        }
        Ok(fp)
    }

    fn outputs_intact(&self, cx: &Cx, outputs: &MakesumOutputs) -> bool {
        let distinfo = cx.resolve(&outputs.distinfo);
        let Ok(text) = fs::read(&distinfo) else { return false };
        sha256_bytes(&text) == outputs.distinfo_sha256
            && outputs
                .distfiles
                .iter()
                .all(|f| fs::metadata(outputs.distdir.join(&f.name)).is_ok_and(|m| m.is_file() && m.len() == f.size))
            && outputs.produced.intact(|name| outputs.distdir.join(name))
    }

    fn plan(&self, cx: &Cx) -> Result<MakesumPlan> {
        let target = self.target(cx)?;
        let mut steps = Plan::default();
        for note in &target.notes {
            steps.note(note.clone());
        }
        let work = match cx.config().makesum.method {
            Method::Native => Work::Native(self.plan_native(cx, &target, &mut steps)?),
            Method::Ports => {
                if self.check {
                    bail!(
                        failure!("--check compares a natively computed distinfo, and makesum.method is \"ports\"").help(
                            "run the framework's `make checksum` in the port instead, or set makesum.method = \"native\""
                        )
                    );
                }
                let cmd = CmdLine::tool(&cx.config().tools, Tool::make).args([
                    "-C".to_owned(),
                    target.port_dir.to_string(),
                    "makesum".to_owned(),
                    format!("DISTDIR={}", target.distdir),
                ]);
                steps.run(&cmd);
                Work::Ports(cmd)
            }
        };
        Ok(MakesumPlan { steps, target, work })
    }

    fn execute(&self, cx: &mut Cx, plan: MakesumPlan) -> Result<MakesumOutputs> {
        match plan.work {
            Work::Native(jobs) => self.execute_native(cx, &plan.target, jobs),
            Work::Ports(cmd) => self.execute_ports(cx, &plan.target, &cmd),
        }
    }
}

impl Makesum {
    /// `cargo xtask makesum`: in the current run; `--port DIR` on any port without
    /// touching the run; `--check` against the current run's port, recording nothing.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        if self.port.is_some() {
            engine.run_detached(&self, self.dry_run).map(drop)
        } else if self.check {
            engine.run_unrecorded(&self, self.dry_run).map(drop)
        } else {
            engine.run_one(&self, self.dry_run)
        }
    }
}
