//! Runs and their state: the state directory, its lock, `state.json`, the stage logs.
//!
//! ```text
//! STATE_DIR/lock                      flock(2)ed by the run in progress; names its holder
//! STATE_DIR/current                   id of the current run
//! STATE_DIR/outputs/SHA256.json       a stage's outputs too large for state.json
//! STATE_DIR/runs/ID/state.json        per stage: status, times, fingerprint, outputs
//! STATE_DIR/runs/ID/logs/STAGE.log    everything the stage and its commands printed
//! STATE_DIR/runs/ID/STAGE/            files a stage produced (manifest, console, ...)
//! STATE_DIR/runs/ID/targets/NAME/      a declared target's (`[[targets]]`) per-target
//!                                      stages: STAGE/ and logs/STAGE.log
//! ```
//! A pipeline without `[[targets]]` has one target whose stages keep the layout above.
//! Every path recorded inside is relative to STATE_DIR, so CI can carry the directory
//! from job to job. state.json is replaced atomically; a run killed at any point leaves
//! a state the next `status` reads and `release --resume` continues.
//!
//! The lock is in `lock.rs`, the stage logs in `log.rs`, run ids and times in `time.rs`.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

mod lock;
mod log;
mod time;

pub use lock::{Holder, Lock};
pub use log::{Log, tail_file};
use time::new_run_id;
pub use time::{hostname, now_rfc3339, rfc3339};

use crate::config::Invocation;
use crate::failure;
use crate::fsx;
use crate::stage::StageName;

/// Version of the state.json layout. 2: records are keyed by [`Slot`] (`bulk@NAME` for
/// a declared target's stage) and `targets` lists the run's targets. Version 1 (no
/// targets) is read as it is: its keys are the implicit target's. 3: a last success
/// whose outputs are large names them by digest (`outputs_file`, see
/// [`crate::outputs`]) instead of holding them; versions 1 and 2 hold them all.
pub const STATE_VERSION: u32 = 3;

/// The state.json layouts this mother-build reads.
const READS: [u64; 3] = [1, 2, 3];

/// Where a stage's record is kept in a run: a shared stage, or a per-target stage for
/// one declared target (none: the one target of a pipeline without `[[targets]]`).
/// In state.json: `bulk`, `bulk@aarch64`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub stage: StageName,
    pub target: Option<String>,
}

impl Slot {
    /// `stage` for `target` (a target's key, [`crate::targets::Target::key`]); shared
    /// stages ignore the target.
    pub fn new(stage: StageName, target: Option<&str>) -> Slot {
        Slot { stage, target: target.filter(|_| stage.per_target()).map(str::to_owned) }
    }
}

impl From<StageName> for Slot {
    fn from(stage: StageName) -> Slot {
        Slot { stage, target: None }
    }
}

impl From<&Slot> for Slot {
    fn from(slot: &Slot) -> Slot {
        slot.clone()
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Some(t) => f.pad(&format!("{}@{t}", self.stage)),
            None => f.pad(self.stage.as_str()),
        }
    }
}

impl Serialize for Slot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Slot, D::Error> {
        let text = String::deserialize(d)?;
        let (stage, target) = match text.split_once('@') {
            Some((stage, target)) if crate::targets::safe_name(target) => (stage, Some(target.to_owned())),
            Some(_) => return Err(serde::de::Error::custom(format!("`{text}` is not STAGE@TARGET"))),
            None => (text.as_str(), None),
        };
        let stage = <StageName as clap::ValueEnum>::from_str(stage, false)
            .map_err(|_| serde::de::Error::custom(format!("unknown stage `{stage}`")))?;
        Ok(Slot { stage, target })
    }
}

/// Where a stage stands in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Not run in this run yet.
    Pending,
    /// Running now, or its process died (see [`State::settle`]).
    Running,
    /// Ran and succeeded.
    Succeeded,
    /// Inputs unchanged since its last success; not rerun.
    UpToDate,
    /// Ran and failed.
    Failed,
    /// Stopped by a signal, or its process vanished.
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::UpToDate => "up-to-date",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }

    /// The stage's outputs are good for later stages.
    pub fn is_done(self) -> bool {
        matches!(self, Status::Succeeded | Status::UpToDate)
    }
}

