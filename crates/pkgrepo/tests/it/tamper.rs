//! Changed repositories are refused, every problem named with its file: package bytes,
//! sizes, missing files, catalogues edited after signing, a bad meta.conf, escaping
//! paths. And the caller can stop a verification.

use std::fs;

use pkgrepo::archive::Archive;
use pkgrepo::verify::{self, Options, ProblemKind, check_download};

use crate::{check, copy_sample, lines, pubkey_trust};

const PKG: &str = "All/colibri-0.9.0.pkg";

#[test]
fn flipped_truncated_or_missing_package_bytes_are_refused() {
    let trust = pubkey_trust();
    let (_s, repo) = copy_sample("pkg-repo/production-pubkey");
    let mut bytes = fs::read(repo.join(PKG)).unwrap();
    bytes[1000] ^= 1;
    fs::write(repo.join(PKG), &bytes).unwrap();
    let r = check(&repo, &trust);
    assert_eq!(r.problems.len(), 1, "{:?}", lines(&r));
    assert!(
        lines(&r)[0].starts_with(&format!("{PKG}: does not match the catalogue's sum 2$f56x1t1g")),
        "{:?}",
        lines(&r)
    );
    assert!(r.packages().len() == 0 && !r.only_signature_problems());

    fs::write(repo.join(PKG), &bytes[..1700]).unwrap();
    assert_eq!(lines(&check(&repo, &trust)), [format!("{PKG}: is 1700 bytes but the catalogue says 1769 (pkgsize)")]);

    fs::remove_file(repo.join(PKG)).unwrap();
    assert_eq!(lines(&check(&repo, &trust)), [format!("{PKG}: is listed in the catalogue but missing")]);
}

#[test]
fn a_catalogue_edited_after_signing_fails_its_signature() {
    let (_s, repo) = copy_sample("pkg-repo/production-pubkey");
    let path = repo.join("data.pkg");
    let mut archive = Archive::read(&path).unwrap();
    let data = archive.entries.iter_mut().find(|e| e.name == "data").unwrap();
    data.data =
        String::from_utf8(data.data.clone()).unwrap().replace("\"pkgsize\":1769", "\"pkgsize\":1770").into_bytes();
    archive.write(&path).unwrap();
    let r = check(&repo, &pubkey_trust());
    let found = lines(&r);
    assert!(
        found.iter().any(|l| l.starts_with("data.pkg: signature checked with ")
            && l.ends_with("(the catalogue changed after signing, or another key signed it)")),
        "{found:?}"
    );
    assert!(found.iter().any(|l| l.starts_with("packagesite.pkg: lists other packages than data.pkg")), "{found:?}");
    assert!(r.problems.iter().any(|p| p.kind == ProblemKind::Content));

    // A truncated signature says so.
    let (_s, repo) = copy_sample("pkg-repo/production-pubkey");
    let path = repo.join("packagesite.pkg");
    let mut archive = Archive::read(&path).unwrap();
    archive.entries[0].data.truncate(300);
    archive.write(&path).unwrap();
    let found = lines(&check(&repo, &pubkey_trust()));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("the signature is 300 bytes but the key makes 512-byte signatures"), "{found:?}");
}

#[test]
fn a_bad_meta_conf_and_escaping_paths_are_refused() {
    let (_s, repo) = copy_sample("pkg-repo/unsigned");
    fs::write(repo.join("meta.conf"), "version = 7;\n").unwrap();
    let found = lines(&check(&repo, &pubkey_trust()));
    assert!(found.contains(&"meta: differs from meta.conf (it must be a byte-identical copy)".to_owned()), "{found:?}");
    assert!(
        found.contains(&"meta.conf: is not usable: version 7 is not one pkg reads (1 or 2)".to_owned()),
        "{found:?}"
    );

    let (_s, repo) = copy_sample("pkg-repo/unsigned");
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        let path = repo.join(archive);
        let mut a = Archive::read(&path).unwrap();
        let e = a.entries.iter_mut().find(|e| e.name == inner).unwrap();
        e.data = String::from_utf8(e.data.clone()).unwrap().replace(PKG, "../../etc/passwd").into_bytes();
        a.write(&path).unwrap();
    }
    let found = lines(&check(&repo, &pubkey_trust()));
    assert!(
        found.contains(&"data.pkg: colibri-0.9.0: path `../../etc/passwd` escapes the repository".to_owned()),
        "{found:?}"
    );
}

