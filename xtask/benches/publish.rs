//! Benchmark: publishing a release of 200 packages (>= 300 MB) to a fresh local site,
//! against publishing the next release in which one package changed (one package and
//! the catalogue copied, the rest hard-linked); timing the built binary; prints the ratio
//! (goal: under 0.1).

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::{Duration, Instant};

use camino::Utf8Path;
use test_support::repo::{make_repo, signing_project, synthetic};

const PACKAGES: usize = 200;
const SIZE: usize = 1_600_000;
const FIRST_ROUNDS: usize = 3;
const NEXT_ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let p = signing_project("pubkey", "\n[publish]\ncheck = false\nkeep = 3\n");
    let a = p.scratch.path.join("a");
    let b = p.scratch.path.join("b");
    make_repo(&a, &synthetic(PACKAGES, SIZE, 1, |_| false));
    make_repo(&b, &synthetic(PACKAGES, SIZE, 2, |i| i == 100));
    for repo in [&b, &a] {
        p.run(&["sign", "--repo", repo.as_str()]).success();
    }
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    let publish = |site: &Utf8Path| -> Duration {
        p.write_raw_config(&format!("{config}target = \"{site}\"\n"));
        let start = Instant::now();
        let out = Command::new(test_support::xtask_bin())
            .args(["--config", p.config_path().as_str(), "publish"])
            .env("CI", "1")
            .output()
            .unwrap();
        let took = start.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        took
    };
    let sign = |repo: &Utf8Path| {
        p.run(&["sign", "--repo", repo.as_str()]).success();
    };

    // The first release, each time to a fresh site (the current sign outputs are a's).
    let mut first = Vec::new();
    for round in 0..FIRST_ROUNDS {
        let site = p.scratch.path.join(format!("site{round}"));
        first.push(publish(&site));
    }
    // The next releases alternate between b and a: one package differs each time.
    let site = p.scratch.path.join(format!("site{}", FIRST_ROUNDS - 1));
    let mut next = Vec::new();
    for round in 0..NEXT_ROUNDS {
        sign(if round % 2 == 0 { &b } else { &a });
        next.push(publish(&site));
    }
    let (first, next) = (median(first), median(next));
    let total = (PACKAGES * SIZE) as f64 / 1e6;
    println!(
        "publish, {PACKAGES} packages ({total:.0} MB): first release {:.3} s; next release with 1 package changed {:.3} s; ratio {:.3} (goal < 0.1)",
        first.as_secs_f64(),
        next.as_secs_f64(),
        next.as_secs_f64() / first.as_secs_f64()
    );
}
