//! Keys of every signer type pkg 2.8.4 has, in the formats pkg reads, and signing and
//! verifying with them: rsa (PEM), ecc/eddsa (Ed25519 in pkg's own DER format, on
//! libecc's curve WEI25519) and ecdsa (DER keys on the curves pkg accepts). The type
//! of a key is read from the key. Formats and the sources they come from:
//! `docs/reference/pkg-signers.md` §7.
//!
//! The cryptography is RustCrypto's (`rsa`, `ed25519-dalek`, `ecdsa` with `k256`,
//! `p384`, `p521`, `bp256`, `bp384`); WEI25519's points are turned into Ed25519's with
//! `crypto-bigint` arithmetic modulo 2^255 - 19 and `curve25519-dalek`.

use std::fmt;

use crypto_bigint::{NonZero, U256};
use der::asn1::ObjectIdentifier as Oid;
use der::{Decode, Reader};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::TrustMode;
use crate::error::{Error, Result, bail};
use crate::signature::{Message, SignerType, decode_halves, encode_halves};

/// The curves pkg accepts for ecdsa keys, by OID (`libpkg/pkgsign_ecc.c`,
/// `ecc_extract_key_params`, `pkgkey_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// secp256k1 (what `pkg key --create -t ecdsa` makes).
    Secp256k1,
    /// secp384r1 (NIST P-384).
    Secp384r1,
    /// secp521r1 (NIST P-521).
    Secp521r1,
    /// brainpoolP256r1.
    BrainpoolP256r1,
    /// brainpoolP256t1.
    BrainpoolP256t1,
    /// brainpoolP320r1 (pkg accepts it; no well-kept Rust implementation: refused).
    BrainpoolP320r1,
    /// brainpoolP320t1 (likewise refused).
    BrainpoolP320t1,
    /// brainpoolP384r1.
    BrainpoolP384r1,
    /// brainpoolP384t1.
    BrainpoolP384t1,
    /// brainpoolP512r1 (pkg accepts it; no well-kept Rust implementation: refused).
    BrainpoolP512r1,
    /// brainpoolP512t1 (likewise refused).
    BrainpoolP512t1,
}

impl Curve {
    const ALL: [Curve; 11] = [
        Curve::Secp256k1,
        Curve::Secp384r1,
        Curve::Secp521r1,
        Curve::BrainpoolP256r1,
        Curve::BrainpoolP256t1,
        Curve::BrainpoolP320r1,
        Curve::BrainpoolP320t1,
        Curve::BrainpoolP384r1,
        Curve::BrainpoolP384t1,
        Curve::BrainpoolP512r1,
        Curve::BrainpoolP512t1,
    ];

