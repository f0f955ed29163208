//! pkg's version ordering on any two strings (the bytes split at the first NUL).
#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use pkgrepo::version::compare;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let (a, b) = text.split_once('\0').unwrap_or((text, "1.0"));
    assert_eq!(compare(a, a), Ordering::Equal);
    let _ = compare(a, b);
    let _ = compare(b, a);
});
