//! Signatures as pkg 2.8.4 writes them into catalogue archives: the signer types and
//! their `$PKGSIGN:TYPE$` header, what each type signs in each layout, pkg's DER
//! encoding of (r, s), and the limits on signature entries. The facts, with pkg's
//! source files, are in `docs/reference/pkg-signers.md`.

use std::fmt;

use crate::TrustMode;
use crate::error::{Result, bail};

/// What every non-rsa signature entry starts with (`libpkg/private/pkgsign.h`,
/// `PKGSIGN_HEAD`).
pub const HEADER_PREFIX: &[u8] = b"$PKGSIGN:";

/// At most this many `.sig`/`.pub` entries in one archive; pkg 2.8.2 and later refuse
/// the archive past it (`libpkg/pkg_repo.c`, `PKG_REPO_MAX_SIGNATURE_ENTRIES`).
pub const MAX_SIGNATURE_ENTRIES: usize = 8;

/// One signature entry is 1 byte to 1 MiB (`libpkg/pkg_repo.c`,
/// `PKG_REPO_MAX_SIGNATURE_SIZE`).
pub const MAX_SIGNATURE_SIZE: usize = 1 << 20;

/// pkg builds the header in a 32-byte buffer: a longer type name makes `pkg repo` fail.
const MAX_TYPE_LEN: usize = 21;

/// The signer types pkg has (`libpkg/pkgsign.c`, `pkgsign_builtins`). `ecc` and
/// `eddsa` are one algorithm (Ed25519) under two names; the name is written into the
/// header as the signer was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignerType {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (OpenSSL in pkg).
    Rsa,
    /// Pure Ed25519, named `ecc` (what `pkg key --create -t ecc` makes).
    Ecc,
    /// Pure Ed25519, named `eddsa`.
    Eddsa,
    /// ECDSA with SHA-256 on the key's curve.
    Ecdsa,
}

impl SignerType {
    /// Every type, as pkg names them.
    pub const ALL: [SignerType; 4] = [SignerType::Rsa, SignerType::Ecc, SignerType::Eddsa, SignerType::Ecdsa];

    /// The name in headers and on pkg's command line.
    pub fn name(self) -> &'static str {
        match self {
            SignerType::Rsa => "rsa",
            SignerType::Ecc => "ecc",
            SignerType::Eddsa => "eddsa",
            SignerType::Ecdsa => "ecdsa",
        }
    }

    /// The type a name stands for, exactly as pkg compares it (case matters).
    pub fn from_name(name: &str) -> Option<SignerType> {
        SignerType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether this type signs with Ed25519 (`ecc`, `eddsa`).
    pub fn is_ed25519(self) -> bool {
        matches!(self, SignerType::Ecc | SignerType::Eddsa)
    }

    /// The header pkg writes before an entry of this type: none for rsa.
    pub fn header(self) -> Vec<u8> {
        match self {
            SignerType::Rsa => Vec::new(),
            other => [HEADER_PREFIX, other.name().as_bytes(), b"$"].concat(),
        }
    }
}

impl fmt::Display for SignerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An entry split as pkg splits it (`libpkg/pkg_repo.c`, `pkg_repo_parse_sigkeys`):
/// when it starts with `$PKGSIGN:` and has a later `$`, the text between is the type
/// and the rest the payload; otherwise it is all payload, of type `rsa`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The type named in the header, as written (`rsa` without a header).
    pub type_name: String,
    /// Whether there was a header.
    pub headed: bool,
    /// What follows the header.
    pub payload: &'a [u8],
}

impl<'a> Entry<'a> {
    /// Splits an entry's bytes.
    pub fn parse(bytes: &'a [u8]) -> Entry<'a> {
        if let Some(rest) = bytes.strip_prefix(HEADER_PREFIX)
            && let Some(end) = rest.iter().position(|b| *b == b'$')
        {
            return Entry {
                type_name: String::from_utf8_lossy(&rest[..end]).into_owned(),
                headed: true,
                payload: &rest[end + 1..],
            };
        }
        Entry { type_name: "rsa".into(), headed: false, payload: bytes }
    }

    /// The signer type the header names; an unknown one is refused with pkg's words.
    pub fn signer(&self) -> Result<SignerType> {
        match SignerType::from_name(&self.type_name) {
            Some(t) => Ok(t),
            None => bail!(
                "its header names the signer type `{}`, which pkg does not have ('{}' signer not found)",
                self.type_name.escape_default(),
                self.type_name.escape_default()
            ),
        }
    }
}

/// Checks an entry's size against pkg's limits.
pub fn check_entry_size(len: usize) -> Result<()> {
    if len == 0 || len > MAX_SIGNATURE_SIZE {
        bail!("it is {len} bytes; pkg takes 1 byte to 1 MiB (invalid repository signature entry size)");
    }
    Ok(())
}

/// Checks a type name a signing command gave against what pkg can write.
pub fn check_type_name(name: &str) -> Result<SignerType> {
    if name.len() > MAX_TYPE_LEN {
        bail!(
            "the type `{}` is longer than the {MAX_TYPE_LEN} characters pkg's header has room for",
            name.escape_default()
        );
    }
    match SignerType::from_name(name) {
        Some(t) => Ok(t),
        None => bail!("the type `{}` is not one of pkg's signers (rsa, ecc, eddsa, ecdsa)", name.escape_default()),
    }
}

/// What pkg signs for one inner catalogue file: both forms, computed once.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    hex: String,
    /// Left out when the message was digested for checks that never use it.
    blake2b: Option<[u8; 64]>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({})", self.hex)
    }
}