    /// The usual name: `secp384r1`, `brainpoolP256r1`.
    pub fn name(self) -> &'static str {
        match self {
            Curve::Secp256k1 => "secp256k1",
            Curve::Secp384r1 => "secp384r1",
            Curve::Secp521r1 => "secp521r1",
            Curve::BrainpoolP256r1 => "brainpoolP256r1",
            Curve::BrainpoolP256t1 => "brainpoolP256t1",
            Curve::BrainpoolP320r1 => "brainpoolP320r1",
            Curve::BrainpoolP320t1 => "brainpoolP320t1",
            Curve::BrainpoolP384r1 => "brainpoolP384r1",
            Curve::BrainpoolP384t1 => "brainpoolP384t1",
            Curve::BrainpoolP512r1 => "brainpoolP512r1",
            Curve::BrainpoolP512t1 => "brainpoolP512t1",
        }
    }

    fn oid(self) -> Oid {
        let s = match self {
            Curve::Secp256k1 => "1.3.132.0.10",
            Curve::Secp384r1 => "1.3.132.0.34",
            Curve::Secp521r1 => "1.3.132.0.35",
            Curve::BrainpoolP256r1 => "1.3.36.3.3.2.8.1.1.7",
            Curve::BrainpoolP256t1 => "1.3.36.3.3.2.8.1.1.8",
            Curve::BrainpoolP320r1 => "1.3.36.3.3.2.8.1.1.9",
            Curve::BrainpoolP320t1 => "1.3.36.3.3.2.8.1.1.10",
            Curve::BrainpoolP384r1 => "1.3.36.3.3.2.8.1.1.11",
            Curve::BrainpoolP384t1 => "1.3.36.3.3.2.8.1.1.12",
            Curve::BrainpoolP512r1 => "1.3.36.3.3.2.8.1.1.13",
            Curve::BrainpoolP512t1 => "1.3.36.3.3.2.8.1.1.14",
        };
        Oid::new_unwrap(s)
    }

    /// The curve of an OID, or why it is refused.
    fn from_oid(oid: &Oid) -> Result<Curve> {
        if let Some(c) = Curve::ALL.into_iter().find(|c| c.oid() == *oid) {
            return c.supported();
        }
        let known = [
            ("1.2.840.10045.3.1.7", "NIST P-256 (prime256v1)"),
            ("1.3.132.0.33", "secp224r1"),
            ("1.2.840.10045.3.1.1", "NIST P-192 (prime192v1)"),
        ];
        let name = known
            .iter()
            .find(|(o, _)| oid.to_string() == *o)
            .map_or_else(|| format!("OID {oid}"), |(_, n)| n.to_string());
        bail!(
            "its curve is {name}, which pkg refuses (it accepts secp256k1, secp384r1, secp521r1 and the brainpool curves)"
        )
    }

    /// pkg's own name for the curve, in its DER key format (`SECP256K1`).
    fn pkg_name(self) -> String {
        self.name().to_ascii_uppercase()
    }

    /// The curve itself, when this crate can compute on it.
    fn supported(self) -> Result<Curve> {
        match self {
            Curve::BrainpoolP320r1 | Curve::BrainpoolP320t1 | Curve::BrainpoolP512r1 | Curve::BrainpoolP512t1 => bail!(
                "its curve is {}: pkg accepts it, but there is no well-kept Rust implementation of it, so mother-build cannot sign or verify with it; use secp256k1, secp384r1, secp521r1, brainpoolP256r1/t1 or brainpoolP384r1/t1",
                self.name()
            ),
            c => Ok(c),
        }
    }

    /// Bytes of a coordinate (of the field) and of a signature half (of the group order).
    fn sizes(self) -> (usize, usize) {
        match self {
            Curve::Secp256k1 | Curve::BrainpoolP256r1 | Curve::BrainpoolP256t1 => (32, 32),
            Curve::BrainpoolP320r1 | Curve::BrainpoolP320t1 => (40, 40),
            Curve::Secp384r1 | Curve::BrainpoolP384r1 | Curve::BrainpoolP384t1 => (48, 48),
            Curve::BrainpoolP512r1 | Curve::BrainpoolP512t1 => (64, 64),
            Curve::Secp521r1 => (66, 66),
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a key signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSA: pkg's `rsa` signer.
    Rsa,
    /// Ed25519: pkg's `ecc` and `eddsa` signers.
    Ed25519,
    /// ECDSA on a curve: pkg's `ecdsa` signer.
    Ecdsa(Curve),
}

impl Algorithm {
    /// Whether entries of `signer` are made by keys of this algorithm.
    pub fn signs_as(self, signer: SignerType) -> bool {
        matches!(
            (self, signer),
            (Algorithm::Rsa, SignerType::Rsa)
                | (Algorithm::Ed25519, SignerType::Ecc | SignerType::Eddsa)
                | (Algorithm::Ecdsa(_), SignerType::Ecdsa)
        )
    }

    /// The signer type this crate writes for keys of this algorithm (`ecc` for Ed25519,
    /// as `pkg key --create -t ecc` names it).
    pub fn signer(self) -> SignerType {
        match self {
            Algorithm::Rsa => SignerType::Rsa,
            Algorithm::Ed25519 => SignerType::Ecc,
            Algorithm::Ecdsa(_) => SignerType::Ecdsa,
        }
    }
}

impl Algorithm {
    /// The scheme [`PrivateKey::sign_data`] uses for keys of this algorithm: each key
    /// type's usual signature over arbitrary bytes (for DSSE envelopes, not catalogues).
    /// rsa: RSASSA-PKCS1-v1_5 with SHA-256 (`rsa-pkcs1v15-sha256`); ecc: pure Ed25519
    /// (RFC 8032) giving the raw 64-byte signature (`ed25519`); ecdsa: ECDSA with the hash
    /// of the curve's size (SHA-256 on the 256-bit curves, SHA-384 on the 384-bit ones,
    /// SHA-512 on secp521r1), the signature DER `ECDSA-Sig-Value` (`ecdsa-sha2-CURVE`).
    pub fn data_scheme(self) -> String {
        match self {
            Algorithm::Rsa => "rsa-pkcs1v15-sha256".into(),
            Algorithm::Ed25519 => "ed25519".into(),
            Algorithm::Ecdsa(c) => format!("ecdsa-{}-{}", c.data_hash().0, c.name()),
        }
    }
}

/// A hash function over bytes.
type DigestFn = fn(&[u8]) -> Vec<u8>;

impl Curve {
    /// The hash ECDSA on this curve uses over arbitrary data: the one of the curve's
    /// size (name, digest).
    fn data_hash(self) -> (&'static str, DigestFn) {
        match self.sizes().1 {
            0..=32 => ("sha256", |d| Sha256::digest(d).to_vec()),
            33..=48 => ("sha384", |d| sha2::Sha384::digest(d).to_vec()),
            _ => ("sha512", |d| sha2::Sha512::digest(d).to_vec()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Algorithm::Rsa => f.write_str("rsa"),
            Algorithm::Ed25519 => f.write_str("ecc (Ed25519)"),
            Algorithm::Ecdsa(c) => write!(f, "ecdsa ({c})"),
        }
    }
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
    /// Not pkg's DER encoding of a signature (ecc, ecdsa).
    Encoding(String),
    /// Right form, wrong value: another key, or the file changed after signing.
    Mismatch,
    /// The message was digested without the BLAKE2b this signature covers (see
    /// [`Message::for_signer`]).
    Undigested,
}

impl std::error::Error for SignatureError {}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Length { got, want } => write!(
                f,
                "the signature is {got} bytes but the key makes {want}-byte signatures (truncated or not made by this key)"
            ),
            SignatureError::Encoding(why) => write!(f, "the signature cannot be read: {why}"),
            SignatureError::Undigested => {
                f.write_str("the catalogue's BLAKE2b, which this signature covers, was not computed")
            }
            SignatureError::Mismatch => f.write_str(
                "the signature does not verify (the catalogue changed after signing, or another key signed it)",
            ),
        }
    }
}

