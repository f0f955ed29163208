//! mother-build's `cargo xtask` as a library: the stage modules, the engine, and
//! [`run`], which carries out a parsed command line. `main.rs` only parses and exits.

pub mod attest;
pub mod audit;
pub mod bundle;
pub mod cargo_crates;
pub mod cli;
pub mod config;
pub mod demo;
pub mod diff;
pub mod docs;
pub mod engine;
pub mod failure;
pub mod fingerprint;
pub mod fsx;
pub mod git;
pub mod identity;
pub mod makevars;
pub mod notify;
pub mod outputs;
pub mod proc;
pub mod report;
pub mod run;
pub mod stage;
pub mod targets;
pub mod ui;
pub mod verify_release;
pub mod workflow;

pub mod bulk;
pub mod gate;
pub mod iso;
pub mod makesum;
pub mod port;
pub mod poudriere;
pub mod publish;
pub mod setup;
pub mod sign;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::cli::{Cli, Command};
use crate::config::{Invocation, Loaded};
use crate::engine::{Engine, ReleaseOpts};
use crate::ui::Ui;

/// Carries out a parsed command line.
pub fn run(cli: Cli, ui: &Ui) -> Result<()> {
    match &cli.command {
        Command::Demo(demo) => return demo.run(&cli, ui),
        Command::Completions(c) => return docs::completions(c.shell, ui),
        Command::Docs(d) => return docs::run(d, ui),
        _ => {}
    }
    let mut loaded = load_config(&cli)?;
    if cli.command.continues_the_run() {
        loaded = reuse_the_runs_invocation(loaded, ui)?;
    }
    let engine = Engine::new(&loaded, ui).only_target(cli.target.clone())?;
    match cli.command {
        Command::Setup(c) => c.invoke(&engine),
        Command::Port(c) => c.invoke(&engine),
        Command::Makesum(c) => c.invoke(&engine),
        Command::Audit(c) => c.invoke(&engine),
        Command::Bulk(c) => c.invoke(&engine),
        Command::Sign(c) => c.invoke(&engine),
        Command::Publish(c) => c.invoke(&engine),
        Command::Iso(c) => c.invoke(&engine),
        Command::Gate(c) => c.invoke(&engine),
        Command::Release(r) => {
            let opts = ReleaseOpts { from: r.from, to: r.to, resume: r.resume, force: r.force, dry_run: r.dry_run };
            engine.release(&opts, &engine::default_stage)
        }
        Command::Bundle(b) => b.invoke(&engine),
        Command::Unbundle(u) => u.invoke(&engine),
        Command::Status(s) => engine.status(s.json),
        Command::VerifyRelease(v) => v.invoke(&loaded, ui),
        Command::Report(r) => r.run(&engine),
        Command::Diff(d) => d.run(&engine),
        Command::CiWorkflow(c) => workflow::run(&loaded, &c, ui),
        Command::Docs(_) | Command::Demo(_) | Command::Completions(_) => unreachable!("handled above"),
    }
}

/// This repository's top directory (where pipeline.toml lives).
pub fn project_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Utf8Path::to_owned).unwrap_or_else(|| ".".into())
}

/// How the command line asks for the configuration: `--config`, `--state-dir`,
/// `--colibri` (made absolute: they are relative to where the command runs) and `-o`.
pub fn invocation(cli: &Cli) -> Result<Invocation> {
    let abs = |p: &Option<Utf8PathBuf>| p.as_deref().map(config::absolute).transpose();
    Ok(Invocation {
        config: abs(&cli.config)?,
        state_dir: abs(&cli.state_dir)?,
        colibri: abs(&cli.colibri)?,
        options: cli.options.clone(),
    })
}

/// Loads pipeline.toml with the command line's overrides applied.
pub fn load_config(cli: &Cli) -> Result<Loaded> {
    load(&invocation(cli)?)
}

fn load(invocation: &Invocation) -> Result<Loaded> {
    Loaded::load(invocation).context("the pipeline configuration is not usable")
}

/// `release --resume` and `cargo xtask STAGE` continue the current run as it was
/// started: its recorded `--config`, `--state-dir`, `--colibri` and `-o` apply again,
/// except where this command line gives them (then this command line's win). Both are
/// said. A run that cannot be read is left to the command to report.
fn reuse_the_runs_invocation(loaded: Loaded, ui: &Ui) -> Result<Loaded> {
    let state = run::StateDir::new(loaded.state_dir());
    let Ok(Some((id, recorded))) = state.current_invocation() else { return Ok(loaded) };
    let reuse = loaded.invocation.over(&recorded);
    if reuse.reused.is_empty() && reuse.replaced.is_empty() {
        return Ok(loaded);
    }
    let mut invocation = reuse.invocation;
    let started = || format!("run {id} was started with {}", recorded.flags().join(" "));
    let mut again = load(&invocation).with_context(started)?;
    if again.state_dir() != state.root() {
        // The run is where it was found, whatever its recorded settings say now.
        invocation.state_dir = Some(state.root().to_owned());
        again = load(&invocation).with_context(started)?;
    }
    if !reuse.reused.is_empty() {
        ui.eprintln(&format!("run {id} was started with {}: using them again", reuse.reused.join(" ")));
    }
    for (given, theirs) in &reuse.replaced {
        ui.eprintln(&format!("{given} replaces {theirs}, which run {id} was started with"));
    }
    Ok(again)
}
