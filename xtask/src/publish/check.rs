//! The check over HTTP: fetch what the public URL (repository.url) serves, verify it,
//! and say which release that is.

use crate::failure;
use crate::failure::Failure;
use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use camino::Utf8Path;

use crate::fingerprint::sha256_file;
use crate::sign::PackageRecord;
use crate::stage::{Cx, StageName};
use pkgrepo::trust::Trust;
use pkgrepo::verify;

/// What `latest` should now serve, for the check over HTTP.
pub struct Served {
    pub version: String,
    /// The catalogue archives of that version (name -> SHA-256).
    pub catalogues: BTreeMap<String, String>,
    /// The previous version and its data.pkg SHA-256, to tell the old release apart.
    pub previous: Option<(String, String)>,
    /// meta.conf as published.
    pub meta: Vec<u8>,
    /// Packages to fetch (size and sum from the catalogue).
    pub fetch: Vec<PackageRecord>,
    pub trust: Trust,
}

impl Served {
    /// What the version directory `vdir` on this host holds, served as `version`: its
    /// catalogues' digests and its meta.conf.
    pub fn from_dir(
        vdir: &Utf8Path,
        version: &str,
        previous: Option<(String, String)>,
        fetch: Vec<PackageRecord>,
        trust: Trust,
    ) -> Result<Served> {
        let mut catalogues = BTreeMap::new();
        for archive in ["data.pkg", "packagesite.pkg"] {
            catalogues.insert(archive.to_owned(), sha256_file(&vdir.join(archive))?);
        }
        Served::new(vdir, version, catalogues, previous, fetch, trust)
    }

    /// The version directory `vdir` served as `version`, whose catalogues' digests are
    /// known: its meta.conf read.
    pub fn new(
        vdir: &Utf8Path,
        version: &str,
        catalogues: BTreeMap<String, String>,
        previous: Option<(String, String)>,
        fetch: Vec<PackageRecord>,
        trust: Trust,
    ) -> Result<Served> {
        let meta =
            fs::read(vdir.join("meta.conf")).with_context(|| format!("cannot read {}", vdir.join("meta.conf")))?;
        Ok(Served { version: version.to_owned(), catalogues, previous, meta, fetch, trust })
    }
}

/// The package to fetch in the check of a version published earlier: the first of its
/// release manifest, if it has one.
pub fn first_package(vdir: &Utf8Path) -> Vec<PackageRecord> {
    let manifest: Option<crate::sign::Manifest> =
        fs::read(vdir.join("manifest.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    manifest.and_then(|m| m.packages.into_iter().next()).into_iter().collect()
}

fn agent(cx: &Cx) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(cx.config().publish.check_timeout_secs.max(1))))
        .http_status_as_error(false)
        .build()
        .into()
}

fn fetch(agent: &ureq::Agent, url: &str, to: &Utf8Path) -> Result<()> {
    let mut resp = agent.get(url).call().map_err(|e| anyhow::anyhow!("cannot fetch {url}: {e}"))?;
    let status = resp.status();
    if status != 200 {
        bail!("{url} answered HTTP {}", status.as_u16());
    }
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = fs::File::create(to).with_context(|| format!("cannot create {to}"))?;
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    std::io::copy(&mut reader, &mut file).map_err(|e| anyhow::anyhow!("cannot fetch {url}: {e}"))?;
    Ok(())
}

/// Fetches the catalogues, meta.conf and packages from `url` and verifies them;
/// an error names the URL and says which release is being served.
pub fn served(cx: &Cx, url: &str, s: &Served) -> Result<()> {
    let dir = cx.stage_dir(StageName::Publish)?.join("served");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let agent = agent(cx);
    let help = format!(
        "check the web server's root for this site, and any cache in front of it; `{}` switches back",
        cx.loaded.xtask("publish --rollback")
    );

    let data_url = format!("{url}/data.pkg");
    fetch(&agent, &data_url, &dir.join("data.pkg"))
        .map_err(|e| {
            Failure::new(format!(
                "the check of the published repository failed: {}\ncannot tell whether the old or the new release is being served",
                crate::ui::render_message(&e)
            ))
            .help(help.as_str())
        })?;
    let data_sha = sha256_file(&dir.join("data.pkg"))?;
    let which = if s.catalogues.get("data.pkg").is_some_and(|n| *n == data_sha) {
        format!("the new release ({}) is being served", s.version)
    } else if let Some((old, sha)) = &s.previous
        && *sha == data_sha
    {
        bail!(
            failure!("{data_url} is the old release ({old}), not {}: the old release is still being served", s.version)
                .help(help.as_str())
        );
    } else if s.catalogues.is_empty() {
        format!("release {} should be served", s.version)
    } else {
        bail!(
            failure!(
                "{data_url} is neither the new release ({}) nor the previous one: an unknown catalogue is being served",
                s.version
            )
            .help(help.as_str())
        );
    };
    let fail = |what: String| -> anyhow::Error {
        Failure::new(format!("{what}\n{which}, and clients cannot use it")).help(help.as_str()).into()
    };

    for f in ["packagesite.pkg", "meta.conf"] {
        let u = format!("{url}/{f}");
        fetch(&agent, &u, &dir.join(f)).map_err(|e| fail(crate::ui::render_message(&e)))?;
    }
    if let Some(expected) = s.catalogues.get("packagesite.pkg")
        && sha256_file(&dir.join("packagesite.pkg"))? != *expected
    {
        return Err(fail(format!("{url}/packagesite.pkg differs from the one published with data.pkg")));
    }
    if !s.meta.is_empty() && fs::read(dir.join("meta.conf"))? != s.meta {
        return Err(fail(format!("{url}/meta.conf differs from the published meta.conf")));
    }
    let abi = cx.config().repository.abi.clone();
    let opts = verify::Options {
        stop: &|| Ok(crate::proc::check_interrupted()?),
        trust: &s.trust,
        abi: &abi,
        sha256: false,
        threads: 1,
        listed: &|_, _| {},
        progress: &|_| {},
        known: None,
        files: false,
    };
    let report = verify::verify(&dir, &opts)?;
    if let Some(p) = report.problems.first() {
        let file = p.subject.split(':').next().unwrap_or(&p.subject);
        return Err(fail(format!("{url}/{file}: {}", p.message.clone() + &more(report.problems.len()))));
    }
    for p in &s.fetch {
        let u = format!("{url}/{}", p.path);
        let to = dir.join(&p.path);
        fetch(&agent, &u, &to).map_err(|e| fail(crate::ui::render_message(&e)))?;
        verify::check_download(&to, p.size, &p.sum).map_err(|why| fail(format!("{u} {why}")))?;
    }
    cx.say(format!(
        "{url} serves {}: data.pkg, packagesite.pkg and meta.conf verify{}",
        s.version,
        if s.fetch.is_empty() { String::new() } else { format!(", and {} matches its sum", s.fetch[0].path) }
    ));
    Ok(())
}

fn more(n: usize) -> String {
    if n > 1 { format!(" (and {} more problems)", n - 1) } else { String::new() }
}
