//! Benchmark: a no-op `release` (every stage up to date) against `xtask --help`, both
//! timed on the built binary in the same run. Goal: within 2x.
//!
//! The pipeline is the stages that run on Linux without further infrastructure (port,
//! makesum) on the example colibri; the fingerprints of a no-op release never spawn a
//! process, so the figure does not depend on which stages are listed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let bin = env!("CARGO_BIN_EXE_xtask");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/colibri");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("mother-build");
    let colibri = dir.path().join("colibri");
    std::fs::create_dir_all(&root).unwrap();
    copy(fixture.as_ref(), &colibri);
    for args in [&["init", "-q"][..], &["add", "-A"], &["commit", "-qm", "colibri 0.9.0"], &["tag", "v0.9.0"]] {
        let ok = Command::new("git")
            .arg("-C")
            .arg(&colibri)
            .args(["-c", "user.name=bench", "-c", "user.email=bench@example.org"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }
    let stages = std::env::var("NOOP_STAGES").unwrap_or_else(|_| "\"port\"".into());
    let config = root.join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nstages = [{stages}]\n[port]\ncolibri = \"../colibri\"\n[poudriere]\ndistfiles = \"distfiles\"\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let start = Instant::now();
        let status = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("CI", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "xtask {args:?} failed");
        start.elapsed()
    };
    run(&["release"]); // the real run; everything after is a no-op
    let n = 100;
    let median = |f: &dyn Fn() -> Duration| {
        let mut v: Vec<Duration> = (0..n).map(|_| f()).collect();
        v.sort();
        v[n / 2]
    };
    let help = median(&|| run(&["--help"]));
    let noop = median(&|| run(&["release"]));
    println!("xtask --help           median {:>8.2} ms", help.as_secs_f64() * 1e3);
    println!("no-op release ({stages}) median {:>8.2} ms", noop.as_secs_f64() * 1e3);
    println!("ratio no-op release / --help: {:.2}x (goal: at most 2x)", noop.as_secs_f64() / help.as_secs_f64());
}

fn copy(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}
