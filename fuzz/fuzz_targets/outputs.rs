//! Stage outputs as state.json and a bundle's manifest carry them: any bytes read as
//! `Outputs`. What is accepted is compact JSON text of the same value, and reads back as
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xtask::outputs::Outputs;

fuzz_target!(|bytes: &[u8]| {
    let Ok(outputs) = serde_json::from_slice::<Outputs>(bytes) else { return };
    let text = outputs.text().expect("outputs read from bytes are in memory");
    assert!(text.len() <= bytes.len(), "compacting never adds");
    // A number beyond f64 is well-formed JSON that no value holds: then the compact
    // text is refused the same way.
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) => {
            let same: serde_json::Value = serde_json::from_str(text).expect("the compact text is JSON");
            assert_eq!(same, value, "the compact text is the same value");
        }
        Err(_) => assert!(serde_json::from_str::<serde_json::Value>(text).is_err()),
    }
    let again: Outputs = serde_json::from_str(text).expect("the compact text reads back");
    assert_eq!(again, outputs, "compact text reads back as itself");
});
