//! setup on a stand-in FreeBSD host (simhost/poudriere first on PATH): a fresh
//! host provisioned, a second run changing nothing, `--check` naming what is missing or
//! different, a poudriere.conf replaced only with --write, and the refusals; vmm and the
//! UEFI firmware for a bhyve gate; nginx with the repository's server block, its TLS
//! server held back until the certificate exists. The host is
//! `test_support::host::Host`, shared with the bulk and publish tests and the end-to-end
//! pipeline.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use test_support::host::{Host, is_root};

/// Calls that change something on the host.
const CHANGING: [&str; 9] = [
    "jail -c",
    "ports -c",
    "pkg install",
    "kldload",
    "+=",
    "jail -d",
    "nginx_enable=",
    "service nginx start",
    "service nginx reload",
];

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
        "kldload -n vmm".into(),
        "sysrc kld_list+=vmm".into(),
        "pkg install -y edk2-bhyve".into(),
        "pkg install -y nginx".into(),
        "sysrc nginx_enable=YES".into(),
        format!("nginx -t -c {}", h.nginx_conf()),
        "service nginx start".into(),
    ] {
        assert!(calls.contains(&want), "no `{want}` among the calls:\n{}", calls.join("\n"));
    }
    // The firmware the package installed, and nginx serving the repository: the TLS
    // server block, included at the end of the stock nginx.conf's http block.
    assert!(h.root().join("usr/local/share/uefi-firmware/BHYVE_UEFI.fd").is_file());
    let block = fs::read_to_string(h.nginx_block()).unwrap();
    assert!(block.contains(&format!("    ssl_certificate {};\n", h.certificate())), "{block}");
    assert!(block.contains(&format!("    root {};\n", h.site())), "{block}");
    let conf = fs::read_to_string(h.nginx_conf()).unwrap();
    assert!(conf.ends_with(&format!("    #}}\n\n    include {};\n}}\n", h.nginx_block())), "{conf}");
    let backups = fs::read_dir(h.nginx_conf().parent().unwrap())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".bak"))
        .count();
    assert_eq!(backups, 1, "the stock nginx.conf is kept beside it");
    let out = h.poudriere(&["ports", "-l", "-q", "-n"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "clawdie\nclawdie_overlay\n");

    // Twice: nothing changes, no changing command runs.
    let before = h.snapshot();
    h.forget_calls();
    h.run(&["setup"]).success().stderr_has("nothing changed");
    assert_eq!(h.snapshot(), before, "a second setup changed files");
    let calls = h.calls();
    assert!(changing_calls(&calls).is_empty(), "a second setup ran {:?}", changing_calls(&calls));
    assert_eq!(h.nginx_reloads(), 0);
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
    check.code_is(2).stderr_has(&format!("3 of {} items need attention", if is_root() { 21 } else { 20 }));
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
    assert!(out.contains("missing  vmm: the bhyve kernel module is not loaded; setup runs: kldload -n vmm"), "{out}");
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
    check.code_is(2);
    assert!(
        check.stdout().contains(&format!(
            "differs  poudriere.conf {}: ZPOOL is tank, not zroot; ALLOW_MAKE_JOBS is set but pipeline.toml does not set it",
            h.conf()
        )),
        "{}",
        check.stdout()
    );

    let refused = h.run(&["setup"]);
    refused.code_is(2).stderr_has("-ZPOOL=tank").stderr_has("+ZPOOL=zroot").stderr_has("-ALLOW_MAKE_JOBS=yes");
    refused.stderr_has("not overwritten without --write").stderr_has("setup --write`");
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
    run.code_is(2).stderr_has("nothing was changed").stderr_has("mode 0644").stderr_has("chmod 0600");
    assert_eq!(h.snapshot(), before);
    assert!(!h.conf().exists());
    let check = h.run(&["setup", "--check"]);
    check.code_is(2);
    assert!(check.stdout().contains("differs  signing key: the signing key"), "{}", check.stdout());
}

#[test]
fn a_public_key_without_its_private_key_is_refused() {
    let h = Host::fresh("");
    h.seed_key(0o600);
    fs::remove_file(h.key()).unwrap();
    h.run(&["setup"]).code_is(2).stderr_has("exists but its private key").stderr_has("move");
    assert!(!h.key().exists(), "setup made a key that does not match the published public key");
}

#[test]
fn a_public_key_that_does_not_match_is_refused() {
    let h = Host::fresh("");
    h.seed_key(0o600);
    fs::write(h.pubkey(), "-----BEGIN PUBLIC KEY-----\nnot this one\n-----END PUBLIC KEY-----\n").unwrap();
    h.run(&["setup"]).code_is(2).stderr_has("is not the public half of");
}

