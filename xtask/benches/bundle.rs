//! Benchmark: `bundle` and `unbundle` of bulk's repository of 200 packages (320 MB),
//! against `tar -cf` and `tar -xf` of the same files in the same run; timing the built
//! binary; one line per figure with its goal (at most 1.5x tar) and whether it was met.
//! unbundle flushes what it received to disk before the run names it (a crash must not
//! leave the run pointing at files the disk never got); `tar -xf` does not, so it is
//! also measured followed by `sync` of the files it wrote, like for like. Also says what
//! zstd (level 1, one thread) would add to a bundle: the packages are compressed
//! already, which is why bundles are not.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::Project;
use test_support::repo::{make_repo, synthetic};

const PACKAGES: usize = 200;
const SIZE: usize = 1_600_000;
const ROUNDS: usize = 3;
const GOAL: f64 = 1.5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.env("CI", "1").stdin(Stdio::null()).output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

/// A run whose port and bulk succeeded, bulk's repository holding `PACKAGES` packages.
fn built_run(p: &Project) {
    let packages = p.scratch.path.join("poudriere/data/packages/clawdie-amd64-clawdie");
    let real = packages.join(".real_1");
    make_repo(&real, &synthetic(PACKAGES, SIZE, 1, |_| false));
    std::os::unix::fs::symlink(&real, packages.join(".latest")).unwrap();
    let id = "20260620T000000Z-0001";
    let dir = p.state_dir().join("runs").join(id);
    fs::create_dir_all(dir.join("logs")).unwrap();
    let bulk = serde_json::json!({
        "build_name": "2026-06-20_00h00m00s", "mastername": "clawdie-amd64-clawdie", "set": null,
        "log_dir": "/usr/local/poudriere/data/logs/bulk/clawdie-amd64-clawdie/2026-06-20_00h00m00s",
        "repo": packages.join(".latest"), "real": real, "packages": []
    });
    let port = serde_json::json!({
        "origin": "sysutils/colibri", "port_dir": "ports/sysutils/colibri", "overlay": "ports",
        "checkout": "../colibri", "portname": "colibri", "distversion": "0.9.0", "tag": "v0.9.0",
        "commit": "3be06a11b4e0d5c9a1c2e3f4a5b6c7d8e9f0a1b2", "dirty": false, "allow_dirty": false,
        "cargo_lock_sha256": "0".repeat(64), "crates": 1, "tree": "x"
    });
    let record = |outputs: serde_json::Value| {
        serde_json::json!({"status": "succeeded", "attempts": 1, "last_success":
            {"run": id, "ended": "2026-06-20T00:00:00.000Z", "fingerprint": "x", "outputs": outputs}})
    };
    let state = serde_json::json!({
        "version": 1, "id": id, "created": "2026-06-20T00:00:00.000Z", "command": "release",
        "stages": ["port", "makesum", "bulk", "sign", "publish", "iso", "gate"],
        "records": {"port": record(port), "bulk": record(bulk)}
    });
    fs::write(dir.join("state.json"), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    fs::write(p.state_dir().join("current"), format!("{id}\n")).unwrap();
}

fn verdict(ratio: f64) -> &'static str {
    if ratio <= GOAL { "met" } else { "MISSED" }
}

fn main() {
    let p = Project::new("");
    built_run(&p);
    let real = p.scratch.path.join("poudriere/data/packages/clawdie-amd64-clawdie/.real_1");
    let s = &p.scratch.path;
    let xtask = |args: &[&str]| {
        let mut cmd = Command::new(test_support::xtask_bin());
        cmd.args(["--config", p.config_path().as_str()]).args(args);
        cmd
    };
    let (mut bundle, mut tar_c, mut unbundle, mut tar_x, mut tar_x_sync) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (b, t) = (s.join("bulk.bundle"), s.join("bulk.tar"));
    for round in 0..ROUNDS {
        let _ = fs::remove_file(&b);
        let _ = fs::remove_file(&t);
        bundle.push(timed(&mut xtask(&["bundle", "--stage", "bulk", "--output", b.as_str()])));
        tar_c.push(timed(Command::new("tar").args(["-cf", t.as_str(), "-C", real.as_str(), "."])));
        let into = s.join(format!("receiving{round}"));
        unbundle.push(timed(&mut xtask(&["--state-dir", into.as_str(), "unbundle", b.as_str()])));
        let out = s.join(format!("untarred{round}"));
        fs::create_dir_all(&out).unwrap();
        tar_x.push(timed(Command::new("tar").args(["-xf", t.as_str(), "-C", out.as_str()])));
        let synced = s.join(format!("synced{round}"));
        fs::create_dir_all(&synced).unwrap();
        let script = "tar -xf \"$1\" -C \"$2\" && find \"$2\" -type f -exec sync -- {} +";
        tar_x_sync.push(timed(Command::new("sh").args(["-c", script, "sh", t.as_str(), synced.as_str()])));
        let _ = fs::remove_dir_all(&synced);
        // Free the space for the next round.
        let _ = fs::remove_dir_all(&into);
        let _ = fs::remove_dir_all(&out);
    }
    let zstd = median(
        (0..ROUNDS)
            .map(|_| timed(Command::new("zstd").args(["-1", "-T1", "-q", "-f", "-o", "/dev/null", b.as_str()])))
            .collect(),
    );
    let zstd_size = zstd::encode_all(fs::File::open(&b).unwrap(), 1).unwrap().len() as f64;
    let size = fs::metadata(&b).unwrap().len() as f64;

    let total = (PACKAGES * SIZE) as f64 / 1e6;
    for (what, ours, theirs, baseline) in [
        ("bundle", &bundle, &tar_c, "tar -cf"),
        ("unbundle", &unbundle, &tar_x, "tar -xf"),
        ("unbundle", &unbundle, &tar_x_sync, "tar -xf then sync of its files"),
    ] {
        let (ours, theirs) = (median(ours.clone()), median(theirs.clone()));
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        println!(
            "{what}, {PACKAGES} packages ({total:.0} MB): {:.3} s; {baseline} of the same files {:.3} s; ratio {ratio:.2} (goal <= {GOAL}): {}",
            ours.as_secs_f64(),
            theirs.as_secs_f64(),
            verdict(ratio)
        );
    }
    println!(
        "zstd -1 of the bundle (not done; informational): {:.3} s more, {:.1}% of its size",
        zstd.as_secs_f64(),
        100.0 * zstd_size / size
    );
}
