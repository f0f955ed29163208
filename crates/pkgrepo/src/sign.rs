//! Signing catalogues as pkg 2.8.4 does, for every signer type
//! (`docs/reference/pkg-signers.md` §2-4, §9).
//!
//! Layouts (signature entries always come first in the archive, then the inner file):
//! - pubkey (what `pkg repo DIR [TYPE:]KEY` writes): one `signature` entry; rsa: the
//!   signature and one NUL; ecc and ecdsa: `$PKGSIGN:TYPE$` and pkg's DER signature.
//!   rsa signs the hex SHA-256 of the inner file, ecc and ecdsa its raw BLAKE2b-512.
//! - fingerprints (what `pkg repo DIR signing_command: CMD` writes): `<inner>.sig` and
//!   `<inner>.pub`, both headed `$PKGSIGN:TYPE$` unless rsa; every type signs the hex.
//!
//! rsa and ecc signatures are deterministic; ecdsa's use RFC 6979 nonces here (pkg's
//! are random: both verify).

use std::io::{Read, Write};

use camino::Utf8Path;

use crate::archive::{Entry, entry_header, read_entries};
use crate::error::{Context, Error, Result, bail};
use crate::key::SecretBytes;
use crate::keys::{PrivateKey, PublicKey};
use crate::signature::{Message, SignerType};
use crate::{BoxError, TrustMode};

/// A signature and the public key that checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signer type, as it goes into headers.
    pub signer: SignerType,
    /// The signature as pkg stores it after any header: rsa's raw bytes (no trailing
    /// NUL), pkg's DER for ecc and ecdsa.
    pub signature: Vec<u8>,
    /// The public key's bytes, exactly what fingerprints-mode clients fingerprint (PEM
    /// for rsa, pkg's DER for ecc, DER SubjectPublicKeyInfo or pkg's DER for ecdsa).
    pub cert: Vec<u8>,
}

/// Something that signs a catalogue's [`Message`] for a layout: a key held in memory
/// ([`KeySigner`]), or a signing command the caller runs (see [`crate::signing_command`]:
/// a command is always given the hex, whatever the layout, as pkg gives it).
pub trait Signer {
    /// Signs `message` for `layout`. The error is the implementation's own;
    /// [`sign_archive`] keeps it as the cause of its own.
    fn sign(&self, message: &Message, layout: TrustMode) -> Result<Signed, BoxError>;

    /// Signs arbitrary bytes with the key type's usual scheme
    /// ([`crate::keys::Algorithm::data_scheme`]), as a DSSE envelope is signed (over its
    /// PAE bytes). A signer that can sign only catalogue digests (a signing command,
    /// which pkg's protocol gives a SHA-256 hex) does not implement it.
    fn sign_data(&self, _data: &[u8]) -> Result<Signed, BoxError> {
        Err("this signer signs only catalogue digests (pkg's signing-command protocol gives it a SHA-256 hex), not arbitrary bytes".into())
    }
}

/// Signs with a private key held in memory, of any type pkg has.
pub struct KeySigner {
    key: PrivateKey,
    cert: Vec<u8>,
}

impl KeySigner {
    /// Reads a private key in a format pkg signs with (its type read from the key; see
    /// [`PrivateKey::parse`]) and checks that it belongs to the public key `cert`, which
    /// is what clients are given. The paths are for messages only. Errors never quote
    /// the key.
    pub fn new(private: &SecretBytes, key_path: &Utf8Path, cert: Vec<u8>, cert_path: &Utf8Path) -> Result<KeySigner> {
        let key = PrivateKey::parse(private.expose()).map_err(|e| {
            let message = format!("the signing key {key_path} cannot be used: {}", e.message());
            match e.help() {
                Some(help) => Error::with_help(message, help),
                None => Error::msg(message),
            }
        })?;
        let public = PublicKey::parse(&cert).with_context(|| format!("{cert_path} is not a public key pkg reads"))?;
        if !key.pairs_with(&public) {
            return Err(Error::with_help(
                format!(
                    "the signing key {key_path} ({}) does not belong to the public key {cert_path} ({}, fingerprint {})",
                    key.algorithm(),
                    public.algorithm(),
                    public.fingerprint()
                ),
                format!("give clients the key's own public half: {}", public_half_command(key.algorithm(), key_path)),
            ));
        }
        Ok(KeySigner { key, cert })
    }

    /// What the key signs with.
    pub fn algorithm(&self) -> crate::keys::Algorithm {
        self.key.algorithm()
    }
}

/// The command that prints a key's public half in the form pkg reads.
fn public_half_command(algorithm: crate::keys::Algorithm, key: &Utf8Path) -> String {
    match algorithm {
        crate::keys::Algorithm::Rsa => format!("openssl rsa -in {key} -pubout"),
        crate::keys::Algorithm::Ed25519 => format!("pkg key --public -t ecc {key}"),
        crate::keys::Algorithm::Ecdsa(_) => format!("openssl ec -inform DER -in {key} -pubout -outform DER"),
    }
}

impl Signer for KeySigner {
    fn sign(&self, message: &Message, layout: TrustMode) -> Result<Signed, BoxError> {
        Ok(Signed {
            signer: self.key.algorithm().signer(),
            signature: self.key.sign(message, layout)?,
            cert: self.cert.clone(),
        })
    }

