//! `bulk.reproduce` and `bulk --reproduce`: after a successful build, build the port a
//! second time from scratch and compare every package of the port byte for byte.
//!
//! The second build runs in its own set (`-z repro`, or `-z SET_repro` after `--set
//! SET`, with a copy of SET's make.conf), so the first build's repository, which sign
//! signs, is never touched; `-c` deletes whatever packages that set held (poudriere's
//! common.sh:8017-8024), so nothing is reused: a fresh build. Each package that differs
//! is reported with both SHA-256 sums and the members inside that differ, read from both
//! archives natively ([`pkgrepo::archive::list_members`]). With `"required"` a
//! difference fails the stage; with `true` it is reported. docs/supply-chain.md.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use super::{BuildStatus, BuiltPackage, Judging, Target, Verdict, judge};
use crate::failure::Failure;
use crate::fingerprint::sha256_file;
use crate::proc::{CmdLine, StreamOpts};
use crate::stage::Cx;

/// The most differing members listed per package.
const MAX_LISTED: usize = 50;

/// `bulk.reproduce`: `false`, `true` (build twice, report differences) or `"required"`
/// (differences fail the stage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reproduce {
    #[default]
    Off,
    Report,
    Required,
}

impl Serialize for Reproduce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Reproduce::Off => s.serialize_bool(false),
            Reproduce::Report => s.serialize_bool(true),
            Reproduce::Required => s.serialize_str("required"),
        }
    }
}

impl<'de> Deserialize<'de> for Reproduce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(Reproduce::Off),
            Raw::Bool(true) => Ok(Reproduce::Report),
            Raw::Word(w) if w == "required" => Ok(Reproduce::Required),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "`{w}` is not a reproduce mode: false, true (report differences) or \"required\" (differences fail bulk)"
            ))),
        }
    }
}

/// What the second build showed, recorded in bulk's outputs and `RUN/bulk/reproduce.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reproduction {
    /// The second build's set, name and log directory.
    pub set: String,
    pub build_name: String,
    pub log_dir: Utf8PathBuf,
    /// Whether differences fail the stage.
    pub required: bool,
    pub packages: Vec<Compared>,
}

impl Reproduction {
    pub fn differing(&self) -> usize {
        self.packages.iter().filter(|p| !p.identical).count()
    }
}

/// One package of both builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    pub pkgname: String,
    pub file: Utf8PathBuf,
    pub first_sha256: String,
    pub second_sha256: Option<String>,
    pub identical: bool,
    /// Members that differ: `NAME: what` (at most [`MAX_LISTED`]).
    pub members: Vec<String>,
    /// How many differ in all.
    pub members_differing: usize,
}

/// The set the second build runs in.
pub fn second_set(set: Option<&str>) -> String {
    match set {
        Some(s) => format!("{s}_repro"),
        None => "repro".to_owned(),
    }
}

/// What the second build needs from the first.
pub struct First<'a> {
    pub cmd_base: CmdLine,
    pub target: &'a Target,
    pub set: Option<&'a str>,
    pub paths: &'a crate::poudriere::Paths,
    pub jail: &'a str,
    pub tree: &'a str,
    pub real: &'a Utf8Path,
    pub packages: &'a [BuiltPackage],
}

