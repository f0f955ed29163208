//! publish: not implemented yet (see the issue that adds it).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::Publish;
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName};

settings! {
    /// publish settings.
    pub struct PublishConfig {
    }
}

/// What `publish` records for later stages. (Contract: iso reads it; fields may be
/// added, not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishOutputs {
    /// The version directory that `latest` now points at.
    pub version: String,
    /// The URL clients use for the repository (what the repo conf's `url` says).
    pub url: String,
    /// The published copy on this host, when the target is local (absolute).
    pub local: Option<camino::Utf8PathBuf>,
    /// The client repo conf written (relative to the state directory).
    pub repo_conf: camino::Utf8PathBuf,
}

impl Stage for Publish {
    const NAME: StageName = StageName::Publish;
    type Outputs = PublishOutputs;
    type Plan = Plan;

    fn fingerprint(&self, _cx: &Cx) -> Result<Fingerprint> {
        Ok(Fingerprint::new())
    }

    fn plan(&self, _cx: &Cx) -> Result<Plan> {
        Err(crate::engine::not_implemented(Self::NAME))
    }

    fn execute(&self, _cx: &mut Cx, _plan: Plan) -> Result<PublishOutputs> {
        Err(crate::engine::not_implemented(Self::NAME))
    }
}

impl Publish {
    /// `cargo xtask publish`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}
