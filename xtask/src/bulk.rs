//! bulk: not implemented yet (see the issue that adds it).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::Bulk;
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName};

settings! {
    /// bulk settings.
    pub struct BulkConfig {
    }
}

/// A package poudriere built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltPackage {
    /// `origin[@flavor]`, as in `.poudriere.ports.built`.
    pub origin: String,
    /// `name-version`, e.g. `colibri-0.9.0`.
    pub pkgname: String,
    pub version: String,
    /// The package file, relative to `repo` (`All/colibri-0.9.0.pkg`).
    pub file: camino::Utf8PathBuf,
}

/// What `bulk` records for later stages. (Contract: sign reads it; fields may be
/// added, not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkOutputs {
    /// The `-B` build name of this run's build.
    pub build_name: String,
    /// `JAIL-TREE[-SET]`.
    pub mastername: String,
    /// The poudriere set (`-z`), if any.
    pub set: Option<String>,
    /// `POUDRIERE_DATA/logs/bulk/MASTERNAME/BUILDNAME`.
    pub log_dir: camino::Utf8PathBuf,
    /// The repository: `POUDRIERE_DATA/packages/MASTERNAME/.latest` (absolute).
    pub repo: camino::Utf8PathBuf,
    /// What was built for the port's origin.
    pub packages: Vec<BuiltPackage>,
}

impl Stage for Bulk {
    const NAME: StageName = StageName::Bulk;
    type Outputs = BulkOutputs;
    type Plan = Plan;

    fn fingerprint(&self, _cx: &Cx) -> Result<Fingerprint> {
        Ok(Fingerprint::new())
    }

    fn plan(&self, _cx: &Cx) -> Result<Plan> {
        Err(crate::engine::not_implemented(Self::NAME))
    }

    fn execute(&self, _cx: &mut Cx, _plan: Plan) -> Result<BulkOutputs> {
        Err(crate::engine::not_implemented(Self::NAME))
    }
}

impl Bulk {
    /// `cargo xtask bulk`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}