/// The last time a stage succeeded, and what it produced.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "SuccessOnDisk")]
pub struct Success {
    /// Run in which it succeeded.
    pub run: String,
    pub ended: String,
    pub fingerprint: String,
    pub outputs: crate::outputs::Outputs,
}

/// [`Success`] as state.json holds it: its outputs, or (when they are large, and were
/// written to their own file by [`Run::save`]) their digest.
#[derive(Deserialize)]
struct SuccessOnDisk {
    run: String,
    ended: String,
    fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outputs: Option<crate::outputs::Outputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outputs_file: Option<crate::outputs::StoredRef>,
}

impl TryFrom<SuccessOnDisk> for Success {
    type Error = String;
    fn try_from(d: SuccessOnDisk) -> Result<Success, String> {
        let outputs = match (d.outputs, d.outputs_file) {
            (Some(o), None) => o,
            (None, Some(r)) => crate::outputs::Outputs::stored(r),
            (None, None) => return Err("a last success names no outputs".into()),
            (Some(_), Some(_)) => return Err("a last success has both `outputs` and `outputs_file`".into()),
        };
        Ok(Success { run: d.run, ended: d.ended, fingerprint: d.fingerprint, outputs })
    }
}

impl Serialize for Success {
    /// Outputs kept apart are named by digest (their file is written before: see
    /// [`Run::save`]).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct OnDisk<'a> {
            run: &'a str,
            ended: &'a str,
            fingerprint: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            outputs: Option<&'a crate::outputs::Outputs>,
            #[serde(skip_serializing_if = "Option::is_none")]
            outputs_file: Option<crate::outputs::StoredRef>,
        }
        let apart = self.outputs.kept_apart();
        OnDisk {
            run: &self.run,
            ended: &self.ended,
            fingerprint: &self.fingerprint,
            outputs: (!apart).then_some(&self.outputs),
            outputs_file: self.outputs.stored_ref(),
        }
        .serialize(s)
    }
}

/// One stage in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Fingerprint of the inputs of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Log of the latest attempt, relative to the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Utf8PathBuf>,
    /// Why the latest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Process running it (while `running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How many times this run has started it.
    #[serde(default)]
    pub attempts: u32,
    /// The last success, possibly from an earlier run; later stages read its outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Success>,
    /// Process groups the latest attempt started that must not outlive it (the gate's
    /// consoles), each recorded before its program ran: the next command on this run
    /// stops any that an xtask killed mid-stage left running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<crate::proc::GroupRecord>,
}

/// The most of a stage's error state.json keeps: what a failed command printed is
/// quoted in it, and that can be anything.
const ERROR_LIMIT: usize = 16 * 1024;

impl StageRecord {
    /// Records why the latest attempt failed: the whole message when it is short,
    /// else its beginning and its end (the help lines), saying what was left out.
    pub fn set_error(&mut self, message: String) {
        self.error = Some(bounded(message, ERROR_LIMIT));
    }

    fn pending(last_success: Option<Success>) -> StageRecord {
        StageRecord {
            status: Status::Pending,
            started: None,
            ended: None,
            duration_ms: None,
            fingerprint: None,
            log: None,
            error: None,
            pid: None,
            attempts: 0,
            last_success,
            processes: Vec::new(),
        }
    }
}

/// state.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub id: String,
    pub created: String,
    /// What started the run (`release`, `bulk`, ...).
    pub command: String,
    /// Stage order of this run.
    pub stages: Vec<StageName>,
    /// The declared targets of this run, in order (empty: the pipeline's one target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    pub records: BTreeMap<Slot, StageRecord>,
    /// How the command that started the run was given its configuration (`--config`,
    /// `--state-dir`, `--colibri`, `-o`): the commands that continue the run reuse it.
    /// Absent in runs recorded before it was (they reuse nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<Invocation>,
}

impl State {
    /// Marks stages left `running` by a process that no longer exists as interrupted.
    /// Called only while holding the lock (or having seen it free), so nobody else runs.
    pub fn settle(&mut self) -> bool {
        let mut changed = false;
        for rec in self.records.values_mut() {
            if rec.status == Status::Running {
                rec.status = Status::Interrupted;
                rec.error = Some(match rec.pid {
                    Some(pid) => format!("the process running it (pid {pid}) ended without recording a result"),
                    None => "the process running it ended without recording a result".into(),
                });
                rec.pid = None;
                changed = true;
            }
        }
        changed
    }

