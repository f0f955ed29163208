//! The server block as this host's nginx serves it (publish.nginx_block): the block
//! publish renders, with its TLS server held back while the certificate or its key does
//! not exist (nginx refuses a whole configuration whose certificate it cannot load, and
//! the certificate is got through the ACME challenge this block answers on port 80);
//! the `include` line nginx.conf needs for it (setup adds it); and, in publish, rewriting
//! the block when it changed, checked with `nginx -t` and applied with `service nginx
//! reload`, and only then. docs/reference/freebsd-host.md, "nginx".

use std::fs;
use std::io::ErrorKind;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::Target;
use super::client::{located, nginx_server_block, server_name};
use super::template::{self, Syntax, Value};
use crate::config::{Loaded, Tool, Tools};
use crate::failure;
use crate::fsx;
use crate::proc::CmdLine;
use crate::stage::{Cx, Plan, Step};

/// Whether this host's nginx serves the repository.
pub enum Serving {
    Here(Box<Installed>),
    /// Not here, and why (for setup's line).
    Elsewhere(String),
}

/// Whether the block serves TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// publish.tls_certificate is empty: plain HTTP.
    Off,
    /// The certificate and its key exist.
    Ready { certificate: Utf8PathBuf, key: Utf8PathBuf },
    /// Either is missing: the block answers only the ACME challenge.
    HeldBack { certificate: Utf8PathBuf, key: Utf8PathBuf, missing: Vec<Utf8PathBuf> },
}

/// The server block to install on this host, and where.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Where it goes (publish.nginx_block).
    pub block: Utf8PathBuf,
    /// nginx's configuration file (publish.nginx_conf).
    pub conf: Utf8PathBuf,
    /// The block.
    pub text: String,
    /// `include BLOCK;`, the line nginx.conf's http block needs.
    pub include: String,
    pub tls: Tls,
    /// The site's directory (publish.target) and the block's server_name.
    pub root: Utf8PathBuf,
    pub server_name: String,
    tools: Tools,
}

/// The server block this host's nginx should serve, if it serves the repository.
pub fn serving(loaded: &Loaded) -> Result<Serving> {
    let cfg = &loaded.config.publish;
    if cfg.nginx_block.is_empty() {
        return Ok(Serving::Elsewhere("publish.nginx_block is empty: mother-build leaves nginx alone".into()));
    }
    let root = match Target::parse(&cfg.target, loaded)? {
        Target::Local(root) => root,
        Target::Remote { host, .. } => {
            return Ok(Serving::Elsewhere(format!(
                "publish.target is on {host}: that host's nginx serves the repository"
            )));
        }
    };
    let block = loaded.resolve(Utf8Path::new(&cfg.nginx_block));
    let conf = loaded.resolve(Utf8Path::new(&cfg.nginx_conf));
    let include = template::render(
        "the include line",
        "include {{BLOCK}};",
        &[Value::new("BLOCK", block.as_str(), "publish.nginx_block", Syntax::NginxWord)],
    )
    .map_err(|e| located(loaded, e))?;
    // nginx reads a relative certificate path against its configuration's directory.
    let conf_dir = conf.parent().unwrap_or(Utf8Path::new("/"));
    let tls = if cfg.tls_certificate.is_empty() {
        Tls::Off
    } else {
        let certificate = conf_dir.join(&cfg.tls_certificate);
        let key = conf_dir.join(&cfg.tls_certificate_key);
        let missing: Vec<Utf8PathBuf> = [&certificate, &key].into_iter().filter(|p| !p.is_file()).cloned().collect();
        if missing.is_empty() { Tls::Ready { certificate, key } } else { Tls::HeldBack { certificate, key, missing } }
    };
    let url = &loaded.config.repository.url;
    let held_back = matches!(tls, Tls::HeldBack { .. });
    let text = nginx_server_block(url, cfg, root.as_str(), held_back).map_err(|e| located(loaded, e))?;
    Ok(Serving::Here(Box::new(Installed {
        block,
        conf,
        text,
        include,
        tls,
        root,
        server_name: server_name(url, cfg).to_owned(),
        tools: loaded.config.tools.clone(),
    })))
}

