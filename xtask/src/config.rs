//! pipeline.toml: the fixed pipeline and every site setting, parsed strictly.
//!
//! Every table is a struct declared with [`settings!`], which keeps each key's type,
//! default and documentation in one place: serde reads it, `Default` fills what the
//! file leaves out, and `docs/pipeline-toml.md` is generated from it.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::failure;
use crate::failure::{Failure, ResultExt};
use crate::stage::StageName;

/// A key's documentation, as `docs/pipeline-toml.md` shows it.
pub struct FieldDoc {
    pub name: &'static str,
    pub ty: &'static str,
    pub doc: &'static str,
}

/// A settings table that can describe itself.
pub trait Documented: Default + Serialize {
    fn doc() -> &'static str;
    fn fields() -> Vec<FieldDoc>;
}

/// Declares a settings table: a struct that rejects unknown keys, takes each missing
/// key from its default, and documents itself (see [`Documented`]).
#[macro_export]
macro_rules! settings {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $fdoc:literal])*
                pub $field:ident : $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty, )*
        }
        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }
        impl $crate::config::Documented for $name {
            fn doc() -> &'static str {
                concat!($($sdoc, "\n",)*)
            }
            fn fields() -> Vec<$crate::config::FieldDoc> {
                vec![$($crate::config::FieldDoc {
                    name: stringify!($field),
                    ty: stringify!($ty),
                    doc: concat!($($fdoc, "\n",)*),
                },)*]
            }
        }
    };
}

settings! {
    /// The pipeline itself: which stages `release` runs, in order, and where runs live.
    pub struct PipelineConfig {
        /// Stage order for `cargo xtask release`. `setup` is not a release stage.
        pub stages: Vec<StageName> = StageName::RELEASE.to_vec(),
        /// Directory holding the runs (state, logs, outputs), relative to pipeline.toml.
        /// CI carries it from job to job.
        pub state_dir: Utf8PathBuf = "target/mother-build".into(),
        /// Lines of a failed stage's log shown on the terminal.
        pub tail_lines: usize = 25,
    }
}

settings! {
    /// The pkg repository as clients see it.
    pub struct RepositoryConfig {
        /// Repository name in the client's repo conf (`clawdie: { ... }`).
        pub name: String = "clawdie".into(),
        /// Public URL clients fetch from.
        pub url: String = "https://pkg.clawdie.si/".into(),
        /// ABI every package must carry (`pkg config abi` on the target).
        pub abi: String = "FreeBSD:15:amd64".into(),
        /// OSVERSION of the target release (its `__FreeBSD_version`), for `pkg -o
        /// OSVERSION=` in the iso stage: 1500068 is 15.0-RELEASE. It must not be lower
        /// than the value pkg stamps into every package, the jail's (the
        /// `#define __FreeBSD_version` line of the jail's usr/include/sys/param.h), or pkg
        /// asks before it installs them; its major version must be the ABI's.
        pub osversion: u32 = 1500068,
    }
}

/// How a catalogue is signed; the layout clients must be told about follows from it.
pub use pkgrepo::TrustMode;

settings! {
    /// The release signing key. The private key never leaves its file: it is not printed,
    /// logged or copied, and a key file readable by group or others is refused.
    pub struct SigningConfig {
        /// Private key, in a format pkg signs with; its type is read from the key: RSA (PEM),
        /// ecc (pkg's own DER, `pkg key --create -t ecc`), ecdsa (DER ECPrivateKey). Mode
        /// 0600 or 0400, owned by root.
        pub key: Utf8PathBuf = "/usr/local/etc/ssl/clawdie-pkg.key".into(),
        /// Public key published to clients: PEM for RSA, pkg's DER for ecc, DER
        /// SubjectPublicKeyInfo (or pkg's DER) for ecdsa.
        pub pubkey: Utf8PathBuf = "/usr/local/etc/ssl/clawdie-pkg.pub".into(),
        /// `pubkey` (sign with the key file) or `fingerprints` (sign with `command`).
        pub trust: TrustMode = TrustMode::Pubkey,
        /// Signing command (argument vector) speaking pkg's `signing_command:` protocol
        /// (`<sha256>\n` in; `SIGNATURE`, `CERT`, `END` out). When set, it signs instead of
        /// the key file; fingerprints mode with `sign.method = "pkg"` requires it.
        pub command: Vec<String> = Vec::new(),
        /// Fingerprints directory (with `trusted/` and `revoked/`) for fingerprints mode.
        pub fingerprints: Utf8PathBuf = "/usr/local/etc/pkg/fingerprints/clawdie".into(),
    }
}