    /// Tells the outputs kept in files of their own which state directory holds them.
    pub fn attach_outputs(&self, root: &Utf8Path) {
        for rec in self.records.values() {
            if let Some(s) = &rec.last_success {
                s.outputs.attach(root);
            }
        }
    }

    /// Takes every process group the stages recorded, forgetting them.
    pub fn take_processes(&mut self) -> Vec<(Slot, crate::proc::GroupRecord)> {
        let mut taken = Vec::new();
        for (slot, rec) in &mut self.records {
            taken.extend(rec.processes.drain(..).map(|g| (slot.clone(), g)));
        }
        taken
    }

    pub fn record(&self, slot: impl Into<Slot>) -> Option<&StageRecord> {
        self.records.get(&slot.into())
    }

    pub fn record_mut(&mut self, slot: impl Into<Slot>) -> &mut StageRecord {
        self.records.entry(slot.into()).or_insert_with(|| StageRecord::pending(None))
    }

    /// The target keys of this run, in order: its declared targets, or the one
    /// implicit target (`None`).
    pub fn target_keys(&self) -> Vec<Option<String>> {
        if self.targets.is_empty() { vec![None] } else { self.targets.iter().cloned().map(Some).collect() }
    }

    /// The outputs later stages may use: the last success, unless this run's own
    /// latest attempt failed (then the old outputs are stale).
    pub fn usable_outputs(&self, slot: impl Into<Slot>) -> Option<&crate::outputs::Outputs> {
        let rec = self.records.get(&slot.into())?;
        match rec.status {
            Status::Failed | Status::Interrupted | Status::Running => None,
            _ => rec.last_success.as_ref().map(|s| &s.outputs),
        }
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: Utf8PathBuf,
}

impl StateDir {
    pub fn new(root: Utf8PathBuf) -> StateDir {
        StateDir { root }
    }

    pub fn root(&self) -> &Utf8Path {
        &self.root
    }

    fn current_path(&self) -> Utf8PathBuf {
        self.root.join("current")
    }

    /// The id of the current run, if there is one.
    pub fn current_id(&self) -> Result<Option<String>> {
        match fs::read_to_string(self.current_path()) {
            Ok(s) => {
                let id = s.trim().to_owned();
                Ok((!id.is_empty()).then_some(id))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.current_path())),
        }
    }

    /// Loads the current run. A run directory that is gone (moved aside, as a corrupt
    /// run's error advises) leaves no current run: the next one starts afresh.
    pub fn current(&self) -> Result<Option<Run>> {
        match self.current_id()? {
            Some(id) if self.run_dir(&id).exists() => Ok(Some(self.load(&id)?)),
            _ => Ok(None),
        }
    }

    /// The id of the current run and how it was invoked, when it records that; read
    /// without building the run's records (a run that cannot be read gives none: the
    /// command that loads it reports that).
    pub fn current_invocation(&self) -> Result<Option<(String, Invocation)>> {
        #[derive(Deserialize)]
        struct Head {
            id: String,
            invocation: Option<Invocation>,
        }
        let Some(id) = self.current_id()? else { return Ok(None) };
        let Ok(bytes) = fs::read(self.run_dir(&id).join("state.json")) else { return Ok(None) };
        let Ok(head) = serde_json::from_slice::<Head>(&bytes) else { return Ok(None) };
        Ok(head.invocation.filter(|_| head.id == id).map(|i| (id, i)))
    }

    pub fn run_dir(&self, id: &str) -> Utf8PathBuf {
        self.root.join("runs").join(id)
    }

