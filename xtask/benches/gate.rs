//! Benchmark of the boot gate's reaction time, with a scripted console (the `command`
//! backend): from the byte that decides (the last marker, or a forbidden pattern) to the
//! verdict, and to the console process being gone. Medians over 50 runs of the built
//! binary, each against a baseline measured in the same run: this program reading the
//! same console through a bare pipe and stopping it with SIGTERM itself.
//!
//! The console is this program again (`--console MODE STAMP`): it records the time just
//! before it writes the deciding bytes; the gate's result.json has the verdict's time
//! and when the console was gone. Goals: under 50 ms to the verdict, under 1 s to
//! teardown.
//!
//! Run: `cargo bench -p xtask --bench gate`.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RUNS: usize = 50;
/// What the console prints before the deciding bytes.
const BOOT: &[u8] = b"Trying to mount root from cd9660\r\nStarting colibri_daemon.\r\ncolibri_daemon: started\r\n\r\n";

fn deciding(mode: &str) -> &'static [u8] {
    match mode {
        "pass" => b"login: ",
        _ => b"panic: page fault while in kernel mode\r\n",
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--console") {
        return console(&args[2], Path::new(&args[3]));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        "[pipeline]\nstate_dir = \"state\"\n\n[gate]\nbackend = \"command\"\nsettle_secs = 0\ngrace_secs = 5\nretries = 0\n",
    )
    .unwrap();
    println!("gate reaction time, medians of {RUNS} runs (baseline: a bare pipe reader that stops the console itself)");
    for mode in ["pass", "fail"] {
        let mut gate = (Vec::new(), Vec::new());
        let mut base = (Vec::new(), Vec::new());
        for i in 0..RUNS {
            let stamp = dir.path().join(format!("stamp-{mode}-{i}"));
            let (verdict, gone) = run_gate(dir.path(), &config, mode, &stamp);
            gate.0.push(verdict);
            gate.1.push(gone);
            let (verdict, gone) = run_baseline(mode, &dir.path().join(format!("base-{mode}-{i}")));
            base.0.push(verdict);
            base.1.push(gone);
        }
        let what = if mode == "pass" { "last marker" } else { "forbidden pattern" };
        report(&format!("{mode}: {what} -> verdict"), median(&mut gate.0), median(&mut base.0), 0.050);
        report(&format!("{mode}: {what} -> console gone"), median(&mut gate.1), median(&mut base.1), 1.0);
    }
}

fn report(what: &str, gate: f64, base: f64, goal: f64) {
    let ok = if gate < goal { "meets" } else { "MISSES" };
    println!(
        "{what:<42} {:>8.2} ms  baseline {:>6.2} ms  ratio {:>6.1}x  ({ok} the goal of {} ms)",
        gate * 1e3,
        base * 1e3,
        gate / base,
        goal * 1e3
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One `xtask gate` with this program as the console: (deciding byte -> verdict,
/// deciding byte -> console gone), in seconds.
fn run_gate(dir: &Path, config: &Path, mode: &str, stamp: &Path) -> (f64, f64) {
    let me = std::env::current_exe().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--config")
        .arg(config)
        .args(["gate", "--"])
        .arg(&me)
        .args(["--console", mode])
        .arg(stamp)
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let expected = if mode == "pass" { Some(0) } else { Some(1) };
    assert_eq!(out.status.code(), expected, "{}", String::from_utf8_lossy(&out.stderr));
    let id = std::fs::read_to_string(dir.join("state/current")).unwrap();
    let result = dir.join("state/runs").join(id.trim()).join("gate/result.json");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(result).unwrap()).unwrap();
    let byte = read_stamp(stamp);
    let verdict = r["decided_at_unix"].as_f64().unwrap();
    let gone = r["console_gone_at_unix"].as_f64().unwrap();
    (verdict - byte, gone - byte)
}

/// The same console read by this program: (deciding byte -> seen, deciding byte ->
/// gone after SIGTERM to its group), in seconds.
fn run_baseline(mode: &str, stamp: &Path) -> (f64, f64) {
    let me = std::env::current_exe().unwrap();
    let mut child = Command::new(me)
        .args(["--console", mode])
        .arg(stamp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let want = deciding(mode);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(want.len()).any(|w| w == want) {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "the console ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let verdict = now();
    // SAFETY: kill(2) of the group we started.
    unsafe { libc::killpg(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let gone = now();
    let byte = read_stamp(stamp);
    (verdict - byte, gone - byte)
}

fn read_stamp(path: &Path) -> f64 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// The console: the boot, a pause, then the deciding bytes (timed just before they are
/// written), then it waits to be stopped. SIGTERM is held back until the time is on
/// disk, so a fast gate cannot stop it before.
fn console(mode: &str, stamp: &Path) {
    let mut out = std::io::stdout().lock();
    out.write_all(BOOT).unwrap();
    out.flush().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // SAFETY: sigprocmask on an initialised set holding SIGTERM.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let at = now();
    out.write_all(deciding(mode)).unwrap();
    out.flush().unwrap();
    std::fs::write(stamp, format!("{at:.6}\n")).unwrap();
    // SAFETY: as above; a pending SIGTERM is delivered now.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    std::thread::sleep(Duration::from_secs(60));
}
