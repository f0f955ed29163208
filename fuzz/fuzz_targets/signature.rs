//! Signature entries: any bytes as a `signature`, `.sig` or `.pub` entry, its header,
//! pkg's DER signature encoding, and a verification with each kind of key.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pkgrepo::TrustMode;
use pkgrepo::keys::PublicKey;
use pkgrepo::signature::{Entry, Message, decode_halves, encode_halves};

/// The samples' public keys: rsa, ecc, ecdsa.
fn keys() -> &'static [PublicKey] {
    static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            &include_bytes!("../../crates/pkgrepo/tests/data/pkg-repo/keys/test-repo.pub")[..],
            include_bytes!("../../crates/pkgrepo/tests/data/pkg-repo-2/keys/ecc-repo.pub"),
            include_bytes!("../../crates/pkgrepo/tests/data/pkg-repo-2/keys/ecdsa-repo.pub"),
        ]
        .iter()
        .map(|b| PublicKey::parse(b).expect("a sample key"))
        .collect()
    })
}

fuzz_target!(|bytes: &[u8]| {
    let entry = Entry::parse(bytes);
    let message = Message::of(b"data");
    for half in [32, 48, 66] {
        if let Ok((r, s)) = decode_halves(entry.payload, half) {
            assert_eq!(decode_halves(&encode_halves(&r, &s), half).ok(), Some((r, s)));
        }
    }
    if let Ok(signer) = entry.signer() {
        for key in keys() {
            for layout in [TrustMode::Pubkey, TrustMode::Fingerprints] {
                let _ = key.verify(&message, signer, layout, entry.payload);
            }
        }
    }
});
