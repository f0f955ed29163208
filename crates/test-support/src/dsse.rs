//! DSSE envelopes checked and made independently of the xtask: the PAE built here, the
//! signatures by openssl, the standard tooling (Python `securesystemslib`'s DSSE
//! verifier); for the tests of verify-release and the provenance.

use std::fs;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use camino::Utf8Path;

/// `DSSEv1 LEN(type) type LEN(body) body`, as the DSSE protocol defines it.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// An envelope file's JSON.
pub fn read(path: &Utf8Path) -> serde_json::Value {
    serde_json::from_str(fs::read_to_string(path).unwrap().trim()).unwrap()
}

/// The decoded payload.
pub fn payload(envelope: &serde_json::Value) -> Vec<u8> {
    STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap()
}

/// `openssl dgst -SHA -sign KEY` over `data` (RSA PKCS#1 v1.5, ECDSA DER; `sha` empty
/// for Ed25519, signed raw by `pkeyutl -rawin`).
pub fn openssl_sign(key: &Utf8Path, sha: &str, data: &[u8], scratch: &Utf8Path) -> Vec<u8> {
    fs::create_dir_all(scratch).unwrap();
    let input = scratch.join("to-sign.bin");
    let sig = scratch.join("made.sig");
    fs::write(&input, data).unwrap();
    let mut cmd = Command::new("openssl");
    if sha.is_empty() {
        cmd.args(["pkeyutl", "-sign", "-rawin", "-inkey", key.as_str(), "-in", input.as_str(), "-out", sig.as_str()]);
    } else {
        cmd.args(["dgst", &format!("-{sha}"), "-sign", key.as_str(), "-out", sig.as_str(), input.as_str()]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "openssl signing failed: {}", String::from_utf8_lossy(&out.stderr));
    fs::read(sig).unwrap()
}

/// Whether `openssl` verifies `signature` over `data` with the PEM public key (as
/// [`openssl_sign`] makes them).
pub fn openssl_verifies(pubkey: &Utf8Path, sha: &str, data: &[u8], signature: &[u8], scratch: &Utf8Path) -> bool {
    fs::create_dir_all(scratch).unwrap();
    let input = scratch.join("signed.bin");
    let sig = scratch.join("given.sig");
    fs::write(&input, data).unwrap();
    fs::write(&sig, signature).unwrap();
    let mut cmd = Command::new("openssl");
    if sha.is_empty() {
        cmd.args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", pubkey.as_str(), "-in", input.as_str()])
            .args(["-sigfile", sig.as_str()]);
    } else {
        cmd.args(["dgst", &format!("-{sha}"), "-verify", pubkey.as_str(), "-signature", sig.as_str(), input.as_str()]);
    }
    let out = cmd.output().unwrap();
    out.status.success()
}

/// Whether the envelope's first signature verifies over its PAE, by openssl.
pub fn openssl_verifies_envelope(
    envelope: &serde_json::Value,
    pubkey: &Utf8Path,
    sha: &str,
    scratch: &Utf8Path,
) -> bool {
    let message = pae(envelope["payloadType"].as_str().unwrap(), &payload(envelope));
    let sig = STANDARD.decode(envelope["signatures"][0]["sig"].as_str().unwrap()).unwrap();
    openssl_verifies(pubkey, sha, &message, &sig, scratch)
}

/// The envelope with `payload` signed again by the RSA `key` (PKCS#1 v1.5, SHA-256) as
/// its one signature, as one JSON line.
pub fn resign(envelope: &serde_json::Value, payload: &[u8], key: &Utf8Path, scratch: &Utf8Path) -> String {
    let payload_type = envelope["payloadType"].as_str().unwrap();
    let sig = openssl_sign(key, "sha256", &pae(payload_type, payload), scratch);
    let out = serde_json::json!({
        "payload": STANDARD.encode(payload),
        "payloadType": payload_type,
        "signatures": [{ "keyid": envelope["signatures"][0]["keyid"], "sig": STANDARD.encode(sig) }],
    });
    format!("{out}\n")
}

/// Verifies the envelope file with Python's `securesystemslib` (the in-toto project's
/// DSSE implementation), trusting the PEM public key under the envelope's key id with
/// `scheme` (`rsa-pkcs1v15-sha256`, `ecdsa-sha2-nistp384`, `ed25519`). Returns its
/// verdict and what it printed.
pub fn securesystemslib_verifies(envelope: &Utf8Path, pubkey: &Utf8Path, scheme: &str) -> (bool, String) {
    const SCRIPT: &str = r#"
import json, sys
from securesystemslib.dsse import Envelope
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.signer import SSlibKey
envelope = Envelope.from_dict(json.loads(open(sys.argv[1]).read()))
keyid = next(iter(envelope.signatures))
public = load_pem_public_key(open(sys.argv[2], "rb").read())
key = SSlibKey.from_crypto(public, keyid=keyid, scheme=sys.argv[3])
accepted = envelope.verify([key], 1)
print("verified by", sorted(accepted))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, envelope.as_str(), pubkey.as_str(), scheme])
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Validates a CycloneDX JSON file against the official 1.6 JSON schema, with the
/// CycloneDX project's own Python library (`cyclonedx-python-lib`, which ships the
/// schema). Returns the errors it reports (empty: valid).
pub fn cyclonedx_errors(sbom: &Utf8Path) -> String {
    const SCRIPT: &str = r#"
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read(), all_errors=True)
if errors:
    for e in errors:
        print(e)
    sys.exit(1)
"#;
    let out = Command::new("python3").args(["-c", SCRIPT, sbom.as_str()]).output().expect("python3 runs");
    if out.status.success() {
        String::new()
    } else {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}
