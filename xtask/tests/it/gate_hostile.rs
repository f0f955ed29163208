//! The gate against hostile consoles: one that floods a line that never ends (the
//! verdict on time, memory and every result file bounded, measured here), one whose
//! program leaves a daemon behind in a session of its own, one whose console outlives
//! an xtask killed with SIGKILL (the next command stops it), and one that dies before
//! printing anything (infrastructure).

use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::gate::{assert_decided, assert_no_process_left, command_project, console, gate_dir};

/// What an xtask run left: its exit status, wall time, peak resident memory (KiB, from
/// the kernel's accounting of the child: getrusage's ru_maxrss through wait4) and its
/// stderr.
struct Measured {
    code: Option<i32>,
    wall: Duration,
    max_rss_kib: i64,
    stderr: String,
}

/// Runs xtask with `args` in `p`, its output into files (never into the test's own
/// output), and measures it.
fn measured(p: &test_support::Project, args: &[&str]) -> Measured {
    let out = p.scratch.path.join("xtask.out");
    let err = p.scratch.path.join("xtask.err");
    let mut cmd = p.command(args);
    cmd.stdout(Stdio::from(fs::File::create(&out).unwrap())).stderr(Stdio::from(fs::File::create(&err).unwrap()));
    let start = Instant::now();
    // Reaped by wait4 below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with valid pointers; the Child is not waited on
    // again (dropping it does not wait).
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Measured { code, wall, max_rss_kib: usage.ru_maxrss, stderr: fs::read_to_string(&err).unwrap_or_default() }
}

#[test]
fn a_console_that_floods_one_endless_line_is_judged_on_time_in_bounded_memory_and_files() {
    let (timeout, grace) = (5, 2);
    let p = command_project(&format!("timeout_secs = {timeout}\ngrace_secs = {grace}"));
    // 100 MB without a newline after the first marker, then it keeps running, deaf to
    // SIGTERM: the gate must wait out its grace and kill it.
    let flood = console(
        &p,
        "flood-one-line",
        "trap '' TERM\nprintf 'Trying to mount root from cd9660\\r\\n'\n\
         head -c 100000000 /dev/zero | tr '\\0' x\nwhile :; do sleep 1; done\n",
    );
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let run = measured(&p, &["gate", "--", flood.as_str()]);
    let stderr = &run.stderr;
    assert_eq!(run.code, Some(1), "{stderr}");
    assert!(stderr.contains("did not appear within the whole boot's 5s (gate.timeout_secs)"), "{stderr}");

    // The verdict within the timeout plus the grace plus 1 s of the boot's start (where
    // gate.timeout_secs counts from): decided at the timeout, written once the console
    // is stopped (after its grace) and console.log closed, and xtask ended.
    let bound = (timeout + grace + 1) as f64;
    let r = assert_decided(&p, "fail", "timeout", Some("Starting colibri_daemon."));
    let boot = r["final_attempt"]["started_at_unix"].as_f64().unwrap();
    let decided = r["decided_at_unix"].as_f64().unwrap() - boot;
    assert!(decided < (timeout + 1) as f64, "decided {decided:.2}s after the boot began\n{r:#}");
    let written = fs::metadata(gate_dir(&p).join("result.json")).unwrap().modified().unwrap();
    let written = written.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - boot;
    assert!(written < bound, "the verdict was written {written:.2}s after the boot began (bound {bound}s)");
    let ended = started + run.wall.as_secs_f64() - boot;
    assert!(ended < bound, "xtask ended {ended:.2}s after the boot began (bound {bound}s)");

    // Memory under 100 MB.
    assert!(run.max_rss_kib < 100_000, "the gate peaked at {} KiB of memory", run.max_rss_kib);

    // Every result under 64 KiB; console.log at its cap, saying where it was cut.
    let dir = gate_dir(&p);
    let state = dir.parent().unwrap().join("state.json");
    for file in [dir.join("result.json"), dir.join("junit.xml"), state] {
        let size = fs::metadata(&file).unwrap().len();
        assert!(size < 64 * 1024, "{file} holds {size} bytes");
    }
    assert_eq!(r["final_attempt"]["console_bytes"], 100_000_034, "{r:#}");
    assert_eq!(r["final_attempt"]["console_cut"], true, "{r:#}");
    let log = dir.join("console.log");
    let size = fs::metadata(&log).unwrap().len();
    assert!(size > 64 << 20 && size < (64 << 20) + 1024, "console.log holds {size} bytes");
    let mut end = vec![0u8; 1024];
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = fs::File::open(&log).unwrap();
        f.seek(SeekFrom::End(-1024)).unwrap();
        f.read_exact(&mut end).unwrap();
    }
    let end = String::from_utf8_lossy(&end);
    assert!(end.contains("x\n[console.log is cut here: it reached its cap of 67108864 bytes"), "{end}");
    assert!(end.ends_with("[32891196 bytes of console after the cut were not kept]\n"), "{end}");
    // The stage log's copy of the console stopped at the cut too.
    let stage_log = dir.parent().unwrap().join("logs/gate.log");
    let size = fs::metadata(&stage_log).unwrap().len();
    assert!(size < 64 * 1024, "{stage_log} holds {size} bytes");

    // The terminal shows the line cut, saying how long it was; no line it printed is
    // long.
    assert!(stderr.contains("xxxx [... line cut: 100000000 bytes in all]"), "{stderr}");
    let longest = stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2000, "a line of {longest} bytes reached the terminal");
    let junit = fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("[... line cut: 100000000 bytes in all]"), "{junit}");
    assert_no_process_left(&p);
}

