//! bundle and unbundle: a stage's work carried from one machine's run to another's.
//!
//! `cargo xtask bundle --stage bulk [--target NAME] --output FILE` packs what the stage
//! produced in the current run: its outputs as state.json records them, every file they
//! name, and the run's identity ([`Meta`]: the colibri release `port` recorded, the
//! pipeline's digest, the run, the stage's fingerprint, the target). The archive is
//! `crates/bundle`'s format: a tar whose first entry lists every file with its SHA-256.
//!
//! `cargo xtask unbundle FILE` adds it to this machine's run, the *receiving run*:
//! - the current run of the state directory, when there is one. Its colibri release
//!   (the commit its `port` recorded) must be the bundle's; a current run of another
//!   release is refused (`--new-run` starts a new one for the bundle instead);
//! - else a new run, started by unbundle with the pipeline's stages; the bundle's `port`
//!   record becomes its `port` (the colibri release the work was built from).
//!
//! Either way the bundle's pipeline digest must be this pipeline's
//! ([`crate::config::Loaded::digest`]): the same pipeline.toml on both machines. The
//! manifest is checked before any file is written; every file is checked against its
//! digest while it is written into a staging directory inside the state directory; only
//! then is the staging directory renamed into the run (`RUN/STAGE/TARGET/from-RUN_ID/`)
//! and the stage recorded in state.json (atomically), as succeeded in the run it came
//! from. A refused bundle leaves nothing behind. So the signing host signs only what
//! arrived in verified bundles: `sign` then reads bulk's outputs as if bulk had run there.
//!
//! Targets: a bundle carries one target's work (`--target NAME`, or the only target of
//! a pipeline without `[[targets]]`, named after `poudriere.arch`); the manifest records
//! the target's name, and unbundle files it under that target's record
//! (`bulk@NAME`) and directory.

use std::fs;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::bulk::BulkOutputs;
use crate::engine::{Engine, ForTarget};
use crate::failure;
use crate::failure::{Class, Failure};
use crate::outputs::Outputs;
use crate::port::PortOutputs;
use crate::run::{Run, Slot, StageRecord, Status, Success, now_rfc3339};
use crate::stage::StageName;

/// The stages whose work can be bundled.
pub const BUNDLED: [StageName; 1] = [StageName::Bulk];

/// The identity of the release a bundle belongs to, and of the run it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The colibri commit `port` recorded.
    pub colibri_commit: String,
    /// [`Loaded::digest`] of the pipeline that ran the stage.
    pub pipeline_digest: String,
    /// The run the stage ran in.
    pub run: String,
    /// The mother-build version that made the bundle.
    pub xtask: String,
}

/// A stage's record as a bundle carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Carried {
    /// The fingerprint of its inputs when it succeeded.
    pub fingerprint: String,
    /// When it ended.
    pub ended: String,
    /// Its outputs, as the sending run recorded them (paths of the sending machine).
    pub outputs: Outputs,
}

/// The metadata in a bundle's manifest (`meta`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub identity: Identity,
    pub stage: StageName,
    /// The target the stage ran for.
    pub target: String,
    /// The stage's record.
    pub record: Carried,
    /// `port`'s record: the colibri release the work was built from.
    pub port: Carried,
}

/// The target a bundle is made for: `--target NAME`, or the pipeline's only target; a
/// pipeline of several targets needs `--target` (each builder bundles its own).
fn target(engine: &Engine) -> Result<ForTarget> {
    let mut chosen = engine.targets()?;
    if chosen.len() != 1 {
        let names: Vec<&str> = chosen.iter().map(|t| t.target.name.as_str()).collect();
        bail!(
            failure!("this pipeline has {} targets: say whose work to bundle", chosen.len())
                .help(format!("add --target NAME, one of: {}", names.join(", ")))
                .usage()
        );
    }
    Ok(chosen.remove(0))
}