macro_rules! ecdsa_curves {
    ($($variant:ident => $curve:ty, $which:path;)*) => {
        /// An ECDSA public key on one of the supported curves.
        #[derive(Clone)]
        enum EcdsaPublic { $($variant(ecdsa::VerifyingKey<$curve>),)* }

        /// An ECDSA private key on one of the supported curves.
        enum EcdsaSecret { $($variant(ecdsa::SigningKey<$curve>),)* }

        impl EcdsaPublic {
            /// From an uncompressed SEC1 point (`04 X Y`).
            fn from_point(curve: Curve, point: &[u8]) -> Result<EcdsaPublic> {
                match curve {
                    $($which => ecdsa::VerifyingKey::<$curve>::from_sec1_bytes(point).map(EcdsaPublic::$variant),)*
                    other => return Err(other.supported().err().unwrap_or_else(|| Error::msg(format!("curve {other} is not supported")))),
                }
                .map_err(|_| Error::msg(format!("its point is not on {curve}")))
            }

            fn curve(&self) -> Curve {
                match self { $(EcdsaPublic::$variant(_) => $which,)* }
            }

            /// Verifies (r, s) over a SHA-256 digest, whatever the curve's size.
            fn verify(&self, prehash: &[u8], r: &[u8], s: &[u8]) -> bool {
                use ecdsa::signature::hazmat::PrehashVerifier;
                match self {
                    $(EcdsaPublic::$variant(key) => {
                        let Ok(sig) = ecdsa::Signature::<$curve>::from_scalars(
                            ecdsa::elliptic_curve::FieldBytes::<$curve>::try_from(r).expect("a half of the group's size").clone(),
                            ecdsa::elliptic_curve::FieldBytes::<$curve>::try_from(s).expect("a half of the group's size").clone(),
                        ) else { return false };
                        // libecc does not normalise s: either half of the group verifies.
                        let sig = sig.normalize_s();
                        key.verify_prehash(prehash, &sig).is_ok()
                    })*
                }
            }
        }

        impl EcdsaSecret {
            /// From the big-endian secret scalar.
            fn from_scalar(curve: Curve, scalar: &[u8]) -> Result<EcdsaSecret> {
                match curve {
                    $($which => ecdsa::SigningKey::<$curve>::from_slice(scalar).map(EcdsaSecret::$variant),)*
                    other => return Err(other.supported().err().unwrap_or_else(|| Error::msg(format!("curve {other} is not supported")))),
                }
                .map_err(|_| Error::msg(format!("its secret is not a valid {curve} scalar")))
            }

            fn public(&self) -> EcdsaPublic {
                match self { $(EcdsaSecret::$variant(k) => EcdsaPublic::$variant(*k.verifying_key()),)* }
            }

            /// Signs a SHA-256 digest (RFC 6979 nonce), giving (r, s).
            fn sign(&self, prehash: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
                use ecdsa::signature::hazmat::PrehashSigner;
                match self {
                    $(EcdsaSecret::$variant(k) => {
                        let sig: ecdsa::Signature<$curve> = k.sign_prehash(prehash).map_err(|e| Error::msg(format!("ECDSA signing failed: {e}")))?;
                        let (r, s) = sig.split_bytes();
                        Ok((r.to_vec(), s.to_vec()))
                    })*
                }
            }
        }

        impl PartialEq for EcdsaPublic {
            fn eq(&self, other: &EcdsaPublic) -> bool {
                match (self, other) {
                    $((EcdsaPublic::$variant(a), EcdsaPublic::$variant(b)) => a == b,)*
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }
        }
    };
}

ecdsa_curves! {
    K256 => k256::Secp256k1, Curve::Secp256k1;
    P384 => p384::NistP384, Curve::Secp384r1;
    P521 => p521::NistP521, Curve::Secp521r1;
    Bp256r1 => bp256::BrainpoolP256r1, Curve::BrainpoolP256r1;
    Bp256t1 => bp256::BrainpoolP256t1, Curve::BrainpoolP256t1;
    Bp384r1 => bp384::BrainpoolP384r1, Curve::BrainpoolP384r1;
    Bp384t1 => bp384::BrainpoolP384t1, Curve::BrainpoolP384t1;
}

#[derive(Clone)]
enum Public {
    Rsa(rsa::PublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Ecdsa(EcdsaPublic),
}

/// A public key of any signer type, and the fingerprint of the exact bytes it was read
/// from (what fingerprints-mode clients trust).
#[derive(Clone)]
pub struct PublicKey {
    key: Public,
    fingerprint: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {})", self.algorithm(), self.fingerprint)
    }
}