/// Declares the `[tools]` table and the [`Tool`] enum from one list.
macro_rules! tools {
    ($($(#[doc = $doc:literal])* $field:ident => $default:literal,)*) => {
        /// An external program mother-build runs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub enum Tool { $($field,)* }

        settings! {
            /// Paths of the external programs. Each defaults to its name, looked up on PATH;
            /// tests point them at stand-ins.
            pub struct Tools {
                $($(#[doc = $doc])* pub $field: String = $default.into(),)*
            }
        }

        impl Tools {
            /// The program to run for `tool`.
            pub fn get(&self, tool: Tool) -> &str {
                match tool { $(Tool::$field => &self.$field,)* }
            }
        }
    };
}

tools! {
    /// git, for the colibri checkout.
    git => "git",
    /// gzip, for reproducible source archives (`gzip -n`).
    gzip => "gzip",
    /// make, for `makesum.method = "ports"`.
    make => "make",
    /// poudriere.
    poudriere => "poudriere",
    /// pkg(8).
    pkg => "pkg",
    /// openssl, for key generation in setup.
    openssl => "openssl",
    /// zpool, for setup's pool check.
    zpool => "zpool",
    /// zfs.
    zfs => "zfs",
    /// freebsd-version, for setup's release check.
    freebsd_version => "freebsd-version",
    /// sysrc.
    sysrc => "sysrc",
    /// kldload, for setup's vmm check.
    kldload => "kldload",
    /// kldstat.
    kldstat => "kldstat",
    /// service(8), for nginx in setup and publish.
    service => "service",
    /// nginx, for `nginx -t` before setup and publish reload it.
    nginx => "nginx",
    /// rsync, for remote publishing.
    rsync => "rsync",
    /// ssh, for remote publishing.
    ssh => "ssh",
    /// bhyve.
    bhyve => "bhyve",
    /// bhyvectl.
    bhyvectl => "bhyvectl",
    /// bhyveload.
    bhyveload => "bhyveload",
    /// qemu-system-x86_64, for the qemu gate backend (gate.qemu.arch = "x86_64").
    qemu => "qemu-system-x86_64",
    /// qemu-system-aarch64, for the qemu gate backend (gate.qemu.arch = "aarch64").
    qemu_aarch64 => "qemu-system-aarch64",
    /// ifconfig, for `gate --pf-allow`.
    ifconfig => "ifconfig",
    /// pfctl, for `gate --pf-allow`.
    pfctl => "pfctl",
}

/// The whole of pipeline.toml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub tools: Tools,
    pub repository: RepositoryConfig,
    pub signing: SigningConfig,
    pub poudriere: crate::poudriere::PoudriereConfig,
    pub setup: crate::setup::SetupConfig,
    pub port: crate::port::PortConfig,
    pub makesum: crate::makesum::MakesumConfig,
    pub audit: crate::audit::AuditConfig,
    pub bulk: crate::bulk::BulkConfig,
    pub sign: crate::sign::SignConfig,
    pub publish: crate::publish::PublishConfig,
    pub iso: crate::iso::IsoConfig,
    pub gate: crate::gate::GateConfig,
    pub report: crate::report::ReportConfig,
    pub notify: crate::notify::NotifyConfig,
    /// `[[targets]]`: empty means one target made of `[repository]` and `[poudriere]`.
    pub targets: Vec<crate::targets::TargetConfig>,
}

impl Config {
    /// A stage's own table, as the engine puts it into the stage's fingerprint.
    pub fn stage_table(&self, stage: StageName) -> serde_json::Value {
        let value = match stage {
            StageName::Setup => serde_json::to_value(&self.setup),
            StageName::Port => serde_json::to_value(&self.port),
            StageName::Makesum => serde_json::to_value(&self.makesum),
            StageName::Audit => serde_json::to_value(&self.audit),
            StageName::Bulk => serde_json::to_value(&self.bulk),
            StageName::Sign => serde_json::to_value(&self.sign),
            StageName::Publish => serde_json::to_value(&self.publish),
            StageName::Iso => serde_json::to_value(&self.iso),
            StageName::Gate => serde_json::to_value(&self.gate),
        };
        value.unwrap_or(serde_json::Value::Null)
    }
}

/// Every table of pipeline.toml, in file order, with its documentation (for the docs
/// generator and the tidy test that keeps it current).
pub fn tables() -> Vec<(&'static str, &'static str, Vec<FieldDoc>, toml::Table)> {
    fn table<T: Documented>(name: &'static str) -> (&'static str, &'static str, Vec<FieldDoc>, toml::Table) {
        let defaults = toml::Table::try_from(T::default()).unwrap_or_default();
        (name, T::doc(), T::fields(), defaults)
    }
    vec![
        table::<PipelineConfig>("pipeline"),
        table::<Tools>("tools"),
        table::<RepositoryConfig>("repository"),
        table::<SigningConfig>("signing"),
        table::<crate::poudriere::PoudriereConfig>("poudriere"),
        table::<crate::setup::SetupConfig>("setup"),
        table::<crate::port::PortConfig>("port"),
        table::<crate::makesum::MakesumConfig>("makesum"),
        table::<crate::audit::AuditConfig>("audit"),
        table::<crate::bulk::BulkConfig>("bulk"),
        table::<crate::sign::SignConfig>("sign"),
        table::<crate::publish::PublishConfig>("publish"),
        table::<crate::iso::IsoConfig>("iso"),
        table::<crate::gate::GateConfig>("gate"),
        table::<crate::gate::LoginConfig>("gate.login"),
        table::<crate::gate::BhyveConfig>("gate.bhyve"),
        table::<crate::gate::QemuConfig>("gate.qemu"),
        table::<crate::gate::CommandConfig>("gate.command"),
        table::<crate::report::ReportConfig>("report"),
        table::<crate::notify::NotifyConfig>("notify"),
        table::<crate::targets::TargetConfig>("[targets]"),
    ]
}

/// A setting given on the command line rather than in the file: `-o KEY=VALUE`, or a
/// flag that stands for one (`--colibri`, `--state-dir`).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The dotted key (`gate.timeout_secs`).
    pub key: String,
    pub value: toml::Value,
    /// The argument as given, for messages: `-o gate.timeout_secs=5`, `--colibri ../c`.
    pub arg: String,
}

/// How the configuration was asked for on the command line. Each run records it
/// (state.json), `release --resume` and `cargo xtask STAGE` reuse it, and the hints
/// print it back (`--config`, `--state-dir`) so they work as printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// `--config` (or MOTHER_BUILD_CONFIG), absolute; none: this repository's pipeline.toml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Utf8PathBuf>,
    /// `--state-dir`, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<Utf8PathBuf>,
    /// `--colibri`, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colibri: Option<Utf8PathBuf>,
    /// Each `-o KEY=VALUE`, as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Invocation {
    /// The pipeline file it names.
    pub fn config_path(&self) -> Utf8PathBuf {
        self.config.clone().unwrap_or_else(default_config)
    }

    /// Its settings as overrides, in the order they apply: `-o` first, then the flags.
    pub fn overrides(&self) -> Result<Vec<Override>> {
        let mut out = Vec::new();
        for o in &self.options {
            out.push(parse_override(o)?);
        }
        // Paths given on the command line are relative to where the command runs (they
        // were made absolute when given).
        for (key, flag, path) in
            [("port.colibri", "--colibri", &self.colibri), ("pipeline.state_dir", "--state-dir", &self.state_dir)]
        {
            if let Some(path) = path {
                out.push(Override {
                    key: key.into(),
                    value: toml::Value::String(path.to_string()),
                    arg: format!("{flag} {}", crate::proc::quote(path.as_str())),
                });
            }
        }
        Ok(out)
    }

    /// The flags that give it, as a command line shows them (`--config P -o K=V`).
    pub fn flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.config {
            out.extend(["--config".to_owned(), shown_path(c)]);
        }
        if let Some(s) = &self.state_dir {
            out.extend(["--state-dir".to_owned(), shown_path(s)]);
        }
        if let Some(c) = &self.colibri {
            out.extend(["--colibri".to_owned(), shown_path(c)]);
        }
        for o in &self.options {
            out.extend(["-o".to_owned(), crate::proc::quote(o)]);
        }
        out
    }
}

