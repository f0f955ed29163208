//! What a release proves about itself: its SBOM (CycloneDX 1.6 JSON, [`sbom`]), its
//! provenance (an in-toto v1 Statement with a SLSA v1 provenance predicate,
//! [`provenance`]) and the DSSE envelope that signs the provenance with the release key
//! ([`dsse`]). `sign` writes them beside the release manifest and into the repository,
//! `publish` serves them with it, `verify-release` checks them (docs/supply-chain.md).

pub mod dsse;
pub mod provenance;
pub mod sbom;

/// The SBOM's file name, beside the release manifest and at the top of the repository.
pub const SBOM_FILE: &str = "sbom.cdx.json";
/// The provenance's file name: the DSSE envelope, one JSON line (the `.intoto.jsonl`
/// convention of SLSA's tools).
pub const PROVENANCE_FILE: &str = "provenance.intoto.jsonl";

/// Percent-encodes what is not unreserved (RFC 3986), for purl parts and URIs.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