    /// Loads a run by id. A state.json that cannot be read says so, names the run and
    /// gives the command that moves that run (only that run) aside.
    pub fn load(&self, id: &str) -> Result<Run> {
        let dir = self.run_dir(id);
        let path = dir.join("state.json");
        let aside = || {
            let moved = dir.with_file_name(format!("{id}.corrupt"));
            format!(
                "move that run aside (the next release then starts a new run): mv {} {}",
                crate::config::shown_path(&dir),
                crate::config::shown_path(&moved)
            )
        };
        let corrupt = |why: String| failure!("the state of run {id} ({path}) is corrupt: {why}").help(aside());
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => corrupt("state.json is missing".into()),
            _ => failure!("cannot read the state of run {id} ({path}): {e}"),
        })?;
        // The version first, without building the document: a full ports tree's
        // outputs are tens of megabytes of it.
        let top = serde_json::from_slice::<BTreeMap<String, Box<serde_json::value::RawValue>>>(&bytes);
        let version = match &top {
            Ok(top) => top.get("version").and_then(|v| v.get().parse::<u64>().ok()),
            Err(e) => match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                Err(e) => bail!(corrupt(format!("it is not JSON ({e})"))),
                Ok(_) if e.is_data() => None,
                Ok(_) => bail!(corrupt(format!("it is not JSON ({e})"))),
            },
        };
        drop(top);
        match version {
            Some(v) if READS.contains(&v) => {}
            Some(v) => bail!(
                failure!("the state of run {id} ({path}) has version {v}, but this mother-build reads versions up to {STATE_VERSION}")
                    .help(format!("finish the run with the mother-build that started it; or {}", aside()))
            ),
            None => bail!(corrupt("it has no state version".into())),
        }
        let state: State =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("it does not hold a run's state ({e})")))?;
        if state.id != id {
            bail!(corrupt(format!("it holds the state of run {}", state.id)));
        }
        state.attach_outputs(&self.root);
        Ok(Run { root: self.root.clone(), dir, state })
    }

    /// Starts a new run (needs the lock), carrying every stage's last success over
    /// from `previous` so unchanged stages can be skipped, and makes it current.
    pub fn create(
        &self,
        _lock: &Lock,
        command: &str,
        invocation: &Invocation,
        stages: &[StageName],
        targets: &[crate::targets::Target],
        previous: Option<&Run>,
    ) -> Result<Run> {
        let id = new_run_id();
        let dir = self.run_dir(&id);
        fs::create_dir_all(dir.join("logs")).with_context(|| format!("cannot create {dir}"))?;
        let mut records = BTreeMap::new();
        let keys: Vec<Option<&str>> = targets.iter().map(|t| t.key()).collect();
        let mut slots: Vec<Slot> = previous.map(|p| p.state.records.keys().cloned().collect()).unwrap_or_default();
        for stage in stages {
            if stage.per_target() {
                slots.extend(targets.iter().filter(|t| t.runs(*stage)).map(|t| Slot::new(*stage, t.key())));
            } else {
                slots.push(Slot::from(*stage));
            }
        }
        for slot in slots {
            let last = previous.and_then(|p| p.state.records.get(&slot)).and_then(|r| r.last_success.clone());
            // A stage of this run, for a target it runs for.
            let ours = stages.contains(&slot.stage)
                && (!slot.stage.per_target()
                    || targets.iter().any(|t| t.key() == slot.target.as_deref() && t.runs(slot.stage)));
            if last.is_some() || ours {
                records.insert(slot, StageRecord::pending(last));
            }
        }
        let state = State {
            version: STATE_VERSION,
            id: id.clone(),
            created: now_rfc3339(),
            command: command.to_owned(),
            stages: stages.to_vec(),
            targets: keys.iter().flatten().map(|k| k.to_string()).collect(),
            records,
            invocation: Some(invocation.clone()),
        };
        let run = Run { root: self.root.clone(), dir, state };
        run.save()?;
        fsx::write_atomic(&self.current_path(), format!("{id}\n").as_bytes())?;
        Ok(run)
    }
}

/// A run: its directory and state.
#[derive(Debug, Clone)]
pub struct Run {
    root: Utf8PathBuf,
    pub dir: Utf8PathBuf,
    pub state: State,
}

impl Run {
    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn state_path(&self) -> Utf8PathBuf {
        self.dir.join("state.json")
    }

    /// Writes state.json atomically, after the files of the outputs it names by digest.
    ///
    /// When it wrote such a file, the files no run names any more are removed after
    /// (a stage's outputs replaced by newer ones).
    pub fn save(&self) -> Result<()> {
        let mut wrote = false;
        for rec in self.state.records.values() {
            if let Some(s) = &rec.last_success {
                wrote |= s.outputs.store(&self.root)?;
            }
        }
        let mut text = serde_json::to_vec_pretty(&self.state).context("cannot serialize the run state")?;
        text.push(b'\n');
        fsx::write_atomic(&self.state_path(), &text)?;
        if wrote {
            // Best effort: what is left is only disk space, collected by a later save.
            let _ = crate::outputs::collect_garbage(&self.root);
        }
        Ok(())
    }

