//! The files publish leaves for clients and the operator: the client repo conf, the
//! release public key (or, in fingerprints mode, its trust file) at the top of the site,
//! and the nginx server block in the run directory.

use crate::failure::Failure;
use std::fs;

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};

use super::template::{self, RenderError, Syntax, Value};
use super::{PublishConfig, Target};
use crate::config::{Loaded, TrustMode};
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
    let signing = &cx.config().signing;
    let mode = sign.map_or(signing.trust, |s| s.trust);
    let conf = repo_conf(cx, mode)?;
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
    let nginx = nginx_server_block(&cx.config().repository.url, &cx.config().publish, &root, false)
        .map_err(|e| located(cx.loaded, e))?;
    Ok(ClientFiles { conf, pubkey, fingerprint, nginx })
}

/// The repo conf template: publish.repo_conf_template, or the built-in one. Returns the
/// name errors give it and its text.
pub fn repo_conf_template(cx: &Cx) -> Result<(String, String)> {
    let setting = &cx.config().publish.repo_conf_template;
    if setting.as_str().is_empty() {
        return Ok((BUILT_IN_REPO_CONF.to_owned(), template::REPO_CONF.to_owned()));
    }
    let path = cx.resolve(setting);
    let text = fs::read_to_string(&path)
        .map_err(|e| cx.loaded.error_at("publish.repo_conf_template", format!("cannot read {path}: {e}")))?;
    if text.contains("__PKG_URL__") || text.contains("__PUBKEY_PATH__") {
        return Err(cx
            .loaded
            .failure_at(
                "publish.repo_conf_template",
                format!("{path} has the old placeholders __PKG_URL__ and __PUBKEY_PATH__"),
            )
            .help(format!(
                "write {{{{NAME}}}}, {{{{PKG_URL}}}}, {{{{SIGNATURE_TYPE}}}} and {{{{TRUST_PATH}}}} as {BUILT_IN_REPO_CONF} does, or leave publish.repo_conf_template empty to use that one"
            ))
            .into());
    }
    Ok((path.into_string(), text))
}

/// Where the built-in repo conf template lives in this repository.
const BUILT_IN_REPO_CONF: &str = "xtask/src/publish/templates/repo.conf.in";

/// The client repo conf for `mode`.
fn repo_conf(cx: &Cx, mode: TrustMode) -> Result<String> {
    let (source, template) = repo_conf_template(cx)?;
    let repository = &cx.config().repository;
    let values = repo_conf_values(&repository.name, &repository.url, mode, &cx.config().publish);
    template::render(&source, &template, &values).map_err(|e| located(cx.loaded, e))
}

/// The values of the repo conf's placeholders.
fn repo_conf_values(name: &str, url: &str, mode: TrustMode, cfg: &PublishConfig) -> Vec<Value> {
    let (signature_type, trust_path, trust_setting) = match mode {
        TrustMode::Pubkey => ("pubkey", &cfg.client_pubkey, "publish.client_pubkey"),
        TrustMode::Fingerprints => ("fingerprints", &cfg.client_fingerprints, "publish.client_fingerprints"),
    };
    vec![
        Value::new("NAME", name, "repository.name", Syntax::UclKey),
        Value::new(
            "PKG_URL",
            format!("{}/${{ABI}}/latest", url.trim_end_matches('/')),
            "repository.url",
            Syntax::UclString,
        ),
        Value::new("SIGNATURE_TYPE", signature_type, "signing.trust", Syntax::UclKey),
        Value::new("TRUST_PATH", trust_path.as_str(), trust_setting, Syntax::UclString),
    ]
}