/// What continuing a run with its recorded [`Invocation`] comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reuse {
    /// The invocation to load: the given flags, and the run's where none was given.
    pub invocation: Invocation,
    /// The run's flags taken again, as a command line shows them.
    pub reused: Vec<String>,
    /// Flags given now that replace the run's: (given, the run's).
    pub replaced: Vec<(String, String)>,
}

impl Invocation {
    /// This invocation completed with a run's `recorded` one: what this one leaves out,
    /// the run's gives; where both set the same thing differently, this one wins.
    pub fn over(&self, recorded: &Invocation) -> Reuse {
        let mut reuse = Reuse { invocation: self.clone(), reused: Vec::new(), replaced: Vec::new() };
        let paths = [
            ("--config", &self.config, &recorded.config, &mut reuse.invocation.config),
            ("--state-dir", &self.state_dir, &recorded.state_dir, &mut reuse.invocation.state_dir),
            ("--colibri", &self.colibri, &recorded.colibri, &mut reuse.invocation.colibri),
        ];
        for (flag, given, theirs, merged) in paths {
            let shown = |p: &Utf8Path| format!("{flag} {}", shown_path(p));
            match (given, theirs) {
                (None, Some(r)) => {
                    reuse.reused.push(shown(r));
                    *merged = Some(r.clone());
                }
                (Some(g), Some(r)) if g != r => reuse.replaced.push((shown(g), shown(r))),
                _ => {}
            }
        }
        let key = |o: &str| o.split_once('=').map_or(o, |(k, _)| k).trim().to_owned();
        let mut options = Vec::new();
        for theirs in &recorded.options {
            match self.options.iter().find(|o| key(o) == key(theirs)) {
                None => {
                    reuse.reused.push(format!("-o {}", crate::proc::quote(theirs)));
                    options.push(theirs.clone());
                }
                Some(given) if given != theirs => reuse
                    .replaced
                    .push((format!("-o {}", crate::proc::quote(given)), format!("-o {}", crate::proc::quote(theirs)))),
                Some(_) => {}
            }
        }
        options.extend(self.options.iter().cloned());
        reuse.invocation.options = options;
        reuse
    }
}

