//! VuXML: any bytes as `pkg audit -f` would read them, then matched against packages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pkgrepo::vuxml;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(entries) = vuxml::parse(bytes) {
        for e in &entries {
            assert!(e.packages.first().is_some_and(|p| !p.names.is_empty()), "kept only with a named package");
            for p in &e.packages {
                for r in &p.ranges {
                    assert!(r.bounds.len() <= 2);
                    let _ = r.fixed_in();
                }
                for name in &p.names {
                    let _ = e.affects(name, "1.0");
                    let _ = vuxml::fnmatch(name.as_bytes(), b"colibri");
                }
            }
        }
    }
});
