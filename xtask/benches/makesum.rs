//! makesum benchmark (run with `cargo bench --bench makesum`; not part of CI). Times the
//! built xtask binary against baselines measured in the same run and prints ratios:
//!   warm: distinfo for 300 distfiles (>= 100 MB) already in the distfiles directory,
//!         against `sha256sum` + `stat` over the same files (goal: at most 0.05x: nothing is read again);
//!   cold: 200 crates from a local HTTP server answering each request after 20 ms,
//!         against fetching them one after another (goal: at least 5x faster).

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};
use test_support::httpd;

const WARM_FILES: usize = 300;
const COLD_FILES: usize = 200;
const LATENCY: Duration = Duration::from_millis(20);

fn main() {
    let dir = tempfile::Builder::new().prefix("mb-bench-").tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("makesum benchmark on {cores} cores (median of the runs; the xtask binary, not cargo xtask)");
    warm(&root.join("warm"));
    cold(&root.join("cold"));
}

/// Deterministic bytes that do not compress or repeat.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Crate {
    name: String,
    version: String,
    bytes: Vec<u8>,
}

/// A USES=cargo port with only these crates, and a pipeline.toml next to it.
fn port(root: &Utf8Path, crates: &[Crate], extra_config: &str) -> (Utf8PathBuf, Utf8PathBuf) {
    let port = root.join("port");
    fs::create_dir_all(&port).unwrap();
    fs::write(port.join("Makefile"), "PORTNAME=\tbench\nDISTVERSION=\t1.0\nUSES=\t\tcargo\nDISTFILES=\n").unwrap();
    let entries: Vec<String> = crates.iter().map(|c| format!("{}-{}", c.name, c.version)).collect();
    fs::write(port.join("Makefile.crates"), format!("CARGO_CRATES=\t{}\n", entries.join(" \\\n\t\t"))).unwrap();
    let mut lock = String::from("version = 4\n");
    for c in crates {
        lock.push_str(&format!(
            "\n[[package]]\nname = \"{}\"\nversion = \"{}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{}\"\n",
            c.name,
            c.version,
            hex(&Sha256::digest(&c.bytes))
        ));
    }
    fs::write(port.join("Cargo.lock"), lock).unwrap();
    let config = root.join("pipeline.toml");
    fs::write(&config, format!("[pipeline]\nstate_dir = \"{root}/state\"\n{extra_config}")).unwrap();
    fs::create_dir_all(root.join("cargo-home")).unwrap();
    (port, config)
}

fn makesum(config: &Utf8Path, port: &Utf8Path, distdir: &Utf8Path, cargo_home: &Utf8Path, extra: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--config", config.as_str(), "makesum", "--port", port.as_str(), "--distdir", distdir.as_str()])
        .args(extra)
        .env("CI", "1")
        .env("CARGO_HOME", cargo_home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "xtask makesum failed:\n{}", String::from_utf8_lossy(&out.stderr));
    took
}