#[test]
fn a_console_log_cap_that_cannot_work_is_refused_at_load() {
    let p = command_project("console_log_max_mib = 0");
    let config = p.config_path();
    let line = fs::read_to_string(&config).unwrap().lines().position(|l| l.starts_with("console_log_max_mib")).unwrap();
    crate::gate::gate(&p, &["--", "/bin/true"])
        .code_is(2)
        .stderr_has(&format!("{config}:{}:", line + 1))
        .stderr_has("console_log_max_mib must be from 1 to 65536 (MiB), not 0");
}

/// Whether a process runs (exists and is not a zombie waiting for its parent).
fn running(pid: i64) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A pid a console wrote into `file`, waiting for it.
fn pid_in(file: &camino::Utf8Path) -> i64 {
    test_support::wait_for(&format!("{file}"), Duration::from_secs(20), || {
        fs::read_to_string(file).is_ok_and(|s| s.ends_with('\n'))
    });
    fs::read_to_string(file).unwrap().trim().parse().unwrap()
}

/// A console whose program starts two daemons that leave its process group with
/// `setsid` (one still its child when the console stops, one already an orphan), then
/// prints `then`.
fn daemon_console(
    p: &test_support::Project,
    name: &str,
    then: &str,
) -> (camino::Utf8PathBuf, [camino::Utf8PathBuf; 2]) {
    let files = [p.scratch.path.join(format!("{name}-child.pid")), p.scratch.path.join(format!("{name}-orphan.pid"))];
    let script = console(
        p,
        name,
        &format!(
            "setsid sh -c 'echo $$ > {0}; exec sleep 600' &\n\
             ( setsid sh -c 'echo $$ > {1}; exec sleep 600' & )\n\
             while [ ! -s {0} ] || [ ! -s {1} ]; do sleep 0.05; done\n{then}",
            files[0], files[1]
        ),
    );
    (script, files)
}

#[test]
fn nothing_a_console_started_outlives_the_gate_on_any_path() {
    let p = command_project("");
    let check = |files: &[camino::Utf8PathBuf; 2], stderr: &str| {
        let pids: Vec<i64> = files.iter().map(|f| pid_in(f)).collect();
        for pid in &pids {
            assert!(!running(*pid), "the daemon {pid} outlived the gate\n{stderr}");
        }
        assert!(stderr.contains("stopped what the console left running outside its process group"), "{stderr}");
        let r = crate::gate::result(&p);
        let strays: Vec<i64> =
            r["final_attempt"]["strays"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        for pid in pids {
            assert!(strays.contains(&pid), "{pid} not among the strays {strays:?}");
        }
        assert_no_process_left(&p);
    };

    // A pass.
    let (pass, files) = daemon_console(&p, "pass", &format!("{}exec sleep 60\n", crate::gate::MARKERS));
    let run = crate::gate::gate(&p, &["--", pass.as_str()]);
    run.success();
    check(&files, &run.stderr());

    // A failure.
    let (fail, files) = daemon_console(
        &p,
        "fail",
        "printf 'Trying to mount root from x\\r\\npanic: page fault\\r\\n'\nexec sleep 60\n",
    );
    let run = crate::gate::gate(&p, &["--", fail.as_str()]);
    run.code_is(1);
    check(&files, &run.stderr());

    // Ctrl-C.
    let (hang, files) = daemon_console(&p, "ctrl-c", "printf 'Trying to mount root from x\\r\\n'\nexec sleep 60\n");
    let err = p.scratch.path.join("ctrl-c.err");
    let mut cmd = p.command(&["gate", "--", hang.as_str()]);
    cmd.stdout(Stdio::null()).stderr(Stdio::from(fs::File::create(&err).unwrap()));
    let mut child = cmd.spawn().unwrap();
    pid_in(&files[0]);
    pid_in(&files[1]);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) of the xtask we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    check(&files, &fs::read_to_string(&err).unwrap());
}