/// The nginx server block for the site at `root`, served at `url` (repository.url). With
/// `hold_back_tls`, a TLS block is replaced by its port-80 part that answers the ACME
/// challenge (nginx refuses a certificate it cannot load, and the certificate is got
/// through that challenge).
pub fn nginx_server_block(
    url: &str,
    cfg: &PublishConfig,
    root: &str,
    hold_back_tls: bool,
) -> Result<String, RenderError> {
    let (host, port) = url_host(url);
    let server_name = if cfg.server_name.is_empty() {
        Value::new("SERVER_NAME", host, "repository.url", Syntax::NginxWord)
    } else {
        Value::new("SERVER_NAME", cfg.server_name.as_str(), "publish.server_name", Syntax::NginxWord)
    };
    let tls = !cfg.tls_certificate.is_empty();
    let default_port = if tls { "443" } else { "80" };
    let mut values = vec![
        Value::new("URL", url, "repository.url", Syntax::Comment),
        Value::new("BASE_URL", url.trim_end_matches('/'), "repository.url", Syntax::Comment),
        Value::new("PORT", port.unwrap_or(default_port), "repository.url", Syntax::NginxWord),
        server_name,
        Value::new("ROOT", root, "publish.target", Syntax::NginxWord),
    ];
    if !tls {
        return template::render(BUILT_IN_NGINX, template::NGINX, &values);
    }
    values.push(Value::new(
        "TLS_CERTIFICATE",
        cfg.tls_certificate.as_str(),
        "publish.tls_certificate",
        Syntax::NginxWord,
    ));
    values.push(Value::new(
        "TLS_CERTIFICATE_KEY",
        cfg.tls_certificate_key.as_str(),
        "publish.tls_certificate_key",
        Syntax::NginxWord,
    ));
    if hold_back_tls {
        // Port 80 only: the port of repository.url is the TLS server's.
        values.retain(|v| v.placeholder != "PORT");
        return template::render(BUILT_IN_NGINX_ACME, template::NGINX_ACME, &values);
    }
    template::render(BUILT_IN_NGINX_TLS, template::NGINX_TLS, &values)
}

/// The host and port of a URL: `https://pkg.example:8443/` gives `pkg.example` and `8443`.
fn url_host(url: &str) -> (&str, Option<&str>) {
    let host_port = url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next().unwrap_or_default();
    match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host_port, None),
    }
}

/// The server block's `server_name`: publish.server_name, else the host of repository.url.
pub fn server_name<'a>(url: &'a str, cfg: &'a PublishConfig) -> &'a str {
    if cfg.server_name.is_empty() { url_host(url).0 } else { &cfg.server_name }
}

const BUILT_IN_NGINX: &str = "xtask/src/publish/templates/nginx.conf.in";
const BUILT_IN_NGINX_TLS: &str = "xtask/src/publish/templates/nginx-tls.conf.in";
const BUILT_IN_NGINX_ACME: &str = "xtask/src/publish/templates/nginx-acme.conf.in";