impl Message {
    /// The message for an inner file's bytes.
    pub fn of(inner: &[u8]) -> Message {
        let mut hasher = Message::hasher();
        hasher.update(inner);
        hasher.finish()
    }

    /// The message for an inner file read piece by piece.
    pub fn hasher() -> MessageHasher {
        use sha2::Digest;
        MessageHasher {
            sha256: sha2::Sha256::new(),
            blake2b: Some(blake2b_simd::Params::new().hash_length(64).to_state()),
        }
    }

    /// A hasher of the SHA-256 alone: for checks in which only the hex is signed (the
    /// fingerprints layout, rsa), a catalogue of a whole ports tree is not digested twice.
    pub(crate) fn hex_hasher() -> MessageHasher {
        use sha2::Digest;
        MessageHasher { sha256: sha2::Sha256::new(), blake2b: None }
    }

    /// The 64 lowercase hex digits of SHA-256 of the file: what rsa signs in both
    /// layouts, what every type signs in the fingerprints layout, and what a signing
    /// command is given.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The raw 64-byte BLAKE2b-512 of the file: what ecc and ecdsa sign in the pubkey
    /// layout (a key file's `signature` entry). Every message made by [`Message::of`]
    /// or [`Message::hasher`] has it.
    pub fn blake2b(&self) -> Option<&[u8; 64]> {
        self.blake2b.as_ref()
    }

    /// The bytes a signer of `signer` signs in `layout` (`libpkg/pkgsign_ossl.c`,
    /// `ossl_sign`; `libpkg/pkgsign_ecc.c`, `ecc_sign`, `ecc_verify_cb`,
    /// `ecc_verify_cert_cb`); `None` for the BLAKE2b of a message made without it.
    pub fn for_signer(&self, signer: SignerType, layout: TrustMode) -> Option<&[u8]> {
        match (signer, layout) {
            (SignerType::Rsa, _) | (_, TrustMode::Fingerprints) => Some(self.hex.as_bytes()),
            (_, TrustMode::Pubkey) => self.blake2b.as_ref().map(|b| &b[..]),
        }
    }
}

/// Digests an inner file as it is read, for its [`Message`].
pub struct MessageHasher {
    sha256: sha2::Sha256,
    blake2b: Option<blake2b_simd::State>,
}

impl MessageHasher {
    /// Adds the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.sha256.update(bytes);
        if let Some(b) = &mut self.blake2b {
            b.update(bytes);
        }
    }

    /// The message for the bytes given.
    pub fn finish(self) -> Message {
        use sha2::Digest;
        let blake2b = self.blake2b.map(|b| {
            let mut out = [0; 64];
            out.copy_from_slice(b.finalize().as_bytes());
            out
        });
        Message { hex: crate::hex(&self.sha256.finalize()), blake2b }
    }
}

/// pkg's DER encoding of a two-part signature (`libpkg/pkgsign_ecc.c`,
/// `ecc_write_signature`): `SEQUENCE { INTEGER r, INTEGER s }`, each half read as a
/// big-endian unsigned integer.
pub fn encode_halves(r: &[u8], s: &[u8]) -> Vec<u8> {
    use der::Encode;
    let int = |half: &[u8]| {
        let trimmed = {
            let start = half.iter().position(|b| *b != 0).unwrap_or(half.len().saturating_sub(1));
            &half[start..]
        };
        der::asn1::UintRef::new(trimmed).and_then(|u| u.to_der()).expect("a half of at most 66 bytes encodes")
    };
    let body = [int(r), int(s)].concat();
    der::asn1::AnyRef::new(der::Tag::Sequence, &body).and_then(|a| a.to_der()).expect("a short sequence encodes")
}

