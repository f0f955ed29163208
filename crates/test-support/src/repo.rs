//! Test helpers for pkg repositories: copies of the real samples, catalogue archives
//! taken apart and put back together (with tar and zstd directly, not the code under
//! test), the test key at mode 0600, synthetic repositories of many packages, and
//! signatures made by openssl (an implementation independent of the one under test).
//!
//! The `sum`s of synthetic packages come from `pkgrepo`'s [`Sum::of`]: there is one
//! implementation of pkg's base32, and pkgrepo's tests pin it to the sums the real pkg
//! wrote (its known-answer tests), so a copy here would check nothing.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use camino::{Utf8Path, Utf8PathBuf};
use pkgrepo::sum::Sum;

use crate::{Project, copy_tree, data};

/// `xtask/tests/data/pkg-repo/NAME`.
pub fn sample(name: &str) -> Utf8PathBuf {
    data().join("pkg-repo").join(name)
}

pub fn pubkey() -> Utf8PathBuf {
    sample("keys/test-repo.pub")
}

pub fn fingerprints() -> Utf8PathBuf {
    sample("fingerprints")
}

/// The fingerprint of the test key (README).
pub const TEST_FP: &str = "9f458105021fe487f134ba26d87a755969bb8cd9c29db888144e9685000a981a";

/// `crates/pkgrepo/tests/data/pkg-repo-2/NAME`: the ecc, ecdsa, ecc-signing-command,
/// Hashed and files.pkg repositories the real pkg 2.8.4 made, their keys and trust
/// directory (one copy in the workspace, shared with pkgrepo's own tests).
pub fn sample2(name: &str) -> Utf8PathBuf {
    crate::repo_root().join("crates/pkgrepo/tests/data/pkg-repo-2").join(name)
}

/// The fingerprint of `sample2("keys/ecc-repo.pub")`, pkg's DER ecc public key.
pub const ECC_FP: &str = "33011c7527dfdfbb00dad7a92fcd06fdfd6dadb81e73bd6a2855217d7ef0b619";

