//! What a client trusts: a public key of any signer type (pubkey mode), or a
//! fingerprints directory (fingerprints mode), read as pkg 2.8.4 reads them.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};

pub use crate::keys::{PublicKey, SignatureError};

use crate::TrustMode;
use crate::error::{Context, Error, Result};
use crate::meta::parse_fingerprint;

/// A client's trust anchors: what `signature_type` and `pubkey` or `fingerprints` say
/// in its repository configuration.
pub struct Trust {
    pub(crate) anchors: Anchors,
}

/// The anchors of each trust mode.
pub(crate) enum Anchors {
    /// `signature_type: "pubkey"`: the `signature` entry must verify with this key.
    Pubkey { path: Utf8PathBuf, key: PublicKey },
    /// `signature_type: "fingerprints"`: `.sig`/`.pub` pairs whose `.pub` is trusted.
    Fingerprints {
        dir: Utf8PathBuf,
        /// Trusted fingerprint -> the file that lists it.
        trusted: BTreeMap<String, String>,
        /// Revoked fingerprint -> the file that lists it.
        revoked: BTreeMap<String, String>,
    },
}

impl Trust {
    /// Trusts the public key at `path` (pubkey mode), in any format pkg reads for a
    /// `pubkey:` setting (see [`PublicKey::parse`]); its type is read from the key.
    pub fn pubkey(path: &Utf8Path) -> Result<Trust> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read the public key {path}"))?;
        let key = PublicKey::parse(&bytes).with_context(|| format!("{path} is not a public key pkg reads"))?;
        Ok(Trust { anchors: Anchors::Pubkey { path: path.to_owned(), key } })
    }

    /// Trusts the fingerprints directory `dir` (fingerprints mode): the files in
    /// `dir/trusted/` and, when it exists, `dir/revoked/`, each naming the SHA-256 of a
    /// public key as pkg's trust files do. As pkg (`libpkg/pkg_repo.c`,
    /// `pkg_repo_load_fingerprints`), a missing `trusted/` or one that gives no
    /// fingerprint is refused; stricter than pkg, which skips a file it cannot use
    /// without a word, such a file is refused by name.
    pub fn fingerprints(dir: &Utf8Path) -> Result<Trust> {
        let trusted_dir = dir.join("trusted");
        if !trusted_dir.is_dir() {
            return Err(Error::with_help(
                format!("{dir} has no `trusted` directory (pkg: Error opening the trusted directory {trusted_dir})"),
                format!("create {trusted_dir} with one file per trusted key"),
            ));
        }
        let trusted = read_fingerprint_dir(&trusted_dir)
            .with_context(|| format!("{dir} is not a usable fingerprints directory"))?;
        if trusted.is_empty() {
            return Err(Error::with_help(
                format!("{dir}/trusted lists no fingerprint (pkg: No trusted certificates)"),
                "add a file with `function: \"sha256\"` and `fingerprint: \"<sha256 of the public key>\"`",
            ));
        }
        let revoked_dir = dir.join("revoked");
        let revoked = if revoked_dir.exists() { read_fingerprint_dir(&revoked_dir)? } else { BTreeMap::new() };
        Ok(Trust { anchors: Anchors::Fingerprints { dir: dir.to_owned(), trusted, revoked } })
    }

    /// The client's trust mode.
    pub fn mode(&self) -> TrustMode {
        match self.anchors {
            Anchors::Pubkey { .. } => TrustMode::Pubkey,
            Anchors::Fingerprints { .. } => TrustMode::Fingerprints,
        }
    }

    /// The public key, in pubkey mode.
    pub fn key(&self) -> Option<&PublicKey> {
        match &self.anchors {
            Anchors::Pubkey { key, .. } => Some(key),
            Anchors::Fingerprints { .. } => None,
        }
    }

    /// The fingerprints directory, in fingerprints mode.
    pub fn fingerprints_dir(&self) -> Option<&Utf8Path> {
        match &self.anchors {
            Anchors::Pubkey { .. } => None,
            Anchors::Fingerprints { dir, .. } => Some(dir),
        }
    }

    /// Whether a signature by the key whose fingerprint (SHA-256 of its PEM) is
    /// `fingerprint` is one this trust accepts: the public key itself, or a trusted
    /// fingerprint that is not revoked.
    pub fn accepts(&self, fingerprint: &str) -> bool {
        match &self.anchors {
            Anchors::Pubkey { key, .. } => key.fingerprint() == fingerprint,
            Anchors::Fingerprints { trusted, revoked, .. } => {
                trusted.contains_key(fingerprint) && !revoked.contains_key(fingerprint)
            }
        }
    }

    /// For messages: `the public key /path/key.pub` or `the fingerprints in /dir`.
    pub fn describe(&self) -> String {
        match &self.anchors {
            Anchors::Pubkey { path, .. } => format!("the public key {path}"),
            Anchors::Fingerprints { dir, .. } => format!("the fingerprints in {dir}"),
        }
    }
}

fn read_fingerprint_dir(dir: &Utf8Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let entries = dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))?;
    // pkg reads every entry but `.` and `..` as a trust file, hidden ones included.
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {dir}"))?;
        let text = std::fs::read_to_string(entry.path())
            .with_context(|| format!("cannot load fingerprints from {} (pkg skips it)", entry.path()))?;
        let fp = parse_fingerprint(&text).with_context(|| format!("{} is not a fingerprint file", entry.path()))?;
        out.insert(fp, entry.path().to_string());
    }
    Ok(out)
}
