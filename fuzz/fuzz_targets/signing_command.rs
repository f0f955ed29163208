//! A signing command's answer: any bytes as what it printed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pkgrepo::keys::PublicKey;
use pkgrepo::signing_command::parse_response;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(signed) = parse_response(bytes) {
        assert!(!signed.signature.is_empty() && !signed.cert.is_empty());
        let _ = PublicKey::parse(&signed.cert);
    }
});
