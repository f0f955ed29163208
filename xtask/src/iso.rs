//! iso: not implemented yet (see the issue that adds it).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::Iso;
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName};

settings! {
    /// iso settings.
    pub struct IsoConfig {
    }
}

/// What `iso` records for later stages. (Contract: gate reads it; fields may be added,
/// not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsoOutputs {
    /// The ISO staging root the packages were installed into (absolute).
    pub root: camino::Utf8PathBuf,
    /// The profile it was checked against (`production` or `validation`).
    pub profile: String,
    /// The image the build command produced (absolute), if one is configured.
    pub image: Option<camino::Utf8PathBuf>,
}

impl Stage for Iso {
    const NAME: StageName = StageName::Iso;
    type Outputs = IsoOutputs;
    type Plan = Plan;

    fn fingerprint(&self, _cx: &Cx) -> Result<Fingerprint> {
        Ok(Fingerprint::new())
    }

    fn plan(&self, _cx: &Cx) -> Result<Plan> {
        Err(crate::engine::not_implemented(Self::NAME))
    }

    fn execute(&self, _cx: &mut Cx, _plan: Plan) -> Result<IsoOutputs> {
        Err(crate::engine::not_implemented(Self::NAME))
    }
}

impl Iso {
    /// `cargo xtask iso`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}