/// Where a stage's received files go in the receiving run: the target's directory
/// (the run's own for a pipeline without `[[targets]]`), `STAGE/from-RUN_ID`.
fn received_dir(run: &Run, slot: &Slot, from: &str) -> Utf8PathBuf {
    run.target_dir(slot.target.as_deref()).join(slot.stage.as_str()).join(format!("from-{from}"))
}

fn supported(stage: StageName) -> Result<()> {
    if BUNDLED.contains(&stage) {
        return Ok(());
    }
    let names: Vec<&str> = BUNDLED.iter().map(|s| s.as_str()).collect();
    bail!(
        failure!("`{stage}` cannot be bundled: a bundle carries the work builders hand to the signing host")
            .help(format!("bundle one of: {}", names.join(", ")))
            .usage()
    )
}

impl crate::cli::Bundle {
    /// `cargo xtask bundle`.
    pub fn invoke(self, engine: &Engine) -> Result<()> {
        let loaded = engine.loaded;
        supported(self.stage)?;
        let unit = target(engine)?;
        let _lock = engine
            .state
            .lock(&format!("cargo xtask bundle --stage {}", self.stage), &loaded.xtask("release --resume"))?;
        let run_first = |stage: StageName| format!("run it first: {}", loaded.xtask(stage.as_str()));
        let Some(run) = engine.state.current()? else {
            bail!(
                failure!("there is no run in {} to bundle `{}` from", engine.state.root(), self.stage)
                    .help(run_first(self.stage))
                    .usage()
            );
        };
        let stage_record = |stage: StageName| -> Result<Carried> {
            let slot = Slot::new(stage, unit.key());
            let outputs = run.state.usable_outputs(&slot).cloned();
            let success = run.state.record(&slot).and_then(|r| r.last_success.as_ref());
            match (outputs, success) {
                (Some(outputs), Some(s)) => {
                    Ok(Carried { fingerprint: s.fingerprint.clone(), ended: s.ended.clone(), outputs })
                }
                _ => bail!(
                    failure!("run {} has no successful `{}` to bundle", run.id(), Slot::new(stage, unit.key()))
                        .help(run_first(stage))
                        .usage()
                ),
            }
        };
        let port = stage_record(StageName::Port)?;
        let carried = stage_record(self.stage)?;
        if !engine.outputs_intact(&run, self.stage, &unit, &carried.outputs) {
            bail!(failure!(
                "what `{}` recorded in run {} has changed since it ran (its files were replaced, rewritten or removed)",
                self.stage,
                run.id()
            )
            .help(format!("run it again: {}", loaded.xtask(self.stage.as_str()))));
        }
        let port_outputs = port.outputs.parse::<PortOutputs>().context("the outputs `port` recorded cannot be read")?;
        let commit = port_outputs.commit;
        let (mut files, skipped) = files_of(self.stage, &carried.outputs)?;
        // The Cargo.lock port kept: what sign's SBOM lists, on the signing host too.
        if let Some(lock) = &port_outputs.lock {
            files.push((PORT_LOCK.to_owned(), run.abs(lock)));
        }
        let meta = Meta {
            identity: Identity {
                colibri_commit: commit.clone(),
                pipeline_digest: loaded.digest(),
                run: run.id().to_owned(),
                xtask: env!("CARGO_PKG_VERSION").to_owned(),
            },
            stage: self.stage,
            target: unit.target.name.clone(),
            record: carried,
            port,
        };
        let out = crate::config::absolute(&self.output)?;
        let manifest = bundle::write(&out, &serde_json::to_value(&meta)?, &files)
            .map_err(|e| failure!("cannot write the bundle {out}: {e}"))?;
        for link in &skipped {
            engine.ui.eprintln(&format!("left out the symbolic link {link} (a bundle holds regular files only)"));
        }
        engine.ui.eprintln(&format!(
            "bundled `{}` ({}) of run {} (colibri {}): {} files, {} -> {out}",
            self.stage,
            unit.target.name,
            run.id(),
            short(&commit),
            manifest.files.len(),
            crate::ui::bytes(manifest.total_bytes()),
        ));
        Ok(())
    }
}