impl PublicKey {
    /// Reads a public key in a format pkg reads, telling them apart by their bytes:
    /// - rsa: PEM SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`);
    /// - ecc: pkg's DER format on WEI25519 (96 bytes, as `pkg key --create -t ecc`
    ///   prints it);
    /// - ecdsa: DER SubjectPublicKeyInfo (`id-ecPublicKey`, a named curve, an
    ///   uncompressed point), or pkg's DER format on that curve.
    ///
    /// What pkg does not read is refused, saying what it is: PKCS#1 RSA keys, RSA in
    /// DER, EC keys in PEM, Ed25519 SubjectPublicKeyInfo, compressed points, curves pkg
    /// refuses.
    pub fn parse(bytes: &[u8]) -> Result<PublicKey> {
        let key = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            parse_public_pem(bytes)?
        } else if is_pkg_der(bytes) {
            match read_pkg_der(bytes, true)? {
                (PkgCurve::Wei25519, coords) => Public::Ed25519(wei25519_to_ed25519(&coords)?),
                (PkgCurve::Ecdsa(curve), coords) => {
                    Public::Ecdsa(EcdsaPublic::from_point(curve, &[&[4u8][..], &coords].concat())?)
                }
            }
        } else {
            parse_public_spki(bytes)?
        };
        Ok(PublicKey { key, fingerprint: crate::sha256_hex(bytes) })
    }

    /// What the key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match &self.key {
            Public::Rsa(_) => Algorithm::Rsa,
            Public::Ed25519(_) => Algorithm::Ed25519,
            Public::Ecdsa(k) => Algorithm::Ecdsa(k.curve()),
        }
    }

    /// For an ecc key, its RFC 8032 Ed25519 encoding (what pkg's WEI25519 point is).
    pub fn ed25519(&self) -> Option<[u8; 32]> {
        match &self.key {
            Public::Ed25519(k) => Some(k.to_bytes()),
            _ => None,
        }
    }

    /// The SHA-256 (lowercase hex) of the bytes the key was read from.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Verifies a signature payload (header removed; for rsa, the trailing NUL of a key
    /// file's entry removed too) made by a signer of `signer` in `layout`, as pkg's
    /// client does: see [`Message::for_signer`] for what is signed.
    pub fn verify(
        &self,
        message: &Message,
        signer: SignerType,
        layout: TrustMode,
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let signed = message.for_signer(signer, layout).ok_or(SignatureError::Undigested)?;
        match &self.key {
            Public::Rsa(key) => verify_rsa(key, signed, signature),
            Public::Ed25519(key) => {
                let (r, s) = decode_halves(signature, 32).map_err(|e| SignatureError::Encoding(e.to_string()))?;
                let sig =
                    ed25519_dalek::Signature::from_bytes(&[r, s].concat().try_into().expect("two 32-byte halves"));
                key.verify_strict(signed, &sig).map_err(|_| SignatureError::Mismatch)
            }
            Public::Ecdsa(key) => {
                let half = key.curve().sizes().1;
                let (r, s) = decode_halves(signature, half).map_err(|e| SignatureError::Encoding(e.to_string()))?;
                let prehash = Sha256::digest(signed);
                if key.verify(&prehash, &r, &s) { Ok(()) } else { Err(SignatureError::Mismatch) }
            }
        }
    }
}

impl PublicKey {
    /// Verifies a signature over arbitrary bytes made by [`PrivateKey::sign_data`] (the
    /// scheme [`Algorithm::data_scheme`] names).
    pub fn verify_data(&self, data: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        match &self.key {
            Public::Rsa(key) => verify_rsa(key, data, signature),
            Public::Ed25519(key) => {
                let bytes: [u8; 64] =
                    signature.try_into().map_err(|_| SignatureError::Length { got: signature.len(), want: 64 })?;
                key.verify_strict(data, &ed25519_dalek::Signature::from_bytes(&bytes))
                    .map_err(|_| SignatureError::Mismatch)
            }
            Public::Ecdsa(key) => {
                let curve = key.curve();
                let (r, s) =
                    decode_halves(signature, curve.sizes().1).map_err(|e| SignatureError::Encoding(e.to_string()))?;
                if key.verify(&(curve.data_hash().1)(data), &r, &s) { Ok(()) } else { Err(SignatureError::Mismatch) }
            }
        }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        match (&self.key, &other.key) {
            (Public::Rsa(a), Public::Rsa(b)) => a == b,
            (Public::Ed25519(a), Public::Ed25519(b)) => a == b,
            (Public::Ecdsa(a), Public::Ecdsa(b)) => a == b,
            _ => false,
        }
    }
}

