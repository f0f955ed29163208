//! What a stage is: its name, the [`Stage`] trait every stage module implements, the
//! context it runs in, and the plan it prints for `--dry-run`.
//!
//! A stage computes a plan (every command and file operation it will perform) before it
//! does anything; `--dry-run` prints that plan and stops. Its result is a small
//! serializable record of what it produced, which later stages read through
//! [`Cx::output`].

use std::fmt;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::config::{Config, Loaded};
use crate::failure;
use crate::fingerprint::Fingerprint;
use crate::proc::CmdLine;
use crate::run::{Log, RunView};
use crate::ui::Ui;

/// A stage's name: the same word in pipeline.toml, on the command line and as the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StageName {
    Setup,
    Port,
    Makesum,
    Audit,
    Bulk,
    Sign,
    Publish,
    Iso,
    Gate,
}

impl StageName {
    /// The default release order (docs/ARCHITECTURE.md, "Bird's-eye view").
    pub const RELEASE: [StageName; 8] = [
        StageName::Port,
        StageName::Makesum,
        StageName::Audit,
        StageName::Bulk,
        StageName::Sign,
        StageName::Publish,
        StageName::Iso,
        StageName::Gate,
    ];
    /// Every stage, setup included.
    pub const ALL: [StageName; 9] = [
        StageName::Setup,
        StageName::Port,
        StageName::Makesum,
        StageName::Audit,
        StageName::Bulk,
        StageName::Sign,
        StageName::Publish,
        StageName::Iso,
        StageName::Gate,
    ];

    /// Whether the stage runs once per target (bulk, sign, publish, iso, gate) rather
    /// than once for all of them (port, makesum, audit, setup).
    pub fn per_target(self) -> bool {
        matches!(self, StageName::Bulk | StageName::Sign | StageName::Publish | StageName::Iso | StageName::Gate)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Setup => "setup",
            StageName::Port => "port",
            StageName::Makesum => "makesum",
            StageName::Audit => "audit",
            StageName::Bulk => "bulk",
            StageName::Sign => "sign",
            StageName::Publish => "publish",
            StageName::Iso => "iso",
            StageName::Gate => "gate",
        }
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One thing a stage will do, as `--dry-run` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run a program (exactly this argument vector).
    Run(CmdLine),
    /// Create or replace a file.
    Write { path: Utf8PathBuf, what: String },
    /// Copy a file or tree.
    Copy { from: Utf8PathBuf, to: Utf8PathBuf },
    /// Rename, atomically.
    Rename { from: Utf8PathBuf, to: Utf8PathBuf },
    /// Remove a file or tree.
    Remove { path: Utf8PathBuf },
    /// Create a directory.
    Mkdir { path: Utf8PathBuf },
    /// Download a URL to a file.
    Fetch { url: String, to: Utf8PathBuf },
    /// Check something natively (no side effects), e.g. verify signatures.
    Check(String),
    /// Anything else worth telling.
    Note(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run(cmd) => write!(f, "run     {cmd}"),
            Step::Write { path, what } => write!(f, "write   {path} ({what})"),
            Step::Copy { from, to } => write!(f, "copy    {from} -> {to}"),
            Step::Rename { from, to } => write!(f, "rename  {from} -> {to}"),
            Step::Remove { path } => write!(f, "remove  {path}"),
            Step::Mkdir { path } => write!(f, "mkdir   {path}"),
            Step::Fetch { url, to } => write!(f, "fetch   {url} -> {to}"),
            Step::Check(what) => write!(f, "check   {what}"),
            Step::Note(what) => write!(f, "note    {what}"),
        }
    }
}

/// The steps a stage will take, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }
    pub fn run(&mut self, cmd: &CmdLine) {
        self.steps.push(Step::Run(cmd.clone()));
    }
    pub fn check(&mut self, what: impl Into<String>) {
        self.steps.push(Step::Check(what.into()));
    }
    pub fn note(&mut self, what: impl Into<String>) {
        self.steps.push(Step::Note(what.into()));
    }
}

/// A stage's plan: the common steps, plus whatever the stage computed to execute them.
pub trait StagePlan {
    fn steps(&self) -> &Plan;
}

impl StagePlan for Plan {
    fn steps(&self) -> &Plan {
        self
    }
}

/// A pipeline stage. Implemented once per stage module; the engine ([`crate::engine`])
/// drives it: fingerprint, skip or plan, then execute and record the outputs.
pub trait Stage {
    const NAME: StageName;
    /// What the stage records for later stages (serialized into state.json).
    type Outputs: Serialize + DeserializeOwned;
    /// What the stage will do; `--dry-run` prints its steps.
    type Plan: StagePlan;

    /// A cheap digest of everything that decides this stage's result (settings, input
    /// files, earlier stages' outputs). Equal to the last success's digest means the
    /// stage may be skipped. Must not spawn processes: a no-op release stays fast.
    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint>;

