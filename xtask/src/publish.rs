//! publish: put the signed repository where clients fetch it, as a new version, and
//! switch `latest` to it with one atomic rename once the copy is verified.
//!
//! Layout of the site (a local directory nginx serves, or `HOST:/path` over rsync+ssh):
//! ```text
//! TARGET/clawdie.conf                 client repo conf (from scripts-compat/clawdie-repo.conf.in)
//! TARGET/clawdie.pub                  the release public key
//! TARGET/ABI/VERSION/                 one release: meta.conf, data.pkg, packagesite.pkg, All/, manifest.json
//! TARGET/ABI/VERSION/.verified.json   what verifying it found (sizes, sums, file identities)
//! TARGET/ABI/latest -> VERSION        what clients get: https://pkg.clawdie.si/${ABI}/latest
//! ```
//! Unchanged packages are hard links to the previous version (local) or `--link-dest`
//! copies (rsync), so a release with one changed package moves one package. A publish
//! killed at any point leaves `latest` naming a complete version, old or new.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Publish;
use crate::config::{Tool, TrustMode};
use crate::fingerprint::{Fingerprint, sha256_bytes, sha256_file};
use crate::fsx;
use crate::proc::CmdLine;
use crate::settings;
use crate::sign::{PackageRecord, SignOutputs, plural};
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};
use pkgrepo::sum::{Digests, Sum};
use pkgrepo::trust::Trust;
use pkgrepo::verify;

settings! {
    /// publish: copy the signed repository to the site as a new version, verify the copy,
    /// switch `latest` to it atomically, keep the last versions, publish the client repo
    /// conf and public key, and check what the public URL (repository.url) serves.
    pub struct PublishConfig {
        /// The site: a local directory that nginx serves, or `HOST:/path` (`USER@HOST:/path`)
        /// reached with rsync and ssh. Each ABI's repository is TARGET/ABI/: one directory
        /// per version and the symlink `latest` naming the one clients get.
        pub target: String = "/usr/local/www/pkg.clawdie.si".into(),
        /// Versions kept per ABI, the one `latest` names included (at least 1; 2 or more
        /// keeps something to roll back to).
        pub keep: usize = 5,
        /// After switching, fetch data.pkg, packagesite.pkg, meta.conf and a package from
        /// repository.url and verify them.
        pub check: bool = true,
        /// Seconds allowed for each request of that check.
        pub check_timeout_secs: u64 = 30,
        /// Template of the client repo conf (placeholders `__PKG_URL__`, `__PUBKEY_PATH__`),
        /// relative to pipeline.toml.
        pub repo_conf_template: Utf8PathBuf = "scripts-compat/clawdie-repo.conf.in".into(),
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
    /// How many package files were copied; the rest were linked to the previous version.
    #[serde(default)]
    pub copied: usize,
    #[serde(default)]
    pub linked: usize,
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
    fn parse(text: &str, cx: &Cx) -> Result<Target> {
        let bad = |msg: &str| cx.loaded.error_at("publish.target", format!("`{text}` {msg}"));
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        match text.split_once(':') {
            Some((host, path)) if !host.is_empty() && !host.contains('/') => {
                if !path.starts_with('/') {
                    return Err(bad("names a remote path that is not absolute (HOST:/path)"));
                }
                if !path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b)) {
                    return Err(bad("has characters that a remote shell would interpret"));
                }
                Ok(Target::Remote { host: host.to_owned(), root: path.trim_end_matches('/').to_owned() })
            }
            _ => Ok(Target::Local(cx.resolve(Utf8Path::new(text)))),
        }
    }
}

/// What was found out when verifying a published file; kept in `.verified.json` so a
/// later release can link the file instead of copying it, and skip hashing it again
/// while its identity (device, inode, size, modification time) is unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Index {
    schema: u32,
    files: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IndexEntry {
    size: u64,
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    blake2b: Option<String>,
    sha256: Option<String>,
}

const INDEX: &str = ".verified.json";

impl Index {
    fn read(version_dir: &Utf8Path) -> Index {
        fs::read(version_dir.join(INDEX)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// The digests of `rel` under `dir`, if the file there is the one recorded.
    fn known(&self, dir: &Utf8Path, rel: &str) -> Option<Digests> {
        let e = self.files.get(rel)?;
        let m = fs::metadata(dir.join(rel)).ok()?;
        let same = m.dev() == e.dev
            && m.ino() == e.ino
            && m.len() == e.size
            && m.mtime() == e.mtime
            && m.mtime_nsec() == e.mtime_nsec;
        same.then(|| Digests { size: e.size, blake2b: e.blake2b.clone(), sha256: e.sha256.clone() })
    }

    /// Whether the recorded file matches a catalogue entry.
    fn matches(&self, rel: &str, size: u64, sum: &str) -> bool {
        let Some(e) = self.files.get(rel) else { return false };
        let digests = Digests { size: e.size, blake2b: e.blake2b.clone(), sha256: e.sha256.clone() };
        e.size == size && Sum::parse(sum).is_ok_and(|s| s.matches(&digests))
    }
}

/// One file of a release and how it gets to the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileAction {
    /// Path relative to the repository.
    rel: String,
    /// Hard-link it from the previous version (else copy it from the source).
    link: bool,
}

/// A release to publish.
#[derive(Debug)]
struct Release {
    sign: SignOutputs,
    /// The manifest sign wrote (absolute).
    manifest: Utf8PathBuf,
    version: String,
    previous: Option<String>,
    files: Vec<FileAction>,
    /// `latest` already serves exactly this release: nothing to copy or switch.
    already: Option<String>,
}

/// What publishing leaves for clients and for the operator.
#[derive(Debug, Default)]
struct ClientFiles {
    /// The rendered repo conf.
    conf: String,
    /// Public key bytes.
    pubkey: Option<Vec<u8>>,
    /// The trust file for fingerprints mode.
    fingerprint: Option<String>,
    nginx: String,
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
}

impl StagePlan for PublishPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

/// A version name: the UTC time to the millisecond (names sort in publishing order),
/// plus the start of the catalogue's digest.
fn version_name(data_sha256: &str) -> String {
    let now = crate::run::now_rfc3339();
    // 2026-06-20T12:00:00.123Z -> 20260620T120000.123Z
    let stamp: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{stamp}-{}", &data_sha256[..data_sha256.len().min(8)])
}

/// Whether a directory entry name is a version (not `latest`, not hidden).
fn is_version(name: &str) -> bool {
    !name.starts_with('.') && name != "latest" && !name.is_empty()
}

/// The versions in a local ABI directory, oldest first.
fn local_versions(dir: &Utf8Path) -> Vec<String> {
    let Ok(entries) = dir.read_dir_utf8() else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && is_version(e.file_name()))
        .map(|e| e.file_name().to_owned())
        .collect();
    out.sort();
    out
}

