//! The engine: runs stages inside runs. Decides what is up to date, records every
//! attempt in state.json before and after it, keeps one log per stage, and on failure
//! shows the stage, the error, the end of its log and the log's path.

use std::time::Instant;

use anyhow::{Result, bail};
use camino::Utf8PathBuf;
use serde::Serialize;

use crate::config::Loaded;
use crate::failure;
use crate::failure::{Class, Failure};
use crate::fingerprint::Fingerprint;
use crate::outputs::Outputs;
use crate::run::{Holder, Log, Run, RunView, Slot, StageRecord, StateDir, Status, Success, now_rfc3339};
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, TwoPhase};
use crate::targets::Target;
use crate::ui::Ui;

/// A stage, type-erased so the engine can hold any of them.
pub trait AnyStage {
    fn name(&self) -> StageName;
    fn fingerprint(&self, cx: &Cx) -> Result<String>;
    fn intact(&self, cx: &Cx, outputs: &Outputs) -> bool;
    fn plan_steps(&self, cx: &Cx) -> Result<Plan>;
    fn run(&self, cx: &mut Cx) -> Result<Outputs>;
    fn two_phase(&self) -> Option<&dyn TwoPhase>;
}

impl<S: Stage> AnyStage for S {
    fn name(&self) -> StageName {
        S::NAME
    }

    fn fingerprint(&self, cx: &Cx) -> Result<String> {
        let mut fp = Fingerprint::new();
        fp.str("xtask", env!("CARGO_PKG_VERSION")).str("stage", S::NAME.as_str());
        // The stage's own table, and what every earlier stage produced: a change
        // upstream reruns everything after it.
        fp.json("settings", &cx.config().stage_table(S::NAME));
        for earlier in cx.config().pipeline.stages.iter().take_while(|s| **s != S::NAME) {
            fp.outputs(earlier.as_str(), cx.run.outputs(*earlier));
        }
        let own = self.fingerprint(cx)?;
        fp.str("inputs", &own.finish());
        Ok(fp.finish())
    }

    fn intact(&self, cx: &Cx, outputs: &Outputs) -> bool {
        match outputs.parse::<S::Outputs>() {
            Ok(o) => self.outputs_intact(cx, &o),
            Err(_) => false,
        }
    }

    fn plan_steps(&self, cx: &Cx) -> Result<Plan> {
        Ok(self.plan(cx)?.steps().clone())
    }

    fn run(&self, cx: &mut Cx) -> Result<Outputs> {
        let plan = self.plan(cx)?;
        let outputs = self.execute(cx, plan)?;
        Outputs::new(&outputs)
    }

    fn two_phase(&self) -> Option<&dyn TwoPhase> {
        Stage::two_phase(self)
    }
}

/// Options of `cargo xtask release`.
#[derive(Debug, Clone, Default)]
pub struct ReleaseOpts {
    pub from: Option<StageName>,
    pub to: Option<StageName>,
    pub resume: bool,
    pub force: bool,
    pub dry_run: bool,
}

pub struct Engine<'a> {
    pub loaded: &'a Loaded,
    pub ui: &'a Ui,
    pub state: StateDir,
    /// `--target NAME`: only this target's per-target stages run.
    only: Option<String>,
}

/// A target a per-target stage runs for, with the configuration as its stages see it.
pub struct ForTarget {
    pub target: Target,
    pub loaded: Loaded,
}

impl ForTarget {
    pub fn key(&self) -> Option<&str> {
        self.target.key()
    }
}

/// A stage of a target that failed, and why.
struct TargetFailure {
    target: String,
    stage: StageName,
    error: anyhow::Error,
}

/// An attempt the engine has recorded as running.
struct Attempt {
    slot: Slot,
    started: Instant,
    before: Option<StageRecord>,
}