/// A private key of `sample2("keys")` (`ecc-repo.key`, `ecdsa-repo.key`) copied to a
/// 0600 file in `dir`.
pub fn private_key2(dir: &Utf8Path, name: &str) -> Utf8PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(dir).unwrap();
    fs::copy(sample2("keys").join(name), &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `[repository]` and `[signing]` for any key pair, trust mode and fingerprints directory.
pub fn signing_config_for(key: &Utf8Path, pubkey: &Utf8Path, mode: &str, fingerprints: &Utf8Path) -> String {
    format!(
        "[repository]\nabi = \"FreeBSD:15:amd64\"\n\n[signing]\nkey = \"{key}\"\npubkey = \"{pubkey}\"\ntrust = \"{mode}\"\nfingerprints = \"{fingerprints}\"\n"
    )
}

/// A copy of a sample repository at `dest`.
pub fn copy_sample(name: &str, dest: &Utf8Path) -> Utf8PathBuf {
    copy_tree(&sample(name), dest);
    dest.to_owned()
}

/// The test key copied to a 0600 file (git does not keep modes).
pub fn private_key(dir: &Utf8Path) -> Utf8PathBuf {
    let path = dir.join("test-repo.key");
    fs::create_dir_all(dir).unwrap();
    fs::copy(sample("keys/test-repo.key"), &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `[repository]` and `[signing]` for the test key in `mode` (`pubkey` or `fingerprints`).
pub fn signing_config(key: &Utf8Path, mode: &str) -> String {
    format!(
        "[repository]\nabi = \"FreeBSD:15:amd64\"\n\n[signing]\nkey = \"{key}\"\npubkey = \"{}\"\ntrust = \"{mode}\"\nfingerprints = \"{}\"\n",
        pubkey(),
        fingerprints()
    )
}

/// A project set up to sign with the test key.
pub fn signing_project(mode: &str, extra: &str) -> Project {
    let p = Project::new("");
    let key = private_key(&p.scratch.path.join("keys"));
    p.write_config(&format!("{}\n{extra}", signing_config(&key, mode)));
    p
}

/// The entries of a zstd catalogue archive, in order.
pub fn read_archive(path: &Utf8Path) -> Vec<(String, Vec<u8>)> {
    let bytes = fs::read(path).unwrap();
    let tar = zstd::decode_all(&bytes[..]).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

/// Writes a zstd catalogue archive.
pub fn write_archive(path: &Utf8Path, entries: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1781913600);
        h.set_cksum();
        builder.append(&h, &data[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    fs::write(path, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
}

/// Changes the entries of an archive in place.
pub fn edit_archive(path: &Utf8Path, f: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) {
    let mut entries = read_archive(path);
    f(&mut entries);
    write_archive(path, &entries);
}

/// The one entry called `name`.
pub fn entry(path: &Utf8Path, name: &str) -> Vec<u8> {
    read_archive(path).into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{path} has no {name}")).1
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `printf %s HEX | openssl dgst -sha256 -sign KEY`: what pkg writes (README).
pub fn openssl_sign(key: &Utf8Path, message: &str) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", key.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl must be installed");
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    out.stdout
}

/// `openssl dgst -sha256 -verify PUB -signature SIG` over `message`.
pub fn openssl_verify(pubkey: &Utf8Path, message: &str, signature: &[u8], scratch: &Utf8Path) -> bool {
    let sig = scratch.join("sig.bin");
    let msg = scratch.join("msg.txt");
    fs::write(&sig, signature).unwrap();
    fs::write(&msg, message).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify", pubkey.as_str(), "-signature", sig.as_str(), msg.as_str()])
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

/// A fresh RSA key (PEM private, PEM public) made by openssl.
pub fn other_key(dir: &Utf8Path) -> (Utf8PathBuf, Utf8PathBuf) {
    fs::create_dir_all(dir).unwrap();
    let key = dir.join("other.key");
    let public = dir.join("other.pub");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key.as_str()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey failed");
    let ok = Command::new("openssl")
        .args(["pkey", "-in", key.as_str(), "-pubout", "-out", public.as_str()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout failed");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    (key, public)
}

/// One package of a synthetic repository.
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub bytes: Vec<u8>,
}

impl Pkg {
    pub fn new(name: &str, version: &str, bytes: Vec<u8>) -> Pkg {
        Pkg { name: name.into(), version: version.into(), bytes }
    }

    pub fn path(&self) -> String {
        format!("All/{}-{}.pkg", self.name, self.version)
    }
}

/// The real colibri-0.9.0 package (`pkg-repo/production-pubkey`) as a build for `abi`
/// makes it: both manifests name `abi` and its arch (pkg stamps the build jail's, from
/// its /bin/sh), and carry the `build_timestamp` annotation poudriere adds without
/// PKG_REPRODUCIBLE (docs/reference/poudriere.md, section 14), so two builds (two
/// `build_timestamp`s) are two different packages. The files, colibri-daemon among
/// them, are the sample's.
pub fn colibri_for(abi: &str, build_timestamp: u64) -> Pkg {
    let sample = fs::read(sample("production-pubkey/All/colibri-0.9.0.pkg")).unwrap();
    let tar = zstd::decode_all(&sample[..]).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let manifest = matches!(&entry.path_bytes()[..], b"+COMPACT_MANIFEST" | b"+MANIFEST");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if manifest {
            let text = String::from_utf8(bytes).unwrap();
            let rebuilt = text
                .replace("\"abi\":\"FreeBSD:15:amd64\"", &format!("\"abi\":\"{abi}\""))
                .replace("\"arch\":\"freebsd:15:x86:64\"", &format!("\"arch\":\"{}\"", legacy_arch(abi)))
                .replace("\"annotations\":{", &format!("\"annotations\":{{\"build_timestamp\":\"{build_timestamp}\","));
            assert_ne!(rebuilt, text, "the sample's manifest changed shape");
            bytes = rebuilt.into_bytes();
        }
        // The header as the sample has it (absolute member paths, modes), resized.
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        out.append(&header, &bytes[..]).unwrap();
    }
    let tar = out.into_inner().unwrap();
    Pkg::new("colibri", "0.9.0", zstd::encode_all(&tar[..], 3).unwrap())
}

/// pkg's old-style arch for an ABI (`FreeBSD:15:amd64` is `freebsd:15:x86:64`,
/// `FreeBSD:15:aarch64` is `freebsd:15:aarch64:64`), which catalogues and manifests
/// carry beside the ABI (pkg's libpkg/pkg_abi.c).
pub fn legacy_arch(abi: &str) -> String {
    let mut parts = abi.split(':');
    let (os, version, arch) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let arch = match arch {
        "amd64" => "x86:64",
        "i386" => "x86:32",
        "aarch64" => "aarch64:64",
        "armv7" => "armv7:32:el:eabi:hardfp",
        other => other,
    };
    format!("{}:{version}:{arch}", os.to_lowercase())
}

/// Deterministic filler bytes.
pub fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The catalogue object pkg writes for a package (the fields that matter here).
pub fn catalogue_object(p: &Pkg, abi: &str) -> serde_json::Value {
    serde_json::json!({
        "name": p.name, "origin": format!("sysutils/{}", p.name), "version": p.version,
        "comment": "synthetic", "maintainer": "ports@clawdie.si", "www": "https://clawdie.si/",
        "abi": abi, "arch": legacy_arch(abi), "prefix": "/usr/local",
        "sum": Sum::of(&p.bytes).text(), "flatsize": p.bytes.len(), "path": p.path(), "repopath": p.path(),
        "licenselogic": "single", "licenses": ["MIT"], "pkgsize": p.bytes.len(), "desc": "synthetic"
    })
}

pub const META_CONF: &str = "version = 2;\npacking_format = \"tzst\";\nmanifests = \"packagesite.yaml\";\ndata = \"data\";\nfilesite = \"files\";\nmanifests_archive = \"packagesite\";\nfilesite_archive = \"files\";\n";

/// Writes catalogues (unsigned) for `objects` into `dir`, laid out as `pkg repo` writes
/// them (`data`: `groups`, `expired_packages`, then `packages`; each object's fields in
/// pkg's order, `name` first, which the pkg stand-in's reader relies on).
pub fn write_catalogues(dir: &Utf8Path, objects: &[serde_json::Value]) {
    let objects: Vec<String> = objects.iter().map(in_pkg_order).collect();
    let data = format!("{{\"groups\":[],\"expired_packages\":[],\"packages\":[{}]}}", objects.join(","));
    let mut site = String::new();
    for o in &objects {
        site.push_str(o);
        site.push('\n');
    }
    write_archive(&dir.join("data.pkg"), &[("data".into(), data.into_bytes())]);
    write_archive(&dir.join("packagesite.pkg"), &[("packagesite.yaml".into(), site.into_bytes())]);
}

/// A catalogue object as JSON with its fields in the order pkg writes them (the real
/// samples' order); any other field after those, by name.
fn in_pkg_order(object: &serde_json::Value) -> String {
    const ORDER: [&str; 17] = [
        "name",
        "origin",
        "version",
        "comment",
        "maintainer",
        "www",
        "abi",
        "arch",
        "prefix",
        "sum",
        "flatsize",
        "path",
        "repopath",
        "licenselogic",
        "licenses",
        "pkgsize",
        "desc",
    ];
    let map = object.as_object().expect("a catalogue object");
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| (ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()), k.as_str()));
    let fields: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), serde_json::to_string(&map[*k]).unwrap()))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// An unsigned repository of `pkgs` in `dir`, laid out as poudriere publishes it.
pub fn make_repo(dir: &Utf8Path, pkgs: &[Pkg]) {
    fs::create_dir_all(dir.join("All")).unwrap();
    for p in pkgs {
        fs::write(dir.join(p.path()), &p.bytes).unwrap();
    }
    fs::write(dir.join("meta.conf"), META_CONF).unwrap();
    fs::write(dir.join("meta"), META_CONF).unwrap();
    let objects: Vec<_> = pkgs.iter().map(|p| catalogue_object(p, "FreeBSD:15:amd64")).collect();
    write_catalogues(dir, &objects);
}

/// `count` packages of `size` bytes; package `i` of generation `gen` differs from the
/// same package of another generation only where `changed(i)`.
pub fn synthetic(count: usize, size: usize, generation: u64, changed: impl Fn(usize) -> bool) -> Vec<Pkg> {
    (0..count)
        .map(|i| {
            let g = if changed(i) { generation } else { 0 };
            Pkg::new(&format!("pkg{i:03}"), &format!("1.{g}"), filler(i as u64 * 1000 + g + 1, size))
        })
        .collect()
}
