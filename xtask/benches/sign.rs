//! Benchmark: `sign --verify-only` on a repository of 200 packages (>= 300 MB) against
//! `b2sum` over the same package files, timing the built binary, once signed with the
//! RSA test key and once with the ecc (Ed25519) key of pkg-repo-2; prints one line per
//! figure with its goal (each at most 0.5 of b2sum on 2 cores, and ecc within the RSA
//! figure) and whether it was met.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::{Duration, Instant};

use camino::Utf8Path;
use test_support::Project;
use test_support::repo::{make_repo, private_key2, pubkey, sample2, signing_config_for, signing_project, synthetic};

const PACKAGES: usize = 200;
const SIZE: usize = 1_600_000;
const ROUNDS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// `sign --verify-only` on a repository (trusting a key) and `b2sum` over its packages.
struct Subject<'a> {
    project: &'a Project,
    repo: &'a Utf8Path,
    key: &'a Utf8Path,
}

impl Subject<'_> {
    fn verify(&self) {
        let out = Command::new(test_support::xtask_bin())
            .args([
                "--config",
                self.project.config_path().as_str(),
                "sign",
                "--verify-only",
                "--repo",
                self.repo.as_str(),
            ])
            .args(["--pubkey", self.key.as_str()])
            .env("CI", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }

    fn b2sum(&self) {
        let files: Vec<String> =
            (0..PACKAGES).map(|i| self.repo.join(format!("All/pkg{i:03}-1.0.pkg")).to_string()).collect();
        let out = Command::new("b2sum").args(&files).output().expect("b2sum (coreutils) must be installed");
        assert!(out.status.success());
    }
}

/// The median times of verify and b2sum for each subject, measured in turns within
/// each round so that a busy machine weighs on all of them alike.
fn measure(subjects: &[Subject]) -> Vec<(Duration, Duration)> {
    for s in subjects {
        // Warm the page cache.
        s.verify();
        s.b2sum();
    }
    let mut times: Vec<(Vec<Duration>, Vec<Duration>)> = subjects.iter().map(|_| (Vec::new(), Vec::new())).collect();
    for _ in 0..ROUNDS {
        for (s, t) in subjects.iter().zip(&mut times) {
            t.0.push(time(|| s.verify()));
            t.1.push(time(|| s.b2sum()));
        }
    }
    times.into_iter().map(|(a, b)| (median(a), median(b))).collect()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn main() {
    let total = (PACKAGES * SIZE) as f64 / 1e6;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pkgs = synthetic(PACKAGES, SIZE, 1, |_| false);

    let rsa = signing_project("pubkey", "");
    let rsa_repo = rsa.scratch.path.join("repo");
    make_repo(&rsa_repo, &pkgs);
    rsa.run(&["sign", "--repo", rsa_repo.as_str()]).success();

    let ecc = Project::new("");
    let key = private_key2(&ecc.scratch.path.join("keys"), "ecc-repo.key");
    let ecc_pub = sample2("keys/ecc-repo.pub");
    ecc.write_config(&signing_config_for(&key, &ecc_pub, "pubkey", &sample2("fingerprints-ecc")));
    let ecc_repo = ecc.scratch.path.join("repo");
    make_repo(&ecc_repo, &pkgs);
    ecc.run(&["sign", "--repo", ecc_repo.as_str()]).success();

    let rsa_key = pubkey();
    let figures = measure(&[
        Subject { project: &rsa, repo: &rsa_repo, key: &rsa_key },
        Subject { project: &ecc, repo: &ecc_repo, key: &ecc_pub },
    ]);
    let ratio = |(ours, theirs): (Duration, Duration)| ours.as_secs_f64() / theirs.as_secs_f64();
    let (rsa_ratio, ecc_ratio) = (ratio(figures[0]), ratio(figures[1]));
    println!(
        "sign --verify-only, rsa, {PACKAGES} packages ({total:.0} MB), {cores} cores: {:.3} s; b2sum: {:.3} s; ratio {rsa_ratio:.2} (goal <= 0.5): {}",
        figures[0].0.as_secs_f64(),
        figures[0].1.as_secs_f64(),
        verdict(rsa_ratio <= 0.5)
    );
    println!(
        "sign --verify-only, ecc, {PACKAGES} packages ({total:.0} MB), {cores} cores: {:.3} s; b2sum: {:.3} s; ratio {ecc_ratio:.2} (goal <= 0.5, the rsa figure's goal): {}",
        figures[1].0.as_secs_f64(),
        figures[1].1.as_secs_f64(),
        verdict(ecc_ratio <= 0.5)
    );
}
