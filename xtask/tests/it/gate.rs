//! The boot gate: a real QEMU guest for each console scenario, scripted consoles through
//! the `command` backend, and bhyve through its stand-ins. Every test checks the verdict
//! and exit status, and that no console process is left behind.

use std::fs;
use std::os::unix::process::CommandExt;

use std::time::{Duration, Instant};

use camino::Utf8PathBuf;
use serde_json::Value;

use test_support::{Project, Run, initramfs, path_with, simhost, write_script};

// ---------------------------------------------------------------------------------
// Helpers

/// The current run's gate directory.
pub(crate) fn gate_dir(p: &Project) -> Utf8PathBuf {
    let id = fs::read_to_string(p.state_dir().join("current")).unwrap();
    p.state_dir().join("runs").join(id.trim()).join("gate")
}

/// The gate's result.json.
pub(crate) fn result(p: &Project) -> Value {
    let path = gate_dir(p).join("result.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Asserts the verdict and what decided it (`kind`, and `name` when given).
#[track_caller]
pub(crate) fn assert_decided(p: &Project, verdict: &str, kind: &str, name: Option<&str>) -> Value {
    let r = result(p);
    assert_eq!(r["verdict"], verdict, "result.json:\n{r:#}");
    assert_eq!(r["decided_by"]["kind"], kind, "result.json:\n{r:#}");
    if let Some(name) = name {
        assert_eq!(r["decided_by"]["name"], name, "result.json:\n{r:#}");
    }
    r
}

/// The processes of a process group (from /proc), zombies excepted.
pub(crate) fn group_members(pgid: i64) -> Vec<String> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        let Some(end) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2].parse::<i64>() == Ok(pgid) {
            members.push(stat[..=end].to_owned());
        }
    }
    members
}

/// Every console process the gate started (each led its own group) is gone, with
/// everything in its group.
#[track_caller]
pub(crate) fn assert_no_process_left(p: &Project) {
    let r = result(p);
    let pids: Vec<i64> = r["final_attempt"]["pids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert!(!pids.is_empty(), "no console process recorded:\n{r:#}");
    for pid in pids {
        let left = group_members(pid);
        assert!(left.is_empty(), "the console's process group {pid} is still there: {left:?}");
    }
}

/// A `[gate]` table: `defaults` (key, value), except the keys `extra` sets, then `extra`.
pub(crate) fn gate_table(defaults: &[(&str, &str)], extra: &str) -> String {
    let mut table = String::from("[gate]\n");
    for (key, value) in defaults {
        if !extra.lines().any(|l| l.split('=').next().is_some_and(|k| k.trim() == *key)) {
            table.push_str(&format!("{key} = {value}\n"));
        }
    }
    table.push_str(extra);
    table.push('\n');
    table
}

/// A project for the command backend, with `extra` in [gate].
pub(crate) fn command_project(extra: &str) -> Project {
    // No probes unless a test asks: these consoles have no login.
    let defaults =
        [("backend", "\"command\""), ("settle_secs", "0"), ("grace_secs", "2"), ("retries", "0"), ("probes", "[]")];
    Project::new(&gate_table(&defaults, extra))
}

/// Writes a console script into the project's scratch directory.
pub(crate) fn console(p: &Project, name: &str, body: &str) -> Utf8PathBuf {
    let path = p.scratch.path.join("consoles").join(name);
    write_script(&path, &format!("#!/bin/sh\n# A scripted console for the gate tests.\n{body}"));
    path
}

/// printf arguments that print the four default markers, one per line, then the prompt.
pub(crate) const MARKERS: &str = "printf 'Trying to mount root from cd9660\\r\\n'\nprintf 'Starting colibri_daemon.\\r\\n'\nprintf 'colibri_daemon: started\\r\\n'\nprintf '\\r\\nFreeBSD/amd64 (clawdie) (ttyu0)\\r\\n\\r\\nlogin: '\n";

pub(crate) fn gate(p: &Project, args: &[&str]) -> Run {
    let mut all = vec!["gate"];
    all.extend_from_slice(args);
    p.run(&all)
}

// ---------------------------------------------------------------------------------
// Scripted consoles (the command backend)

#[test]
fn markers_split_across_reads_pass() {
    let p = command_project("settle_secs = 1");
    let script = console(
        &p,
        "split",
        "printf 'Trying to mo'; sleep 0.1; printf 'unt root from cd9660\\r'; sleep 0.1; printf '\\n'\n\
         printf 'Starting colibri'; sleep 0.1; printf '_daemon.\\r\\ncolibri_daemon: sta'; sleep 0.1; printf 'rted\\r\\n'\n\
         printf '\\r\\nFreeBSD/amd64 (clawdie) (ttyu0)\\r\\n\\r\\nlog'; sleep 0.1; printf 'in'; sleep 0.1; printf ': '\n\
         exec sleep 60\n",
    );
    gate(&p, &["--", script.as_str()]).success().stderr_has("pass: all 4 markers appeared in order");
    let r = assert_decided(&p, "pass", "marker", Some("login: "));
    assert_eq!(r["decided_by"]["line"], "login: ");
    for m in r["final_attempt"]["markers"].as_array().unwrap() {
        assert!(m["seen_at_secs"].is_f64(), "{r:#}");
    }
    assert_no_process_left(&p);
    // The whole console, each line with its time; the prompt without a newline is kept.
    let text = fs::read_to_string(gate_dir(&p).join("console.log")).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.starts_with('[') && last.ends_with("] login: "), "console.log:\n{text}");
    assert!(text.contains("] Trying to mount root from cd9660\n"), "console.log:\n{text}");
    // The stage records what later stages and CI read.
    let outputs = &p.state()["records"]["gate"]["last_success"]["outputs"];
    assert_eq!(outputs["verdict"], "pass");
    assert_eq!(outputs["decided_by"], "login: ");
    let junit = fs::read_to_string(gate_dir(&p).join("junit.xml")).unwrap();
    assert!(junit.contains("tests=\"7\" failures=\"0\" errors=\"0\""), "{junit}");
}

#[test]
fn a_flood_of_output_is_scanned_and_kept_whole() {
    let p = command_project("");
    // 200 000 lines (12 MB), then a 4 MB line without a newline, then the boot.
    let script = console(
        &p,
        "flood",
        &format!(
            "yes 'kernel: a line of noise that goes on and on and on and on.' | head -n 200000\n\
             head -c 4000000 /dev/zero | tr '\\0' x\nprintf '\\r\\n'\n{MARKERS}exec sleep 60\n"
        ),
    );
    gate(&p, &["--", script.as_str()]).success();
    let r = assert_decided(&p, "pass", "marker", Some("login: "));
    assert!(r["final_attempt"]["console_bytes"].as_u64().unwrap() > 15_000_000, "{r:#}");
    assert_eq!(r["final_attempt"]["console_lines"], 200_008, "{r:#}");
    let text = fs::read(gate_dir(&p).join("console.log")).unwrap();
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 200_008);
    assert_no_process_left(&p);

    // The same flood ending in a panic fails at the panic, naming its line.
    let p = command_project("");
    let script = console(
        &p,
        "flood-panic",
        "printf 'Trying to mount root from cd9660\\r\\n'\n\
         yes 'kernel: a line of noise that goes on and on and on and on.' | head -n 200000\n\
         printf 'panic: page fault\\r\\n'\nexec sleep 60\n",
    );
    gate(&p, &["--", script.as_str()]).code_is(1).stderr_has("forbidden pattern `kernel-panic`");
    let r = assert_decided(&p, "fail", "forbidden", Some("kernel-panic"));
    assert_eq!(r["decided_by"]["line_number"], 200_002);
    assert_no_process_left(&p);
}

