//! sign: not implemented yet (see the issue that adds it).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::Sign;
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName};

settings! {
    /// sign settings.
    pub struct SignConfig {
    }
}

/// A package of a verified repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub origin: String,
    /// Path relative to the repository (`All/colibri-0.9.0.pkg`).
    pub path: camino::Utf8PathBuf,
    pub size: u64,
    /// The catalogue's `sum` (`2$...` BLAKE2b in pkg's base32, or bare SHA-256 hex).
    pub sum: String,
    pub sha256: String,
}

/// What `sign` records for later stages. (Contract: publish and iso read it; fields
/// may be added, not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignOutputs {
    /// The verified, signed repository directory (absolute).
    pub repo: camino::Utf8PathBuf,
    /// The release manifest (JSON), relative to the state directory.
    pub manifest: camino::Utf8PathBuf,
    /// How clients verify it.
    pub trust: crate::config::TrustMode,
    /// SHA-256 (hex) of the public key the catalogue is signed with.
    pub key_fingerprint: String,
    pub packages: Vec<PackageRecord>,
}

impl Stage for Sign {
    const NAME: StageName = StageName::Sign;
    type Outputs = SignOutputs;
    type Plan = Plan;

    fn fingerprint(&self, _cx: &Cx) -> Result<Fingerprint> {
        Ok(Fingerprint::new())
    }

    fn plan(&self, _cx: &Cx) -> Result<Plan> {
        Err(crate::engine::not_implemented(Self::NAME))
    }

    fn execute(&self, _cx: &mut Cx, _plan: Plan) -> Result<SignOutputs> {
        Err(crate::engine::not_implemented(Self::NAME))
    }
}

impl Sign {
    /// `cargo xtask sign`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}
