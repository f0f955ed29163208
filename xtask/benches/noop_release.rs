//! Benchmark: a no-op `release` (all seven stages up to date) against `xtask --help`,
//! both timed on the built binary in the same run. Goal: within 2x.
//!
//! The pipeline is the end-to-end test's (test_support::pipeline): one real release
//! first (port, makesum, bulk through the poudriere stand-in, sign, publish through
//! nginx, iso through the pkg stand-in, the gate in QEMU), then every further `release`
//! finds each stage up to date. Needs what `.ci/deps` installs.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use test_support::pipeline;

fn main() {
    let r = pipeline::Release::start();
    let first = r.run(&["release"]);
    assert!(first.output.status.success(), "the first release failed:\n{}", first.stderr());
    let time = |args: &[&str]| {
        let mut cmd = r.h.p.command(args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd.status().unwrap();
        let took = start.elapsed();
        assert!(status.success(), "xtask {args:?} failed");
        took
    };
    let n = 101;
    let median = |args: &[&str]| {
        let mut v: Vec<Duration> = (0..n).map(|_| time(args)).collect();
        v.sort();
        v[n / 2]
    };
    let help = median(&["--help"]);
    let noop = median(&["release"]);
    println!("xtask --help                      median {:>7.2} ms", help.as_secs_f64() * 1e3);
    println!("no-op release (7 stages up to date) median {:>7.2} ms", noop.as_secs_f64() * 1e3);
    println!("ratio no-op release / --help: {:.2}x (goal: at most 2x)", noop.as_secs_f64() / help.as_secs_f64());
    if std::env::var_os("NOOP_KEEP").is_some() {
        // For profiling by hand: keep the project (and its nginx) until interrupted.
        let cmd = r.h.p.command(&["release"]);
        eprintln!("kept: {cmd:?}");
        std::thread::sleep(Duration::from_secs(3600));
    }
}
