//! The files publish leaves for clients and the operator: the client repo conf, the
//! release public key (or, in fingerprints mode, its trust file) at the top of the site,
//! and the nginx server block in the run directory.

use std::fs;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::{PublishConfig, Target};
use crate::config::TrustMode;
use crate::fingerprint::sha256_bytes;
use crate::fsx;
use crate::sign::SignOutputs;
use crate::stage::{Cx, Plan, Step};

/// What publishing leaves for clients and for the operator.
#[derive(Debug, Default)]
pub struct ClientFiles {
    /// The rendered repo conf.
    conf: String,
    /// Public key bytes.
    pubkey: Option<Vec<u8>>,
    /// The trust file for fingerprints mode.
    fingerprint: Option<String>,
    nginx: String,
}

impl ClientFiles {
    /// Writes the operator's copies into the stage directory: `repo.conf` and the nginx
    /// server block `nginx.conf`. Returns their paths.
    pub fn write_copies(&self, stage: &Utf8Path) -> Result<(Utf8PathBuf, Utf8PathBuf)> {
        let repo_conf = stage.join("repo.conf");
        write_if_changed(&repo_conf, self.conf.as_bytes())?;
        let nginx = stage.join("nginx.conf");
        write_if_changed(&nginx, self.nginx.as_bytes())?;
        Ok((repo_conf, nginx))
    }
}

pub fn make(cx: &Cx, sign: Option<&SignOutputs>, target: &Target) -> Result<ClientFiles> {
    let cfg = &cx.config().publish;
    let signing = &cx.config().signing;
    let mode = sign.map_or(signing.trust, |s| s.trust);
    let template_path = cx.resolve(&cfg.repo_conf_template);
    let template = fs::read_to_string(&template_path)
        .map_err(|e| cx.loaded.error_at("publish.repo_conf_template", format!("cannot read {template_path}: {e}")))?;
    let url = format!("{}/${{ABI}}/latest", cx.config().repository.url.trim_end_matches('/'));
    let conf = render_repo_conf(&template, &cx.config().repository.name, &url, mode, cfg)
        .with_context(|| format!("cannot render the repo conf from {template_path}"))?;
    let pubkey_path = sign.and_then(|s| s.pubkey.clone()).unwrap_or_else(|| cx.resolve(&signing.pubkey));
    let pubkey = fs::read(&pubkey_path).ok();
    if pubkey.is_none() && mode == TrustMode::Pubkey && !cx.dry_run {
        return Err(cx.loaded.error_at("signing.pubkey", format!("cannot read the public key {pubkey_path}")));
    }
    let fingerprint = match (mode, &pubkey) {
        (TrustMode::Fingerprints, Some(bytes)) => Some(crate::pkgrepo::meta::fingerprint_file(&sha256_bytes(bytes))),
        _ => None,
    };
    let root = match target {
        Target::Local(p) => p.to_string(),
        Target::Remote { root, .. } => root.clone(),
    };
    let nginx = nginx_server_block(cx, &root)?;
    Ok(ClientFiles { conf, pubkey, fingerprint, nginx })
}

pub fn plan_steps(cx: &Cx, root: &str, steps: &mut Plan) {
    let name = &cx.config().repository.name;
    steps.push(Step::Write { path: format!("{root}/{name}.conf").into(), what: "client repo conf".into() });
    steps.push(Step::Write { path: format!("{root}/{name}.pub").into(), what: "release public key".into() });
}

/// Writes the repo conf and the trust files into `root`, the top of the site.
pub fn write_files(cx: &Cx, root: &Utf8Path, client: &ClientFiles) -> Result<()> {
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

/// Writes `bytes` to `path` atomically, unless it already holds exactly them (no rewrite,
/// no fsync: a release that changes little does little).
fn write_if_changed(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fsx::write_atomic(path, bytes)
}
