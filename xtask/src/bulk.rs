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

/// What `bulk` records for later stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkOutputs {}

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
