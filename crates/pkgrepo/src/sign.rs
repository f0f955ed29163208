//! Signing catalogues. The signed message is the 64-character hex SHA-256 of the inner
//! file; the signature is RSASSA-PKCS1-v1_5 with SHA-256 (deterministic: the same
//! catalogue and key always give the same bytes, as `openssl dgst -sha256 -sign` does).
//!
//! Layouts (signature entries always come first in the archive, then the inner file):
//! - pubkey: one `signature` entry, the signature followed by one NUL (as `pkg repo
//!   DIR key.pem` writes it);
//! - fingerprints: `<inner>.sig` (the raw signature) and `<inner>.pub` (the PEM public
//!   key, exactly the bytes clients fingerprint), as `signing_command:` gives them.

use camino::Utf8Path;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer as _};

use crate::archive::{Archive, Entry};
use crate::error::{Context, Error, Result, bail};
use crate::key::SecretBytes;
use crate::trust::PublicKey;
use crate::{BoxError, TrustMode, sha256_hex};

/// A signature and the public key (PEM bytes) that checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The raw signature (no trailing NUL).
    pub signature: Vec<u8>,
    /// The PEM public key, exactly the bytes fingerprints-mode clients fingerprint.
    pub cert: Vec<u8>,
}

/// Something that signs a hex digest: a key held in memory ([`KeySigner`]), or a
/// signing command the caller runs (see [`crate::signing_command`]).
pub trait Signer {
    /// Signs `hex_digest`, the 64-character hex SHA-256 of a catalogue file. The error is
    /// the implementation's own; [`sign_archive`] keeps it as the cause of its own.
    fn sign_digest(&self, hex_digest: &str) -> Result<Signed, BoxError>;
}

/// Signs with a private key held in memory.
pub struct KeySigner {
    key: rsa::pkcs1v15::SigningKey<Sha256>,
    cert: Vec<u8>,
}

impl KeySigner {
    /// Reads a PEM private key (PKCS#8 or PKCS#1; see [`crate::key::read_private_key`])
    /// and checks that it belongs to the public key `cert` (PEM), which is what clients
    /// are given. The paths are for messages only. Errors never quote the key.
    pub fn new(private: &SecretBytes, key_path: &Utf8Path, cert: Vec<u8>, cert_path: &Utf8Path) -> Result<KeySigner> {
        let text = std::str::from_utf8(private.expose())
            .map_err(|_| Error::msg(format!("the signing key {key_path} is not a PEM file")))?;
        if text.contains("ENCRYPTED") {
            return Err(Error::with_help(
                format!("the signing key {key_path} is encrypted, which native signing cannot use"),
                "sign through a signing command, or with an unencrypted key kept at mode 0600",
            ));
        }
        let key = match rsa::PrivateKey::from_pkcs8_pem(text.trim()) {
            Ok(k) => k,
            Err(_) => rsa::PrivateKey::from_pkcs1_pem(text.trim()).map_err(|_| {
                Error::msg(format!("the signing key {key_path} is not an RSA private key in PEM (PKCS#8 or PKCS#1)"))
            })?,
        };
        let public = PublicKey::from_pem(&cert).with_context(|| format!("{cert_path} is not a PEM RSA public key"))?;
        if key.to_public_key() != *public.rsa() {
            return Err(Error::with_help(
                format!(
                    "the signing key {key_path} does not belong to the public key {cert_path} (fingerprint {})",
                    public.fingerprint()
                ),
                format!("use the key's public half as the public key: openssl rsa -in {key_path} -pubout"),
            ));
        }
        Ok(KeySigner { key: rsa::pkcs1v15::SigningKey::<Sha256>::new(key), cert })
    }
}

impl Signer for KeySigner {
    fn sign_digest(&self, hex_digest: &str) -> Result<Signed, BoxError> {
        let sig =
            self.key.try_sign(hex_digest.as_bytes()).map_err(|e| Error::msg(format!("RSA signing failed: {e}")))?;
        Ok(Signed { signature: sig.to_vec(), cert: self.cert.clone() })
    }
}

/// Re-signs the catalogue archive at `path` whose inner file is `inner`, in the layout
/// of `mode`: every old signature entry is dropped, the new ones are written first, the
/// inner file and the compression are kept. The new archive is written beside the old
/// one and renamed over it. Returns the digest signed.
pub fn sign_archive(path: &Utf8Path, inner: &str, mode: TrustMode, signer: &dyn Signer) -> Result<String> {
    let archive = Archive::read(path)?;
    let found: Vec<&Entry> = archive.find(inner).collect();
    let [content] = found.as_slice() else {
        bail!("{path} holds {} `{inner}` entries; it cannot be signed", found.len());
    };
    let digest = sha256_hex(&content.data);
    let signed = signer.sign_digest(&digest).with_context(|| format!("cannot sign {path}"))?;
    let mtime = content.mtime;
    let mut entries = match mode {
        TrustMode::Pubkey => {
            let mut sig = signed.signature;
            sig.push(0);
            vec![Entry { name: "signature".into(), data: sig, mtime }]
        }
        TrustMode::Fingerprints => vec![
            Entry { name: format!("{inner}.sig"), data: signed.signature, mtime },
            Entry { name: format!("{inner}.pub"), data: signed.cert, mtime },
        ],
    };
    entries.push((*content).clone());
    Archive { compression: archive.compression, entries }.write(path)?;
    Ok(digest)
}
