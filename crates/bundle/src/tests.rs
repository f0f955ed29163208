//! The format's round trip and every refusal, on bundles made here.

use camino::{Utf8Path, Utf8PathBuf};

use crate::*;

struct Scratch {
    _dir: tempfile::TempDir,
    root: Utf8PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
    Scratch { _dir: dir, root }
}

/// A bundle of three files (one of 700 bytes, so entries need padding) at `root/b.tar`.
fn sample(root: &Utf8Path) -> Utf8PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("All")).unwrap();
    fs::write(src.join("meta.conf"), "version = 2;\n").unwrap();
    fs::write(src.join("All/a.pkg"), vec![7u8; 700]).unwrap();
    fs::write(src.join("All/b.pkg"), b"").unwrap();
    let files: Vec<(String, Utf8PathBuf)> =
        ["meta.conf", "All/a.pkg", "All/b.pkg"].iter().map(|p| (p.to_string(), src.join(p))).collect();
    let out = root.join("b.tar");
    write(&out, &serde_json::json!({"run": "R1"}), &files).unwrap();
    out
}

fn unpack(root: &Utf8Path, bytes: &[u8]) -> Result<Manifest> {
    let dest = root.join(format!("dest-{}", rand_suffix()));
    fs::create_dir(&dest).unwrap();
    read(bytes, &dest, &Limits::default(), |_| Ok(()))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

use std::fs;

fn refused(r: Result<Manifest>) -> String {
    match r {
        Err(Error::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A tar built entry by entry with the `tar` crate, for shapes our writer never makes.
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if *kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/passwd").unwrap();
        }
        // set_path refuses `..`; write the name field directly.
        let name_field = &mut h.as_old_mut().name;
        name_field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn manifest_json(files: &[(&str, &[u8])]) -> Vec<u8> {
    let files: Vec<FileEntry> = files
        .iter()
        .map(|(p, d)| {
            use sha2::Digest;
            FileEntry { path: p.to_string(), size: d.len() as u64, sha256: crate::write::hex(&sha2::Sha256::digest(d)) }
        })
        .collect();
    serde_json::to_vec(&Manifest { format: FORMAT.into(), version: VERSION, meta: serde_json::Value::Null, files })
        .unwrap()
}

#[test]
fn a_bundle_reads_back_file_for_file_and_tar_lists_it() {
    let s = scratch();
    let out = sample(&s.root);
    let bytes = fs::read(&out).unwrap();
    let dest = s.root.join("dest");
    fs::create_dir(&dest).unwrap();
    let mut seen = None;
    let m = read(&bytes[..], &dest, &Limits::default(), |m| {
        seen = Some(m.meta.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.unwrap()["run"], "R1");
    assert_eq!(m.files.len(), 3);
    assert_eq!(fs::read(dest.join("All/a.pkg")).unwrap(), vec![7u8; 700]);
    assert_eq!(fs::read(dest.join("meta.conf")).unwrap(), b"version = 2;\n");
    assert_eq!(fs::read(dest.join("All/b.pkg")).unwrap(), b"");
    // Any tar reader sees the same entries.
    let names: Vec<String> = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["bundle.json", "meta.conf", "All/a.pkg", "All/b.pkg"]);
    assert!(!s.root.read_dir_utf8().unwrap().any(|e| e.unwrap().file_name().ends_with(".tmp")));
}

#[test]
fn one_changed_byte_of_a_file_is_refused_naming_the_file() {
    let s = scratch();
    let mut bytes = fs::read(sample(&s.root)).unwrap();
    let at = bytes.windows(8).position(|w| w == [7u8; 8]).unwrap();
    bytes[at] = 8;
    let why = refused(unpack(&s.root, &bytes));
    assert!(why.contains("All/a.pkg does not match the bundle's manifest"), "{why}");
}

#[test]
fn an_edited_manifest_is_refused() {
    let s = scratch();
    let mut bytes = fs::read(sample(&s.root)).unwrap();
    // Change one digit of a digest in the manifest (not in the header).
    let text = String::from_utf8_lossy(&bytes[512..1024]).into_owned();
    let at = 512 + text.find("\"sha256\":\"").unwrap() + 10;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    let why = refused(unpack(&s.root, &bytes));
    assert!(why.contains("does not match the bundle's manifest"), "{why}");
}

#[test]
fn the_caller_sees_the_manifest_first_and_may_refuse_it() {
    let s = scratch();
    let bytes = fs::read(sample(&s.root)).unwrap();
    let dest = s.root.join("dest");
    fs::create_dir(&dest).unwrap();
    let r = read(&bytes[..], &dest, &Limits::default(), |_| Err("another release".into()));
    assert!(matches!(r, Err(Error::Rejected(e)) if e.to_string() == "another release"));
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "nothing is written before the manifest is accepted");
}

#[test]
fn symlinks_links_directories_and_extension_headers_are_refused() {
    let s = scratch();
    for (kind, word) in [
        (tar::EntryType::Symlink, "symbolic link"),
        (tar::EntryType::Link, "hard link"),
        (tar::EntryType::Directory, "directory"),
        (tar::EntryType::XHeader, "pax extension header"),
        (tar::EntryType::GNULongName, "GNU long name"),
    ] {
        let m = manifest_json(&[("x", b"")]);
        let bytes = raw_tar(&[("bundle.json", tar::EntryType::Regular, &m), ("x", kind, b"")]);
        let why = refused(unpack(&s.root, &bytes));
        assert!(why.contains(&format!("is a {word}, not a regular file")), "{why}");
    }
}

#[test]
fn unsafe_paths_in_the_manifest_are_refused() {
    let s = scratch();
    for (path, why) in [
        ("../escape", "`..`"),
        ("a/../../b", "`..`"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty component"),
        ("bundle.json", "manifest's own name"),
        ("a\\b", "backslash"),
    ] {
        let m = manifest_json(&[(path, b"x")]);
        let bytes = raw_tar(&[("bundle.json", tar::EntryType::Regular, &m), (path, tar::EntryType::Regular, b"x")]);
        let got = refused(unpack(&s.root, &bytes));
        assert!(got.contains(why), "{path}: {got}");
    }
    assert!(!s.root.parent().unwrap().join("escape").exists());
}

#[test]
fn duplicated_extra_missing_and_conflicting_entries_are_refused() {
    let s = scratch();
    let m = manifest_json(&[("a", b"1")]);
    let dup = raw_tar(&[
        ("bundle.json", tar::EntryType::Regular, &m),
        ("a", tar::EntryType::Regular, b"1"),
        ("a", tar::EntryType::Regular, b"1"),
    ]);
    assert!(refused(unpack(&s.root, &dup)).contains("after the last file its manifest lists"));
    let extra = raw_tar(&[
        ("bundle.json", tar::EntryType::Regular, &m),
        ("b", tar::EntryType::Regular, b"1"),
        ("a", tar::EntryType::Regular, b"1"),
    ]);
    assert!(refused(unpack(&s.root, &extra)).contains("where its manifest lists a next"));
    let missing = raw_tar(&[("bundle.json", tar::EntryType::Regular, &m)]);
    assert!(refused(unpack(&s.root, &missing)).contains("ends before a"));
    let twice = manifest_json(&[("a", b"1"), ("a", b"1")]);
    let bytes = raw_tar(&[("bundle.json", tar::EntryType::Regular, &twice)]);
    assert!(refused(unpack(&s.root, &bytes)).contains("lists a twice"));
    let both = manifest_json(&[("a", b"1"), ("a/b", b"1")]);
    let bytes = raw_tar(&[("bundle.json", tar::EntryType::Regular, &both)]);
    assert!(refused(unpack(&s.root, &bytes)).contains("as a file and as the directory"));
}

#[test]
fn a_huge_manifest_is_refused_without_reading_it() {
    let s = scratch();
    let mut h = tar::Header::new_ustar();
    h.set_path("bundle.json").unwrap();
    h.set_size(1 << 40);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let why = refused(unpack(&s.root, h.as_bytes()));
    assert!(why.contains("more than the 16777216 a manifest may have"), "{why}");
    let limits = Limits { files: 1, ..Limits::default() };
    let m = manifest_json(&[("a", b""), ("b", b"")]);
    let bytes = raw_tar(&[("bundle.json", tar::EntryType::Regular, &m)]);
    let dest = s.root.join("d");
    fs::create_dir(&dest).unwrap();
    let why = refused(read(&bytes[..], &dest, &limits, |_| Ok(())));
    assert!(why.contains("more than the 1 a bundle may hold"), "{why}");
}

#[test]
fn cut_damaged_and_trailing_bytes_are_refused() {
    let s = scratch();
    let bytes = fs::read(sample(&s.root)).unwrap();
    assert!(refused(unpack(&s.root, &bytes[..bytes.len() - 1500])).contains("cut short"));
    let mut damaged = bytes.clone();
    damaged[0] ^= 1;
    assert!(refused(unpack(&s.root, &damaged)).contains("checksum"));
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"more");
    assert!(refused(unpack(&s.root, &trailing)).contains("data after the end"));
    let mut zeros = bytes;
    zeros.extend_from_slice(&[0u8; 9216]);
    unpack(&s.root, &zeros).unwrap();
    assert!(refused(unpack(&s.root, b"")).contains("cut short"));
    assert!(refused(unpack(&s.root, &[0u8; 1024])).contains("no manifest"));
}
