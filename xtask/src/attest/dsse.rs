//! DSSE envelopes (Dead Simple Signing Envelope, v1.0): the signature is over the PAE
//! (pre-authentication encoding) of the payload type and the payload, never over the
//! JSON, so what is verified is exactly what is read. Signed through pkgrepo's
//! [`Signer`] with the release key; each key type's scheme is
//! [`pkgrepo::keys::Algorithm::data_scheme`].

use anyhow::{Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use pkgrepo::keys::PublicKey;
use pkgrepo::sign::Signer;

/// The payload type of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// The most an envelope may weigh when read (a statement listing every package of a
/// large repository stays far below it).
pub const MAX_ENVELOPE: u64 = 64 << 20;

/// The most signatures an envelope read may carry.
const MAX_SIGNATURES: usize = 16;

/// A DSSE envelope, as its JSON spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The payload, base64 (standard alphabet, padded).
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The SHA-256 (hex) of the public key file's bytes: the key's fingerprint, as
    /// fingerprints-mode pkg clients name keys.
    #[serde(default)]
    pub keyid: String,
    /// The signature over the PAE, base64.
    pub sig: String,
}

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in
/// ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `payload` with `signer`. The key id is the SHA-256 of the public key file.
    pub fn sign(payload_type: &str, payload: &[u8], signer: &dyn Signer) -> Result<Envelope> {
        let signed = signer.sign_data(&pae(payload_type, payload)).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Envelope {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_owned(),
            signatures: vec![Signature {
                keyid: crate::fingerprint::sha256_bytes(&signed.cert),
                sig: STANDARD.encode(&signed.signature),
            }],
        })
    }

    /// Reads an envelope from untrusted bytes: one JSON object (a `.intoto.jsonl` file
    /// holds it on one line; surrounding whitespace is allowed), size-limited.
    pub fn parse(bytes: &[u8]) -> Result<Envelope> {
        if bytes.len() as u64 > MAX_ENVELOPE {
            bail!("the envelope is {} bytes; at most {MAX_ENVELOPE} are read", bytes.len());
        }
        let text = std::str::from_utf8(bytes).map_err(|e| anyhow::anyhow!("the envelope is not UTF-8: {e}"))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let (Some(line), None) = (lines.next(), lines.next()) else {
            bail!("the envelope file must hold exactly one JSON line");
        };
        let envelope: Envelope =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("the envelope is not a DSSE envelope: {e}"))?;
        if envelope.signatures.is_empty() {
            bail!("the envelope carries no signature");
        }
        if envelope.signatures.len() > MAX_SIGNATURES {
            bail!("the envelope carries {} signatures; at most {MAX_SIGNATURES} are read", envelope.signatures.len());
        }
        Ok(envelope)
    }

    /// The payload's bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        STANDARD.decode(&self.payload).map_err(|e| anyhow::anyhow!("the payload is not base64: {e}"))
    }

    /// Whether one of the signatures verifies with `key` over the PAE. The error says
    /// why none did.
    pub fn verify(&self, key: &PublicKey) -> Result<()> {
        let payload = self.payload_bytes()?;
        let message = pae(&self.payload_type, &payload);
        let mut why = Vec::new();
        for (i, s) in self.signatures.iter().enumerate() {
            let sig = match STANDARD.decode(&s.sig) {
                Ok(sig) => sig,
                Err(e) => {
                    why.push(format!("signature {}: not base64 ({e})", i + 1));
                    continue;
                }
            };
            match key.verify_data(&message, &sig) {
                Ok(()) => return Ok(()),
                Err(e) => why.push(format!("signature {} (keyid {}): {e}", i + 1, short(&s.keyid))),
            }
        }
        bail!(
            "no signature verifies with the {} key {} ({})",
            key.algorithm(),
            short(key.fingerprint()),
            why.join("; ")
        )
    }

    /// The envelope as its file holds it: one line of JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("an envelope serializes");
        line.push(b'\n');
        line
    }
}

/// The first 16 characters of a key id (any text: it comes from the envelope).
fn short(id: &str) -> &str {
    id.char_indices().nth(16).map_or(id, |(end, _)| &id[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_id_of_any_text_is_shortened_on_a_character_boundary() {
        assert_eq!(short("0123456789abcdef0123"), "0123456789abcdef");
        assert_eq!(short("ϕϕϕϕϕϕϕϕϕϕϕϕϕϕϕϕϕϕ"), "ϕϕϕϕϕϕϕϕϕϕϕϕϕϕϕϕ");
        assert_eq!(short("ab"), "ab");
    }

    #[test]
    fn pae_is_as_the_dsse_spec_shows() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn an_envelope_is_one_line() {
        assert!(Envelope::parse(b"{}\n{}\n").unwrap_err().to_string().contains("exactly one"));
        let e = Envelope::parse(br#"{"payload":"aGk=","payloadType":"t","signatures":[{"keyid":"","sig":"AA=="}]}"#)
            .unwrap();
        assert_eq!(e.payload_bytes().unwrap(), b"hi");
        assert!(Envelope::parse(br#"{"payload":"aGk=","payloadType":"t","signatures":[]}"#).is_err());
    }
}
