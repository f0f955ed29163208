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

/// The median time of `sign --verify-only` on `repo` (trusting `key`) and of `b2sum`
/// over its package files.
fn measure(p: &Project, repo: &Utf8Path, key: &Utf8Path) -> (Duration, Duration) {
    let files: Vec<String> = (0..PACKAGES).map(|i| repo.join(format!("All/pkg{i:03}-1.0.pkg")).to_string()).collect();
    let verify = || {
        let out = Command::new(test_support::xtask_bin())
            .args(["--config", p.config_path().as_str(), "sign", "--verify-only", "--repo", repo.as_str()])
            .args(["--pubkey", key.as_str()])
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
    (median(ours), median(theirs))
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
    let (rsa_ours, rsa_b2) = measure(&rsa, &rsa_repo, &pubkey());
    let rsa_ratio = rsa_ours.as_secs_f64() / rsa_b2.as_secs_f64();
    println!(
        "sign --verify-only, rsa, {PACKAGES} packages ({total:.0} MB), {cores} cores: {:.3} s; b2sum: {:.3} s; ratio {rsa_ratio:.2} (goal <= 0.5): {}",
        rsa_ours.as_secs_f64(),
        rsa_b2.as_secs_f64(),
        verdict(rsa_ratio <= 0.5)
    );

    let ecc = Project::new("");
    let key = private_key2(&ecc.scratch.path.join("keys"), "ecc-repo.key");
    let ecc_pub = sample2("keys/ecc-repo.pub");
    ecc.write_config(&signing_config_for(&key, &ecc_pub, "pubkey", &sample2("fingerprints-ecc")));
    let ecc_repo = ecc.scratch.path.join("repo");
    make_repo(&ecc_repo, &pkgs);
    ecc.run(&["sign", "--repo", ecc_repo.as_str()]).success();
    let (ecc_ours, ecc_b2) = measure(&ecc, &ecc_repo, &ecc_pub);
    let ecc_ratio = ecc_ours.as_secs_f64() / ecc_b2.as_secs_f64();
    println!(
        "sign --verify-only, ecc, {PACKAGES} packages ({total:.0} MB), {cores} cores: {:.3} s; b2sum: {:.3} s; ratio {ecc_ratio:.2} (goal <= 0.5 and <= the rsa ratio {rsa_ratio:.2} + 0.05): {}",
        ecc_ours.as_secs_f64(),
        ecc_b2.as_secs_f64(),
        verdict(ecc_ratio <= 0.5 && ecc_ratio <= rsa_ratio + 0.05)
    );
}
