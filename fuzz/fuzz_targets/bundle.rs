//! Bundles: any bytes as a bundle handed to `unbundle` (the manifest, its paths and
//! limits, every entry's header, sizes and digests, what follows the archive), read into
//! a fresh directory. Whatever is accepted must be exactly what the manifest lists, and
//! nothing may land outside the directory.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use camino::Utf8PathBuf;
use libfuzzer_sys::fuzz_target;

static N: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|bytes: &[u8]| {
    let base = Utf8PathBuf::from_path_buf(std::env::temp_dir()).expect("a UTF-8 temporary directory");
    let root = base.join(format!("bundle-fuzz-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let dest = root.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let limits = bundle::Limits { manifest_bytes: 64 << 10, files: 64, total_bytes: 1 << 20 };
    let result = bundle::read(bytes, &dest, &limits, |_| Ok(()));
    if let Ok(manifest) = &result {
        for f in &manifest.files {
            let got = std::fs::metadata(dest.join(&f.path)).expect("every listed file is written");
            assert_eq!(got.len(), f.size);
        }
    }
    // Nothing beside `dest`.
    let beside: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, ["dest"], "{result:?}");
    std::fs::remove_dir_all(&root).unwrap();
});
