//! Benchmark of the boot gate, with a scripted console (the `command` backend) and the
//! full default pattern set (every FreeBSD default, the restart rule, the markers):
//!
//! - reaction time: from the byte that decides (the last marker, or a forbidden
//!   pattern) to the verdict, and to the console process being gone; medians over 50
//!   runs. Goals: under 50 ms to the verdict, under 1 s to teardown;
//! - throughput: a 64 MiB console (a FreeBSD boot's lines and their look-alikes, over
//!   and over) from its first byte to the verdict at the marker that follows it, every
//!   byte scanned and recorded; median of 5 runs. Goal: under 1 s;
//! - reaction time after that flood: the deciding bytes a second after 64 MiB; goal:
//!   under 50 ms;
//! - a hostile console: 100 MB without a newline after the first marker, then it keeps
//!   running, deaf to SIGTERM (`gate.timeout_secs = 5`, `grace_secs = 2`): the gate's
//!   peak memory (the kernel's ru_maxrss of the xtask process, through wait4; goal
//!   under 100 MB), how long after the timeout (counted from the boot's start) the
//!   verdict came and xtask ended (its teardown waits out the grace; goal for both:
//!   within the grace period plus 1 s), and
//!   the largest of result.json, junit.xml and state.json (goal under 64 KiB).
//!
//! Each figure is printed on one line with its goal, `met` or `MISSED`, and its ratio to
//! a baseline measured in the same run: this program reading the same console through
//! a bare pipe (and stopping it with SIGTERM itself).
//!
//! The console is this program again (`--console MODE STAMP`): it records the time just
//! before it writes the bytes being timed; the gate's result.json has the verdict's time
//! and when the console was gone.
//!
//! Run: `cargo bench -p xtask --bench gate` (`-- endless`: the hostile console alone).

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RUNS: usize = 50;
const FLOOD_RUNS: usize = 5;
/// The size of the flooded console.
const FLOOD: usize = 64 << 20;
/// What the console prints before the deciding bytes.
const MOUNTED: &[u8] = b"Trying to mount root from cd9660:/dev/iso9660/CLAWDIE [ro]...\r\n";
const STARTED: &[u8] = b"Starting colibri_daemon.\r\ncolibri_daemon: started\r\n\r\n";

fn deciding(mode: &str) -> &'static [u8] {
    match mode {
        "pass" | "flood-pass" | "scan" => b"login: ",
        _ => b"panic: page fault while in kernel mode\r\n",
    }
}

/// A FreeBSD boot's console lines and the look-alikes of its failures, none of which
/// fails a boot or is a marker: the flood is made of these, over and over.
const FLOOD_LINES: &[&str] = &[
    "---<<BOOT>>---",
    "Copyright (c) 1992-2025 The FreeBSD Project.",
    "FreeBSD 15.0-RELEASE releng/15.0-n280000 GENERIC amd64",
    "CPU: Intel(R) Xeon(R) CPU E5-2430 v2 @ 2.50GHz (2500.06-MHz K8-class CPU)",
    "  Features=0x1783fbff<FPU,VME,DE,PSE,TSC,MSR,PAE,MCE,CX8,APIC,SEP,MTRR,PGE,MCA,CMOV>",
    "real memory  = 2147483648 (2048 MB)",
    "avail memory = 2045468672 (1950 MB)",
    "ACPI Warning: FADT (revision 5) is longer than ACPI 2.0 version (20250404/tbfadt-637)",
    "ACPI BIOS Warning (bug): Optional FADT field Pm2ControlBlock has valid Length but zero Address (20250404/tbfadt-796)",
    "KDB: debugger backends: ddb",
    "KDB: current backend: ddb",
    "Deprecated code (to be removed in FreeBSD 16): something old",
    "virtio_pci0: <VirtIO PCI (legacy) Network adapter> port 0x2000-0x201f mem 0xc0000000-0xc0001fff at device 2.0 on pci0",
    "ahcich0: <AHCI channel> at channel 0 on ahci0",
    "cd0 at ahcich0 bus 0 scbus0 target 0 lun 0",
    "Mounting from cd9660:/dev/iso9660/CLAWDIE failed with error 19; retrying for 3 more seconds",
    "Mounting /etc/fstab filesystems failed, will retry after root mount hold release",
    "kldload: can't load vmm: module already loaded or in kernel",
    "/etc/rc: WARNING: Dump device does not exist.  Savecore not run.",
    "/etc/rc: WARNING: failed to start sendmail",
    "No core dumps found.",
    "savecore 880 - - reboot after panic: page fault",
    "Sep 13 04:00:21 clawdie savecore[880]: reboot after panic: page fault",
    "BdsDxe: loading Boot0001 \"UEFI BHYVE SATA DVD ROM BHYVE-0000\" from PciRoot(0x0)/Pci(0x3,0x0)/Sata(0x0,0xFFFF,0x0)",
    "BdsDxe: failed to load Boot0003 \"UEFI PXEv4 (MAC:00A098123456)\" from PciRoot(0x0)/Pci(0x2,0x0): Not Found",
    "pid 1234 (sh), jid 0, uid 0: exited on signal 15",
    "Jan  1 00:00:09 clawdie login[901]: ROOT LOGIN (root) ON ttyu0",
    "sshd: /etc/ssh/ssh_host_key: Permission denied",
    "Starting syslogd.",
    "Starting cron.",
    "Setting hostname: clawdie.",
];