/// The files a stage's outputs name, by their path in the bundle; and the symbolic
/// links left out. bulk: every regular file of the repository it judged (`real`), under
/// `repo/`.
/// Files to bundle, `(path in the bundle, file on disk)`.
type Files = Vec<(String, Utf8PathBuf)>;

fn files_of(stage: StageName, outputs: &Outputs) -> Result<(Files, Vec<Utf8PathBuf>)> {
    match stage {
        StageName::Bulk => {
            let bulk: BulkOutputs = outputs.parse().context("the outputs `bulk` recorded cannot be read")?;
            let mut files = Vec::new();
            let mut skipped = Vec::new();
            walk(&bulk.real, Utf8Path::new(""), &mut files, &mut skipped)?;
            files.sort();
            Ok((files.into_iter().map(|(rel, abs)| (format!("repo/{rel}"), abs)).collect(), skipped))
        }
        other => supported(other).map(|()| (Vec::new(), Vec::new())),
    }
}

fn walk(dir: &Utf8Path, rel: &Utf8Path, files: &mut Files, skipped: &mut Vec<Utf8PathBuf>) -> Result<()> {
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot read the directory {dir}"))? {
        let entry = entry.with_context(|| format!("cannot read the directory {dir}"))?;
        let kind = entry.file_type().with_context(|| format!("cannot stat {}", entry.path()))?;
        let name = rel.join(entry.file_name());
        if kind.is_dir() {
            walk(entry.path(), &name, files, skipped)?;
        } else if kind.is_file() {
            files.push((name.into_string(), entry.path().to_owned()));
        } else {
            skipped.push(entry.path().to_owned());
        }
    }
    Ok(())
}

/// The outputs a received stage has in the receiving run, its files moving from
/// `staged` to `dir`. bulk: the repository is `dir/repo`, and `dir/latest` points at it
/// as poudriere's `.latest` points at the build's repository; the package identities are
/// this machine's (a rename keeps them); the builder's poudriere logs stay there, so
/// `log_dir` names a directory of the run that holds none (no path the bundle names is
/// ever read here). Nothing is written.
fn place(stage: StageName, outputs: &Outputs, staged: &Utf8Path, dir: &Utf8Path) -> Result<Outputs> {
    match stage {
        StageName::Bulk => {
            let mut bulk: BulkOutputs = outputs.parse().context("the bundle's `bulk` outputs cannot be read")?;
            bulk.real = dir.join("repo");
            bulk.repo = dir.join("latest");
            bulk.log_dir = dir.join("poudriere-logs");
            let mut produced = crate::identity::Produced::default();
            for p in &bulk.packages {
                crate::fsx::check_contained(&p.file)?;
                produced.add(p.file.clone(), &staged.join("repo").join(&p.file)).with_context(|| {
                    format!("the bundle's `bulk` lists the package {}, which it does not hold", p.file)
                })?;
            }
            bulk.produced = produced;
            Outputs::new(&bulk)
        }
        other => supported(other).map(|()| Outputs::null()),
    }
}

/// Where a bundle holds the Cargo.lock port kept.
const PORT_LOCK: &str = "port-lock/Cargo.lock";

/// port's outputs in the receiving run: the builder's, with `port_dir` a directory of
/// the run that holds nothing (the port was staged on the builder; no path the bundle
/// names is ever read here), so a `port` here stages it again; `lock` the Cargo.lock the
/// bundle carried (`dir/port-lock/Cargo.lock`, as recorded: relative to the state
/// directory), when it carried one (sign checks it against the SHA-256 port took).
fn place_port(outputs: &Outputs, staged: &Utf8Path, dir: &Utf8Path, run: &Run) -> Result<Outputs> {
    let mut port: PortOutputs = outputs.parse().context("the bundle's `port` outputs cannot be read")?;
    port.port_dir = dir.join("port");
    port.lock = staged.join(PORT_LOCK).is_file().then(|| run.rel(&dir.join(PORT_LOCK)));
    Outputs::new(&port)
}

