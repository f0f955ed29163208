//! publish: put the signed repository where clients fetch it, as a new version, and
//! switch `latest` to it with one atomic rename once the copy is verified.
//!
//! Layout of the site (a local directory nginx serves, or `HOST:/path` over rsync+ssh):
//! ```text
//! TARGET/clawdie.conf                 client repo conf (from publish/templates/repo.conf.in)
//! TARGET/clawdie.pub                  the release public key
//! TARGET/ABI/VERSION/                 one release: meta.conf, data.pkg, packagesite.pkg, manifest.json, ...
//! TARGET/ABI/VERSION/All -> ../.pool/GEN/All    its packages, in a generation of the pool (local)
//! TARGET/ABI/.pool/GEN/               hard links to package files, shared by versions (pool.rs)
//! TARGET/ABI/.pool/GEN/.verified.json what verifying them found (sizes, sums, file identities)
//! TARGET/ABI/latest -> VERSION        what clients get: https://pkg.clawdie.si/${ABI}/latest
//! ```
//! Locally, a release with one changed package adds that package to the pool generation
//! `latest` uses, and its version directory holds only the repository files and a
//! symlink. Over rsync each version has its own `All/`, unchanged packages `--link-dest`
//! links. A version published before the pool has its own `All/` (and `.verified.json`)
//! locally too: it is served, rolled back to, linked from and pruned like the others. A
//! publish killed at any point leaves `latest` naming a complete version, old or new.

mod check;
mod client;
mod local;
pub mod nginx;
mod pool;
mod release;
mod remote;
mod template;
mod verified;
mod versions;

use anyhow::{Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Publish;
use crate::config::Loaded;
use crate::failure;
use crate::failure::{Class, ResultExt};
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step, TwoPhase};
use client::ClientFiles;
use release::Release;
pub use versions::rollback_candidates;
use versions::{local_latest, rollback_target};

settings! {
    /// publish: copy the signed repository to the site as a new version, verify the copy,
    /// switch `latest` to it atomically, keep the last versions, publish the client repo
    /// conf and public key, and check what the public URL (repository.url) serves.
    pub struct PublishConfig {
        /// The site: a local directory that nginx serves, or `HOST:/path` (`USER@HOST:/path`)
        /// reached with rsync and ssh. Each ABI's repository is TARGET/ABI/: one directory
        /// per version and the symlink `latest` naming the one clients get; locally, the
        /// versions share their package files through TARGET/ABI/.pool/.
        pub target: String = "/usr/local/www/pkg.clawdie.si".into(),
        /// Versions kept per ABI, the one `latest` names included (at least 1; 2 or more
        /// keeps something to roll back to). A generation of the package pool goes with
        /// the last version that uses it.
        pub keep: usize = 5,
        /// After switching, fetch data.pkg, packagesite.pkg, meta.conf and a package from
        /// repository.url and verify them.
        pub check: bool = true,
        /// Seconds allowed for each request of that check.
        pub check_timeout_secs: u64 = 30,
        /// Template of the client repo conf, relative to pipeline.toml; empty: the built-in
        /// one (xtask/src/publish/templates/repo.conf.in). It must hold each of `{{NAME}}`,
        /// `{{PKG_URL}}`, `{{SIGNATURE_TYPE}}` and `{{TRUST_PATH}}`.
        pub repo_conf_template: Utf8PathBuf = Utf8PathBuf::new(),
        /// Where clients install the public key (the repo conf's `pubkey`).
        pub client_pubkey: String = "/usr/share/keys/pkg/clawdie.pub".into(),
        /// Where clients keep the fingerprints directory (fingerprints mode; it holds `trusted/`).
        pub client_fingerprints: String = "/usr/share/keys/pkg/clawdie".into(),
        /// nginx `server_name` for the generated server block; empty: the host of repository.url.
        pub server_name: String = String::new(),
        /// TLS certificate for the nginx server block; empty: plain HTTP only.
        pub tls_certificate: String = "/usr/local/etc/ssl/pkg.clawdie.si/fullchain.pem".into(),
        /// The certificate's private key.
        pub tls_certificate_key: String = "/usr/local/etc/ssl/pkg.clawdie.si/privkey.pem".into(),
        /// Where the server block is installed on this host (a local target only); empty:
        /// nowhere, and neither setup nor publish touches nginx. `cargo xtask setup`
        /// installs it and includes it in nginx_conf; publish rewrites it when it changes
        /// and then reloads nginx (after `nginx -t`). mother-build owns this file.
        pub nginx_block: String = "/usr/local/etc/nginx/pkg.clawdie.si.conf".into(),
        /// nginx's configuration file, whose `http` block setup adds the `include` of
        /// nginx_block to (the www/nginx package installs no include directory).
        pub nginx_conf: String = "/usr/local/etc/nginx/nginx.conf".into(),
    }
}

