//! bulk against the poudriere stand-in (which does what poudriere 3.4.8 does): a build
//! judged from its status files; what 3.4.8 leaves on a rerun (the package already up to
//! date, a leftover `.building` reused, a package fetched instead of built, flavored and
//! subpackaged ports); every failure shape (failed in several phases, timeouts, skipped,
//! ignored with exit 0, a crashed builder, a crashed bulk, a signal, unfinished, an exit
//! status that disagrees with the files, a wrong version, nothing committed under
//! COMMIT_PACKAGES_ON_FAILURE=no, no status files at all); where poudriere's
//! configuration puts the build (a per-jail override, the ZFS data dataset); Ctrl-C and
//! the timeout stopping poudriere through its cleanup; and `bulk --judge`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

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

fn packages(h: &Host) -> Utf8PathBuf {
    h.data.join("packages").join(MASTER)
}

fn read(path: &Utf8Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every status a build went through (`.poudriere.status.journal%`).
fn journal(h: &Host, build: &str) -> Vec<String> {
    read(&log_dir(h, build).join(".poudriere.status.journal%")).lines().map(str::to_owned).collect()
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
        serde_json::json!([{"origin": "sysutils/colibri", "pkgname": "colibri-0.9.0", "version": "0.9.0", "file": "All/colibri-0.9.0.pkg", "source": "built"}])
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
    // What 3.4.8 leaves: the status sequence, the commit tied to this build.
    assert_eq!(
        journal(&h, &id).join(" "),
        "loading_moved: gatheringportvars: computingdeps: computingrdeps: sanity: trimming_ignore: \
         fetching_packages: sanity: sanity: cleaning: pkgqueue_sanity_check: load_priorities: balancing_pool: \
         building: parallel_build: stopping_jobs: updating_stats: idle: pkgrepo: committing: done: stopped:done:"
    );
    assert_eq!(read(&real.join(".buildname")).trim(), id);
    assert_eq!(read(&log_dir(&h, &id).join(".poudriere.ports.queued")), "sysutils/colibri colibri-0.9.0 listed\n");
}

#[test]
fn an_unchanged_rerun_is_already_up_to_date() {
    let h = ready("");
    bulk(&h, "built").success();
    let id = run_id(&h);
    let first_real = outputs(&h)["real"].as_str().unwrap().to_owned();

    // Another bulk in the same run gets a fresh name (reusing one would resume it), and
    // poudriere does not rebuild a current package: it is only in ports.queued.
    let run = bulk(&h, "built");
    let again = format!("{id}-2");
    run.success().stderr_has("colibri-0.9.0 was already up to date (poudriere did not rebuild it) -> ");
    let out = outputs(&h);
    assert_eq!(out["build_name"], again.as_str());
    assert_eq!(out["packages"][0]["source"], "up-to-date");
    assert_eq!(out["packages"][0]["pkgname"], "colibri-0.9.0");
    let logs = log_dir(&h, &again);
    assert_eq!(read(&logs.join(".poudriere.ports.queued")), "sysutils/colibri colibri-0.9.0 listed\n");
    for list in ["built", "failed", "skipped", "ignored", "fetched"] {
        assert_eq!(read(&logs.join(format!(".poudriere.ports.{list}"))), "", "{list}");
    }
    assert!(!journal(&h, &again).iter().any(|s| s == "parallel_build:"), "{:?}", journal(&h, &again));
    // Committed all the same: .latest switched to a new repository of this build.
    let real = out["real"].as_str().unwrap();
    assert_ne!(real, first_real);
    assert_eq!(read(&Utf8Path::new(real).join(".buildname")).trim(), again);
    assert!(Utf8Path::new(real).join("All/colibri-0.9.0.pkg").is_file());
}

#[test]
fn a_leftover_building_after_a_crash_is_reused_on_rerun() {
    let h = ready("");
    // Signing the repository fails: the bulk crashes with colibri built in .building.
    bulk(&h, "crashed").code_is(2);
    assert!(packages(&h).join(".building/All/colibri-0.9.0.pkg").is_file());
    let run = bulk(&h, "built");
    run.success().stderr_has("colibri-0.9.0 was already up to date");
    let log = read(&h.p.state_dir().join("runs").join(run_id(&h)).join("logs/bulk.log"));
    assert!(log.contains("Using packages from previously failed, or uncommitted, build"), "{log}");
    assert!(!packages(&h).join(".building").exists(), "the rerun committed .building");
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
    run_with(&h, &[], &["bulk", "--set", "no-dash"]).code_is(2).stderr_has("set name `no-dash`");
}

/// A port failed in `phase`: the phase, the error type poudriere's classifier gave, the
/// build log and its end, and what such a failure usually means.
#[track_caller]
fn failed_in(scenario: &str, phase: &str, errortype: &str, log_line: &str, help: &str) {
    let h = ready("");
    let run = bulk(&h, scenario);
    failed(&h, &run, 1);
    let logs = log_dir(&h, &run_id(&h)).join("logs");
    run.stderr_has(&format!(
        "sysutils/colibri (colibri-0.9.0) failed in the `{phase}` phase of poudriere build {} (error type: {errortype})",
        run_id(&h)
    ))
    .stderr_has(&format!("build log: {}", logs.join("colibri-0.9.0.log")))
    .stderr_has(log_line)
    .stderr_has(help);
    assert!(h.p.state()["records"]["bulk"]["error"].as_str().unwrap().contains(phase));
}

#[test]
fn failed_in_fetch() {
    failed_in("failed:fetch", "fetch", "fetch", "Not Found", "cargo xtask makesum");
}

#[test]
fn failed_in_build() {
    failed_in(
        "failed:build",
        "build",
        "rust",
        "error[E0425]: cannot find value `undefined` in this scope",
        "the code did not compile in the jail",
    );
}

#[test]
fn failed_in_package() {
    failed_in(
        "failed:package",
        "package",
        "install_error",
        "pkg-static: Unable to access file /wrkdirs/usr/ports/sysutils/colibri/work/stage/usr/local/bin/colibri-tui",
        "pkg-plist",
    );
}

#[test]
fn failed_with_no_classified_error() {
    failed_in("failed:extract", "extract", "???", "===> Error: extract failed for colibri", "did not unpack");
}

#[test]
fn failed_in_run_depends() {
    failed_in(
        "failed:run-depends",
        "run-depends",
        "depend_object",
        "depends on executable: git - not found",
        "a dependency could not be installed in the jail",
    );
}

#[test]
fn a_phase_that_ran_too_long_says_so() {
    failed_in(
        "failed:build/timeout",
        "build/timeout",
        "runaway_process",
        "Killing timed out build after 86400 seconds",
        "raise MAX_EXECUTION_TIME or NOHANG_TIME",
    );
    let h = ready("");
    let run = bulk(&h, "failed:build/timeout");
    run.stderr_has("poudriere killed the `build` phase for running longer than MAX_EXECUTION_TIME");
}

#[test]
fn a_silent_phase_is_a_runaway() {
    failed_in(
        "failed:build/runaway",
        "build/runaway",
        "runaway_process",
        "Killing runaway build after 7200 seconds with no output",
        "raise MAX_EXECUTION_TIME or NOHANG_TIME",
    );
    let h = ready("");
    bulk(&h, "failed:build/runaway")
        .stderr_has("poudriere killed the `build` phase as a runaway: its log got no new output for NOHANG_TIME");
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
fn a_crashed_bulk_is_an_infrastructure_error_with_poudriere_s_reason() {
    let h = ready("");
    let run = bulk(&h, "crashed");
    failed(&h, &run, 2);
    run.stderr_has(&format!(
        "poudriere crashed during build {}, at `pkgrepo:` (.poudriere.status `stopped:crashed:`",
        run_id(&h)
    ))
    .stderr_has("poudriere said: [00:00:02] Error: Failed to sign pkg repository")
    .stderr_has("an infrastructure error, not a port failure");
    let j = journal(&h, &run_id(&h));
    assert_eq!(j[j.len() - 3..], ["pkgrepo:", "crashed:", "stopped:crashed:"]);
}

#[test]
fn a_crashed_builder_is_an_infrastructure_error() {
    let h = ready("");
    let run = bulk(&h, "builder-crashed");
    failed(&h, &run, 2);
    let id = run_id(&h);
    run.stderr_has(&format!(
        "the poudriere builder building sysutils/colibri (colibri-0.9.0) crashed in build {id}, at `crashed`: .poudriere.ports.failed has `sysutils/colibri colibri-0.9.0 crashed crashed`"
    ))
    .stderr_has(".poudriere.status.01 is `crashed:`")
    .stderr_has("Build crashed: crashed")
    .stderr_has("this is an infrastructure error (the builder's process or jail died), not a port failure");
    // poudriere itself carried on and finished.
    assert_eq!(read(&log_dir(&h, &id).join(".poudriere.status")).trim(), "stopped:done:");
    assert!(!run.stderr().contains("did not compile"), "{}", run.stderr());
    // --judge says the same.
    h.run(&["bulk", "--judge", log_dir(&h, &id).as_str()])
        .code_is(2)
        .stdout_has("sysutils/colibri  colibri-0.9.0  crashed (builder crashed)")
        .stdout_has("the poudriere builder building sysutils/colibri (colibri-0.9.0) crashed");
}

#[test]
fn a_signal_from_outside_is_an_infrastructure_error() {
    let h = ready("");
    let run = bulk(&h, "sigterm");
    failed(&h, &run, 2);
    let id = run_id(&h);
    run.stderr_has(&format!(
        "poudriere was stopped by SIGTERM during build {id}, at `parallel_build:` (.poudriere.status `stopped:sigterm:`"
    ))
    .stderr_has("it stopped its builders and jails and exited 1; the signal did not come from this bulk (its timeout or Ctrl-C)");
    // --judge cannot know where an old build's signal came from.
    let judged = h.run(&["bulk", "--judge", log_dir(&h, &id).as_str()]);
    judged.code_is(2).stdout_has("it stopped its builders and jails and exited 1\n");
    let j = journal(&h, &id);
    assert_eq!(j[j.len() - 2..], ["sigterm:", "stopped:sigterm:"]);
    let log = read(&h.p.state_dir().join("runs").join(&id).join("logs/bulk.log"));
    assert!(log.contains("Error: Signal SIGTERM caught, cleaning up and exiting"), "{log}");
    assert!(log.contains("[exited with status 1]"), "{log}");
}

#[test]
fn a_fetched_port_is_reported_as_fetched() {
    let h = ready("");
    let run = bulk(&h, "fetched");
    run.success().stderr_has("colibri-0.9.0 was fetched prebuilt from the package servers (bulk.prebuilt), not built");
    let out = outputs(&h);
    assert_eq!(out["packages"][0]["source"], "fetched");
    assert_eq!(out["stats"]["fetched"], 1);
    let logs = log_dir(&h, &run_id(&h));
    assert_eq!(read(&logs.join(".poudriere.ports.fetched")), "sysutils/colibri colibri-0.9.0\n");
    assert!(read(&logs.join("logs/colibri-0.9.0.log")).contains("Fetched from pkg+http://pkg.FreeBSD.org/"));
}

#[test]
fn nothing_committed_under_commit_packages_on_failure_no_fails() {
    let h = ready("");
    bulk(&h, "built").success();
    let first = run_id(&h);
    // A per-jail configuration file, read after poudriere.conf.
    fs::write(h.etc.join("poudriere.d/clawdie-amd64-poudriere.conf"), "COMMIT_PACKAGES_ON_FAILURE=no\n").unwrap();
    // colibri-0.9.0 must be built again: another version was committed in between.
    let run = run_with(
        &h,
        &[("STANDIN_BULK", "built"), ("STANDIN_EXTRA_FAILED", "1"), ("STANDIN_PKGVERSION", "0.9.0_1")],
        &["bulk"],
    );
    run.code_is(1);
    assert_eq!(h.p.stage_status("bulk"), "failed");
    assert_eq!(outputs(&h)["build_name"], first.as_str(), "the failed bulk recorded outputs");
    let id = format!("{first}-2");
    run.stderr_has(&format!(
        "poudriere build {id} lists colibri-0.9.0_1 as built, but committed nothing: 1 other port(s) failed"
    ))
    .stderr_has("COMMIT_PACKAGES_ON_FAILURE=no")
    .stderr_has(&format!("serving build {first}"))
    .stderr_has("set COMMIT_PACKAGES_ON_FAILURE=yes");
    assert_eq!(read(&log_dir(&h, &id).join(".poudriere.status")).trim(), "stopped:done:");
    assert!(!journal(&h, &id).iter().any(|s| s == "committing:"));
    assert_eq!(read(&packages(&h).join(".building/.buildname")).trim(), id);
    assert_eq!(read(&packages(&h).join(".latest/.buildname")).trim(), first);
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
    run.success()
        .stderr_has("note: poudriere exited with status 3")
        .stderr_has("show sysutils/colibri done and its package is in the repository")
        .stderr_has("built colibri-0.9.0 -> ");
    assert_eq!(outputs(&h)["poudriere_exit"], 3);
    assert_eq!(h.p.stage_status("bulk"), "succeeded");
}

#[test]
fn a_package_of_another_version_is_not_success() {
    let h = ready("");
    let run = run_with(&h, &[("STANDIN_BULK", "built"), ("STANDIN_PKGVERSION", "0.8.0")], &["bulk"]);
    failed(&h, &run, 1);
    run.stderr_has(
        "poudriere's package for sysutils/colibri is colibri-0.8.0, but `port` staged version 0.9.0: this build did not use the port this run staged",
    );
}

#[test]
fn a_repository_another_build_committed_is_not_success() {
    let h = ready("");
    bulk(&h, "built").success();
    let first = log_dir(&h, &run_id(&h));
    bulk(&h, "built").success();
    // The first build's repository is no longer the one served.
    let run = h.run(&["bulk", "--judge", first.as_str()]);
    run.code_is(1).stdout_has(&format!(
        "serves build {}-2, not this build: it was never committed, or a later build has replaced it",
        run_id(&h)
    ));
}

#[test]
fn flavored_and_subpackaged_ports_are_judged_by_their_package_names() {
    let h = ready("");
    let makefile = h.p.root.join("ports/sysutils/colibri/Makefile");
    let text = read(&makefile);
    let flavored = text.replace(
        "CATEGORIES=\tsysutils\n",
        "CATEGORIES=\tsysutils\nFLAVORS=\tlite full\nlite_PKGNAMESUFFIX=\t-lite\nSUBPACKAGES=\tdocs\n",
    );
    assert_ne!(flavored, text);
    fs::write(&makefile, flavored).unwrap();
    let run = bulk(&h, "built");
    run.success().stderr_has("built colibri-lite-0.9.0 -> ");
    assert_eq!(
        outputs(&h)["packages"],
        serde_json::json!([{"origin": "sysutils/colibri@lite", "pkgname": "colibri-lite-0.9.0", "version": "0.9.0", "file": "All/colibri-lite-0.9.0.pkg", "source": "built"}])
    );
    // The lists spell the default flavor differently; the subpackage is in All/ too.
    let logs = log_dir(&h, &run_id(&h));
    assert_eq!(read(&logs.join(".poudriere.ports.queued")), "sysutils/colibri colibri-lite-0.9.0 listed\n");
    assert!(read(&logs.join(".poudriere.ports.built")).starts_with("sysutils/colibri@lite colibri-lite-0.9.0 "));
    assert!(packages(&h).join(".latest/All/colibri-lite-docs-0.9.0.pkg").is_file());
}

#[test]
fn no_status_files_at_all_points_at_setup() {
    let h = ready("");
    fs::remove_dir_all(h.etc.join("poudriere.d/ports/clawdie_overlay")).unwrap();
    let run = bulk(&h, "built");
    failed(&h, &run, 2);
    run.stderr_has("poudriere bulk exited with status 2 and wrote no status files")
        .stderr_has("Error: No such overlay clawdie_overlay")
        .stderr_has("cargo xtask setup --check");
}

#[test]
fn a_jail_that_cannot_start_leaves_no_log_directory() {
    let h = ready("");
    fs::remove_dir_all(&h.distfiles).unwrap();
    let run = bulk(&h, "built");
    failed(&h, &run, 2);
    run.stderr_has("wrote no status files")
        .stderr_has("Error: DISTFILES_CACHE directory does not exist. (cf.  poudriere.conf)");
    assert!(!log_dir(&h, &run_id(&h)).exists());
    assert!(!h.host.join("cleanup-ran").exists(), "poudriere stopped a jail it never started");
}

#[test]
fn the_stand_in_answers_as_poudriere_3_4_8_does() {
    let h = ready("");
    let code = |args: &[&str], want: i32, says: &str| {
        let out = h.poudriere(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(want), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    };
    code(&["version"], 0, "poudriere-git-3.4.8");
    code(&["bulk"], 64, "poudriere bulk [options]");
    code(&["bulk", "-p", "clawdie", "sysutils/colibri"], 1, "Don't know on which jail to run please specify -j");
    code(&["bulk", "-j", "clawdie-amd64"], 64, "No packages specified");
    code(&["bulk", "-j", "nope", "sysutils/colibri"], 1, "No such jail: nope");
    code(&["bulk", "-j", "clawdie-amd64", "-p", "nope", "sysutils/colibri"], 2, "No such ports tree nope");
    code(
        &["bulk", "-j", "clawdie-amd64", "-b", "weekly", "sysutils/colibri"],
        1,
        "Invalid branch name for package fetching: weekly",
    );
    code(&["jail", "-c", "-j", "clawdie-amd64", "-v", "15.0-RELEASE"], 2, "The jail clawdie-amd64 already exists");
    code(&["ports", "-c", "-p", "with:colon"], 1, "The ports name cannot contain a period (.). See jail(8)");
    code(&["ports", "-c", "-p", "clawdie"], 2, "The ports tree, clawdie, already exists");
    assert!(!h.data.join("logs").exists(), "a bulk that never started its jail made a log directory");
    let out = std::process::Command::new(test_support::simhost().join("poudriere/poudriere"))
        .args(["-s", "X=1", "version"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Usage: poudriere [-ANv] [-e etcdir] command"));
}

#[test]
fn an_unprovisioned_host_is_told_to_run_setup() {
    let h = Host::with_colibri("");
    h.run(&["port"]).success();
    bulk(&h, "built").code_is(2).stderr_has("poudriere has no configuration").stderr_has("cargo xtask setup");
    assert!(!h.calls().iter().any(|c| c.contains(" bulk ")), "poudriere ran: {:?}", h.calls());
}

#[test]
fn bulk_needs_the_port_stage() {
    let h = Host::with_colibri("");
    h.provision();
    bulk(&h, "built").code_is(2).stderr_has("run it first: cargo xtask --config pipeline.toml port");
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
    // poudriere did not rebuild the current package; the new build committed it.
    h.run(&["release"]).success().stderr_has("colibri-0.9.0 was already up to date");
}

#[test]
fn a_per_jail_poudriere_conf_override_of_poudriere_data_is_followed() {
    let h = ready("");
    let elsewhere = h.data.parent().unwrap().join("elsewhere");
    fs::write(h.etc.join("poudriere.d/clawdie-amd64-poudriere.conf"), "POUDRIERE_DATA=${BASEFS}/elsewhere\n").unwrap();
    let run = bulk(&h, "built");
    run.success().stderr_has(&format!(
        "note: poudriere's configuration puts its results in {elsewhere} (from {}:1), not in pipeline.toml's poudriere.data {}: bulk follows poudriere",
        h.etc.join("poudriere.d/clawdie-amd64-poudriere.conf"),
        h.data
    ));
    let out = outputs(&h);
    assert_eq!(out["log_dir"], elsewhere.join("logs/bulk").join(MASTER).join(run_id(&h)).as_str());
    assert_eq!(out["repo"], elsewhere.join("packages").join(MASTER).join(".latest").as_str());
    assert!(elsewhere.join("packages").join(MASTER).join(".latest/All/colibri-0.9.0.pkg").is_file());
    assert!(!h.data.join("logs").exists(), "poudriere wrote to pipeline.toml's data too");
    // setup agrees about where poudriere puts it.
    h.run(&["setup", "--check"]).success().stdout_has(&format!("POUDRIERE_DATA is {elsewhere}"));
}

#[test]
fn without_poudriere_data_the_zfs_data_dataset_is_used() {
    let h = ready("");
    let zdata = h.data.parent().unwrap().join("zdata");
    let conf = read(&h.conf());
    let without: String =
        conf.lines().filter(|l| !l.starts_with("POUDRIERE_DATA=")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, conf);
    fs::write(h.conf(), without).unwrap();
    fs::write(
        h.host.join("zfs"),
        format!("zroot/poudriere\t{}\t-\nzroot/poudriere/data\t{zdata}\tdata\n", h.data.parent().unwrap()),
    )
    .unwrap();
    fs::create_dir_all(&zdata).unwrap();
    h.forget_calls();
    let run = bulk(&h, "built");
    run.success().stderr_has(&format!(
        "puts its results in {zdata} (from the ZFS dataset under zroot/poudriere with poudriere:type=data)"
    ));
    assert!(h.calls().contains(&"zfs list -rt filesystem -H -o poudriere:type,mountpoint zroot/poudriere".to_owned()));
    assert_eq!(outputs(&h)["log_dir"], zdata.join("logs/bulk").join(MASTER).join(run_id(&h)).as_str());
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
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("timed out after 2.0s and was stopped"), "{stderr}");
    assert!(stderr.contains("was at `parallel_build:`"), "{stderr}");
    assert!(stderr.contains("its status is now `stopped:sigterm:`"), "{stderr}");
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
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
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
        .stdout_has("lang/rust  rust-1.89.0  build (???)")
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
