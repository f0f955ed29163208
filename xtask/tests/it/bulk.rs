//! bulk against the poudriere stand-in: a build judged from its status files, every
//! failure shape (failed in several phases, skipped, ignored with exit 0, crashed,
//! unfinished, an exit status that disagrees with the files, a wrong version, an
//! uncommitted repository, no status files at all), Ctrl-C and the timeout stopping
//! poudriere through its cleanup, and `bulk --judge`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use camino::Utf8PathBuf;

use test_support::host::Host;
use test_support::{Run, alive, data, pids, wait_for};

const MASTER: &str = "clawdie-amd64-clawdie";

/// A provisioned host with the port staged in the current run.
fn ready(extra: &str) -> Host {
    let h = Host::with_colibri(extra);
    h.provision();
    h.run(&["port"]).success();
    h
}

/// Runs xtask with a scenario for the poudriere stand-in.
fn run_with(h: &Host, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = h.p.command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run { desc: format!("{env:?} xtask {}", args.join(" ")), dir: h.p.root.clone(), output: cmd.output().unwrap() }
}

fn bulk(h: &Host, scenario: &str) -> Run {
    run_with(h, &[("STANDIN_BULK", scenario)], &["bulk"])
}

fn run_id(h: &Host) -> String {
    h.p.state()["id"].as_str().unwrap().to_owned()
}

fn outputs(h: &Host) -> serde_json::Value {
    h.p.state()["records"]["bulk"]["last_success"]["outputs"].clone()
}

fn log_dir(h: &Host, build: &str) -> Utf8PathBuf {
    h.data.join("logs/bulk").join(MASTER).join(build)
}

/// A failed bulk: exit 1 (unless said otherwise), recorded failed, no outputs.
#[track_caller]
fn failed(h: &Host, run: &Run, code: i32) {
    run.code_is(code);
    assert_eq!(h.p.stage_status("bulk"), "failed");
    assert!(outputs(h).is_null(), "a failed bulk recorded outputs: {}", outputs(h));
}

#[test]
fn a_build_is_judged_from_its_status_files_and_recorded() {
    let h = ready("");
    let run = bulk(&h, "built");
    let id = run_id(&h);
    run.success().stderr_has("built colibri-0.9.0 -> ").stderr_has(&format!("build {id}: queued 1, built 1"));

    // The exact command line, with the config root and a build name of this run.
    let want = format!(
        "poudriere -e {} bulk -j clawdie-amd64 -p clawdie -O clawdie_overlay -B {id} -b latest sysutils/colibri",
        h.etc
    );
    assert!(h.calls().contains(&want), "no `{want}` in:\n{}", h.calls().join("\n"));

    // What sign reads.
    let out = outputs(&h);
    let packages = h.data.join("packages").join(MASTER);
    assert_eq!(out["build_name"], id.as_str());
    assert_eq!(out["mastername"], MASTER);
    assert!(out["set"].is_null());
    assert_eq!(out["log_dir"], log_dir(&h, &id).as_str());
    assert_eq!(out["repo"], packages.join(".latest").as_str());
    assert_eq!(out["poudriere_exit"], 0);
    assert_eq!(out["stats"]["built"], 1);
    assert_eq!(
        out["packages"],
        serde_json::json!([{"origin": "sysutils/colibri", "pkgname": "colibri-0.9.0", "version": "0.9.0", "file": "All/colibri-0.9.0.pkg"}])
    );
    // .latest is the one switch; `real` is where it pointed; the package is the real one.
    let real = Utf8PathBuf::from(out["real"].as_str().unwrap());
    let link = fs::read_link(packages.join(".latest")).unwrap();
    assert!(link.to_str().unwrap().starts_with(".real_"), "{link:?}");
    assert_eq!(packages.join(link.to_str().unwrap()), real);
    assert_eq!(
        fs::read(real.join("All/colibri-0.9.0.pkg")).unwrap(),
        fs::read(data().join("pkg-repo/production-pubkey/All/colibri-0.9.0.pkg")).unwrap()
    );
    assert_eq!(fs::read_link(packages.join("All")).unwrap().to_str(), Some(".latest/All"));
    // The build name is recorded before poudriere starts.
    let record = fs::read_to_string(h.p.state_dir().join("runs").join(&id).join("bulk/build.json")).unwrap();
    assert!(record.contains(&format!("\"build_name\": \"{id}\"")), "{record}");

    // Another bulk in the same run gets a fresh name (reusing one would resume it).
    bulk(&h, "built").success();
    assert_eq!(outputs(&h)["build_name"], format!("{id}-2").as_str());
}