fn parse_public_pem(bytes: &[u8]) -> Result<Public> {
    use rsa::pkcs8::DecodePublicKey;
    let Ok(text) = std::str::from_utf8(bytes) else { bail!("it starts like PEM but is not text") };
    let text = text.trim();
    if text.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        bail!(
            "it is a PKCS#1 RSA public key (`BEGIN RSA PUBLIC KEY`), which pkg does not read; convert it: openssl rsa -RSAPublicKey_in -in FILE -pubout"
        );
    }
    match rsa::PublicKey::from_public_key_pem(text) {
        Ok(k) => Ok(Public::Rsa(k)),
        Err(_) if text.starts_with("-----BEGIN PUBLIC KEY-----") => {
            let der = pem_body(text)?;
            match spki::SubjectPublicKeyInfoRef::from_der(&der) {
                Ok(info) if info.algorithm.oid == ID_EC_PUBLIC_KEY => bail!(
                    "it is an EC public key in PEM, which pkg does not read for ecdsa; give it as DER: openssl ec -pubin -in FILE -outform DER"
                ),
                Ok(info) => bail!("it is a PEM public key of algorithm {}, not RSA", info.algorithm.oid),
                Err(e) => bail!("it is not a readable PEM public key ({e})"),
            }
        }
        Err(e) => bail!("it is not an RSA public key in PEM (`BEGIN PUBLIC KEY`): {e}"),
    }
}

/// The DER inside a PEM block.
fn pem_body(text: &str) -> Result<Vec<u8>> {
    let (_, der) =
        pem_rfc7468::decode_vec(text.as_bytes()).map_err(|e| Error::msg(format!("it is not readable PEM ({e})")))?;
    Ok(der)
}

const ID_EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const ID_ED25519: Oid = Oid::new_unwrap("1.3.101.112");
const ID_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");

fn parse_public_spki(bytes: &[u8]) -> Result<Public> {
    let info = match spki::SubjectPublicKeyInfoRef::from_der(bytes) {
        Ok(info) => info,
        Err(e) => bail!(
            "it is none of the public key formats pkg reads (PEM for rsa, pkg's DER for ecc, DER SubjectPublicKeyInfo for ecdsa): {e}"
        ),
    };
    let oid = info.algorithm.oid;
    if oid == ID_ED25519 {
        bail!(
            "it is an Ed25519 key in SubjectPublicKeyInfo form, which pkg does not read; use pkg's own format (pkg key --public -t ecc KEY)"
        );
    }
    if oid == ID_RSA {
        bail!(
            "it is an RSA public key in DER, which pkg does not read; give it as PEM: openssl rsa -pubin -inform DER -in FILE"
        );
    }
    if oid != ID_EC_PUBLIC_KEY {
        bail!("its algorithm is {oid}, not one of pkg's signers");
    }
    let Some(params) = info.algorithm.parameters else { bail!("it names no curve") };
    let curve_oid: Oid = params.decode_as().map_err(|_| Error::msg("its curve is not given by name (an OID)"))?;
    let curve = Curve::from_oid(&curve_oid)?;
    let point = info.subject_public_key.as_bytes().ok_or_else(|| Error::msg("its point has unused bits"))?;
    if point.first() != Some(&4) || point.len() != 1 + 2 * curve.sizes().0 {
        bail!("its point is not uncompressed (`04 X Y`), the only form pkg reads");
    }
    Ok(Public::Ecdsa(EcdsaPublic::from_point(curve, point)?))
}

/// A curve in pkg's DER key format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PkgCurve {
    Wei25519,
    Ecdsa(Curve),
}

/// Whether `bytes` look like pkg's DER key format (a SEQUENCE whose first element is a
/// UTF8String), rather than a SubjectPublicKeyInfo or an ECPrivateKey.
fn is_pkg_der(bytes: &[u8]) -> bool {
    let first = || -> der::Result<der::Tag> {
        let mut r = der::SliceReader::new(bytes)?;
        let header = der::Header::decode(&mut r)?;
        if header.tag() != der::Tag::Sequence {
            return Err(der::ErrorKind::Failed.into());
        }
        der::Tag::peek(&r)
    };
    first().is_ok_and(|t| t == der::Tag::Utf8String)
}

