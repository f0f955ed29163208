//! Catalogue archives: any bytes as a downloaded `data.pkg` (every compression, the
//! tar inside, its entries), then the signature check a client makes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pkgrepo::archive::Archive;
use pkgrepo::signature::{Entry, Message};

fuzz_target!(|bytes: &[u8]| {
    let Ok(archive) = Archive::parse(bytes) else { return };
    for e in &archive.entries {
        let entry = Entry::parse(&e.data);
        let _ = entry.signer();
    }
    if let Some(inner) = archive.find("data").next() {
        let _ = Message::of(&inner.data);
    }
    // Whatever was read writes back and reads again the same.
    if let Ok(again) = archive.to_bytes() {
        let back = Archive::parse(&again).expect("an archive this crate wrote reads back");
        assert_eq!(back.entries, archive.entries);
    }
});
