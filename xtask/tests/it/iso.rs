//! iso: the real sample packages installed into a root by the pkg stand-in; the
//! production profile passes on the production build and fails on the validation build,
//! and the reverse; both trust modes; the published URL; pkg's refusals; the image build.

use std::fs;

use camino::Utf8PathBuf;

use camino::Utf8Path;
use test_support::nginx::Nginx;
use test_support::repo::*;
use test_support::{Project, simhost, write_script};

fn pkg_standin() -> Utf8PathBuf {
    simhost().join("iso/pkg")
}

/// A project signing with the test key in `mode`, installing with the pkg stand-in into
/// `ROOT` (scratch/root); `extra` goes into `[iso]`.
fn project(mode: &str, extra: &str) -> Project {
    let mut p = Project::new("");
    let key = private_key(&p.scratch.path.join("keys"));
    let root = p.scratch.path.join("root");
    p.write_config(&format!(
        "{}\n[tools]\npkg = \"{}\"\n\n[iso]\nroot = \"{root}\"\n{extra}\n",
        signing_config(&key, mode),
        pkg_standin()
    ));
    p.env.push(("PKG_STANDIN_LOG".into(), p.scratch.path.join("pkg.log").to_string()));
    p
}

fn root(p: &Project) -> Utf8PathBuf {
    p.scratch.path.join("root")
}

fn signed(p: &Project, sample_name: &str) -> Utf8PathBuf {
    let repo = copy_sample(sample_name, &p.scratch.path.join("repo"));
    p.run(&["sign", "--repo", repo.as_str()]).success();
    repo
}

#[test]
fn production_profile_passes_on_the_production_build() {
    let p = project("pubkey", "");
    let repo = signed(&p, "production-pubkey");
    p.run(&["iso"]).success().stderr_has("matches the production profile (7 required, 1 forbidden)");
    let bin = root(&p).join("usr/local/bin");
    for f in ["clawdie", "colibri", "colibri-daemon", "colibri-mcp", "colibri-tui"] {
        assert!(bin.join(f).is_file(), "{f}");
    }
    assert!(!bin.join("colibri-test-agent").exists());
    assert!(root(&p).join("usr/local/etc/rc.d/colibri_daemon").is_file());
    assert!(root(&p).join("var/db/pkg/local.sqlite").is_file(), "pkg's database is inside ROOT");
    let out = &p.state()["records"]["iso"]["last_success"]["outputs"];
    assert_eq!(out["profile"], "production");
    assert_eq!(out["image"], serde_json::Value::Null);
    // pkg read a verified scratch copy in the run directory, never the canonical repository.
    let source = out["source"].as_str().unwrap();
    assert!(source.starts_with(&format!("file://{}", p.state_dir())) && source.ends_with("/iso/repo"), "{source}");
    assert!(!source.contains(repo.as_str()));
    // The pkg command lines: ABI, OSVERSION, REPOS_DIR and PKG_DBDIR given; update
    // without -r, install with -r and no second update.
    let log = fs::read_to_string(p.scratch.path.join("pkg.log")).unwrap();
    let calls: Vec<&str> = log.lines().collect();
    assert_eq!(calls.len(), 2, "{log}");
    assert!(calls[0].starts_with("-o ABI=FreeBSD:15:amd64 -o OSVERSION=1500068 -o REPOS_DIR="), "{log}");
    assert!(calls[0].ends_with("update -f"), "{log}");
    assert!(calls[1].starts_with(&format!("-r {} -o ABI=FreeBSD:15:amd64", root(&p))), "{log}");
    assert!(calls[1].contains(&format!("PKG_DBDIR={}/var/db/pkg", root(&p))), "{log}");
    assert!(calls[1].ends_with("-o REPO_AUTOUPDATE=false install -y colibri"), "{log}");
}

#[test]
fn production_profile_fails_on_the_validation_build() {
    let p = project("pubkey", "");
    signed(&p, "validation-pubkey");
    p.run(&["iso"]).code_is(1).stderr_has(&format!(
        "{}/usr/local/bin/colibri-test-agent: forbidden in the production profile, but installed",
        root(&p)
    ));
}

