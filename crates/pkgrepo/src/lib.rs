//! FreeBSD pkg(8) repositories, natively: read and write catalogue archives, parse the
//! catalogue, check package sums, verify a whole repository as a careful client would
//! (in both of pkg's trust modes), and sign catalogues the way `pkg repo` does.
//!
//! Everything here follows what pkg 2.8 writes and checks, and is tested against
//! repositories made by the real `pkg repo` (see `tests/data/README.md`). No process is
//! started, and nothing is printed: problems come back as values.
//!
//! # A repository
//!
//! A repository is a directory as `pkg repo` (or poudriere) leaves it: `meta.conf` (and
//! its copy `meta`), two catalogue archives, `data.pkg` and `packagesite.pkg`, both
//! listing every package with its size and `sum`, optionally `files.pkg`, and the
//! packages under `All/`. A catalogue archive is signed in one of two ways, which decide
//! how clients must be configured ([`TrustMode`]):
//!
//! - **pubkey**: one `signature` entry; clients set `signature_type: "pubkey"` and the
//!   path of the public key.
//! - **fingerprints**: `<inner>.sig` and `<inner>.pub` entries (what pkg's
//!   `signing_command:` produces); clients set `signature_type: "fingerprints"` and a
//!   directory of trusted SHA-256 fingerprints of public keys.
//!
//! Every signer type pkg 2.8 has is read, verified and written ([`keys`],
//! [`signature`]): `rsa` (RSASSA-PKCS1-v1_5 with SHA-256 over the hex SHA-256 of the
//! inner catalogue file), `ecc`/`eddsa` (Ed25519, keys in pkg's own DER format) and
//! `ecdsa` (ECDSA with SHA-256 on the curves pkg accepts); in the pubkey layout ecc and
//! ecdsa sign the raw BLAKE2b-512 of the inner file instead of its hex SHA-256. A key's
//! type is read from the key.
//!
//! # Verifying a repository
//!
//! ```no_run
//! use camino::Utf8Path;
//! use pkgrepo::trust::Trust;
//! use pkgrepo::verify::{self, Options};
//!
//! # fn main() -> pkgrepo::Result<()> {
//! let trust = Trust::pubkey(Utf8Path::new("/usr/local/etc/ssl/repo.pub"))?;
//! let report = verify::verify(
//!     Utf8Path::new("/usr/local/poudriere/data/packages/15amd64-default"),
//!     &Options::new(&trust, "FreeBSD:15:amd64"),
//! )?;
//! for problem in &report.problems {
//!     eprintln!("{problem}"); // `data.pkg: signature checked with ...: ...`
//! }
//! assert!(report.ok(), "{} problems", report.problems.len());
//! println!("{} packages, {} bytes, all match their catalogue", report.packages().len(), report.bytes);
//! # Ok(())
//! # }
//! ```
//!
//! [`verify::verify`] collects every problem rather than stopping at the first, and
//! tells signature problems (which signing fixes) from content problems (which it must
//! not paper over): see [`verify::Report::only_signature_problems`].
//!
//! # Signing a repository
//!
//! ```no_run
//! use camino::Utf8Path;
//! use pkgrepo::key::read_private_key;
//! use pkgrepo::sign::{KeySigner, sign_archive};
//! use pkgrepo::{CATALOGUES, TrustMode, meta::MetaConf};
//!
//! # fn main() -> pkgrepo::Result<()> {
//! let repo = Utf8Path::new("/usr/local/poudriere/data/packages/15amd64-default");
//! let (key, cert) = (Utf8Path::new("/usr/local/etc/ssl/repo.key"), Utf8Path::new("/usr/local/etc/ssl/repo.pub"));
//! // Refused when group or others may read the key; the bytes are wiped after use.
//! let secret = read_private_key(key)?;
//! let public = std::fs::read(cert).expect("the public key");
//! let signer = KeySigner::new(&secret, key, public, cert)?;
//! let meta = MetaConf::load(repo).unwrap_or_default();
//! for kind in CATALOGUES {
//!     let (archive, inner) = meta.catalogue(kind);
//!     let digest = sign_archive(&repo.join(&archive), &inner, TrustMode::Pubkey, &signer)?;
//!     println!("signed {archive} ({inner} sha256 {digest})");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A key kept elsewhere (a hardware token, another host) signs through pkg's
//! `signing_command:` protocol: implement [`sign::Signer`] by running the command, with
//! [`signing_command`] formatting what it reads and parsing what it prints.
//!
//! # Modules
//!
//! - [`archive`]: catalogue archives (a tar compressed with zstd, xz, gzip, bzip2 or
//!   nothing, detected by magic), read and written whole.
//! - [`catalogue`]: the package entries of `data` and `packagesite.yaml`.
//! - [`sum`]: a package's `sum` (`2$` BLAKE2b-512 in pkg's base32, or bare SHA-256).
//! - [`meta`]: `meta.conf` and fingerprint trust files (UCL, as pkg reads them).
//! - [`keys`]: public and private keys of every signer type; signing and verifying.
//! - [`signature`]: signer types, entry headers, what is signed, pkg's DER signatures.
//! - [`trust`]: what a client trusts.
//! - [`verify`]: everything a client checks, and more, over a whole repository.
//! - [`sign`]: signing catalogue archives; [`key`]: loading the private key safely;
//!   [`signing_command`]: the bytes of pkg's signing command protocol.

#![warn(missing_docs)]

pub mod archive;
mod base32;
pub mod catalogue;
mod error;
mod fsx;
mod hashing;
pub mod key;
pub mod keys;
pub mod meta;
pub mod sign;
pub mod signature;
pub mod signing_command;
pub mod sum;
pub mod trust;
mod ucl;
pub mod verify;
pub mod version;
pub mod vuxml;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use error::{BoxError, Error, Result};

/// The two catalogues every repository has, in the order clients try them.
pub const CATALOGUES: [CatalogueKind; 2] = [CatalogueKind::Data, CatalogueKind::Packagesite];

/// Which catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CatalogueKind {
    /// `data.pkg` holding `data` (one JSON object; clients since pkg 1.21 read it first).
    Data,
    /// `packagesite.pkg` holding `packagesite.yaml` (one JSON object per line; the fallback).
    Packagesite,
}

/// How catalogues are signed, which decides how clients must be configured. In
/// configuration files it is spelt `"pubkey"` or `"fingerprints"`, as pkg's
/// `signature_type` is; `Display` writes the same word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustMode {
    /// A key file signs: one `signature` entry; clients use `signature_type: "pubkey"`.
    Pubkey,
    /// A signing command signs: `.sig`/`.pub` entries; clients use `signature_type: "fingerprints"`.
    Fingerprints,
}

impl fmt::Display for TrustMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrustMode::Pubkey => "pubkey",
            TrustMode::Fingerprints => "fingerprints",
        })
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// SHA-256 of `bytes`, lowercase hex: what pkg signs, and what a fingerprint is.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_modes_are_spelt_as_pkg_spells_them() {
        for (mode, word) in [(TrustMode::Pubkey, "pubkey"), (TrustMode::Fingerprints, "fingerprints")] {
            assert_eq!(mode.to_string(), word);
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<TrustMode>(&format!("\"{word}\"")).unwrap(), mode);
        }
        assert!(serde_json::from_str::<TrustMode>("\"Pubkey\"").is_err());
    }

    #[test]
    fn sha256_of_nothing() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
