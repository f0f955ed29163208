//! mother-build's `cargo xtask`: dispatches the command line to the stage modules.

mod cargo_crates;
mod cli;
mod config;
mod demo;
mod docs;
mod engine;
mod fingerprint;
mod fsx;
mod git;
mod makevars;
mod pkgrepo;
mod proc;
mod run;
mod secret;
mod stage;
mod ui;

mod bulk;
mod gate;
mod iso;
mod makesum;
mod port;
mod poudriere;
mod publish;
mod setup;
mod sign;

use std::process::ExitCode;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Loaded;
use crate::engine::{Engine, Exit, ReleaseOpts};
use crate::ui::Ui;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::from_env(cli.verbose);
    if let Err(e) = proc::install_signal_handlers() {
        ui.error(&e);
        return ExitCode::from(2);
    }
    match run(cli, &ui) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => ExitCode::from(*code as u8),
            None => {
                ui.error(&e);
                ExitCode::from(if proc::interrupted().is_some() { 130 } else { 2 })
            }
        },
    }
}

fn run(cli: Cli, ui: &Ui) -> Result<()> {
    if let Command::Demo(demo) = &cli.command {
        return demo.run(&cli, ui);
    }
    let loaded = load_config(&cli)?;
    let engine = Engine::new(&loaded, ui);
    match cli.command {
        Command::Setup(c) => c.invoke(&engine),
        Command::Port(c) => c.invoke(&engine),
        Command::Makesum(c) => c.invoke(&engine),
        Command::Bulk(c) => c.invoke(&engine),
        Command::Sign(c) => c.invoke(&engine),
        Command::Publish(c) => c.invoke(&engine),
        Command::Iso(c) => c.invoke(&engine),
        Command::Gate(c) => c.invoke(&engine),
        Command::Release(r) => {
            let opts = ReleaseOpts { from: r.from, to: r.to, resume: r.resume, force: r.force, dry_run: r.dry_run };
            engine.release(&opts, &engine::default_stage)
        }
        Command::Status(s) => engine.status(s.json),
        Command::Docs(d) => docs::run(&d, ui),
        Command::Demo(_) => unreachable!("handled above"),
    }
}

/// This repository's top directory (where pipeline.toml lives).
pub fn project_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Utf8Path::to_owned).unwrap_or_else(|| ".".into())
}

/// Loads pipeline.toml with the command line's overrides applied.
pub fn load_config(cli: &Cli) -> Result<Loaded> {
    let path = cli.config.clone().unwrap_or_else(|| project_root().join("pipeline.toml"));
    let mut overrides = Vec::new();
    for o in &cli.options {
        overrides.push(config::parse_override(o)?);
    }
    // Paths given on the command line are relative to where the command runs.
    if let Some(c) = &cli.colibri {
        overrides.push(("port.colibri".into(), toml::Value::String(config::absolute(c)?.into_string())));
    }
    if let Some(s) = &cli.state_dir {
        overrides.push(("pipeline.state_dir".into(), toml::Value::String(config::absolute(s)?.into_string())));
    }
    Loaded::load(&path, &overrides).with_context(|| "the pipeline configuration is not usable".to_string())
}