    /// Whether what the last success produced is still in place. Checked before skipping.
    fn outputs_intact(&self, _cx: &Cx, _outputs: &Self::Outputs) -> bool {
        true
    }

    /// Computes the plan. Performs no side effects.
    fn plan(&self, cx: &Cx) -> Result<Self::Plan>;

    /// Carries out the plan and returns what was produced.
    fn execute(&self, cx: &mut Cx, plan: Self::Plan) -> Result<Self::Outputs>;

    /// A stage whose effect must be all or nothing across targets (publish: no `latest`
    /// moves before every target's new version is verified) runs in two phases.
    fn two_phase(&self) -> Option<&dyn TwoPhase> {
        None
    }
}

/// The two phases of a stage that changes what every target serves at once: `prepare`
/// does everything but the switch (and may be thrown away), `commit` switches, and
/// `undo` takes a commit back when a later target's switch fails.
pub trait TwoPhase {
    /// Everything up to the switch; what it returns is handed to `commit`.
    fn prepare(&self, cx: &mut Cx) -> Result<Box<dyn std::any::Any>>;
    /// The switch; returns the stage's outputs.
    fn commit(&self, cx: &mut Cx, prepared: Box<dyn std::any::Any>) -> Result<crate::outputs::Outputs>;
    /// Takes back a commit that returned `outputs`; says what it did.
    fn undo(&self, cx: &mut Cx, outputs: &crate::outputs::Outputs) -> Result<String>;
}

/// Everything a stage runs with.
pub struct Cx<'a> {
    pub loaded: &'a Loaded,
    /// The run's recorded state: earlier stages' outputs, the run directory.
    pub run: RunView<'a>,
    /// This stage's log (the full output of every command).
    pub log: Log,
    pub ui: &'a Ui,
    pub dry_run: bool,
}

impl<'a> Cx<'a> {
    pub fn config(&self) -> &'a Config {
        &self.loaded.config
    }

    /// Resolves a path from pipeline.toml against the file's directory.
    pub fn resolve(&self, path: &Utf8Path) -> Utf8PathBuf {
        self.loaded.resolve(path)
    }

    /// The outputs an earlier stage recorded in this run. When they are missing, the
    /// error says which stage produces them.
    pub fn output<T: DeserializeOwned>(&self, stage: StageName) -> Result<T> {
        self.output_with(stage, |value| value.parse::<T>())
    }

    /// The outputs `stage` recorded, read by `read` (a part of them, or in parts); what
    /// it cannot read is reported as [`Cx::output`] reports it.
    pub fn output_with<T>(
        &self,
        stage: StageName,
        read: impl FnOnce(&crate::outputs::Outputs) -> serde_json::Result<T>,
    ) -> Result<T> {
        match self.run.outputs(stage) {
            Some(value) => read(value).map_err(|e| {
                failure!("the outputs `{stage}` recorded in {} cannot be read: {e}", self.run.state_path())
                    .help(format!("rerun it: {}", self.record_again(stage, value)))
                    .into()
            }),
            None => bail!(
                failure!(
                    "this stage needs what `{stage}` produces, and the current run ({}) has no successful `{stage}`",
                    self.run.describe()
                )
                .help(format!("run it first: {}", self.loaded.xtask(stage.as_str())))
            ),
        }
    }

    /// The command that records `stage`'s outputs again. sign signs any repository
    /// (`--repo`): the one its unreadable record still names, when it names one.
    fn record_again(&self, stage: StageName, recorded: &crate::outputs::Outputs) -> String {
        let repo = match stage {
            StageName::Sign => {
                recorded.parse::<serde_json::Value>().ok().and_then(|v| v.get("repo")?.as_str().map(str::to_owned))
            }
            _ => None,
        };
        match repo {
            Some(repo) => self.loaded.xtask(&format!("sign --repo {}", crate::proc::quote(&repo))),
            None => self.loaded.xtask(stage.as_str()),
        }
    }

    /// Whether an earlier stage has recorded outputs in this run.
    pub fn has_output(&self, stage: StageName) -> bool {
        self.run.outputs(stage).is_some()
    }

    /// A directory for this stage's files inside the run directory, created on demand;
    /// in a dry run only named (a dry run changes nothing, the state directory included).
    pub fn stage_dir(&self, stage: StageName) -> Result<Utf8PathBuf> {
        let dir = self.run.stage_path(stage)?;
        if !self.dry_run {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
        }
        Ok(dir)
    }

    /// Prints a progress line (spinner message on a terminal, a plain line in CI) and
    /// writes it to the stage log.
    pub fn say(&self, line: impl AsRef<str>) {
        let line = line.as_ref();
        self.log.line(line);
        self.ui.stage_event(line);
    }

    /// Writes a line to the stage log only.
    pub fn note(&self, line: impl AsRef<str>) {
        self.log.line(line.as_ref());
    }
}