/// What `publish` records for later stages. (Contract: iso reads it; fields may be
/// added, not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOutputs {
    /// The version directory that `latest` now points at.
    pub version: String,
    /// The URL clients use for the repository (what the repo conf's `url` says).
    pub url: String,
    /// The published copy on this host, when the target is local (absolute).
    pub local: Option<camino::Utf8PathBuf>,
    /// The client repo conf written (relative to the state directory).
    pub repo_conf: camino::Utf8PathBuf,
    /// The version `latest` named before, if any.
    #[serde(default)]
    pub previous: Option<String>,
    /// The repo conf's `url` as clients write it, with pkg's `${ABI}`.
    #[serde(default)]
    pub client_url: String,
    /// The nginx server block written (relative to the state directory).
    #[serde(default)]
    pub nginx: Option<Utf8PathBuf>,
    /// How many package files were copied; the rest were shared with the previous
    /// version (in the pool generation, local) or linked to it (rsync).
    #[serde(default)]
    pub copied: usize,
    #[serde(default)]
    pub linked: usize,
    /// The pool generation the version's packages are in (a local target; none for a
    /// version published before the pool).
    #[serde(default)]
    pub generation: Option<String>,
    /// SHA-256 of the data.pkg `latest` serves (to recognise this release when it is the
    /// old one).
    #[serde(default)]
    pub data_sha256: String,
}

/// Where the site is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Local(Utf8PathBuf),
    /// `host` as ssh takes it (`user@host`), and the absolute path there.
    Remote {
        host: String,
        root: String,
    },
}

impl Target {
    fn parse(text: &str, loaded: &Loaded) -> Result<Target> {
        let bad = |msg: &str| loaded.error_at("publish.target", format!("`{text}` {msg}"));
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        match text.split_once(':') {
            Some((host, path)) if !host.is_empty() && !host.contains('/') => {
                if host.starts_with('-') {
                    return Err(bad("names a host that ssh and rsync would take for an option"));
                }
                if !path.starts_with('/') {
                    return Err(bad("names a remote path that is not absolute (HOST:/path)"));
                }
                if !path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b)) {
                    return Err(bad("has characters that a remote shell would interpret"));
                }
                Ok(Target::Remote { host: host.to_owned(), root: path.trim_end_matches('/').to_owned() })
            }
            _ => Ok(Target::Local(loaded.resolve(Utf8Path::new(text)))),
        }
    }
}

#[derive(Debug)]
enum Work {
    Publish(Box<Release>),
    /// Switch `latest` back to this version.
    Rollback {
        to: String,
        from: Option<String>,
    },
}

/// The publish stage's plan.
pub struct PublishPlan {
    steps: Plan,
    target: Target,
    abi: String,
    work: Work,
    client: ClientFiles,
    /// The server block as this host's nginx serves it, when it does.
    nginx: Option<nginx::Installed>,
}

impl StagePlan for PublishPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

/// Checks `[publish]` when pipeline.toml is loaded: settings that can never work are
/// refused there, with their location, not when publish plans.
pub fn validate(loaded: &Loaded) -> Result<()> {
    if loaded.config.publish.keep == 0 {
        return Err(loaded.error_at("publish.keep", "keep must be at least 1 (the version `latest` names)"));
    }
    Target::parse(&loaded.config.publish.target, loaded)?;
    Publish::abi(loaded)?;
    Ok(())
}

impl Publish {
    /// `cargo xtask publish`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        if self.rollback.as_deref().is_some_and(|v| !v.is_empty()) && engine.targets()?.len() > 1 {
            let names: Vec<String> = engine.targets()?.into_iter().map(|t| t.target.name).collect();
            bail!(
                failure!(
                    "--rollback {} names a version, and each target has its own",
                    self.rollback.as_deref().unwrap_or_default()
                )
                .help(format!(
                    "name the target: {}",
                    engine.loaded.xtask(&format!(
                        "publish --rollback {} --target {}",
                        self.rollback.as_deref().unwrap_or_default(),
                        names[0]
                    ))
                ))
                .usage()
            );
        }
        engine.run_one(&self, self.dry_run)
    }

    fn abi(loaded: &Loaded) -> Result<String> {
        let abi = loaded.config.repository.abi.clone();
        if abi.is_empty() || abi.contains('/') || abi.starts_with('.') {
            return Err(loaded.error_at("repository.abi", format!("`{abi}` cannot name a directory")));
        }
        Ok(abi)
    }

    /// The repository URL for one ABI (`https://pkg.clawdie.si/FreeBSD:15:amd64/latest`).
    fn url(cx: &Cx, abi: &str) -> String {
        format!("{}/{abi}/latest", cx.config().repository.url.trim_end_matches('/'))
    }

    /// The repo conf's `url`, as clients write it: pkg expands `${ABI}` itself.
    fn client_url(cx: &Cx) -> String {
        format!("{}/${{ABI}}/latest", cx.config().repository.url.trim_end_matches('/'))
    }
}