/// The version `latest` names in a local ABI directory.
fn local_latest(dir: &Utf8Path) -> Option<String> {
    let target = fs::read_link(dir.join("latest")).ok()?;
    let name = target.to_str()?.trim_end_matches('/').to_owned();
    (is_version(&name) && !name.contains('/') && dir.join(&name).is_dir()).then_some(name)
}

/// Versions `latest` has named, kept in `.served` so a rollback never lands on a
/// version that was copied but never switched to (a publish killed in between).
const SERVED: &str = ".served";

fn served_history(dir: &Utf8Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(dir.join(SERVED)).ok()?;
    Some(text.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

fn record_served(dir: &Utf8Path, version: &str) -> Result<()> {
    let mut history = served_history(dir).unwrap_or_default();
    if history.last().map(String::as_str) != Some(version) {
        history.push(version.to_owned());
    }
    let keep = history.len().saturating_sub(1000);
    let text: String = history[keep..].iter().map(|v| format!("{v}\n")).collect();
    fsx::write_atomic(&dir.join(SERVED), text.as_bytes())
}

/// The versions a rollback may choose: those ever served (all, without a history).
fn rollback_candidates(dir: &Utf8Path) -> Vec<String> {
    let versions = local_versions(dir);
    match served_history(dir) {
        Some(served) => versions.into_iter().filter(|v| served.contains(v)).collect(),
        None => versions,
    }
}

/// The version to roll back to: `wanted`, or the newest one older than `current`.
fn rollback_target(versions: &[String], current: Option<&str>, wanted: &str) -> Result<String> {
    if !wanted.is_empty() {
        if versions.iter().any(|v| v == wanted) {
            return Ok(wanted.to_owned());
        }
        bail!(
            "there is no version {wanted} to roll back to\nhelp: the versions kept are: {}",
            if versions.is_empty() { "none".into() } else { versions.join(", ") }
        );
    }
    let older: Vec<&String> = versions.iter().filter(|v| current.is_none_or(|c| v.as_str() < c)).collect();
    match older.last() {
        Some(v) => Ok((*v).clone()),
        None => bail!(
            "there is no version older than {} to roll back to (kept: {})\nhelp: publish.keep decides how many versions are kept",
            current.unwrap_or("the current one"),
            if versions.is_empty() { "none".into() } else { versions.join(", ") }
        ),
    }
}

/// Versions to remove so that `keep` remain, never `latest`'s.
fn to_prune(versions: &[String], keep: usize, latest: &str) -> Vec<String> {
    let mut kept: Vec<&String> = versions.iter().rev().take(keep.max(1)).collect();
    if !kept.iter().any(|v| v.as_str() == latest) {
        kept.pop();
    }
    versions.iter().filter(|v| v.as_str() != latest && !kept.contains(v)).cloned().collect()
}

impl Publish {
    fn abi(cx: &Cx) -> Result<String> {
        let abi = cx.config().repository.abi.clone();
        if abi.is_empty() || abi.contains('/') || abi.starts_with('.') {
            return Err(cx.loaded.error_at("repository.abi", format!("`{abi}` cannot name a directory")));
        }
        Ok(abi)
    }

    /// The repository URL for one ABI (`https://pkg.clawdie.si/FreeBSD:15:amd64/latest`).
    fn url(cx: &Cx, abi: &str) -> String {
        format!("{}/{abi}/latest", cx.config().repository.url.trim_end_matches('/'))
    }

    fn client_files(&self, cx: &Cx, sign: Option<&SignOutputs>, target: &Target) -> Result<ClientFiles> {
        let cfg = &cx.config().publish;
        let signing = &cx.config().signing;
        let mode = sign.map_or(signing.trust, |s| s.trust);
        let template_path = cx.resolve(&cfg.repo_conf_template);
        let template = fs::read_to_string(&template_path).map_err(|e| {
            cx.loaded.error_at("publish.repo_conf_template", format!("cannot read {template_path}: {e}"))
        })?;
        let url = format!("{}/${{ABI}}/latest", cx.config().repository.url.trim_end_matches('/'));
        let conf = render_repo_conf(&template, &cx.config().repository.name, &url, mode, cfg)
            .with_context(|| format!("cannot render the repo conf from {template_path}"))?;
        let pubkey_path = sign.and_then(|s| s.pubkey.clone()).unwrap_or_else(|| cx.resolve(&signing.pubkey));
        let pubkey = fs::read(&pubkey_path).ok();
        if pubkey.is_none() && mode == TrustMode::Pubkey && !cx.dry_run {
            return Err(cx.loaded.error_at("signing.pubkey", format!("cannot read the public key {pubkey_path}")));
        }
        let fingerprint = match (mode, &pubkey) {
            (TrustMode::Fingerprints, Some(bytes)) => Some(pkgrepo::meta::fingerprint_file(&sha256_bytes(bytes))),
            _ => None,
        };
        let root = match target {
            Target::Local(p) => p.to_string(),
            Target::Remote { root, .. } => root.clone(),
        };
        let nginx = nginx_server_block(cx, &root)?;
        Ok(ClientFiles { conf, pubkey, fingerprint, nginx })
    }

    fn ssh(cx: &Cx, host: &str) -> CmdLine {
        CmdLine::tool(&cx.config().tools, Tool::ssh).arg(host).arg("--")
    }

    fn rsync(cx: &Cx) -> CmdLine {
        let tools = &cx.config().tools;
        CmdLine::tool(tools, Tool::rsync).args(["-e", tools.get(Tool::ssh)])
    }

    /// Runs a short command, failing with its output.
    fn run(cx: &Cx, cmd: &CmdLine) -> Result<String> {
        crate::proc::check_interrupted()?;
        let out = cmd.output(&cx.log)?;
        if !out.success() {
            bail!("{}", cmd.failure(&out));
        }
        Ok(out.stdout_str())
    }

    /// The remote ABI directory's entries and what `latest` names (read-only).
    fn remote_state(cx: &Cx, host: &str, dir: &str) -> Result<(Vec<String>, Option<String>)> {
        let ls = Self::ssh(cx, host).args(["ls", "-1a", &crate::proc::quote(dir)]);
        let out = ls.output(&cx.log)?;
        if !out.success() {
            return Ok((Vec::new(), None));
        }
        let entries: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
        let link = Self::ssh(cx, host).args(["readlink", &crate::proc::quote(&format!("{dir}/latest"))]);
        let latest = link.output(&cx.log)?;
        let latest = latest
            .success()
            .then(|| latest.stdout_str().trim().trim_end_matches('/').to_owned())
            .filter(|v| is_version(v) && !v.contains('/'));
        Ok((entries, latest))
    }

    fn plan_release(&self, cx: &Cx, target: &Target, abi: &str, steps: &mut Plan) -> Result<Release> {
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
                steps.run(&Self::ssh(cx, host).args(["ls", "-1a", &crate::proc::quote(&dir)]));
                let (_, latest) = Self::remote_state(cx, host, &dir)?;
                (latest, None, None)
            }
        };
        for p in &sign.packages {
            let rel = p.path.to_string();
            let link = match (&index, &previous) {
                (Some((dir, index)), Some(prev)) => {
                    let prev_dir = dir.join(prev);
                    index.matches(&rel, p.size, &p.sum) && index.known(&prev_dir, &rel).is_some()
                }
                // rsync decides by itself, with --link-dest.
                _ => false,
            };
            files.push(FileAction { rel, link });
        }
        Ok(Release { sign, manifest, version, previous, files, already })
    }

    fn plan_steps_local(&self, cx: &Cx, root: &Utf8Path, abi: &str, work: &Work, steps: &mut Plan) {
        let dir = root.join(abi);
        match work {
            Work::Publish(r) => {
                if let Some(v) = &r.already {
                    steps.note(format!("latest ({v}) already serves this release: nothing to copy or switch"));
                    steps.check(format!("{}: verify the published copy", dir.join(v)));
                    return;
                }
                steps.push(Step::Mkdir { path: dir.clone() });
                let staging = dir.join(format!(".{}.tmp.PID.N", r.version));
                let linked = r.files.iter().filter(|f| f.link).count();
                if let Some(prev) = &r.previous {
                    steps.note(format!(
                        "latest is {prev}; {} hard-linked from it, unchanged",
                        plural(linked, "package")
                    ));
                } else {
                    steps.note("nothing is published for this ABI yet");
                }
                for f in r.files.iter().filter(|f| !f.link) {
                    steps.push(Step::Copy { from: r.sign.repo.join(&f.rel), to: staging.join(&f.rel) });
                }
                steps.push(Step::Copy { from: r.manifest.clone(), to: staging.join("manifest.json") });
                steps.check(format!(
                    "{staging}: signatures ({}), sizes and sums, as sign does",
                    mode_word(r.sign.trust)
                ));
                steps.push(Step::Rename { from: staging, to: dir.join(&r.version) });
                self.client_steps(cx, root.as_str(), steps);
                steps.push(Step::Rename { from: dir.join(".latest.tmp.PID.N"), to: dir.join("latest") });
                steps.note(format!("latest -> {}", r.version));
                let mut versions = local_versions(&dir);
                versions.push(r.version.clone());
                for old in to_prune(&versions, cx.config().publish.keep, &r.version) {
                    steps.push(Step::Remove { path: dir.join(old) });
                }
            }
            Work::Rollback { to, from } => {
                steps.check(format!("{}: verify it, as sign does", dir.join(to)));
                steps.push(Step::Rename { from: dir.join(".latest.tmp.PID.N"), to: dir.join("latest") });
                steps.note(format!("latest -> {to} (was {})", from.as_deref().unwrap_or("nothing")));
            }
        }
    }

    fn client_steps(&self, cx: &Cx, root: &str, steps: &mut Plan) {
        let name = &cx.config().repository.name;
        steps.push(Step::Write { path: format!("{root}/{name}.conf").into(), what: "client repo conf".into() });
        steps.push(Step::Write { path: format!("{root}/{name}.pub").into(), what: "release public key".into() });
    }

    fn remote_commands(&self, cx: &Cx, host: &str, root: &str, abi: &str, r: &Release) -> Result<RemoteCommands> {
        let dir = format!("{root}/{abi}");
        let stage = cx.stage_dir(StageName::Publish)?;
        let list = stage.join("files-from.txt");
        let partial = format!("{dir}/.{}.partial", r.version);
        // Content decides, not modification times (-rlp --checksum, no -t): a package
        // equal to the previous version's is hard-linked to it (--link-dest, given as an
        // absolute path: rsync 3.2 mishandles a relative one into a new directory).
        let mut copy = Self::rsync(cx).args(["-rlp", "--checksum", "--files-from", list.as_str()]);
        if let Some(prev) = &r.previous {
            copy = copy.arg(format!("--link-dest={dir}/{prev}"));
        }
        let source = format!("{}/", r.sign.repo);
        let copy = copy.arg(&source).arg(format!("{host}:{partial}/"));
        let manifest = Self::rsync(cx).args(["-a", r.manifest.as_str(), &format!("{host}:{partial}/manifest.json")]);
        let compare = Self::rsync(cx)
            .args(["-rlp", "--checksum", "--dry-run", "--itemize-changes", "--files-from", list.as_str()])
            .arg(&source)
            .arg(format!("{host}:{partial}/"));
        let mkdir = Self::ssh(cx, host).args(["mkdir", "-p", &crate::proc::quote(&dir)]);
        let rename = Self::ssh(cx, host).args([
            "mv",
            &crate::proc::quote(&partial),
            &crate::proc::quote(&format!("{dir}/{}", r.version)),
        ]);
        let link_dir = stage.join("latest-link");
        // rsync replaces a symlink by creating it under a temporary name and renaming it:
        // the switch is atomic on the remote host too.
        let switch = Self::rsync(cx).args(["-l", link_dir.join("latest").as_str(), &format!("{host}:{dir}/")]);
        Ok(RemoteCommands { list, link_dir, mkdir, copy, manifest, compare, rename, switch })
    }
}

