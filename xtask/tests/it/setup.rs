//! setup on a stand-in FreeBSD host (tests/standins/poudriere first on PATH): a fresh
//! host provisioned, a second run changing nothing, `--check` naming what is missing or
//! different, a poudriere.conf replaced only with --write, and the refusals. The host is
//! `test_support::host::Host`, shared with the bulk tests and the end-to-end pipeline.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use test_support::host::{Host, is_root};

/// Calls that change something on the host.
const CHANGING: [&str; 6] = ["jail -c", "ports -c", "pkg install", "kldload", "+=", "jail -d"];

fn changing_calls(calls: &[String]) -> Vec<&String> {
    calls.iter().filter(|c| CHANGING.iter().any(|w| c.contains(w))).collect()
}

#[test]
fn provisions_a_fresh_host_and_a_second_run_changes_nothing() {
    let h = Host::fresh("");
    let run = h.run(&["setup"]);
    run.success().stderr_has("created the RSA 4096 signing key");

    // What poudriere reads: the conf from pipeline.toml, and the validation set.
    let conf = fs::read_to_string(h.conf()).unwrap();
    for line in [
        "ZPOOL=zroot\n".to_owned(),
        "ZROOTFS=/poudriere\n".into(),
        format!("BASEFS={}\n", h.data.parent().unwrap()),
        format!("POUDRIERE_DATA={}\n", h.data),
        format!("DISTFILES_CACHE={}\n", h.distfiles),
        format!("PKG_REPO_SIGNING_KEY={}\n", h.key()),
        "USE_TMPFS=yes\n".into(),
        "PARALLEL_JOBS=8\n".into(),
    ] {
        assert!(conf.contains(&line), "poudriere.conf lacks {line:?}:\n{conf}");
    }
    let make_conf = fs::read_to_string(h.etc.join("poudriere.d/validation-make.conf")).unwrap();
    assert!(make_conf.lines().any(|l| l == "sysutils_colibri_SET+=TESTAGENT"), "{make_conf}");
    assert!(h.distfiles.is_dir());

    // The key: RSA 4096, 0600, never printed; the public key is its public half.
    let mode = fs::metadata(h.key()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::process::Command::new("openssl")
        .args(["pkey", "-in", h.key().as_str(), "-noout", "-text"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("4096 bit"));
    let derived =
        std::process::Command::new("openssl").args(["pkey", "-in", h.key().as_str(), "-pubout"]).output().unwrap();
    assert_eq!(fs::read(h.pubkey()).unwrap(), derived.stdout);
    let secret = fs::read_to_string(h.key()).unwrap();
    let body = secret.lines().nth(1).unwrap();
    assert!(!run.stderr().contains(body) && !run.stdout().contains(body), "the private key was printed");
    let log = fs::read_to_string(h.p.state_dir().join("detached/setup.log")).unwrap();
    assert!(!log.contains(body), "the private key is in the log");
    assert_eq!(fs::read_dir(&h.ssl).unwrap().count(), 2, "nothing but the key pair is left in {}", h.ssl);

    // poudriere's jail and trees, created with the exact command lines, -e included.
    let etc = h.etc.as_str();
    let overlay = h.p.root.join("ports");
    let calls = h.calls();
    for want in [
        "pkg install -y poudriere".to_owned(),
        format!("poudriere -e {etc} jail -c -j clawdie-amd64 -v 15.0-RELEASE -a amd64"),
        format!("poudriere -e {etc} ports -c -p clawdie -m git+https -U https://git.FreeBSD.org/ports.git -B main"),
        format!("poudriere -e {etc} ports -c -p clawdie_overlay -m null -M {overlay}"),
        "kldload vmm".into(),
        "sysrc kld_list+=vmm".into(),
    ] {
        assert!(calls.contains(&want), "no `{want}` among the calls:\n{}", calls.join("\n"));
    }
    let out = h.poudriere(&["ports", "-l", "-q", "-n"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "clawdie\nclawdie_overlay\n");

    // Twice: nothing changes, no changing command runs.
    let before = h.snapshot();
    h.forget_calls();
    h.run(&["setup"]).success().stderr_has("nothing changed");
    assert_eq!(h.snapshot(), before, "a second setup changed files");
    let calls = h.calls();
    assert!(changing_calls(&calls).is_empty(), "a second setup ran {:?}", changing_calls(&calls));
    assert!(calls.iter().any(|c| c.ends_with("jail -l -q -n")), "it lists before it decides:\n{}", calls.join("\n"));

    // And --check agrees: every item ok, exit 0.
    let check = h.run(&["setup", "--check"]);
    check.success();
    let lines: Vec<&str> = check
        .output
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    assert!(lines.len() >= 12, "{}", check.stdout());
    assert!(lines.iter().all(|l| l.starts_with("ok ")), "{}", check.stdout());
}

#[test]
fn check_on_a_half_provisioned_host_names_what_is_missing_and_changes_nothing() {
    let h = Host::fresh("");
    // A host provisioned once, which then lost the overlay, the make.conf and vmm.
    h.provision();
    fs::remove_file(h.etc.join("poudriere.d/validation-make.conf")).unwrap();
    fs::remove_dir_all(h.etc.join("poudriere.d/ports/clawdie_overlay")).unwrap();
    fs::write(h.host.join("kmods"), "").unwrap();

    let before = h.snapshot();
    h.forget_calls();
    let check = h.run(&["setup", "--check"]);
    check.code_is(1).stderr_has(&format!("3 of {} items need attention", if is_root() { 14 } else { 13 }));
    let out = check.stdout();
    assert!(out.contains("ok       jail clawdie-amd64: "), "{out}");
    assert!(
        out.contains(
            "ok       settings poudriere reads: poudriere.conf alone (no poudriere.d/poudriere.conf or *-poudriere.conf for this jail, tree and set); as pipeline.toml asks"
        ),
        "{out}"
    );
    assert!(out.contains("ok       poudriere.conf "), "{out}");
    assert!(out.contains("ok       signing key: "), "{out}");
    assert!(out.contains("missing  validation set make.conf "), "{out}");
    assert!(
        out.contains(&format!(
            "missing  overlay tree clawdie_overlay: `poudriere -e {} ports -l -q -n` does not list it; setup runs: poudriere -e {} ports -c -p clawdie_overlay -m null -M {}",
            h.etc,
            h.etc,
            h.p.root.join("ports")
        )),
        "{out}"
    );
    assert!(out.contains("missing  vmm: the bhyve kernel module is not loaded; setup runs: kldload vmm"), "{out}");
    assert_eq!(h.snapshot(), before, "--check changed something");
    assert!(changing_calls(&h.calls()).is_empty(), "--check ran {:?}", changing_calls(&h.calls()));

    // setup then puts exactly those three in place.
    h.run(&["setup"]).success().stderr_has("3 created or changed");
    h.run(&["setup", "--check"]).success();
}

#[test]
fn a_poudriere_conf_that_differs_is_shown_and_replaced_only_with_write() {
    let h = Host::fresh("");
    h.provision();
    let ours = fs::read_to_string(h.conf()).unwrap();
    let edited = ours.replace("ZPOOL=zroot", "ZPOOL=tank") + "ALLOW_MAKE_JOBS=yes\n";
    fs::write(h.conf(), &edited).unwrap();

    let check = h.run(&["setup", "--check"]);
    check.code_is(1);
    assert!(
        check.stdout().contains(&format!(
            "differs  poudriere.conf {}: ZPOOL is tank, not zroot; ALLOW_MAKE_JOBS is set but pipeline.toml does not set it",
            h.conf()
        )),
        "{}",
        check.stdout()
    );

    let refused = h.run(&["setup"]);
    refused.code_is(1).stderr_has("-ZPOOL=tank").stderr_has("+ZPOOL=zroot").stderr_has("-ALLOW_MAKE_JOBS=yes");
    refused.stderr_has("not overwritten without --write").stderr_has("cargo xtask setup --write");
    assert_eq!(fs::read_to_string(h.conf()).unwrap(), edited, "setup overwrote it without --write");

    h.run(&["setup", "--write"]).success().stderr_has("kept the old");
    assert_eq!(fs::read_to_string(h.conf()).unwrap(), ours);
    let backups: Vec<_> = fs::read_dir(&h.etc)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(fs::read_to_string(&backups[0]).unwrap(), edited);
    h.run(&["setup", "--check"]).success();
}

#[test]
fn a_key_readable_by_others_is_refused_and_nothing_changes() {
    let h = Host::fresh("");
    h.seed_key(0o644);
    let before = h.snapshot();
    let run = h.run(&["setup"]);
    run.code_is(1).stderr_has("nothing was changed").stderr_has("mode 0644").stderr_has("chmod 0600");
    assert_eq!(h.snapshot(), before);
    assert!(!h.conf().exists());
    let check = h.run(&["setup", "--check"]);
    check.code_is(1);
    assert!(check.stdout().contains("differs  signing key: the signing key"), "{}", check.stdout());
}

#[test]
fn a_public_key_without_its_private_key_is_refused() {
    let h = Host::fresh("");
    h.seed_key(0o600);
    fs::remove_file(h.key()).unwrap();
    h.run(&["setup"]).code_is(1).stderr_has("exists but its private key").stderr_has("move");
    assert!(!h.key().exists(), "setup made a key that does not match the published public key");
}

#[test]
fn a_public_key_that_does_not_match_is_refused() {
    let h = Host::fresh("");
    h.seed_key(0o600);
    fs::write(h.pubkey(), "-----BEGIN PUBLIC KEY-----\nnot this one\n-----END PUBLIC KEY-----\n").unwrap();
    h.run(&["setup"]).code_is(1).stderr_has("is not the public half of");
}

#[test]
fn fingerprints_mode_writes_the_signing_command_for_the_host() {
    let h = Host::fresh(
        "[signing]\ntrust = \"fingerprints\"\ncommand = [\"/bin/echo\", \"--key=/etc/ssl/sign.key\", \"sign\"]\n",
    );
    h.run(&["setup"]).success();
    let conf = fs::read_to_string(h.conf()).unwrap();
    // As poudriere expands it: plain words joined by spaces, the value quoted once.
    assert!(conf.contains("SIGNING_COMMAND='/bin/echo --key=/etc/ssl/sign.key sign'\n"), "{conf}");
    assert!(conf.contains("PKG_REPO_FROM_HOST=yes\n"), "{conf}");
    assert!(!conf.contains("PKG_REPO_SIGNING_KEY"), "{conf}");
    assert!(!h.key().exists(), "fingerprints mode creates no key file");
}

#[test]
fn a_signing_command_word_poudriere_cannot_carry_is_refused() {
    let h = Host::fresh("[signing]\ntrust = \"fingerprints\"\ncommand = [\"/bin/echo\", \"sign it\"]\n");
    h.run(&["setup"])
        .code_is(2)
        .stderr_has("signing.command's word `sign it` contains a blank: poudriere splits SIGNING_COMMAND at blanks")
        .stderr_has("put the command and its arguments into a script");
    assert!(!h.conf().exists());
}

#[test]
fn ports_c_passes_url_and_branch_only_for_git_and_svn() {
    let h = Host::fresh("[poudriere]\ntree_method = \"portsnap\"\n");
    h.provision();
    let want = format!("poudriere -e {} ports -c -p clawdie -m portsnap", h.etc);
    assert!(h.calls().contains(&want), "no `{want}` among:\n{}", h.calls().join("\n"));
    // The real tool refuses -B and -U with such a method.
    let out = h.poudriere(&["ports", "-c", "-p", "other", "-m", "portsnap", "-B", "main"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Branch (-B) only supported for SVN and git."));
    let out = h.poudriere(&["ports", "-c", "-p", "other", "-m", "portsnap", "-U", "https://example.org/ports.git"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn later_configuration_files_that_change_what_setup_writes_are_named() {
    let h = Host::fresh("");
    h.provision();
    let jail_conf = h.etc.join("poudriere.d/clawdie-amd64-poudriere.conf");
    let set_conf = h.etc.join("poudriere.d/validation-poudriere.conf");
    fs::write(&jail_conf, "# mine\nMAX_EXECUTION_TIME=172800\n").unwrap();
    h.run(&["setup", "--check"]).success().stdout_has(&format!(
        "ok       settings poudriere reads: poudriere.conf, then {jail_conf}; as pipeline.toml asks"
    ));
    fs::write(&set_conf, "DISTFILES_CACHE=/elsewhere\n").unwrap();
    let check = h.run(&["setup", "--check"]);
    check.code_is(1).stdout_has(&format!(
        "differs  settings poudriere reads: {set_conf}:1 sets DISTFILES_CACHE=/elsewhere, not pipeline.toml's {}",
        h.distfiles
    ));
    h.run(&["setup"]).code_is(1).stderr_has("setup does not edit files it did not write");
    assert_eq!(fs::read_to_string(&set_conf).unwrap(), "DISTFILES_CACHE=/elsewhere\n");
}

#[test]
fn fingerprints_mode_without_a_command_names_the_key() {
    let h = Host::fresh("[signing]\ntrust = \"fingerprints\"\n");
    h.run(&["setup", "--check"]).code_is(1).stderr_has("signing.trust = \"fingerprints\" needs signing.command");
}

#[test]
fn an_old_release_and_a_missing_pool_are_refused() {
    let h = Host::fresh("");
    fs::write(h.host.join("freebsd-version"), "14.3-RELEASE-p4\n").unwrap();
    fs::write(h.host.join("pools"), "tank\n").unwrap();
    h.seed_key(0o600);
    let run = h.run(&["setup"]);
    run.code_is(1)
        .stderr_has("the host runs 14.3-RELEASE-p4, older than the jail's 15.0-RELEASE")
        .stderr_has("cannot open 'zroot': no such pool")
        .stderr_has("poudriere.no_zfs");
    assert!(!h.conf().exists());
    assert!(changing_calls(&h.calls()).is_empty(), "{:?}", h.calls());
}

#[test]
fn no_zfs_skips_the_pool() {
    let h = Host::fresh("[poudriere]\nno_zfs = true\n");
    fs::write(h.host.join("pools"), "").unwrap();
    h.provision();
    let conf = fs::read_to_string(h.conf()).unwrap();
    assert!(conf.contains("NO_ZFS=yes\n") && !conf.contains("ZPOOL="), "{conf}");
    assert!(!h.calls().iter().any(|c| c.starts_with("zpool")));
}

#[test]
fn a_host_that_cannot_load_vmm_says_so() {
    let h = Host::fresh("");
    fs::write(h.host.join("kmods-available"), "").unwrap();
    h.seed_key(0o600);
    h.run(&["setup"])
        .code_is(1)
        .stderr_has("`kldload vmm` exited with status 1")
        .stderr_has("No such file or directory");
    // A host whose gate does not use bhyve turns the item off.
    h.configure("[setup]\nvmm = false\n");
    h.run(&["setup"]).success();
}

#[test]
fn existing_jail_and_trees_are_listed_not_recreated() {
    let h = Host::fresh("");
    h.seed_key(0o600);
    // poudriere installed and configured by hand, the jail already there.
    fs::create_dir_all(h.host.join("packages")).unwrap();
    fs::write(h.host.join("packages/poudriere"), "").unwrap();
    h.run(&["setup", "--dry-run"]).success();
    h.run(&["setup"]).success();
    h.poudriere(&["jail", "-d", "-j", "clawdie-amd64"]);
    let made = h.poudriere(&["jail", "-c", "-j", "clawdie-amd64", "-v", "15.0-RELEASE", "-a", "amd64"]);
    assert!(made.status.success());
    // Re-creating exits 2, which is why setup lists first.
    let again = h.poudriere(&["jail", "-c", "-j", "clawdie-amd64", "-v", "15.0-RELEASE", "-a", "amd64"]);
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    let tree_again = h.poudriere(&["ports", "-c", "-p", "clawdie", "-m", "git+https"]);
    assert_eq!(tree_again.status.code(), Some(2));
    h.forget_calls();
    h.run(&["setup"]).success();
    assert!(changing_calls(&h.calls()).is_empty(), "{:?}", changing_calls(&h.calls()));
}

#[test]
fn dry_run_prints_the_commands_and_changes_nothing() {
    let h = Host::fresh("");
    let before = h.snapshot();
    let run = h.run(&["setup", "--dry-run"]);
    run.success()
        .stdout_has("run     pkg install -y poudriere")
        .stdout_has(&format!("run     poudriere -e {} jail -c -j clawdie-amd64 -v 15.0-RELEASE -a amd64", h.etc))
        .stdout_has("run     openssl genrsa -out ")
        .stdout_has(&format!("write   {}", h.conf()));
    assert_eq!(h.snapshot(), before);
    assert!(changing_calls(&h.calls()).is_empty());
}

#[test]
fn the_default_pipeline_prints_the_real_command_lines() {
    // The repository's own pipeline.toml, on whatever this host is: no -e (the config
    // root is poudriere's own), the jail and trees as configured.
    let state = test_support::scratch();
    let run = std::process::Command::new(test_support::xtask_bin())
        .args(["--config", test_support::repo_root().join("pipeline.toml").as_str()])
        .args(["--state-dir", state.path.as_str(), "setup", "--dry-run"])
        .env("CI", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(out.contains("/usr/local/etc/poudriere.conf"), "{out}");
    assert!(!out.contains("poudriere -e"), "{out}");
    assert!(
        out.contains("poudriere jail -c -j clawdie-amd64 -v 15.0-RELEASE -a amd64")
            || out.contains("ok       jail clawdie-amd64"),
        "{out}"
    );
}
