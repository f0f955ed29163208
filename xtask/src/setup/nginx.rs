//! setup's nginx items, for a host that serves the repository itself (a local
//! publish.target): the package, the server block publish renders (installed at
//! publish.nginx_block, its TLS server held back until the certificate exists), the
//! `include` of it inside nginx.conf's `http` block (www/nginx installs no include
//! directory), nginx enabled in rc.conf and running (reloaded when its configuration
//! changed, after `nginx -t`), and the TLS certificate. The facts:
//! docs/reference/freebsd-host.md, "nginx".

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use camino::Utf8PathBuf;

use super::inspect::{backup_path, package_item, probe};
use super::{Action, Custom, Item, State};
use crate::config::{Loaded, Tool};
use crate::failure;
use crate::fsx;
use crate::proc::CmdLine;
use crate::publish::nginx::{Installed, Serving, Tls, serving};
use crate::run::Log;
use crate::stage::{Cx, Plan, Step};

/// The items, in the order setup puts them in place.
pub(super) fn inspect(loaded: &Loaded, log: &Log) -> Result<Vec<Item>> {
    let site = match serving(loaded)? {
        Serving::Here(site) => *site,
        Serving::Elsewhere(why) => return Ok(vec![Item::ok("nginx", format!("not set up on this host: {why}"))]),
    };
    let cfg = &loaded.config;
    let package = package_item(cfg, log, "nginx", "nginx");
    let installed = matches!(package.state, State::Ok(_));
    let block = block_item(&site)?;
    let include = include_item(&site, installed)?;
    let changed = !block.actions.is_empty() || !include.actions.is_empty();
    let enabled = enabled_item(loaded, log);
    let running = running_item(&site, log, changed);
    let mut items = vec![package, block, include, enabled, running];
    if let Some(tls) = certificate_item(&site) {
        items.push(tls);
    }
    Ok(items)
}

