//! Signing catalogues. The signed message is the 64-character hex SHA-256 of the inner
//! file; the signature is RSASSA-PKCS1-v1_5 with SHA-256 (deterministic: the same
//! catalogue and key always give the same bytes, as `openssl dgst -sha256 -sign` does).
//!
//! Layouts (signature entries always come first in the archive, then the inner file):
//! - pubkey: one `signature` entry, the signature followed by one NUL (as `pkg repo
//!   DIR key.pem` writes it);
//! - fingerprints: `<inner>.sig` (the raw signature) and `<inner>.pub` (the PEM public
//!   key, exactly the bytes clients fingerprint), as `signing_command:` gives them.

use anyhow::{Context, Result, bail};
use camino::Utf8Path;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};

use super::archive::{Archive, Entry};
use super::trust::PublicKey;
use crate::config::TrustMode;
use crate::fingerprint::sha256_bytes;
use crate::secret::SecretBytes;

/// A signature and the public key (PEM bytes) that checks it.
pub struct Signed {
    pub signature: Vec<u8>,
    pub cert: Vec<u8>,
}

/// Something that signs a hex digest: the key file natively, or a signing command.
pub trait DigestSigner {
    fn sign_digest(&self, hex_digest: &str) -> Result<Signed>;
}

/// Signs with a private key held in memory.
pub struct KeySigner {
    key: rsa::pkcs1v15::SigningKey<Sha256>,
    cert: Vec<u8>,
}

impl KeySigner {
    /// Reads a PEM private key (PKCS#8 or PKCS#1) and checks that it belongs to the
    /// public key `cert` (PEM), which is what clients are given. Errors never quote
    /// the key.
    pub fn new(private: &SecretBytes, key_path: &Utf8Path, cert: Vec<u8>, cert_path: &Utf8Path) -> Result<KeySigner> {
        let text = std::str::from_utf8(private.expose())
            .map_err(|_| anyhow::anyhow!("the signing key {key_path} is not a PEM file"))?;
        if text.contains("ENCRYPTED") {
            bail!(
                "the signing key {key_path} is encrypted, which native signing cannot use\nhelp: sign through a signing command (signing.command) or an unencrypted key kept at mode 0600"
            );
        }
        let key = match rsa::PrivateKey::from_pkcs8_pem(text.trim()) {
            Ok(k) => k,
            Err(_) => rsa::PrivateKey::from_pkcs1_pem(text.trim()).map_err(|_| {
                anyhow::anyhow!("the signing key {key_path} is not an RSA private key in PEM (PKCS#8 or PKCS#1)")
            })?,
        };
        let public = PublicKey::from_pem(&cert).with_context(|| format!("{cert_path} is not a PEM RSA public key"))?;
        if key.to_public_key() != *public.rsa() {
            bail!(
                "the signing key {key_path} does not belong to the public key {cert_path} (fingerprint {})\nhelp: set signing.pubkey to the key's public half: openssl rsa -in {key_path} -pubout",
                public.fingerprint
            );
        }
        Ok(KeySigner { key: rsa::pkcs1v15::SigningKey::<Sha256>::new(key), cert })
    }
}

impl DigestSigner for KeySigner {
    fn sign_digest(&self, hex_digest: &str) -> Result<Signed> {
        let sig = self.key.try_sign(hex_digest.as_bytes()).map_err(|e| anyhow::anyhow!("RSA signing failed: {e}"))?;
        Ok(Signed { signature: sig.to_vec(), cert: self.cert.clone() })
    }
}

/// Reads what a `signing_command:` prints: optional `TYPE\n<type>\n`, then
/// `SIGNATURE\n<raw bytes>\nCERT\n<PEM>END\n`. As pkg does, lines are read one by
/// one and the last byte of the signature block (the newline after it) is dropped.
pub fn parse_command_output(out: &[u8]) -> Result<Signed> {
    #[derive(PartialEq)]
    enum State {
        Start,
        Type,
        Signature,
        Cert,
        End,
    }
    let mut state = State::Start;
    let (mut signature, mut cert) = (Vec::new(), Vec::new());
    for line in out.split_inclusive(|b| *b == b'\n') {
        match state {
            State::Start | State::End if line == b"SIGNATURE\n" => state = State::Signature,
            State::Start if line == b"TYPE\n" => state = State::Type,
            State::Type => {
                if line != b"rsa\n" {
                    bail!(
                        "the signing command says TYPE {}; only rsa is supported",
                        String::from_utf8_lossy(line).trim()
                    );
                }
                state = State::Start;
            }
            State::Signature if line == b"CERT\n" => state = State::Cert,
            State::Signature => signature.extend_from_slice(line),
            State::Cert if line == b"END\n" => state = State::End,
            State::Cert => cert.extend_from_slice(line),
            _ => {}
        }
    }
    if signature.is_empty() || cert.is_empty() || state != State::End {
        bail!("the signing command's output is not SIGNATURE ... CERT ... END");
    }
    signature.pop();
    Ok(Signed { signature, cert })
}

/// Re-signs the catalogue archive at `path` whose inner file is `inner`: every old
/// signature entry is dropped, the new ones are written first, the inner file and the
/// compression are kept. The new archive is written beside the old one and renamed
/// over it. Returns the digest signed.
pub fn sign_archive(path: &Utf8Path, inner: &str, mode: TrustMode, signer: &dyn DigestSigner) -> Result<String> {
    let archive = Archive::read(path)?;
    let found: Vec<&Entry> = archive.find(inner).collect();
    let [content] = found.as_slice() else {
        bail!("{path} holds {} `{inner}` entries; it cannot be signed", found.len());
    };
    let digest = sha256_bytes(&content.data);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_signing_command_protocol() {
        let mut out = b"SIGNATURE\n".to_vec();
        out.extend_from_slice(&[1, b'\n', 2, 3]);
        out.extend_from_slice(b"\nCERT\n-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\nEND\n");
        let s = parse_command_output(&out).unwrap();
        assert_eq!(s.signature, vec![1, b'\n', 2, 3]);
        assert!(s.cert.starts_with(b"-----BEGIN") && s.cert.ends_with(b"-----\n"));
        assert!(parse_command_output(b"nonsense\n").is_err());
        assert!(parse_command_output(b"TYPE\necdsa\nSIGNATURE\nx\nCERT\ny\nEND\n").is_err());
    }

    #[test]
    fn native_signatures_equal_the_ones_pkg_wrote() {
        use std::os::unix::fs::PermissionsExt;
        let data = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pkg-repo");
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let key = dir.join("k.pem");
        std::fs::copy(data.join("keys/test-repo.key"), &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cert = std::fs::read(data.join("keys/test-repo.pub")).unwrap();
        let secret = crate::secret::read_private_key(&key).unwrap();
        let signer = KeySigner::new(&secret, &key, cert, &data.join("keys/test-repo.pub")).unwrap();
        for (mode, theirs) in
            [(TrustMode::Pubkey, "production-pubkey"), (TrustMode::Fingerprints, "production-fingerprints")]
        {
            let archive = dir.join("data.pkg");
            std::fs::copy(data.join("unsigned/data.pkg"), &archive).unwrap();
            sign_archive(&archive, "data", mode, &signer).unwrap();
            let ours = Archive::read(&archive).unwrap();
            let pkg = Archive::read(&data.join(theirs).join("data.pkg")).unwrap();
            let names = |a: &Archive| a.entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
            assert_eq!(names(&ours), names(&pkg));
            for (a, b) in ours.entries.iter().zip(&pkg.entries) {
                assert_eq!(a.data, b.data, "{}", a.name);
            }
        }
    }
}