/// CPU time (user + system) used so far by this process's finished children.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `f`, returning its wall time and the CPU time its children used.
fn timed(f: impl FnOnce() -> Duration) -> (Duration, Duration) {
    let cpu = children_cpu();
    let wall = f();
    (wall, children_cpu() - cpu)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn warm(root: &Utf8Path) {
    // Mostly small crates and some large ones, like a real lock file, >= 100 MB in all.
    let crates: Vec<Crate> = (0..WARM_FILES)
        .map(|i| {
            let len = if i % 5 == 0 { 1_200_000 + (i * 7919) % 900_000 } else { 15_000 + (i * 104_729) % 180_000 };
            Crate { name: format!("warm-crate{i}"), version: format!("1.{i}.0"), bytes: noise(i as u64, len) }
        })
        .collect();
    let total: usize = crates.iter().map(|c| c.bytes.len()).sum();
    assert!(total >= 100_000_000, "only {total} bytes");
    let (port, config) = port(root, &crates, "");
    let distdir = root.join("distfiles");
    fs::create_dir_all(distdir.join("rust/crates")).unwrap();
    for c in &crates {
        fs::write(distdir.join(format!("rust/crates/{}-{}.crate", c.name, c.version)), &c.bytes).unwrap();
    }
    let home = root.join("cargo-home");
    // First run writes distinfo and brings every file into the page cache.
    makesum(&config, &port, &distdir, &home, &["--offline"]);

    let files: Vec<String> = crates.iter().map(|c| format!("rust/crates/{}-{}.crate", c.name, c.version)).collect();
    let baseline = || {
        let start = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg("sha256sum \"$@\" > /dev/null && stat -c '%s %n' \"$@\" > /dev/null")
            .arg("sh")
            .args(&files)
            .current_dir(&distdir)
            .status()
            .unwrap();
        assert!(status.success());
        start.elapsed()
    };
    baseline();
    let (mut ours, mut theirs, mut ours_cpu, mut theirs_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..9 {
        let (wall, cpu) = timed(|| makesum(&config, &port, &distdir, &home, &["--offline"]));
        ours.push(wall);
        ours_cpu.push(cpu);
        let (wall, cpu) = timed(baseline);
        theirs.push(wall);
        theirs_cpu.push(cpu);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "warm: {WARM_FILES} distfiles, {:.1} MB in place: xtask makesum {:.3} s, sha256sum + stat {:.3} s: {:.2}x the baseline's wall time (goal <= 0.05x)",
        total as f64 / 1e6,
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    let (ours_cpu, theirs_cpu) = (median(ours_cpu), median(theirs_cpu));
    println!(
        "warm: CPU time (user + system) {:.3} s against {:.3} s: {:.2}x the baseline's",
        ours_cpu.as_secs_f64(),
        theirs_cpu.as_secs_f64(),
        ours_cpu.as_secs_f64() / theirs_cpu.as_secs_f64()
    );
}

fn cold(root: &Utf8Path) {
    let crates: Vec<Crate> = (0..COLD_FILES)
        .map(|i| Crate {
            name: format!("cold-crate{i}"),
            version: format!("0.{i}.1"),
            bytes: noise(1000 + i as u64, 8_000 + (i * 7919) % 90_000),
        })
        .collect();
    let total: usize = crates.iter().map(|c| c.bytes.len()).sum();
    let server = httpd::Server::start(LATENCY);
    for c in &crates {
        server.route(&format!("/{}/{}", c.name, c.version), vec![httpd::Reply::Body(c.bytes.clone())]);
    }
    let (port, config) =
        port(root, &crates, &format!("[makesum]\ncrate_url = \"{}/{{name}}/{{version}}\"\n", server.url()));
    let home = root.join("cargo-home");
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        let d = root.join(format!("distfiles-{n}"));
        let _ = fs::remove_dir_all(root.join(format!("distfiles-{}", n - 1)));
        d
    };
    let urls: Vec<String> = crates.iter().map(|c| format!("{}/{}/{}", server.url(), c.name, c.version)).collect();
    let curl = |dir: &Utf8Path| {
        fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("curl");
        cmd.arg("-sSf").current_dir(dir);
        for (i, u) in urls.iter().enumerate() {
            cmd.args(["-o", &format!("f{i}"), u]);
        }
        let start = Instant::now();
        assert!(cmd.status().unwrap().success());
        start.elapsed()
    };
    let (mut ours, mut one_by_one, mut by_curl) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        ours.push(makesum(&config, &port, &fresh(), &home, &[]));
        one_by_one.push(makesum(&config, &port, &fresh(), &home, &["-o", "makesum.jobs=1"]));
        by_curl.push(curl(&fresh()));
    }
    let (ours, one_by_one, by_curl) = (median(ours), median(one_by_one), median(by_curl));
    println!(
        "cold: {COLD_FILES} crates, {:.1} MB, {} ms per request: xtask makesum {:.3} s, one after another {:.3} s: {:.1}x faster (goal >= 5x)",
        total as f64 / 1e6,
        LATENCY.as_millis(),
        ours.as_secs_f64(),
        one_by_one.as_secs_f64(),
        one_by_one.as_secs_f64() / ours.as_secs_f64()
    );
    println!(
        "cold: against one curl fetching the same URLs one after another ({:.3} s): {:.1}x faster",
        by_curl.as_secs_f64(),
        by_curl.as_secs_f64() / ours.as_secs_f64()
    );
}