impl<'a> Engine<'a> {
    pub fn new(loaded: &'a Loaded, ui: &'a Ui) -> Engine<'a> {
        Engine { loaded, ui, state: StateDir::new(loaded.state_dir()), only: None }
    }

    /// The same engine, working on the one target `--target` names.
    pub fn only_target(mut self, name: Option<String>) -> Result<Engine<'a>> {
        if let Some(n) = &name {
            self.loaded.target_named(n)?;
        }
        self.only = name;
        Ok(self)
    }

    /// The targets this command works on: the one `--target` named, else every one.
    pub fn targets(&self) -> Result<Vec<ForTarget>> {
        let chosen = match &self.only {
            Some(n) => vec![self.loaded.target_named(n)?],
            None => self.loaded.targets(),
        };
        chosen.into_iter().map(|t| Ok(ForTarget { loaded: self.loaded.for_target(&t)?, target: t })).collect()
    }

    /// The configuration for `--target` when one was given (setup, detached stages).
    pub fn loaded_for_target(&self) -> Result<Option<Loaded>> {
        match &self.only {
            Some(n) => Ok(Some(self.loaded.for_target(&self.loaded.target_named(n)?)?)),
            None => Ok(None),
        }
    }

    fn cx<'r>(&'r self, loaded: &'r Loaded, run: RunView<'r>, log: Log, dry_run: bool) -> Cx<'r> {
        Cx { loaded, run, log, ui: self.ui, dry_run }
    }

    /// The units a stage runs as: once (a shared stage), or once per target it runs for.
    fn units<'t>(&self, stage: StageName, targets: &'t [ForTarget]) -> Vec<Option<&'t ForTarget>> {
        if !stage.per_target() {
            return vec![None];
        }
        targets.iter().filter(|t| t.target.runs(stage)).map(Some).collect()
    }

    /// Prints a stage's plan; performs nothing.
    fn print_plan(&self, stage: &dyn AnyStage, run: RunView, unit: Option<&ForTarget>) -> Result<()> {
        let loaded = unit.map_or(self.loaded, |u| &u.loaded);
        let run = run.for_target(unit.and_then(ForTarget::key));
        let cx = self.cx(loaded, run, Log::sink(), true);
        let plan = stage.plan_steps(&cx)?;
        let label = Slot::new(stage.name(), unit.and_then(ForTarget::key));
        self.ui.println(&self.ui.bold(&format!("{label}:")));
        if plan.steps.is_empty() {
            self.ui.println("  (nothing to do)");
        }
        for step in &plan.steps {
            self.ui.println(&format!("  {step}"));
        }
        Ok(())
    }

    /// `cargo xtask STAGE`: runs one stage in the current run (starting a run when
    /// there is none), with the outputs earlier stages recorded; a per-target stage for
    /// every target (or the one `--target` names), each to its end even when another
    /// fails.
    pub fn run_one(&self, stage: &dyn AnyStage, dry_run: bool) -> Result<()> {
        let targets = self.targets()?;
        let units = self.units(stage.name(), &targets);
        if dry_run {
            let current = self.state.current()?;
            let scratch = self.state.root().join("dry-run");
            let view = match &current {
                Some(run) => run.view(),
                None => RunView::detached(&scratch),
            };
            for unit in &units {
                self.print_plan(stage, view, *unit)?;
            }
            return Ok(());
        }
        let lock = self.state.lock(&this_command(), &self.resume())?;
        let mut run = match self.state.current()? {
            Some(mut run) => {
                let settled = run.state.settle();
                let stopped = self.stop_left_running(&mut run);
                if settled || stopped {
                    run.save()?;
                }
                run
            }
            None => self.state.create(
                &lock,
                stage.name().as_str(),
                &self.loaded.invocation,
                &self.loaded.config.pipeline.stages,
                &self.loaded.targets(),
                None,
            )?,
        };
        let result = if stage.name().per_target() {
            let units: Vec<&ForTarget> = units.into_iter().flatten().collect();
            if units.is_empty() {
                self.ui.eprintln(&format!(
                    "`{}`: no target builds an image (every target has image = false)",
                    stage.name()
                ));
            }
            self.run_targets(&mut run, stage, &units, &|_| true, false, Rerun::ThisCommand)
                .and_then(|failed| self.targets_failed(failed, units.len()))
        } else {
            self.execute(&mut run, stage, None, Rerun::ThisCommand)
        };
        crate::report::run_ended(self, &run, crate::report::Ending::Stage, result.is_ok());
        result
    }

    /// Whether `outputs`, recorded by `stage` in `run`, are still in place (the stage's
    /// own check, as before skipping it): `bundle` packs nothing that changed since.
    pub fn outputs_intact(&self, run: &Run, stage: StageName, unit: &ForTarget, outputs: &Outputs) -> bool {
        let cx = self.cx(&unit.loaded, run.view_for(unit.key()), Log::sink(), false);
        default_stage(stage).intact(&cx, outputs)
    }

    /// Stops, saying so, the process groups an xtask killed mid-stage left running in
    /// `run` (recorded before they ran; stopped only once that xtask is gone and if they
    /// are still the same processes), and forgets the records. Whether there were any.
    fn stop_left_running(&self, run: &mut Run) -> bool {
        let left = run.state.take_processes();
        for (stage, group) in &left {
            if let Some(stopped) = group.stop_if_left() {
                self.ui.eprintln(&format!(
                    "stopped `{}` (process group {}, {} process{}{}): the `{stage}` of run {} started it, and its xtask (pid {}) ended without stopping it",
                    group.command,
                    group.pgid,
                    stopped.processes,
                    if stopped.processes == 1 { "" } else { "es" },
                    if stopped.killed { ", killed after SIGTERM was not enough" } else { "" },
                    run.id(),
                    group.owner,
                ));
            }
        }
        !left.is_empty()
    }

    /// The command that continues the current run.
    fn resume(&self) -> String {
        self.loaded.xtask("release --resume")
    }

    /// Runs a stage without any run state: for checks and tools that work on
    /// arbitrary inputs (`sign --verify-only`, `makesum --port DIR`). Files go to a
    /// scratch directory; the log to `STATE_DIR/detached/STAGE.log`.
    pub fn run_detached(&self, stage: &dyn AnyStage, dry_run: bool) -> Result<Outputs> {
        let scratch = self.state.root().join("detached");
        self.run_unrecorded_in(stage, RunView::detached(&scratch), &scratch, dry_run)
    }

    /// Runs a stage against the current run's recorded outputs without recording
    /// anything in it: for checks that must change nothing (`makesum --check`). The log
    /// goes to `STATE_DIR/detached/STAGE.log`.
    pub fn run_unrecorded(&self, stage: &dyn AnyStage, dry_run: bool) -> Result<Outputs> {
        let scratch = self.state.root().join("detached");
        let current = self.state.current()?;
        let view = match &current {
            Some(run) => run.view(),
            None => RunView::detached(&scratch),
        };
        self.run_unrecorded_in(stage, view, &scratch, dry_run)
    }

    fn run_unrecorded_in(
        &self,
        stage: &dyn AnyStage,
        view: RunView,
        scratch: &camino::Utf8Path,
        dry_run: bool,
    ) -> Result<Outputs> {
        let projected = self.loaded_for_target()?;
        let loaded = projected.as_ref().unwrap_or(self.loaded);
        let view = view.for_target(loaded.target.as_ref().and_then(Target::key));
        if dry_run {
            let cx = self.cx(loaded, view, Log::sink(), true);
            let plan = stage.plan_steps(&cx)?;
            self.ui.println(&self.ui.bold(&format!("{}:", stage.name())));
            if plan.steps.is_empty() {
                self.ui.println("  (nothing to do)");
            }
            for step in &plan.steps {
                self.ui.println(&format!("  {step}"));
            }
            return Ok(Outputs::null());
        }
        let name = stage.name();
        let log = Log::open(&scratch.join(format!("{name}.log")))?;
        let mut cx = self.cx(loaded, view, log, false);
        cx.log.line(&format!("==== {name} (detached) at {} ====", now_rfc3339()));
        let started = Instant::now();
        crate::proc::start_signal_thread();
        self.ui.stage_start(name.as_str());
        let result = stage.run(&mut cx);
        match &result {
            Ok(_) => self.ui.stage_end(name.as_str(), "ok", &self.ui.dim(&crate::ui::duration(started.elapsed()))),
            // A stage that printed its own report (`setup --check`) says only how to exit.
            Err(err) if failure::is_reported(err) => {
                self.ui.stage_end(name.as_str(), "not ok", "");
            }
            Err(err) => {
                cx.log.line(&format!("error: {}", crate::ui::render_error(err)));
                return Err(self.report_failure(&Slot::from(name), loaded, err, &cx.log, Rerun::Detached));
            }
        }
        result
    }

    /// Records an attempt of `slot` as running (saved before it starts) and opens its log.
    fn begin(&self, run: &mut Run, slot: &Slot) -> Result<(Attempt, Log)> {
        crate::proc::start_signal_thread();
        let log_path = run.log_path(slot);
        let before = run.state.record(slot).cloned();
        {
            let rel_log = run.rel(&log_path);
            let rec = run.state.record_mut(slot);
            rec.status = Status::Running;
            rec.started = Some(now_rfc3339());
            rec.ended = None;
            rec.duration_ms = None;
            rec.error = None;
            rec.pid = Some(std::process::id());
            rec.attempts += 1;
            rec.log = Some(rel_log);
        }
        run.save()?;
        let attempt = run.state.record_mut(slot).attempts;
        let log = Log::open(&log_path)?;
        log.line(&format!("==== {slot}: attempt {attempt} in run {} at {} ====", run.id(), now_rfc3339()));
        self.ui.stage_start(&slot.to_string());
        Ok((Attempt { slot: slot.clone(), started: Instant::now(), before }, log))
    }

    /// Runs `stage` in `run` (for `unit`'s target), recording the attempt before and after.
    fn execute(&self, run: &mut Run, stage: &dyn AnyStage, unit: Option<&ForTarget>, rerun: Rerun) -> Result<()> {
        let key = unit.and_then(ForTarget::key);
        let loaded = unit.map_or(self.loaded, |u| &u.loaded);
        let (attempt, log) = self.begin(run, &Slot::new(stage.name(), key))?;
        let mut cx = self.cx(loaded, run.view_for(key), log, false);
        let result = stage.fingerprint(&cx).and_then(|fp| stage.run(&mut cx).map(|outputs| (fp, outputs)));
        let log = cx.log;
        self.finish(run, attempt, result, loaded, log, rerun)
    }

    /// Records how an attempt ended, and reports a failure.
    fn finish(
        &self,
        run: &mut Run,
        attempt: Attempt,
        result: Result<(String, Outputs)>,
        loaded: &Loaded,
        log: Log,
        rerun: Rerun,
    ) -> Result<()> {
        let Attempt { slot, started, before } = attempt;
        let elapsed = started.elapsed();
        if let Err(err) = &result
            && stage_class(err) == Class::Usage
        {
            // What was asked cannot be done: the stage did nothing, and its record stays
            // as it was (a refused `publish --rollback` leaves the last publish usable).
            match before {
                Some(before) => *run.state.record_mut(&slot) = before,
                None => drop(run.state.records.remove(&slot)),
            }
            run.save()?;
            log.line(&format!("error: {}", crate::ui::render_error(err)));
            log.line(&format!("==== {slot}: refused; its record is unchanged ===="));
            return Err(self.report_failure(&slot, loaded, err, &log, rerun));
        }
        let ended = now_rfc3339();
        let run_id = run.id().to_owned();
        let rec = run.state.record_mut(&slot);
        rec.ended = Some(ended.clone());
        rec.duration_ms = Some(elapsed.as_millis() as u64);
        rec.pid = None;
        match result {
            Ok((fp, outputs)) => {
                rec.status = Status::Succeeded;
                rec.fingerprint = Some(fp.clone());
                rec.last_success = Some(Success { run: run_id, ended, fingerprint: fp, outputs });
                run.save()?;
                log.line(&format!("==== {slot}: succeeded in {} ====", crate::ui::duration(elapsed)));
                self.ui.stage_end(&slot.to_string(), "ok", &self.ui.dim(&crate::ui::duration(elapsed)));
                Ok(())
            }
            Err(err) => {
                let interrupted = stage_class(&err) == Class::Interrupted;
                rec.status = if interrupted { Status::Interrupted } else { Status::Failed };
                rec.set_error(crate::ui::render_error(&err));
                run.save()?;
                log.line(&format!("error: {}", crate::ui::render_error(&err)));
                log.line(&format!(
                    "==== {slot}: {} after {} ====",
                    rec_status_word(interrupted),
                    crate::ui::duration(elapsed)
                ));
                Err(self.report_failure(&slot, loaded, &err, &log, rerun))
            }
        }
    }

    /// Runs a per-target stage for each of `units`, each to its end whatever the others
    /// do (a stop signal ends them all: the error). Returns the targets that failed.
    /// `force` says which slots run even when up to date; with `skip` false all run.
    fn run_targets(
        &self,
        run: &mut Run,
        stage: &dyn AnyStage,
        units: &[&ForTarget],
        force: &dyn Fn(&Slot) -> bool,
        skip: bool,
        rerun: Rerun,
    ) -> Result<Vec<TargetFailure>> {
        let mut todo = Vec::new();
        for unit in units {
            crate::proc::check_interrupted()?;
            let slot = Slot::new(stage.name(), unit.key());
            if skip && !force(&slot) && self.skip_if_up_to_date(run, stage, Some(unit))? {
                continue;
            }
            todo.push(*unit);
        }
        let mut failed = Vec::new();
        if let Some(two) = stage.two_phase() {
            for (unit, error) in self.all_or_nothing(run, stage, two, &todo, rerun)? {
                failed.push(TargetFailure { target: unit.target.name.clone(), stage: stage.name(), error });
            }
            return Ok(failed);
        }
        for unit in todo {
            crate::proc::check_interrupted()?;
            if let Err(error) = self.execute(run, stage, Some(unit), rerun) {
                if stage_class(&error) == Class::Interrupted {
                    return Err(error);
                }
                failed.push(TargetFailure { target: unit.target.name.clone(), stage: stage.name(), error });
            }
        }
        Ok(failed)
    }

    /// A two-phase stage (publish) over several targets: every target prepared (its new
    /// version copied and verified) before any commits (switches `latest`); a target
    /// that fails to prepare leaves every target unswitched; a commit that fails takes
    /// back those before it. Each target's record says what happened to it.
    fn all_or_nothing<'t>(
        &self,
        run: &mut Run,
        stage: &dyn AnyStage,
        two: &dyn TwoPhase,
        units: &[&'t ForTarget],
        rerun: Rerun,
    ) -> Result<Vec<(&'t ForTarget, anyhow::Error)>> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempts = Vec::new();
        for unit in units {
            attempts.push(self.begin(run, &Slot::new(stage.name(), unit.key()))?);
        }
        // The stages read what earlier stages recorded, which nothing here changes.
        let snapshot = run.clone();
        let mut cxs = Vec::new();
        let mut prepared = Vec::new();
        for (unit, (_, log)) in
            units.iter().zip(attempts.iter_mut().map(|(a, l)| (a, std::mem::replace(l, Log::sink()))))
        {
            let mut cx = self.cx(&unit.loaded, snapshot.view_for(unit.key()), log, false);
            let p = stage.fingerprint(&cx).and_then(|fp| two.prepare(&mut cx).map(|p| (fp, p)));
            prepared.push(p);
            cxs.push(cx);
        }
        let names = |pick: &dyn Fn(usize) -> bool| -> String {
            units
                .iter()
                .enumerate()
                .filter(|(i, _)| pick(*i))
                .map(|(_, u)| u.target.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut results: Vec<Result<(String, Outputs)>> = Vec::new();
        let unready = names(&|i| prepared[i].is_err());
        if !unready.is_empty() {
            for p in prepared {
                results.push(match p {
                    Err(e) => Err(e),
                    Ok(_) => Err(failure!(
                        "not switched: {} of {unready} failed before the switch, and `{}` switches every target or none",
                        if unready.contains(", ") { "the new versions" } else { "the new version" },
                        stage.name()
                    )
                    .help(format!("fix {unready}, then `{}`", self.loaded.xtask(stage.name().as_str())))
                    .into()),
                });
            }
        } else {
            let mut committed: Vec<(usize, String, Outputs)> = Vec::new();
            let mut broken = None;
            for (i, p) in prepared.into_iter().enumerate() {
                let Ok((fp, p)) = p else { unreachable!("every target prepared") };
                if broken.is_some() {
                    // Replaced below: not switched because of the broken one.
                    results.push(Err(anyhow::anyhow!("not switched")));
                    continue;
                }
                match two.commit(&mut cxs[i], p) {
                    Ok(outputs) => {
                        committed.push((i, fp.clone(), outputs.clone()));
                        results.push(Ok((fp, outputs)));
                    }
                    Err(e) => {
                        broken = Some(i);
                        results.push(Err(e));
                    }
                }
            }
            if let Some(b) = broken {
                let culprit = units[b].target.name.clone();
                let class = results[b].as_ref().err().map_or(Class::Infrastructure, stage_class);
                for (i, _, outputs) in committed.iter().rev() {
                    let undone = two.undo(&mut cxs[*i], outputs);
                    let said = match &undone {
                        Ok(what) => format!("switched back ({what}) because target {culprit}'s switch failed"),
                        Err(e) => format!(
                            "could not be switched back after target {culprit}'s switch failed: {}",
                            crate::ui::render_error(e)
                        ),
                    };
                    cxs[*i].say(format!("{}: {said}", units[*i].target.name));
                    results[*i] = Err(Failure::new(format!("{}: {said}", units[*i].target.name)).class(class).into());
                }
                for (i, r) in results.iter_mut().enumerate().skip(b + 1) {
                    *r = Err(Failure::new(format!(
                        "{}: not switched because target {culprit}'s switch failed",
                        units[i].target.name
                    ))
                    .class(class)
                    .into());
                }
            }
        }
        let mut failed = Vec::new();
        for ((unit, (attempt, _)), (cx, result)) in units.iter().zip(attempts).zip(cxs.into_iter().zip(results)) {
            if let Err(e) = self.finish(run, attempt, result, &unit.loaded, cx.log, rerun) {
                failed.push((*unit, e));
            }
        }
        Ok(failed)
    }

    /// The end of a per-target stage or release: Ok when no target failed; one failed
    /// target of a one-target pipeline is that failure; else a reported failure naming
    /// each failed target and stage (each was shown as it failed).
    fn targets_failed(&self, failed: Vec<TargetFailure>, of: usize) -> Result<()> {
        if failed.is_empty() {
            return Ok(());
        }
        let class = failed
            .iter()
            .map(|f| stage_class(&f.error))
            .reduce(
                |a, b| if a == Class::Infrastructure || b == Class::Infrastructure { Class::Infrastructure } else { a },
            )
            .unwrap_or(Class::Infrastructure);
        if failed.len() == 1 && of == 1 {
            return Err(failed.into_iter().next().map(|f| f.error).expect("one failure"));
        }
        let list: Vec<String> = failed.iter().map(|f| format!("{} (at `{}`)", f.target, f.stage)).collect();
        self.ui.eprintln(&format!(
            "{} {} of {of} target{} failed: {}",
            self.ui.red("error:"),
            failed.len(),
            if of == 1 { "" } else { "s" },
            list.join(", ")
        ));
        Err(Failure::reported(class).into())
    }

    /// Shows a failed stage: the error, the end of this attempt's log (which ends with
    /// the error), where the log is, and the commands that rerun it or continue the run.
    /// Returns the (reported) failure to end the program with.
    fn report_failure(
        &self,
        slot: &Slot,
        loaded: &Loaded,
        err: &anyhow::Error,
        log: &Log,
        rerun: Rerun,
    ) -> anyhow::Error {
        let class = stage_class(err);
        let name = slot.stage;
        let again = match rerun {
            Rerun::Stage => loaded.xtask(name.as_str()),
            Rerun::ThisCommand | Rerun::Detached => {
                let mut line = this_command();
                if let Some(t) = &loaded.target
                    && name.per_target()
                    && self.only.is_none()
                    && loaded.several_targets()
                {
                    line.push_str(&format!(" --target {}", t.name));
                }
                line
            }
        };
        if class == Class::Interrupted {
            let sig = crate::proc::interrupted().unwrap_or(libc::SIGINT);
            self.ui.stage_end(&slot.to_string(), "interrupted", &format!("by {}", crate::proc::signal_name(sig)));
            self.ui.eprintln(&format!(
                "{} stage `{slot}` was interrupted; its commands were stopped",
                self.ui.red("error:")
            ));
            if let Some(path) = log.path() {
                self.ui.eprintln(&format!("  log: {path}"));
            }
            match rerun {
                Rerun::Detached => self.ui.eprintln(&format!("  rerun it: {again}")),
                Rerun::Stage | Rerun::ThisCommand => self.ui.eprintln(&format!("  continue with: {}", self.resume())),
            }
            return Failure::reported(class).into();
        }
        self.ui.stage_end(&slot.to_string(), "failed", "");
        self.ui.eprintln(&format!("{} stage `{slot}` failed: {}", self.ui.red("error:"), crate::ui::render_error(err)));
        let tail = log.tail(self.loaded.config.pipeline.tail_lines);
        if !tail.is_empty() {
            self.ui.eprintln(&format!("  last lines of the log:\n{tail}"));
        }
        if let Some(path) = log.path() {
            self.ui.eprintln(&format!("  full log: {path}"));
        }
        if class == Class::Usage {
            // The same command would be refused the same way; the run is as it was.
            return Failure::reported(class).into();
        }
        match rerun {
            Rerun::Detached => self.ui.eprintln(&format!("  rerun it: {again}")),
            Rerun::Stage | Rerun::ThisCommand => {
                self.ui.eprintln(&format!("  rerun this stage: {again}"));
                self.ui.eprintln(&format!("  or continue the run: {}", self.resume()));
            }
        }
        Failure::reported(class).into()
    }

    /// `cargo xtask release`.
    pub fn release(&self, opts: &ReleaseOpts, make: &dyn Fn(StageName) -> Box<dyn AnyStage>) -> Result<()> {
        let stages = self.select(opts)?;
        if !opts.resume {
            crate::gate::check_release(self.loaded, &stages)?;
        }
        let targets = self.targets()?;
        if opts.dry_run {
            return self.release_dry_run(&stages, &targets, opts, make);
        }
        let lock = self.state.lock(&this_command(), &self.resume())?;
        let mut current = self.state.current()?;
        if let Some(run) = &mut current
            && self.stop_left_running(run)
        {
            run.save()?;
        }
        let (mut run, todo, force_first) = if opts.resume {
            let Some(mut run) = current else {
                bail!(
                    failure!("there is no run to resume in {}", self.state.root())
                        .help(format!("start one with `{}`", self.loaded.xtask("release")))
                );
            };
            if run.state.settle() {
                run.save()?;
            }
            let order = run.state.stages.clone();
            // Each target resumes where it stopped: the first stage some target has
            // not done, forced for those targets; the others' are skipped when up to date.
            let unfinished = |s: StageName| -> Vec<Slot> {
                self.units(s, &targets)
                    .into_iter()
                    .map(|u| Slot::new(s, u.and_then(ForTarget::key)))
                    .filter(|slot| !run.state.record(slot).is_some_and(|r| r.status.is_done()))
                    .collect()
            };
            let Some(start) = order.iter().position(|s| !unfinished(*s).is_empty()) else {
                self.ui.eprintln(&format!("run {} completed every stage; nothing to resume", run.id()));
                return Ok(());
            };
            crate::gate::check_release(self.loaded, &order[start..])?;
            let first = unfinished(order[start]);
            let shown: Vec<String> = first.iter().map(Slot::to_string).collect();
            self.ui.eprintln(&format!("resuming run {} at `{}`", run.id(), shown.join("`, `")));
            (run, order[start..].to_vec(), first)
        } else {
            if !opts.force
                && let Some(prev) = &current
            {
                let mut prev = prev.clone();
                prev.state.settle();
                if self.all_up_to_date(&prev, &stages, &targets, make)? {
                    for s in &stages {
                        self.ui.stage_end(s.as_str(), "up to date", &self.ui.dim(&format!("(run {})", prev.id())));
                    }
                    self.ui.eprintln(&format!("release: every stage is up to date (run {}); nothing to do", prev.id()));
                    return Ok(());
                }
            }
            let run = self.state.create(
                &lock,
                "release",
                &self.loaded.invocation,
                &stages,
                &self.loaded.targets(),
                current.as_ref(),
            )?;
            (run, stages.clone(), Vec::new())
        };

        let result = self.run_stages(&mut run, &todo, &targets, opts.force, &force_first, make);
        crate::report::run_ended(self, &run, crate::report::Ending::Release, result.is_ok());
        result
    }

    /// Runs a release's stages in order, skipping those up to date (unless forced, or in
    /// `force_first`). A shared stage that fails ends the release; a target whose stage
    /// fails takes no further stage, and the others go on to the end.
    fn run_stages(
        &self,
        run: &mut Run,
        todo: &[StageName],
        targets: &[ForTarget],
        force_all: bool,
        force_first: &[Slot],
        make: &dyn Fn(StageName) -> Box<dyn AnyStage>,
    ) -> Result<()> {
        self.ui.pipeline_start(todo.len());
        let mut failed: Vec<TargetFailure> = Vec::new();
        for name in todo {
            if let Err(e) = crate::proc::check_interrupted() {
                self.ui.pipeline_finish();
                return Err(e);
            }
            let stage = make(*name);
            let force = |slot: &Slot| force_all || force_first.contains(slot);
            if !name.per_target() {
                if !force(&Slot::from(*name)) && self.skip_if_up_to_date(run, stage.as_ref(), None)? {
                    self.ui.pipeline_advance();
                    continue;
                }
                if let Err(e) = self.execute(run, stage.as_ref(), None, Rerun::Stage) {
                    self.ui.pipeline_finish();
                    return Err(e);
                }
            } else {
                let healthy: Vec<&ForTarget> = self
                    .units(*name, targets)
                    .into_iter()
                    .flatten()
                    .filter(|u| !failed.iter().any(|f| f.target == u.target.name))
                    .collect();
                match self.run_targets(run, stage.as_ref(), &healthy, &force, true, Rerun::Stage) {
                    Ok(more) => failed.extend(more),
                    Err(e) => {
                        self.ui.pipeline_finish();
                        return Err(e);
                    }
                }
            }
            self.ui.pipeline_advance();
        }
        self.ui.pipeline_finish();
        if failed.is_empty() {
            self.ui.eprintln(&format!("release: run {} finished: {}", run.id(), self.summary(run)));
        }
        self.targets_failed(failed, targets.len())
    }

    fn select(&self, opts: &ReleaseOpts) -> Result<Vec<StageName>> {
        let all = &self.loaded.config.pipeline.stages;
        if opts.resume && (opts.from.is_some() || opts.to.is_some()) {
            bail!("--resume continues where the last run stopped; it cannot be combined with --from or --to");
        }
        let index = |s: StageName| {
            all.iter().position(|x| *x == s).ok_or_else(|| {
                let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
                failure!("stage `{s}` is not in this pipeline")
                    .help(format!("the pipeline's stages are: {}", names.join(", ")))
            })
        };
        let start = opts.from.map(index).transpose()?.unwrap_or(0);
        let end = opts.to.map(index).transpose()?.unwrap_or(all.len() - 1);
        if start > end {
            bail!("--from {} comes after --to {} in the pipeline", all[start], all[end]);
        }
        Ok(all[start..=end].to_vec())
    }

    /// Whether a stage's last success (for `unit`'s target) still holds: same
    /// fingerprint, outputs intact.
    fn up_to_date(&self, run: &Run, stage: &dyn AnyStage, unit: Option<&ForTarget>) -> Result<Option<String>> {
        let key = unit.and_then(ForTarget::key);
        let Some(rec) = run.state.record(Slot::new(stage.name(), key)) else { return Ok(None) };
        if matches!(rec.status, Status::Failed | Status::Interrupted) {
            return Ok(None);
        }
        let Some(last) = &rec.last_success else { return Ok(None) };
        let loaded = unit.map_or(self.loaded, |u| &u.loaded);
        let cx = self.cx(loaded, run.view_for(key), Log::sink(), false);
        // A fingerprint that cannot be computed (missing input) means: run it, and let
        // the stage report the problem properly.
        let Ok(fp) = stage.fingerprint(&cx) else { return Ok(None) };
        if fp == last.fingerprint && stage.intact(&cx, &last.outputs) { Ok(Some(last.run.clone())) } else { Ok(None) }
    }

    fn all_up_to_date(
        &self,
        run: &Run,
        stages: &[StageName],
        targets: &[ForTarget],
        make: &dyn Fn(StageName) -> Box<dyn AnyStage>,
    ) -> Result<bool> {
        for s in stages {
            let stage = make(*s);
            for unit in self.units(*s, targets) {
                if self.up_to_date(run, stage.as_ref(), unit)?.is_none() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn skip_if_up_to_date(&self, run: &mut Run, stage: &dyn AnyStage, unit: Option<&ForTarget>) -> Result<bool> {
        let Some(from_run) = self.up_to_date(run, stage, unit)? else { return Ok(false) };
        let now = now_rfc3339();
        let slot = Slot::new(stage.name(), unit.and_then(ForTarget::key));
        let rec = run.state.record_mut(&slot);
        rec.status = Status::UpToDate;
        rec.started = Some(now.clone());
        rec.ended = Some(now);
        rec.duration_ms = Some(0);
        rec.fingerprint = rec.last_success.as_ref().map(|s| s.fingerprint.clone());
        rec.log = None;
        rec.error = None;
        run.save()?;
        self.ui.stage_end(
            &slot.to_string(),
            "up to date",
            &self.ui.dim(&format!("(inputs unchanged since run {from_run}; --force reruns it)")),
        );
        Ok(true)
    }

    fn release_dry_run(
        &self,
        stages: &[StageName],
        targets: &[ForTarget],
        opts: &ReleaseOpts,
        make: &dyn Fn(StageName) -> Box<dyn AnyStage>,
    ) -> Result<()> {
        let current = self.state.current()?;
        let scratch = self.state.root().join("dry-run");
        for name in stages {
            let stage = make(*name);
            for unit in self.units(*name, targets) {
                let view = current.as_ref().map(Run::view).unwrap_or_else(|| RunView::detached(&scratch));
                let slot = Slot::new(*name, unit.and_then(ForTarget::key));
                if !opts.force
                    && let Some(run) = &current
                    && let Some(from) = self.up_to_date(run, stage.as_ref(), unit)?
                {
                    self.ui.println(&format!(
                        "{}: up to date since run {from}; would be skipped",
                        self.ui.bold(&slot.to_string())
                    ));
                    continue;
                }
                if let Err(e) = self.print_plan(stage.as_ref(), view, unit) {
                    self.ui.println(&format!("  (cannot plan `{slot}` yet: {})", crate::ui::render_error(&e)));
                }
            }
        }
        Ok(())
    }

    fn summary(&self, run: &Run) -> String {
        let mut ran = 0;
        let mut skipped = 0;
        for (slot, rec) in &run.state.records {
            if !run.state.stages.contains(&slot.stage) {
                continue;
            }
            match rec.status {
                Status::Succeeded => ran += 1,
                Status::UpToDate => skipped += 1,
                _ => {}
            }
        }
        format!("{ran} ran, {skipped} up to date")
    }

    /// `cargo xtask status`.
    pub fn status(&self, json: bool) -> Result<()> {
        let holder = self.state.lock_holder();
        let report = match self.state.current()? {
            Some(mut run) => {
                if holder.is_none() {
                    run.state.settle();
                }
                // Read-only: what was stopped is said, not recorded.
                self.stop_left_running(&mut run);
                StatusReport::from_run(&run, self.state.root(), holder)
            }
            None => StatusReport {
                schema: STATUS_SCHEMA,
                state_dir: self.state.root().to_owned(),
                run: None,
                running: holder,
                stages: Vec::new(),
            },
        };
        if json {
            self.ui.println(&serde_json::to_string_pretty(&report)?);
        } else {
            self.print_status(&report);
        }
        Ok(())
    }

    fn print_status(&self, r: &StatusReport) {
        let Some(run) = &r.run else {
            self.ui.println(&format!("no run yet in {}", r.state_dir));
            self.ui.println(&format!("start one with: {}", self.loaded.xtask("release")));
            return;
        };
        self.ui.println(&format!("run {} ({}), started {} by `{}`", run.id, run.dir, run.created, run.started_by));
        if let Some(h) = &r.running {
            self.ui.println(&format!("in progress: {h}"));
        }
        // A column for the target when the run has declared targets.
        let width = r.stages.iter().filter_map(|s| s.target.as_ref()).map(String::len).max();
        let target = |t: Option<&str>| match width {
            Some(w) => format!("{:<w$} ", t.unwrap_or("-"), w = w.max(6)),
            None => String::new(),
        };
        self.ui.println(&format!(
            "{:<8} {}{:<12} {:<24} {:>9}  {}",
            "stage",
            target(Some("target")),
            "status",
            "started",
            "took",
            "log"
        ));
        for s in &r.stages {
            let took =
                s.duration_ms.map(|ms| crate::ui::duration(std::time::Duration::from_millis(ms))).unwrap_or_default();
            self.ui.println(&format!(
                "{:<8} {}{:<12} {:<24} {:>9}  {}",
                s.stage,
                target(s.target.as_deref()),
                s.status.as_str(),
                s.started.as_deref().unwrap_or("-"),
                took,
                s.log.as_ref().map(|p| p.as_str()).unwrap_or("-")
            ));
            if let Some(err) = &s.error {
                let first = err.lines().next().unwrap_or_default();
                self.ui.println(&format!("         {}", self.ui.red(first)));
            }
        }
        if r.running.is_none() && r.stages.iter().any(|s| matches!(s.status, Status::Failed | Status::Interrupted)) {
            self.ui.println(&format!("continue with: {}", self.resume()));
        }
    }
}

/// Which command a failed stage's report offers to run it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rerun {
    /// A stage of `release`: `cargo xtask STAGE` (with the flags in effect).
    Stage,
    /// `cargo xtask STAGE ...` itself: this command line again.
    ThisCommand,
    /// A stage run outside any run: this command line again; there is no run to continue.
    Detached,
}

/// This process's command line as the operator types it: `cargo xtask` and the
/// arguments as given (relative paths work from the same directory).
fn this_command() -> String {
    let args = std::env::args_os().skip(1).map(|a| crate::proc::quote(&a.to_string_lossy()));
    std::iter::once("cargo xtask".to_owned()).chain(args).collect::<Vec<_>>().join(" ")
}

/// `cargo xtask FLAGS COMMAND` as a run records it.
fn started_by(state: &crate::run::State) -> String {
    let flags = state.invocation.as_ref().map(|i| i.flags()).unwrap_or_default();
    std::iter::once("cargo xtask".to_owned()).chain(flags).chain([state.command.clone()]).collect::<Vec<_>>().join(" ")
}

/// The class of a stage's failure: interrupted once a stop signal arrived; what the
/// error says; otherwise infrastructure (exit 2). A failure is the product's (exit 1)
/// only where a stage judged the product and marked it so (`.product()`: a port that
/// does not build, a repository that does not verify, an image that does not boot):
/// an error nobody judged says nothing against the release (docs/runbook.md, "Exit
/// codes").
fn stage_class(err: &anyhow::Error) -> Class {
    if crate::proc::interrupted().is_some() {
        return Class::Interrupted;
    }
    failure::class_of(err).unwrap_or(Class::Infrastructure)
}

fn rec_status_word(interrupted: bool) -> &'static str {
    if interrupted { "interrupted" } else { "failed" }
}

/// The version of `status --json`'s layout (documented in docs/runbook.md). 2: `running`
/// is an object (`pid`, `host`, `command`, `since`), no longer a sentence. 3: a
/// per-target stage of a declared target has `target`, one entry per target.
pub const STATUS_SCHEMA: u32 = 3;

/// `cargo xtask status --json` (schema [`STATUS_SCHEMA`]; documented in docs/runbook.md).
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub schema: u32,
    pub state_dir: Utf8PathBuf,
    pub run: Option<RunSummary>,
    /// Who holds the lock, when a run is in progress.
    pub running: Option<Holder>,
    pub stages: Vec<StageStatus>,
}

#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub dir: Utf8PathBuf,
    pub created: String,
    pub command: String,
    /// The command line that started it, with the flags it recorded.
    #[serde(skip)]
    pub started_by: String,
}

