//! What a client trusts, and checking one RSA signature the way pkg does: RSASSA-PKCS1-v1_5
//! with SHA-256 over the 64-character lowercase hex SHA-256 of the inner catalogue file.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;

use crate::error::{Context, Error, Result};
use crate::meta::parse_fingerprint;
use crate::{TrustMode, sha256_hex};

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
    /// Trusts the PEM public key at `path` (pubkey mode).
    pub fn pubkey(path: &Utf8Path) -> Result<Trust> {
        let pem = std::fs::read(path).with_context(|| format!("cannot read the public key {path}"))?;
        let key = PublicKey::from_pem(&pem).with_context(|| format!("{path} is not a PEM RSA public key"))?;
        Ok(Trust { anchors: Anchors::Pubkey { path: path.to_owned(), key } })
    }

    /// Trusts the fingerprints directory `dir` (fingerprints mode): the files in
    /// `dir/trusted/` and, when it exists, `dir/revoked/`, each naming the SHA-256 of a
    /// public key as pkg's trust files do.
    pub fn fingerprints(dir: &Utf8Path) -> Result<Trust> {
        let trusted = read_fingerprint_dir(&dir.join("trusted"))
            .with_context(|| format!("{dir} is not a usable fingerprints directory"))?;
        if trusted.is_empty() {
            return Err(Error::with_help(
                format!("{dir}/trusted lists no fingerprint"),
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
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {dir}"))?;
        if entry.file_name().starts_with('.') || !entry.path().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).with_context(|| format!("cannot read {}", entry.path()))?;
        let fp = parse_fingerprint(&text).with_context(|| format!("{} is not a fingerprint file", entry.path()))?;
        out.insert(fp, entry.path().to_string());
    }
    Ok(out)
}

/// An RSA public key, and the fingerprint of the exact bytes it was read from.
#[derive(Clone)]
pub struct PublicKey {
    key: rsa::PublicKey,
    fingerprint: String,
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// Wrong length for the key: truncated, padded, or from a key of another size.
    Length {
        /// The signature's length in bytes.
        got: usize,
        /// The length the key's signatures have.
        want: usize,
    },
    /// Right length, wrong value: another key, or the file changed after signing.
    Mismatch,
}

impl std::error::Error for SignatureError {}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Length { got, want } => {
                write!(
                    f,
                    "the signature is {got} bytes but the key makes {want}-byte signatures (truncated or not made by this key)"
                )
            }
            SignatureError::Mismatch => f.write_str(
                "the signature does not verify (the catalogue changed after signing, or another key signed it)",
            ),
        }
    }
}

impl PublicKey {
    /// Reads a PEM public key: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, what pkg and
    /// `openssl rsa -pubout` use) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey> {
        let text = std::str::from_utf8(pem).context("it is not text")?;
        let key = match rsa::PublicKey::from_public_key_pem(text.trim()) {
            Ok(k) => k,
            Err(spki) => rsa::PublicKey::from_pkcs1_pem(text.trim())
                .map_err(|_| Error::msg(format!("not an RSA public key in PEM ({spki})")))?,
        };
        Ok(PublicKey { key, fingerprint: sha256_hex(pem) })
    }

    /// The SHA-256 (lowercase hex) of the PEM bytes the key was read from: what a
    /// fingerprints-mode client trusts.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Signature length in bytes.
    pub fn size(&self) -> usize {
        self.key.size()
    }

    pub(crate) fn rsa(&self) -> &rsa::PublicKey {
        &self.key
    }

    /// Verifies `sig` over `hex_digest` (the message pkg signs: the hex SHA-256 of the
    /// catalogue file).
    pub fn verify(&self, hex_digest: &str, sig: &[u8]) -> Result<(), SignatureError> {
        if sig.len() != self.size() {
            return Err(SignatureError::Length { got: sig.len(), want: self.size() });
        }
        let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(self.key.clone());
        let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| SignatureError::Mismatch)?;
        vk.verify(hex_digest.as_bytes(), &sig).map_err(|_| SignatureError::Mismatch)
    }
}