/// The first 12 characters of a commit.
fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// A directory that is removed when dropped, on every path.
struct Staging {
    dir: Utf8PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl crate::cli::Unbundle {
    /// `cargo xtask unbundle`.
    pub fn invoke(self, engine: &Engine) -> Result<()> {
        let loaded = engine.loaded;
        let file = crate::config::absolute(&self.file)?;
        let lock = engine.state.lock(&format!("cargo xtask unbundle {file}"), &loaded.xtask("release --resume"))?;
        let current = if self.new_run { None } else { engine.state.current()? };
        let receiving_commit = match &current {
            Some(run) => run
                .state
                .usable_outputs(StageName::Port)
                .map(|o| o.parse::<PortOutputs>().map(|p| p.commit))
                .transpose()
                .context("the outputs `port` recorded in the current run cannot be read")?,
            None => None,
        };
        // An unbundle killed mid-way left its staging directory: nobody else uses one
        // while the lock is held.
        if let Ok(entries) = engine.state.root().read_dir_utf8() {
            for e in entries.flatten().filter(|e| e.file_name().starts_with(".unbundle-")) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let staging = Staging { dir: engine.state.root().join(format!(".unbundle-{}", std::process::id())) };
        fs::create_dir_all(staging.dir.join("files")).with_context(|| format!("cannot create {}", staging.dir))?;

        let digest = loaded.digest();
        let all = loaded.targets();
        let known: Vec<String> = all.iter().map(|t| t.name.clone()).collect();
        let mut accepted: Option<Meta> = None;
        let accept = |m: &bundle::Manifest| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let meta: Meta = serde_json::from_value(m.meta.clone())
                .map_err(|e| format!("the manifest's metadata is not a mother-build stage's: {e}"))?;
            let refuse = |message: String, help: String| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(Refusal { message, help, class: Class::Usage })
            };
            if !BUNDLED.contains(&meta.stage) {
                return Err(format!("the bundle carries `{}`, which is never bundled", meta.stage).into());
            }
            if !known.contains(&meta.target) {
                return Err(refuse(
                    format!("the bundle is for the target {}, which this pipeline does not have", meta.target),
                    format!("this pipeline's targets are: {}", known.join(", ")),
                ));
            }
            if meta.identity.pipeline_digest != digest {
                return Err(refuse(
                    format!(
                        "the bundle belongs to another release: its pipeline digest {} is not this pipeline's {digest} ({} differs from the pipeline.toml run {} used)",
                        meta.identity.pipeline_digest, loaded.path, meta.identity.run
                    ),
                    "unbundle with the same pipeline.toml the bundle was made with (host-specific settings go in -o KEY=VALUE)".into(),
                ));
            }
            if let (Some(ours), Some(run)) = (&receiving_commit, &current)
                && *ours != meta.identity.colibri_commit
            {
                return Err(refuse(
                    format!(
                        "the bundle belongs to another release: it was built from colibri {}, but run {} here is of colibri {ours}",
                        meta.identity.colibri_commit,
                        run.id()
                    ),
                    format!(
                        "receive it in a new run: {}",
                        loaded.xtask(&format!("unbundle --new-run {}", crate::proc::quote(file.as_str())))
                    ),
                ));
            }
            accepted = Some(meta);
            Ok(())
        };
        let input = bundle::open(&file).map_err(|e| failure!("{e}").help("name an existing bundle file").usage())?;
        let manifest = bundle::read(input, &staging.dir.join("files"), &bundle::Limits::default(), accept)
            .map_err(|e| refusal(&file, e))?;
        let Some(meta) = accepted else { bail!("the bundle's manifest was never checked") };
        sync_tree(&staging.dir)?;

        let mut run = match current {
            Some(run) => run,
            None => engine.state.create(
                &lock,
                "unbundle",
                &loaded.invocation,
                &loaded.config.pipeline.stages,
                &all,
                None,
            )?,
        };
        let key = all.iter().find(|t| t.name == meta.target).and_then(|t| t.key());
        let slot = Slot::new(meta.stage, key);
        let dest = received_dir(&run, &slot, &meta.identity.run);
        fs::create_dir_all(dest.parent().unwrap_or(&run.dir)).with_context(|| format!("cannot create {dest}"))?;
        let files = staging.dir.join("files");
        crate::fsx::write_atomic(&files.join("bundle.json"), &serde_json::to_vec_pretty(&manifest)?)?;
        if meta.stage == StageName::Bulk {
            std::os::unix::fs::symlink("repo", files.join("latest")).context("cannot link latest to repo")?;
        }
        let outputs = place(meta.stage, &meta.record.outputs, &files, &dest)?;
        let port = Carried { outputs: place_port(&meta.port.outputs, &files, &dest, &run)?, ..meta.port.clone() };
        crate::fsx::replace_dir(&files, &dest)?;

        if receiving_commit.is_none() {
            received(run.state.record_mut(StageName::Port), &port, &meta.identity.run);
        }
        let rec = run.state.record_mut(&slot);
        let carried = Carried { outputs, ..meta.record.clone() };
        received(rec, &carried, &meta.identity.run);
        run.save()?;
        engine.ui.eprintln(&format!(
            "unbundled `{}` ({}) of run {} (colibri {}): {} files verified against the bundle's manifest, {} -> run {}",
            meta.stage,
            meta.target,
            meta.identity.run,
            short(&meta.identity.colibri_commit),
            manifest.files.len(),
            crate::ui::bytes(manifest.total_bytes()),
            run.id()
        ));
        engine.ui.eprintln(&format!("next: {}", loaded.xtask("sign")));
        Ok(())
    }
}