#[derive(Debug, Serialize)]
pub struct StageStatus {
    pub stage: StageName,
    /// The declared target (`[[targets]]`) of a per-target stage; absent for a shared
    /// stage and in a pipeline without `[[targets]]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub status: Status,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_ms: Option<u64>,
    pub attempts: u32,
    /// Log path, relative to the working directory when possible.
    pub log: Option<Utf8PathBuf>,
    pub error: Option<String>,
    /// Run of the last success (this run or an earlier one).
    pub last_success_run: Option<String>,
}

impl StatusReport {
    fn from_run(run: &Run, root: &camino::Utf8Path, running: Option<Holder>) -> StatusReport {
        // The run's stages in order, each for every target of the run (stage x target),
        // then any other record it carries.
        let mut slots: Vec<Slot> = Vec::new();
        for stage in &run.state.stages {
            if stage.per_target() {
                slots.extend(
                    run.state
                        .target_keys()
                        .iter()
                        .map(|k| Slot::new(*stage, k.as_deref()))
                        .filter(|s| run.state.record(s).is_some()),
                );
            } else {
                slots.push(Slot::from(*stage));
            }
        }
        let others: Vec<Slot> = run.state.records.keys().filter(|k| !slots.contains(k)).cloned().collect();
        slots.extend(others);
        let stages = slots
            .iter()
            .filter_map(|s| run.state.record(s).map(|r| (s, r)))
            .map(|(slot, r)| StageStatus {
                stage: slot.stage,
                target: slot.target.clone(),
                status: r.status,
                started: r.started.clone(),
                ended: r.ended.clone(),
                duration_ms: r.duration_ms,
                attempts: r.attempts,
                log: r.log.as_ref().map(|l| display_path(&run.abs(l))),
                error: r.error.clone(),
                last_success_run: r.last_success.as_ref().map(|s| s.run.clone()),
            })
            .collect();
        StatusReport {
            schema: STATUS_SCHEMA,
            state_dir: root.to_owned(),
            run: Some(RunSummary {
                id: run.id().to_owned(),
                dir: display_path(&run.dir),
                created: run.state.created.clone(),
                command: run.state.command.clone(),
                started_by: started_by(&run.state),
            }),
            running,
            stages,
        }
    }
}

