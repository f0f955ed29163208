//! The samples verify in the trust mode their README names and no other, their
//! digests are the README's, and pkg's sums are reproduced from the files' bytes: the
//! known answers the real pkg wrote.

use std::io::Read;

use pkgrepo::CatalogueKind;
use pkgrepo::archive::Archive;
use pkgrepo::catalogue::Catalogue;
use pkgrepo::sum::Sum;
use pkgrepo::verify::ProblemKind;

use crate::{TEST_FP, check, data, fingerprints_trust, lines, pubkey_trust};

#[test]
fn the_samples_verify_with_the_trust_their_readme_names() {
    let (pubkey, fps) = (pubkey_trust(), fingerprints_trust());
    for repo in ["production-pubkey", "validation-pubkey"] {
        let r = check(&data("pkg-repo").join(repo), &pubkey);
        assert!(r.ok(), "{repo}: {:?}", lines(&r));
        assert_eq!((r.packages().len(), r.listed), (1, 1));
        assert!(r.signed_by(TEST_FP), "{repo}");
        assert!(!r.signed_by(&"0".repeat(64)));
    }
    let r = check(&data("pkg-repo/production-fingerprints"), &fps);
    assert!(r.ok(), "{:?}", lines(&r));
    assert!(r.signed_by(TEST_FP));
    let p = r.packages().next().unwrap();
    assert_eq!((p.name, p.version, p.origin), ("colibri", "0.9.0", "sysutils/colibri"));
    assert_eq!((p.path, p.size, r.bytes), ("All/colibri-0.9.0.pkg", 1769, 1769));
    assert_eq!(p.sha256, Some("3f0080a2f497472d8974f5647b3f154d76834cc4636949bcbd3f64b3278bff32"));
}

#[test]
fn the_signed_digests_are_the_readmes() {
    for (repo, data_sha, site_sha) in [
        (
            "production-pubkey",
            "3e37873f895788288a5c4977c7fb0564db8fa36ad6ef5ada362f28d03eee6d48",
            "af9b71553a32484bc12555d3491fa19350fead899aa99315e631b0f24d979919",
        ),
        (
            "validation-pubkey",
            "a8a5aaed4109ae873b7bc9a17bb2b97db3a819e9d7610b6eca92b30b41e11998",
            "f0ee2048aecb3a933933d76f50efb962365ca10e0eb7a0292cee7f7033f41a71",
        ),
    ] {
        let r = check(&data("pkg-repo").join(repo), &pubkey_trust());
        let d = r.catalogue("data.pkg").unwrap();
        assert_eq!((d.inner.as_str(), d.inner_sha256.as_str()), ("data", data_sha));
        assert_eq!(r.catalogue("packagesite.pkg").unwrap().inner_sha256, site_sha);
        assert_eq!(d.verified_by, [crate::TEST_FP]);
    }
}

#[test]
fn the_wrong_mode_and_no_signature_are_refused_as_signature_problems() {
    let (pubkey, fps) = (pubkey_trust(), fingerprints_trust());
    for (repo, trust, says) in [
        ("production-pubkey", &fps, "only a pubkey-mode `signature` entry"),
        ("production-fingerprints", &pubkey, "only fingerprints-mode signatures"),
        ("unsigned", &pubkey, "is not signed (no `signature` entry)"),
        ("unsigned", &fps, "is not signed (no .sig/.pub entries)"),
    ] {
        let r = check(&data("pkg-repo").join(repo), trust);
        let found = lines(&r);
        assert_eq!(found.len(), 2, "{repo}: {found:?}");
        assert!(found[0].starts_with("data.pkg: ") && found[1].starts_with("packagesite.pkg: "), "{found:?}");
        assert!(found.iter().all(|l| l.contains(says)), "{repo}: {found:?}");
        assert!(r.only_signature_problems());
        assert!(r.problems.iter().all(|p| p.kind == ProblemKind::Signature));
        // The packages still match their catalogue.
        assert_eq!(r.packages().len(), 1, "{repo}");
    }
}

#[test]
fn hashed_names_a_symlink_and_a_signed_file_list_verify() {
    let pubkey = pubkey_trust();
    for repo in ["hashed", "hashed-symlink", "files"] {
        let r = check(&data("pkg-repo-2").join(repo), &pubkey);
        assert!(r.ok(), "{repo}: {:?}", lines(&r));
        assert_eq!(r.packages().len(), 1);
    }
    let hashed = check(&data("pkg-repo-2/hashed"), &pubkey);
    assert_eq!(hashed.packages().next().unwrap().path, "All/Hashed/colibri-0.9.0~2$f56x1t1g.pkg");
    // files.pkg is signed like the catalogues, and checked.
    let files = check(&data("pkg-repo-2/files"), &pubkey);
    let archives: Vec<&str> = files.catalogues.iter().map(|c| c.archive.as_str()).collect();
    assert_eq!(archives, ["data.pkg", "packagesite.pkg", "files.pkg"]);
    assert!(files.signed_by(TEST_FP));
}

/// The package's `sum` in both catalogues of every sample, as pkg wrote it.
#[test]
fn package_sums_are_the_ones_pkg_wrote() {
    for repo in ["pkg-repo/production-pubkey", "pkg-repo/validation-pubkey", "pkg-repo-2/hashed"] {
        let dir = data(repo);
        for (kind, archive, inner) in [
            (CatalogueKind::Data, "data.pkg", "data"),
            (CatalogueKind::Packagesite, "packagesite.pkg", "packagesite.yaml"),
        ] {
            let a = Archive::read(&dir.join(archive)).unwrap();
            let catalogue = Catalogue::parse(kind, &a.find(inner).next().unwrap().data).unwrap();
            let packages: Vec<_> = catalogue.packages().collect();
            assert_eq!(packages.len(), 1);
            let bytes = std::fs::read(dir.join(packages[0].path)).unwrap();
            assert_eq!(Sum::of(&bytes).text(), packages[0].sum, "{repo}/{archive}");
            assert_eq!(Sum::parse(packages[0].sum).unwrap(), Sum::of(&bytes));
        }
    }
}

/// Every file's `2$` sum in the packages' `+MANIFEST`, as pkg wrote it, from the bytes
/// the package holds: 15 more known answers, of files from 176 to 537 bytes.
#[test]
fn file_sums_in_the_packages_manifests_are_reproduced() {
    let mut checked = 0;
    for repo in ["production-pubkey", "validation-pubkey"] {
        let pkg = std::fs::read(data("pkg-repo").join(repo).join("All/colibri-0.9.0.pkg")).unwrap();
        let tar = zstd::decode_all(&pkg[..]).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut manifest = None;
        let mut files = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            if name == "+MANIFEST" {
                manifest = Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
            } else if entry.header().entry_type().is_file() && !name.starts_with('+') {
                files.push((format!("/{}", name.trim_start_matches('/')), bytes));
            }
        }
        let manifest = manifest.expect("+MANIFEST");
        assert_eq!(files.len(), manifest["files"].as_object().unwrap().len(), "{repo}");
        for (path, bytes) in files {
            let want = manifest["files"][&path]["sum"].as_str().unwrap_or_else(|| panic!("{repo}: no sum for {path}"));
            assert_eq!(Sum::of(&bytes).text(), want, "{repo}: {path}");
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}
