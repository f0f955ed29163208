//! `cargo xtask sign --verify-only`: verification of any repository, outside the engine.

use anyhow::{Context, Result};

use super::{check_steps, plural, verify_with_progress};
use crate::bulk::BulkOutputs;
use crate::cli::Sign;
use crate::failure::ResultExt;
use crate::stage::StageName;
use pkgrepo::verify;

impl Sign {
    /// `cargo xtask sign --verify-only`: checks a repository and prints the verdict;
    /// no run state, nothing written.
    pub(super) fn verify_only(&self, engine: &crate::engine::Engine) -> Result<()> {
        let loaded = engine.loaded;
        let ui = engine.ui;
        let repo = match &self.repo {
            Some(r) => crate::config::absolute(r)?,
            None => {
                let name_one = "name one: cargo xtask sign --verify-only --repo DIR";
                let run = engine
                    .state
                    .current()?
                    .context("there is no run whose repository could be verified")
                    .help(name_one)?;
                let bulk = run
                    .view()
                    .outputs(StageName::Bulk)
                    .context("the current run has no repository from bulk")
                    .help(name_one)?;
                bulk.parse::<BulkOutputs>()?.repo
            }
        };
        let keys = self.keys(loaded)?;
        let abi = self.trust.abi(loaded);
        if self.dry_run {
            ui.println(&ui.bold("sign:"));
            for step in check_steps(&repo, &keys.trust, &abi) {
                ui.println(&format!("  {step}"));
            }
            return Ok(());
        }
        if !repo.is_dir() {
            ui.println(&format!("{repo}: is not a directory"));
            ui.eprintln(&format!("{} {repo} failed verification: it does not exist", ui.red("error:")));
            return Err(crate::failure::Failure::reported(crate::failure::Class::Product).into());
        }
        // The manifest's SHA-256s are not needed here: only the catalogue's sums.
        let opts = verify::Options { sha256: false, ..self.options(loaded, &keys.trust, &abi) };
        let report = verify_with_progress(&repo, &opts, ui)?;
        if report.ok() {
            ui.println(&format!(
                "ok: {repo}: {} ({}) match their catalogue; data.pkg and packagesite.pkg verify with {}",
                plural(report.packages().len(), "package"),
                crate::ui::bytes(report.bytes),
                keys.trust.describe()
            ));
            return Ok(());
        }
        for p in &report.problems {
            ui.println(&p.to_string());
        }
        ui.eprintln(&format!(
            "{} {repo} failed verification: {}",
            ui.red("error:"),
            plural(report.problems.len(), "problem")
        ));
        Err(crate::failure::Failure::reported(crate::failure::Class::Product).into())
    }
}
