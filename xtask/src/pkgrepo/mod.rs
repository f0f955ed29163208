//! FreeBSD pkg repositories, natively: catalogue archives, the catalogue JSON, pkg's
//! checksums, signature verification in both client trust modes, and native signing.
//!
//! Facts come from `/work/shared/reference/pkg-repo.md` (read from pkg 2.8.4's sources)
//! and are tested against the real repositories in `xtask/tests/data/pkg-repo`.
//!
//! - [`archive`]: a catalogue archive (`data.pkg`, `packagesite.pkg`): a tar compressed
//!   with zstd, xz, gzip, bzip2 or nothing, detected by magic; read and written whole.
//! - [`catalogue`]: the package entries of `data` and `packagesite.yaml`.
//! - [`sum`]: a package's `sum` (`2$` BLAKE2b-512 in pkg's [`base32`], or bare SHA-256
//!   hex), and hashing files for it.
//! - [`meta`]: `meta.conf` and the fingerprint trust files (the flat UCL pkg writes).
//! - [`trust`]: what a client trusts: a PEM public key, or a fingerprints directory.
//! - [`verify`]: everything a client checks, and more, over a whole repository.
//! - [`signer`]: signing catalogues (RSA PKCS#1 v1.5, SHA-256 over the hex digest).

pub mod archive;
pub mod base32;
pub mod catalogue;
pub mod meta;
pub mod signer;
pub mod sum;
pub mod trust;
pub mod verify;

/// The catalogue archives pkg reads, in the order clients try them, with the meta.conf
/// keys naming the archive and the file inside it.
pub const CATALOGUES: [CatalogueKind; 2] = [CatalogueKind::Data, CatalogueKind::Packagesite];

/// Which catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CatalogueKind {
    /// `data.pkg` holding `data` (one JSON object; clients since pkg 1.21 read it first).
    Data,
    /// `packagesite.pkg` holding `packagesite.yaml` (one JSON object per line; the fallback).
    Packagesite,
}
