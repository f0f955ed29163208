//! demo: the whole pipeline, all seven stages, on the example colibri in a scratch
//! directory of a plain Linux machine. Each stage runs really where Linux can do the
//! work, or against the simulated FreeBSD host (`simhost/`) where only FreeBSD can, and
//! the demo says which, per stage, on the terminal and in the run's report. The release
//! runs twice: the second finds every stage up to date. It ends with the report's path.
//!
//! mother-build itself does not know it is a demo: the demo writes a pipeline.toml whose
//! `[tools]` name the simulated host's programs, provisions that host as `setup` would
//! (poudriere.conf, jail, trees; a signing key made for the demo), serves the publish
//! target with a private nginx on 127.0.0.1, and runs `release` on it.

mod host;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::cli::{Cli, Demo};
use crate::config::Loaded;
use crate::engine::{Engine, ReleaseOpts};
use crate::proc::CmdLine;
use crate::run::Log;
use crate::ui::Ui;
use host::{GateMode, Host, Nginx};

impl Demo {
    pub fn run(&self, cli: &Cli, ui: &Ui) -> Result<()> {
        let root = crate::project_root();
        let dir = match &self.dir {
            Some(d) => crate::config::absolute(d)?,
            None => root.join("target/mother-build-demo"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
        let log = Log::open(&dir.join("demo.log"))?;
        log.line(&format!("==== cargo xtask demo at {} ====", crate::run::now_rfc3339()));
        let colibri = dir.join("colibri");
        prepare_colibri(&colibri, &log)?;
        let host = Host::look(&dir, self.no_qemu);
        // The simulated host's advisory database, copied afresh: as current as an
        // operator's `git pull` today (audit.max_age_days).
        let db = dir.join("advisory-db");
        if db.exists() {
            std::fs::remove_dir_all(&db).with_context(|| format!("cannot remove {db}"))?;
        }
        copy_tree(&host.simhost.join("advisory-db"), &db)?;

        // The configuration once without a URL (to make the key and provision poudriere),
        // then with the URL nginx serves on.
        let config = write_config(&root, &host, &colibri, cli, None)?;
        let loaded = load(&config)?;
        host.make_key(&loaded, &log)?;
        host.provision_poudriere(&loaded, &log)?;
        let nginx = match &host.nginx {
            Some(program) => Some(Nginx::start(program, &dir.join("site"), &dir.join("nginx"), &log)?),
            None => None,
        };
        let url = nginx.as_ref().map(|n| n.url.clone());
        let result = (|| {
            let config = write_config(&root, &host, &colibri, cli, url.as_deref())?;
            let loaded = load(&config)?;
            release_twice(&loaded, &host, url.as_deref(), ui)
        })();
        if let Some(nginx) = nginx {
            nginx.stop();
        }
        result
    }
}

fn load(config: &Utf8Path) -> Result<Loaded> {
    Loaded::load(&crate::config::Invocation { config: Some(config.to_owned()), ..Default::default() })
}

fn release_twice(loaded: &Loaded, host: &Host, url: Option<&str>, ui: &Ui) -> Result<()> {
    let engine = Engine::new(loaded, ui);
    ui.eprintln(&ui.bold(&format!("mother-build demo in {} (pipeline: {})", host.dir, loaded.path)));
    ui.eprintln("how each stage runs on this machine:");
    for (stage, note) in host.notes(url) {
        ui.eprintln(&format!("  {:<8} {note}", stage.as_str()));
    }
    ui.eprintln(&ui.bold("\n1. the release: every stage whose inputs changed"));
    engine.release(&ReleaseOpts::default(), &crate::engine::default_stage)?;
    ui.eprintln(&ui.bold("\n2. the release again: nothing changed, so every stage is skipped"));
    engine.release(&ReleaseOpts::default(), &crate::engine::default_stage)?;
    let current = engine.state.current()?.context("the demo's release left no run")?;
    let report = current.dir.join(crate::report::REPORT);
    ui.eprintln(&format!("\nstate and logs: {}   ({})", engine.state.root(), loaded.xtask("status")));
    ui.eprintln(&format!("what changed between runs: {}", loaded.xtask("diff")));
    ui.eprintln(&ui.bold(&format!("the report: {report}")));
    ui.eprintln(&format!("open it: {}", loaded.xtask("report --open")));
    Ok(())
}

/// Makes (or reuses) a git checkout of the example colibri tagged v0.9.0.
fn prepare_colibri(dir: &Utf8Path, log: &Log) -> Result<()> {
    if dir.join(".git").exists() {
        return Ok(());
    }
    let fixture = crate::project_root().join("xtask/tests/fixtures/colibri");
    let staging = crate::fsx::temp_beside(dir);
    copy_tree(&fixture, &staging)?;
    let git = |args: &[&str]| {
        CmdLine::new("git")
            .arg("-C")
            .arg(staging.as_str())
            .args([
                "-c",
                "user.name=mother-build demo",
                "-c",
                "user.email=demo@clawdie.si",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "tag.gpgsign=false",
            ])
            .args(args.iter().copied())
            .env("GIT_AUTHOR_DATE", "1781913600 +0000")
            .env("GIT_COMMITTER_DATE", "1781913600 +0000")
            .run(log)
            .map(|_| ())
    };
    git(&["init", "-q"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "colibri 0.9.0"])?;
    git(&["tag", "-a", "-m", "colibri 0.9.0", "v0.9.0"])?;
    std::fs::rename(&staging, dir).with_context(|| format!("cannot rename {staging} to {dir}"))?;
    Ok(())
}

fn copy_tree(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {to}"))?;
    for entry in from.read_dir_utf8().with_context(|| format!("cannot read {from}"))? {
        let entry = entry?;
        let dst = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(entry.path(), &dst)?;
            }
        } else {
            std::fs::copy(entry.path(), &dst).with_context(|| format!("cannot copy {} to {dst}", entry.path()))?;
        }
    }
    Ok(())
}

