//! Repositories and builds the size of a full ports tree, made fast: thousands of small
//! synthetic packages whose catalogue entries have everything a real FreeBSD package's
//! entry has (dependencies, shared libraries, options, annotations, a description), and
//! a finished poudriere build directory listing as many ports. For the scale benchmark.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use camino::{Utf8Path, Utf8PathBuf};
use pkgrepo::sum::Sum;

use crate::repo::{META_CONF, filler};

/// The size of synthetic package `i`: 2 to 30 KB, most of them small.
pub fn package_size(i: usize) -> usize {
    let x = (i.wrapping_mul(2_654_435_761)) % 1000;
    if x < 700 { 2_048 + x * 8 } else { 8_192 + (x - 700) * 74 }
}

/// The name, version and bytes of package `i` of `generation`.
fn package(i: usize, generation: u64) -> (String, String, Vec<u8>) {
    let name = format!("port{i:05}");
    let version = format!("{}.{}.{}_{generation}", 1 + i % 7, i % 13, i % 5);
    let bytes = filler((i as u64) << 8 | generation, package_size(i));
    (name, version, bytes)
}

/// A catalogue line for package `i` as pkg 2.8 writes one for a port of the tree (the
/// fields and their order as `pkg repo` emits them).
pub fn catalogue_line(i: usize, name: &str, version: &str, sum: &str, size: usize) -> String {
    let category = ["devel", "net", "www", "textproc", "sysutils", "lang", "graphics", "security"][i % 8];
    let path = format!("All/{name}-{version}.pkg");
    let deps: Vec<String> = (1..=(i % 4))
        .map(|d| {
            let dep = (i * 31 + d * 977) % 35_000;
            format!(r#""port{dep:05}":{{"origin":"devel/port{dep:05}","version":"2.{d}.0"}}"#)
        })
        .collect();
    format!(
        concat!(
            r#"{{"name":"{name}","origin":"{category}/{name}","version":"{version}","#,
            r#""comment":"Synthetic port {i} of a full ports tree, for scale","maintainer":"ports@FreeBSD.org","#,
            r#""www":"https://www.example.org/{name}/","abi":"FreeBSD:15:amd64","arch":"freebsd:15:x86:64","#,
            r#""prefix":"/usr/local","sum":"{sum}","flatsize":{flat},"path":"{path}","repopath":"{path}","#,
            r#""licenselogic":"single","licenses":["BSD2CLAUSE"],"pkgsize":{size},"#,
            r#""desc":"{name} is one of the thousands of ports of a full tree. This description is as long\nas a typical one: it says what the software does, which features the port\nenables by default, and where its documentation lives.\n\nWWW: https://www.example.org/{name}/","#,
            r#""deps":{{{deps}}},"categories":["{category}"],"shlibs_required":["libc.so.7","libm.so.5","libthr.so.3"],"#,
            r#""shlibs_provided":["lib{name}.so.1"],"options":{{"DOCS":"on","EXAMPLES":"off","NLS":"on"}},"#,
            r#""annotations":{{"FreeBSD_version":"1500000","build_timestamp":"2026-06-20T00:00:00+0000","built_by":"poudriere-git-3.4.8","port_checkout_unclean":"no","port_git_hash":"0123456789","ports_top_checkout_unclean":"no","ports_top_git_hash":"0123456789"}}}}"#
        ),
        name = name,
        category = category,
        version = version,
        i = i,
        sum = sum,
        flat = size * 3,
        path = path,
        size = size,
        deps = deps.join(","),
    )
}

/// Writes the package files of a repository of `count` packages into `dir/All` and
/// returns their catalogue lines. Package `i` is of `generation` where `changed(i)`,
/// else of generation 0; those of generation 0 are hard-linked from `link_from/All`
/// when given (the same bytes), else written.
pub fn write_packages(
    dir: &Utf8Path,
    count: usize,
    generation: u64,
    changed: &(dyn Fn(usize) -> bool + Sync),
    link_from: Option<&Utf8Path>,
) -> Vec<String> {
    fs::create_dir_all(dir.join("All")).unwrap();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    let mut lines = vec![String::new(); count];
    std::thread::scope(|s| {
        for (t, out) in lines.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                for (k, line) in out.iter_mut().enumerate() {
                    let i = t * chunk + k;
                    let g = if changed(i) { generation } else { 0 };
                    let (name, version, bytes) = package(i, g);
                    let rel = format!("All/{name}-{version}.pkg");
                    match link_from.filter(|_| g == 0) {
                        Some(from) => fs::hard_link(from.join(&rel), dir.join(&rel)).unwrap(),
                        None => fs::write(dir.join(&rel), &bytes).unwrap(),
                    }
                    *line = catalogue_line(i, &name, &version, &Sum::of(&bytes).text(), bytes.len());
                }
            });
        }
    });
    lines
}