    fn sign_data(&self, data: &[u8]) -> Result<Signed, BoxError> {
        Ok(Signed {
            signer: self.key.algorithm().signer(),
            signature: self.key.sign_data(data)?,
            cert: self.cert.clone(),
        })
    }
}

/// Whether an entry is a signature entry of either layout.
pub fn is_signature_entry(name: &str) -> bool {
    name == "signature" || name.ends_with(".sig") || name.ends_with(".pub")
}

/// Re-signs the catalogue archive at `path` whose inner file is `inner`, in the layout
/// of `mode`: every old signature entry is dropped, the new ones are written first, the
/// inner file and the compression are kept. The signer's answer is verified with its
/// own public key, as a client of `mode` would verify it, before anything is written
/// (pkg publishes what a signing command answers unchecked); the new archive is then
/// written beside the old one and renamed over it. Returns the hex SHA-256 of the
/// inner file.
pub fn sign_archive(path: &Utf8Path, inner: &str, mode: TrustMode, signer: &dyn Signer) -> Result<String> {
    // The catalogue of a whole ports tree is tens of megabytes: the archive is read
    // twice as a stream (once for the message, once to copy the inner file into the new
    // archive), never held.
    let open = || -> Result<std::io::BufReader<std::fs::File>> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {path}"))?;
        Ok(std::io::BufReader::with_capacity(1 << 16, file))
    };
    let not_readable = || format!("{path} is not a readable catalogue archive");
    let (mut count, mut first) = (0usize, None);
    let compression = read_entries(open()?, |h, data| {
        if h.name == inner {
            count += 1;
            if count == 1 {
                first = Some((digest(data)?, h.mtime));
            }
        }
        Ok(())
    })
    .with_context(not_readable)?;
    let (1, Some((message, mtime))) = (count, first) else {
        bail!("{path} holds {count} `{inner}` entries; it cannot be signed");
    };
    let signed = signer.sign(&message, mode).with_context(|| format!("cannot sign {path}"))?;
    check_answer(&message, mode, &signed).with_context(|| format!("cannot sign {path}"))?;
    let header = signed.signer.header();
    let entries = match mode {
        TrustMode::Pubkey => {
            let data = match signed.signer {
                SignerType::Rsa => [signed.signature.as_slice(), &[0]].concat(),
                _ => [header.as_slice(), &signed.signature].concat(),
            };
            vec![Entry { name: "signature".into(), data, mtime }]
        }
        TrustMode::Fingerprints => vec![
            Entry { name: format!("{inner}.sig"), data: [header.as_slice(), &signed.signature].concat(), mtime },
            Entry { name: format!("{inner}.pub"), data: [header.as_slice(), &signed.cert].concat(), mtime },
        ],
    };
    for e in &entries {
        crate::signature::check_entry_size(e.data.len())
            .with_context(|| format!("cannot sign {path}: `{}`", e.name))?;
    }
    // The signature entries first, then the inner file as it is read again, in the
    // archive's own compression.
    crate::fsx::write_atomic_with(path, |file| {
        let mut tar = tar::Builder::new(compression.encoder(std::io::BufWriter::with_capacity(1 << 16, &mut *file))?);
        for e in &entries {
            tar.append(&entry_header(&e.name, e.data.len() as u64, e.mtime)?, &e.data[..])?;
        }
        let mut again = None;
        read_entries(open()?, |h, data| {
            if h.name == inner {
                let mut hashing = MessageReader { inner: data, hasher: Message::hasher() };
                tar.append(&entry_header(inner, h.size, h.mtime)?, &mut hashing)?;
                again = Some(hashing.hasher.finish());
            }
            Ok(())
        })
        .with_context(not_readable)?;
        if again.as_ref() != Some(&message) {
            bail!("{path} changed while it was being signed; sign it again");
        }
        let encoder = tar.into_inner()?;
        encoder.finish()?.flush()?;
        Ok(())
    })?;
    Ok(message.hex().to_owned())
}

/// The message of what is left to read in `data`.
fn digest(data: &mut dyn Read) -> Result<Message> {
    let mut hashing = MessageReader { inner: data, hasher: Message::hasher() };
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(hashing.hasher.finish())
}

/// Digests what passes through it as the message a signature covers.
pub(crate) struct MessageReader<'a> {
    pub(crate) inner: &'a mut dyn Read,
    pub(crate) hasher: crate::signature::MessageHasher,
}

impl Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The signer's answer must verify as a client of `mode` verifies it.
fn check_answer(message: &Message, mode: TrustMode, signed: &Signed) -> Result<()> {
    let key = PublicKey::parse(&signed.cert).context("the public key it gave is not one pkg reads")?;
    if !key.algorithm().signs_as(signed.signer) {
        bail!("it says type {} but its public key is {}", signed.signer, key.algorithm());
    }
    if let Err(e) = key.verify(message, signed.signer, mode, &signed.signature) {
        if mode == TrustMode::Pubkey && signed.signer != SignerType::Rsa {
            bail!(
                "its {} signature does not verify for pubkey clients ({e}): they check {} over the BLAKE2b-512 of the catalogue, but a signing command is given its SHA-256 hex (pkg's protocol); sign pubkey-mode repositories with the key file, or use fingerprints mode with the command",
                signed.signer,
                signed.signer
            );
        }
        bail!("its signature does not verify with the public key it gave (fingerprint {}): {e}", key.fingerprint());
    }
    Ok(())
}
