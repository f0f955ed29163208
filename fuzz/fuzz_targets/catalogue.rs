//! The catalogue entries: any bytes as `data` and as `packagesite.yaml`, and each
//! entry's `sum` and ABI as a client's checks read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pkgrepo::CatalogueKind;
use pkgrepo::catalogue::{Catalogue, abi_matches};
use pkgrepo::sum::Sum;

fuzz_target!(|bytes: &[u8]| {
    for kind in [CatalogueKind::Data, CatalogueKind::Packagesite] {
        let Ok(c) = Catalogue::parse(kind, bytes) else { continue };
        for p in c.packages() {
            if let Ok(sum) = Sum::parse(p.sum) {
                assert_eq!(Sum::parse(&sum.text()).ok(), Some(sum));
            }
            let _ = abi_matches(p.abi, "FreeBSD:15:amd64");
        }
    }
});
