//! The signatures of a catalogue archive, checked in either trust mode as pkg's client
//! checks them, and more strictly.

use std::collections::BTreeMap;

use camino::Utf8Path;

use super::{CatalogueInfo, MAX_SIGNATURE_ENTRIES};
use crate::TrustMode;
use crate::signature::{Entry as SigEntry, Message, SignerType, check_entry_size};
use crate::trust::PublicKey;

/// A signature entry of an archive: its name, its size, and its bytes when it is no
/// larger than pkg allows.
pub(super) struct Member {
    pub(super) name: String,
    pub(super) size: usize,
    pub(super) data: Vec<u8>,
}

/// An archive's signature entries: how many of each layout, and the first ones (enough
/// to decide: more than one `signature`, or more than [`MAX_SIGNATURE_ENTRIES`]
/// `.sig`/`.pub`, is refused before any is read).
#[derive(Default)]
pub(super) struct Signatures {
    pub(super) pubkey: Vec<Member>,
    pub(super) pubkey_count: usize,
    pub(super) fingerprints: Vec<Member>,
    pub(super) fingerprints_count: usize,
}

/// pubkey mode: the `signature` entry, checked with the configured key
/// (`libpkg/pkg_repo.c`, `pkg_repo_archive_extract_check_archive`). Stricter than pkg:
/// one `signature` entry exactly (pkg concatenates several, which lets a doubled ecc
/// entry pass), its header naming the key's own type (pkg only fails later, in the
/// signer), nothing after the DER signature.
pub(super) fn check_pubkey(
    sigs: &Signatures,
    message: &Message,
    path: &Utf8Path,
    key: &PublicKey,
    info: &mut CatalogueInfo,
) -> Vec<String> {
    let one = match (sigs.pubkey_count, sigs.pubkey.first()) {
        (0, _) if sigs.fingerprints_count > 0 => {
            return vec![
                "is not signed for pubkey clients: it has only fingerprints-mode signatures (.sig/.pub entries)".into(),
            ];
        }
        (1, Some(one)) => one,
        (0, _) | (1, None) => return vec!["is not signed (no `signature` entry)".into()],
        (many, _) => {
            return vec![format!(
                "has {many} `signature` entries; pkg would read them as one signature (their bytes concatenated), so only one is allowed"
            )];
        }
    };
    if let Err(e) = check_entry_size(one.size) {
        return vec![format!("its `signature` entry: {e}")];
    }
    let entry = SigEntry::parse(&one.data);
    let signer = match entry.signer() {
        Ok(s) => s,
        Err(e) => return vec![format!("its `signature` entry: {e}")],
    };
    if !key.algorithm().signs_as(signer) {
        return vec![format!(
            "is signed as {signer}, but the public key {path} is {} (pkg fails to verify it)",
            key.algorithm()
        )];
    }
    // A key file's rsa signature carries one NUL after it; the client strips it.
    let payload = match signer {
        SignerType::Rsa => entry.payload.strip_suffix(&[0]).unwrap_or(entry.payload),
        _ => entry.payload,
    };
    match key.verify(message, signer, TrustMode::Pubkey, payload) {
        Ok(()) => {
            info.verified_by.push(key.fingerprint().to_owned());
            Vec::new()
        }
        Err(e) => vec![format!("signature checked with {path}: {e}")],
    }
}