impl Installed {
    /// `nginx -t -c CONF`: nginx's own check of the whole configuration.
    pub fn test(&self) -> CmdLine {
        CmdLine::tool(&self.tools, Tool::nginx).args(["-t", "-c", self.conf.as_str()])
    }

    /// `service nginx ACTION` (the www/nginx rc script: status, start, reload).
    pub fn service(&self, action: &str) -> CmdLine {
        CmdLine::tool(&self.tools, Tool::service).args(["nginx", action])
    }

    /// What the block serves, for messages.
    pub fn describe(&self) -> String {
        match &self.tls {
            Tls::Off => "plain HTTP (publish.tls_certificate is empty)".into(),
            Tls::Ready { certificate, .. } => format!("TLS with {certificate}"),
            Tls::HeldBack { missing, .. } => format!(
                "the ACME challenge on port 80 only: the TLS server is held back until {} {}",
                missing.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" and "),
                if missing.len() == 1 { "exists" } else { "exist" }
            ),
        }
    }

    /// How to get the certificate: acme.sh through the challenge the held-back block
    /// answers, then installed where publish.tls_certificate and _key say.
    pub fn acme_steps(&self) -> Vec<String> {
        let (certificate, key) = match &self.tls {
            Tls::Ready { certificate, key } | Tls::HeldBack { certificate, key, .. } => (certificate, key),
            Tls::Off => return Vec::new(),
        };
        let domain = &self.server_name;
        vec![
            format!(
                "get it with acme.sh (pkg install acme.sh), which answers the HTTP-01 challenge from {} through the port-80 server nginx runs now:",
                self.root
            ),
            format!("  acme.sh --issue -d {domain} --webroot {}", self.root),
            format!(
                "  acme.sh --install-cert -d {domain} --fullchain-file {certificate} --key-file {key} --reloadcmd \"service nginx reload\""
            ),
            "then rerun `cargo xtask setup`: it installs the TLS server".into(),
        ]
    }

    /// What `publish --dry-run` shows: the block rewritten and nginx reloaded when it
    /// changed; nothing when it did not or is not installed.
    pub fn plan_steps(&self, steps: &mut Plan) {
        match fs::read(&self.block) {
            Ok(old) if old == self.text.as_bytes() => {
                steps.check(format!(
                    "the nginx server block {} is current ({}): nginx is not reloaded",
                    self.block,
                    self.describe()
                ));
            }
            Ok(_) => {
                steps.push(Step::Write {
                    path: self.block.clone(),
                    what: format!("nginx server block: {}", self.describe()),
                });
                steps.run(&self.test());
                steps.run(&self.service("reload"));
            }
            Err(_) => steps.note(format!(
                "the nginx server block {} is not installed (`cargo xtask setup` installs it): nginx is left alone",
                self.block
            )),
        }
    }

    /// Rewrites the installed block when it changed, and reloads nginx: `nginx -t` first,
    /// and a block nginx refuses is replaced by the old one again.
    pub fn apply(&self, cx: &Cx) -> Result<()> {
        let old = match fs::read(&self.block) {
            Ok(old) => old,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                cx.say(format!(
                    "{} is not installed (`cargo xtask setup` installs it): nginx is left alone",
                    self.block
                ));
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.block)),
        };
        if old == self.text.as_bytes() {
            return Ok(());
        }
        fsx::write_atomic(&self.block, self.text.as_bytes())?;
        let test = self.test();
        let out = test.output(&cx.log)?;
        if !out.success() {
            fsx::write_atomic(&self.block, &old)?;
            bail!(
                failure!(
                    "nginx refuses the new server block {}; the old one is back and nginx was not reloaded:\n{}",
                    self.block,
                    test.failure(&out)
                )
                .help("nginx's message names the file and line: fix the setting of [publish] behind it, or the rest of nginx's configuration")
                .infrastructure()
            );
        }
        let reload = self.service("reload");
        let out = reload.output(&cx.log)?;
        if !out.success() {
            bail!(
                failure!(
                    "the new server block {} is in place, but nginx did not reload:\n{}",
                    self.block,
                    reload.failure(&out)
                )
                .help("is nginx running? `cargo xtask setup` enables and starts it (or: service nginx start)")
                .infrastructure()
            );
        }
        cx.say(format!("nginx reloaded: the server block {} changed ({})", self.block, self.describe()));
        Ok(())
    }
}