impl Stage for Publish {
    const NAME: StageName = StageName::Publish;
    type Outputs = PublishOutputs;
    type Plan = PublishPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let cfg = cx.config();
        let mut fp = Fingerprint::new();
        fp.json("repository", &cfg.repository).json("signing", &cfg.signing).json("rollback", &self.rollback);
        let (_, repo_conf) = client::repo_conf_template(cx)?;
        fp.str("repo conf template", &repo_conf)
            .str("nginx templates", &[template::NGINX, template::NGINX_TLS, template::NGINX_ACME].concat());
        // What `latest` serves is not an input (it is what publish changes): whether it
        // still names this stage's version is `outputs_intact`'s question.
        Ok(fp)
    }

    fn outputs_intact(&self, cx: &Cx, outputs: &PublishOutputs) -> bool {
        match Target::parse(&cx.config().publish.target, cx.loaded) {
            Ok(Target::Local(root)) => {
                local_latest(&root.join(&cx.config().repository.abi)).as_deref() == Some(outputs.version.as_str())
            }
            _ => true,
        }
    }

    fn plan(&self, cx: &Cx) -> Result<PublishPlan> {
        let cfg = &cx.config().publish;
        let target = Target::parse(&cfg.target, cx.loaded)?;
        let abi = Self::abi(cx.loaded)?;
        let mut steps = Plan::default();
        let work = match &self.rollback {
            Some(wanted) => {
                let (versions, current) = match &target {
                    Target::Local(root) => local::rollback_choice(&root.join(&abi), wanted),
                    Target::Remote { host, root } => remote::rollback_choice(cx, host, root, &abi, &mut steps)?,
                };
                if versions.is_empty() && current.is_none() {
                    let place = match &target {
                        Target::Local(root) => root.join(&abi).to_string(),
                        Target::Remote { host, root } => format!("{host}:{root}/{abi}"),
                    };
                    bail!(
                        failure!("nothing is published for {abi} at {place}: there is no version to roll back to")
                            .help("a rollback switches `latest` back to a version publish has published there before")
                            .usage()
                    );
                }
                let to = rollback_target(&versions, current.as_deref(), wanted).class(Class::Usage)?;
                Work::Rollback { to, from: current }
            }
            None => Work::Publish(Box::new(release::plan(cx, &target, &abi, &mut steps)?)),
        };
        let sign = match &work {
            Work::Publish(r) => Some(&r.sign),
            Work::Rollback { .. } => None,
        };
        let client = match client::make(cx, sign, &target) {
            Ok(c) => c,
            Err(e) if cx.dry_run => {
                steps.note(format!("the client files cannot be made yet: {e:#}"));
                ClientFiles::default()
            }
            Err(e) => return Err(e),
        };
        let nginx = match nginx::serving(cx.loaded)? {
            nginx::Serving::Here(installed) => {
                installed.plan_steps(&mut steps);
                Some(*installed)
            }
            nginx::Serving::Elsewhere(_) => None,
        };
        match &target {
            Target::Local(root) => local::plan_steps(cx, root, &abi, &work, &mut steps),
            Target::Remote { host, root } => remote::plan_steps(cx, host, root, &abi, &work, &mut steps)?,
        }
        let stage = cx.stage_dir(StageName::Publish)?;
        steps.push(Step::Write { path: stage.join("repo.conf"), what: "client repo conf (copy)".into() });
        steps.push(Step::Write { path: stage.join("nginx.conf"), what: "nginx server block".into() });
        if cfg.check {
            let url = Self::url(cx, &abi);
            for f in ["data.pkg", "packagesite.pkg", "meta.conf"] {
                steps.push(Step::Fetch { url: format!("{url}/{f}"), to: stage.join("served").join(f) });
            }
            steps.check(format!("what {url} serves: signatures, and one package's size and sum"));
        }
        Ok(PublishPlan { steps, target, abi, work, client, nginx })
    }

    fn execute(&self, cx: &mut Cx, plan: PublishPlan) -> Result<PublishOutputs> {
        let prepared = self.prepare_plan(cx, plan)?;
        self.commit_prepared(cx, prepared)
    }

    fn two_phase(&self) -> Option<&dyn TwoPhase> {
        Some(self)
    }
}

/// What publish has done before the switch ([`TwoPhase::prepare`]).
struct Prepared {
    target: Target,
    abi: String,
    client: ClientFiles,
    outputs: PublishOutputs,
    work: Prepare,
}