#[test]
fn the_validation_set_builds_into_its_own_repository() {
    let h = ready("");
    run_with(&h, &[], &["bulk", "--set", "validation"]).success();
    let id = run_id(&h);
    let want = format!(
        "poudriere -e {} bulk -j clawdie-amd64 -p clawdie -O clawdie_overlay -z validation -B {id} -b latest sysutils/colibri",
        h.etc
    );
    assert!(h.calls().contains(&want), "no `{want}` in:\n{}", h.calls().join("\n"));
    let out = outputs(&h);
    assert_eq!(out["mastername"], "clawdie-amd64-clawdie-validation");
    assert_eq!(out["set"], "validation");
    let real = Utf8PathBuf::from(out["real"].as_str().unwrap());
    assert!(real.as_str().contains("/packages/clawdie-amd64-clawdie-validation/.real_"), "{real}");
    assert_eq!(
        fs::read(real.join("All/colibri-0.9.0.pkg")).unwrap(),
        fs::read(data().join("pkg-repo/validation-pubkey/All/colibri-0.9.0.pkg")).unwrap()
    );
    run_with(&h, &[], &["bulk", "--set", "no-dash"]).code_is(1).stderr_has("set name `no-dash`");
}

/// A port failed in `phase`: the phase, the error type, the build log and its end, and
/// what such a failure usually means.
#[track_caller]
fn failed_in(scenario: &str, phase: &str, errortype: Option<&str>, log_line: &str, help: &str) {
    let h = ready("");
    let run = bulk(&h, scenario);
    failed(&h, &run, 1);
    let logs = log_dir(&h, &run_id(&h)).join("logs");
    run.stderr_has(&format!("sysutils/colibri (colibri-0.9.0) failed in the `{phase}` phase of poudriere build"))
        .stderr_has(&format!("build log: {}", logs.join("colibri-0.9.0.log")))
        .stderr_has(log_line)
        .stderr_has(help);
    match errortype {
        Some(t) => {
            run.stderr_has(&format!("(error type: {t})"));
        }
        None => assert!(!run.stderr().contains("error type"), "{}", run.stderr()),
    }
    assert!(h.p.state()["records"]["bulk"]["error"].as_str().unwrap().contains(phase));
}

#[test]
fn failed_in_fetch() {
    failed_in("failed:fetch:fetch", "fetch", Some("fetch"), "Not Found", "cargo xtask makesum");
}

#[test]
fn failed_in_build_with_an_empty_errortype() {
    failed_in(
        "failed:build",
        "build",
        None,
        "error[E0425]: cannot find value `undefined` in this scope",
        "the code did not compile in the jail",
    );
}

#[test]
fn failed_in_check_plist() {
    failed_in("failed:check-plist:plist", "check-plist", Some("plist"), "Error: Missing: bin/colibri-tui", "pkg-plist");
}

#[test]
fn failed_in_run_depends() {
    failed_in(
        "failed:run-depends:depend_object",
        "run-depends",
        Some("depend_object"),
        "depends on executable: git - not found",
        "a dependency could not be installed in the jail",
    );
}

#[test]
fn skipped_names_the_culprit_and_its_log() {
    let h = ready("");
    let run = bulk(&h, "skipped");
    failed(&h, &run, 1);
    run.stderr_has("sysutils/colibri (colibri-0.9.0) was skipped in poudriere build")
        .stderr_has("its dependency lang/rust (rust-1.89.0) failed in the `build` phase")
        .stderr_has("logs/rust-1.89.0.log")
        .stderr_has("linking with `cc` failed")
        .stderr_has("bulk.prebuilt");
}

#[test]
fn ignored_fails_although_poudriere_exits_0() {
    let h = ready("");
    let run = bulk(&h, "ignored");
    failed(&h, &run, 1);
    run.stderr_has("poudriere ignored sysutils/colibri (colibri-0.9.0)")
        .stderr_has("is marked as broken: needs a rust newer than 1.89")
        .stderr_has("poudriere exited 0 all the same");
    assert!(
        fs::read_to_string(h.p.state_dir().join("runs").join(run_id(&h)).join("logs/bulk.log"))
            .unwrap()
            .contains("[exited with status 0]")
    );
}

#[test]
fn crashed_is_an_infrastructure_error() {
    let h = ready("");
    let run = bulk(&h, "crashed");
    failed(&h, &run, 2);
    run.stderr_has("crashed: Unable to mount tmpfs for clawdie-amd64-clawdie-job-01: Cannot allocate memory")
        .stderr_has("an infrastructure error, not a port failure");
}

#[test]
fn a_build_that_never_finished_is_an_infrastructure_error() {
    let h = ready("");
    let run = bulk(&h, "unfinished");
    failed(&h, &run, 2);
    run.stderr_has("never finished: its status is still `parallel_build:`");
}