/// `bytes` of console: the flood lines with a counter, CRLF-ended, as a serial console.
fn flood(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 256);
    let mut i = 0usize;
    while out.len() < bytes {
        let line = FLOOD_LINES[i % FLOOD_LINES.len()];
        out.extend_from_slice(format!("{line} [{i}]\r\n").as_bytes());
        i += 1;
    }
    out
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
    // `cargo bench -p xtask --bench gate -- endless`: the hostile console alone.
    if args.iter().any(|a| a == "endless") {
        if endless_line(dir.path()) {
            println!("some figures MISSED their goal");
        }
        return;
    }
    let config = dir.path().join("pipeline.toml");
    // The default markers, forbidden patterns and restart rule; no probes (the console
    // has no login).
    std::fs::write(
        &config,
        "[pipeline]\nstate_dir = \"state\"\n\n[gate]\nbackend = \"command\"\nsettle_secs = 0\ngrace_secs = 5\nretries = 0\nprobes = []\n",
    )
    .unwrap();
    println!("boot gate, the full default pattern set (baseline: a bare pipe reader that stops the console itself)");
    let mut missed = false;
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
        missed |= report(&format!("{mode}: {what} -> verdict"), RUNS, median(&mut gate.0), median(&mut base.0), 0.050);
        missed |=
            report(&format!("{mode}: {what} -> console gone"), RUNS, median(&mut gate.1), median(&mut base.1), 1.0);
    }
    for (mode, what, goal) in [
        ("scan", "64 MiB console: first byte -> verdict", 1.0),
        ("flood-pass", "after 64 MiB: last marker -> verdict", 0.050),
        ("flood-fail", "after 64 MiB: forbidden pattern -> verdict", 0.050),
    ] {
        let mut gate = Vec::new();
        let mut base = Vec::new();
        for i in 0..FLOOD_RUNS {
            let stamp = dir.path().join(format!("stamp-{mode}-{i}"));
            gate.push(run_gate(dir.path(), &config, mode, &stamp).0);
            base.push(run_baseline(mode, &dir.path().join(format!("base-{mode}-{i}"))).0);
            // Each run leaves 128 MiB (its console and its log); keep the disk light.
            let _ = std::fs::remove_dir_all(dir.path().join("state"));
        }
        missed |= report(what, FLOOD_RUNS, median(&mut gate), median(&mut base), goal);
    }
    missed |= endless_line(dir.path());
    if missed {
        println!("some figures MISSED their goal");
    }
}

/// The timeout and grace period of the hostile-console run.
const ENDLESS_TIMEOUT: u64 = 5;
const ENDLESS_GRACE: u64 = 2;