/// The commands of a remote publish.
struct RemoteCommands {
    list: Utf8PathBuf,
    link_dir: Utf8PathBuf,
    mkdir: CmdLine,
    copy: CmdLine,
    manifest: CmdLine,
    compare: CmdLine,
    rename: CmdLine,
    switch: CmdLine,
}

fn mode_word(mode: TrustMode) -> &'static str {
    match mode {
        TrustMode::Pubkey => "pubkey mode",
        TrustMode::Fingerprints => "fingerprints mode",
    }
}

/// Renders the client repo conf: the placeholders, the repository name, and in
/// fingerprints mode the trust lines.
fn render_repo_conf(template: &str, name: &str, url: &str, mode: TrustMode, cfg: &PublishConfig) -> Result<String> {
    for placeholder in ["__PKG_URL__", "__PUBKEY_PATH__"] {
        if !template.contains(placeholder) {
            bail!("the template has no {placeholder}");
        }
    }
    let text = template.replace("__PKG_URL__", url).replace("__PUBKEY_PATH__", &cfg.client_pubkey);
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if indent.is_empty() && trimmed.starts_with("clawdie:") {
            out.push_str(&format!("{name}:{}", &trimmed["clawdie:".len()..]));
        } else if mode == TrustMode::Fingerprints && trimmed.starts_with("signature_type:") {
            out.push_str(&format!("{indent}signature_type: \"fingerprints\","));
        } else if mode == TrustMode::Fingerprints && trimmed.starts_with("pubkey:") {
            out.push_str(&format!("{indent}fingerprints: \"{}\",", cfg.client_fingerprints));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// The nginx server block for the site.
fn nginx_server_block(cx: &Cx, root: &str) -> Result<String> {
    let cfg = &cx.config().publish;
    let url = &cx.config().repository.url;
    let host_port = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest).split('/').next().unwrap_or_default();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host_port, None),
    };
    let server_name = if cfg.server_name.is_empty() { host.to_owned() } else { cfg.server_name.clone() };
    if server_name.is_empty() || server_name.contains(|c: char| c.is_whitespace() || c == ';' || c == '{') {
        return Err(cx.loaded.error_at("publish.server_name", format!("`{server_name}` is not a server name")));
    }
    let tls = !cfg.tls_certificate.is_empty();
    let body = format!(
        "    server_name {server_name};\n    root {root};\n    autoindex on;\n\n    # Staging copies, the publish lock and the verification index stay private.\n    location ~ /\\. {{\n        deny all;\n    }}\n    # The catalogues change with every release: no client may keep a stale one.\n    location ~ /(meta\\.conf|meta|data\\.pkg|packagesite\\.pkg|files\\.pkg)$ {{\n        add_header Cache-Control \"no-cache\";\n    }}\n"
    );
    let mut out = format!(
        "# nginx server block for the pkg repository {url}, written by `cargo xtask publish`.\n# Include it in nginx.conf's http block. Clients fetch {}/${{ABI}}/latest/.\n",
        url.trim_end_matches('/')
    );
    if tls {
        out.push_str(&format!(
            "server {{\n    listen 80;\n    listen [::]:80;\n    server_name {server_name};\n    location ^~ /.well-known/acme-challenge/ {{\n        root {root};\n    }}\n    location / {{\n        return 301 https://$host$request_uri;\n    }}\n}}\n\nserver {{\n    listen {p} ssl;\n    listen [::]:{p} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n{body}}}\n",
            cfg.tls_certificate,
            cfg.tls_certificate_key,
            p = port.unwrap_or("443"),
        ));
    } else {
        out.push_str(&format!(
            "server {{\n    listen {p};\n    listen [::]:{p};\n{body}}}\n",
            p = port.unwrap_or("80")
        ));
    }
    Ok(out)
}