#[test]
fn an_exit_status_of_0_does_not_hide_a_failure() {
    // 256 failed ports: poudriere's exit status wraps to 0.
    let h = ready("");
    let run = run_with(&h, &[("STANDIN_BULK", "failed:build"), ("STANDIN_EXTRA_FAILED", "255")], &["bulk"]);
    failed(&h, &run, 1);
    run.stderr_has("failed in the `build` phase").stderr_has("poudriere exited 0 all the same");
    assert_eq!(fs::read_to_string(log_dir(&h, &run_id(&h)).join(".poudriere.stats_failed")).unwrap().trim(), "256");
}

#[test]
fn a_nonzero_exit_status_does_not_fail_a_good_build() {
    // Other ports failed; ours was built and committed.
    let h = ready("");
    let run = run_with(&h, &[("STANDIN_BULK", "built"), ("STANDIN_EXTRA_FAILED", "3")], &["bulk"]);
    run.success().stderr_has("note: poudriere exited with status 3").stderr_has("show sysutils/colibri built");
    assert_eq!(outputs(&h)["poudriere_exit"], 3);
    assert_eq!(h.p.stage_status("bulk"), "succeeded");
}

#[test]
fn a_package_of_another_version_is_not_success() {
    let h = ready("");
    let run = run_with(&h, &[("STANDIN_BULK", "built"), ("STANDIN_PKGVERSION", "0.8.0")], &["bulk"]);
    failed(&h, &run, 1);
    run.stderr_has("poudriere built colibri-0.8.0 for sysutils/colibri, but `port` staged colibri 0.9.0");
}

#[test]
fn a_build_that_was_not_committed_is_not_success() {
    let h = ready("");
    let run = bulk(&h, "uncommitted");
    failed(&h, &run, 1);
    run.stderr_has("lists colibri-0.9.0 as built").stderr_has("the build was not committed");
}

#[test]
fn no_status_files_at_all_points_at_setup() {
    let h = ready("");
    fs::remove_dir_all(h.etc.join("poudriere.d/ports/clawdie_overlay")).unwrap();
    let run = bulk(&h, "built");
    failed(&h, &run, 2);
    run.stderr_has("poudriere bulk exited with status 2 and wrote no status files")
        .stderr_has("No such overlay ports: clawdie_overlay")
        .stderr_has("cargo xtask setup --check");
}

#[test]
fn an_unprovisioned_host_is_told_to_run_setup() {
    let h = Host::with_colibri("");
    h.run(&["port"]).success();
    bulk(&h, "built").code_is(1).stderr_has("poudriere has no configuration").stderr_has("cargo xtask setup");
    assert!(!h.calls().iter().any(|c| c.contains(" bulk ")), "poudriere ran: {:?}", h.calls());
}

#[test]
fn bulk_needs_the_port_stage() {
    let h = Host::with_colibri("");
    h.provision();
    bulk(&h, "built").code_is(1).stderr_has("run it first: cargo xtask --config pipeline.toml port");
}

