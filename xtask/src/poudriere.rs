//! poudriere: the settings setup and bulk share (jail, ports tree, overlay, poudriere.conf).

use anyhow::Result;
use camino::Utf8PathBuf;

use crate::config::Loaded;
use crate::settings;

settings! {
    /// poudriere: the build jail, ports tree and overlay, shared by setup and bulk.
    pub struct PoudriereConfig {
        /// Build jail name (may not contain `.`).
        pub jail: String = "clawdie-amd64".into(),
        /// FreeBSD release the jail runs.
        pub version: String = "15.0-RELEASE".into(),
        /// Jail architecture.
        pub arch: String = "amd64".into(),
        /// Ports tree name (may not contain `-`).
        pub tree: String = "clawdie".into(),
        /// poudriere's DISTFILES_CACHE: where makesum puts distfiles and bulk finds them.
        pub distfiles: Utf8PathBuf = "/usr/local/poudriere/distfiles".into(),
    }
}

/// Checks the names poudriere would refuse.
pub fn validate(loaded: &Loaded) -> Result<()> {
    let p = &loaded.config.poudriere;
    if p.jail.contains('.') {
        return Err(
            loaded.error_at("poudriere.jail", format!("jail name `{}` contains `.`, which poudriere refuses", p.jail))
        );
    }
    if p.tree.contains('-') {
        return Err(loaded.error_at(
            "poudriere.tree",
            format!("ports tree name `{}` contains `-`, which poudriere refuses", p.tree),
        ));
    }
    Ok(())
}
