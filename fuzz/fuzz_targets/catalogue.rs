//! The catalogue entries: any bytes as `data` and as `packagesite.yaml`, read whole and
//! as a stream that ends its reads at every few bytes (the two must agree), and each
//! entry's `sum` and ABI as a client's checks read them. And the two files read
//! together (the bytes as `packagesite.yaml` with the `data` pkg would write for it,
//! with that `data` one byte changed, and as both): whenever that reads, it must be
//! what each file gives alone.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use pkgrepo::CatalogueKind;
use pkgrepo::catalogue::{Catalogue, abi_matches, twin};
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

/// Reads `data` and `lines` together; when that works, it must be what each gives alone.
fn together(data: &[u8], lines: &[u8], block: u64) {
    let Ok(c) = twin::read_pair(Trickle(data), Trickle(lines), block) else { return };
    for (kind, bytes) in [(CatalogueKind::Data, data), (CatalogueKind::Packagesite, lines)] {
        let alone = Catalogue::parse(kind, bytes).expect("read together, so each reads alone");
        assert!(alone.entries().eq(c.entries()), "{kind:?}");
    }
}

fuzz_target!(|bytes: &[u8]| {
    let block = 1 + u64::from(bytes.first().copied().unwrap_or(0) % 64);
    let joined: Vec<u8> =
        bytes.strip_suffix(b"\n").unwrap_or(bytes).iter().map(|&b| if b == b'\n' { b',' } else { b }).collect();
    let mut data = [&b"{\"groups\":[],\"packages\":["[..], &joined, b"]}"].concat();
    together(&data, bytes, block);
    let at = usize::from(bytes.last().copied().unwrap_or(0)) * 7 % data.len();
    data[at] ^= 1;
    together(&data, bytes, block);
    together(bytes, bytes, block);

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