/// A path as a command line printed for the operator shows it: relative to the working
/// directory when it lies below it, shell-quoted.
pub fn shown_path(path: &Utf8Path) -> String {
    crate::proc::quote(crate::engine::display_path(path).as_str())
}

/// This repository's pipeline.toml, the file used without `--config`.
pub fn default_config() -> Utf8PathBuf {
    crate::project_root().join("pipeline.toml")
}

/// A loaded pipeline.toml and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file, as given.
    pub path: Utf8PathBuf,
    /// Directory relative paths in the file are resolved against.
    pub base: Utf8PathBuf,
    /// How the command line asked for it.
    pub invocation: Invocation,
    /// The file's text, kept so later checks can point at a line.
    text: String,
    /// The settings the command line gave, which errors about them name.
    overrides: Vec<Override>,
    /// The state directory the file itself names (before any override).
    file_state_dir: Utf8PathBuf,
    /// The target this configuration is projected for ([`Loaded::for_target`]).
    pub target: Option<crate::targets::Target>,
    /// How many targets the pipeline has.
    target_count: usize,
}

impl Loaded {
    /// Reads and checks the pipeline file an invocation names, with its overrides.
    /// Errors name `FILE:LINE:COL`, the offending word and, where serde knows them, the
    /// valid choices; an error about a setting given on the command line names that
    /// argument instead.
    pub fn load(invocation: &Invocation) -> Result<Loaded> {
        let path = invocation.config_path();
        let overrides = invocation.overrides()?;
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read the pipeline file {path}"))
            .help("pass another with --config PATH")?;
        let text = String::from_utf8(bytes).map_err(|e| not_utf8(&path, e.as_bytes(), e.utf8_error()))?;
        let file: Config = toml::from_str(&text).map_err(|err| {
            let at = err.span().map_or((1, 1), |s| line_col(&text, s.start));
            Failure::new(located(&path, at, err.message()))
        })?;
        let config = if overrides.is_empty() { file.clone() } else { apply_overrides(&file, &overrides)? };
        let base = absolute(path.parent().unwrap_or(Utf8Path::new(".")))?;
        let file_state_dir = resolve_in(&base, &file.pipeline.state_dir);
        let target_count = config.targets.len().max(1);
        let loaded = Loaded {
            config,
            path,
            base,
            invocation: invocation.clone(),
            text,
            overrides,
            file_state_dir,
            target: None,
            target_count,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    /// Builds a Loaded from a config in memory (tests).
    pub fn from_parts(config: Config, path: Utf8PathBuf, base: Utf8PathBuf) -> Loaded {
        let text = toml::to_string(&config).unwrap_or_default();
        let file_state_dir = resolve_in(&base, &config.pipeline.state_dir);
        let target_count = config.targets.len().max(1);
        Loaded {
            config,
            path,
            base,
            invocation: Invocation::default(),
            text,
            overrides: Vec::new(),
            file_state_dir,
            target: None,
            target_count,
        }
    }

    /// The pipeline's targets, in file order (one when the file declares none).
    pub fn targets(&self) -> Vec<crate::targets::Target> {
        crate::targets::targets(self)
    }

    /// Whether the pipeline has more than one target (hints then name the target).
    pub fn several_targets(&self) -> bool {
        self.target_count > 1
    }

    /// The target called `name`, or a usage error listing them.
    pub fn target_named(&self, name: &str) -> Result<crate::targets::Target> {
        let all = self.targets();
        all.iter().find(|t| t.name == name).cloned().ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|t| t.name.as_str()).collect();
            failure!("--target {name}: the pipeline has no target `{name}`")
                .help(format!("its targets are: {}", names.join(", ")))
                .usage()
                .into()
        })
    }

    /// This configuration as `target`'s stages see it: its ABI, OSVERSION, jail and
    /// `[gate]` in place of the file's `[repository]`, `[poudriere]` and `[gate]` values.
    /// Errors about those keys then point at the target's table.
    pub fn for_target(&self, target: &crate::targets::Target) -> Result<Loaded> {
        let mut loaded = self.clone();
        if let Some(i) = target.index {
            let t = &self.config.targets[i];
            let cfg = &mut loaded.config;
            cfg.repository.abi = t.abi.clone();
            cfg.repository.osversion = t.osversion;
            cfg.poudriere.jail = t.jail.clone();
            cfg.poudriere.version = t.version.clone();
            cfg.poudriere.arch = t.arch.clone();
            cfg.gate = crate::targets::merged_gate(&self.config.gate, &t.gate)
                .map_err(|e| self.error_at(&format!("targets.{i}.gate"), e))?;
            cfg.iso = crate::targets::merged_iso(&self.config.iso, &t.iso)
                .map_err(|e| self.error_at(&format!("targets.{i}.iso"), e))?;
        }
        loaded.target = Some(target.clone());
        Ok(loaded)
    }

    /// The pipeline's digest: SHA-256 of the settings the file holds (parsed, keys in
    /// order, comments and layout left out; what the command line's `-o` changes is not
    /// in it). Two machines with the same pipeline.toml agree on it, whatever state
    /// directory or host-specific `-o` each passes: a bundle carries it
    /// ([`crate::bundle`]).
    pub fn digest(&self) -> String {
        let value: toml::Value = toml::from_str(&self.text).unwrap_or(toml::Value::Table(toml::Table::new()));
        let json = serde_json::to_vec(&value).unwrap_or_default();
        crate::fingerprint::sha256_bytes(&json)
    }

    /// Resolves a path from the file against its directory.
    pub fn resolve(&self, path: &Utf8Path) -> Utf8PathBuf {
        resolve_in(&self.base, path)
    }

    /// The state directory: the file's `pipeline.state_dir`, or what the command line
    /// put instead.
    pub fn state_dir(&self) -> Utf8PathBuf {
        self.resolve(&self.config.pipeline.state_dir)
    }

    /// A `cargo xtask` command line for the operator to run, e.g. `xtask("release
    /// --resume")`, that works as printed: with `--config` and `--state-dir` when they
    /// are not what a bare `cargo xtask` would use, and the `--colibri` and `-o` in effect.
    pub fn xtask(&self, args: &str) -> String {
        let mut line = vec!["cargo xtask".to_owned()];
        let inv = &self.invocation;
        if let Some(config) = &inv.config
            && *config != default_config()
        {
            line.extend(["--config".to_owned(), shown_path(config)]);
        }
        let state_dir = self.state_dir();
        if state_dir != self.file_state_dir {
            line.extend(["--state-dir".to_owned(), shown_path(&state_dir)]);
        }
        if let Some(colibri) = &inv.colibri {
            line.extend(["--colibri".to_owned(), shown_path(colibri)]);
        }
        for o in &inv.options {
            line.extend(["-o".to_owned(), crate::proc::quote(o)]);
        }
        line.push(args.to_owned());
        // A per-target stage's command runs every target unless told which.
        let per_target = args
            .split_whitespace()
            .next()
            .and_then(|w| <StageName as clap::ValueEnum>::from_str(w, false).ok())
            .is_some_and(StageName::per_target);
        if let Some(t) = &self.target
            && per_target
            && self.several_targets()
            && !args.contains("--target")
        {
            line.extend(["--target".to_owned(), t.name.clone()]);
        }
        line.join(" ")
    }

    /// An error about the value at `key` (a dotted path such as `poudriere.jail`): when
    /// the command line set it, naming that argument; else located at its line and
    /// column in the file (or at the table it belongs to when the file leaves it out).
    pub fn error_at(&self, key: &str, message: impl std::fmt::Display) -> anyhow::Error {
        self.failure_at(key, message).into()
    }

    /// [`Loaded::error_at`] as a [`Failure`], to add help lines to.
    pub fn failure_at(&self, key: &str, message: impl std::fmt::Display) -> Failure {
        if let Some(i) = self.target.as_ref().and_then(|t| t.index) {
            let own = crate::targets::PROJECTED
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, field)| format!("targets.{i}.{field}"))
                .or_else(|| key.strip_prefix("gate.").map(|rest| format!("targets.{i}.gate.{rest}")));
            if let Some(start) = own.and_then(|own| key_span(&self.text, &own)) {
                return Failure::new(located(&self.path, line_col(&self.text, start), message));
            }
        }
        if let Some(o) = self.overrides.iter().rev().find(|o| covers(&o.key, key)) {
            return Failure::new(format!("{}: {message}", o.arg));
        }
        match key_span(&self.text, key) {
            Some(start) => Failure::new(located(&self.path, line_col(&self.text, start), message)),
            None => {
                // Not in the file: the default is at fault; point at its table.
                let at = ancestors(key).find_map(|k| key_span(&self.text, k)).unwrap_or(0);
                Failure::new(located(
                    &self.path,
                    line_col(&self.text, at),
                    format!("{message} (the file leaves `{key}` at its default)"),
                ))
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let stages = &self.config.pipeline.stages;
        if stages.is_empty() {
            return Err(self.error_at("pipeline.stages", "the stage list is empty"));
        }
        let mut seen = BTreeMap::new();
        for (i, stage) in stages.iter().enumerate() {
            if *stage == StageName::Setup {
                return Err(self
                    .failure_at("pipeline.stages", "`setup` provisions the host once and is not a release stage")
                    .help(format!("run `{}` by itself", self.xtask("setup")))
                    .into());
            }
            if let Some(first) = seen.insert(*stage, i) {
                return Err(self.error_at(
                    "pipeline.stages",
                    format!("stage `{stage}` is listed twice (positions {} and {})", first + 1, i + 1),
                ));
            }
        }
        self.validate_target()?;
        crate::port::validate(self)?;
        crate::makesum::validate(self)?;
        crate::audit::validate(self)?;
        crate::sign::validate(self)?;
        crate::notify::validate(self)?;
        crate::targets::validate(self)
    }

    /// The checks of the settings a target changes ([`Loaded::for_target`]).
    pub(crate) fn validate_target(&self) -> Result<()> {
        self.validate_osversion()?;
        crate::poudriere::validate(self)?;
        crate::publish::validate(self)?;
        crate::iso::validate(self)?;
        crate::gate::validate(self)
    }

    /// pkg refuses a repository whose packages are for another major version than its
    /// OSVERSION says (`is_valid_os_version()` in pkg's libpkg/utils.c): the two
    /// settings that say it must agree.
    fn validate_osversion(&self) -> Result<()> {
        let repo = &self.config.repository;
        let mut abi = repo.abi.split(':');
        let abi_major = match (abi.next(), abi.next().map(str::parse::<u32>)) {
            (Some("FreeBSD"), Some(Ok(major))) => major,
            _ => return Ok(()),
        };
        let major = repo.osversion / 100_000;
        if major != abi_major {
            return Err(self
                .failure_at(
                    "repository.osversion",
                    format!(
                        "OSVERSION {} is FreeBSD {major}, but repository.abi `{}` is FreeBSD {abi_major}: pkg would refuse the packages",
                        repo.osversion, repo.abi
                    ),
                )
                .help(format!(
                    "set repository.osversion to the release's __FreeBSD_version ({} for 15.0-RELEASE; the `#define __FreeBSD_version` line of the jail's usr/include/sys/param.h)",
                    RepositoryConfig::default().osversion
                ))
                .into());
        }
        Ok(())
    }
}

