//! `[[targets]]`: what the pipeline builds for, one entry per ABI.
//!
//! A target names its poudriere jail (name, version, arch), the ABI and OSVERSION its
//! packages carry, the CI runner label that builds it, whether the ISO and the gate run
//! for it, and the `[gate]` settings that differ for it (an aarch64 target boots under
//! QEMU while amd64 uses bhyve). A file without `[[targets]]` has one target, made of
//! `[repository] abi/osversion` and `[poudriere] jail/version/arch`: today's pipeline.
//!
//! makesum and port are shared by every target; bulk, sign, publish, iso and gate run
//! once per target (`StageName::per_target`). A stage runs for a target with
//! [`Loaded::for_target`]: the configuration as that target sees it, so the stage code
//! reads `repository.abi`, `poudriere.jail` or `gate.backend` as it always has.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::config::Loaded;
use crate::settings;

settings! {
    /// One target of the release: a jail, an ABI, a runner. Declare one `[[targets]]`
    /// table per target; without any, the pipeline has one target made of
    /// `[repository] abi/osversion` and `[poudriere] jail/version/arch`, named after
    /// `poudriere.arch`. port and makesum are shared; bulk, sign, publish, iso and gate
    /// run once per target (`cargo xtask STAGE --target NAME` runs one). `name`, `jail`,
    /// `arch` and `abi` are required; two targets may not share a name or an ABI.
    pub struct TargetConfig {
        /// The target's name: `--target NAME`, its directory in a run
        /// (`runs/ID/targets/NAME/`). Letters, digits, `.`, `_`, `-`; not starting with `.`
        /// or `-`.
        pub name: String = String::new(),
        /// Its poudriere jail (`poudriere bulk -j`), as `poudriere.jail` for one target.
        pub jail: String = String::new(),
        /// The jail's FreeBSD version, as `poudriere.version`.
        pub version: String = "15.0-RELEASE".into(),
        /// The jail's arch (`amd64`, `arm64.aarch64`), as `poudriere.arch`.
        pub arch: String = String::new(),
        /// The ABI its packages carry (`FreeBSD:15:aarch64`), as `repository.abi`: its
        /// directory on the site.
        pub abi: String = String::new(),
        /// Its OSVERSION, as `repository.osversion`.
        pub osversion: u32 = 1500068,
        /// The Forgejo runner label that builds it (`runs-on` of its build job in the
        /// workflow `cargo xtask ci-workflow` writes): letters, digits, `.`, `_`, `-`;
        /// never `signing`, the signing host's.
        pub runner: String = "freebsd".into(),
        /// Whether iso and gate run for it.
        pub image: bool = true,
        /// `[gate]` settings that differ for this target, as a table of the same keys
        /// (`gate = { backend = "qemu", qemu = { machine = "virt" } }`): each replaces
        /// the `[gate]` value of the same key (a nested table, e.g. `qemu`, replaces key
        /// by key).
        pub gate: toml::Table = toml::Table::new(),
        /// `[iso]` settings that differ for this target, merged the same way
        /// (`iso = { root = "target/iso/aarch64/root", image = "target/iso/clawdie-aarch64.iso" }`).
        /// Two targets with `image = true` must not share `iso.root` or `iso.image`.
        pub iso: toml::Table = toml::Table::new(),
    }
}

/// A target as the engine uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// Its index in `[[targets]]`; none for the one target a file without
    /// `[[targets]]` has.
    pub index: Option<usize>,
    pub runner: String,
    pub image: bool,
    pub abi: String,
}

impl Target {
    /// How a run keys this target's records and directories: none for the implicit
    /// target (its records and files are where a one-target run has always kept them:
    /// `bulk`, `runs/ID/bulk/`, `logs/bulk.log`), else its name.
    pub fn key(&self) -> Option<&str> {
        self.index.map(|_| self.name.as_str())
    }

    /// Whether `stage` runs for this target: iso and gate only where `image` is true.
    pub fn runs(&self, stage: crate::stage::StageName) -> bool {
        use crate::stage::StageName;
        self.image || !matches!(stage, StageName::Iso | StageName::Gate)
    }
}

/// The pipeline's targets, in file order.
pub fn targets(loaded: &Loaded) -> Vec<Target> {
    let cfg = &loaded.config;
    if cfg.targets.is_empty() {
        return vec![Target {
            name: cfg.poudriere.arch.clone(),
            index: None,
            runner: TargetConfig::default().runner,
            image: true,
            abi: cfg.repository.abi.clone(),
        }];
    }
    cfg.targets
        .iter()
        .enumerate()
        .map(|(i, t)| Target {
            name: t.name.clone(),
            index: Some(i),
            runner: t.runner.clone(),
            image: t.image,
            abi: t.abi.clone(),
        })
        .collect()
}

/// Whether `name` may name a directory and a command-line value as it is.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `[gate]` with a target's `gate` table laid over it, key by key (tables merged).
pub fn merged_gate(base: &crate::gate::GateConfig, over: &toml::Table) -> Result<crate::gate::GateConfig, String> {
    merged(base, over)
}

