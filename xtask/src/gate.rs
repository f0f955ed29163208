//! gate: not implemented yet (see the issue that adds it).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::Gate;
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName};

settings! {
    /// gate settings.
    pub struct GateConfig {
    }
}

/// What `gate` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateOutputs {
    /// `pass` (a failure is an error, not an output).
    pub verdict: String,
    /// The JSON result, JUnit file and timestamped console, relative to the state directory.
    pub result: camino::Utf8PathBuf,
    pub junit: camino::Utf8PathBuf,
    pub console: camino::Utf8PathBuf,
}

impl Stage for Gate {
    const NAME: StageName = StageName::Gate;
    type Outputs = GateOutputs;
    type Plan = Plan;

    fn fingerprint(&self, _cx: &Cx) -> Result<Fingerprint> {
        Ok(Fingerprint::new())
    }

    fn plan(&self, _cx: &Cx) -> Result<Plan> {
        Err(crate::engine::not_implemented(Self::NAME))
    }

    fn execute(&self, _cx: &mut Cx, _plan: Plan) -> Result<GateOutputs> {
        Err(crate::engine::not_implemented(Self::NAME))
    }
}

impl Gate {
    /// `cargo xtask gate`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}
