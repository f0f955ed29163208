//! bulk.reproduce and `bulk --reproduce`: a second, fresh build in a set of its own,
//! compared byte for byte with the first; the poudriere stand-in's unreproducible mode
//! (STANDIN_UNREPRODUCIBLE) makes the package differ between builds.

use std::fs;

use test_support::Run;
use test_support::host::Host;

fn ready(extra: &str) -> Host {
    let h = Host::with_colibri(extra);
    h.provision();
    h.run(&["port"]).success();
    h
}

fn bulk(h: &Host, unreproducible: bool, args: &[&str]) -> Run {
    let mut cmd = h.p.command(&[&["bulk"], args].concat());
    if unreproducible {
        cmd.env("STANDIN_UNREPRODUCIBLE", "1");
    }
    Run { desc: format!("xtask bulk {args:?}"), dir: h.p.root.clone(), output: cmd.output().unwrap() }
}

fn outputs(h: &Host) -> serde_json::Value {
    h.p.state()["records"]["bulk"]["last_success"]["outputs"].clone()
}

#[test]
fn a_reproducible_build_is_built_twice_and_found_identical() {
    let h = ready("");
    let first_repo = h.data.join("packages/clawdie-amd64-clawdie/.latest/All/colibri-0.9.0.pkg");
    let run = bulk(&h, false, &["--reproduce"]);
    run.success()
        .stderr_has("reproduce: building sysutils/colibri again, fresh, as build ")
        .stderr_has("reproduced All/colibri-0.9.0.pkg: identical (sha256 ")
        .stderr_has("reproduce: all 1 packages identical in both builds");
    let run_dir = h.p.state_dir().join("runs").join(h.p.state()["id"].as_str().unwrap());
    let log = fs::read_to_string(run_dir.join("logs/bulk.log")).unwrap();
    assert!(log.contains("-c specified, cleaning all packages... done"), "{log}");
    assert!(log.contains(" -z repro -c -B "), "{log}");
    let o = outputs(&h);
    assert_eq!(o["reproduce"]["set"], "repro");
    assert_eq!(o["reproduce"]["packages"][0]["identical"], true);
    assert!(first_repo.is_file(), "the first build's repository is what sign signs");
    assert!(h.data.join("packages/clawdie-amd64-clawdie-repro/.latest/All/colibri-0.9.0.pkg").is_file());
    // The option is part of what bulk depends on: without it, bulk runs again.
    bulk(&h, false, &[]).success().stderr_has("[bulk] started");
    assert!(outputs(&h)["reproduce"].is_null());
}

#[test]
fn a_package_that_differs_is_reported_with_both_sums_and_the_files_inside() {
    let h = ready("[bulk]\nreproduce = true\n");
    let run = bulk(&h, true, &[]);
    run.success()
        .stderr_has("NOT reproduced All/colibri-0.9.0.pkg: sha256 ")
        .stderr_has("1 member differ")
        .stderr_has("/usr/local/bin/colibri-daemon: contents (");
    let o = outputs(&h);
    let c = &o["reproduce"]["packages"][0];
    assert_eq!(c["identical"], false);
    assert_ne!(c["first_sha256"], c["second_sha256"]);
    assert_eq!(c["members"].as_array().unwrap().len(), 1, "{c}");
    let run_dir = h.p.state_dir().join("runs").join(h.p.state()["id"].as_str().unwrap());
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run_dir.join("bulk/reproduce.json")).unwrap()).unwrap();
    assert_eq!(json["packages"][0]["pkgname"], "colibri-0.9.0");
}

#[test]
fn required_fails_bulk_on_a_difference() {
    let h = ready("[bulk]\nreproduce = \"required\"\n");
    let run = bulk(&h, true, &[]);
    run.code_is(1)
        .stderr_has("1 of 1 packages differ between two builds of the same sources (bulk.reproduce = \"required\")")
        .stderr_has("poudriere.reproducible = true");
    assert_eq!(h.p.stage_status("bulk"), "failed");
    // Rerun: the package in the repository is the first build's, up to date, and it is
    // what is compared with a fresh build again.
    bulk(&h, false, &[]).code_is(1).stderr_has("was already up to date").stderr_has("NOT reproduced");
}

#[test]
fn poudriere_reproducible_makes_setup_write_what_the_build_needs_and_the_packages_agree() {
    let h = ready("[poudriere]\nreproducible = true\n[bulk]\nreproduce = \"required\"\n");
    let conf = fs::read_to_string(h.etc.join("poudriere.conf")).unwrap();
    assert!(conf.contains("PKG_REPRODUCIBLE=yes\nBUILDER_HOSTNAME=pkg.clawdie.si\nPRESERVE_TIMESTAMP=yes\n"), "{conf}");
    bulk(&h, true, &[]).success().stderr_has("reproduced All/colibri-0.9.0.pkg: identical");
}

#[test]
fn an_unknown_mode_is_refused_at_load() {
    let h = Host::with_colibri("[bulk]\nreproduce = \"maybe\"\n");
    h.run(&["bulk"]).code_is(2).stderr_has("`maybe` is not a reproduce mode");
}