/// `[iso]` as a target sees it: the file's, with the target's `iso` table over it.
pub fn merged_iso(base: &crate::iso::IsoConfig, over: &toml::Table) -> Result<crate::iso::IsoConfig, String> {
    merged(base, over)
}

fn merged<T: serde::Serialize + serde::de::DeserializeOwned>(base: &T, over: &toml::Table) -> Result<T, String> {
    let mut table = toml::Table::try_from(base).map_err(|e| e.to_string())?;
    merge(&mut table, over);
    table.try_into().map_err(|e: toml::de::Error| e.message().to_owned())
}

fn merge(into: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The keys of a target's table that stand for a key of the whole configuration.
pub const PROJECTED: [(&str, &str); 5] = [
    ("repository.abi", "abi"),
    ("repository.osversion", "osversion"),
    ("poudriere.jail", "jail"),
    ("poudriere.version", "version"),
    ("poudriere.arch", "arch"),
];

/// Checks `[[targets]]` when pipeline.toml is loaded: required keys, names that are
/// safe path components, no two targets with one name or one ABI, and each target's
/// configuration as its stages will see it (validated like the file itself).
pub fn validate(loaded: &Loaded) -> Result<()> {
    let mut names = BTreeMap::new();
    let mut abis = BTreeMap::new();
    let mut images = BTreeMap::new();
    for (i, t) in loaded.config.targets.iter().enumerate() {
        let key = |k: &str| format!("targets.{i}.{k}");
        for (k, v) in [("name", &t.name), ("jail", &t.jail), ("arch", &t.arch), ("abi", &t.abi)] {
            if v.is_empty() {
                return Err(loaded
                    .failure_at(&key(k), format!("target {} has no `{k}`", i + 1))
                    .help(format!("every [[targets]] table sets name, jail, arch and abi; `{k}` is missing"))
                    .into());
            }
        }
        if !safe_name(&t.name) {
            return Err(loaded
                .failure_at(&key("name"), format!("target name `{}` cannot name a directory", t.name))
                .help("use letters, digits, `.`, `_` and `-` (not first), at most 64")
                .into());
        }
        if let Some(first) = names.insert(t.name.clone(), i) {
            return Err(loaded.error_at(
                &key("name"),
                format!("target `{}` is declared twice (targets {} and {})", t.name, first + 1, i + 1),
            ));
        }
        if let Some(first) = abis.insert(t.abi.clone(), i) {
            return Err(loaded
                .failure_at(
                    &key("abi"),
                    format!(
                        "targets `{}` and `{}` both build ABI `{}`: they would publish into one directory",
                        loaded.config.targets[first].name, t.name, t.abi
                    ),
                )
                .help("give each target its own ABI (FreeBSD:15:amd64, FreeBSD:15:aarch64)")
                .into());
        }
        // The label goes into the workflow as `runs-on`: kept to the characters a job
        // id and a shell word take as they are, so no label can carry YAML or a
        // `${{ }}` expression into it.
        if !safe_name(&t.runner) {
            return Err(loaded
                .failure_at(&key("runner"), format!("runner label `{}` is not a label", t.runner.escape_debug()))
                .help("a runner label is 1 to 64 letters, digits, `.`, `_`, `-`, not starting with `.` or `-`")
                .into());
        }
        if t.runner == crate::workflow::SIGNING_RUNNER {
            return Err(loaded
                .failure_at(
                    &key("runner"),
                    format!("target `{}` is built on the `{}` runner, the machine holding the key", t.name, t.runner),
                )
                .help("build on a runner of its own (runner = \"freebsd-amd64\"): a build runs colibri's build scripts, which must never run where the key is")
                .into());
        }
        if let Err(e) = merged_gate(&loaded.config.gate, &t.gate) {
            return Err(loaded.error_at(&key("gate"), format!("target `{}`'s gate settings: {e}", t.name)));
        }
        match merged_iso(&loaded.config.iso, &t.iso) {
            Err(e) => return Err(loaded.error_at(&key("iso"), format!("target `{}`'s iso settings: {e}", t.name))),
            Ok(iso) if t.image => {
                for (what, path) in [("root", iso.root), ("image", iso.image)] {
                    let path = loaded.resolve(&path);
                    if let Some(first) = images.insert(path.clone(), i) {
                        return Err(loaded
                            .failure_at(
                                &key("iso"),
                                format!(
                                    "targets `{}` and `{}` would both build their ISO in {path} (iso.{what})",
                                    loaded.config.targets[first].name, t.name
                                ),
                            )
                            .help(format!(
                                "give each image target its own, e.g. iso = {{ {what} = \"target/iso/{}/...\" }} in its [[targets]] table",
                                t.name
                            ))
                            .into());
                    }
                }
            }
            Ok(_) => {}
        }
    }
    if !loaded.config.targets.is_empty() {
        for t in targets(loaded) {
            loaded.for_target(&t)?.validate_target()?;
        }
    }
    Ok(())
}
