//! Benchmark: judging a finished poudriere build whose status files list 35,000 ports
//! (a full ports tree) with `xtask bulk --judge`, against `wc -l` over the same files.
//! Goal: under 0.5 s, and within 20x of wc. Run with `cargo bench --bench bulk`.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PORTS: usize = 35_000;
const ROUNDS: usize = 15;

fn main() {
    let scratch = tempfile::Builder::new().prefix("mb-bench-bulk-").tempdir().unwrap();
    let root = scratch.path();
    let (build, files) = make_build(root);
    let config = root.join("pipeline.toml");
    fs::write(&config, format!("[pipeline]\nstate_dir = \"{}\"\n", root.join("state").display())).unwrap();

    let xtask = env!("CARGO_BIN_EXE_xtask");
    let judge = || {
        let out = Command::new(xtask)
            .args(["--config", config.to_str().unwrap(), "bulk", "--judge", build.to_str().unwrap()])
            .env("CI", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        out
    };
    let wc = || {
        let out = Command::new("wc").arg("-l").args(&files).output().unwrap();
        assert!(out.status.success());
        out
    };
    // Sanity: the judgement read every list.
    let text = String::from_utf8(judge().stdout).unwrap();
    assert!(text.contains("sysutils/colibri: built colibri-0.9.0"), "{text}");
    assert!(text.contains(&format!("queued {PORTS}")), "{text}");

    let ours = median(ROUNDS, judge);
    let base = median(ROUNDS, wc);
    let lines: usize = files.iter().map(|f| fs::read_to_string(f).unwrap().lines().count()).sum();
    println!(
        "bulk --judge, {lines} status lines ({PORTS} ports): {:.1} ms; wc -l: {:.1} ms; ratio {:.1}x wc (goal < 500 ms, < 20x)",
        ms(ours),
        ms(base),
        ours.as_secs_f64() / base.as_secs_f64()
    );
}

fn median<T>(rounds: usize, mut f: impl FnMut() -> T) -> Duration {
    f(); // warm the page cache
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[rounds / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// POUDRIERE_DATA/{logs/bulk/M/B, packages/M} for a full-tree build (`bulk -a`: every
/// port listed) in which colibri was built: 1,000 failed (every tenth a crashed builder),
/// 800 skipped, 200 ignored, the rest built; committed as poudriere 3.4.8 commits.
fn make_build(root: &Path) -> (PathBuf, Vec<PathBuf>) {
    let data = root.join("data");
    let build = data.join("logs/bulk/clawdie-amd64-clawdie/bench");
    fs::create_dir_all(build.join("logs/errors")).unwrap();
    let (failed, skipped, ignored) = (1_000, 800, 200);
    let built = PORTS - failed - skipped - ignored;
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
        &mut (0..PORTS - 1)
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
        ("queued", PORTS),
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
