//! setup: not implemented yet (see the issue that adds it).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::Setup;
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName};

settings! {
    /// setup settings.
    pub struct SetupConfig {
    }
}

/// What `setup` records for later stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupOutputs {}

impl Stage for Setup {
    const NAME: StageName = StageName::Setup;
    type Outputs = SetupOutputs;
    type Plan = Plan;

    fn fingerprint(&self, _cx: &Cx) -> Result<Fingerprint> {
        Ok(Fingerprint::new())
    }

    fn plan(&self, _cx: &Cx) -> Result<Plan> {
        Err(crate::engine::not_implemented(Self::NAME))
    }

    fn execute(&self, _cx: &mut Cx, _plan: Plan) -> Result<SetupOutputs> {
        Err(crate::engine::not_implemented(Self::NAME))
    }
}

impl Setup {
    /// `cargo xtask setup`: provisions the host; not part of any run.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_detached(&self, self.dry_run).map(|_| ())
    }
}