impl Stage for Publish {
    const NAME: StageName = StageName::Publish;
    type Outputs = PublishOutputs;
    type Plan = PublishPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let cfg = cx.config();
        let mut fp = Fingerprint::new();
        fp.json("repository", &cfg.repository).json("signing", &cfg.signing).json("rollback", &self.rollback);
        fp.file("template", &cx.resolve(&cfg.publish.repo_conf_template))?;
        // What `latest` serves is not an input (it is what publish changes): whether it
        // still names this stage's version is `outputs_intact`'s question.
        Ok(fp)
    }

    fn outputs_intact(&self, cx: &Cx, outputs: &PublishOutputs) -> bool {
        match Target::parse(&cx.config().publish.target, cx) {
            Ok(Target::Local(root)) => {
                local_latest(&root.join(&cx.config().repository.abi)).as_deref() == Some(outputs.version.as_str())
            }
            _ => true,
        }
    }

    fn plan(&self, cx: &Cx) -> Result<PublishPlan> {
        let cfg = &cx.config().publish;
        if cfg.keep == 0 {
            return Err(cx.loaded.error_at("publish.keep", "keep must be at least 1 (the version `latest` names)"));
        }
        let target = Target::parse(&cfg.target, cx)?;
        let abi = Self::abi(cx)?;
        let mut steps = Plan::default();
        let work = match &self.rollback {
            Some(wanted) => {
                let (versions, current) = match &target {
                    Target::Local(root) => {
                        let dir = root.join(&abi);
                        let versions = if wanted.is_empty() { rollback_candidates(&dir) } else { local_versions(&dir) };
                        (versions, local_latest(&dir))
                    }
                    Target::Remote { host, root } => {
                        let dir = format!("{root}/{abi}");
                        steps.run(&Self::ssh(cx, host).args(["ls", "-1a", &crate::proc::quote(&dir)]));
                        let (entries, latest) = Self::remote_state(cx, host, &dir)?;
                        let mut v: Vec<String> = entries.into_iter().filter(|e| is_version(e)).collect();
                        v.sort();
                        (v, latest)
                    }
                };
                let to = rollback_target(&versions, current.as_deref(), wanted)?;
                Work::Rollback { to, from: current }
            }
            None => Work::Publish(Box::new(self.plan_release(cx, &target, &abi, &mut steps)?)),
        };
        let sign = match &work {
            Work::Publish(r) => Some(&r.sign),
            Work::Rollback { .. } => None,
        };
        let client = match self.client_files(cx, sign, &target) {
            Ok(c) => c,
            Err(e) if cx.dry_run => {
                steps.note(format!("the client files cannot be made yet: {e:#}"));
                ClientFiles::default()
            }
            Err(e) => return Err(e),
        };
        match &target {
            Target::Local(root) => self.plan_steps_local(cx, root, &abi, &work, &mut steps),
            Target::Remote { host, root } => match &work {
                Work::Publish(r) => {
                    let c = self.remote_commands(cx, host, root, &abi, r)?;
                    steps.push(Step::Write {
                        path: c.list.clone(),
                        what: format!("{} to copy", plural(r.files.len(), "file")),
                    });
                    for cmd in [&c.mkdir, &c.copy, &c.manifest, &c.compare, &c.rename] {
                        steps.run(cmd);
                    }
                    steps.note("the comparison must list no file: the remote copy equals the verified repository");
                    self.client_steps(cx, root, &mut steps);
                    steps.run(&c.switch);
                    steps.note(format!("latest -> {}", r.version));
                }
                Work::Rollback { to, .. } => {
                    let stage = cx.stage_dir(StageName::Publish)?;
                    let switch = Self::rsync(cx).args([
                        "-l",
                        stage.join("latest-link/latest").as_str(),
                        &format!("{host}:{root}/{abi}/"),
                    ]);
                    steps.run(&switch);
                    steps.note(format!("latest -> {to}"));
                }
            },
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
        Ok(PublishPlan { steps, target, abi, work, client })
    }

    fn execute(&self, cx: &mut Cx, plan: PublishPlan) -> Result<PublishOutputs> {
        let stage = cx.stage_dir(StageName::Publish)?;
        let repo_conf = stage.join("repo.conf");
        write_if_changed(&repo_conf, plan.client.conf.as_bytes())?;
        let nginx = stage.join("nginx.conf");
        write_if_changed(&nginx, plan.client.nginx.as_bytes())?;
        cx.note(format!("wrote {} and {}", cx.run.rel(&repo_conf), cx.run.rel(&nginx)));
        let abi = plan.abi.clone();
        let url = Self::url(cx, &abi);
        let mut outputs = PublishOutputs {
            version: String::new(),
            url: url.clone(),
            local: None,
            repo_conf: cx.run.rel(&repo_conf),
            previous: None,
            client_url: format!("{}/${{ABI}}/latest", cx.config().repository.url.trim_end_matches('/')),
            nginx: Some(cx.run.rel(&nginx)),
            copied: 0,
            linked: 0,
            data_sha256: String::new(),
        };
        let served = match (&plan.target, plan.work) {
            (Target::Local(root), Work::Publish(r)) => local::publish(cx, root, &abi, *r, &plan.client, &mut outputs)?,
            (Target::Local(root), Work::Rollback { to, from }) => {
                local::rollback(cx, root, &abi, &to, from.as_deref(), &mut outputs)?
            }
            (Target::Remote { host, root }, Work::Publish(r)) => {
                let commands = self.remote_commands(cx, host, root, &abi, &r)?;
                remote::publish(cx, host, root, &abi, *r, commands, &plan.client, &mut outputs)?
            }
            (Target::Remote { host, root }, Work::Rollback { to, from }) => {
                remote::rollback(cx, host, root, &abi, &to, from.as_deref(), &mut outputs)?
            }
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

/// Writes `bytes` to `path` atomically, unless it already holds exactly them (no rewrite,
/// no fsync: a release that changes little does little).
fn write_if_changed(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fsx::write_atomic(path, bytes)
}

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

impl Publish {
    /// `cargo xtask publish`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}

/// What a dry run assumes sign will record when it has not run: the repository bulk
/// recorded (or poudriere's, from the configuration) and the configured key.
fn placeholder_sign(cx: &Cx) -> Result<SignOutputs> {
    let repo = if cx.has_output(StageName::Bulk) {
        cx.output::<crate::bulk::BulkOutputs>(StageName::Bulk)?.repo
    } else {
        let p = &cx.config().poudriere;
        Utf8PathBuf::from(format!("/usr/local/poudriere/data/packages/{}-{}/.latest", p.jail, p.tree))
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
    })
}

/// The ABI sign checked the packages against.
fn release_abi(cx: &Cx, sign: &SignOutputs) -> String {
    if sign.abi.is_empty() { cx.config().repository.abi.clone() } else { sign.abi.clone() }
}

/// The trust clients of this release use: what sign verified with.
fn release_trust(cx: &Cx, sign: Option<&SignOutputs>) -> Result<Trust> {
    let signing = &cx.config().signing;
    Ok(match (sign.map_or(signing.trust, |s| s.trust), sign) {
        (TrustMode::Fingerprints, Some(SignOutputs { fingerprints: Some(dir), .. })) => Trust::fingerprints(dir),
        (TrustMode::Fingerprints, _) => Trust::fingerprints(&cx.resolve(&signing.fingerprints)),
        (TrustMode::Pubkey, Some(SignOutputs { pubkey: Some(p), .. })) => Trust::pubkey(p),
        (TrustMode::Pubkey, _) => Trust::pubkey(&cx.resolve(&signing.pubkey)),
    }?)
}

/// The local target: hard links, fsync, verification, one rename.
mod local {
    use super::*;

    /// Holds `.publish.lock` in the ABI directory: one publish at a time per target.
    struct TargetLock {
        _file: fs::File,
    }

    fn lock(dir: &Utf8Path) -> Result<TargetLock> {
        use std::os::fd::AsRawFd;
        let path = dir.join(".publish.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {path}"))?;
        // SAFETY: flock on a valid, open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            bail!("another publish to {dir} is in progress (it holds {path})\nhelp: wait for it to finish");
        }
        Ok(TargetLock { _file: file })
    }

    /// Removes a staging directory unless disarmed.
    struct Staging {
        path: Utf8PathBuf,
        armed: bool,
    }

    impl Drop for Staging {
        fn drop(&mut self) {
            if self.armed {
                let _ = fs::remove_dir_all(&self.path);
            }
        }
    }

    fn copy_file(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
        let mut src = fs::File::open(from).with_context(|| format!("cannot open {from}"))?;
        let mut dst = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .with_context(|| format!("cannot create {to}"))?;
        std::io::copy(&mut src, &mut dst).with_context(|| format!("cannot copy {from} to {to}"))?;
        dst.sync_all().with_context(|| format!("cannot sync {to}"))?;
        Ok(())
    }

    fn place(from: &Utf8Path, to: &Utf8Path, link_from: Option<&Utf8Path>) -> Result<bool> {
        if let Some(dir) = to.parent()
            && !dir.is_dir()
        {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
        }
        if let Some(prev) = link_from
            && fs::hard_link(prev, to).is_ok()
        {
            return Ok(true);
        }
        copy_file(from, to)?;
        Ok(false)
    }

    fn sync_tree(dir: &Utf8Path) -> Result<()> {
        for entry in dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                sync_tree(entry.path())?;
            }
        }
        fsx::sync_dir(dir)
    }

    /// Verifies a version directory; returns the report and an index of its files.
    fn verify_version(
        abi: &str,
        dir: &Utf8Path,
        trust: &Trust,
        fingerprint: &str,
        known: &Index,
        known_dir: &Utf8Path,
    ) -> Result<(verify::Report, Index)> {
        let lookup = |rel: &str| known.known(known_dir, rel);
        let opts = verify::Options {
            trust,
            abi,
            sha256: false,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            progress: &|_| {},
            known: Some(&lookup),
            files: true,
            stop: &|| Ok(crate::proc::check_interrupted()?),
        };
        let report = verify::verify(dir, &opts)?;
        if !report.ok() {
            let lines: Vec<String> = report.problems.iter().map(|p| format!("  {p}")).collect();
            bail!("{dir} failed verification:\n{}", lines.join("\n"));
        }
        if !fingerprint.is_empty() && !report.signed_by(fingerprint) {
            bail!("{dir} is not signed by the release key {fingerprint}");
        }
        let mut index = Index { schema: 1, files: BTreeMap::new() };
        for (rel, d) in &report.digests {
            let m = fs::metadata(dir.join(rel)).with_context(|| format!("cannot stat {}", dir.join(rel)))?;
            index.files.insert(
                rel.clone(),
                IndexEntry {
                    size: m.len(),
                    dev: m.dev(),
                    ino: m.ino(),
                    mtime: m.mtime(),
                    mtime_nsec: m.mtime_nsec(),
                    blake2b: d.blake2b.clone(),
                    sha256: d.sha256.clone(),
                },
            );
        }
        Ok((report, index))
    }

    pub fn write_client_files(cx: &Cx, root: &Utf8Path, client: &ClientFiles) -> Result<()> {
        let name = &cx.config().repository.name;
        write_if_changed(&root.join(format!("{name}.conf")), client.conf.as_bytes())?;
        if let Some(key) = &client.pubkey {
            write_if_changed(&root.join(format!("{name}.pub")), key)?;
        }
        if let Some(fp) = &client.fingerprint {
            write_if_changed(&root.join(format!("{name}.fingerprint")), fp.as_bytes())?;
        }
        Ok(())
    }

    fn served_info(
        dir: &Utf8Path,
        version: &str,
        previous: Option<&str>,
        fetch: Vec<PackageRecord>,
        trust: Trust,
    ) -> Result<Served> {
        let vdir = dir.join(version);
        let mut catalogues = BTreeMap::new();
        for archive in ["data.pkg", "packagesite.pkg"] {
            catalogues.insert(archive.to_owned(), sha256_file(&vdir.join(archive))?);
        }
        let previous = previous
            .filter(|p| *p != version)
            .and_then(|p| sha256_file(&dir.join(p).join("data.pkg")).ok().map(|s| (p.to_owned(), s)));
        let meta =
            fs::read(vdir.join("meta.conf")).with_context(|| format!("cannot read {}", vdir.join("meta.conf")))?;
        Ok(Served { version: version.to_owned(), catalogues, previous, meta, fetch, trust })
    }

    pub fn publish(
        cx: &Cx,
        root: &Utf8Path,
        abi: &str,
        mut r: Release,
        client: &ClientFiles,
        outputs: &mut PublishOutputs,
    ) -> Result<Served> {
        let dir = root.join(abi);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
        let _lock = lock(&dir)?;
        fsx::remove_stale_temps(&dir);
        let now = local_latest(&dir);
        if now != r.previous {
            bail!(
                "`latest` in {dir} changed while this publish was planned (now {})\nhelp: run `cargo xtask publish` again",
                now.as_deref().unwrap_or("nothing")
            );
        }
        let trust = release_trust(cx, Some(&r.sign))?;
        let fetch_of = |copied: &[&FileAction]| -> Vec<PackageRecord> {
            let first_copied = r.sign.packages.iter().find(|p| copied.iter().any(|f| f.rel == p.path.as_str()));
            first_copied.or(r.sign.packages.first()).cloned().into_iter().collect()
        };

        if let Some(version) = &r.already {
            let vdir = dir.join(version);
            let index = Index::read(&vdir);
            verify_version(&release_abi(cx, &r.sign), &vdir, &trust, &r.sign.key_fingerprint, &index, &vdir)?;
            write_client_files(cx, root, client)?;
            cx.say(format!("latest ({version}) already serves this release; verified it again"));
            outputs.version = version.clone();
            outputs.local = Some(vdir);
            outputs.previous = Some(version.clone());
            return served_info(&dir, version, None, fetch_of(&[]), trust);
        }

        // A publish killed after its rename may have left a complete version of the
        // same name (same second, same catalogue): never write into it.
        let base = r.version.clone();
        let mut n = 2;
        while dir.join(&r.version).exists() {
            r.version = format!("{base}-{n}");
            n += 1;
        }
        let prev_dir = r.previous.as_ref().map(|p| dir.join(p));
        let prev_index = prev_dir.as_ref().map(|d| Index::read(d)).unwrap_or_default();
        let staging_path = fsx::temp_beside(&dir.join(&r.version));
        fs::create_dir(&staging_path).with_context(|| format!("cannot create {staging_path}"))?;
        let mut staging = Staging { path: staging_path.clone(), armed: true };
        let bar = cx.ui.progress("publish", r.files.len() as u64 + 1, false);
        let (mut copied, mut linked) = (Vec::new(), 0usize);
        for f in &r.files {
            crate::proc::check_interrupted()?;
            let from = r.sign.repo.join(&f.rel);
            let to = staging_path.join(&f.rel);
            let link_from = prev_dir.as_ref().filter(|_| f.link).map(|d| d.join(&f.rel));
            if place(&from, &to, link_from.as_deref())? {
                linked += 1;
            } else {
                copied.push(f);
            }
            bar.inc(1, &f.rel);
        }
        copy_file(&r.manifest, &staging_path.join("manifest.json"))?;
        bar.inc(1, "manifest.json");
        drop(bar);
        sync_tree(&staging_path)?;
        let packages_copied = copied.iter().filter(|f| f.rel.ends_with(".pkg") && f.rel.contains('/')).count();
        cx.say(format!(
            "copied {} and {} into {}; {} hard-linked from {}",
            plural(packages_copied, "package"),
            plural(copied.len() - packages_copied, "catalogue file"),
            staging_path,
            plural(linked, "package"),
            r.previous.as_deref().unwrap_or("nothing")
        ));

        // The copy must verify before anyone can see it.
        let known_dir = staging_path.clone();
        let (_, mut index) = verify_version(
            &release_abi(cx, &r.sign),
            &staging_path,
            &trust,
            &r.sign.key_fingerprint,
            &prev_index,
            &known_dir,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "the new copy failed verification; nothing was switched and latest still serves {}:\n{e:#}",
                r.previous.as_deref().unwrap_or("nothing")
            )
        })?;
        index.schema = 1;
        let mut text = serde_json::to_vec_pretty(&index)?;
        text.push(b'\n');
        fsx::write_atomic(&staging_path.join(INDEX), &text)?;

        let final_dir = dir.join(&r.version);
        fs::rename(&staging_path, &final_dir)
            .with_context(|| format!("cannot rename {staging_path} to {final_dir}"))?;
        staging.armed = false;
        fsx::sync_dir(&dir)?;
        write_client_files(cx, root, client)?;
        fsx::symlink_atomic(Utf8Path::new(&r.version), &dir.join("latest"))?;
        record_served(&dir, &r.version)?;
        cx.say(format!(
            "latest -> {} (was {}): {url}",
            r.version,
            r.previous.as_deref().unwrap_or("nothing"),
            url = Publish::url(cx, abi)
        ));
        prune(cx, &dir, &r.version)?;

        outputs.version = r.version.clone();
        outputs.local = Some(final_dir);
        outputs.previous = r.previous.clone();
        outputs.copied = packages_copied;
        outputs.linked = linked;
        served_info(&dir, &r.version, r.previous.as_deref(), fetch_of(&copied), trust)
    }

    fn prune(cx: &Cx, dir: &Utf8Path, latest: &str) -> Result<()> {
        for old in to_prune(&local_versions(dir), cx.config().publish.keep, latest) {
            let path = dir.join(&old);
            // Out of sight first (a hidden name), then removed.
            let aside = fsx::temp_beside(&path);
            fs::rename(&path, &aside).with_context(|| format!("cannot rename {path} to {aside}"))?;
            fs::remove_dir_all(&aside).with_context(|| format!("cannot remove {aside}"))?;
            cx.say(format!("removed the old version {old}"));
        }
        Ok(())
    }

    pub fn rollback(
        cx: &Cx,
        root: &Utf8Path,
        abi: &str,
        to: &str,
        from: Option<&str>,
        outputs: &mut PublishOutputs,
    ) -> Result<Served> {
        let dir = root.join(abi);
        let _lock = lock(&dir)?;
        let vdir = dir.join(to);
        let trust = release_trust(cx, None)?;
        let index = Index::read(&vdir);
        verify_version(&cx.config().repository.abi, &vdir, &trust, "", &index, &vdir)
            .map_err(|e| anyhow::anyhow!("cannot roll back to {to}: {e:#}"))?;
        fsx::symlink_atomic(Utf8Path::new(to), &dir.join("latest"))?;
        cx.say(format!("rolled back: latest -> {to} (was {})", from.unwrap_or("nothing")));
        outputs.version = to.to_owned();
        outputs.local = Some(vdir.clone());
        outputs.previous = from.map(str::to_owned);
        let manifest: Option<crate::sign::Manifest> =
            fs::read(vdir.join("manifest.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let fetch = manifest.and_then(|m| m.packages.into_iter().next()).into_iter().collect();
        served_info(&dir, to, from, fetch, trust)
    }
}

/// The remote target: rsync with --link-dest, a checksum comparison, and rsync's atomic
/// symlink replacement.
mod remote {
    use super::*;

    fn latest_link(c: &RemoteCommands, version: &str) -> Result<()> {
        let _ = fs::remove_dir_all(&c.link_dir);
        fs::create_dir_all(&c.link_dir).with_context(|| format!("cannot create {}", c.link_dir))?;
        std::os::unix::fs::symlink(version, c.link_dir.join("latest"))
            .with_context(|| format!("cannot create {}", c.link_dir.join("latest")))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        cx: &Cx,
        host: &str,
        root: &str,
        abi: &str,
        r: Release,
        c: RemoteCommands,
        client: &ClientFiles,
        outputs: &mut PublishOutputs,
    ) -> Result<Served> {
        let dir = format!("{root}/{abi}");
        let list: String = r.files.iter().map(|f| format!("{}\n", f.rel)).collect();
        fsx::write_atomic(&c.list, list.as_bytes())?;
        Publish::run(cx, &c.mkdir)?;
        let (entries, latest) = Publish::ssh_state(cx, host, &dir)?;
        if latest != r.previous {
            bail!(
                "`latest` on {host}:{dir} changed while this publish was planned (now {})\nhelp: run `cargo xtask publish` again",
                latest.as_deref().unwrap_or("nothing")
            );
        }
        // Leftovers of interrupted publishes.
        for e in entries.iter().filter(|e| e.starts_with('.') && e.ends_with(".partial")) {
            Publish::run(cx, &Publish::ssh(cx, host).args(["rm", "-rf", &crate::proc::quote(&format!("{dir}/{e}"))]))?;
        }
        cx.say(format!(
            "copying to {host}:{dir} (unchanged files linked against {})",
            r.previous.as_deref().unwrap_or("nothing")
        ));
        Publish::run(cx, &c.copy)?;
        Publish::run(cx, &c.manifest)?;
        let differences = Publish::run(cx, &c.compare)?;
        let changed: Vec<&str> =
            differences.lines().filter(|l| l.starts_with(['<', '>', 'c', '*']) || l.starts_with("deleting")).collect();
        if !changed.is_empty() {
            bail!(
                "the copy on {host} differs from the verified repository {}; nothing was switched:\n  {}",
                r.sign.repo,
                changed.join("\n  ")
            );
        }
        Publish::run(cx, &c.rename)?;
        let stage = cx.stage_dir(StageName::Publish)?;
        let client_dir = stage.join("client");
        let _ = fs::remove_dir_all(&client_dir);
        local::write_client_files(cx, &client_dir, client)?;
        Publish::run(cx, &Publish::rsync(cx).args(["-a", &format!("{client_dir}/"), &format!("{host}:{root}/")]))?;
        latest_link(&c, &r.version)?;
        Publish::run(cx, &c.switch)?;
        cx.say(format!("latest -> {} on {host} (was {})", r.version, r.previous.as_deref().unwrap_or("nothing")));
        let mut versions: Vec<String> = entries.into_iter().filter(|e| is_version(e)).collect();
        versions.push(r.version.clone());
        versions.sort();
        for old in to_prune(&versions, cx.config().publish.keep, &r.version) {
            Publish::run(
                cx,
                &Publish::ssh(cx, host).args(["rm", "-rf", &crate::proc::quote(&format!("{dir}/{old}"))]),
            )?;
            cx.say(format!("removed the old version {old}"));
        }
        outputs.version = r.version.clone();
        outputs.previous = r.previous.clone();
        outputs.copied = r.files.iter().filter(|f| f.rel.contains('/')).count();
        let trust = release_trust(cx, Some(&r.sign))?;
        let meta = fs::read(r.sign.repo.join("meta.conf")).context("cannot read meta.conf")?;
        // What the previous publish recorded tells the old release apart.
        let previous = r.previous.as_ref().and_then(|prev| {
            let last = cx.run.run()?.state.record(StageName::Publish)?.last_success.as_ref()?;
            let out: PublishOutputs = serde_json::from_value(last.outputs.clone()).ok()?;
            (out.version == *prev && !out.data_sha256.is_empty()).then(|| (prev.clone(), out.data_sha256))
        });
        Ok(Served {
            version: r.version.clone(),
            catalogues: r.sign.catalogues.clone(),
            previous,
            meta,
            fetch: r.sign.packages.first().cloned().into_iter().collect(),
            trust,
        })
    }

    pub fn rollback(
        cx: &Cx,
        host: &str,
        root: &str,
        abi: &str,
        to: &str,
        from: Option<&str>,
        outputs: &mut PublishOutputs,
    ) -> Result<Served> {
        let stage = cx.stage_dir(StageName::Publish)?;
        let link_dir = stage.join("latest-link");
        let _ = fs::remove_dir_all(&link_dir);
        fs::create_dir_all(&link_dir)?;
        std::os::unix::fs::symlink(to, link_dir.join("latest"))?;
        Publish::run(
            cx,
            &Publish::rsync(cx).args(["-l", link_dir.join("latest").as_str(), &format!("{host}:{root}/{abi}/")]),
        )?;
        cx.say(format!("rolled back on {host}: latest -> {to} (was {})", from.unwrap_or("nothing")));
        outputs.version = to.to_owned();
        outputs.previous = from.map(str::to_owned);
        // The catalogues of a remote version are known only from what is served.
        Ok(Served {
            version: to.to_owned(),
            catalogues: BTreeMap::new(),
            previous: None,
            meta: Vec::new(),
            fetch: Vec::new(),
            trust: release_trust(cx, None)?,
        })
    }
}

impl Publish {
    fn ssh_state(cx: &Cx, host: &str, dir: &str) -> Result<(Vec<String>, Option<String>)> {
        Self::remote_state(cx, host, dir)
    }
}

/// Fetching what the public URL serves and verifying it.
mod check {
    use super::*;

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
        let help = "help: check the web server's root for this site, and any cache in front of it; `cargo xtask publish --rollback` switches back";

        let data_url = format!("{url}/data.pkg");
        fetch(&agent, &data_url, &dir.join("data.pkg"))
            .map_err(|e| anyhow::anyhow!("the check of the published repository failed: {e:#}\ncannot tell whether the old or the new release is being served\n{help}"))?;
        let data_sha = sha256_file(&dir.join("data.pkg"))?;
        let which = if s.catalogues.get("data.pkg").is_some_and(|n| *n == data_sha) {
            format!("the new release ({}) is being served", s.version)
        } else if let Some((old, sha)) = &s.previous
            && *sha == data_sha
        {
            bail!(
                "{data_url} is the old release ({old}), not {}: the old release is still being served\n{help}",
                s.version
            );
        } else if s.catalogues.is_empty() {
            format!("release {} should be served", s.version)
        } else {
            bail!(
                "{data_url} is neither the new release ({}) nor the previous one: an unknown catalogue is being served\n{help}",
                s.version
            );
        };
        let fail = |what: String| anyhow::anyhow!("{what}\n{which}, and clients cannot use it\n{help}");

        for f in ["packagesite.pkg", "meta.conf"] {
            let u = format!("{url}/{f}");
            fetch(&agent, &u, &dir.join(f)).map_err(|e| fail(format!("{e:#}")))?;
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
            trust: &s.trust,
            abi: &abi,
            sha256: false,
            threads: 1,
            progress: &|_| {},
            known: None,
            files: false,
            stop: &|| Ok(crate::proc::check_interrupted()?),
        };
        let report = verify::verify(&dir, &opts)?;
        if let Some(p) = report.problems.first() {
            let file = p.subject.split(':').next().unwrap_or(&p.subject);
            return Err(fail(format!("{url}/{file}: {}", p.message.clone() + &more(report.problems.len()))));
        }
        for p in &s.fetch {
            let u = format!("{url}/{}", p.path);
            let to = dir.join(&p.path);
            fetch(&agent, &u, &to).map_err(|e| fail(format!("{e:#}")))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_and_latest() {
        let v: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(to_prune(&v, 2, "d"), ["a", "b"]);
        assert_eq!(to_prune(&v, 2, "b"), ["a", "c"]);
        assert_eq!(to_prune(&v, 1, "d"), ["a", "b", "c"]);
        assert!(to_prune(&v, 9, "d").is_empty());
    }

    #[test]
    fn rollback_picks_the_version_before_latest() {
        let v: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(rollback_target(&v, Some("c"), "").unwrap(), "b");
        assert_eq!(rollback_target(&v, Some("c"), "a").unwrap(), "a");
        assert!(rollback_target(&v, Some("a"), "").is_err());
        assert!(rollback_target(&v, Some("c"), "z").unwrap_err().to_string().contains("a, b, c"));
    }

    #[test]
    fn version_names_sort_by_time() {
        let v = version_name("3e37873f895788288a5c");
        assert_eq!(v.len(), "20260620T120000.123Z-3e37873f".len(), "{v}");
        assert!(v.ends_with("Z-3e37873f"));
    }
}
