//! Benchmark: judging a finished poudriere build whose status files list 35,000 ports
//! (a full ports tree) with `xtask bulk --judge`, against `wc -l` over the same files.
//! Goal: under 0.5 s, and within 20x of wc. Run with `cargo bench --bench bulk`.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

const PORTS: usize = 35_000;
const ROUNDS: usize = 15;

fn main() {
    let scratch = tempfile::Builder::new().prefix("mb-bench-bulk-").tempdir().unwrap();
    let root = scratch.path();
    let (build, files) = test_support::scale::poudriere_build(root, PORTS);
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