/// Reads pkg's own DER key format (`libpkg/pkgsign_ecc.c`, `ecc_read_pkgkey`):
/// `SEQUENCE { "pkg", 1, "ecc", CURVE, BOOLEAN public, BIT STRING 00 04 KEY }`, checked
/// in pkg's order. Returns the curve and the key bytes after `04`.
fn read_pkg_der(bytes: &[u8], public: bool) -> Result<(PkgCurve, Zeroizing<Vec<u8>>)> {
    /// magic, version, family, curve, public flag, key bits.
    type Fields = (String, u8, String, String, bool, Zeroizing<Vec<u8>>);
    let parse = || -> der::Result<Fields> {
        let mut r = der::SliceReader::new(bytes)?;
        let out = r.sequence(|s| {
            let magic = der::asn1::Utf8StringRef::decode(s)?.as_str().to_owned();
            let version = u8::decode(s)?;
            let family = der::asn1::Utf8StringRef::decode(s)?.as_str().to_owned();
            let curve = der::asn1::Utf8StringRef::decode(s)?.as_str().to_owned();
            let is_public = bool::decode(s)?;
            let key = der::asn1::BitStringRef::decode(s)?;
            let key = Zeroizing::new(key.as_bytes().ok_or(der::Error::from(der::ErrorKind::Failed))?.to_vec());
            Ok::<_, der::Error>((magic, version, family, curve, is_public, key))
        })?;
        r.finish()?;
        Ok(out)
    };
    let Ok((magic, version, family, curve, is_public, key)) = parse() else {
        bail!("it is not in pkg's DER key format (SEQUENCE of \"pkg\", 1, \"ecc\", curve, public flag, key)");
    };
    if magic != "pkg" || version != 1 || family != "ecc" {
        bail!(
            "it is not in pkg's DER key format version 1 (it says `{}` {version} `{}`)",
            magic.escape_default(),
            family.escape_default()
        );
    }
    let curve = if curve == "WEI25519" {
        PkgCurve::Wei25519
    } else if let Some(c) = Curve::ALL.into_iter().find(|c| c.pkg_name() == curve) {
        PkgCurve::Ecdsa(c.supported()?)
    } else {
        bail!("its curve `{}` is not one pkg knows", curve.escape_default());
    };
    if is_public != public {
        bail!(
            "it is a {} key where a {} key was expected",
            if is_public { "public" } else { "private" },
            if public { "public" } else { "private" }
        );
    }
    let Some(rest) = key.strip_prefix(&[4u8][..]) else {
        bail!("its key bits do not start with 04");
    };
    let want = match (curve, public) {
        (PkgCurve::Wei25519, true) => 64,
        (PkgCurve::Ecdsa(c), true) => 2 * c.sizes().0,
        (_, false) => PKG_PRIVATE_LEN,
    };
    if rest.len() != want {
        bail!("its key is {} bytes; pkg writes {want} for this curve", rest.len());
    }
    Ok((curve, Zeroizing::new(rest.to_vec())))
}

/// pkg pads private keys to libecc's largest export size (`EC_PRIV_KEY_EXPORT_SIZE`).
const PKG_PRIVATE_LEN: usize = 114;

/// p = 2^255 - 19.
const P: U256 = U256::from_be_hex("7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffed");
/// libecc's WEI25519: X = u + A/3 (`ec_params_wei25519.h`, alpha_montgomery).
const ALPHA_MONTGOMERY: U256 = U256::from_be_hex("2aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaad2451");
/// A square root of -486664 mod p (`ec_params_wei25519.h`, alpha_edwards): x = alpha · u / v.
const ALPHA_EDWARDS: U256 = U256::from_be_hex("70d9120b9f5ff9442d84f723fc03b0813a5e2c2eb482e57d3391fb5500ba81e7");
/// Curve25519's A.
const A: U256 = U256::from_u64(486662);

/// Maps a point of libecc's short-Weierstrass WEI25519 (X || Y, big-endian) to the
/// Ed25519 public key it is (`docs/reference/pkg-signers.md`, "From WEI25519 to
/// Ed25519"): u = X - alpha_m, v = Y on Curve25519 (checked: v^2 = u^3 + A u^2 + u),
/// then curve25519-dalek's birational map to Edwards with the sign of x = alpha_e u / v.
fn wei25519_to_ed25519(coords: &[u8]) -> Result<ed25519_dalek::VerifyingKey> {
    let p = NonZero::new(P).expect("p is not zero");
    let read = |b: &[u8]| -> Result<U256> {
        let n = U256::from_be_slice(b);
        if n >= P {
            bail!("its point has a coordinate outside the field");
        }
        Ok(n)
    };
    let (x, v) = (read(&coords[..32])?, read(&coords[32..64])?);
    let u = x.sub_mod(&ALPHA_MONTGOMERY, &p);
    let u2 = u.mul_mod(&u, &p);
    let rhs = u2.mul_mod(&u, &p).add_mod(&A.mul_mod(&u2, &p), &p).add_mod(&u, &p);
    if v.mul_mod(&v, &p) != rhs {
        bail!("its point is not on WEI25519");
    }
    let Some(v_inv) = Option::<U256>::from(v.invert_mod(&p)) else {
        bail!("its point has Y = 0, which has no Ed25519 form");
    };
    let sign = ALPHA_EDWARDS.mul_mod(&u, &p).mul_mod(&v_inv, &p).to_le_bytes()[0] & 1;
    let mut u_le = [0u8; 32];
    u_le.copy_from_slice(&u.to_le_bytes());
    let Some(edwards) = curve25519_dalek::MontgomeryPoint(u_le).to_edwards(sign) else {
        bail!("its point has no Ed25519 form (u = -1)");
    };
    ed25519_dalek::VerifyingKey::from_bytes(&edwards.compress().to_bytes())
        .map_err(|_| Error::msg("its point is not a usable Ed25519 key"))
}

