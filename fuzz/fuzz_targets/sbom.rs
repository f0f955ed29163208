//! An SBOM: any bytes as verify-release reads a served sbom.cdx.json, then the package
//! components it compares with the catalogue.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xtask::attest::sbom::{self, Bom};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(bom) = Bom::parse(bytes) {
        for (path, c) in bom.packages() {
            assert_eq!(c.property(sbom::PKG_PATH), Some(path));
            let _ = (c.sha256(), c.property(sbom::PKG_SUM));
        }
    }
});
