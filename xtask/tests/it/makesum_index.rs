//! makesum's index of verified distfiles: a distfile verified once is not read again
//! while its identity holds, and one rewritten in place is caught even with its
//! modification time set back (through its change time).

use std::fs;
use std::io::Write;

use super::makesum::{Fake, sha256};

#[test]
fn a_distfile_verified_before_is_not_read_again_until_it_changes_even_with_its_mtime_set_back() {
    let f = Fake::new("http://127.0.0.1:9", &[("alpha", "1.0.0"), ("beta", "2.0.0")]);
    let [alpha, beta] = &f.crates[..] else { unreachable!() };
    fs::create_dir_all(f.distdir.join("rust/crates")).unwrap();
    for c in [alpha, beta] {
        fs::write(f.in_distdir(c), &c.bytes).unwrap();
    }
    f.makesum(&["--offline"]).success().stderr_has("2 already in place (0 unchanged since verified, not read)");
    let index = fs::read_to_string(f.distdir.join(".verified-distfiles.json")).unwrap();
    assert!(index.contains(&sha256(&alpha.bytes)) && index.contains(&sha256(&beta.bytes)), "{index}");
    f.makesum(&["--offline"]).success().stderr_has("2 already in place (2 unchanged since verified, not read)");

    // alpha rewritten in place: same size, same inode, its modification time set back
    // to what was verified. Only its change time tells.
    let file = f.in_distdir(alpha);
    let verified = fs::metadata(&file).unwrap();
    let mut bad = alpha.bytes.clone();
    bad[10] ^= 0xff;
    let mut w = fs::OpenOptions::new().write(true).open(&file).unwrap();
    w.write_all(&bad).unwrap();
    w.set_modified(verified.modified().unwrap()).unwrap();
    drop(w);
    let now = fs::metadata(&file).unwrap();
    assert_eq!((now.len(), now.modified().unwrap()), (verified.len(), verified.modified().unwrap()));
    f.makesum(&["--offline"])
        .code_is(1)
        .stderr_has(&format!(
            "has SHA-256 {}, but {} says {}",
            sha256(&bad),
            f.port.join("Cargo.lock"),
            sha256(&alpha.bytes)
        ))
        .stderr_has("1 of 2 distfiles could not be had");
    assert!(!file.exists(), "the rewritten distfile was moved aside");

    // A damaged index is rebuilt, never trusted.
    fs::write(&file, &alpha.bytes).unwrap();
    fs::write(f.distdir.join(".verified-distfiles.json"), "{\"schema\":1,\"files\":[[").unwrap();
    f.makesum(&["--offline"]).success().stderr_has("2 already in place (0 unchanged since verified, not read)");
    f.makesum(&["--offline"]).success().stderr_has("2 already in place (2 unchanged since verified, not read)");
}