fn block_item(site: &Installed) -> Result<Item> {
    let name = format!("nginx server block {}", site.block);
    let write = || {
        vec![Action::Write {
            path: site.block.clone(),
            text: site.text.clone(),
            backup: None,
            what: format!("the repository's server block: {}", site.describe()),
        }]
    };
    match fs::read(&site.block) {
        Ok(have) if have == site.text.as_bytes() => {
            Ok(Item::ok(name, format!("as publish renders it: {}", site.describe())))
        }
        // publish owns the file (its first line says so) and rewrites it whenever it
        // changes: setup does the same.
        Ok(_) => Ok(Item::fix(
            name,
            State::Differs(format!(
                "not what publish renders from pipeline.toml; setup rewrites it: {}",
                site.describe()
            )),
            write(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Item::fix(name, State::Missing(format!("setup writes it: {}", site.describe())), write()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", site.block)),
    }
}

fn include_item(site: &Installed, nginx_installed: bool) -> Result<Item> {
    let name = format!("nginx.conf {}", site.conf);
    let add = || {
        vec![Action::Custom(Arc::new(AddInclude {
            conf: site.conf.clone(),
            block: site.block.clone(),
            include: site.include.clone(),
        }))]
    };
    let text = match fs::read_to_string(&site.conf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !nginx_installed => {
            return Ok(Item::fix(
                name,
                State::Missing(format!("nginx installs it; setup then adds `{}` to its http block", site.include)),
                add(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Item::refuse(
                name,
                State::Missing("nginx is installed, but its configuration is not there".into()),
                "set publish.nginx_conf to nginx's configuration file (nginx -V names it after --conf-path)",
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", site.conf)),
    };
    if includes(&text, site.block.as_str()) {
        return Ok(Item::ok(name, format!("its http block has `{}`", site.include)));
    }
    match add_include(&text, &site.include) {
        Some(_) => Ok(Item::fix(
            name,
            State::Missing(format!("setup adds `{}` at the end of its http block (keeping a backup)", site.include)),
            add(),
        )),
        None => Ok(Item::refuse(
            name,
            State::Differs("setup cannot find its `http { ... }` block".into()),
            format!("add `{}` inside the http block yourself", site.include),
        )),
    }
}

fn enabled_item(loaded: &Loaded, log: &Log) -> Item {
    let tools = &loaded.config.tools;
    let query = CmdLine::tool(tools, Tool::sysrc).args(["-n", "-i", "nginx_enable"]);
    let enable = CmdLine::tool(tools, Tool::sysrc).arg("nginx_enable=YES");
    let name = "nginx at boot";
    match probe(&query, log) {
        // rc.subr's checkyesno() takes YES, TRUE, ON and 1, in any case.
        Ok(out)
            if out.success()
                && ["yes", "true", "on", "1"].contains(&out.stdout_str().trim().to_lowercase().as_str()) =>
        {
            Item::ok(name, "nginx_enable is YES in rc.conf")
        }
        Ok(_) => Item::fix(
            name,
            State::Missing(format!("nginx_enable is not YES in rc.conf; setup runs: {enable}")),
            vec![Action::Run(enable)],
        ),
        Err(e) => Item::refuse(name, State::Missing(e), "setup provisions a FreeBSD host"),
    }
}

fn running_item(site: &Installed, log: &Log, changed: bool) -> Item {
    let status = site.service("status");
    let name = "nginx running";
    let running = match probe(&status, log) {
        Ok(out) => out.success().then(|| out.stdout_str().trim().to_owned()),
        Err(e) => return Item::refuse(name, State::Missing(e), "setup provisions a FreeBSD host"),
    };
    let check = Action::Custom(Arc::new(ConfigTest { test: site.test() }));
    match running {
        Some(detail) if !changed => Item::ok(name, detail),
        Some(detail) => Item::fix(
            name,
            State::Differs(format!(
                "{detail}; its configuration changes: setup runs {} and {}",
                site.test(),
                site.service("reload")
            )),
            vec![check, Action::Run(site.service("reload"))],
        ),
        None => Item::fix(
            name,
            State::Missing(format!("nginx is not running; setup runs {} and {}", site.test(), site.service("start"))),
            vec![check, Action::Run(site.service("start"))],
        ),
    }
}

/// The TLS certificate: when it is missing setup does everything else (nginx then serves
/// the ACME challenge), then stops naming the acme step.
fn certificate_item(site: &Installed) -> Option<Item> {
    let name = "TLS certificate";
    match &site.tls {
        Tls::Off => None,
        Tls::Ready { certificate, key } => Some(Item::ok(name, format!("{certificate} and its key {key} exist"))),
        Tls::HeldBack { missing, .. } => {
            let missing: Vec<&str> = missing.iter().map(|p| p.as_str()).collect();
            Some(Item::refuse_after_the_rest(
                name,
                State::Missing(format!(
                    "{} {} (publish.tls_certificate, publish.tls_certificate_key): nginx serves only the ACME challenge until {}",
                    missing.join(" and "),
                    if missing.len() == 1 { "does not exist" } else { "do not exist" },
                    if missing.len() == 1 { "it does" } else { "they do" },
                )),
                site.acme_steps().join("\n"),
            ))
        }
    }
}

/// `nginx -t -c CONF` before nginx starts or reloads: a configuration nginx refuses is
/// reported with nginx's own words (start and reload would refuse it too).
#[derive(Debug)]
struct ConfigTest {
    test: CmdLine,
}

impl Custom for ConfigTest {
    fn steps(&self, steps: &mut Plan) {
        steps.run(&self.test);
    }

    fn perform(&self, cx: &Cx) -> Result<bool> {
        let out = self.test.output(&cx.log)?;
        if !out.success() {
            bail!(
                failure!("nginx refuses its configuration:\n{}", self.test.failure(&out))
                    .help("nginx's message names the file and line; fix it (or the [publish] setting behind it)")
                    .infrastructure()
            );
        }
        Ok(false)
    }
}

/// Adds `include BLOCK;` at the end of nginx.conf's http block, keeping a backup, unless
/// the file has it by then.
#[derive(Debug)]
struct AddInclude {
    conf: Utf8PathBuf,
    block: Utf8PathBuf,
    /// `include BLOCK;`
    include: String,
}

impl Custom for AddInclude {
    fn steps(&self, steps: &mut Plan) {
        steps.push(Step::Copy { from: self.conf.clone(), to: backup_path(&self.conf) });
        steps
            .push(Step::Write { path: self.conf.clone(), what: format!("`{}` added to its http block", self.include) });
    }

    fn perform(&self, cx: &Cx) -> Result<bool> {
        let conf = &self.conf;
        let text =
            fs::read_to_string(conf).with_context(|| format!("cannot read {conf} (does nginx install it here?)"))?;
        if includes(&text, self.block.as_str()) {
            return Ok(false);
        }
        let Some(new) = add_include(&text, &self.include) else {
            bail!(
                failure!("setup cannot find the `http {{ ... }}` block of {conf}")
                    .help(format!("add `{}` inside the http block yourself", self.include))
            );
        };
        let mode = fs::metadata(conf)?.permissions().mode() & 0o777;
        let backup = backup_path(conf);
        fsx::write_atomic_mode(&backup, text.as_bytes(), mode)?;
        fsx::write_atomic_mode(conf, new.as_bytes(), mode)?;
        cx.say(format!("added `{}` to the http block of {conf} (the old file is {backup})", self.include));
        Ok(true)
    }
}

/// Whether nginx.conf has an `include` of exactly `block` (not in a comment).
fn includes(text: &str, block: &str) -> bool {
    text.lines().any(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        matches!(words.as_slice(), ["include", path] | ["include", path, ";"] if path.trim_end_matches(';') == block)
    })
}

/// nginx.conf with `include` added as the last line of its top-level `http` block; None
/// when there is no such block. Comments and quoted strings are skipped, as nginx's
/// tokenizer (`ngx_conf_read_token()` in src/core/ngx_conf_file.c) skips them. The
/// include goes last so the servers already there stay the defaults of their ports.
fn add_include(text: &str, include: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut word = String::new();
    let mut last_word = String::new();
    let mut http_depth: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                word.clear();
                last_word = "\"".into();
            }
            b'{' => {
                if !word.is_empty() {
                    last_word = std::mem::take(&mut word);
                }
                if depth == 0 && last_word == "http" && http_depth.is_none() {
                    http_depth = Some(depth + 1);
                }
                depth += 1;
                last_word.clear();
            }
            b'}' => {
                if Some(depth) == http_depth {
                    return Some(insert_before_brace(text, i, include));
                }
                depth = depth.checked_sub(1)?;
                word.clear();
                last_word.clear();
            }
            b';' => {
                word.clear();
                last_word.clear();
            }
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    last_word = std::mem::take(&mut word);
                }
            }
            c => word.push(c as char),
        }
        i += 1;
    }
    None
}

/// `text` with `include` on its own line just before the `}` at byte `at`.
fn insert_before_brace(text: &str, at: usize, include: &str) -> String {
    let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let line = format!("    {include}\n");
    if text[line_start..at].trim().is_empty() {
        format!("{}{line}{}", &text[..line_start], &text[line_start..])
    } else {
        format!("{}\n{line}{}", &text[..at], &text[at..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx.conf as the www/nginx package installs it (nginx's conf/nginx.conf with the
    /// port's patch-conf-nginx.conf), shortened: a commented HTTPS server holds braces
    /// that must not count.
    const STOCK: &str = "\n#user  nobody;\nworker_processes  1;\n\nevents {\n    worker_connections  1024;\n}\n\n\nhttp {\n    include       mime.types;\n    default_type  application/octet-stream;\n\n    server {\n        listen       80;\n        server_name  localhost;\n\n        location / {\n            root   /usr/local/www/nginx;\n            index  index.html index.htm;\n        }\n    }\n\n    # HTTPS server\n    #\n    #server {\n    #    listen       443 ssl;\n    #}\n\n}\n";

    const INCLUDE: &str = "include /usr/local/etc/nginx/pkg.clawdie.si.conf;";

    #[test]
    fn the_include_goes_last_in_the_http_block() {
        let new = add_include(STOCK, INCLUDE).unwrap();
        assert!(new.ends_with("    #}\n\n    include /usr/local/etc/nginx/pkg.clawdie.si.conf;\n}\n"), "{new}");
        assert_eq!(new.replace("    include /usr/local/etc/nginx/pkg.clawdie.si.conf;\n", ""), STOCK);
        assert!(includes(&new, "/usr/local/etc/nginx/pkg.clawdie.si.conf"));
        assert!(!includes(STOCK, "/usr/local/etc/nginx/pkg.clawdie.si.conf"));
    }

    #[test]
    fn braces_in_strings_and_comments_and_a_brace_on_a_line_are_handled() {
        let text = "events {}\nhttp { # a { comment\n  log_format x '{ \"quoted }\"';\n  server { listen 80; } }\n";
        let new = add_include(text, INCLUDE).unwrap();
        assert_eq!(
            new,
            "events {}\nhttp { # a { comment\n  log_format x '{ \"quoted }\"';\n  server { listen 80; } \n    include /usr/local/etc/nginx/pkg.clawdie.si.conf;\n}\n"
        );
        // `http` as a word elsewhere is not the block; no http block, no insertion.
        assert_eq!(add_include("events {}\nstream { server { listen 12; } }\n", INCLUDE), None);
        assert_eq!(add_include("# http {\n}\n", INCLUDE), None);
        // A commented include does not count.
        assert!(!includes(
            "http {\n  # include /usr/local/etc/nginx/pkg.clawdie.si.conf;\n}\n",
            "/usr/local/etc/nginx/pkg.clawdie.si.conf"
        ));
        assert!(includes("http {\n  include   /x.conf ;\n}\n", "/x.conf"));
    }
}