/// Records a stage received from another run: succeeded there, with these outputs.
fn received(rec: &mut StageRecord, carried: &Carried, from: &str) {
    let now = now_rfc3339();
    rec.status = Status::Succeeded;
    rec.started = Some(now.clone());
    rec.ended = Some(now);
    rec.duration_ms = Some(0);
    rec.fingerprint = Some(carried.fingerprint.clone());
    rec.log = None;
    rec.error = None;
    rec.pid = None;
    rec.last_success = Some(Success {
        run: from.to_owned(),
        ended: carried.ended.clone(),
        fingerprint: carried.fingerprint.clone(),
        outputs: carried.outputs.clone(),
    });
}

/// A refusal from the `accept` check: the message, what to do, the exit class.
#[derive(Debug)]
struct Refusal {
    message: String,
    help: String,
    class: Class,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// A bundle's error as the operator reads it: a bundle that is not what it claims is the
/// product's failure (exit 1: do not sign it); another release's is a usage error.
fn refusal(file: &Utf8Path, e: bundle::Error) -> anyhow::Error {
    match e {
        bundle::Error::Rejected(inner) => match inner.downcast::<Refusal>() {
            Ok(r) => Failure::new(format!("{file} is refused: {}", r.message)).help(r.help).class(r.class).into(),
            Err(other) => failure!("{file} is refused: {other}").help(REMAKE).product().into(),
        },
        bundle::Error::Refused(why) => failure!("{file} is refused: {why}").help(REMAKE).product().into(),
        e @ bundle::Error::Io { .. } => failure!("cannot unbundle {file}: {e}").infrastructure().into(),
    }
}

const REMAKE: &str = "nothing of it was kept; make the bundle again on the machine that ran the stage (cargo xtask bundle) and carry it over again";

/// Flushes every file and directory under `dir` to disk before the run names them.
fn sync_tree(dir: &Utf8Path) -> Result<()> {
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(entry.path())?;
        } else {
            fs::File::open(entry.path())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", entry.path()))?;
        }
    }
    crate::fsx::sync_dir(dir)
}