/// A path relative to the working directory when it lies below it.
pub fn display_path(path: &camino::Utf8Path) -> Utf8PathBuf {
    match std::env::current_dir().ok().and_then(|d| Utf8PathBuf::from_path_buf(d).ok()) {
        Some(cwd) => crate::fsx::relative_to(path, &cwd),
        None => path.to_owned(),
    }
}

/// A stage with the options its subcommand has when given no flags, for `release`.
/// The options come from clap itself (the same parser as `cargo xtask STAGE`), so the
/// defaults have one source and `release` cannot drift from the command line.
pub fn default_stage(name: StageName) -> Box<dyn AnyStage> {
    use crate::cli;
    match name {
        StageName::Setup => Box::new(no_flags::<cli::Setup>(name)),
        StageName::Port => Box::new(no_flags::<cli::Port>(name)),
        StageName::Makesum => Box::new(no_flags::<cli::Makesum>(name)),
        StageName::Audit => Box::new(no_flags::<cli::Audit>(name)),
        StageName::Bulk => Box::new(no_flags::<cli::Bulk>(name)),
        StageName::Sign => Box::new(no_flags::<cli::Sign>(name)),
        StageName::Publish => Box::new(no_flags::<cli::Publish>(name)),
        StageName::Iso => Box::new(no_flags::<cli::Iso>(name)),
        StageName::Gate => Box::new(no_flags::<cli::Gate>(name)),
    }
}

/// A subcommand's options parsed from an empty argument list.
fn no_flags<T: clap::Args + clap::FromArgMatches>(name: StageName) -> T {
    let command = T::augment_args(clap::Command::default().name(name.as_str()).no_binary_name(true));
    let parsed = command.try_get_matches_from(std::iter::empty::<&str>()).and_then(|m| T::from_arg_matches(&m));
    // Every stage subcommand takes no required argument; a test parses each one.
    parsed.unwrap_or_else(|e| panic!("`cargo xtask {name}` with no flags does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_nobody_judged_is_the_machinerys_and_a_judged_one_keeps_its_class() {
        assert_eq!(stage_class(&anyhow::anyhow!("cannot read a file")), Class::Infrastructure);
        let judged: anyhow::Error = Failure::new("the port lacks pkg-plist").product().into();
        assert_eq!(stage_class(&judged), Class::Product);
        let refused: anyhow::Error = Failure::new("no such version").usage().into();
        assert_eq!(stage_class(&refused), Class::Usage);
    }

    #[test]
    fn every_stage_parses_with_no_flags() {
        for name in StageName::ALL {
            assert_eq!(default_stage(name).name(), name);
        }
    }
}
