//! The catalogue entries: any bytes as `data` and as `packagesite.yaml`, read whole and
//! as a stream that ends its reads at every few bytes (the two must agree), and each
//! entry's `sum` and ABI as a client's checks read them.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use pkgrepo::CatalogueKind;
use pkgrepo::catalogue::{Catalogue, abi_matches};
use pkgrepo::sum::Sum;

/// A reader that hands out at most 7 bytes a call, as a pipe might.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fuzz_target!(|bytes: &[u8]| {
    for kind in [CatalogueKind::Data, CatalogueKind::Packagesite] {
        let whole = Catalogue::parse(kind, bytes);
        let streamed = Catalogue::read(kind, Trickle(bytes));
        assert_eq!(whole.is_ok(), streamed.is_ok(), "{kind:?}");
        let (Ok(c), Ok(s)) = (whole, streamed) else { continue };
        assert!(c.entries().eq(s.entries()), "{kind:?}");
        for p in c.packages() {
            if let Ok(sum) = Sum::parse(p.sum) {
                assert_eq!(Sum::parse(&sum.text()).ok(), Some(sum));
            }
            let _ = abi_matches(p.abi, "FreeBSD:15:amd64");
        }
    }
});
