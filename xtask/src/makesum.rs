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

/// One distfile, as distinfo lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distfile {
    /// Path relative to the distfiles directory (`rust/crates/NAME-VERSION.crate`).
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What `makesum` records for later stages. (Contract: bulk reads it; fields may be
/// added, not changed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MakesumOutputs {
    /// The distinfo written (in the staged port).
    pub distinfo: camino::Utf8PathBuf,
    /// The distfiles directory (poudriere's DISTFILES_CACHE).
    pub distdir: camino::Utf8PathBuf,
    /// Every distfile, in distinfo order.
    pub distfiles: Vec<Distfile>,
}

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
