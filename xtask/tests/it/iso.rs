//! iso: the real sample packages installed into a root by the pkg stand-in; the
//! production profile passes on the production build and fails on the validation build,
//! and the reverse; both trust modes; the published URL; pkg's refusals; the image build.

use std::fs;

use camino::Utf8PathBuf;

use test_support::nginx::Nginx;
use test_support::repo::*;
use test_support::{Project, standins, write_script};

fn pkg_standin() -> Utf8PathBuf {
    standins().join("iso/pkg")
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
        .code_is(1)
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
        .code_is(1)
        .stderr_has("the image build failed")
        .stderr_has("exited with status 3")
        .stderr_has("no space left");
    write_script(&script, "#!/bin/sh\nexit 0\n");
    p.run(&["iso"]).code_is(1).stderr_has("is unchanged by this build");
    fs::remove_file(&image).unwrap();
    p.run(&["iso"]).code_is(1).stderr_has(&format!("did not write {image}"));
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
    q.run(&["iso"]).code_is(1).stderr_has("was not written by `cargo xtask iso`; it is left alone");
    assert_eq!(
        fs::read_to_string(root(&q).join("etc/syslog.d/mother-build-console.conf")).unwrap(),
        "*.*\t/var/log/all\n"
    );
}
