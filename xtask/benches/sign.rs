//! Benchmark: `sign --verify-only` on a repository of 200 packages (>= 300 MB) against
//! `b2sum` over the same package files, timing the built binary; prints the ratio
//! (goal: at most 0.5 on 2 cores).

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::{Duration, Instant};

use test_support::repo::{make_repo, pubkey, signing_project, synthetic};

const PACKAGES: usize = 200;
const SIZE: usize = 1_600_000;
const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn main() {
    let p = signing_project("pubkey", "");
    let repo = p.scratch.path.join("repo");
    make_repo(&repo, &synthetic(PACKAGES, SIZE, 1, |_| false));
    p.run(&["sign", "--repo", repo.as_str()]).success();
    let files: Vec<String> = (0..PACKAGES).map(|i| repo.join(format!("All/pkg{i:03}-1.0.pkg")).to_string()).collect();
    let total = (PACKAGES * SIZE) as f64 / 1e6;

    let verify = || {
        let out = Command::new(test_support::xtask_bin())
            .args(["--config", p.config_path().as_str(), "sign", "--verify-only", "--repo", repo.as_str()])
            .args(["--pubkey", pubkey().as_str()])
            .env("CI", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    };
    let b2sum = || {
        let out = Command::new("b2sum").args(&files).output().expect("b2sum (coreutils) must be installed");
        assert!(out.status.success());
    };
    // Warm the page cache for both.
    verify();
    b2sum();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..ROUNDS {
        ours.push(time(verify));
        theirs.push(time(b2sum));
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "sign --verify-only, {PACKAGES} packages ({total:.0} MB), {cores} cores: {:.3} s; b2sum: {:.3} s; ratio {:.2} (goal <= 0.5)",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
