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
        /// OSVERSION of the target release, for `pkg -o OSVERSION=`.
        pub osversion: u32 = 1500000,
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
    /// service(8).
    service => "service",
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
    /// qemu-system-x86_64, for the qemu gate backend.
    qemu => "qemu-system-x86_64",
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
    pub bulk: crate::bulk::BulkConfig,
    pub sign: crate::sign::SignConfig,
    pub publish: crate::publish::PublishConfig,
    pub iso: crate::iso::IsoConfig,
    pub gate: crate::gate::GateConfig,
}

impl Config {
    /// A stage's own table, as the engine puts it into the stage's fingerprint.
    pub fn stage_table(&self, stage: StageName) -> serde_json::Value {
        let value = match stage {
            StageName::Setup => serde_json::to_value(&self.setup),
            StageName::Port => serde_json::to_value(&self.port),
            StageName::Makesum => serde_json::to_value(&self.makesum),
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
        table::<crate::bulk::BulkConfig>("bulk"),
        table::<crate::sign::SignConfig>("sign"),
        table::<crate::publish::PublishConfig>("publish"),
        table::<crate::iso::IsoConfig>("iso"),
        table::<crate::gate::GateConfig>("gate"),
        table::<crate::gate::BhyveConfig>("gate.bhyve"),
        table::<crate::gate::QemuConfig>("gate.qemu"),
        table::<crate::gate::CommandConfig>("gate.command"),
    ]
}

/// A loaded pipeline.toml and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file, as given.
    pub path: Utf8PathBuf,
    /// Directory relative paths in the file are resolved against.
    pub base: Utf8PathBuf,
    /// The file's text, kept so later checks can point at a line.
    text: String,
}

impl Loaded {
    /// Reads and checks pipeline.toml. Errors name `FILE:LINE:COL`, the offending word
    /// and, where serde knows them, the valid choices.
    pub fn load(path: &Utf8Path, overrides: &[(String, toml::Value)]) -> Result<Loaded> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the pipeline file {path}"))
            .help("pass another with --config PATH")?;
        let mut config: Config = toml::from_str(&text).map_err(|err| {
            let at = err.span().map(|s| line_col(&text, s.start));
            anyhow::anyhow!("{}", located(path, at, err.message()))
        })?;
        if !overrides.is_empty() {
            config = apply_overrides(&config, overrides)?;
        }
        let base = absolute(path.parent().unwrap_or(Utf8Path::new(".")))?;
        let loaded = Loaded { config, path: path.to_owned(), base, text };
        loaded.validate()?;
        Ok(loaded)
    }

    /// Builds a Loaded from a config in memory (tests, and the demo's generated file).
    pub fn from_parts(config: Config, path: Utf8PathBuf, base: Utf8PathBuf) -> Loaded {
        let text = toml::to_string(&config).unwrap_or_default();
        Loaded { config, path, base, text }
    }

    /// Resolves a path from the file against its directory.
    pub fn resolve(&self, path: &Utf8Path) -> Utf8PathBuf {
        if path.is_absolute() { path.to_owned() } else { self.base.join(path) }
    }

    /// An error about the value at `key` (a dotted path such as `poudriere.jail`),
    /// located at its line and column when the file sets it.
    pub fn error_at(&self, key: &str, message: impl std::fmt::Display) -> anyhow::Error {
        self.failure_at(key, message).into()
    }

    /// [`Loaded::error_at`] as a [`Failure`], to add help lines to.
    pub fn failure_at(&self, key: &str, message: impl std::fmt::Display) -> Failure {
        let at = key_span(&self.text, key).map(|start| line_col(&self.text, start));
        Failure::new(located(&self.path, at, message))
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
                    .help("run `cargo xtask setup` by itself")
                    .into());
            }
            if let Some(first) = seen.insert(*stage, i) {
                return Err(self.error_at(
                    "pipeline.stages",
                    format!("stage `{stage}` is listed twice (positions {} and {})", first + 1, i + 1),
                ));
            }
        }
        crate::poudriere::validate(self)?;
        crate::gate::validate(self)?;
        Ok(())
    }
}

/// Applies `KEY=VALUE` overrides from the command line, type-checked like the file.
fn apply_overrides(config: &Config, overrides: &[(String, toml::Value)]) -> Result<Config> {
    let mut table = toml::Table::try_from(config).context("cannot apply the overrides")?;
    for (key, value) in overrides {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut cur = &mut table;
        for part in &parts {
            cur = cur
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("-o {key}: `{part}` is not a table"))?;
        }
        cur.insert(last.to_owned(), value.clone());
        let _: Config = table
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("-o {key}={value}: {}", e.message()))?;
    }
    table.try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("the overrides: {}", e.message()))
}

fn located(path: &Utf8Path, at: Option<(usize, usize)>, message: impl std::fmt::Display) -> String {
    match at {
        Some((line, col)) => format!("{path}:{line}:{col}: {message}"),
        None => format!("{path}: {message}"),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
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

/// Parses a `key = value` assignment given on the command line into a toml value,
/// so `-o` overrides type-check like the file does.
pub fn parse_override(text: &str) -> Result<(String, toml::Value)> {
    let Some((key, value)) = text.split_once('=') else {
        bail!(failure!("-o `{text}` is not TABLE.KEY=VALUE").help("for example -o gate.timeout_secs=600"));
    };
    let key = key.trim().to_owned();
    let doc = format!("v = {}", value.trim());
    let value = match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.trim().into())),
        Err(_) => toml::Value::String(value.trim().into()),
    };
    Ok((key, value))
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