#[test]
fn fingerprints_mode_writes_the_signing_command_for_the_host() {
    let h = Host::fresh(
        "[signing]\ntrust = \"fingerprints\"\ncommand = [\"/bin/echo\", \"--key=/etc/ssl/sign.key\", \"sign\"]\n\n[sign]\nprovenance = false\n",
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
    let h = Host::fresh(
        "[signing]\ntrust = \"fingerprints\"\ncommand = [\"/bin/echo\", \"sign it\"]\n\n[sign]\nprovenance = false\n",
    );
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
    check.code_is(2).stdout_has(&format!(
        "differs  settings poudriere reads: {set_conf}:1 sets DISTFILES_CACHE=/elsewhere, not pipeline.toml's {}",
        h.distfiles
    ));
    h.run(&["setup"]).code_is(2).stderr_has("setup does not edit files it did not write");
    assert_eq!(fs::read_to_string(&set_conf).unwrap(), "DISTFILES_CACHE=/elsewhere\n");
}

#[test]
fn fingerprints_mode_without_a_command_names_the_key() {
    let h = Host::fresh("[signing]\ntrust = \"fingerprints\"\n");
    h.run(&["setup", "--check"]).code_is(2).stderr_has("signing.trust = \"fingerprints\" needs signing.command");
}

#[test]
fn an_old_release_and_a_missing_pool_are_refused() {
    let h = Host::fresh("");
    fs::write(h.host.join("freebsd-version"), "14.3-RELEASE-p4\n").unwrap();
    fs::write(h.host.join("pools"), "tank\n").unwrap();
    h.seed_key(0o600);
    let run = h.run(&["setup"]);
    run.code_is(2)
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
    // A virtual server without nested virtualisation: the kernel refuses vmm.
    let h = Host::fresh("");
    fs::write(h.host.join("kmods-available"), "").unwrap();
    fs::write(h.host.join("kmods-refused"), "vmm\n").unwrap();
    h.seed_key(0o600);
    h.run(&["setup"])
        .code_is(2)
        .stderr_has("this CPU offers no usable VT-x or AMD-V, as on a virtual server without nested virtualisation")
        .stderr_has("`kldload -n vmm` exited with status 1")
        .stderr_has("| kldload: an error occurred while loading module vmm. Please check dmesg(8) for more details.")
        .stderr_has("set setup.vmm = false in pipeline.toml")
        .stderr_has("vmm is not added to kld_list");
    let rc = fs::read_to_string(h.host.join("rc.conf")).unwrap_or_default();
    assert!(!rc.contains("vmm"), "vmm was added to kld_list though it cannot load: {rc}");

    // A module that is not there at all says so too, in kldload's words.
    fs::write(h.host.join("kmods-refused"), "").unwrap();
    h.run(&["setup"])
        .code_is(2)
        .stderr_has("vmm could not be loaded")
        .stderr_has("can't load vmm: No such file or directory");

    // setup.vmm = false: no bhyve on this host, neither vmm nor the firmware.
    h.configure("[setup]\nvmm = false\n");
    h.forget_calls();
    h.run(&["setup"]).success();
    let calls = h.calls();
    assert!(!calls.iter().any(|c| c.starts_with("kldload") || c.contains("edk2-bhyve")), "{calls:?}");
    h.run(&["setup", "--check"])
        .success()
        .stdout_has("ok       bhyve: not provisioned on this host (setup.vmm = false): no vmm, no UEFI firmware\n");
}

#[test]
fn vmm_and_the_firmware_follow_the_gate_backend() {
    // A gate that boots with QEMU needs no bhyve here.
    let h = Host::fresh("[gate]\nbackend = \"qemu\"\n");
    h.run(&["setup", "--check"]).code_is(2).stdout_has(
        "ok       bhyve: not provisioned on this host (setup.vmm is unset and gate.backend is `qemu`): no vmm, no UEFI firmware\n",
    );
    // bhyve with bhyveload needs vmm but no firmware; setup.vmm = true forces bhyve.
    let h = Host::fresh("[gate]\nbackend = \"qemu\"\n\n[setup]\nvmm = true\n\n[gate.bhyve]\nboot = \"bhyveload\"\n");
    let check = h.run(&["setup", "--check"]);
    check.code_is(2).stdout_has("missing  vmm: ");
    assert!(!check.stdout().contains("UEFI firmware"), "{}", check.stdout());
}

#[test]
fn the_uefi_firmware_is_installed_with_its_package() {
    let h = Host::fresh("");
    let firmware = h.root().join("usr/local/share/uefi-firmware/BHYVE_UEFI.fd");
    h.run(&["setup", "--check"]).code_is(2).stdout_has(&format!(
        "missing  UEFI firmware: {firmware} does not exist; package edk2-bhyve is not installed; setup runs: pkg install -y edk2-bhyve\n"
    ));
    h.run(&["setup", "--dry-run"])
        .success()
        .stdout_has("run     pkg install -y edk2-bhyve\n")
        .stdout_has(&format!("check   {firmware} exists\n"));
    h.provision();
    assert!(firmware.is_file());

    // The package is there but the file is not: setup says where to look.
    fs::remove_file(&firmware).unwrap();
    h.run(&["setup"]).code_is(2).stderr_has("though edk2-bhyve is installed").stderr_has("pkg info -l edk2-bhyve");

    // gate.bhyve.firmware names a file the package does not install.
    let h = Host::fresh("");
    let elsewhere = h.root().join("usr/local/share/custom/MY_UEFI.fd");
    h.configure(&format!("[gate.bhyve]\nfirmware = \"{elsewhere}\"\n"));
    h.seed_key(0o600);
    h.run(&["setup"]).code_is(2).stderr_has(&format!("edk2-bhyve is installed but {elsewhere} still does not exist"));
}

#[test]
fn check_lists_the_firmware_and_nginx_items() {
    let h = Host::fresh("");
    let check = h.run(&["setup", "--check"]);
    check.code_is(2);
    let out = check.stdout();
    for line in [
        "missing  UEFI firmware: ".to_owned(),
        "missing  nginx: package nginx is not installed; setup runs: pkg install -y nginx\n".into(),
        format!("missing  nginx server block {}: setup writes it: TLS with {}\n", h.nginx_block(), h.certificate()),
        format!(
            "missing  nginx.conf {}: nginx installs it; setup then adds `include {};` to its http block\n",
            h.nginx_conf(),
            h.nginx_block()
        ),
        "missing  nginx at boot: nginx_enable is not YES in rc.conf; setup runs: sysrc nginx_enable=YES\n".into(),
        format!(
            "missing  nginx running: nginx is not running; setup runs nginx -t -c {} and service nginx start\n",
            h.nginx_conf()
        ),
        format!("ok       TLS certificate: {} and its key {} exist\n", h.certificate(), h.certificate_key()),
    ] {
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }
}

#[test]
fn without_its_certificate_nginx_answers_the_acme_challenge_and_setup_names_the_acme_step() {
    let h = Host::fresh("");
    fs::remove_dir_all(h.certificate().parent().unwrap()).unwrap();
    h.seed_key(0o600);
    let run = h.run(&["setup"]);
    // Everything else is in place; the certificate is the operator's step.
    run.code_is(2)
        .stderr_has("but needs you for the rest:")
        .stderr_has(&format!("missing  TLS certificate: {} and {} do not exist", h.certificate(), h.certificate_key()))
        .stderr_has(&format!("acme.sh --issue -d pkg.clawdie.si --webroot {}", h.site()))
        .stderr_has(&format!(
            "acme.sh --install-cert -d pkg.clawdie.si --fullchain-file {} --key-file {} --reloadcmd \"service nginx reload\"",
            h.certificate(),
            h.certificate_key()
        ))
        .stderr_has("then rerun `cargo xtask setup`");
    let block = fs::read_to_string(h.nginx_block()).unwrap();
    assert!(block.contains("location ^~ /.well-known/acme-challenge/ {"), "{block}");
    assert!(!block.contains("ssl_certificate "), "a TLS server whose certificate is missing: {block}");
    assert!(h.calls().contains(&"service nginx start".to_owned()), "nginx serves the challenge: {:?}", h.calls());
    assert!(h.p.state_dir().join("detached/setup.log").is_file());

    // acme.sh installed the certificate: the TLS server goes in, and nginx reloads.
    h.seed_certificate();
    h.forget_calls();
    h.run(&["setup"]).success().stderr_has("2 created or changed");
    let block = fs::read_to_string(h.nginx_block()).unwrap();
    assert!(block.contains(&format!("    ssl_certificate {};\n", h.certificate())), "{block}");
    assert_eq!(h.nginx_reloads(), 1);
    assert!(h.calls().contains(&format!("nginx -t -c {}", h.nginx_conf())), "{:?}", h.calls());
}

#[test]
fn a_configuration_nginx_refuses_stops_setup_with_nginxs_words() {
    // A certificate file nginx cannot load (not PEM): nginx -t fails, and setup says so
    // before it starts nginx.
    let h = Host::fresh("");
    fs::write(h.certificate(), "not a certificate\n").unwrap();
    h.seed_key(0o600);
    h.run(&["setup"])
        .code_is(2)
        .stderr_has("nginx refuses its configuration")
        .stderr_has(&format!("cannot load certificate \"{}\"", h.certificate()));
    assert!(!h.calls().contains(&"service nginx start".to_owned()), "{:?}", h.calls());
}

#[test]
fn an_nginx_conf_without_an_http_block_is_left_to_the_operator() {
    let h = Host::fresh("");
    h.provision();
    fs::write(h.nginx_conf(), "events {}\nstream { server { listen 12345; } }\n").unwrap();
    let before = h.snapshot();
    h.run(&["setup"])
        .code_is(2)
        .stderr_has("setup cannot find its `http { ... }` block")
        .stderr_has(&format!("add `include {};` inside the http block yourself", h.nginx_block()));
    assert_eq!(h.snapshot(), before);
}

#[test]
fn nginx_is_left_alone_when_the_site_is_elsewhere() {
    let h = Host::fresh("[publish]\ntarget = \"pkg@mirror.example:/usr/local/www/pkg\"\n");
    let check = h.run(&["setup", "--check"]);
    check.stdout_has("ok       nginx: not set up on this host: publish.target is on pkg@mirror.example: that host's nginx serves the repository\n");
    assert!(!check.stdout().contains("nginx.conf"), "{}", check.stdout());
    let h = Host::fresh("[publish]\nnginx_block = \"\"\n");
    h.run(&["setup", "--check"]).stdout_has("ok       nginx: not set up on this host: publish.nginx_block is empty");
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

/// A builder holds no key: setup neither creates nor checks one, and the poudriere.conf
/// it writes names none (nor a signing command), so bulk commits an unsigned repository.
/// It gets poudriere, the jail and trees and bhyve, and no nginx.
#[test]
fn a_builder_gets_poudriere_and_no_key() {
    for trust in ["pubkey", "fingerprints"] {
        let h = Host::fresh(&format!(
            "[signing]\ntrust = \"{trust}\"\ncommand = [\"/usr/local/bin/sign-remotely\"]\n\n[sign]\nprovenance = false\n"
        ));
        let run = h.run(&["setup", "--role", "builder"]);
        run.success();
        assert!(!run.stderr().contains("created the RSA"), "{}", run.stderr());
        assert!(!h.ssl.exists(), "{trust}: a builder made {}", h.ssl);
        let conf = fs::read_to_string(h.conf()).unwrap();
        for key in ["PKG_REPO_SIGNING_KEY", "SIGNING_COMMAND", "PKG_REPO_FROM_HOST"] {
            assert!(!conf.contains(key), "{trust}: {key} in\n{conf}");
        }
        assert!(conf.contains(&format!("POUDRIERE_DATA={}\n", h.data)), "{conf}");
        let calls = h.calls();
        assert!(calls.contains(&"pkg install -y poudriere".to_owned()), "{calls:?}");
        assert!(calls.iter().any(|c| c.contains("jail -c -j clawdie-amd64")), "{calls:?}");
        assert!(calls.contains(&"kldload -n vmm".to_owned()), "the gate boots on the builder: {calls:?}");
        assert!(!calls.iter().any(|c| c.contains("nginx")), "a builder serves nothing: {calls:?}");

        let name = if trust == "pubkey" { "signing key" } else { "signing command" };
        h.run(&["setup", "--check", "--role", "builder"])
            .success()
            .stdout_has(&format!("ok       {name}: not on a builder (--role builder)"))
            .stdout_has("ok       nginx: not on a builder");
        // The same host checked as one that signs: no key, and a poudriere.conf that
        // does not sign; the fix names the role it is checked for.
        let all = h.run(&["setup", "--check"]);
        all.code_is(2).stdout_has("differs  poudriere.conf").stderr_has("pipeline.toml setup` fixes");
        if trust == "pubkey" {
            all.stdout_has("missing  signing key");
        }
        h.run(&["setup", "--role", "builder"]).success().stderr_has("nothing changed");
    }
}

/// The signing host gets the key (created 0600, or checked as on any host) and nginx,
/// and nothing of poudriere or bhyve.
#[test]
fn the_signing_host_gets_the_key_and_nginx_and_no_poudriere() {
    let h = Host::fresh("");
    h.run(&["setup", "--role", "signing"]).success().stderr_has("created the RSA 4096 signing key");
    assert_eq!(fs::metadata(h.key()).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!h.conf().exists(), "no poudriere.conf on the signing host");
    let calls = h.calls();
    assert!(calls.contains(&"pkg install -y nginx".to_owned()), "{calls:?}");
    assert!(calls.contains(&"service nginx start".to_owned()), "{calls:?}");
    for never in ["poudriere", "kldload", "edk2-bhyve"] {
        assert!(!calls.iter().any(|c| c.contains(never)), "`{never}` on the signing host: {calls:?}");
    }
    h.run(&["setup", "--check", "--role", "signing"])
        .success()
        .stdout_has("ok       poudriere: not on the signing host")
        .stdout_has("ok       signing key: ");
    // Today's permission rule: a key readable by others is refused.
    fs::set_permissions(h.key(), fs::Permissions::from_mode(0o644)).unwrap();
    h.run(&["setup", "--check", "--role", "signing"])
        .code_is(2)
        .stdout_has("differs  signing key")
        .stderr_has("pipeline.toml setup --role signing` fixes");
}
