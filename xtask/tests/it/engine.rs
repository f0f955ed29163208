//! Runs and state: skipping unchanged stages, one run at a time, resuming after a
//! SIGKILL, and Ctrl-C stopping the whole process group with exit 130.

use std::os::unix::process::CommandExt;
use std::time::Duration;

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
    assert_eq!(json["schema"], 1);
    let port = json["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "port").unwrap();
    assert_eq!(port["status"], "succeeded");
    let log = port["log"].as_str().unwrap();
    let text = std::fs::read_to_string(p.root.join(log)).unwrap();
    assert!(text.contains("$ git -C"), "the log records every command:\n{text}");
}

#[test]
fn second_concurrent_run_is_refused_naming_the_holder() {
    let (p, pidfile) = slow_project();
    let mut first = p.command(&["port"]).spawn().unwrap();
    wait_for("the first run to hold the lock", Duration::from_secs(20), || !pids(&pidfile).is_empty());
    let second = p.run(&["release", "--to", "port"]);
    second.code_is(2).stderr_has("another mother-build run holds").stderr_has(&format!("pid {}", first.id()));
    kill_all(&pids(&pidfile));
    let _ = first.wait();
}

#[test]
fn a_sigkilled_run_is_reported_and_resumed() {
    let (p, pidfile) = slow_project();
    let mut first = p.command(&["release", "--to", "port"]).spawn().unwrap();
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
    cmd.process_group(0);
    let mut child = cmd.spawn().unwrap();
    wait_for("port to start", Duration::from_secs(20), || !pids(&pidfile).is_empty());
    let pgid = child.id() as i32;
    // A terminal's Ctrl-C: SIGINT to the foreground process group.
    // SAFETY: plain killpg(2).
    unsafe { libc::killpg(pgid, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let left: Vec<i32> = pids(&pidfile).into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
    assert_eq!(p.stage_status("port"), "interrupted");
    p.write_config("");
    p.run(&["release", "--resume"]).success();
}

#[test]
fn a_release_with_nothing_to_boot_is_refused_before_its_first_stage() {
    // The gate boots with bhyve, iso builds no image and gate.image is unset: the release
    // would fail only at its last stage.
    let p = Project::with_colibri("");
    for args in [&["release"][..], &["release", "--dry-run"]] {
        p.run(args)
            .code_is(2)
            .stderr_has("this release ends in gate, which boots an image with bhyve, but nothing makes one")
            .stderr_has("iso.build_command is empty (iso builds no image) and gate.image is unset")
            .stderr_has("help: set iso.build_command to the ISO build script")
            .stderr_has("help: or stop before the gate: cargo xtask release --to iso");
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
