//! demo: the whole pipeline on the example colibri, in a scratch directory. The stages
//! a plain Linux machine can run, run for real; the rest are shown as the exact
//! commands they would run on mother-build (their `--dry-run` plans).

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::cli::{Cli, Demo};
use crate::config::Loaded;
use crate::engine::{Engine, ReleaseOpts};
use crate::proc::CmdLine;
use crate::run::Log;
use crate::stage::StageName;
use crate::ui::Ui;

/// Stages that need nothing FreeBSD-specific: they run for real in the demo. The rest
/// need poudriere's packages (which only a FreeBSD host builds) before they have
/// anything to work on.
const HOST_STAGES: &[StageName] = &[StageName::Port, StageName::Makesum];

impl Demo {
    pub fn run(&self, cli: &Cli, ui: &Ui) -> Result<()> {
        let root = crate::project_root();
        let dir = match &self.dir {
            Some(d) => crate::config::absolute(d)?,
            None => root.join("target/mother-build-demo"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
        let colibri = dir.join("colibri");
        prepare_colibri(&colibri, &Log::sink())?;
        let config = write_config(&root, &dir, &colibri, cli)?;
        let loaded = Loaded::load(&crate::config::Invocation { config: Some(config.clone()), ..Default::default() })?;
        let engine = Engine::new(&loaded, ui);
        let stages = &loaded.config.pipeline.stages;
        let last_real = stages.iter().rev().find(|s| HOST_STAGES.contains(s)).copied();

        ui.eprintln(&ui.bold(&format!("mother-build demo in {dir} (pipeline: {config})")));
        if let Some(last) = last_real {
            ui.eprintln(&format!(
                "running for real on this host: {}",
                join(stages.iter().take_while(|s| **s != last).chain([&last]))
            ));
            engine.release(&ReleaseOpts { to: Some(last), ..Default::default() }, &crate::engine::default_stage)?;
        }
        let rest: Vec<StageName> = stages
            .iter()
            .skip_while(|s| Some(**s) != last_real)
            .skip(usize::from(last_real.is_some()))
            .copied()
            .collect();
        if let Some(first) = rest.first() {
            ui.eprintln(&format!(
                "\non mother-build (FreeBSD) the pipeline continues; these are the exact commands ({}):",
                join(rest.iter())
            ));
            // A release that ends in a gate with nothing to boot is refused; the stages
            // before the gate are still worth showing, and the refusal says what to set.
            let refusal = crate::gate::check_release(&loaded, &rest).err();
            let to = match (&refusal, rest.iter().position(|s| *s == StageName::Gate)) {
                (Some(_), Some(gate)) => gate.checked_sub(1).map(|i| rest[i]),
                _ => rest.last().copied(),
            };
            if let Some(to) = to {
                engine.release(
                    &ReleaseOpts { from: Some(*first), to: Some(to), dry_run: true, ..Default::default() },
                    &crate::engine::default_stage,
                )?;
            }
            if let Some(refusal) = refusal {
                ui.eprintln(&format!("\ngate: not shown: {}", crate::ui::render_error(&refusal)));
            }
        }
        ui.eprintln(&format!("\nstate and logs: {}   (cargo xtask --config {config} status)", engine.state.root()));
        Ok(())
    }
}

fn join<'a>(stages: impl Iterator<Item = &'a StageName>) -> String {
    stages.map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
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

/// The demo's pipeline.toml: this repository's, pointed at the demo directory.
fn write_config(root: &Utf8Path, dir: &Utf8Path, colibri: &Utf8Path, cli: &Cli) -> Result<Utf8PathBuf> {
    let source = cli.config.clone().unwrap_or_else(|| root.join("pipeline.toml"));
    let text = std::fs::read_to_string(&source).with_context(|| format!("cannot read {source}"))?;
    let mut table: toml::Table = toml::from_str(&text).with_context(|| format!("{source} is not valid TOML"))?;
    let mut set = |table_name: &str, key: &str, value: toml::Value| {
        let t = table.entry(table_name).or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(t) = t.as_table_mut() {
            t.insert(key.into(), value);
        }
    };
    let path = |p: Utf8PathBuf| toml::Value::String(p.into_string());
    set("pipeline", "state_dir", path(dir.join("state")));
    set("port", "colibri", path(colibri.to_owned()));
    set("port", "overlay", path(dir.join("ports")));
    // makesum runs for real without the network: crates from cargo's cache (the example
    // colibri's are the xtask's own dependencies), its source archive from the checkout.
    set("poudriere", "distfiles", path(dir.join("distfiles")));
    set("makesum", "source_from_checkout", toml::Value::Boolean(true));
    set("makesum", "offline", toml::Value::Boolean(true));
    let path = dir.join("pipeline.toml");
    let header = format!("# Generated by `cargo xtask demo` from {source}.\n");
    crate::fsx::write_atomic(&path, format!("{header}{}", toml::to_string(&table)?).as_bytes())?;
    Ok(path)
}