    /// Path of a stage's log.
    pub fn log_path(&self, slot: &Slot) -> Utf8PathBuf {
        self.target_dir(slot.target.as_deref()).join("logs").join(format!("{}.log", slot.stage))
    }

    /// Where a target's per-target stages keep their files: the run directory for the
    /// implicit target, `targets/NAME/` for a declared one.
    pub fn target_dir(&self, key: Option<&str>) -> Utf8PathBuf {
        match key {
            Some(k) => self.dir.join("targets").join(k),
            None => self.dir.clone(),
        }
    }

    /// A path inside the state directory, as recorded in state.json.
    pub fn rel(&self, path: &Utf8Path) -> Utf8PathBuf {
        fsx::relative_to(path, &self.root)
    }

    /// A recorded path made usable again.
    pub fn abs(&self, rel: &Utf8Path) -> Utf8PathBuf {
        if rel.is_absolute() { rel.to_owned() } else { self.root.join(rel) }
    }

    pub fn view(&self) -> RunView<'_> {
        RunView { run: Some(self), scratch: None, target: None }
    }

    /// The run as a target's stages see it: their own target's per-target outputs.
    pub fn view_for<'a>(&'a self, target: Option<&'a str>) -> RunView<'a> {
        RunView { run: Some(self), scratch: None, target }
    }
}

/// What a stage sees of its run: earlier outputs and where to put files. Standalone
/// invocations (no run) get a scratch directory instead.
#[derive(Clone, Copy)]
pub struct RunView<'a> {
    run: Option<&'a Run>,
    scratch: Option<&'a Utf8Path>,
    /// The target key per-target stages are read and written for.
    target: Option<&'a str>,
}

impl<'a> RunView<'a> {
    /// A view without a run: outputs are absent, files go under `scratch`.
    pub fn detached(scratch: &'a Utf8Path) -> RunView<'a> {
        RunView { run: None, scratch: Some(scratch), target: None }
    }

    /// The same view for another target.
    pub fn for_target(self, target: Option<&'a str>) -> RunView<'a> {
        RunView { target, ..self }
    }

    /// The slot of `stage` in this view (its target's, for a per-target stage).
    pub fn slot(&self, stage: StageName) -> Slot {
        Slot::new(stage, self.target)
    }

    pub fn run(&self) -> Option<&'a Run> {
        self.run
    }

    pub fn outputs(&self, stage: StageName) -> Option<&'a crate::outputs::Outputs> {
        self.run.and_then(|r| r.state.usable_outputs(self.slot(stage)))
    }

    pub fn state_path(&self) -> String {
        self.run.map(|r| r.state_path().to_string()).unwrap_or_else(|| "(no run)".into())
    }

    pub fn describe(&self) -> String {
        match self.run {
            Some(r) => format!("run {} in {}", r.id(), r.dir),
            None => "no run".into(),
        }
    }

    /// Where the run keeps a stage's files (not created here: see [`crate::stage::Cx::stage_dir`]).
    pub fn stage_path(&self, stage: StageName) -> Result<Utf8PathBuf> {
        let slot = self.slot(stage);
        match (self.run, self.scratch) {
            (Some(r), _) => Ok(r.target_dir(slot.target.as_deref()).join(stage.as_str())),
            (None, Some(s)) => Ok(s.join(stage.as_str())),
            (None, None) => bail!("no run directory"),
        }
    }

    /// A recorded path made usable again.
    pub fn abs(&self, rel: &Utf8Path) -> Utf8PathBuf {
        match self.run {
            Some(r) => r.abs(rel),
            None => rel.to_owned(),
        }
    }

    /// A path as it should be recorded in outputs (relative to the state directory
    /// when inside it).
    pub fn rel(&self, path: &Utf8Path) -> Utf8PathBuf {
        match self.run {
            Some(r) => r.rel(path),
            None => path.to_owned(),
        }
    }

    /// Records in state.json (atomically) the process groups `stage` has started that
    /// must not outlive it, so the next command can stop them if this process is
    /// killed. The engine's own next save forgets them. Without a run, nothing.
    pub fn record_processes(&self, stage: StageName, groups: &[crate::proc::GroupRecord]) -> Result<()> {
        let Some(run) = self.run else { return Ok(()) };
        let mut copy = run.clone();
        copy.state.record_mut(self.slot(stage)).processes = groups.to_vec();
        copy.save()
    }
}