/// Writes meta.conf, meta and both catalogues (unsigned, zstd) for `lines` into `dir`.
pub fn write_catalogues(dir: &Utf8Path, lines: &[String]) {
    fs::write(dir.join("meta.conf"), META_CONF).unwrap();
    fs::write(dir.join("meta"), META_CONF).unwrap();
    let mut data = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 64);
    data.extend_from_slice(br#"{"groups":[],"expired_packages":[],"packages":["#);
    for (n, l) in lines.iter().enumerate() {
        if n > 0 {
            data.push(b',');
        }
        data.extend_from_slice(l.as_bytes());
    }
    data.extend_from_slice(b"]}");
    let mut site = Vec::with_capacity(data.len());
    for l in lines {
        site.extend_from_slice(l.as_bytes());
        site.push(b'\n');
    }
    write_archive(&dir.join("data.pkg"), "data", &data);
    write_archive(&dir.join("packagesite.pkg"), "packagesite.yaml", &site);
}

fn write_archive(path: &Utf8Path, name: &str, data: &[u8]) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_781_913_600);
    h.set_cksum();
    builder.append(&h, data).unwrap();
    let tar = builder.into_inner().unwrap();
    fs::write(path, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
}

/// Signs both catalogues of `dir` in place with the private key `key` whose public half
/// is `pubkey`, as `pkg repo DIR KEY` would (pubkey layout).
pub fn sign(dir: &Utf8Path, key: &Utf8Path, pubkey: &Utf8Path) {
    use pkgrepo::sign::{KeySigner, sign_archive};
    let secret = pkgrepo::key::read_private_key(key).unwrap();
    let signer = KeySigner::new(&secret, key, fs::read(pubkey).unwrap(), pubkey).unwrap();
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        sign_archive(&dir.join(archive), inner, pkgrepo::TrustMode::Pubkey, &signer).unwrap();
    }
}

/// The package files of a repository of `count` packages written by [`write_packages`]
/// with these arguments, relative to the repository.
pub fn package_paths(count: usize, generation: u64, changed: &dyn Fn(usize) -> bool) -> Vec<Utf8PathBuf> {
    (0..count)
        .map(|i| {
            let g = if changed(i) { generation } else { 0 };
            let (name, version, _) = package(i, g);
            Utf8PathBuf::from(format!("All/{name}-{version}.pkg"))
        })
        .collect()
}

/// `POUDRIERE_DATA/{logs/bulk/M/B, packages/M}` under `root` for a finished `bulk -a` of
/// `ports` ports in which colibri was built: a twentieth failed (every tenth of those a
/// crashed builder), some skipped and ignored, the rest built; committed as poudriere
/// 3.4.8 commits. Returns the build's log directory and its status list files.
pub fn poudriere_build(root: &Path, ports: usize) -> (PathBuf, Vec<PathBuf>) {
    let data = root.join("data");
    let build = data.join("logs/bulk/clawdie-amd64-clawdie/bench");
    fs::create_dir_all(build.join("logs/errors")).unwrap();
    let (failed, skipped, ignored) = (ports / 35, ports * 8 / 350, ports * 2 / 350);
    let built = ports - failed - skipped - ignored;
    let mut files = Vec::new();
    let mut write = |name: &str, lines: &mut dyn Iterator<Item = String>| {
        let path = build.join(name);
        let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
        for line in lines {
            writeln!(f, "{line}").unwrap();
        }
        files.push(path);
    };
    write(
        ".poudriere.ports.queued",
        &mut (0..ports - 1)
            .map(|i| format!("category{}/port{i} port{i}-1.{i} listed", i % 60))
            .chain(["sysutils/colibri colibri-0.9.0 listed".to_owned()]),
    );
    write(
        ".poudriere.ports.built",
        &mut (0..built - 1)
            .map(|i| format!("category{}/port{i} port{i}-1.{i} {}", i % 60, i % 3600))
            .chain(["sysutils/colibri colibri-0.9.0 298".to_owned()]),
    );
    write(
        ".poudriere.ports.failed",
        &mut (0..failed).map(|i| match i % 10 {
            0 => format!("devel/broken{i} broken{i}-2.{i} build build"),
            n => format!("devel/broken{i} broken{i}-2.{i} build {} {i}", ["???", "compiler_error"][n % 2]),
        }),
    );
    write(
        ".poudriere.ports.skipped",
        &mut (0..skipped).map(|i| format!("www/needs{i} needs{i}-0.{i} broken{}-2.{}", i % failed, i % failed)),
    );
    write(
        ".poudriere.ports.ignored",
        &mut (0..ignored)
            .map(|i| format!("games/old{i} old{i}-0.1 is marked as broken: does not build with clang {i}")),
    );
    fs::write(build.join(".poudriere.status"), "stopped:done:\n").unwrap();
    for (name, n) in [
        ("queued", ports),
        ("built", built),
        ("failed", failed),
        ("skipped", skipped),
        ("ignored", ignored),
        ("fetched", 0),
    ] {
        fs::write(build.join(format!(".poudriere.stats_{name}")), format!("{n}\n")).unwrap();
    }
    let packages = data.join("packages/clawdie-amd64-clawdie");
    fs::create_dir_all(packages.join(".real_1781913600/All")).unwrap();
    fs::write(packages.join(".real_1781913600/All/colibri-0.9.0.pkg"), b"pkg").unwrap();
    fs::write(packages.join(".real_1781913600/.buildname"), "bench\n").unwrap();
    std::os::unix::fs::symlink(".real_1781913600", packages.join(".latest")).unwrap();
    (build, files)
}