fn resolve_in(base: &Utf8Path, path: &Utf8Path) -> Utf8PathBuf {
    if path.is_absolute() { path.to_owned() } else { base.join(path) }
}

/// Whether an override of `set` decides the value at `key`: the same key, one inside
/// it, or a table holding it.
fn covers(set: &str, key: &str) -> bool {
    let inside = |outer: &str, inner: &str| inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('.'));
    set == key || inside(set, key) || inside(key, set)
}

/// `a.b.c`'s tables, innermost first: `a.b`, `a`.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.char_indices().rev().filter(|(_, c)| *c == '.').map(|(i, _)| &key[..i])
}

/// The error for a file that is not UTF-8: where the first bad byte is.
fn not_utf8(path: &Utf8Path, bytes: &[u8], err: std::str::Utf8Error) -> anyhow::Error {
    let valid = err.valid_up_to();
    let before = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
    let at = line_col(before, before.len());
    let byte = bytes.get(valid).copied().unwrap_or_default();
    failure!(
        "{}",
        located(path, at, format_args!("byte 0x{byte:02x} is not UTF-8 (the pipeline file must be UTF-8 text)"))
    )
    .help("write the file as UTF-8")
    .into()
}

/// Applies `KEY=VALUE` overrides from the command line, type-checked like the file; an
/// error names the argument.
fn apply_overrides(config: &Config, overrides: &[Override]) -> Result<Config> {
    let mut table = toml::Table::try_from(config).context("cannot represent the configuration as TOML")?;
    let mut checked = config.clone();
    for o in overrides {
        let mut parts: Vec<&str> = o.key.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut cur = &mut table;
        for part in &parts {
            cur = cur
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| failure!("{}: `{part}` is not a table", o.arg))?;
        }
        cur.insert(last.to_owned(), o.value.clone());
        checked = table.clone().try_into().map_err(|e: toml::de::Error| failure!("{}: {}", o.arg, e.message()))?;
    }
    Ok(checked)
}