/// `text` if it holds at most `limit` bytes; else its first three quarters and last
/// eighth of that, with a line saying how much is left out between them.
fn bounded(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let floor = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let head = floor(limit / 4 * 3);
    let tail = floor(text.len() - limit / 8);
    format!("{}\n[... {} bytes left out ...]\n{}", &text[..head], tail - head, &text[tail..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_error_keeps_its_beginning_and_its_help() {
        let long = format!("error: {}\n  then what to do", "é".repeat(20_000));
        let kept = bounded(long.clone(), ERROR_LIMIT);
        assert!(kept.len() <= ERROR_LIMIT + 64, "{}", kept.len());
        assert!(kept.starts_with("error: éé") && kept.ends_with("é\n  then what to do"), "{kept}");
        assert!(kept.contains(" bytes left out ...]\n"), "{kept}");
        assert_eq!(bounded("short".into(), ERROR_LIMIT), "short");
    }

    /// A run of one stage whose last success has `outputs`, in a state directory `root`.
    fn run_with(root: &Utf8Path, id: &str, outputs: crate::outputs::Outputs) -> Run {
        let mut records = BTreeMap::new();
        let mut rec = StageRecord::pending(None);
        rec.status = Status::Succeeded;
        rec.last_success = Some(Success { run: id.into(), ended: "e".into(), fingerprint: "f".into(), outputs });
        records.insert(Slot::new(StageName::Sign, None), rec);
        let state = State {
            version: STATE_VERSION,
            id: id.into(),
            created: "c".into(),
            command: "sign".into(),
            stages: vec![StageName::Sign],
            targets: Vec::new(),
            records,
            invocation: None,
        };
        Run { root: root.to_owned(), dir: root.join("runs").join(id), state }
    }

    #[test]
    fn large_outputs_are_kept_apart_read_when_used_and_collected_when_no_run_names_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(tmp.path()).unwrap().to_owned();
        let dirs = StateDir::new(root.clone());
        let packages: Vec<String> = (0..5000).map(|i| format!("All/port{i:05}-1.0.pkg")).collect();
        let big = crate::outputs::Outputs::new(&serde_json::json!({ "packages": packages })).unwrap();
        assert!(big.kept_apart(), "{} bytes", big.bytes());
        let small = crate::outputs::Outputs::new(&serde_json::json!({ "repo": "/r" })).unwrap();

        let a = run_with(&root, "a", big.clone());
        a.save().unwrap();
        let stored = crate::outputs::stored_path(&root, big.sha256());
        assert_eq!(fs::read_to_string(&stored).unwrap(), big.text().unwrap());
        let text = fs::read_to_string(a.state_path()).unwrap();
        assert!(text.len() < 2048 && text.contains("\"outputs_file\"") && !text.contains("port00001"), "{text}");

        // Read back: the same outputs, read from their file when parsed.
        let loaded = dirs.load("a").unwrap();
        let outputs = &loaded.state.record(StageName::Sign).unwrap().last_success.as_ref().unwrap().outputs;
        assert_eq!(*outputs, big);
        let value: serde_json::Value = outputs.parse().unwrap();
        assert_eq!(value["packages"][4999], "All/port04999-1.0.pkg");
        // Saved again: state.json names the same file, which is not written again.
        loaded.save().unwrap();
        assert_eq!(fs::read_to_string(loaded.state_path()).unwrap(), text);

        // A damaged file is refused when read, naming it and both digests.
        fs::write(&stored, big.text().unwrap().replace("port00001", "port00002")).unwrap();
        let again = dirs.load("a").unwrap();
        let err = again.state.usable_outputs(StageName::Sign).unwrap().parse::<serde_json::Value>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(stored.as_str()) && msg.contains("is damaged") && msg.contains(big.sha256()), "{msg}");

        // Another run names the file too; once neither does, the next file written
        // takes its place and it is removed.
        run_with(&root, "b", big.clone()).save().unwrap();
        run_with(&root, "a", small).save().unwrap();
        assert!(stored.exists(), "run b still names it");
        let newer = crate::outputs::Outputs::new(&serde_json::json!({ "packages": packages, "n": 2 })).unwrap();
        run_with(&root, "b", newer.clone()).save().unwrap();
        assert!(!stored.exists(), "no run names it");
        assert!(crate::outputs::stored_path(&root, newer.sha256()).exists());
    }
}
