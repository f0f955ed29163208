//! meta.conf and fingerprint trust files: any bytes as the UCL pkg reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pkgrepo::meta::{MetaConf, fingerprint_file, parse_fingerprint};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(meta) = MetaConf::parse(text) {
        for kind in pkgrepo::CATALOGUES {
            let (archive, inner) = meta.catalogue(kind);
            assert!(!archive.contains('/') && !inner.contains('/'));
        }
    }
    if let Ok(fp) = parse_fingerprint(text) {
        assert_eq!(parse_fingerprint(&fingerprint_file(&fp)).ok(), Some(fp));
    }
});