enum Prepare {
    /// A local publish: the new version verified and in place, `latest` not moved.
    Staged(Box<local::Staged>),
    /// A rollback or a remote publish: done whole at the switch (a remote copy is
    /// verified there before its `latest` moves).
    Whole(Work),
}

impl Publish {
    fn prepare_plan(&self, cx: &mut Cx, plan: PublishPlan) -> Result<Prepared> {
        let stage = cx.stage_dir(StageName::Publish)?;
        let (repo_conf, nginx) = plan.client.write_copies(&stage)?;
        cx.note(format!("wrote {} and {}", cx.run.rel(&repo_conf), cx.run.rel(&nginx)));
        let abi = plan.abi.clone();
        let outputs = PublishOutputs {
            version: String::new(),
            url: Self::url(cx, &abi),
            local: None,
            repo_conf: cx.run.rel(&repo_conf),
            previous: None,
            client_url: Self::client_url(cx),
            nginx: Some(cx.run.rel(&nginx)),
            copied: 0,
            linked: 0,
            generation: None,
            data_sha256: String::new(),
        };
        // Before `latest` moves: a block nginx refuses is put back, and nothing switched.
        if let Some(nginx) = &plan.nginx {
            nginx.apply(cx)?;
        }
        let work = match (&plan.target, plan.work) {
            (Target::Local(root), Work::Publish(r)) => Prepare::Staged(Box::new(local::stage(cx, root, &abi, *r)?)),
            (_, work) => Prepare::Whole(work),
        };
        Ok(Prepared { target: plan.target, abi, client: plan.client, outputs, work })
    }

    fn commit_prepared(&self, cx: &mut Cx, p: Prepared) -> Result<PublishOutputs> {
        let Prepared { target, abi, client, mut outputs, work } = p;
        let url = outputs.url.clone();
        let served = match (&target, work) {
            (Target::Local(root), Prepare::Staged(staged)) => {
                local::switch(cx, root, &abi, *staged, &client, &mut outputs)?
            }
            (Target::Local(root), Prepare::Whole(Work::Publish(r))) => {
                local::publish(cx, root, &abi, *r, &client, &mut outputs)?
            }
            (Target::Local(root), Prepare::Whole(Work::Rollback { to, from })) => {
                local::rollback(cx, root, &abi, &to, from.as_deref(), &mut outputs)?
            }
            (Target::Remote { host, root }, Prepare::Whole(Work::Publish(r))) => {
                remote::publish(cx, host, root, &abi, *r, &client, &mut outputs)?
            }
            (Target::Remote { host, root }, Prepare::Whole(Work::Rollback { to, from })) => {
                remote::rollback(cx, host, root, &abi, &to, from.as_deref(), &mut outputs)?
            }
            (Target::Remote { .. }, Prepare::Staged(_)) => bail!("a remote publish is not staged locally"),
        };
        outputs.data_sha256 = served.catalogues.get("data.pkg").cloned().unwrap_or_default();
        if cx.config().publish.check {
            check::served(cx, &url, &served)?;
        } else {
            cx.note("publish.check is off: what the public URL serves was not checked");
        }
        Ok(outputs)
    }
}

impl TwoPhase for Publish {
    fn prepare(&self, cx: &mut Cx) -> Result<Box<dyn std::any::Any>> {
        let plan = self.plan(cx)?;
        Ok(Box::new(self.prepare_plan(cx, plan)?))
    }

    fn commit(&self, cx: &mut Cx, prepared: Box<dyn std::any::Any>) -> Result<crate::outputs::Outputs> {
        let prepared =
            prepared.downcast::<Prepared>().map_err(|_| anyhow::anyhow!("publish was handed another stage's work"))?;
        crate::outputs::Outputs::new(&self.commit_prepared(cx, *prepared)?)
    }

    fn undo(&self, cx: &mut Cx, outputs: &crate::outputs::Outputs) -> Result<String> {
        let outputs: PublishOutputs = outputs.parse()?;
        let abi = Self::abi(cx.loaded)?;
        match Target::parse(&cx.config().publish.target, cx.loaded)? {
            Target::Local(root) => local::switch_back(&root, &abi, &outputs.version, outputs.previous.as_deref()),
            Target::Remote { host, root } => {
                let Some(previous) = outputs.previous.clone().filter(|p| *p != outputs.version) else {
                    bail!(
                        "latest on {host}:{root}/{abi} names {}, and nothing was published there before to switch back to",
                        outputs.version
                    );
                };
                let mut back = outputs.clone();
                remote::rollback(cx, &host, &root, &abi, &previous, Some(&outputs.version), &mut back)?;
                Ok(format!("latest -> {previous} on {host}, was {}", outputs.version))
            }
        }
    }
}