#[test]
fn a_repository_switched_by_another_build_reruns_bulk() {
    let h = ready("[pipeline]\nstages = [\"port\", \"bulk\"]\n");
    h.run(&["release"]).success();
    h.run(&["release"]).success().stderr_has("every stage is up to date");
    // Someone else builds into the same repository: .latest moves on.
    let out = h.poudriere(&[
        "bulk",
        "-j",
        "clawdie-amd64",
        "-p",
        "clawdie",
        "-O",
        "clawdie_overlay",
        "-B",
        "by-hand",
        "sysutils/colibri",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    h.run(&["release"]).success().stderr_has("built colibri-0.9.0");
}

/// Starts `bulk` with a hanging poudriere in its own process group (as a terminal would
/// run it) and waits until poudriere and its builder run. Returns the child and the pids.
fn start_hanging(h: &Host, scenario: &str) -> (std::process::Child, Vec<i32>) {
    let pidfile = h.p.scratch.path.join("poudriere.pids");
    let mut cmd = h.p.command(&["bulk"]);
    cmd.env("STANDIN_BULK", scenario).env("STANDIN_PIDS", &pidfile);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let child = cmd.spawn().unwrap();
    wait_for("poudriere to start building", Duration::from_secs(30), || pids(&pidfile).len() >= 2);
    (child, pids(&pidfile))
}

#[track_caller]
fn all_gone(pids: &[i32]) {
    let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
    // SAFETY: killpg with signal 0 only checks whether the group has members.
    let group_alive = unsafe { libc::killpg(pids[0], 0) } == 0;
    assert!(!group_alive, "poudriere's process group {} still has members", pids[0]);
}

#[test]
fn ctrl_c_stops_poudriere_through_its_cleanup_and_exits_130() {
    let h = ready("");
    let (child, pids) = start_hanging(&h, "hang");
    // A terminal's Ctrl-C: SIGINT to the foreground process group (xtask's; poudriere
    // runs in a group of its own and hears of it from xtask, as SIGTERM).
    // SAFETY: plain killpg(2).
    unsafe { libc::killpg(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(h.host.join("cleanup-ran").exists(), "poudriere's cleanup trap did not run (SIGKILL instead of SIGTERM?)");
    all_gone(&pids);
    assert_eq!(h.p.stage_status("bulk"), "interrupted");
    let log = fs::read_to_string(h.p.state_dir().join("runs").join(run_id(&h)).join("logs/bulk.log")).unwrap();
    assert!(log.contains("Signal SIGTERM caught, cleaning up"), "{log}");
}

#[test]
fn a_timeout_stops_poudriere_through_its_cleanup() {
    let h = ready("[bulk]\ntimeout_secs = 2\n");
    let (child, pids) = start_hanging(&h, "hang");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timed out after 2.0s and was stopped"), "{stderr}");
    assert!(stderr.contains("was at `parallel_build:`"), "{stderr}");
    assert!(stderr.contains("bulk.timeout_secs"), "{stderr}");
    assert!(h.host.join("cleanup-ran").exists(), "poudriere's cleanup trap did not run");
    all_gone(&pids);
    assert_eq!(h.p.stage_status("bulk"), "failed");
}

#[test]
fn a_poudriere_deaf_to_sigterm_is_killed_after_the_grace_period() {
    let h = ready("[bulk]\ntimeout_secs = 1\ngrace_secs = 1\n");
    let (child, pids) = start_hanging(&h, "hang-stubborn");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    all_gone(&pids);
}

#[test]
fn judge_reports_an_existing_build_without_building() {
    let h = ready("");
    bulk(&h, "built").success();
    let good = log_dir(&h, &run_id(&h));
    h.forget_calls();
    let run = h.run(&["bulk", "--judge", good.as_str()]);
    run.success()
        .stdout_has(&format!("build {} of {MASTER}: stopped:done:", run_id(&h)))
        .stdout_has("sysutils/colibri: built colibri-0.9.0");
    assert!(h.calls().is_empty(), "--judge ran {:?}", h.calls());

    bulk(&h, "skipped").code_is(1);
    let bad = log_dir(&h, &format!("{}-2", run_id(&h)));
    let run = h.run(&["bulk", "--judge", bad.as_str()]);
    run.code_is(1)
        .stdout_has("failed (1):")
        .stdout_has("lang/rust  rust-1.89.0  build")
        .stdout_has("skipped (1):")
        .stdout_has("its dependency lang/rust (rust-1.89.0) failed");
    h.run(&["bulk", "--judge", h.data.join("nonexistent").as_str()]).code_is(2).stderr_has("does not exist");
}

#[test]
fn dry_run_prints_the_command_and_builds_nothing() {
    let h = ready("");
    let id = run_id(&h);
    h.forget_calls();
    let run = h.run(&["bulk", "--dry-run"]);
    run.success().stdout_has(&format!(
        "run     poudriere -e {} bulk -j clawdie-amd64 -p clawdie -O clawdie_overlay -B {id} -b latest sysutils/colibri",
        h.etc
    ));
    run.stdout_has("the package colibri-0.9.0.pkg is in");
    assert!(h.calls().is_empty());
    assert!(!h.data.join("logs").exists());
}

#[test]
fn dry_run_with_the_default_pipeline_and_no_run_uses_the_configuration() {
    let state = test_support::scratch();
    let run = std::process::Command::new(test_support::xtask_bin())
        .args(["--config", test_support::repo_root().join("pipeline.toml").as_str()])
        .args(["--state-dir", state.path.as_str(), "bulk", "--dry-run"])
        .env("CI", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        out.contains(
            "run     poudriere bulk -j clawdie-amd64 -p clawdie -O clawdie_overlay -B dry-run -b latest sysutils/colibri"
        ),
        "{out}"
    );
    assert!(out.contains("note    no `port` outputs in this run"), "{out}");
    assert!(!state.path.join("current").exists(), "a dry run started a run");
}

#[test]
fn a_missing_poudriere_is_named() {
    let h = ready("");
    h.configure("[tools]\npoudriere = \"/nonexistent/poudriere\"\n");
    let run = bulk(&h, "built");
    failed(&h, &run, 2);
    run.stderr_has("poudriere bulk could not run build").stderr_has("cannot run `/nonexistent/poudriere`");
}