#[test]
fn validation_profile_passes_on_validation_and_fails_on_production() {
    let p = project("pubkey", "");
    signed(&p, "validation-pubkey");
    p.run(&["iso", "--profile", "validation"]).success().stderr_has("matches the validation profile (8 required");
    assert!(root(&p).join("usr/local/bin/colibri-test-agent").is_file());

    let q = project("pubkey", "profile = \"validation\"\n");
    signed(&q, "production-pubkey");
    q.run(&["iso"]).code_is(1).stderr_has(&format!(
        "{}/usr/local/bin/colibri-test-agent: required by the validation profile, but not installed",
        root(&q)
    ));
    q.run(&["iso", "--profile", "staging"])
        .code_is(2)
        .stderr_has("there is no profile `staging`")
        .stderr_has("production, validation");
}

#[test]
fn fingerprints_mode_installs_despite_pkgs_root_quirk() {
    let p = project("fingerprints", "");
    signed(&p, "production-fingerprints");
    p.run(&["iso"]).success().stderr_has("matches the production profile");
    let repos_conf = fs::read_to_string(
        p.state_dir().join("runs").join(p.state()["id"].as_str().unwrap()).join("iso/repos/clawdie.conf"),
    )
    .unwrap();
    assert!(repos_conf.contains("signature_type: \"fingerprints\""), "{repos_conf}");
    assert!(repos_conf.contains(&format!("fingerprints: \"{}\"", fingerprints())), "{repos_conf}");

    // The quirk itself: `pkg -r ROOT install` refreshing the catalogue looks for the
    // fingerprints under ROOT and refuses the repository.
    let fresh = p.scratch.path.join("fresh-root");
    let out = std::process::Command::new(pkg_standin())
        .args(["-r", fresh.as_str(), "-o", "ABI=FreeBSD:15:amd64"])
        .arg("-o")
        .arg(format!(
            "REPOS_DIR={}",
            p.state_dir().join("runs").join(p.state()["id"].as_str().unwrap()).join("iso/repos")
        ))
        .args(["install", "-y", "colibri"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No trusted certificates"));
}

#[test]
fn installs_from_the_published_url_and_reports_a_refused_catalogue() {
    let s = test_support::scratch();
    let site = s.path.join("site");
    fs::create_dir_all(&site).unwrap();
    let nginx = Nginx::serve(&site, &s.path.join("nginx"), "");
    let p = project("pubkey", &format!("\n[publish]\ntarget = \"{site}\"\n"));
    p.write_raw_config(
        &fs::read_to_string(p.config_path())
            .unwrap()
            .replace("[repository]\n", &format!("[repository]\nurl = \"{}\"\n", nginx.url())),
    );
    signed(&p, "production-pubkey");
    p.run(&["publish"]).success();
    p.run(&["iso"]).success();
    let out = &p.state()["records"]["iso"]["last_success"]["outputs"];
    assert_eq!(out["source"], format!("{}FreeBSD:15:amd64/latest", nginx.url()));
    assert!(root(&p).join("usr/local/bin/colibri").is_file());

    // The served catalogue is re-signed by another key: pkg refuses it (and exits 0).
    let (other, _) = other_key(&s.path.join("other"));
    let data = site.join("FreeBSD:15:amd64/latest/data.pkg");
    let real = fs::canonicalize(&data).unwrap();
    fs::remove_file(&real).unwrap();
    let entries = read_archive(&p.scratch.path.join("repo/data.pkg"));
    let digest = sha256_hex(&entries[1].1);
    let mut sig = openssl_sign(&other, &digest);
    sig.push(0);
    write_archive(
        Utf8PathBuf::from_path_buf(real).unwrap().as_path(),
        &[("signature".into(), sig), entries[1].clone()],
    );
    fs::remove_dir_all(root(&p)).unwrap();
    p.run(&["iso", "-o", "iso.source=published"])
        .code_is(1)
        .stderr_has(&format!("pkg refused the repository {}FreeBSD:15:amd64/latest", nginx.url()))
        .stderr_has("Invalid signature, removing repository.");
    assert!(!root(&p).join("usr/local/bin/colibri").exists());
}

#[test]
fn the_image_build_runs_and_its_image_is_recorded() {
    let p = project("pubkey", "");
    let script = p.scratch.path.join("bin/build-iso");
    write_script(
        &script,
        "#!/bin/sh\n# An image build: tars the root into the image.\necho \"building from $1\"\ntar -cf \"$2\" -C \"$1\" .\necho done\n",
    );
    let image = p.scratch.path.join("out/clawdie.iso");
    fs::create_dir_all(image.parent().unwrap()).unwrap();
    let cfg = fs::read_to_string(p.config_path()).unwrap();
    p.write_raw_config(&format!(
        "{cfg}build_command = [\"{script}\", \"{{root}}\", \"{{image}}\"]\nimage = \"{image}\"\nenable_services = [\"colibri_daemon\"]\n"
    ));
    signed(&p, "production-pubkey");
    p.run(&["iso", "--dry-run"]).success().stdout_has(&format!("run     {script} {} {image}", root(&p)));
    p.run(&["iso"]).success().stderr_has("image ");
    let out = &p.state()["records"]["iso"]["last_success"]["outputs"];
    assert_eq!(out["image"], image.as_str());
    assert!(fs::metadata(&image).unwrap().len() > 0);
    assert_eq!(fs::read_to_string(root(&p).join("etc/rc.conf")).unwrap(), "colibri_daemon_enable=\"YES\"\n");
    let log =
        fs::read_to_string(p.state_dir().join("runs").join(p.state()["id"].as_str().unwrap()).join("logs/iso.log"))
            .unwrap();
    assert!(log.contains(&format!("building from {}", root(&p))), "the build's output is in the stage log");

    // A build that fails, or writes nothing, is an error.
    write_script(&script, "#!/bin/sh\necho 'mkisofs: no space left' >&2\nexit 3\n");
    p.run(&["iso"])
        .code_is(2)
        .stderr_has("the image build failed")
        .stderr_has("exited with status 3")
        .stderr_has("no space left");
    write_script(&script, "#!/bin/sh\nexit 0\n");
    p.run(&["iso"]).code_is(2).stderr_has("is unchanged by this build");
    fs::remove_file(&image).unwrap();
    p.run(&["iso"]).code_is(2).stderr_has(&format!("did not write {image}"));
}

#[test]
fn dry_run_without_earlier_stages_shows_the_pkg_commands() {
    let p = project("pubkey", "");
    p.run(&["iso", "--dry-run"])
        .success()
        .stdout_has("sign has not run in this run")
        .stdout_has(&format!("{} -o ABI=FreeBSD:15:amd64 -o OSVERSION=1500068", pkg_standin()))
        .stdout_has(&format!("-r {}", root(&p)))
        .stdout_has("install -y colibri");
    assert!(!root(&p).exists());
}

#[test]
fn the_validation_profile_routes_kernel_and_daemon_messages_to_the_console() {
    let p = project("pubkey", "");
    signed(&p, "validation-pubkey");
    p.run(&["iso", "--profile", "validation", "--dry-run"]).success().stdout_has(&format!(
        "write   {}/etc/syslog.d/mother-build-console.conf (kern.info and daemon.* to /dev/console)",
        root(&p)
    ));
    p.run(&["iso", "--profile", "validation"]).success().stderr_has("kernel and daemon messages go to the console");
    // syslogd reads every *.conf in /etc/syslog.d; `kern.info` is info and worse.
    let conf = fs::read_to_string(root(&p).join("etc/syslog.d/mother-build-console.conf")).unwrap();
    let rules: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(rules, ["kern.info\t\t\t\t\t/dev/console", "daemon.*\t\t\t\t\t/dev/console"], "{conf}");
    let flags = fs::read_to_string(root(&p).join("etc/rc.conf.d/syslogd")).unwrap();
    assert!(flags.lines().any(|l| l == "syslogd_flags=\"-s -cc\""), "{flags}");

    // The production image is not changed: it has neither file, and a production build
    // into a root a validation build left them in takes them away.
    let q = project("pubkey", "");
    signed(&q, "production-pubkey");
    q.run(&["iso"]).success();
    assert!(!root(&q).join("etc/syslog.d").exists());
    assert!(!root(&q).join("etc/rc.conf.d").exists());
    fs::create_dir_all(root(&q).join("etc/syslog.d")).unwrap();
    fs::write(root(&q).join("etc/syslog.d/mother-build-console.conf"), &conf).unwrap();
    q.run(&["iso", "--dry-run"])
        .success()
        .stdout_has(&format!("remove  {}/etc/syslog.d/mother-build-console.conf", root(&q)));
    q.run(&["iso"]).success();
    assert!(!root(&q).join("etc/syslog.d/mother-build-console.conf").exists());

    // A file of that name the image brought itself is never replaced.
    fs::write(root(&q).join("etc/syslog.d/mother-build-console.conf"), "*.*\t/var/log/all\n").unwrap();
    q.run(&["iso"]).code_is(2).stderr_has("was not written by `cargo xtask iso`; it is left alone");
    assert_eq!(
        fs::read_to_string(root(&q).join("etc/syslog.d/mother-build-console.conf")).unwrap(),
        "*.*\t/var/log/all\n"
    );
}

/// One `pkg update -f` by the stand-in against `repo` (as file://), with a repo conf
/// whose trust lines are `trust`; then an install from whatever catalogue is left.
struct Client {
    update: std::process::Output,
    install: std::process::Output,
    root: Utf8PathBuf,
}

fn client(dir: &Utf8Path, repo: &Utf8Path, trust: &str, abi: &str, osversion: &str) -> Client {
    client_of(dir, &format!("file://{repo}"), trust, abi, osversion)
}

fn client_of(dir: &Utf8Path, url: &str, trust: &str, abi: &str, osversion: &str) -> Client {
    let repos = dir.join("repos");
    fs::create_dir_all(&repos).unwrap();
    fs::write(
        repos.join("clawdie.conf"),
        format!("clawdie: {{\n  url: \"{url}\",\n  enabled: yes,\n{trust}  priority: 10\n}}\n"),
    )
    .unwrap();
    let root = dir.join("root");
    let pkg = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(pkg_standin());
        cmd.args(extra)
            .args(["-o", &format!("ABI={abi}"), "-o", &format!("OSVERSION={osversion}")])
            .args(["-o", &format!("REPOS_DIR={repos}"), "-o", &format!("PKG_DBDIR={root}/var/db/pkg")])
            .args(["-o", &format!("PKG_CACHEDIR={dir}/cache")])
            .env("ASSUME_ALWAYS_YES", "yes");
        cmd
    };
    let update = pkg(&[]).args(["update", "-f"]).output().unwrap();
    let install =
        pkg(&["-r", root.as_str()]).args(["-o", "REPO_AUTOUPDATE=false", "install", "-y", "colibri"]).output().unwrap();
    Client { update, install, root }
}

fn pubkey_conf(key: &Utf8Path) -> String {
    format!("  signature_type: \"pubkey\",\n  pubkey: \"{key}\",\n")
}

fn fingerprints_conf(dir: &Utf8Path) -> String {
    format!("  signature_type: \"fingerprints\",\n  fingerprints: \"{dir}\",\n")
}

/// Re-signs a copy's data.pkg with the RSA test key after `f` changed its entries.
fn resign_data(repo: &Utf8Path, key: &Utf8Path, f: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) {
    edit_archive(&repo.join("data.pkg"), |entries| {
        f(entries);
        let data = entries.iter().find(|(n, _)| n == "data").unwrap().1.clone();
        let mut sig = openssl_sign(key, &sha256_hex(&data));
        sig.push(0);
        entries.iter_mut().find(|(n, _)| n == "signature").unwrap().1 = sig;
    });
}

/// Every refusal of docs/reference/pkg-client.md §3 that a repository or a trust setting
/// causes: the stand-in says pkg's words, iso's judge finds them (whatever the exit
/// status), and nothing is installed from a fresh client state.
#[test]
fn every_refusal_is_judged_from_pkgs_words_and_installs_nothing() {
    let s = test_support::scratch();
    let key = private_key(&s.path.join("keys"));
    let ecc = sample2("keys/ecc-repo.pub");
    let ecdsa = sample2("keys/ecdsa-repo.pub");
    let ecc_fps = sample2("fingerprints-ecc");
    let n = std::cell::Cell::new(0);
    let copy = |from: &Utf8Path| {
        n.set(n.get() + 1);
        let to = s.path.join(format!("repo{}", n.get()));
        test_support::copy_tree(from, &to);
        to
    };
    let edit_data = |repo: &Utf8Path| {
        edit_archive(&repo.join("data.pkg"), |e| e.iter_mut().find(|(n, _)| n == "data").unwrap().1.push(b' '))
    };
    let fps_with = |name: &str, trusted: Option<&str>, revoked: Option<&str>| {
        let dir = s.path.join(name);
        if let Some(fp) = trusted {
            fs::create_dir_all(dir.join("trusted")).unwrap();
            fs::write(dir.join("trusted/k"), format!("function: \"sha256\"\nfingerprint: \"{fp}\"\n")).unwrap();
        }
        if let Some(fp) = revoked {
            fs::create_dir_all(dir.join("revoked")).unwrap();
            fs::write(dir.join("revoked/k"), format!("function: \"sha256\"\nfingerprint: \"{fp}\"\n")).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        dir
    };
    type Case = (&'static str, Utf8PathBuf, String, &'static str, &'static str, &'static [&'static str], i32);
    let mut cases: Vec<Case> = Vec::new();
    let abi = "FreeBSD:15:amd64";
    // rows 1-4: pubkey mode, changed after signing, or unsigned.
    let r = copy(&sample("production-pubkey"));
    edit_data(&r);
    cases.push((
        "1 rsa changed",
        r,
        pubkey_conf(&pubkey()),
        abi,
        "1500000",
        &["signature verification failure", "Invalid signature, removing repository."],
        0,
    ));
    let r = copy(&sample2("ecc-pubkey"));
    edit_data(&r);
    cases.push((
        "2 ecc changed",
        r,
        pubkey_conf(&ecc),
        abi,
        "1500000",
        &["failed to verify signature", "ecc signature verification failure", "Invalid signature"],
        0,
    ));
    let r = copy(&sample2("ecdsa-pubkey"));
    edit_data(&r);
    cases.push((
        "3 ecdsa changed",
        r,
        pubkey_conf(&ecdsa),
        abi,
        "1500000",
        &["failed to verify signature", "ecc signature verification failure"],
        0,
    ));
    cases.push((
        "4 unsigned",
        copy(&sample("unsigned")),
        pubkey_conf(&pubkey()),
        abi,
        "1500000",
        &["signature verification failure", "Invalid signature"],
        0,
    ));
    // rows 5-6: fingerprints mode without .sig/.pub.
    cases.push((
        "5 unsigned",
        copy(&sample("unsigned")),
        fingerprints_conf(&fingerprints()),
        abi,
        "1500000",
        &["No signature found"],
        0,
    ));
    cases.push((
        "6 key-file signed",
        copy(&sample("production-pubkey")),
        fingerprints_conf(&fingerprints()),
        abi,
        "1500000",
        &["No signature found"],
        0,
    ));
    // rows 7-11: the signer and the key do not go together.
    cases.push((
        "7 command-signed ecc in pubkey mode",
        copy(&sample2("ecc-fingerprints")),
        pubkey_conf(&ecc),
        abi,
        "1500000",
        &["error reading public key", "Invalid signature"],
        0,
    ));
    cases.push((
        "8 rsa key, ecc signature",
        copy(&sample2("ecc-pubkey")),
        pubkey_conf(&pubkey()),
        abi,
        "1500000",
        &["failed to parse key", "ecc signature verification failure"],
        0,
    ));
    let r = copy(&sample2("ecc-pubkey"));
    edit_archive(&r.join("data.pkg"), |e| e[0].1.drain(..13).for_each(drop));
    cases.push(("10 ecc header cut", r, pubkey_conf(&ecc), abi, "1500000", &["error reading public key"], 0));
    let r = copy(&sample2("ecc-pubkey"));
    edit_archive(&r.join("data.pkg"), |e| e[0].1.splice(..13, b"$PKGSIGN:foo$".iter().copied()).for_each(drop));
    cases.push(("11 unknown signer", r, pubkey_conf(&ecc), abi, "1500000", &["'foo' signer not found"], 0));
    // rows 12-17: fingerprints trust.
    let untrusted = fps_with("untrusted", Some(&"ab".repeat(32)), None);
    cases.push((
        "12 not trusted",
        copy(&sample2("ecc-fingerprints")),
        fingerprints_conf(&untrusted),
        abi,
        "1500000",
        &["No trusted public keys found"],
        0,
    ));
    let revoked = fps_with("revoked", Some(ECC_FP), Some(ECC_FP));
    cases.push((
        "13 revoked",
        copy(&sample2("ecc-fingerprints")),
        fingerprints_conf(&revoked),
        abi,
        "1500000",
        &["At least one of the certificates has been revoked"],
        0,
    ));
    let r = copy(&sample("production-fingerprints"));
    edit_archive(&r.join("data.pkg"), |e| e.iter_mut().find(|(n, _)| n == "data.sig").unwrap().1.push(0));
    cases.push((
        "14 rsa .sig with a NUL",
        r,
        fingerprints_conf(&fingerprints()),
        abi,
        "1500000",
        &["signature verification failure", "No trusted certificate has been used to sign the repository"],
        0,
    ));
    let r = copy(&sample2("ecc-fingerprints"));
    edit_archive(&r.join("data.pkg"), |e| e[1].1.drain(..13).for_each(drop));
    cases.push((
        "15 .pub without header",
        r,
        fingerprints_conf(&ecc_fps),
        abi,
        "1500000",
        &["error reading public key", "No trusted certificate has been used to sign the repository"],
        0,
    ));
    let missing = fps_with("no-trusted", None, None);
    cases.push((
        "16 no trusted/",
        copy(&sample2("ecc-fingerprints")),
        fingerprints_conf(&missing),
        abi,
        "1500000",
        &["Error opening the trusted directory", "Error loading trusted certificates"],
        0,
    ));
    let empty = fps_with("empty", None, None);
    fs::create_dir_all(empty.join("trusted")).unwrap();
    cases.push((
        "17 empty trusted/",
        copy(&sample2("ecc-fingerprints")),
        fingerprints_conf(&empty),
        abi,
        "1500000",
        &["No trusted certificates"],
        0,
    ));
    // rows 18-21: limits and settings.
    let r = copy(&sample2("ecc-fingerprints"));
    edit_archive(&r.join("data.pkg"), |e| {
        for i in 0..7 {
            e.insert(0, (format!("k{i}.pub"), b"x".to_vec()));
        }
    });
    cases.push((
        "18 nine entries",
        r,
        fingerprints_conf(&ecc_fps),
        abi,
        "1500000",
        &["too many repository signature entries", "No signature found"],
        0,
    ));
    let r = copy(&sample("production-pubkey"));
    edit_archive(&r.join("data.pkg"), |e| {
        let d = e[1].clone();
        e.push(d);
    });
    cases.push((
        "19 data twice",
        r,
        pubkey_conf(&pubkey()),
        abi,
        "1500000",
        &[
            "duplicate repository archive entry: data",
            "No signature found in the repository.  Can not validate against",
        ],
        0,
    ));
    cases.push((
        "21 no pubkey",
        copy(&sample("production-pubkey")),
        "  signature_type: \"pubkey\",\n".into(),
        abi,
        "1500000",
        &["No PUBKEY defined"],
        0,
    ));
    cases.push((
        "23 bad signature_type",
        copy(&sample("production-pubkey")),
        "  signature_type: \"fingerprint\",\n".into(),
        abi,
        "1500000",
        &["Invalid signature_type 'fingerprint' for the 'clawdie' repo", "No active remote repositories configured"],
        1,
    ));
    // row 27 and the OS version check: the catalogue is good, the client is older.
    cases.push((
        "27 wrong ABI",
        copy(&sample("production-pubkey")),
        pubkey_conf(&pubkey()),
        "FreeBSD:14:amd64",
        "1400000",
        &[
            "wrong architecture: FreeBSD:15:amd64 instead of FreeBSD:14:amd64",
            "contains packages with wrong ABI",
            "Unable to update repository clawdie",
            "Error updating repositories!",
        ],
        1,
    ));
    let r = copy(&sample("production-pubkey"));
    resign_data(&r, &key, |e| {
        let d = &mut e.iter_mut().find(|(n, _)| n == "data").unwrap().1;
        *d = String::from_utf8(d.clone())
            .unwrap()
            .replace("{\"flavor\":\"production\"}", "{\"FreeBSD_version\":\"1600000\",\"flavor\":\"production\"}")
            .into_bytes();
    });
    cases.push((
        "os version",
        r,
        pubkey_conf(&pubkey()),
        abi,
        "1500000",
        &["contains packages for wrong OS version"],
        1,
    ));

    for (row, repo, trust, abi, osversion, words, status) in cases {
        let dir = s.path.join(format!("client-{}", row.replace(' ', "-")));
        let c = client(&dir, &repo, &trust, abi, osversion);
        let text =
            format!("{}{}", String::from_utf8_lossy(&c.update.stdout), String::from_utf8_lossy(&c.update.stderr));
        for w in words {
            assert!(text.contains(w), "row {row}: pkg did not say {w:?}:\n{text}");
        }
        assert_eq!(c.update.status.code(), Some(status), "row {row}:\n{text}");
        let refused = xtask::iso::refusal(&text).unwrap_or_else(|| panic!("row {row}: not judged a refusal:\n{text}"));
        assert!(!refused.iter().any(|l| l.contains("BEGIN PUBLIC KEY")), "row {row}");
        assert!(!text.contains("repository update completed"), "row {row}:\n{text}");
        assert!(!c.install.status.success(), "row {row}: installed from a refused catalogue");
        assert!(!c.root.join("usr/local/bin/colibri").exists(), "row {row}: something was installed");
    }
}

#[test]
fn every_sample_signer_is_accepted_by_the_stand_in_and_installs() {
    let s = test_support::scratch();
    for (name, repo, trust) in [
        ("ecc", sample2("ecc-pubkey"), pubkey_conf(&sample2("keys/ecc-repo.pub"))),
        ("ecdsa", sample2("ecdsa-pubkey"), pubkey_conf(&sample2("keys/ecdsa-repo.pub"))),
        ("ecc-fps", sample2("ecc-fingerprints"), fingerprints_conf(&sample2("fingerprints-ecc"))),
        ("hashed", sample2("hashed"), pubkey_conf(&pubkey())),
        ("files", sample2("files"), pubkey_conf(&pubkey())),
    ] {
        let c = client(&s.path.join(name), &repo, &trust, "FreeBSD:15:amd64", "1500000");
        let text = String::from_utf8_lossy(&c.update.stdout).into_owned();
        assert!(
            text.contains("clawdie repository update completed. 1 packages processed."),
            "{name}: {text}{}",
            String::from_utf8_lossy(&c.update.stderr)
        );
        assert!(xtask::iso::refusal(&text).is_none(), "{name}: {text}");
        assert!(c.install.status.success(), "{name}: {}", String::from_utf8_lossy(&c.install.stderr));
        assert!(c.root.join("usr/local/bin/colibri").is_file(), "{name}");
    }
}

/// The stand-in keeps an earlier good catalogue after a refused update, as pkg does
/// (pkg-client.md §5), and accepts unknown `-o` keys (row 30); iso starts each verdict
/// from fresh client state, so the refusal stops it with nothing new installed.
#[test]
fn an_earlier_good_catalogue_survives_in_pkg_but_not_in_iso() {
    let s = test_support::scratch();
    let repo = s.path.join("repo");
    test_support::copy_tree(&sample("production-pubkey"), &repo);
    let dir = s.path.join("client");
    let c = client(&dir, &repo, &pubkey_conf(&pubkey()), "FreeBSD:15:amd64", "1500000");
    assert!(c.install.status.success());
    edit_archive(&repo.join("data.pkg"), |e| e[1].1.push(b' '));
    let again = client(&dir, &repo, &pubkey_conf(&pubkey()), "FreeBSD:15:amd64", "1500000");
    let text = String::from_utf8_lossy(&again.update.stdout).into_owned();
    assert!(again.update.status.success() && text.contains("clawdie repository is up to date."), "{text}");
    assert!(again.install.status.success(), "pkg installs from the old catalogue despite the refusal");
    let out = std::process::Command::new(pkg_standin())
        .args(["-o", "ABI=FreeBSD:15:amd64", "-o", "NO_SUCH_OPTION=1", "-o", "SIGNATURE_TYPE=bogus", "-o", "noequals"])
        .args(["-o", &format!("REPOS_DIR={dir}/repos"), "-o", &format!("PKG_DBDIR={dir}/db2"), "update", "-f"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // iso: a good release, then the served catalogue tampered: refused, nothing new.
    let p = project("pubkey", "");
    signed(&p, "production-pubkey");
    p.run(&["iso"]).success();
    let catalogues = root(&p).join("var/db/pkg/repos/clawdie/db");
    assert!(catalogues.is_file(), "pkg's catalogue database is where pkg 2.8.4 keeps it");
    // A catalogue left from before (another release, a refused update) is removed
    // before `pkg update`; the database of installed packages stays.
    let stale = root(&p).join("var/db/pkg/repos/clawdie/db");
    fs::write(&stale, "url file:///elsewhere\n{\"packages\":[]}").unwrap();
    fs::create_dir_all(root(&p).join("var/db/pkg/repos/old")).unwrap();
    p.run(&["iso"]).success();
    assert!(!root(&p).join("var/db/pkg/repos/old").exists(), "iso left an earlier catalogue for pkg");
    assert!(!fs::read_to_string(&stale).unwrap().contains("elsewhere"));
    assert!(root(&p).join("var/db/pkg/local.sqlite").is_file());
    // A catalogue the verifier refuses: iso's scratch copy check stops first.
    fs::remove_dir_all(root(&p).join("usr")).unwrap();
    edit_archive(&p.scratch.path.join("repo/data.pkg"), |e| e[1].1.push(b' '));
    p.run(&["iso"]).code_is(2).stderr_has("failed verification");
    assert!(!root(&p).join("usr/local/bin/colibri").exists());
}

/// The Hashed layout (with its symlink), an ecc repository in pubkey mode and an ecc
/// repository in fingerprints mode install through the whole iso stage.
#[test]
fn hashed_and_ecc_repositories_install() {
    let p = project("pubkey", "");
    let repo = p.scratch.path.join("repo");
    test_support::copy_tree(&sample2("hashed-symlink"), &repo);
    p.run(&["sign", "--repo", repo.as_str()]).success().stderr_has("already signed by");
    p.run(&["iso"]).success().stderr_has("matches the production profile");
    let scratch_copy = p.state_dir().join("runs").join(p.state()["id"].as_str().unwrap()).join("iso/repo");
    assert!(scratch_copy.join("All/Hashed/colibri-0.9.0~2$f56x1t1g.pkg").is_file());

    for (mode, sample_name) in [("pubkey", "ecc-pubkey"), ("fingerprints", "ecc-fingerprints")] {
        let q = project(mode, "");
        let key = private_key2(&q.scratch.path.join("ecc-keys"), "ecc-repo.key");
        let text = fs::read_to_string(q.config_path()).unwrap();
        let start = text.find("[repository]").unwrap();
        let end = text.find("[tools]").unwrap();
        q.write_raw_config(&format!(
            "{}{}\n{}",
            &text[..start],
            signing_config_for(&key, &sample2("keys/ecc-repo.pub"), mode, &sample2("fingerprints-ecc")),
            &text[end..]
        ));
        let repo = q.scratch.path.join("repo");
        test_support::copy_tree(&sample2(sample_name), &repo);
        q.run(&["sign", "--repo", repo.as_str()]).success().stderr_has("already signed by");
        q.run(&["iso"]).success().stderr_has("matches the production profile");
        assert!(root(&q).join("usr/local/bin/colibri").is_file(), "{mode}");
    }
}

/// Package checks at install over HTTP (pkg-client.md §7, rows 32-36): the catalogue is
/// accepted, the package is not, with pkg's words and exit statuses; over file:// the
/// real client checks nothing (rows 38-39), which is why iso verifies its scratch copy.
#[test]
fn installs_check_packages_over_http_with_pkgs_words_and_statuses() {
    let s = test_support::scratch();
    let site = s.path.join("site");
    test_support::copy_tree(&sample("production-pubkey"), &site.join("repo"));
    let nginx = Nginx::serve(&site, &s.path.join("nginx"), "");
    let url = format!("{}repo", nginx.url());
    let pkg = site.join("repo/All/colibri-0.9.0.pkg");
    let good = fs::read(&pkg).unwrap();
    let mut flipped = good.clone();
    flipped[100] ^= 1;
    let larger = [good.clone(), vec![0; 10]].concat();
    for (case, bytes, words, status) in [
        ("32 changed bytes", Some(flipped.clone()), "colibri-0.9.0 failed checksum from repository", 3),
        ("33 larger", Some(larger), "fetch exceeds expected package size", 3),
        ("34 smaller", Some(good[..1000].to_vec()), "fetch size does not match expected package size", 3),
        ("36 missing", None, "Not Found", 21),
    ] {
        match &bytes {
            Some(b) => fs::write(&pkg, b).unwrap(),
            None => fs::remove_file(&pkg).unwrap(),
        }
        let c = client_of(
            &s.path.join(case.replace(' ', "-")),
            &url,
            &pubkey_conf(&pubkey()),
            "FreeBSD:15:amd64",
            "1500000",
        );
        assert!(String::from_utf8_lossy(&c.update.stdout).contains("repository update completed"), "{case}");
        let err = String::from_utf8_lossy(&c.install.stderr);
        assert!(err.contains(words), "{case}: {err}");
        assert_eq!(c.install.status.code(), Some(status), "{case}: {err}");
        assert!(!c.root.join("usr/local/bin/colibri").exists(), "{case}");
    }
    // file://: another, larger build is installed without a word (row 38).
    let repo = s.path.join("file-repo");
    test_support::copy_tree(&sample("production-pubkey"), &repo);
    let other = fs::read(sample("validation-pubkey/All/colibri-0.9.0.pkg")).unwrap();
    fs::write(repo.join("All/colibri-0.9.0.pkg"), &other).unwrap();
    let c = client(&s.path.join("file"), &repo, &pubkey_conf(&pubkey()), "FreeBSD:15:amd64", "1500000");
    assert!(c.install.status.success(), "{}", String::from_utf8_lossy(&c.install.stderr));
    assert!(c.root.join("usr/local/bin/colibri-test-agent").is_file(), "the wrong build was installed unchecked");
}
