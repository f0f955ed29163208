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

/// What `sign` records for later stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignOutputs {}

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
