//! Runs and state: skipping unchanged stages, one run at a time, resuming after a
//! SIGKILL, and Ctrl-C stopping the whole process group with exit 130.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use camino::Utf8PathBuf;

use test_support::{Project, alive, pids, wait_for, write_script};

/// A project whose pipeline is just `port`, and whose git is slow on `status` (to
/// hold a run open). The stand-in records its pid.
fn slow_project() -> (Project, Utf8PathBuf) {
    let mut p = Project::with_colibri("");
    let pids = p.scratch.path.join("slow-git.pids");
    let script = p.scratch.path.join("bin/slow-git");
    write_script(
        &script,
        "#!/bin/sh\n# Wraps git; `status` first waits, so a test can act while a run is in progress.\ncase \"$*\" in\n  *status*) echo $$ >> \"$SLOW_GIT_PIDS\"; exec sleep 30 ;;\nesac\nexec git \"$@\"\n",
    );
    p.write_config(&format!("[tools]\ngit = \"{script}\"\n"));
    p.env.push(("SLOW_GIT_PIDS".into(), pids.to_string()));
    (p, pids)
}

fn kill_all(pids: &[i32]) {
    for pid in pids {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

#[test]
fn unchanged_stage_is_skipped_and_force_reruns_it() {
    let p = Project::with_colibri("");
    p.run(&["release", "--to", "port"]).success().stderr_has("[port] ok");
    let first = p.state()["id"].as_str().unwrap().to_owned();

    // Nothing changed: nothing runs, no new run is started.
    p.run(&["release", "--to", "port"]).success().stderr_has("up to date");
    assert_eq!(p.state()["id"].as_str().unwrap(), first);

    // --force reruns it in a new run.
    p.run(&["release", "--to", "port", "--force"]).success().stderr_has("[port] ok");
    assert_ne!(p.state()["id"].as_str().unwrap(), first);
    assert_eq!(p.stage_status("port"), "succeeded");

    // A changed input reruns it.
    let descr = p.colibri().join("packaging/freebsd/port/sysutils/colibri/pkg-descr");
    std::fs::write(&descr, "changed\n").unwrap();
    test_support::git(&p.colibri(), &["commit", "-qam", "descr"]);
    test_support::git(&p.colibri(), &["tag", "-f", "v0.9.0"]);
    p.run(&["release", "--to", "port"]).success().stderr_has("[port] ok");

    // A removed output reruns it even though the inputs are the same.
    std::fs::remove_dir_all(p.root.join("ports/sysutils/colibri")).unwrap();
    p.run(&["release", "--to", "port"]).success().stderr_has("[port] ok");
    assert!(p.root.join("ports/sysutils/colibri/Makefile").exists());
}

#[test]
fn status_shows_each_stage_and_its_log() {
    let p = Project::with_colibri("");
    p.run(&["status"]).success().stdout_has("no run yet");
    p.run(&["port"]).success();
    let run = p.run(&["status"]);
    run.success().stdout_has("port").stdout_has("succeeded").stdout_has("logs/port.log");
    let json: serde_json::Value = serde_json::from_str(&p.run(&["status", "--json"]).success().stdout()).unwrap();
    assert_eq!(json["schema"], 3);
    assert_eq!(json["running"], serde_json::Value::Null, "nothing runs now: {json:#}");
    let port = json["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "port").unwrap();
    assert_eq!(port["status"], "succeeded");
    let log = port["log"].as_str().unwrap();
    let text = std::fs::read_to_string(p.root.join(log)).unwrap();
    assert!(text.contains("$ git -C"), "the log records every command:\n{text}");
}

#[test]
fn second_concurrent_run_is_refused_naming_the_holder() {
    let (p, pidfile) = slow_project();
    let mut first = p.command(&["port"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the first run to hold the lock", Duration::from_secs(20), || !pids(&pidfile).is_empty());
    let second = p.run(&["release", "--to", "port"]);
    second.code_is(2).stderr_has("another mother-build run holds").stderr_has(&format!("pid {}", first.id()));

    // status names the same holder, as an object.
    let status = p.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status.success().stdout()).unwrap();
    let running = &json["running"];
    assert_eq!(running["pid"], first.id(), "{json:#}");
    let command = running["command"].as_str().unwrap_or_default();
    assert!(command.starts_with("cargo xtask --config ") && command.ends_with("pipeline.toml port"), "{json:#}");
    assert!(running["host"].as_str().is_some_and(|h| !h.is_empty()), "{json:#}");
    assert!(running["since"].as_str().is_some_and(|s| s.ends_with('Z')), "{json:#}");
    p.run(&["status"]).success().stdout_has(&format!("in progress: pid {} on ", first.id()));
    same_shape("", &runbook_status_example(), &json);
    kill_all(&pids(&pidfile));
    let _ = first.wait();
}

/// Two runs started at the same moment, 50 times over: the one refused names the one
/// that holds the lock now, never the holder of the round before (whose note is still in
/// the lock file when both start).
#[test]
fn two_runs_started_at_once_name_the_current_holder_every_time() {
    let (p, pidfile) = slow_project();
    for round in 0..50 {
        let start = || {
            let mut cmd = p.command(&["port"]);
            cmd.stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0);
            cmd.spawn().unwrap()
        };
        let mut pair = [start(), start()];
        let deadline = Instant::now() + Duration::from_secs(20);
        let (loser, status) = loop {
            if let Some((i, status)) =
                pair.iter_mut().enumerate().find_map(|(i, c)| c.try_wait().unwrap().map(|s| (i, s)))
            {
                break (i, status);
            }
            assert!(Instant::now() < deadline, "round {round}: neither run was refused");
            std::thread::sleep(Duration::from_millis(5));
        };
        let winner = 1 - loser;
        let mut stderr = String::new();
        pair[loser].stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        // SAFETY: killpg(2) of the winner's own process group (its git and sleep too).
        unsafe { libc::killpg(pair[winner].id() as i32, libc::SIGKILL) };
        pair[winner].wait().unwrap();
        assert_eq!(status.code(), Some(2), "round {round}: the refused run's status\n{stderr}");
        let named = format!("pid {} on ", pair[winner].id());
        assert!(
            stderr.contains("another mother-build run holds") && stderr.contains(&named),
            "round {round}: the refused run (pid {}) does not name the holder (pid {}):\n{stderr}",
            pair[loser].id(),
            pair[winner].id()
        );
    }
    kill_all(&pids(&pidfile));
}

#[test]
fn a_sigkilled_run_is_reported_and_resumed() {
    let (p, pidfile) = slow_project();
    let mut first =
        p.command(&["release", "--to", "port"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("port to start", Duration::from_secs(20), || !pids(&pidfile).is_empty());
    assert_eq!(p.stage_status("port"), "running");
    first.kill().unwrap();
    first.wait().unwrap();
    kill_all(&pids(&pidfile));

    // status reads the state the killed run left and calls it what it is.
    let status = p.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status.success().stdout()).unwrap();
    let port = json["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "port").unwrap();
    assert_eq!(port["status"], "interrupted", "{json:#}");

    // resume continues the same run at port, now with a git that answers at once.
    std::fs::remove_file(&pidfile).unwrap();
    let id = p.state()["id"].as_str().unwrap().to_owned();
    p.write_config("");
    p.run(&["release", "--resume"]).success().stderr_has(&format!("resuming run {id} at `port`"));
    assert_eq!(p.state()["id"].as_str().unwrap(), id);
    assert_eq!(p.stage_status("port"), "succeeded");
    assert_eq!(p.state()["records"]["port"]["attempts"], 2);
}

#[test]
fn ctrl_c_stops_the_commands_and_exits_130() {
    let (p, pidfile) = slow_project();
    let mut cmd = p.command(&["release", "--to", "port"]);
    cmd.process_group(0).stdout(Stdio::null()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for("port to start", Duration::from_secs(20), || !pids(&pidfile).is_empty());
    let pgid = child.id() as i32;
    // A terminal's Ctrl-C: SIGINT to the foreground process group.
    // SAFETY: plain killpg(2).
    unsafe { libc::killpg(pgid, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let left: Vec<i32> = pids(&pidfile).into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
    assert_eq!(p.stage_status("port"), "interrupted");
    // The command it prints continues the run, as printed.
    p.write_config("");
    let (line, resumed) = run_printed(&p.root, &stderr, "continue with: ");
    assert_eq!(line, "cargo xtask --config pipeline.toml release --resume");
    resumed.success().stderr_has("resuming run");
}

#[test]
fn a_release_with_nothing_to_boot_is_refused_before_its_first_stage() {
    // The gate boots with bhyve, iso builds no image and gate.image is unset: the release
    // would fail only at its last stage.
    let p = Project::with_colibri("");
    for args in [&["release"][..], &["release", "--dry-run"]] {
        p.run(args)
            .code_is(2)
            .stderr_has(
                "pipeline.toml:1:1: this release ends in gate, which boots an image with bhyve, but nothing makes one",
            )
            .stderr_has("iso.build_command is empty (iso builds no image) and gate.image is unset")
            .stderr_has("help: set iso.build_command to the ISO build script")
            .stderr_has("help: or stop before the gate: cargo xtask --config pipeline.toml release --to iso");
    }
    assert!(!p.state_dir().join("current").exists(), "a run was started");
    assert!(!p.root.join("ports/sysutils/colibri").exists(), "a stage ran");
    // A release that stops before the gate, or has an image to boot, or a backend that
    // needs none, goes ahead.
    p.run(&["release", "--dry-run", "--to", "iso"]).success();
    p.run(&["-o", "gate.image=\"clawdie.iso\"", "release", "--dry-run"]).success();
    p.run(&["-o", "iso.build_command=[\"./build.sh\", \"{root}\", \"{image}\"]", "release", "--dry-run"]).success();
    p.run(&["-o", "gate.backend=\"command\"", "release", "--dry-run"]).success();

    // The shipped pipeline.toml says so too.
    let state = test_support::scratch();
    let run = std::process::Command::new(test_support::xtask_bin())
        .args(["--config", test_support::repo_root().join("pipeline.toml").as_str()])
        .args(["--state-dir", state.path.as_str(), "release", "--dry-run"])
        .env("CI", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("iso.build_command is empty") && stderr.contains("gate.image is unset"), "{stderr}");
}

#[test]
fn release_dry_run_prints_plans_and_changes_nothing() {
    let p = Project::with_colibri("[gate]\nimage = \"clawdie.iso\"\n");
    let run = p.run(&["release", "--dry-run"]);
    run.success().stdout_has("port:").stdout_has("git -C").stdout_has("rename");
    assert!(!p.root.join("ports/sysutils/colibri").exists());
    assert!(!p.state_dir().join("current").exists());
}

#[test]
fn from_and_to_select_stages() {
    let p = Project::with_colibri("");
    p.run(&["release", "--from", "gate", "--to", "port"]).code_is(2).stderr_has("comes after");
    p.run(&["release", "--resume", "--to", "port"]).code_is(2).stderr_has("cannot be combined");
    p.run(&["release", "--resume"]).code_is(2).stderr_has("no run to resume");
}

/// The example of `status --json` in docs/runbook.md ("8. `status --json`").
fn runbook_status_example() -> serde_json::Value {
    let runbook = std::fs::read_to_string(test_support::repo_root().join("docs/runbook.md")).unwrap();
    let section = &runbook[runbook.find("## 8. `status --json`").expect("the runbook documents status --json")..];
    let block = section.split("```json\n").nth(1).and_then(|b| b.split("\n```").next()).unwrap();
    serde_json::from_str(block)
        .unwrap_or_else(|e| panic!("the runbook's status --json example is not JSON: {e}\n{block}"))
}

/// Fails unless `real` has the keys and value kinds of the documented `doc` (a null on
/// either side stands for any value; arrays are compared by their first element).
#[track_caller]
fn same_shape(at: &str, doc: &serde_json::Value, real: &serde_json::Value) {
    use serde_json::Value;
    match (doc, real) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(d), Value::Object(r)) => {
            let dk: Vec<&String> = d.keys().collect();
            let rk: Vec<&String> = r.keys().collect();
            assert_eq!(dk, rk, "status --json at `{at}`: the runbook documents {dk:?}, status prints {rk:?}");
            for (k, v) in d {
                same_shape(&format!("{at}.{k}"), v, &r[k]);
            }
        }
        (Value::Array(d), Value::Array(r)) => {
            if let (Some(d), Some(r)) = (d.first(), r.first()) {
                same_shape(&format!("{at}[0]"), d, r);
            }
        }
        (d, r) => assert_eq!(
            std::mem::discriminant(d),
            std::mem::discriminant(r),
            "status --json at `{at}`: the runbook shows {d}, status prints {r}"
        ),
    }
}

/// Everything about a directory tree that a change would show: each entry's path, kind,
/// size, mode, modification time and (for files) content.
fn snapshot(root: &camino::Utf8Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &camino::Utf8Path, root: &camino::Utf8Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = dir.read_dir_utf8().unwrap().map(|e| e.unwrap().into_path()).collect();
        entries.sort();
        for path in entries {
            let m = std::fs::symlink_metadata(&path).unwrap();
            let content = if m.is_file() { format!("{:?}", std::fs::read(&path).unwrap()) } else { String::new() };
            let rel = path.strip_prefix(root).unwrap();
            out.push(format!("{rel} {:o} {} {}.{} {content}", m.mode(), m.size(), m.mtime(), m.mtime_nsec()));
            if m.is_dir() {
                walk(&path, root, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(m) = std::fs::symlink_metadata(root) {
        use std::os::unix::fs::MetadataExt;
        out.push(format!(". {:o} {}.{}", m.mode(), m.mtime(), m.mtime_nsec()));
        walk(root, root, &mut out);
    }
    out
}

/// Every stage's `--dry-run`, and `release --dry-run`.
const DRY_RUNS: &[&[&str]] = &[
    &["setup", "--dry-run"],
    &["port", "--dry-run"],
    &["makesum", "--dry-run"],
    &["makesum", "--dry-run", "--check"],
    &["bulk", "--dry-run"],
    &["sign", "--dry-run"],
    &["publish", "--dry-run"],
    &["publish", "--dry-run", "--rollback"],
    &["iso", "--dry-run"],
    &["gate", "--dry-run"],
    &["release", "--dry-run", "--to", "iso"],
    &["release", "--dry-run", "--force", "--to", "iso"],
    &["-o", "gate.image=\"clawdie.iso\"", "release", "--dry-run"],
];

#[test]
fn a_dry_run_leaves_the_state_directory_byte_identical() {
    // With no run yet: no state directory appears.
    let p = Project::with_colibri("");
    for args in DRY_RUNS {
        p.run(args);
        assert!(
            !p.state_dir().exists(),
            "`xtask {}` created {}: {:?}",
            args.join(" "),
            p.state_dir(),
            snapshot(&p.state_dir())
        );
    }
    // With a run: nothing in it changes.
    p.run(&["port"]).success();
    let port = p.root.join("ports/sysutils/colibri");
    let before = snapshot(&p.state_dir());
    let detached: &[&str] = &["makesum", "--dry-run", "--port", port.as_str()];
    for args in DRY_RUNS.iter().copied().chain([detached]) {
        p.run(args);
        let after = snapshot(&p.state_dir());
        let changed: Vec<_> =
            after.iter().filter(|l| !before.contains(l)).chain(before.iter().filter(|l| !after.contains(l))).collect();
        assert!(changed.is_empty(), "`xtask {}` changed the state directory:\n{changed:#?}", args.join(" "));
    }
    assert!(p.run(&["release", "--dry-run", "--to", "iso"]).success().stdout().contains("makesum:"));
}

/// The help line that gives a command, from `help: ...: COMMAND`.
fn help_command(stderr: &str, after: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("help:") && l.contains(after))
        .unwrap_or_else(|| panic!("no help with {after:?}:\n{stderr}"));
    line[line.find(after).unwrap() + after.len()..].trim().to_owned()
}

/// Runs a command line as printed, in `dir`, through sh.
fn sh(dir: &camino::Utf8Path, line: &str) -> std::process::Output {
    std::process::Command::new("sh").arg("-c").arg(line).current_dir(dir).output().unwrap()
}

#[test]
fn a_corrupt_state_names_the_run_and_how_to_move_only_it_aside() {
    let p = Project::with_colibri("");
    p.run(&["port"]).success();
    let id = p.state()["id"].as_str().unwrap().to_owned();
    let state = p.state_dir().join("runs").join(&id).join("state.json");
    let text = std::fs::read(&state).unwrap();
    std::fs::write(&state, &text[..text.len() / 2]).unwrap();

    let run = p.run(&["status"]);
    run.code_is(2).stderr_has(&format!("the state of run {id}")).stderr_has("is corrupt: it is not JSON");
    assert!(!run.stderr().contains("version"), "a corrupt file is not a version problem:\n{}", run.stderr());
    let mv = help_command(&run.stderr(), "starts a new run): ");
    assert!(mv.starts_with("mv ") && mv.contains(&id), "{mv}");
    assert!(!mv.contains(&format!("{} ", p.state_dir())), "only the run moves aside, not the state directory: {mv}");
    p.run(&["release", "--to", "port"]).code_is(2).stderr_has("is corrupt");

    // The command works as printed, and the state directory is usable again.
    let out = sh(&p.root, &mv);
    assert!(out.status.success(), "{mv}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(p.state_dir().join("runs").join(format!("{id}.corrupt/state.json")).exists());
    p.run(&["status"]).success().stdout_has("no run yet");
    p.run(&["release", "--to", "port"]).success().stderr_has("[port] ok");

    // A state written by another version says that, not that it is corrupt.
    let id = p.state()["id"].as_str().unwrap().to_owned();
    let state = p.state_dir().join("runs").join(&id).join("state.json");
    let text = std::fs::read_to_string(&state).unwrap().replacen("\"version\": 3", "\"version\": 7", 1);
    std::fs::write(&state, text).unwrap();
    let run = p.run(&["status"]);
    run.code_is(2).stderr_has("has version 7, but this mother-build reads versions up to 3").stderr_has("mv ");
    assert!(!run.stderr().contains("corrupt:"), "{}", run.stderr());
}

/// xtask run in `dir` exactly as `args` say (no `--config` added), as an operator would.
fn xtask_in(dir: &camino::Utf8Path, args: &[&str]) -> test_support::Run {
    let output = std::process::Command::new(test_support::xtask_bin())
        .args(args)
        .current_dir(dir)
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .env_remove("MOTHER_BUILD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    test_support::Run { desc: format!("xtask {}", args.join(" ")), dir: dir.to_owned(), output }
}

/// A `cargo xtask ...` line a report printed after `label`, run as printed (through sh,
/// in `dir`, with `cargo xtask` being the built binary).
fn run_printed(dir: &camino::Utf8Path, stderr: &str, label: &str) -> (String, test_support::Run) {
    let line = stderr
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{stderr}"));
    let line = line.trim().to_owned();
    assert!(line.starts_with("cargo xtask "), "{line}");
    let script = line.replacen("cargo xtask", test_support::xtask_bin().as_str(), 1);
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir)
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .env_remove("MOTHER_BUILD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (line.clone(), test_support::Run { desc: line, dir: dir.to_owned(), output })
}

#[test]
fn a_run_started_with_flags_is_continued_with_them_and_the_hints_work_as_printed() {
    let p = Project::with_colibri("");
    // A pipeline file of its own, a state directory elsewhere, and an override whose
    // effect shows: where the port is staged.
    std::fs::create_dir_all(p.root.join("conf")).unwrap();
    std::fs::write(p.root.join("conf/site.toml"), "[port]\ncolibri = \"../../colibri\"\n").unwrap();
    let staged = |overlay: &str| p.root.join("conf").join(overlay).join("sysutils/colibri/Makefile").exists();
    let stray = p.colibri().join("stray");
    let started: &[&str] =
        &["--config", "conf/site.toml", "--state-dir", "elsewhere/state", "-o", "port.overlay=other-ports"];

    // A dirty checkout fails port; the report prints the commands with every flag.
    std::fs::write(&stray, "x").unwrap();
    let first = xtask_in(&p.root, &[started, &["release", "--to", "port"]].concat());
    first.code_is(2).stderr_has(
        "rerun this stage: cargo xtask --config conf/site.toml --state-dir elsewhere/state -o port.overlay=other-ports port",
    );
    let stderr = first.stderr();
    let id = stderr.split("attempt 1 in run ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
    std::fs::remove_file(&stray).unwrap();
    let (_, resumed) = run_printed(&p.root, &stderr, "or continue the run: ");
    resumed.success().stderr_has(&format!("resuming run {id} at `port`")).stderr_has("[port] ok");
    assert!(staged("other-ports") && !staged("ports"), "the override applies");

    // The bare stage command on that run reuses the run's --config and -o, and says so.
    std::fs::write(&stray, "x").unwrap();
    let bare = xtask_in(&p.root, &["--state-dir", "elsewhere/state", "port"]);
    bare.code_is(2).stderr_has(&format!(
        "run {id} was started with --config conf/site.toml -o port.overlay=other-ports: using them again"
    ));
    std::fs::remove_file(&stray).unwrap();
    std::fs::remove_dir_all(p.root.join("conf/other-ports")).unwrap();
    let (line, again) = run_printed(&p.root, &bare.stderr(), "rerun this stage: ");
    assert_eq!(line, "cargo xtask --state-dir elsewhere/state port");
    again.success().stderr_has("using them again");
    assert!(staged("other-ports") && !staged("ports"), "the run's override applies again");

    // A flag given again wins, and that is said.
    let other = xtask_in(&p.root, &["--state-dir", "elsewhere/state", "-o", "port.overlay=third", "port"]);
    other.success().stderr_has(&format!(
        "-o port.overlay=third replaces -o port.overlay=other-ports, which run {id} was started with"
    ));
    assert!(staged("third"));

    // status shows how the run was started, and nothing was written to the default place.
    xtask_in(&p.root, &["--state-dir", "elsewhere/state", "status"]).success().stdout_has(
        "by `cargo xtask --config conf/site.toml --state-dir elsewhere/state -o port.overlay=other-ports release`",
    );
    assert!(!p.state_dir().exists() && !p.root.join("conf/target").exists());
}

#[test]
fn the_log_excerpt_is_the_failed_attempts_and_ends_with_its_error() {
    let p = Project::with_colibri("");
    let excerpt = |run: &test_support::Run| {
        let stderr = run.stderr();
        let start = stderr.find("last lines of the log:").unwrap_or_else(|| panic!("no excerpt:\n{stderr}"));
        stderr[start..].lines().skip(1).take_while(|l| l.starts_with("  | ")).map(str::to_owned).collect::<Vec<_>>()
    };
    std::fs::write(p.colibri().join("stray-one"), "x").unwrap();
    let first = p.run(&["-o", "pipeline.tail_lines=60", "port"]);
    first.code_is(2);
    let lines = excerpt(&first);
    assert!(lines.first().is_some_and(|l| l.contains("port: attempt 1")), "{lines:#?}");
    let error = lines.iter().position(|l| l.starts_with("  | error: ")).expect("the excerpt has the error");
    assert!(lines[error..].iter().any(|l| l.contains("?? stray-one")), "{lines:#?}");

    std::fs::rename(p.colibri().join("stray-one"), p.colibri().join("stray-two")).unwrap();
    let second = p.run(&["-o", "pipeline.tail_lines=60", "port"]);
    second.code_is(2);
    let lines = excerpt(&second);
    let text = lines.join("\n");
    assert!(lines.first().is_some_and(|l| l.contains("port: attempt 2")), "{text}");
    let error = lines.iter().position(|l| l.starts_with("  | error: ")).expect("the excerpt has the error");
    assert!(lines[error..].iter().any(|l| l.contains("?? stray-two")), "{text}");
    assert!(
        !text.contains("attempt 1") && !text.contains("stray-one"),
        "the excerpt shows the attempt before:\n{text}"
    );
}
