//! Benchmark: writing the report of a big run, `cargo xtask report RUN`, on the built
//! binary: a bulk of 35,000 ports (1,000 failed, 2,000 skipped) and a gate whose console
//! is 64 MiB, the deciding line in its middle. Goals: under 1 s, and a page under 5 MB
//! that says where it cut the console and the lists. The baseline, timed in the same
//! run: copying the console file.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use camino::Utf8Path;
use test_support::Project;

const PORTS: usize = 35_000;
const FAILED: usize = 1_000;
const SKIPPED: usize = 2_000;
const CONSOLE_BYTES: u64 = 64 << 20;
const RUN: &str = "20260620T000000Z-b16b";

fn main() {
    let p = Project::new("");
    let state = p.state_dir();
    let run = state.join("runs").join(RUN);
    let log_dir = p.scratch.path.join("poudriere/data/logs/bulk/clawdie-amd64-clawdie").join(RUN);
    build_status(&log_dir);
    let deciding = console(&run.join("gate"));
    write_state(&state, &run, &log_dir, deciding);

    let baseline = median(5, || {
        let start = Instant::now();
        fs::copy(run.join("gate/console.log"), p.scratch.path.join("console.copy")).unwrap();
        start.elapsed()
    });
    let report = median(5, || {
        let mut cmd = p.command(&["report", RUN]);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let start = Instant::now();
        let out = cmd.output().unwrap();
        let took = start.elapsed();
        assert!(out.status.success(), "xtask report failed: {}", String::from_utf8_lossy(&out.stderr));
        took
    });
    let page = fs::read_to_string(run.join("report.html")).unwrap();
    assert!(page.contains("The console is cut to a bound"), "the page says it cut the console");
    assert!(page.contains("The list is cut"), "the page says it cut the lists");
    assert!(page.contains("id=\"deciding\"") || page.contains("class=\"deciding"), "the deciding line is there");
    let size = page.len() as f64 / 1e6;
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "baseline: copying the {} MiB console               {:>7.3} s",
        CONSOLE_BYTES >> 20,
        baseline.as_secs_f64()
    );
    println!(
        "report of a {PORTS}-port bulk and a 64 MiB console  {:>7.3} s  (goal: under 1 s) {}",
        report.as_secs_f64(),
        met(report < Duration::from_secs(1))
    );
    println!("report page size                                  {size:>7.2} MB (goal: under 5 MB) {}", met(size < 5.0));
}

fn median(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..n).map(|_| f()).collect();
    v.sort();
    v[n / 2]
}

/// poudriere's status files for a build of [`PORTS`] ports.
fn build_status(dir: &Utf8Path) {
    fs::create_dir_all(dir.join("logs/errors")).unwrap();
    let w = |name: &str, text: String| fs::write(dir.join(name), text).unwrap();
    w(".poudriere.status", "stopped:done:\n".into());
    let built = PORTS - FAILED - SKIPPED;
    for (k, v) in
        [("queued", PORTS), ("built", built), ("failed", FAILED), ("skipped", SKIPPED), ("ignored", 0), ("fetched", 0)]
    {
        w(&format!(".poudriere.stats_{k}"), format!("{v}\n"));
    }
    let mut queued = String::new();
    let mut b = String::new();
    let mut f = String::new();
    let mut s = String::new();
    for i in 0..PORTS {
        let (origin, pkg) = (format!("misc/port{i}"), format!("port{i}-1.{i}"));
        queued.push_str(&format!("{origin} {pkg} listed\n"));
        match i {
            i if i < FAILED => f.push_str(&format!("{origin} {pkg} build rust 61\n")),
            i if i < FAILED + SKIPPED => s.push_str(&format!("{origin} {pkg} port0-1.0\n")),
            _ => b.push_str(&format!("{origin} {pkg} 298\n")),
        }
    }
    w(".poudriere.ports.queued", queued);
    w(".poudriere.ports.built", b);
    w(".poudriere.ports.failed", f);
    w(".poudriere.ports.skipped", s);
    for l in ["ignored", "fetched"] {
        w(&format!(".poudriere.ports.{l}"), String::new());
    }
}

/// A 64 MiB console with times, as the gate writes it; returns the deciding line.
fn console(dir: &Utf8Path) -> u64 {
    fs::create_dir_all(dir).unwrap();
    let mut out = std::io::BufWriter::new(fs::File::create(dir.join("console.log")).unwrap());
    let (mut bytes, mut line) = (0u64, 0u64);
    let mut deciding = 0;
    while bytes < CONSOLE_BYTES {
        line += 1;
        let text = if bytes >= CONSOLE_BYTES / 2 && deciding == 0 {
            deciding = line;
            "panic: page fault while in kernel mode".to_owned()
        } else {
            format!("kernel: <driver{}> attached at pci0 slot {} function {} & <more>", line % 97, line % 31, line % 7)
        };
        let l = format!("[{:>6}.{:03}] {text}\n", line / 1000, line % 1000);
        bytes += l.len() as u64;
        out.write_all(l.as_bytes()).unwrap();
    }
    out.flush().unwrap();
    deciding
}

fn write_state(state: &Utf8Path, run: &Utf8Path, log_dir: &Utf8Path, deciding: u64) {
    let result = serde_json::json!({
        "schema": 1, "verdict": "fail", "reason": "the forbidden pattern `panic` appeared", "backend": "bhyve",
        "decided_by": {"kind": "forbidden", "name": "panic", "line_number": deciding, "at_secs": 30.0, "at": "", "at_unix": 0.0},
        "console": "console.log",
        "final_attempt": {"console": "console.log", "console_lines": deciding * 2, "console_bytes": CONSOLE_BYTES,
            "markers": [{"name": "Trying to mount root from", "within_secs": 300, "seen_at_secs": 3.0, "line_number": 100}]},
    });
    fs::write(run.join("gate/result.json"), serde_json::to_string_pretty(&result).unwrap()).unwrap();
    fs::create_dir_all(run.join("logs")).unwrap();
    fs::write(run.join("logs/gate.log"), "console...\nerror: the image failed the boot gate\n").unwrap();
    let success = |outputs: serde_json::Value| serde_json::json!({"run": RUN, "ended": "2026-06-20T01:00:00.000Z", "fingerprint": "f", "outputs": outputs});
    let state_json = serde_json::json!({
        "version": 1, "id": RUN, "created": "2026-06-20T00:00:00.000Z", "command": "release",
        "stages": ["bulk", "gate"],
        "records": {
            "bulk": {"status": "succeeded", "duration_ms": 3_600_000, "attempts": 1, "log": format!("runs/{RUN}/logs/bulk.log"),
                "last_success": success(serde_json::json!({"build_name": RUN, "mastername": "clawdie-amd64-clawdie",
                    "set": null, "log_dir": log_dir, "repo": "/nonexistent", "packages": []}))},
            "gate": {"status": "failed", "duration_ms": 60_000, "attempts": 1, "log": format!("runs/{RUN}/logs/gate.log"),
                "error": "the image failed the boot gate: the forbidden pattern `panic` appeared"},
        }
    });
    fs::write(run.join("state.json"), serde_json::to_string_pretty(&state_json).unwrap()).unwrap();
    fs::write(state.join("current"), format!("{RUN}\n")).unwrap();
}