/// fingerprints mode: `.sig`/`.pub` pairs whose `.pub` is trusted and not revoked
/// (`libpkg/pkg_repo.c`, `pkg_repo_meta_extract_signature_fingerprints`,
/// `pkg_repo_parse_sigkeys`, `pkg_repo_check_fingerprint`), in pkg's order. Stricter
/// than pkg: a repeated entry is refused (pkg keeps the last), a `.sig` without its
/// `.pub` is refused (pkg would look for meta.conf's legacy `cert`), and the two
/// entries of a pair must name the same type.
pub(super) fn check_fingerprints(
    sigs: &Signatures,
    message: &Message,
    dir: &Utf8Path,
    trusted: &BTreeMap<String, String>,
    revoked: &BTreeMap<String, String>,
    info: &mut CatalogueInfo,
) -> Vec<String> {
    let members = &sigs.fingerprints;
    if sigs.fingerprints_count == 0 {
        return vec![if sigs.pubkey_count > 0 {
            "is not signed for fingerprints clients: it has only a pubkey-mode `signature` entry".into()
        } else {
            "is not signed (no .sig/.pub entries)".into()
        }];
    }
    if sigs.fingerprints_count > MAX_SIGNATURE_ENTRIES {
        return vec![format!(
            "has {} .sig/.pub entries; pkg reads at most {MAX_SIGNATURE_ENTRIES} (too many repository signature entries)",
            sigs.fingerprints_count
        )];
    }
    let mut problems = Vec::new();
    /// By name without `.sig`/`.pub`: the two entries' bytes.
    type Pairs<'a> = BTreeMap<&'a str, (Option<&'a [u8]>, Option<&'a [u8]>)>;
    let mut pairs: Pairs = BTreeMap::new();
    for m in members {
        if let Err(e) = check_entry_size(m.size) {
            problems.push(format!("`{}`: {e}", m.name));
            continue;
        }
        let (stem, is_sig) = match m.name.strip_suffix(".sig") {
            Some(stem) => (stem, true),
            None => (&m.name[..m.name.len() - 4], false),
        };
        let pair = pairs.entry(stem).or_default();
        let slot = if is_sig { &mut pair.0 } else { &mut pair.1 };
        if slot.is_some() {
            problems.push(format!("`{}` appears twice (pkg would use the last one)", m.name));
        }
        *slot = Some(&m.data);
    }
    if !problems.is_empty() {
        return problems;
    }
    // Pairs whose .pub is trusted, checked after every pair's trust is known.
    let mut candidates = Vec::new();
    let mut untrusted = Vec::new();
    for (stem, (sig, public)) in &pairs {
        let (Some(sig), Some(public)) = (sig, public) else {
            let missing = if sig.is_none() { "sig" } else { "pub" };
            problems.push(format!("`{stem}.{missing}` is missing (each .sig needs its .pub)"));
            continue;
        };
        let (sig, public) = (SigEntry::parse(sig), SigEntry::parse(public));
        if sig.type_name != public.type_name {
            problems.push(format!(
                "`{stem}.sig` says {} but `{stem}.pub` says {} (pkg goes by the .pub)",
                sig.type_name.escape_default(),
                public.type_name.escape_default()
            ));
            continue;
        }
        let fp = crate::sha256_hex(public.payload);
        if let Some(file) = revoked.get(&fp) {
            problems.push(format!(
                "`{stem}.pub` has fingerprint {fp}, which is revoked ({file}; pkg: At least one of the certificates has been revoked)"
            ));
            continue;
        }
        if trusted.contains_key(&fp) {
            candidates.push((*stem, sig, public, fp));
        } else {
            untrusted.push(fp);
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    if candidates.is_empty() {
        return vec![format!(
            "no trusted certificate: fingerprint {} is not in {dir}/trusted (pkg: No trusted public keys found)",
            untrusted.join(", ")
        )];
    }
    for (stem, sig, public, fp) in candidates {
        let signer = match public.signer() {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("`{stem}.pub`: {e}"));
                continue;
            }
        };
        let key = match PublicKey::parse(public.payload) {
            Ok(k) if k.algorithm().signs_as(signer) => k,
            Ok(k) => {
                problems.push(format!("`{stem}.pub` is typed {signer} but holds {} key", k.algorithm()));
                continue;
            }
            Err(e) => {
                problems.push(format!("`{stem}.pub` is trusted but not a usable key: {e:#}"));
                continue;
            }
        };
        match key.verify(message, signer, TrustMode::Fingerprints, sig.payload) {
            Ok(()) => info.verified_by.push(fp),
            Err(e) => problems.push(format!("`{stem}.sig` (key {fp}): {e}")),
        }
    }
    problems
}