/// A rendering error, pointed at the setting whose value is at fault.
pub fn located(loaded: &Loaded, e: RenderError) -> anyhow::Error {
    let failure = match e.setting() {
        Some(setting) => loaded.failure_at(setting, &e),
        None => Failure::new(e.to_string()),
    };
    match e.help() {
        Some(help) => failure.help(help).into(),
        None => failure.into(),
    }
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

/// Writes `bytes` to `path` atomically, unless it already holds exactly them (no rewrite,
/// no fsync: a release that changes little does little).
fn write_if_changed(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fsx::write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_conf(mode: TrustMode, url: &str, cfg: &PublishConfig) -> Result<String, RenderError> {
        template::render("repo.conf.in", template::REPO_CONF, &repo_conf_values("clawdie", url, mode, cfg))
    }

    #[test]
    fn the_built_in_repo_conf_is_filled_in_for_each_trust_mode() {
        let cfg = PublishConfig::default();
        let conf = repo_conf(TrustMode::Pubkey, "https://pkg.clawdie.si/", &cfg).unwrap();
        assert!(!conf.contains("{{"), "{conf}");
        assert!(
            conf.ends_with(
                "clawdie: {\n  url: \"https://pkg.clawdie.si/${ABI}/latest\",\n  signature_type: \"pubkey\",\n  pubkey: \"/usr/share/keys/pkg/clawdie.pub\",\n  enabled: yes,\n  priority: 10\n}\n"
            ),
            "{conf}"
        );
        assert!(
            conf.starts_with(
                "# The clawdie pkg repository: signed packages from https://pkg.clawdie.si/${ABI}/latest.\n"
            )
        );
        let conf = repo_conf(TrustMode::Fingerprints, "https://pkg.clawdie.si", &cfg).unwrap();
        assert!(
            conf.ends_with(
                "clawdie: {\n  url: \"https://pkg.clawdie.si/${ABI}/latest\",\n  signature_type: \"fingerprints\",\n  fingerprints: \"/usr/share/keys/pkg/clawdie\",\n  enabled: yes,\n  priority: 10\n}\n"
            ),
            "{conf}"
        );
    }

    #[test]
    fn the_built_in_nginx_blocks_are_filled_in_with_and_without_tls() {
        let mut cfg = PublishConfig::default();
        let tls = nginx_server_block("https://pkg.clawdie.si/", &cfg, "/usr/local/www/pkg.clawdie.si", false).unwrap();
        assert!(!tls.contains("{{"), "{tls}");
        for line in [
            "# nginx server block for the pkg repository https://pkg.clawdie.si/, written by `cargo xtask publish`.\n",
            "Clients fetch https://pkg.clawdie.si/${ABI}/latest/.\n",
            "    listen 443 ssl;\n    listen [::]:443 ssl;\n",
            "    ssl_certificate /usr/local/etc/ssl/pkg.clawdie.si/fullchain.pem;\n",
            "    ssl_certificate_key /usr/local/etc/ssl/pkg.clawdie.si/privkey.pem;\n",
            "    server_name pkg.clawdie.si;\n    root /usr/local/www/pkg.clawdie.si;\n    autoindex on;\n",
            "        return 301 https://$host$request_uri;\n",
        ] {
            assert!(tls.contains(line), "{line:?} missing:\n{tls}");
        }
        cfg.tls_certificate.clear();
        cfg.server_name = "pkg.example".into();
        let plain = nginx_server_block("http://127.0.0.1:8080/", &cfg, "/srv/site", false).unwrap();
        assert!(!plain.contains("{{") && !plain.contains("ssl"), "{plain}");
        assert!(
            plain.contains(
                "server {\n    listen 8080;\n    listen [::]:8080;\n    server_name pkg.example;\n    root /srv/site;\n"
            ),
            "{plain}"
        );
    }

    #[test]
    fn values_that_would_break_a_file_are_refused_naming_their_setting() {
        let cfg = PublishConfig::default();
        let setting_of = |e: RenderError| e.setting().unwrap();
        // The repo conf: a quote ends pkg's string, a line break is refused by libucl.
        assert_eq!(setting_of(repo_conf(TrustMode::Pubkey, "https://x/\"", &cfg).unwrap_err()), "repository.url");
        let bad = PublishConfig { client_pubkey: "/keys/a\nb.pub".into(), ..PublishConfig::default() };
        assert_eq!(setting_of(repo_conf(TrustMode::Pubkey, "https://x/", &bad).unwrap_err()), "publish.client_pubkey");
        let bad = PublishConfig { client_fingerprints: "/keys/\"fp".into(), ..PublishConfig::default() };
        let err = repo_conf(TrustMode::Fingerprints, "https://x/", &bad).unwrap_err();
        assert_eq!(err.setting(), Some("publish.client_fingerprints"));
        assert!(err.to_string().contains("cannot go into a quoted string of the client repo conf: it holds `\"`"));
        let values = repo_conf_values("../clawdie", "https://x/", TrustMode::Pubkey, &cfg);
        let err = template::render("repo.conf.in", template::REPO_CONF, &values).unwrap_err();
        assert_eq!(err.setting(), Some("repository.name"));
        // The nginx block: `;`, `{`, whitespace and quotes end or open nginx words.
        let err = nginx_server_block("https://x/", &cfg, "/srv/a;b", false).unwrap_err();
        assert_eq!(err.setting(), Some("publish.target"));
        assert!(
            err.to_string()
                .starts_with("publish.target \"/srv/a;b\" cannot go into the nginx server block: it holds `;`")
        );
        let bad = PublishConfig { tls_certificate: "/etc/{cert}.pem".into(), ..PublishConfig::default() };
        assert_eq!(
            setting_of(nginx_server_block("https://x/", &bad, "/srv", false).unwrap_err()),
            "publish.tls_certificate"
        );
        let bad = PublishConfig { tls_certificate_key: "/etc/my key.pem".into(), ..PublishConfig::default() };
        assert_eq!(
            setting_of(nginx_server_block("https://x/", &bad, "/srv", false).unwrap_err()),
            "publish.tls_certificate_key"
        );
        let bad = PublishConfig { server_name: "a b".into(), ..PublishConfig::default() };
        assert_eq!(
            setting_of(nginx_server_block("https://x/", &bad, "/srv", false).unwrap_err()),
            "publish.server_name"
        );
        // Without publish.server_name, the name comes from repository.url.
        assert_eq!(setting_of(nginx_server_block("https:///", &cfg, "/srv", false).unwrap_err()), "repository.url");
        assert_eq!(setting_of(nginx_server_block("https://x/\nb", &cfg, "/srv", false).unwrap_err()), "repository.url");
    }
}
