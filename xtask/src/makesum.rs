//! makesum: not implemented yet (see the issue that adds it).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::Makesum;
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName};

settings! {
    /// makesum settings.
    pub struct MakesumConfig {
    }
}

/// What `makesum` records for later stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MakesumOutputs {}

impl Stage for Makesum {
    const NAME: StageName = StageName::Makesum;
    type Outputs = MakesumOutputs;
    type Plan = Plan;

    fn fingerprint(&self, _cx: &Cx) -> Result<Fingerprint> {
        Ok(Fingerprint::new())
    }

    fn plan(&self, _cx: &Cx) -> Result<Plan> {
        Err(crate::engine::not_implemented(Self::NAME))
    }

    fn execute(&self, _cx: &mut Cx, _plan: Plan) -> Result<MakesumOutputs> {
        Err(crate::engine::not_implemented(Self::NAME))
    }
}

impl Makesum {
    /// `cargo xtask makesum`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}