/// Reads pkg's DER signature back into its two halves, each `half` bytes, left-padded
/// (`libpkg/pkgsign_ecc.c`, `ecc_extract_signature`). Stricter than pkg, which reads
/// the first DER object and ignores what follows: bytes after it are refused, as is
/// anything but canonical DER.
pub fn decode_halves(der_bytes: &[u8], half: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    use der::{Decode, Reader};
    let parse = || -> der::Result<(Vec<u8>, Vec<u8>)> {
        let mut reader = der::SliceReader::new(der_bytes)?;
        let (r, s) = reader.sequence(|seq| {
            let r = der::asn1::UintRef::decode(seq)?;
            let s = der::asn1::UintRef::decode(seq)?;
            Ok::<_, der::Error>((r.as_bytes().to_vec(), s.as_bytes().to_vec()))
        })?;
        reader.finish()?;
        Ok((r, s))
    };
    let (r, s) = match parse() {
        Ok(halves) => halves,
        Err(e) => bail!(
            "it is not one DER SEQUENCE of two INTEGERs with nothing after it ({e}; pkg: failed to decode signature)"
        ),
    };
    let pad = |v: Vec<u8>| -> Result<Vec<u8>> {
        if v.len() > half {
            bail!(
                "a part of it is {} bytes, longer than the {half} bytes of the key's group (pkg: failed to decode signature)",
                v.len()
            );
        }
        let mut out = vec![0; half - v.len()];
        out.extend_from_slice(&v);
        Ok(out)
    };
    Ok((pad(r)?, pad(s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_as_pkg_splits_them() {
        let e = Entry::parse(b"$PKGSIGN:ecc$\x30\x06");
        assert_eq!((e.type_name.as_str(), e.headed, e.payload), ("ecc", true, &b"\x30\x06"[..]));
        assert_eq!(e.signer().unwrap(), SignerType::Ecc);
        let e = Entry::parse(b"$PKGSIGN:ecc");
        assert_eq!((e.type_name.as_str(), e.headed), ("rsa", false), "no closing `$`: all payload, rsa");
        let e = Entry::parse(b"$PKGSIGN:foo$x");
        assert!(e.signer().unwrap_err().to_string().contains("'foo' signer not found"));
        assert_eq!(SignerType::Ecdsa.header(), b"$PKGSIGN:ecdsa$");
        assert!(SignerType::Rsa.header().is_empty());
        assert!(check_type_name("x".repeat(22).as_str()).is_err());
        assert!(check_type_name("ECC").is_err(), "pkg compares names exactly");
        assert!(check_entry_size(0).is_err() && check_entry_size(MAX_SIGNATURE_SIZE + 1).is_err());
        check_entry_size(MAX_SIGNATURE_SIZE).unwrap();
    }

    #[test]
    fn halves_round_trip_as_pkg_encodes_them() {
        // Leading zeros dropped, `00` put back before a set top bit.
        let r = [0u8, 0, 0x7f, 1];
        let s = [0x80u8, 0, 0, 1];
        let der = encode_halves(&r, &s);
        assert_eq!(der, [0x30, 0x0b, 0x02, 0x02, 0x7f, 0x01, 0x02, 0x05, 0x00, 0x80, 0, 0, 1]);
        assert_eq!(decode_halves(&der, 4).unwrap(), (r.to_vec(), s.to_vec()));
        // Stricter than pkg: nothing may follow, and each half fits the group.
        let doubled = [der.clone(), der.clone()].concat();
        assert!(decode_halves(&doubled, 4).unwrap_err().to_string().contains("nothing after it"));
        assert!(decode_halves(&der, 3).unwrap_err().to_string().contains("longer than the 3 bytes"));
        assert!(decode_halves(b"", 4).is_err());
        // A 66-byte half (secp521r1) needs DER's long length form.
        let big = [0xffu8; 66];
        let der = encode_halves(&big, &big);
        assert_eq!(decode_halves(&der, 66).unwrap(), (big.to_vec(), big.to_vec()));
    }

    #[test]
    fn the_message_is_hex_or_blake2b_by_type_and_layout() {
        let m = Message::of(b"");
        assert_eq!(m.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(m.for_signer(SignerType::Rsa, TrustMode::Pubkey), Some(m.hex().as_bytes()));
        assert_eq!(m.for_signer(SignerType::Ecc, TrustMode::Fingerprints), Some(m.hex().as_bytes()));
        assert_eq!(m.for_signer(SignerType::Ecdsa, TrustMode::Pubkey), m.blake2b().map(|b| &b[..]));
        assert_eq!(m.blake2b().unwrap()[..4], [0x78, 0x6a, 0x02, 0xf7]);
        let mut hex_only = Message::hex_hasher();
        hex_only.update(b"");
        let hex_only = hex_only.finish();
        assert_eq!(hex_only.hex(), m.hex());
        assert_eq!(hex_only.for_signer(SignerType::Ecc, TrustMode::Pubkey), None);
    }
}