/// Builds again in the second set and compares. `cmd_base` is the first build's command
/// up to (not including) `-z`/`-B`; the rest is added here.
pub fn run(cx: &Cx, first: &First, mode: Reproduce, build: &str, opts: &StreamOpts) -> Result<Reproduction> {
    let set = second_set(first.set);
    if let Some(s) = first.set {
        let from = first.paths.set_make_conf(s);
        if from.is_file() {
            let text = std::fs::read(&from).map_err(|e| anyhow::anyhow!("cannot read {from}: {e}"))?;
            crate::fsx::write_atomic(&first.paths.set_make_conf(&set), &text)?;
        }
    }
    let mastername = crate::poudriere::mastername(first.jail, first.tree, Some(&set));
    let log_dir = first.paths.log_dir(&mastername, build);
    let packages_dir = first.paths.packages(&mastername);
    let mut cmd = first.cmd_base.clone().args(["-z", &set, "-c", "-B", build]);
    let prebuilt = &cx.config().bulk.prebuilt;
    if !prebuilt.is_empty() {
        cmd = cmd.args(["-b", prebuilt]);
    }
    cmd = cmd.arg(&first.target.origin);
    cx.say(format!("reproduce: building {} again, fresh, as build {build} of {mastername}", first.target.origin));
    let out = cmd.stream(&cx.log, cx.ui, opts)?;
    let Some(status) = BuildStatus::read(&log_dir)? else {
        return Err(Failure::new(format!(
            "the second build (reproduce) wrote no status files ({log_dir}): poudriere {}",
            out.describe_status()
        ))
        .infrastructure()
        .into());
    };
    let judging =
        Judging { target: first.target, packages: &packages_dir, log_lines: 30, poudriere_error: None, just_ran: true };
    let real2 = match judge(&status, &judging) {
        Verdict::Success { real, .. } => real,
        Verdict::Failure { class, message, help } => {
            return Err(Failure::new(format!("the second build (reproduce) failed: {message}"))
                .help(help)
                .class(class)
                .into());
        }
    };
    let mut compared = Vec::new();
    for p in first.packages {
        compared.push(compare(&first.real.join(&p.file), &real2.join(&p.file), p)?);
    }
    Ok(Reproduction {
        set,
        build_name: build.to_owned(),
        log_dir,
        required: mode == Reproduce::Required,
        packages: compared,
    })
}

/// Compares one package of both builds.
fn compare(a: &Utf8Path, b: &Utf8Path, p: &BuiltPackage) -> Result<Compared> {
    let first_sha256 = sha256_file(a)?;
    let second_sha256 = sha256_file(b).ok();
    let mut c = Compared {
        pkgname: p.pkgname.clone(),
        file: p.file.clone(),
        identical: second_sha256.as_deref() == Some(first_sha256.as_str()),
        first_sha256,
        second_sha256,
        members: Vec::new(),
        members_differing: 0,
    };
    if c.identical {
        return Ok(c);
    }
    if c.second_sha256.is_none() {
        c.members.push(format!("the second build made no {}", p.file));
        c.members_differing = 1;
        return Ok(c);
    }
    let list = |path: &Utf8Path| -> Result<BTreeMap<String, pkgrepo::archive::Member>> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
        let members = pkgrepo::archive::list_members(&bytes).map_err(|e| anyhow::anyhow!("{path}: {e:#}"))?;
        Ok(members.into_iter().map(|m| (m.name.clone(), m)).collect())
    };
    let (ma, mb) = (list(a)?, list(b)?);
    let mut differs = Vec::new();
    for (name, x) in &ma {
        match mb.get(name) {
            None => differs.push(format!("{name}: only in the first build")),
            Some(y) if x != y => {
                let mut what = Vec::new();
                if x.digest != y.digest || x.size != y.size {
                    what.push(format!(
                        "contents ({} bytes sha256 {} vs {} bytes sha256 {})",
                        x.size,
                        short(&x.digest),
                        y.size,
                        short(&y.digest)
                    ));
                }
                if x.mode != y.mode {
                    what.push(format!("mode {:o} vs {:o}", x.mode, y.mode));
                }
                if x.mtime != y.mtime {
                    what.push(format!("mtime {} vs {}", x.mtime, y.mtime));
                }
                if x.owner != y.owner || x.kind != y.kind {
                    what.push(format!("{} {} vs {} {}", x.kind, x.owner, y.kind, y.owner));
                }
                differs.push(format!("{name}: {}", what.join(", ")));
            }
            Some(_) => {}
        }
    }
    differs.extend(mb.keys().filter(|n| !ma.contains_key(*n)).map(|n| format!("{n}: only in the second build")));
    if differs.is_empty() {
        differs.push("every member is the same: the archives differ in order or compression".to_owned());
    }
    c.members_differing = differs.len();
    differs.truncate(MAX_LISTED);
    c.members = differs;
    Ok(c)
}

/// The first 12 characters (a digest, or a link's target: any text).
fn short(text: &str) -> &str {
    text.char_indices().nth(12).map_or(text, |(end, _)| &text[..end])
}

/// Seconds and grace for the second build (bulk's own).
pub fn opts(cfg: &super::BulkConfig) -> StreamOpts {
    StreamOpts {
        timeout: (cfg.timeout_secs > 0).then(|| Duration::from_secs(cfg.timeout_secs)),
        grace: Duration::from_secs(cfg.grace_secs),
    }
}
