//! pkgrepo's integration tests: one binary, run against repositories the real pkg 2.8.4
//! made (tests/data, see its README) through the public API only.

mod samples;
mod sign;
mod signers;
mod tamper;

use std::fs;

use camino::{Utf8Path, Utf8PathBuf};
use pkgrepo::trust::Trust;
use pkgrepo::verify::{self, Options, Report};

/// `tests/data/NAME`.
pub fn data(name: &str) -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// The test key's public half, and the key it is made from.
pub fn pubkey() -> Utf8PathBuf {
    data("pkg-repo/keys/test-repo.pub")
}

/// The fingerprint of `pubkey()` (tests/data/pkg-repo/README.md).
pub const TEST_FP: &str = "9f458105021fe487f134ba26d87a755969bb8cd9c29db888144e9685000a981a";

pub fn pubkey_trust() -> Trust {
    Trust::pubkey(&pubkey()).unwrap()
}

pub fn fingerprints_trust() -> Trust {
    Trust::fingerprints(&data("pkg-repo/fingerprints")).unwrap()
}

/// A temporary directory as a UTF-8 path.
pub struct Scratch {
    _dir: tempfile::TempDir,
    pub path: Utf8PathBuf,
}

pub fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let path = Utf8PathBuf::from_path_buf(dir.path().canonicalize().unwrap()).unwrap();
    Scratch { _dir: dir, path }
}

/// Copies a directory tree; symlinks stay symlinks.
pub fn copy_tree(from: &Utf8Path, to: &Utf8Path) {
    fs::create_dir_all(to).unwrap();
    for entry in from.read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(entry.path(), &dst);
        } else {
            fs::copy(entry.path(), &dst).unwrap();
        }
    }
}

/// A copy of the sample repository `tests/data/NAME` in a scratch directory.
pub fn copy_sample(name: &str) -> (Scratch, Utf8PathBuf) {
    let s = scratch();
    let repo = s.path.join("repo");
    copy_tree(&data(name), &repo);
    (s, repo)
}

/// Verifies `repo` with everything checked and every SHA-256 computed.
pub fn check(repo: &Utf8Path, trust: &Trust) -> Report {
    verify::verify(repo, &Options { sha256: true, threads: 2, ..Options::new(trust, "FreeBSD:15:amd64") }).unwrap()
}

/// The problems as `subject: message` lines, for assertions that print them.
pub fn lines(report: &Report) -> Vec<String> {
    report.problems.iter().map(|p| p.to_string()).collect()
}
