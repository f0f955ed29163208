//! Keys of every type: any bytes as a public key (PEM RSA, pkg's DER, DER
//! SubjectPublicKeyInfo) and as a private key (PEM RSA, pkg's DER, DER ECPrivateKey).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pkgrepo::TrustMode;
use pkgrepo::keys::{PrivateKey, PublicKey};
use pkgrepo::signature::Message;

fuzz_target!(|bytes: &[u8]| {
    let public = PublicKey::parse(bytes);
    if let Ok(key) = PrivateKey::parse(bytes) {
        if let Ok(public) = &public {
            let _ = key.pairs_with(public);
        }
        let m = Message::of(bytes);
        for layout in [TrustMode::Pubkey, TrustMode::Fingerprints] {
            let _ = key.sign(&m, layout);
        }
    }
});