enum Secret {
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    Ed25519(Box<ed25519_dalek::hazmat::ExpandedSecretKey>),
    Ecdsa(Box<EcdsaSecret>),
}

/// A private key of any signer type. It never shows in `Debug`, and its memory is
/// wiped when dropped (the RustCrypto key types zeroize themselves).
pub struct PrivateKey {
    secret: Secret,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.algorithm())
    }
}

impl PrivateKey {
    /// Reads a private key in a format pkg signs with, its type read from the key:
    /// - rsa: PEM, PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`),
    ///   unencrypted;
    /// - ecc: pkg's DER format on WEI25519 (`pkg key --create -t ecc`);
    /// - ecdsa: DER ECPrivateKey (RFC 5915) with a named curve, as
    ///   `openssl ecparam -genkey -noout -outform DER` writes it, or pkg's DER format.
    ///
    /// Errors say what the key is and never quote it.
    pub fn parse(bytes: &[u8]) -> Result<PrivateKey> {
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            return parse_private_pem(bytes);
        }
        if is_pkg_der(bytes) {
            let (curve, key) = read_pkg_der(bytes, false)?;
            return match curve {
                PkgCurve::Wei25519 => {
                    // 50 zero bytes, then the Ed25519 expanded secret: the clamped
                    // scalar (little-endian) and the nonce prefix.
                    let (pad, expanded) = key.split_at(PKG_PRIVATE_LEN - 64);
                    if pad.iter().any(|b| *b != 0) {
                        bail!("its secret is longer than an Ed25519 expanded secret");
                    }
                    let mut buf = Zeroizing::new([0u8; 64]);
                    buf.copy_from_slice(expanded);
                    let esk = ed25519_dalek::hazmat::ExpandedSecretKey::from_bytes(&buf);
                    let vk = ed25519_dalek::VerifyingKey::from(&esk);
                    Ok(PrivateKey {
                        public: PublicKey { key: Public::Ed25519(vk), fingerprint: String::new() },
                        secret: Secret::Ed25519(Box::new(esk)),
                    })
                }
                PkgCurve::Ecdsa(curve) => {
                    let n = curve.sizes().1;
                    let (pad, scalar) = key.split_at(PKG_PRIVATE_LEN - n);
                    if pad.iter().any(|b| *b != 0) {
                        bail!("its secret is longer than a {curve} scalar");
                    }
                    Ok(PrivateKey::ecdsa(EcdsaSecret::from_scalar(curve, scalar)?))
                }
            };
        }
        parse_sec1(bytes)
    }

    fn ecdsa(secret: EcdsaSecret) -> PrivateKey {
        PrivateKey {
            public: PublicKey { key: Public::Ecdsa(secret.public()), fingerprint: String::new() },
            secret: Secret::Ecdsa(Box::new(secret)),
        }
    }

    /// What the key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// Whether `public` is this key's public half.
    pub fn pairs_with(&self, public: &PublicKey) -> bool {
        self.public == *public
    }

    /// Signs `message` as a signer of this key's type does in `layout`; returns the
    /// payload pkg stores (rsa: the raw signature; ecc and ecdsa: pkg's DER), without
    /// header or trailing NUL.
    pub fn sign(&self, message: &Message, layout: TrustMode) -> Result<Vec<u8>> {
        let signed = message
            .for_signer(self.algorithm().signer(), layout)
            .ok_or_else(|| Error::msg(SignatureError::Undigested.to_string()))?;
        match &self.secret {
            Secret::Rsa(key) => {
                use rsa::signature::{SignatureEncoding, Signer};
                let sig = key.try_sign(signed).map_err(|e| Error::msg(format!("RSA signing failed: {e}")))?;
                Ok(sig.to_vec())
            }
            Secret::Ed25519(esk) => {
                let Public::Ed25519(vk) = &self.public.key else {
                    unreachable!("an Ed25519 key has an Ed25519 public half")
                };
                let sig = ed25519_dalek::hazmat::raw_sign::<sha2::Sha512>(esk, signed, vk).to_bytes();
                Ok(encode_halves(&sig[..32], &sig[32..]))
            }
            Secret::Ecdsa(key) => {
                let (r, s) = key.sign(&Sha256::digest(signed))?;
                Ok(encode_halves(&r, &s))
            }
        }
    }
}

