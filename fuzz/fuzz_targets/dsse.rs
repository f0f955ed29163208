//! A provenance file: any bytes as verify-release reads a served envelope, its payload
//! and the in-toto statement inside, then checked with a key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xtask::attest::dsse::Envelope;
use xtask::attest::provenance::Statement;

const KEY: &[u8] = include_bytes!("../../crates/pkgrepo/tests/data/pkg-repo-2/keys/ecc-repo.pub");

fuzz_target!(|bytes: &[u8]| {
    if let Ok(envelope) = Envelope::parse(bytes) {
        if let Ok(key) = pkgrepo::keys::PublicKey::parse(KEY) {
            let _ = envelope.verify(&key);
        }
        if let Ok(payload) = envelope.payload_bytes() {
            if let Ok(statement) = Statement::parse(&payload) {
                let _ = statement.digests();
            }
        }
    }
    if let Ok(statement) = Statement::parse(bytes) {
        let _ = statement.digests();
    }
});