#[test]
fn a_forbidden_pattern_after_all_markers_fails() {
    let p = command_project("settle_secs = 30");
    let script = console(
        &p,
        "late-panic",
        &format!(
            "{MARKERS}sleep 0.3\nprintf '\\r\\ncolibri_daemon: /var/db/colibri: Permission denied\\r\\n'\nexec sleep 60\n"
        ),
    );
    let run = gate(&p, &["--", script.as_str()]);
    run.code_is(1)
        .stderr_has("the image failed the boot gate: forbidden pattern `service-permission-denied`")
        .stderr_has("| colibri_daemon: /var/db/colibri: Permission denied")
        .stderr_has("markers: 4 of 4 seen");
    let r = assert_decided(&p, "fail", "forbidden", Some("service-permission-denied"));
    // It failed at once, not at the end of the 30-second settle period.
    assert!(r["seconds"].as_f64().unwrap() < 30.0, "{r:#}");
    let junit = fs::read_to_string(gate_dir(&p).join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert!(junit.contains("name=\"no forbidden pattern\" time=\"0.000\">\n      <failure"), "{junit}");
    assert_no_process_left(&p);
}

#[test]
fn a_shutdown_counts_only_before_the_last_marker() {
    let p = command_project("settle_secs = 1");
    let before =
        console(&p, "uptime-before", "printf 'Trying to mount root from x\\r\\nUptime: 3s\\r\\n'\nexec sleep 60\n");
    gate(&p, &["--", before.as_str()]).code_is(1);
    assert_decided(&p, "fail", "forbidden", Some("shutdown"));
    let after = console(&p, "uptime-after", &format!("{MARKERS}printf '\\r\\nUptime: 3s\\r\\n'\nexec sleep 60\n"));
    gate(&p, &["--", after.as_str()]).success();
}

#[test]
fn slow_output_near_each_deadline_passes_and_a_late_marker_fails() {
    let markers = "markers = [\n  { text = 'one', within_secs = 2 },\n  { text = 'two', within_secs = 2 },\n  { text = 'three', within_secs = 2 },\n]\n";
    let p = command_project(markers);
    let slow = console(
        &p,
        "slow",
        "sleep 1.3; printf 'one\\n'; sleep 1.3; printf 'tw'; sleep 0.2; printf 'o\\n'; sleep 1.4; printf 'three'\nexec sleep 60\n",
    );
    gate(&p, &["--", slow.as_str()]).success();
    assert_decided(&p, "pass", "marker", Some("three"));

    // `two` comes 3 s after `one`: past its 2-second deadline.
    let late = console(&p, "late", "printf 'one\\n'; sleep 3; printf 'two\\n'; printf 'three\\n'\nexec sleep 60\n");
    gate(&p, &["--", late.as_str()]).code_is(1).stderr_has(
        "marker 2 of 3, `two`, did not appear within its 2s after the previous marker (gate.markers.1.within_secs)",
    );
    assert_decided(&p, "fail", "deadline", Some("two"));
    assert_no_process_left(&p);

    // Each marker in time, but the whole boot takes longer than gate.timeout_secs.
    let p = command_project(&format!("timeout_secs = 2\n{markers}"));
    let long = console(
        &p,
        "long",
        "printf 'one\\n'; sleep 1.2; printf 'two\\n'; sleep 1.2; printf 'three\\n'\nexec sleep 60\n",
    );
    gate(&p, &["--", long.as_str()])
        .code_is(1)
        .stderr_has("did not appear within the whole boot's 2s (gate.timeout_secs)");
    assert_decided(&p, "fail", "timeout", Some("three"));
    assert_no_process_left(&p);
}

#[test]
fn a_console_that_ends_early_fails_and_one_that_stays_silent_is_infrastructure() {
    let p = command_project("settle_secs = 5");
    let early = console(&p, "early", "printf 'Trying to mount root from x\\r\\n'\n");
    gate(&p, &["--", early.as_str()]).code_is(1).stderr_has(
        "the console program ended before marker 2 of 4, `Starting colibri_daemon.` (it exited with status 0)",
    );
    assert_decided(&p, "fail", "exit", Some("Starting colibri_daemon."));

    // Every marker, then the console ends inside the settle period.
    let settle = console(&p, "settle", MARKERS);
    gate(&p, &["--", settle.as_str()]).code_is(1).stderr_has("during the settle period (gate.settle_secs = 5");
    assert_decided(&p, "fail", "settle-exit", None);

    // Nothing at all: not the image's fault; retried once, then exit 2.
    let p = command_project("retries = 1\nmarkers = [{ text = 'login: ', within_secs = 1 }]");
    let silent = console(&p, "silent", "exec sleep 60\n");
    gate(&p, &["--", silent.as_str()])
        .code_is(2)
        .stderr_has("an infrastructure error, not the image's fault): the console stayed silent for 1s")
        .stderr_has("after 2 attempt(s) (gate.retries = 1)");
    let r = assert_decided(&p, "error", "infrastructure", None);
    assert_eq!(r["attempts"].as_array().unwrap().len(), 2);
    assert!(gate_dir(&p).join("console-attempt-1.log").is_file());
    assert!(fs::read_to_string(gate_dir(&p).join("junit.xml")).unwrap().contains("<error message="));
    assert_no_process_left(&p);
}

#[test]
fn infrastructure_errors_are_retried_and_failures_never() {
    let p = command_project("retries = 2\n[gate.command]\ninfra_status = [4]\n");
    let count = p.scratch.path.join("count");
    let flaky = console(
        &p,
        "flaky",
        &format!(
            "echo x >> '{count}'\nif [ \"$(wc -l < '{count}')\" -lt 2 ]; then echo 'hypervisor busy' >&2; exit 4; fi\n{MARKERS}exec sleep 60\n"
        ),
    );
    gate(&p, &["--", flaky.as_str()]).success().stderr_has("infrastructure error:").stderr_has("attempt 2 of 3");
    assert_eq!(fs::read_to_string(&count).unwrap().lines().count(), 2);
    let r = assert_decided(&p, "pass", "marker", None);
    assert_eq!(r["attempts"][0]["verdict"], "error");
    assert_eq!(r["attempts"][1]["verdict"], "pass");

    let count = p.scratch.path.join("count-panic");
    let panics = console(
        &p,
        "panics",
        &format!(
            "echo x >> '{count}'\nprintf 'Trying to mount root from x\\r\\npanic: vm_fault\\r\\n'\nexec sleep 60\n"
        ),
    );
    gate(&p, &["--", panics.as_str()]).code_is(1);
    assert_eq!(fs::read_to_string(&count).unwrap().lines().count(), 1, "a failure must not be retried");
}

#[test]
fn a_program_that_cannot_start_is_infrastructure() {
    let p = command_project("");
    gate(&p, &["--", "/nonexistent/console"])
        .code_is(2)
        .stderr_has("cannot start the console: cannot run `/nonexistent/console`: program not found");
    assert_decided(&p, "error", "infrastructure", None);
    // Without a program at all.
    gate(&p, &[]).code_is(2).stderr_has("the command backend needs a console program");
    // A program after `--` with another backend.
    gate(&p, &["--backend", "qemu", "--", "x"]).code_is(2).stderr_has("needs the command backend");
}

#[test]
fn ctrl_c_stops_the_console_and_records_the_run() {
    let p = command_project("");
    let pidfile = p.scratch.path.join("console.pid");
    let script = console(
        &p,
        "hang",
        &format!("echo $$ > '{pidfile}'\nprintf 'Trying to mount root from x\\r\\n'\nexec sleep 60\n"),
    );
    let mut cmd = p.command(&["gate", "--", script.as_str()]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.process_group(0);
    let child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !pidfile.exists() || !gate_dir_exists(&p) {
        assert!(start.elapsed() < Duration::from_secs(20), "the console never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain kill(2) of the xtask we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let console_pid: i64 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(group_members(console_pid).is_empty(), "the console survived Ctrl-C");
    assert_decided(&p, "interrupted", "interrupted", None);
}

fn gate_dir_exists(p: &Project) -> bool {
    p.state_dir().join("current").exists() && gate_dir(p).exists()
}

#[test]
fn a_bad_pattern_is_reported_at_its_line() {
    let p = command_project(
        "forbidden_extra = [\n  { name = 'ok', regex = 'fine' },\n  { name = 'broken', regex = 'Fatal (trap' },\n]\n",
    );
    gate(&p, &["--", "true"])
        .code_is(2)
        .stderr_has("pipeline.toml:15:30: forbidden pattern `broken`: `Fatal (trap` is not a valid regular expression");
    let p = command_project("markers = [{ text = 'a', within_secs = 0 }]");
    p.run(&["status"]).code_is(2).stderr_has("pipeline.toml:13:40: marker 1 (`a`) has a deadline of 0 seconds");
}

#[test]
fn vm_names_and_paths_bhyve_cannot_take_are_refused_at_load() {
    // The kernel refuses `.` and `..` as device names (/dev/vmm/NAME).
    for name in [".", ".."] {
        let p = Project::new(&format!("[gate]\nvm_name = \"{name}\"\n"));
        p.run(&["status"])
            .code_is(2)
            .stderr_has(&format!("pipeline.toml:8:11: `{name}` is not a usable VM name"))
            .stderr_has("neither `.` nor `..`");
    }
    Project::new("[gate]\nvm_name = \"gate.v2\"\n").run(&["status"]).success();
    // bhyve cuts -s and -l values at commas, with no escape.
    let p = Project::new("[gate.bhyve]\nfirmware = \"/fw,x/BHYVE_UEFI.fd\"\n");
    p.run(&["status"])
        .code_is(2)
        .stderr_has("pipeline.toml:8:12: the UEFI firmware /fw,x/BHYVE_UEFI.fd has a comma, which bhyve cannot take");
    let p = Project::new("[gate]\nimage = \"/images/a,b.iso\"\n");
    p.run(&["status"]).code_is(2).stderr_has("pipeline.toml:8:9: the image /images/a,b.iso has a comma");
    // QEMU doubles commas itself: an image with one is fine there.
    Project::new("[gate]\nbackend = \"qemu\"\nimage = \"/images/a,b.iso\"\n").run(&["status"]).success();

    // --image: refused before anything runs, as a usage error.
    let b = bhyve_project("", "");
    let image = b.p.scratch.path.join("a,b.iso");
    fs::write(&image, "iso").unwrap();
    b.p.run(&["gate", "--image", image.as_str()])
        .code_is(2)
        .stderr_has(&format!("--image {image} has a comma, which bhyve cannot take"))
        .stderr_has("move or link it to a path without commas");
    assert!(b.calls().is_empty(), "{:?}", b.calls());
}

#[test]
fn the_bhyve_stand_ins_fail_as_the_real_tools_do() {
    let s = test_support::scratch();
    let state = s.path.join("state");
    let run = |tool: &str, args: &[&str]| {
        std::process::Command::new(simhost().join("bhyve").join(tool))
            .args(args)
            .env("BHYVE_STANDIN_STATE", &state)
            .env("BHYVE_STANDIN_SCENARIO", "triple-fault")
            .output()
            .unwrap()
    };
    let err = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let fw = s.path.join("BHYVE_UEFI.fd");
    fs::write(&fw, "edk2").unwrap();
    let iso = s.path.join("a");
    fs::write(&iso, "iso").unwrap();
    let base = ["-c", "1", "-m", "1G", "-H", "-P", "-u", "-s", "0,hostbridge", "-s", "31,lpc", "-l", "com1,stdio"];
    let bhyve = |extra: &[&str], name: &str| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        args.push(name);
        run("bhyve", &args)
    };
    let rom = format!("bootrom,{fw}");
    // A path is cut at its first comma: `a,b.iso` opens `a` (here it exists: the wrong
    // file boots); a firmware path's tail becomes a variables file.
    let disk = format!("3,ahci-cd,{iso},b.iso");
    assert_eq!(bhyve(&["-s", &disk, "-l", &rom], "vm1").status.code(), Some(3));
    let missing = format!("3,ahci-cd,{}/no,b.iso", s.path);
    let out = bhyve(&["-s", &missing, "-l", &rom], "vm1");
    assert_eq!(out.status.code(), Some(4));
    assert!(err(&out).contains(&format!("Could not open backing file: {}/no: No such file", s.path)), "{}", err(&out));
    let split = format!("bootrom,{}/fw,x.fd", s.path);
    let out = bhyve(&["-l", &split], "vm1");
    assert!(
        err(&out).contains(&format!("Error opening bootrom \"{}/fw\": No such file or directory", s.path)),
        "{}",
        err(&out)
    );
    // `.` and `..` are not device names; no VM without a boot ROM unless bhyveload made it.
    for name in [".", ".."] {
        let out = bhyve(&["-l", &rom], name);
        assert_eq!(
            (out.status.code(), err(&out).trim().to_owned()),
            (Some(4), "bhyve: vm_openf: Invalid argument".into())
        );
    }
    let out = bhyve(&[], "never-loaded");
    assert_eq!((out.status.code(), err(&out).trim().to_owned()), (Some(4), "bhyve: no bootrom was configured".into()));
    // Usage errors exit 1, as a power-off does; -h exits 0.
    let out = run("bhyve", &["-m", "1G", "-l", "com1,stdio"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).starts_with("Usage: bhyve [-aCDeHhPSuWwxY]"), "{}", err(&out));
    assert_eq!(run("bhyve", &["-h"]).status.code(), Some(0));
    // bhyveload: what it cannot open is EX_USAGE.
    let out = run("bhyveload", &["-c", "stdio", "-m", "1G", "-d", "/nonexistent.img", "vm2"]);
    assert_eq!(
        (out.status.code(), err(&out).trim().to_owned()),
        (Some(64), "bhyveload: Could not open '/nonexistent.img'".into())
    );
    let out = run("bhyveload", &["-m", "lots", "vm2"]);
    assert_eq!(
        (out.status.code(), err(&out).trim().to_owned()),
        (Some(64), "bhyveload: Invalid memsize 'lots'".into())
    );
    // bhyvectl: destroying what is not there.
    let out = run("bhyvectl", &["--vm=vm3", "--destroy"]);
    assert_eq!(
        (out.status.code(), err(&out).trim().to_owned()),
        (Some(1), "vm_open: vm3 could not be opened: No such file or directory".into())
    );
    let out = run("bhyvectl", &["--vm=vm1", "--destroy"]);
    assert_eq!((out.status.code(), out.stderr.len()), (Some(0), 0));
}

// ---------------------------------------------------------------------------------
// Plans (--dry-run)

#[test]
fn dry_run_prints_the_exact_command_lines() {
    let p = Project::new("[gate]\nvm_name = \"gate-test\"\n");
    let image = p.scratch.path.join("clawdie.iso");
    fs::write(&image, "iso").unwrap();
    let run = gate(&p, &["--dry-run", "--image", image.as_str()]);
    run.success()
        .stdout_has("run     bhyvectl --vm=gate-test --destroy\n")
        .stdout_has(&format!(
            "run     bhyve -c 2 -m 2G -H -P -u -s 0,hostbridge -s 3,ahci-cd,{image} -s 31,lpc -l com1,stdio -l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd gate-test\n"
        ))
        .stdout_has("note    the UEFI firmware /usr/local/share/uefi-firmware/BHYVE_UEFI.fd does not exist: the run would stop here");
    assert!(!p.state_dir().join("current").exists(), "a dry run started a run");

    // No iso outputs and no image setting: the plan says so and shows IMAGE.
    let run = gate(&p, &["--dry-run", "-o", "gate.bhyve.boot=\"bhyveload\""]);
    run.success()
        .stdout_has("note    iso has not recorded an image in this run and gate.image is unset")
        .stdout_has("run     bhyveload -c stdio -m 2G -d IMAGE gate-test\n")
        .stdout_has(
            "run     bhyve -c 2 -m 2G -H -P -u -s 0,hostbridge -s 3,ahci-cd,IMAGE -s 31,lpc -l com1,stdio gate-test\n",
        );

    // --pf-allow: the anchor's reference checked, the tap, the bridge, the rules (for the
    // tap only), and their removal.
    let run = gate(&p, &["--dry-run", "--image", image.as_str(), "--pf-allow"]);
    run.success()
        .stdout_has("run     pfctl -s rules\n")
        .stdout_has("check   the main ruleset references the anchor mother-build/gate (`anchor \"mother-build/gate\"` or `anchor \"mother-build/*\"`); else the gate stops here\n")
        .stdout_has("run     ifconfig tap create\n")
        .stdout_has("run     ifconfig bridge0 addm TAP up\n")
        .stdout_has("run     pfctl -a mother-build/gate -f RUN_DIR/gate/pf-allow.conf\n")
        .stdout_has("-s 0,hostbridge -s 2,virtio-net,TAP -s 3,ahci-cd,")
        .stdout_has("run     pfctl -a mother-build/gate -F rules\n")
        .stdout_has("run     ifconfig bridge0 deletem TAP\n")
        .stdout_has("run     ifconfig TAP destroy\n")
        .stdout_has("; pass quick on TAP all keep state)\n");
    assert!(!run.stdout().contains("on bridge0 all"), "a rule for the whole bridge:\n{}", run.stdout());
    assert!(
        run.stdout().find("run     pfctl -s rules").unwrap()
            < run.stdout().find("run     ifconfig tap create").unwrap(),
        "the reference is checked before anything is made"
    );
    gate(&p, &["--dry-run", "--backend", "qemu", "--pf-allow"]).code_is(2).stderr_has("only the bhyve backend");

    // QEMU with a kernel, as the tests' Linux guest boots.
    let qemu = "[gate]\nbackend = 'qemu'\nmemory = '128M'\ncpus = 1\n[gate.qemu]\nkernel = 'k'\ninitrd = 'i'\nappend = 'console=ttyS0 panic=-1 quiet gate=ok'\n";
    let p = Project::new(qemu);
    gate(&p, &["--dry-run"]).success().stdout_has(&format!(
        "run     qemu-system-x86_64 -accel tcg -m 128M -smp 1 -nodefaults -display none -serial stdio -monitor none -no-reboot -kernel {root}/k -initrd {root}/i -append 'console=ttyS0 panic=-1 quiet gate=ok'\n",
        root = p.root
    ));
}

// ---------------------------------------------------------------------------------
// bhyve, through its stand-ins

struct Bhyve {
    p: Project,
    state: Utf8PathBuf,
    image: Utf8PathBuf,
}

/// A project whose bhyve, bhyvectl, bhyveload, ifconfig and pfctl are the stand-ins;
/// `extra` goes into [gate], `bhyve` into [gate.bhyve].
fn bhyve_project(extra: &str, bhyve: &str) -> Bhyve {
    let defaults =
        [("backend", "\"bhyve\""), ("settle_secs", "0"), ("grace_secs", "1"), ("retries", "0"), ("probes", "[]")];
    let firmware = if bhyve.contains("firmware") { "" } else { "firmware = \"firmware/BHYVE_UEFI.fd\"\n" };
    let mut p = Project::new(&format!("{}[gate.bhyve]\n{firmware}{bhyve}\n", gate_table(&defaults, extra)));
    fs::create_dir_all(p.root.join("firmware")).unwrap();
    fs::write(p.root.join("firmware/BHYVE_UEFI.fd"), "edk2").unwrap();
    let image = p.scratch.path.join("clawdie.iso");
    fs::write(&image, "iso").unwrap();
    let state = p.scratch.path.join("bhyve-state");
    p.env.push(("PATH".into(), path_with(&[&simhost().join("bhyve")])));
    p.env.push(("BHYVE_STANDIN_STATE".into(), state.to_string()));
    Bhyve { p, state, image }
}

impl Bhyve {
    fn gate(&self, scenario: &str, args: &[&str]) -> Run {
        let mut all = vec!["gate", "--image", self.image.as_str()];
        all.extend_from_slice(args);
        let mut cmd = self.p.command(&all);
        cmd.env("BHYVE_STANDIN_SCENARIO", scenario);
        let output = cmd.output().unwrap();
        Run { desc: format!("xtask {} (scenario {scenario})", all.join(" ")), dir: self.p.root.clone(), output }
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.state.join("calls.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn vm_exists(&self) -> bool {
        self.state.join("vmm/clawdie-gate").exists()
    }

    #[track_caller]
    fn assert_clean(&self) {
        assert!(!self.vm_exists(), "the VM was not destroyed; calls:\n{}", self.calls().join("\n"));
        assert_no_process_left(&self.p);
        for pid in fs::read_to_string(self.state.join("pids")).unwrap_or_default().lines() {
            let pid: i64 = pid.parse().unwrap();
            assert!(group_members(pid).is_empty(), "a bhyve stand-in ({pid}) is still running");
        }
    }
}

#[test]
fn bhyve_boots_and_the_vm_is_destroyed_before_and_after() {
    let b = bhyve_project("settle_secs = 1", "");
    b.gate("boot", &[]).success();
    assert_decided(&b.p, "pass", "marker", Some("login: "));
    let calls = b.calls();
    assert_eq!(calls[0], "bhyvectl --vm=clawdie-gate --destroy");
    assert_eq!(
        calls[1],
        format!(
            "bhyve -c 2 -m 2G -H -P -u -s 0,hostbridge -s 3,ahci-cd,{} -s 31,lpc -l com1,stdio -l bootrom,{}/firmware/BHYVE_UEFI.fd clawdie-gate",
            b.image, b.p.root
        )
    );
    assert_eq!(calls[2], "bhyvectl --vm=clawdie-gate --destroy");
    assert_eq!(calls.len(), 3);
    b.assert_clean();
    // The guest's ACPI shutdown after SIGTERM is kept in the console, not judged.
    let console = fs::read_to_string(gate_dir(&b.p).join("console.log")).unwrap();
    assert!(console.contains("] acpi0: Powering system off"), "{console}");
}

#[test]
fn bhyve_exit_statuses_mean_what_the_manual_says() {
    let b = bhyve_project("", "");
    // (scenario, gate exit status, what the message says)
    let cases = [
        ("reset", 1, "the guest reset before marker 2 of 4, `Starting colibri_daemon.` (bhyve exited with status 0"),
        ("poweroff", 1, "the guest powered off before marker 2 of 4"),
        ("halt", 1, "the guest halted before marker 2 of 4"),
        ("triple-fault", 1, "the guest triple-faulted before marker 1 of 4"),
        ("setup-fail", 2, "bhyve could not set up the VM (it exited with status 4)"),
        ("abort", 2, "bhyve aborted on an unhandled VM exit (it was killed by SIGABRT)"),
        ("sigterm", 2, "bhyve was stopped by SIGTERM from outside the gate"),
    ];
    for (scenario, code, message) in cases {
        b.gate(scenario, &[]).code_is(code).stderr_has(message);
        let kind = if code == 1 { "exit" } else { "infrastructure" };
        assert_decided(&b.p, if code == 1 { "fail" } else { "error" }, kind, None);
        b.assert_clean();
    }
    // bhyve's own message comes with an infrastructure error.
    b.gate("setup-fail", &[]).code_is(2).stderr_has("| Unable to setup memory (12)");
    // Infrastructure errors are retried (gate.retries), each boot with its own destroy.
    let before = b.calls().len();
    b.gate("setup-fail", &["-o", "gate.retries=1"]).code_is(2).stderr_has("after 2 attempt(s)");
    let bhyves = b.calls()[before..].iter().filter(|c| c.starts_with("bhyve ")).count();
    assert_eq!(bhyves, 2);
}

#[test]
fn bhyve_refusing_its_command_line_is_infrastructure_not_a_power_off() {
    // bhyve exits 1 for a usage error as for a power-off: before any console byte, it is
    // bhyve's refusal. The VM was never made: destroying it is no cleanup problem.
    let b = bhyve_project("", "extra_args = [\"-Z\"]");
    let run = b.gate("boot", &[]);
    run.code_is(2)
        .stderr_has("bhyve exited with status 1 before the guest printed anything: bhyve refused its command line")
        .stderr_has("| bhyve: illegal option -- Z")
        .stderr_has("| Usage: bhyve [-aCDeHhPSuWwxY]")
        .stderr_has("check gate.bhyve.extra_args");
    assert!(!run.stderr().contains("cleaning up"), "a spurious cleanup warning:\n{}", run.stderr());
    assert_decided(&b.p, "error", "infrastructure", None);
    b.assert_clean();
    // A bad value of an option is EX_USAGE (64).
    let b = bhyve_project("", "extra_args = [\"-l\", \"bogus\"]");
    b.gate("boot", &[])
        .code_is(2)
        .stderr_has("bhyve refused the value of one of its options (it exited with status 64)")
        .stderr_has("| bhyve: invalid lpc device configuration 'bogus'");
    b.assert_clean();
}

#[test]
fn a_vm_left_behind_is_destroyed_first() {
    let b = bhyve_project("", "");
    fs::create_dir_all(b.state.join("vmm")).unwrap();
    fs::write(b.state.join("vmm/clawdie-gate"), "2G").unwrap();
    b.gate("boot", &[]).success();
    b.assert_clean();

    // Without the destroy before the run (a bhyvectl that does nothing), 15.0's bhyve
    // reinitialises the VM it finds and boots; the gate destroys it all the same.
    fs::write(b.state.join("vmm/clawdie-gate"), "2G").unwrap();
    b.gate("boot", &["-o", "tools.bhyvectl=\"true\""]).success();
    b.gate("boot", &[]).success();
    b.assert_clean();
}

#[test]
fn a_panicked_guest_that_ignores_sigterm_is_killed() {
    let b = bhyve_project("", "");
    b.gate("panic-hang", &[]).code_is(1).stderr_has("forbidden pattern `fatal-trap`").stderr_has("| Fatal trap 12:");
    assert_decided(&b.p, "fail", "forbidden", Some("fatal-trap"));
    b.assert_clean();
    let log = fs::read_to_string(p_log(&b.p)).unwrap();
    assert!(log.contains("SIGTERM was not enough; killed"), "{log}");

    // A guest that hangs before it enabled ACPI: SIGTERM ends bhyve (143) on teardown.
    let b = bhyve_project("markers = [{ text = 'login: ', within_secs = 1 }]", "");
    b.gate("early-hang", &[]).code_is(1).stderr_has("did not appear within its 1s from the start");
    b.assert_clean();
}

fn p_log(p: &Project) -> Utf8PathBuf {
    gate_dir(p).parent().unwrap().join("logs/gate.log")
}

#[test]
fn bhyveload_loads_then_bhyve_boots_without_firmware() {
    // No firmware: bhyveload does not need it.
    let b = bhyve_project("", "boot = \"bhyveload\"\nfirmware = \"/nonexistent\"");
    b.gate("boot", &[]).success();
    let calls = b.calls();
    assert_eq!(calls[1], format!("bhyveload -c stdio -m 2G -d {} clawdie-gate", b.image));
    assert_eq!(
        calls[2],
        format!(
            "bhyve -c 2 -m 2G -H -P -u -s 0,hostbridge -s 3,ahci-cd,{} -s 31,lpc -l com1,stdio clawdie-gate",
            b.image
        )
    );
    let r = result(&b.p);
    assert_eq!(r["final_attempt"]["pids"].as_array().unwrap().len(), 2);
    let console = fs::read_to_string(gate_dir(&b.p).join("console.log")).unwrap();
    assert!(console.contains("] FreeBSD/amd64 User boot lua"), "the loader's console is kept:\n{console}");
    b.assert_clean();

    // The loader's console is judged too: no kernel is a failure at once.
    b.gate("no-kernel", &[]).code_is(1).stderr_has("forbidden pattern `loader-no-kernel`");
    assert!(!b.calls().last().unwrap().starts_with("bhyve "), "bhyve ran after a failed load");
    b.assert_clean();
}

/// Records a successful `iso` in a new current run, as the iso stage would.
fn record_iso(p: &Project, image: Option<&Utf8PathBuf>) {
    let id = "20260620T000000Z-0001";
    let dir = p.state_dir().join("runs").join(id);
    fs::create_dir_all(dir.join("logs")).unwrap();
    let outputs = serde_json::json!({ "root": "/tmp/iso-root", "profile": "production", "image": image });
    let state = serde_json::json!({
        "version": 1,
        "id": id,
        "created": "2026-06-20T00:00:00.000Z",
        "command": "release",
        "stages": ["iso", "gate"],
        "records": {
            "iso": {
                "status": "succeeded",
                "attempts": 1,
                "last_success": { "run": id, "ended": "2026-06-20T00:00:00.000Z", "fingerprint": "x", "outputs": outputs }
            },
            "gate": { "status": "pending", "attempts": 0 }
        }
    });
    fs::write(dir.join("state.json"), serde_json::to_string_pretty(&state).unwrap()).unwrap();
    fs::write(p.state_dir().join("current"), format!("{id}\n")).unwrap();
}

#[test]
fn the_image_comes_from_what_iso_recorded() {
    let b = bhyve_project("settle_secs = 0", "");
    record_iso(&b.p, Some(&b.image));
    b.p.run(&["gate", "--dry-run"]).success().stdout_has(&format!("note    image from iso: {}\n", b.image));
    let mut cmd = b.p.command(&["gate"]);
    cmd.env("BHYVE_STANDIN_SCENARIO", "boot");
    let run = Run { desc: "xtask gate".into(), dir: b.p.root.clone(), output: cmd.output().unwrap() };
    run.success();
    assert!(b.calls().iter().any(|c| c.contains(&format!(",ahci-cd,{} ", b.image))), "{:?}", b.calls());
    let outputs = &b.p.state()["records"]["gate"]["last_success"]["outputs"];
    assert_eq!(outputs["image"], b.image.as_str());
    assert_eq!(outputs["backend"], "bhyve");
    b.assert_clean();

    // iso built no image: the gate says what to do.
    let b = bhyve_project("", "");
    record_iso(&b.p, None);
    b.p.run(&["gate"])
        .code_is(2)
        .stderr_has("iso recorded no image")
        .stderr_has("pass --image PATH, or set gate.image");
}

#[test]
fn missing_firmware_or_image_is_infrastructure() {
    let b = bhyve_project("", "");
    fs::remove_file(b.p.root.join("firmware/BHYVE_UEFI.fd")).unwrap();
    b.gate("boot", &[])
        .code_is(2)
        .stderr_has("the UEFI firmware")
        .stderr_has("does not exist")
        .stderr_has("pkg install edk2-bhyve");
    assert!(b.calls().is_empty(), "something ran: {:?}", b.calls());

    let b = bhyve_project("", "");
    b.p.run(&["gate", "--image", "/nonexistent.iso"])
        .code_is(2)
        .stderr_has("the image /nonexistent.iso does not exist");
    // With no image anywhere, the gate asks for iso's.
    b.p.run(&["gate"]).code_is(2).stderr_has("run it first: cargo xtask --config pipeline.toml iso");
}

#[test]
fn pf_allow_opens_the_guest_network_and_closes_it_on_every_path() {
    let b = bhyve_project("", "");
    let net = b.state.join("net");
    fs::create_dir_all(&net).unwrap();
    fs::write(net.join("bridge0"), "").unwrap();
    reference_the_anchor(&b);
    for (scenario, code) in [("boot", 0), ("reset", 1)] {
        b.gate(scenario, &["--pf-allow"]).code_is(code);
        let calls = b.calls();
        let bhyve = calls.iter().rev().find(|c| c.starts_with("bhyve ")).unwrap();
        assert!(bhyve.contains(" -s 2,virtio-net,tap0 "), "{bhyve}");
        let tail: Vec<&str> = calls.iter().rev().take(4).rev().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "pfctl -a mother-build/gate -F rules",
                "ifconfig bridge0 deletem tap0",
                "ifconfig tap0 destroy",
                "bhyvectl --vm=clawdie-gate --destroy"
            ]
        );
        assert!(!net.join("tap0").exists(), "the tap is left");
        assert_eq!(fs::read_to_string(net.join("bridge0")).unwrap(), "", "the bridge keeps a member");
        assert!(!b.state.join("pf/mother-build%gate").exists(), "the rules are left");
        let rules = fs::read_to_string(gate_dir(&b.p).join("pf-allow.conf")).unwrap();
        assert!(rules.ends_with(" may talk\npass quick on tap0 all keep state\n"), "{rules}");
        b.assert_clean();
    }

    // No bridge: an infrastructure error, and the tap made for it is gone again.
    fs::remove_file(net.join("bridge0")).unwrap();
    b.gate("boot", &["--pf-allow"]).code_is(2).stderr_has("ifconfig: interface bridge0 does not exist");
    assert!(!net.join("tap0").exists(), "the tap is left");
    let calls = b.calls();
    let this_run = calls.iter().rev().take_while(|c| *c != "ifconfig tap create");
    assert!(!this_run.clone().any(|c| c.starts_with("bhyve ")), "bhyve ran without its network: {calls:?}");
}

/// /etc/pf.conf with `anchor "mother-build/*"`, loaded as the main ruleset.
fn reference_the_anchor(b: &Bhyve) {
    let conf = b.p.scratch.path.join("pf.conf");
    fs::write(&conf, "block in on bridge0 all\nanchor \"mother-build/*\"\npass out all keep state\n").unwrap();
    let out = std::process::Command::new(simhost().join("bhyve/pfctl"))
        .args(["-f", conf.as_str()])
        .env("BHYVE_STANDIN_STATE", &b.state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn pf_allow_stops_before_anything_when_the_main_ruleset_ignores_the_anchor() {
    let b = bhyve_project("", "");
    let net = b.state.join("net");
    fs::create_dir_all(&net).unwrap();
    fs::write(net.join("bridge0"), "").unwrap();
    // The anchor exists (an earlier load left it, so `pfctl -s Anchors` lists it), but
    // nothing in the main ruleset evaluates it.
    fs::create_dir_all(b.state.join("pf")).unwrap();
    fs::write(b.state.join("pf/mother-build%gate"), "pass quick on tap9 all keep state\n").unwrap();
    fs::write(b.state.join("pf/main"), "block in on bridge0 all\nanchor \"other/*\" all\n").unwrap();
    b.gate("boot", &["--pf-allow"])
        .code_is(2)
        .stderr_has("pf's main ruleset does not reference the anchor mother-build/gate, so rules loaded into it would never apply")
        .stderr_has("help: add the line `anchor \"mother-build/*\"` to /etc/pf.conf")
        .stderr_has("pfctl -f /etc/pf.conf");
    let calls = b.calls();
    assert!(!calls.iter().any(|c| c.starts_with("ifconfig") || c.starts_with("bhyve ")), "{calls:?}");
    assert!(!net.join("tap0").exists());
    // Referenced by its own name, it is fine too.
    fs::write(b.state.join("pf/main"), "anchor \"mother-build/gate\" on bridge0 all\n").unwrap();
    b.gate("boot", &["--pf-allow"]).success();
    b.assert_clean();
}

#[test]
fn ctrl_c_tears_the_vm_and_its_network_down() {
    let b = bhyve_project("settle_secs = 60", "");
    let net = b.state.join("net");
    fs::create_dir_all(&net).unwrap();
    fs::write(net.join("bridge0"), "").unwrap();
    reference_the_anchor(&b);
    let mut cmd = b.p.command(&["gate", "--image", b.image.as_str(), "--pf-allow"]);
    cmd.env("BHYVE_STANDIN_SCENARIO", "boot");
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.process_group(0);
    let child = cmd.spawn().unwrap();
    let start = Instant::now();
    let settling =
        || gate_dir_exists(&b.p) && fs::read_to_string(p_log(&b.p)).is_ok_and(|log| log.contains("every marker seen"));
    while !settling() {
        assert!(start.elapsed() < Duration::from_secs(20), "the guest never booted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: plain kill(2) of the xtask we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert_decided(&b.p, "interrupted", "interrupted", None);
    assert!(!net.join("tap0").exists(), "the tap is left after Ctrl-C");
    assert!(!b.state.join("pf/mother-build%gate").exists(), "the rules are left after Ctrl-C");
    b.assert_clean();
}

// ---------------------------------------------------------------------------------
// A real QEMU guest

/// Boots the test guest in `scenario` and returns the project (for its results).
fn qemu(scenario: &str) -> (Project, Run) {
    qemu_with(scenario, "")
}

/// The same with `extra` in [gate] (its keys replace the tests' defaults).
fn qemu_with(scenario: &str, extra: &str) -> (Project, Run) {
    let kernel = initramfs::kernel();
    let p = Project::new("");
    let initrd = p.scratch.path.join("initramfs.cpio.gz");
    initramfs::write(&initrd);
    let markers = "[\n  { text = \"Trying to mount root from\", within_secs = 120 },\n  { text = \"Starting colibri_daemon.\", within_secs = 5 },\n  { text = \"colibri_daemon: started\", within_secs = 5 },\n  { text = \"login: \", within_secs = 5 },\n]";
    let defaults = [
        ("backend", "\"qemu\""),
        ("memory", "\"128M\""),
        ("cpus", "1"),
        ("settle_secs", "1"),
        ("grace_secs", "2"),
        ("retries", "0"),
        ("markers", markers),
        ("forbidden_extra", "[{ name = \"linux-panic\", regex = \"Kernel panic - not syncing\" }]"),
        ("probes", "[]"),
    ];
    p.write_config(&format!(
        "{}[gate.qemu]\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\nappend = \"console=ttyS0 panic=-1 quiet gate={scenario}\"\n",
        gate_table(&defaults, extra)
    ));
    let _one_at_a_time = test_support::QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let run = p.run(&["gate"]);
    (p, run)
}

#[test]
fn qemu_a_good_boot_passes() {
    let (p, run) = qemu("ok");
    run.success();
    let r = assert_decided(&p, "pass", "marker", Some("login: "));
    assert!(r["final_attempt"]["commands"][0]["args"].as_array().unwrap().iter().any(|a| a == "-no-reboot"));
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_prompt_without_a_newline_passes() {
    let (p, run) = qemu("prompt");
    run.success();
    let r = assert_decided(&p, "pass", "marker", Some("login: "));
    assert!(r["decided_by"]["line"].as_str().unwrap().ends_with("login: "), "{r:#}");
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_kernel_panic_fails_at_once() {
    let (p, run) = qemu("panic");
    run.code_is(1).stderr_has("forbidden pattern `linux-panic`");
    assert_decided(&p, "fail", "forbidden", Some("linux-panic"));
    assert_no_process_left(&p);
}

#[test]
fn qemu_freebsd_trap_text_fails() {
    let (p, run) = qemu("trap");
    run.code_is(1).stderr_has("| Fatal trap 12:");
    assert_decided(&p, "fail", "forbidden", Some("fatal-trap"));
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_restart_loop_fails() {
    let (p, run) = qemu("restart-loop");
    run.code_is(1).stderr_has("a restart loop: /^{syslog}(?P<service>{rc})(?:\\[\\d+\\])?: started/ appeared 3 times");
    assert_decided(&p, "fail", "restart-loop", None);
    assert_no_process_left(&p);
}

#[test]
fn qemu_permission_denied_on_colibri_fails() {
    let (p, run) = qemu("denied");
    run.code_is(1).stderr_has("forbidden pattern `service-permission-denied`");
    assert_decided(&p, "fail", "forbidden", Some("service-permission-denied"));
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_hang_before_the_last_marker_fails_at_its_deadline() {
    let (p, run) = qemu("hang");
    run.code_is(1).stderr_has("marker 3 of 4, `colibri_daemon: started`, did not appear within its 5s");
    assert_decided(&p, "fail", "deadline", Some("colibri_daemon: started"));
    assert_no_process_left(&p);
}

#[test]
fn qemu_an_early_power_off_fails() {
    let (p, run) = qemu("poweroff");
    run.code_is(1)
        .stderr_has("the guest stopped before marker 3 of 4, `colibri_daemon: started` (QEMU exited with status 0");
    assert_decided(&p, "fail", "exit", Some("colibri_daemon: started"));
    assert_no_process_left(&p);
}

// ---------------------------------------------------------------------------------
// Probes and heartbeats on the QEMU guest: a real getty and login on its serial port

/// The probe every image of ours answers, as the default has it.
const DAEMON_PROBE: &str = "probes = [{ name = 'colibri_daemon is running', run = 'service colibri_daemon status', status = 0, output = '^colibri_daemon is running as pid [0-9]+\\.', within_secs = 20 }]";

/// A password file for the guest's root, kept as the gate requires (mode 0600).
fn password_file(p: &Project, password: &str) -> Utf8PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = p.scratch.path.join("root-password");
    fs::write(&path, format!("{password}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The files the gate wrote for this run, and what the command printed.
fn everything_written(p: &Project, run: &Run) -> String {
    let dir = gate_dir(p);
    let mut all = String::from_utf8_lossy(&run.output.stdout).into_owned();
    all.push_str(&String::from_utf8_lossy(&run.output.stderr));
    for file in ["console.log", "result.json", "junit.xml", "../logs/gate.log", "../state.json"] {
        all.push_str(&fs::read_to_string(dir.join(file)).unwrap_or_default());
    }
    all
}

/// A project for the login scenarios; the password file is written before the run.
fn qemu_login(scenario: &str, password: &str, extra: &str) -> (Project, Run) {
    let kernel = initramfs::kernel();
    let p = Project::new("");
    let initrd = p.scratch.path.join("initramfs.cpio.gz");
    initramfs::write(&initrd);
    let file = password_file(&p, password);
    let markers = "[\n  { text = \"Trying to mount root from\", within_secs = 120 },\n  { text = \"Starting colibri_daemon.\", within_secs = 5 },\n  { text = \"colibri_daemon: started\", within_secs = 5 },\n  { text = \"login: \", within_secs = 10 },\n]";
    let login = format!("{{ password_file = \"{file}\", within_secs = 30 }}");
    let defaults = [
        ("backend", "\"qemu\""),
        ("memory", "\"128M\""),
        ("cpus", "1"),
        ("settle_secs", "1"),
        ("grace_secs", "2"),
        ("retries", "0"),
        ("markers", markers),
        ("login", login.as_str()),
        ("probes", &DAEMON_PROBE["probes = ".len()..]),
    ];
    p.write_config(&format!(
        "{}[gate.qemu]\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\nappend = \"console=ttyS0 panic=-1 quiet gate={scenario}\"\n",
        gate_table(&defaults, extra)
    ));
    let _one_at_a_time = test_support::QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let run = p.run(&["gate"]);
    (p, run)
}

#[test]
fn qemu_the_probe_logs_in_with_the_password_and_passes() {
    let (p, run) = qemu_login("login-ok", initramfs::ROOT_PASSWORD, "");
    run.success().stderr_has("the probes passed (`colibri_daemon is running`)");
    let r = assert_decided(&p, "pass", "marker", Some("login: "));
    let login = &r["final_attempt"]["login"];
    assert_eq!(login["verdict"], "pass", "{r:#}");
    assert_eq!(login["password_sent"], true, "{r:#}");
    let probe = &r["final_attempt"]["probes"][0];
    assert_eq!(probe["verdict"], "pass", "{r:#}");
    assert_eq!(probe["status"], 0, "{r:#}");
    let output = probe["output"].as_str().unwrap();
    assert!(output.starts_with("colibri_daemon is running as pid "), "{r:#}");
    // Each probe is a JUnit case, its output quoted.
    let junit = fs::read_to_string(gate_dir(&p).join("junit.xml")).unwrap();
    assert!(junit.contains("<testcase classname=\"gate.probes\" name=\"log in as root\""), "{junit}");
    assert!(junit.contains("<testcase classname=\"gate.probes\" name=\"colibri_daemon is running\""), "{junit}");
    assert!(junit.contains("colibri_daemon is running as pid "), "{junit}");
    assert!(junit.contains("failures=\"0\" errors=\"0\""), "{junit}");
    // The password is typed into the guest, and written nowhere.
    let written = everything_written(&p, &run);
    if let Some(i) = written.find(initramfs::ROOT_PASSWORD) {
        panic!("the password is written: {}", &written[i.saturating_sub(600)..(i + 200).min(written.len())]);
    }
    assert!(fs::read_to_string(p_log(&p)).unwrap().contains("[gate types into the console: the password]"));
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_daemon_that_died_without_a_word_fails_the_probe() {
    // Without probes, the quiet console passes: the false pass the probes are for.
    let (p, run) = qemu_login("login-crash", initramfs::ROOT_PASSWORD, "probes = []");
    run.success();
    assert_decided(&p, "pass", "marker", Some("login: "));

    let (p, run) = qemu_login("login-crash", initramfs::ROOT_PASSWORD, "");
    run.code_is(1)
        .stderr_has("the image failed the boot gate: probe `colibri_daemon is running` (`service colibri_daemon status`) exited with status 1, not 0")
        .stderr_has("| colibri_daemon is not running.");
    let r = assert_decided(&p, "fail", "probe", Some("colibri_daemon is running"));
    assert_eq!(r["final_attempt"]["probes"][0]["output"], "colibri_daemon is not running.", "{r:#}");
    let junit = fs::read_to_string(gate_dir(&p).join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_wrong_password_is_refused() {
    let (p, run) = qemu_login("login-ok", "not-the-password", "");
    run.code_is(1).stderr_has("the guest refused the login as `root`: Login incorrect");
    let r = assert_decided(&p, "fail", "login", None);
    assert_eq!(r["final_attempt"]["login"]["verdict"], "fail", "{r:#}");
    assert_eq!(r["final_attempt"]["probes"][0]["verdict"], "not-run", "{r:#}");
    assert!(!everything_written(&p, &run).contains("not-the-password"));
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_login_that_never_comes_fails_the_image() {
    // Every marker is seen, but no getty ever runs.
    let markers = "markers = [\n  { text = \"Trying to mount root from\", within_secs = 120 },\n  { text = \"colibri_daemon: started\", within_secs = 10 },\n]\nlogin = { within_secs = 3 }";
    let (p, run) = qemu_login("login-none", initramfs::ROOT_PASSWORD, markers);
    run.code_is(1)
        .stderr_has("the login prompt did not appear within 3s after the last marker (gate.login.within_secs)");
    let r = assert_decided(&p, "fail", "login", None);
    // Failed at the login's deadline, not at the end of the whole boot.
    let at = r["decided_by"]["at_secs"].as_f64().unwrap();
    let last = r["final_attempt"]["markers"][1]["seen_at_secs"].as_f64().unwrap();
    assert!((at - last - 3.0).abs() < 1.0, "{r:#}");
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_probe_that_hangs_times_out() {
    let hang = "probes = [{ name = 'hangs', run = 'sleep 30', status = 0, within_secs = 2 }]";
    let (p, run) = qemu_login("login-ok", initramfs::ROOT_PASSWORD, hang);
    run.code_is(1).stderr_has("probe `hangs` (`sleep 30`) did not finish within 2s");
    let r = assert_decided(&p, "fail", "probe", Some("hangs"));
    assert_eq!(r["final_attempt"]["probes"][0]["verdict"], "fail", "{r:#}");
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_heartbeat_that_keeps_coming_passes_and_one_that_stops_fails() {
    let beat = "settle_secs = 4\nheartbeat = { regex = 'colibri_daemon: heartbeat [0-9]+', max_gap_secs = 2 }";
    let (p, run) = qemu_with("heartbeat", beat);
    run.success().stderr_has("the heartbeat came");
    let r = assert_decided(&p, "pass", "marker", Some("login: "));
    assert!(r["final_attempt"]["heartbeat"]["beats"].as_u64().unwrap() >= 4, "{r:#}");

    let (p, run) = qemu_with("heartbeat-stops", beat);
    run.code_is(1).stderr_has("the heartbeat /colibri_daemon: heartbeat [0-9]+/ stopped: nothing for 2s after");
    let r = assert_decided(&p, "fail", "heartbeat", None);
    // At the moment the gap was exceeded: about 2 s after the third beat, within the
    // 4-second settle period.
    let at = r["decided_by"]["at_secs"].as_f64().unwrap();
    let last = r["final_attempt"]["markers"][3]["seen_at_secs"].as_f64().unwrap();
    assert!(at - last < 4.0, "{r:#}");
    let junit = fs::read_to_string(gate_dir(&p).join("junit.xml")).unwrap();
    assert!(junit.contains("name=\"the heartbeat /colibri_daemon: heartbeat [0-9]+/ keeps coming\""), "{junit}");
    assert_no_process_left(&p);
}

#[test]
fn qemu_a_crash_routed_to_the_console_fails_at_its_line() {
    let (p, run) = qemu("crash-line");
    run.code_is(1).stderr_has("forbidden pattern `process-crash`").stderr_has("exited on signal 11");
    assert_decided(&p, "fail", "forbidden", Some("process-crash"));
    assert_no_process_left(&p);
}

// ---------------------------------------------------------------------------------
// Probes through a scripted console (the command backend reads its stdin too)

/// A console that plays getty, login and sh from its stdin: `root`, the password
/// `secret`, then it runs what the probes type with its own shell. The gate ends what
/// it types with a carriage return, as a terminal's Enter key does (a tty turns it into
/// a line end; here `tr` does, unbuffered).
const SCRIPTED_LOGIN: &str = "printf 'Trying to mount root from x\\r\\nlogin: '\n\
    stdbuf -o0 tr '\\r' '\\n' | {\n\
    read -r user\n\
    [ \"$user\" = root ] || { printf 'Login incorrect\\r\\nlogin: '; exec sleep 60; }\n\
    printf 'Password:'\n\
    read -r password\n\
    [ \"$password\" = secret ] || { printf '\\r\\nLogin incorrect\\r\\nlogin: '; exec sleep 60; }\n\
    printf '\\r\\n# '\n\
    while read -r line; do sh -c \"$line\" </dev/null; printf '# '; done\n\
    }\n";

#[test]
fn a_scripted_console_answers_the_probes_through_its_stdin() {
    let p = command_project(
        "markers = [{ text = 'login: ', within_secs = 5 }]\nprobes = [{ run = 'echo hello; exit 3', status = 3, output = '^hello$', within_secs = 5 }]",
    );
    let file = password_file(&p, "secret");
    let text = fs::read_to_string(p.config_path()).unwrap();
    fs::write(p.config_path(), format!("{text}\n[gate.login]\npassword_file = \"{file}\"\nwithin_secs = 5\n")).unwrap();
    let script = console(&p, "login", SCRIPTED_LOGIN);
    let run = gate(&p, &["--", script.as_str()]);
    run.success();
    let r = assert_decided(&p, "pass", "marker", Some("login: "));
    assert_eq!(r["final_attempt"]["probes"][0]["output"], "hello", "{r:#}");
    assert_eq!(r["final_attempt"]["probes"][0]["status"], 3, "{r:#}");
    assert!(!everything_written(&p, &run).contains("secret\n"));
    assert_no_process_left(&p);

    // A password prompt, and no password file: the image's fault, said plainly.
    let p = command_project(
        "markers = [{ text = 'login: ', within_secs = 5 }]\nprobes = [{ run = 'true', status = 0, within_secs = 5 }]",
    );
    let script = console(&p, "login", SCRIPTED_LOGIN);
    gate(&p, &["--", script.as_str()])
        .code_is(1)
        .stderr_has("the guest asks `root` for a password, and gate.login.password_file is unset")
        .stderr_has("set gate.login.password_file");
    assert_decided(&p, "fail", "login", None);
}

#[test]
fn a_password_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let p = command_project(
        "markers = [{ text = 'login: ', within_secs = 5 }]\nprobes = [{ run = 'true', status = 0, within_secs = 5 }]",
    );
    let file = password_file(&p, "secret");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let text = fs::read_to_string(p.config_path()).unwrap();
    fs::write(p.config_path(), format!("{text}\n[gate.login]\npassword_file = \"{file}\"\n")).unwrap();
    let run = gate(&p, &["--", "true"]);
    run.code_is(2)
        .stderr_has(&format!("the login password file {file} is readable or writable by group or others (mode 0644)"))
        .stderr_has(&format!("chmod 0600 {file}"));
    assert!(!String::from_utf8_lossy(&run.output.stderr).contains("secret"));
}