/// The 100 MB no-newline console, once: one line per figure against its bound. Returns
/// whether any was missed.
fn endless_line(dir: &Path) -> bool {
    let config = dir.join("endless.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nstate_dir = \"endless-state\"\n\n[gate]\nbackend = \"command\"\nsettle_secs = 0\ngrace_secs = {ENDLESS_GRACE}\ntimeout_secs = {ENDLESS_TIMEOUT}\nretries = 0\nprobes = []\n"
        ),
    )
    .unwrap();
    let me = std::env::current_exe().unwrap();
    // Reaped by wait4 below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--config")
        .arg(&config)
        .args(["gate", "--"])
        .arg(&me)
        .args(["--console", "endless"])
        .arg(dir.join("unused-stamp"))
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers; the Child is not waited on again.
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let ended = now();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1, "the gate did not fail the image: {status}");
    let id = std::fs::read_to_string(dir.join("endless-state/current")).unwrap();
    let run = dir.join("endless-state/runs").join(id.trim());
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("gate/result.json")).unwrap()).unwrap();
    let verdict = r["seconds"].as_f64().unwrap();
    // From the boot's start, where gate.timeout_secs counts from (xtask's own start-up
    // is not the gate's).
    let boot = r["final_attempt"]["started_at_unix"].as_f64().unwrap();
    let wall = ended - boot;
    let largest = ["gate/result.json", "gate/junit.xml", "state.json"]
        .iter()
        .map(|f| std::fs::metadata(run.join(f)).unwrap().len())
        .max()
        .unwrap();
    let console = std::fs::metadata(run.join("gate/console.log")).unwrap().len();
    let _ = std::fs::remove_dir_all(dir.join("endless-state"));
    let timeout = ENDLESS_TIMEOUT as f64;
    let overrun_goal = (ENDLESS_GRACE + 1) as f64;
    println!(
        "hostile console: 100 MB on one line, then deaf to SIGTERM (timeout {ENDLESS_TIMEOUT} s, grace {ENDLESS_GRACE} s)"
    );
    let mut missed = false;
    missed |= bound("peak memory", usage.ru_maxrss as f64 * 1024.0 / 1e6, "MB", 100.0);
    missed |= bound("verdict after the timeout", verdict - timeout, "s", overrun_goal);
    missed |= bound("exit after the timeout (teardown included)", wall - timeout, "s", overrun_goal);
    missed |= bound("largest of result.json, junit.xml, state.json", largest as f64 / 1024.0, "KiB", 64.0);
    missed |= bound("console.log (capped at 64 MiB, with its notes)", console as f64 / 1048576.0, "MiB", 64.01);
    missed
}

/// One line: a figure against its upper bound. Returns whether it was missed.
fn bound(what: &str, value: f64, unit: &str, goal: f64) -> bool {
    let ok = if value < goal { "met" } else { "MISSED" };
    println!("{what:<46} {value:>9.2} {unit:<3}               goal < {goal:>6.2} {unit:<3} {ok}");
    value >= goal
}

/// One line: the figure, its goal, whether it is met, and its ratio to the baseline.
/// Returns whether the goal was missed.
fn report(what: &str, runs: usize, gate: f64, base: f64, goal: f64) -> bool {
    let ok = if gate < goal { "met" } else { "MISSED" };
    println!(
        "{what:<46} {:>9.2} ms (median of {runs:>2})  goal < {:>6.0} ms  {ok:<6}  baseline {:>8.2} ms  ratio {:>6.1}x",
        gate * 1e3,
        goal * 1e3,
        base * 1e3,
        gate / base,
    );
    gate >= goal
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
    let expected = if deciding(mode) == b"login: " { Some(0) } else { Some(1) };
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
    // The last bytes only: the deciding ones may straddle two reads.
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !tail.windows(want.len()).any(|w| w == want) {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "the console ended early");
        let keep = tail.len().min(want.len());
        tail.drain(..tail.len() - keep);
        tail.extend_from_slice(&buf[..n]);
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
    if mode == "endless" {
        return endless_console(&mut out);
    }
    out.write_all(MOUNTED).unwrap();
    if mode.starts_with("flood") || mode == "scan" {
        let flood = flood(FLOOD);
        // The throughput run is timed from the flood's first byte to the verdict at
        // the marker right after it.
        if mode == "scan" {
            std::fs::write(stamp, format!("{:.6}\n", now())).unwrap();
            out.write_all(&flood).unwrap();
            out.write_all(STARTED).unwrap();
            out.write_all(deciding(mode)).unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        out.write_all(&flood).unwrap();
        out.write_all(STARTED).unwrap();
        out.flush().unwrap();
        // Time for the reader to take in the flood: the deciding bytes are timed alone.
        std::thread::sleep(Duration::from_secs(1));
    } else {
        out.write_all(STARTED).unwrap();
        out.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
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

/// The hostile console: the first marker, 100 MB without a newline, then it runs on,
/// ignoring SIGTERM (the gate must kill it after its grace period).
fn endless_console(out: &mut impl Write) {
    // SAFETY: ignoring a signal has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    out.write_all(MOUNTED).unwrap();
    let block = vec![b'x'; 1 << 20];
    let mut left = 100_000_000usize;
    while left > 0 {
        let n = left.min(block.len());
        if out.write_all(&block[..n]).is_err() {
            break;
        }
        left -= n;
    }
    let _ = out.flush();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