fn located(path: &Utf8Path, (line, col): (usize, usize), message: impl std::fmt::Display) -> String {
    format!("{path}:{line}:{col}: {message}")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Byte offset of the value of a dotted key, if the document sets it. A number picks an
/// array element (`gate.markers.2.regex`).
fn key_span(text: &str, key: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut parts = key.split('.');
    let mut value = doc.get_ref().get(parts.next()?)?;
    for part in parts {
        value = match part.parse::<usize>() {
            Ok(index) => value.get_ref().as_array()?.get(index)?,
            Err(_) => value.get_ref().as_table()?.get(part)?,
        };
    }
    Some(value.span().start)
}

/// Makes a path absolute without resolving symlinks.
pub fn absolute(path: &Utf8Path) -> Result<Utf8PathBuf> {
    let path = if path.as_str().is_empty() { Utf8Path::new(".") } else { path };
    let abs = std::path::absolute(path).with_context(|| format!("cannot make {path} absolute"))?;
    let abs = Utf8PathBuf::from_path_buf(abs).map_err(|p| anyhow::anyhow!("path is not UTF-8: {}", p.display()))?;
    // Drop `.` components so messages show clean paths.
    Ok(abs.components().collect())
}

/// Parses a `-o KEY=VALUE` argument into an override, so `-o` type-checks like the file:
/// VALUE is a TOML value, or else taken as a string.
pub fn parse_override(text: &str) -> Result<Override> {
    let arg = format!("-o {}", crate::proc::quote(text));
    let Some((key, value)) = text.split_once('=') else {
        bail!(failure!("{arg} is not TABLE.KEY=VALUE").help("for example -o gate.timeout_secs=600"));
    };
    let key = key.trim().to_owned();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!(failure!("{arg}: `{key}` is not a key (TABLE.KEY)").help("for example -o gate.timeout_secs=600"));
    }
    let doc = format!("v = {}", value.trim());
    let value = match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.trim().into())),
        Err(_) => toml::Value::String(value.trim().into()),
    };
    Ok(Override { key, value, arg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_override_shows_the_flag_that_works() {
        let err = crate::ui::render_error(&parse_override("gate.timeout_secs").unwrap_err());
        assert!(err.contains("help: for example -o gate.timeout_secs=600"), "{err}");
        assert!(!err.contains("--set"), "{err}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 0), (1, 1));
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
    }

    #[test]
    fn key_span_finds_array_elements() {
        let text =
            "[gate]\nmarkers = [\n  { text = \"a\", within_secs = 1 },\n  { regex = \"(\", within_secs = 1 },\n]\n";
        let at = key_span(text, "gate.markers.1.regex").unwrap();
        assert_eq!(line_col(text, at), (4, 13));
        assert_eq!(line_col(text, key_span(text, "gate.markers.1").unwrap()), (4, 3));
        assert!(key_span(text, "gate.markers.2").is_none());
    }

    #[test]
    fn key_span_finds_nested_keys() {
        let text = "[pipeline]\nstages = [\"port\"]\n[port]\ncolibri = \"x\"\n";
        let at = key_span(text, "port.colibri").unwrap();
        assert_eq!(line_col(text, at), (4, 11));
    }
}