/// The demo's pipeline.toml: this repository's, pointed at the demo directory, its
/// `[tools]` naming the simulated host's programs where FreeBSD's are needed. `url`:
/// where nginx serves the publish target (none: nginx is missing).
fn write_config(root: &Utf8Path, host: &Host, colibri: &Utf8Path, cli: &Cli, url: Option<&str>) -> Result<Utf8PathBuf> {
    let dir = &host.dir;
    let source = cli.config.clone().unwrap_or_else(|| root.join("pipeline.toml"));
    let text = std::fs::read_to_string(&source).with_context(|| format!("cannot read {source}"))?;
    let mut table: toml::Table = toml::from_str(&text).with_context(|| format!("{source} is not valid TOML"))?;
    let mut set = |table_name: &str, key: &str, value: toml::Value| {
        let mut t = &mut table;
        for part in table_name.split('.') {
            let entry = t.entry(part).or_insert_with(|| toml::Value::Table(Default::default()));
            let Some(inner) = entry.as_table_mut() else { return };
            t = inner;
        }
        t.insert(key.into(), value);
    };
    let path = |p: Utf8PathBuf| toml::Value::String(p.into_string());
    let s = |v: &str| toml::Value::String(v.to_owned());
    let strings = |v: &[&str]| toml::Value::Array(v.iter().map(|x| toml::Value::String(x.to_string())).collect());
    let sim = |p: &str| host.simhost.join(p).into_string();

    set("pipeline", "state_dir", path(dir.join("state")));
    set("port", "colibri", path(colibri.to_owned()));
    set("port", "overlay", path(dir.join("ports")));
    // makesum runs for real without the network: crates from cargo's cache (the example
    // colibri's are the xtask's own dependencies), its source archive from the checkout.
    set("makesum", "source_from_checkout", toml::Value::Boolean(true));
    set("makesum", "offline", toml::Value::Boolean(true));
    // audit against the simulated host's small advisory database (copied by `run`).
    set("audit", "advisory_db", path(dir.join("advisory-db")));
    // poudriere on the simulated host, as setup would configure it there.
    let pou = dir.join("poudriere");
    set("poudriere", "etc", path(pou.join("etc")));
    set("poudriere", "basefs", path(pou.join("basefs")));
    set("poudriere", "data", path(pou.join("data")));
    set("poudriere", "distfiles", path(dir.join("distfiles")));
    set("poudriere", "no_zfs", toml::Value::Boolean(true));
    set("tools", "poudriere", s(&sim("poudriere/poudriere")));
    set("tools", "pkg", s(&sim("iso/pkg")));
    // The demo's own key, never the site's.
    set("signing", "key", path(host.key()));
    set("signing", "pubkey", path(host.pubkey()));
    set("signing", "trust", s("pubkey"));
    set("sign", "method", s("native"));
    // publish to a local target that the private nginx serves; nginx's own files are
    // the demo's, so publish leaves nginx alone.
    set("publish", "target", path(dir.join("site")));
    set("publish", "nginx_block", s(""));
    set("publish", "tls_certificate", s(""));
    set("publish", "check_timeout_secs", toml::Value::Integer(10));
    match url {
        Some(url) => {
            set("repository", "url", s(url));
            set("publish", "check", toml::Value::Boolean(true));
        }
        None => {
            set("repository", "url", s("http://127.0.0.1/"));
            set("publish", "check", toml::Value::Boolean(false));
            set("iso", "source", s("scratch"));
        }
    }
    set("iso", "root", path(dir.join("iso/root")));
    set("iso", "enable_services", strings(&["colibri_daemon"]));
    set("gate", "probes", toml::Value::Array(Vec::new()));
    set("gate", "settle_secs", toml::Value::Integer(1));
    set("gate", "grace_secs", toml::Value::Integer(2));
    set("gate", "retries", toml::Value::Integer(0));
    set("gate", "timeout_secs", toml::Value::Integer(240));
    match &host.gate {
        GateMode::Qemu { kernel } => {
            let image = dir.join("iso/clawdie.img");
            set("iso", "image", path(image.clone()));
            set("iso", "build_command", strings(&[&sim("gate/build-image"), "{root}", "{image}"]));
            set("gate", "backend", s("qemu"));
            set("gate", "memory", s("128M"));
            set("gate", "cpus", toml::Value::Integer(1));
            set("gate.qemu", "kernel", path(kernel.clone()));
            set("gate.qemu", "initrd", path(image));
            // The kernel's own messages too: the console the report shows is a whole boot.
            set("gate.qemu", "append", s("console=ttyS0 panic=-1"));
            let mut panic = toml::Table::new();
            panic.insert("name".into(), s("linux-panic"));
            panic.insert("regex".into(), s("Kernel panic - not syncing"));
            set("gate", "forbidden_extra", toml::Value::Array(vec![toml::Value::Table(panic)]));
        }
        GateMode::Replay { .. } => {
            set("iso", "build_command", toml::Value::Array(Vec::new()));
            set("gate", "backend", s("command"));
            set("gate.command", "program", strings(&[&sim("gate/replay-console"), &sim("gate/console.txt")]));
        }
    }
    let notes: toml::Table =
        host.notes(url).into_iter().map(|(stage, note)| (stage.as_str().to_owned(), s(&note))).collect();
    set("report", "notes", toml::Value::Table(notes));
    let path = dir.join("pipeline.toml");
    let header = format!(
        "# Generated by `cargo xtask demo` from {source}: the pipeline on the example colibri,\n# against the simulated FreeBSD host in {} where only FreeBSD can do the work.\n",
        host.simhost
    );
    crate::fsx::write_atomic(&path, format!("{header}{}", toml::to_string(&table)?).as_bytes())?;
    Ok(path)
}