#[test]
fn the_caller_can_stop_verification_with_its_own_error() {
    let trust = pubkey_trust();
    let (_s, repo) = copy_sample("pkg-repo/production-pubkey");
    let stop = || Err("interrupted by SIGINT (Ctrl-C)".into());
    let err = verify::verify(&repo, &Options { stop: &stop, ..Options::new(&trust, "FreeBSD:15:amd64") }).unwrap_err();
    assert!(err.is_stopped());
    assert_eq!(format!("{err:#}"), "interrupted by SIGINT (Ctrl-C)");
    // Without the package files there is nothing to stop.
    let quick = Options { stop: &stop, files: false, ..Options::new(&trust, "FreeBSD:15:amd64") };
    assert!(verify::verify(&repo, &quick).unwrap().ok());
}

#[test]
fn a_download_is_checked_against_its_catalogue_entry() {
    let (_s, repo) = copy_sample("pkg-repo/production-pubkey");
    let sum =
        "2$f56x1t1goeouogr1qr4ke1fh6z3yhtnzz6gzqxediqrbmejq5g5z563q91r5byt55jc89jfx5xa4krhbotsiedko53ccdbpmdcxidhy";
    let path = repo.join(PKG);
    check_download(&path, 1769, sum).unwrap();
    assert_eq!(check_download(&path, 1770, sum).unwrap_err(), "is 1769 bytes but the catalogue says 1770 (pkgsize)");
    let sha = "3f0080a2f497472d8974f5647b3f154d76834cc4636949bcbd3f64b3278bff32";
    check_download(&path, 1769, sha).unwrap();
    let other = format!("{}0", &sha[..63]);
    assert!(check_download(&path, 1769, &other).unwrap_err().starts_with("does not match the catalogue's sum"));
    assert!(check_download(&path, 1769, "1$abc").unwrap_err().contains("hash type 1"));
}

#[test]
fn digests_the_caller_knows_stand_only_for_a_regular_file_of_the_listed_size() {
    let trust = pubkey_trust();
    let (_s, repo) = copy_sample("pkg-repo/production-pubkey");
    let good = verify::verify(&repo, &Options { threads: 1, ..Options::new(&trust, "FreeBSD:15:amd64") }).unwrap();
    let digests = good.digests().find(|(path, _)| *path == PKG).unwrap().1.clone();
    let asked = std::sync::Mutex::new(0usize);
    let known = |path: &str, meta: &std::fs::Metadata| {
        *asked.lock().unwrap() += 1;
        (path == PKG && meta.is_file()).then(|| digests.clone())
    };
    let with_known = |repo: &camino::Utf8Path| {
        verify::verify(repo, &Options { known: Some(&known), threads: 1, ..Options::new(&trust, "FreeBSD:15:amd64") })
            .unwrap()
    };
    // What the caller knows (from the file's identity, its business) is taken as is:
    // the file is not read again.
    let mut bytes = fs::read(repo.join(PKG)).unwrap();
    bytes[1000] ^= 1;
    fs::write(repo.join(PKG), &bytes).unwrap();
    assert!(with_known(&repo).ok());
    assert!(*asked.lock().unwrap() > 0);
    // Never for something that is not a regular file of the listed size: a FIFO is
    // refused (not waited on), a symlink out of the repository too, a short file read.
    fs::remove_file(repo.join(PKG)).unwrap();
    let fifo = std::ffi::CString::new(repo.join(PKG).as_str()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert_eq!(lines(&with_known(&repo)), [format!("{PKG}: is not a regular file")]);
    fs::remove_file(repo.join(PKG)).unwrap();
    let outside = repo.parent().unwrap().join("outside.pkg");
    fs::write(&outside, &bytes).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join(PKG)).unwrap();
    assert!(lines(&with_known(&repo))[0].starts_with(&format!("{PKG}: is a symlink to ")), "outside the repository");
    fs::remove_file(repo.join(PKG)).unwrap();
    fs::write(repo.join(PKG), &bytes[..1700]).unwrap();
    assert_eq!(lines(&with_known(&repo)), [format!("{PKG}: is 1700 bytes but the catalogue says 1769 (pkgsize)")]);
}