impl PrivateKey {
    /// Signs arbitrary bytes with the key type's usual scheme ([`Algorithm::data_scheme`]):
    /// what a DSSE envelope's signature is made with (over its PAE bytes).
    pub fn sign_data(&self, data: &[u8]) -> Result<Vec<u8>> {
        match &self.secret {
            Secret::Rsa(key) => {
                use rsa::signature::{SignatureEncoding, Signer};
                let sig = key.try_sign(data).map_err(|e| Error::msg(format!("RSA signing failed: {e}")))?;
                Ok(sig.to_vec())
            }
            Secret::Ed25519(esk) => {
                let Public::Ed25519(vk) = &self.public.key else {
                    unreachable!("an Ed25519 key has an Ed25519 public half")
                };
                Ok(ed25519_dalek::hazmat::raw_sign::<sha2::Sha512>(esk, data, vk).to_bytes().to_vec())
            }
            Secret::Ecdsa(key) => {
                let Algorithm::Ecdsa(curve) = self.algorithm() else { unreachable!("an ECDSA key is on a curve") };
                let (r, s) = key.sign(&(curve.data_hash().1)(data))?;
                Ok(encode_halves(&r, &s))
            }
        }
    }
}

fn parse_private_pem(bytes: &[u8]) -> Result<PrivateKey> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let Ok(text) = std::str::from_utf8(bytes) else { bail!("it starts like PEM but is not text") };
    let text = text.trim();
    if text.contains("ENCRYPTED") {
        return Err(Error::with_help(
            "it is encrypted, which native signing cannot use",
            "sign through a signing command, or with an unencrypted key kept at mode 0600",
        ));
    }
    if text.starts_with("-----BEGIN EC PRIVATE KEY-----") {
        bail!(
            "it is an EC key in PEM, which pkg does not sign with (failed to decode private key); convert it to DER: openssl ec -in KEY -outform DER -out KEY.der"
        );
    }
    let key = match rsa::PrivateKey::from_pkcs8_pem(text) {
        Ok(k) => k,
        Err(pkcs8) => match rsa::PrivateKey::from_pkcs1_pem(text) {
            Ok(k) => k,
            Err(_) if text.starts_with("-----BEGIN PRIVATE KEY-----") => {
                let der = Zeroizing::new(pem_body(text)?);
                match pkcs8::PrivateKeyInfoRef::from_der(&der) {
                    Ok(info) if info.algorithm.oid == ID_EC_PUBLIC_KEY => bail!(
                        "it is an EC key in PKCS#8 PEM, which pkg does not sign with (failed to decode private key); convert it: openssl ec -in KEY -outform DER -out KEY.der"
                    ),
                    Ok(info) => bail!("it is a PKCS#8 key of algorithm {}, not RSA ({pkcs8})", info.algorithm.oid),
                    Err(e) => bail!("it is not a readable PKCS#8 private key ({e})"),
                }
            }
            Err(_) => bail!("it is not an RSA private key in PEM (PKCS#8 or PKCS#1)"),
        },
    };
    let public = PublicKey { key: Public::Rsa(key.to_public_key()), fingerprint: String::new() };
    Ok(PrivateKey { secret: Secret::Rsa(Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(key))), public })
}

/// An RFC 5915 ECPrivateKey in DER, with its named curve (required, as pkg requires it).
fn parse_sec1(bytes: &[u8]) -> Result<PrivateKey> {
    let key = match sec1::EcPrivateKey::from_der(bytes) {
        Ok(k) => k,
        Err(_) => {
            if pkcs8::PrivateKeyInfoRef::from_der(bytes).is_ok() {
                bail!(
                    "it is a PKCS#8 DER key, which pkg does not sign with (failed to decode private key); convert it: openssl ec -inform DER -in KEY -outform DER -out KEY.der"
                );
            }
            bail!(
                "it is none of the private key formats pkg signs with (PEM for rsa, pkg's DER for ecc, DER ECPrivateKey for ecdsa)"
            );
        }
    };
    let Some(oid) = key.parameters.and_then(|p| p.named_curve()) else {
        bail!("it is an ECPrivateKey without its named curve, which pkg requires");
    };
    let curve = Curve::from_oid(&oid)?;
    let n = curve.sizes().1;
    let secret = key.private_key;
    if secret.len() > n {
        bail!("its secret is longer than a {curve} scalar");
    }
    let mut scalar = Zeroizing::new(vec![0u8; n - secret.len()]);
    scalar.extend_from_slice(secret);
    Ok(PrivateKey::ecdsa(EcdsaSecret::from_scalar(curve, &scalar)?))
}

/// RSA PKCS#1 v1.5 with SHA-256 over `data`: how pkg's rsa signer and our data scheme
/// both sign.
fn verify_rsa(key: &rsa::PublicKey, data: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    use rsa::signature::Verifier;
    use rsa::traits::PublicKeyParts;
    if signature.len() != key.size() {
        return Err(SignatureError::Length { got: signature.len(), want: key.size() });
    }
    let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
    let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| SignatureError::Mismatch)?;
    vk.verify(data, &sig).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests;