/// Starts `gate` on a console that never decides, and kills xtask with SIGKILL once the
/// console runs and its group is in state.json. Returns the console's pid.
fn gate_killed_mid_boot(p: &test_support::Project, name: &str) -> i64 {
    let pidfile = p.scratch.path.join(format!("{name}.pid"));
    // The console checks, as its first act, that its group is in state.json already.
    let hang = console(
        p,
        name,
        &format!(
            "if grep -q \"\\\"pgid\\\": $$,\" {}/runs/*/state.json; then echo $$ > {pidfile}; else echo unrecorded > {pidfile}; fi\n\
             printf 'Trying to mount root from x\\r\\n'\nexec sleep 600\n",
            p.state_dir()
        ),
    );
    let mut cmd = p.command(&["gate", "--", hang.as_str()]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let console_pid = pid_in(&pidfile);
    let recorded = || p.state()["records"]["gate"]["processes"][0]["pgid"].as_i64();
    assert_eq!(recorded(), Some(console_pid), "state.json records the console's group before it runs");
    // SAFETY: kill(2) of the xtask we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(running(console_pid), "the console did not outlive the killed xtask: nothing to test");
    console_pid
}

#[test]
fn a_console_a_killed_xtask_left_running_is_stopped_by_the_next_command() {
    let p = command_project("");
    let console_pid = gate_killed_mid_boot(&p, "left-for-status");
    let status = p.run(&["status"]);
    status.success().stderr_has(&format!(
        "(process group {console_pid}, 1 process): the `gate` of run {} started it, and its xtask (pid",
        p.state()["id"].as_str().unwrap()
    ));
    assert!(!running(console_pid), "status did not stop the console\n{}", status.stderr());
    // Said once: the next status has nothing to stop.
    let again = p.run(&["status"]);
    assert!(!again.stderr().contains("stopped `"), "{}", again.stderr());

    // `gate` (and `release`, through the same engine path) stops it before it starts.
    let console_pid = gate_killed_mid_boot(&p, "left-for-gate");
    let pass = console(&p, "pass", &format!("{}exec sleep 60\n", crate::gate::MARKERS));
    crate::gate::gate(&p, &["--", pass.as_str()])
        .success()
        .stderr_has(&format!("(process group {console_pid}, 1 process)"));
    assert!(!running(console_pid));
    assert!(p.state()["records"]["gate"].get("processes").is_none(), "the record is forgotten once stopped");
}

#[test]
fn a_console_that_fails_before_printing_anything_is_infrastructure() {
    let p = command_project("");
    // The program runs, but the file it reads is missing: nothing reaches the console.
    let missing = console(&p, "missing-image", "exec cat /nonexistent/clawdie.img\n");
    crate::gate::gate(&p, &["--", missing.as_str()])
        .code_is(2)
        .stderr_has("the console program exited with status 1 before printing anything")
        .stderr_has("/nonexistent/clawdie.img: No such file or directory");
    assert_decided(&p, "error", "infrastructure", None);
    // Once the console has spoken, its end is the image's.
    let spoke = console(&p, "spoke", "printf 'Trying to mount root from x\\r\\n'\nexit 3\n");
    crate::gate::gate(&p, &["--", spoke.as_str()])
        .code_is(1)
        .stderr_has("the console program ended before marker 2 of 4");
    assert_decided(&p, "fail", "exit", None);
}

#[test]
fn a_gate_result_rewritten_at_the_same_size_makes_the_gate_run_again() {
    let p = command_project("");
    let pass = console(&p, "pass", &format!("{}exec sleep 60\n", crate::gate::MARKERS));
    p.write_config(&format!(
        "[gate]\nbackend = \"command\"\nsettle_secs = 0\ngrace_secs = 2\nretries = 0\nprobes = []\n\n[gate.command]\nprogram = [\"{pass}\"]\n"
    ));
    p.run(&["release", "--from", "gate"]).success();
    p.run(&["release", "--from", "gate"]).success().stderr_has("every stage is up to date");
    // junit.xml rewritten in place with as many bytes.
    let junit = gate_dir(&p).join("junit.xml");
    let text = fs::read_to_string(&junit).unwrap().replace("failures=\"0\"", "failures=\"9\"");
    fs::OpenOptions::new().write(true).open(&junit).unwrap().write_all(text.as_bytes()).unwrap();
    let run = p.run(&["release", "--from", "gate"]);
    run.success().stderr_has("pass: all 4 markers appeared in order").stderr_has("1 ran, 0 up to date");
    assert!(fs::read_to_string(gate_dir(&p).join("junit.xml")).unwrap().contains("failures=\"0\""));
}
