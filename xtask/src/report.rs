//! The run report: every run leaves `report.html` in its run directory when it ends
//! (pass, fail or interrupt), a self-contained page a person opens; `cargo xtask report
//! [RUN]` writes it again and `--open` opens it. When a release ends, its notifications
//! go out from here too ([`crate::notify`]).
//!
//! - `facts.rs`: what a run did, read back from state.json and its stages' files;
//! - `console.rs`: the gate's console, read streaming and cut to a bound;
//! - `html.rs`: the page, with every string from a run escaped.
//!
//! Nothing here changes a run's outcome: a report or a notification that cannot be made
//! is logged (`logs/report.log`, `logs/notify.log`) and shown, and the run ends as it
//! would have.

pub mod console;
pub mod facts;
pub mod html;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use camino::Utf8PathBuf;

use crate::cli::Report;
use crate::diff::RunDiff;
use crate::engine::Engine;
use crate::proc::CmdLine;
use crate::run::{Log, Run, Status};
use crate::settings;
use crate::stage::StageName;
use facts::{RunFacts, Verdict};

settings! {
    /// report: the page every run leaves in its run directory (`report.html`).
    pub struct ReportConfig {
        /// A note shown beside a stage in the report, saying how it runs on this host,
        /// e.g. `notes = { bulk = "poudriere on the build host" }`.
        pub notes: BTreeMap<StageName, String> = BTreeMap::new(),
    }
}

/// The report's file name in the run directory.
pub const REPORT: &str = "report.html";

/// A run read for its report and notifications.
pub struct Ended {
    pub facts: RunFacts,
    pub diff: Option<RunDiff>,
}

/// Writes the report of `run` and returns where.
pub fn write(engine: &Engine, run: &Run) -> Result<(Utf8PathBuf, Ended)> {
    let facts = facts::read(run, &engine.loaded.config);
    let diff = crate::diff::since_last_release(engine, &facts);
    let path = write_page(engine, &facts, diff.as_ref())?;
    Ok((path, Ended { facts, diff }))
}

fn write_page(engine: &Engine, facts: &RunFacts, diff: Option<&RunDiff>) -> Result<Utf8PathBuf> {
    let log_tails = facts
        .stages
        .iter()
        .filter(|s| matches!(s.status, Status::Failed | Status::Interrupted))
        .filter_map(|s| Some((s.name, crate::run::tail_file(s.log.as_ref()?, html::LOG_TAIL_LINES))))
        .collect();
    let resume =
        (!matches!(facts.verdict, Verdict::Pass | Verdict::Running)).then(|| engine.loaded.xtask("release --resume"));
    let page = html::Page { run: facts, diff, console: html::console_view(facts), log_tails, resume };
    let path = facts.dir.join(REPORT);
    crate::fsx::write_atomic(&path, page.render().as_bytes())
        .with_context(|| format!("cannot write the report {path}"))?;
    Ok(path)
}

/// What ended: a release (which notifies) or one stage (`cargo xtask STAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Release,
    Stage,
}

/// Called by the engine when a run ends, whatever its outcome: writes the report, says
/// where it is, and for a release sends the notifications (`ok`: the release did what
/// it was asked, all stages or up to `--to`). Never changes the outcome.
pub fn run_ended(engine: &Engine, run: &Run, ending: Ending, ok: bool) {
    let ui = engine.ui;
    let ended = match write(engine, run) {
        Ok((path, ended)) => {
            ui.eprintln(&format!("report: {}", crate::engine::display_path(&path)));
            Some(ended)
        }
        Err(e) => {
            let message = format!("the run's report could not be written: {}", crate::ui::render_error(&e));
            if let Ok(log) = Log::open(&run.dir.join("logs/report.log")) {
                log.line(&format!("{} {message}", crate::run::now_rfc3339()));
            }
            ui.eprintln(&format!("{} {message}", ui.yellow("warning:")));
            None
        }
    };
    // What a stage removes out of sight (publish's pruned versions) is gone when the
    // command ends.
    for problem in crate::fsx::wait_removals() {
        ui.eprintln(&format!("{} {problem}", ui.yellow("warning:")));
    }
    if ending == Ending::Release {
        let ended = ended.unwrap_or_else(|| Ended { facts: facts::read(run, &engine.loaded.config), diff: None });
        crate::notify::release_ended(engine, run, &ended, ok);
    }
}

impl Report {
    /// `cargo xtask report [RUN] [--open]`.
    pub fn run(&self, engine: &Engine) -> Result<()> {
        let run = match &self.run {
            Some(id) => facts::find_run(&engine.state, id)?,
            None => engine.state.current()?.ok_or_else(|| {
                crate::failure!("there is no run in {}", engine.state.root())
                    .help(format!("start one with `{}`", engine.loaded.xtask("release")))
                    .usage()
            })?,
        };
        let (path, _) = write(engine, &run)?;
        engine.ui.println(path.as_str());
        if self.open {
            let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
            let cmd = CmdLine::new(opener).arg(path.as_str());
            let out = cmd.output(&Log::sink())?;
            if !out.success() {
                anyhow::bail!(
                    crate::failure!("{}", cmd.failure(&out)).help(format!("open {path} in a browser yourself"))
                );
            }
        }
        Ok(())
    }
}
