//! publish: releases land as versions behind an atomic `latest`, served by a real nginx
//! on 127.0.0.1; unchanged packages are shared, not copied; the served copy is checked
//! over HTTP; rollback, pruning, the client files and a remote target through rsync and
//! an ssh stand-in. The package pool, and SIGKILL at any point: publish_pool.rs.

use std::fs;
use std::os::unix::fs::MetadataExt;

use camino::{Utf8Path, Utf8PathBuf};

use test_support::host::Host;
use test_support::nginx::{Nginx, get};
use test_support::repo::*;
use test_support::{Project, Scratch, scratch, simhost};

pub(crate) const ABI: &str = "FreeBSD:15:amd64";

/// A project that signs with the test key and publishes to `site`, served at `url`.
pub(crate) fn project(site: &Utf8Path, url: &str, extra: &str) -> Project {
    signing_project(
        "pubkey",
        // This machine's nginx is not the site's: publish leaves it alone.
        &format!(
            "url = \"{url}\"\n\n[publish]\ntarget = \"{site}\"\ncheck_timeout_secs = 10\nnginx_block = \"\"\n{extra}\n"
        ),
    )
}

/// `signing_project` puts `[repository]` first; `url = ...` above must land in it.
fn signing_project(mode: &str, rest: &str) -> Project {
    let p = Project::new("");
    let key = private_key(&p.scratch.path.join("keys"));
    let config = signing_config(&key, mode).replace(
        "[repository]\nabi = \"FreeBSD:15:amd64\"\n",
        &format!("[repository]\nabi = \"FreeBSD:15:amd64\"\n{}", rest.split("\n\n").next().unwrap_or_default()),
    );
    let tail = rest.split_once("\n\n").map(|(_, t)| t).unwrap_or_default();
    p.write_config(&format!("{config}\n{tail}"));
    p
}

pub(crate) struct Site {
    _scratch: Scratch,
    pub dir: Utf8PathBuf,
    pub nginx: Nginx,
}

pub(crate) fn site(extra_nginx: &str) -> Site {
    let s = scratch();
    let dir = s.path.join("site");
    fs::create_dir_all(&dir).unwrap();
    let nginx = Nginx::serve(&dir, &s.path.join("nginx"), extra_nginx);
    Site { _scratch: s, dir, nginx }
}

pub(crate) fn abi_dir(site: &Utf8Path) -> Utf8PathBuf {
    site.join(ABI)
}

pub(crate) fn latest(site: &Utf8Path) -> String {
    fs::read_link(abi_dir(site).join("latest")).unwrap().to_str().unwrap().to_owned()
}

pub(crate) fn versions(site: &Utf8Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(abi_dir(site))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.') && n != "latest")
        .collect();
    v.sort();
    v
}

pub(crate) fn sign_repo(p: &Project, repo: &Utf8Path) {
    p.run(&["sign", "--repo", repo.as_str()]).success();
}

/// The repository of `pkgs` in the project's scratch directory `name`, signed.
pub(crate) fn signed_repo(p: &Project, name: &str, pkgs: &[Pkg]) -> Utf8PathBuf {
    let dir = p.scratch.path.join(name);
    make_repo(&dir, pkgs);
    sign_repo(p, &dir);
    dir
}

pub(crate) fn published_output(p: &Project) -> serde_json::Value {
    p.state()["records"]["publish"]["last_success"]["outputs"].clone()
}

#[test]
fn publishes_through_nginx_and_switches_latest() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "");
    let a = copy_sample("production-pubkey", &p.scratch.path.join("a"));
    sign_repo(&p, &a);
    p.run(&["publish"]).success().stderr_has("serves").stderr_has("and All/colibri-0.9.0.pkg matches its sum");
    let v1 = latest(&site.dir);
    assert_eq!(published_output(&p)["version"], v1.as_str());
    assert_eq!(published_output(&p)["url"], format!("{}{ABI}/latest", site.nginx.url()));
    let served = get(&format!("{}{ABI}/latest/data.pkg", site.nginx.url())).unwrap();
    assert_eq!(served, fs::read(a.join("data.pkg")).unwrap());
    // The release manifest is published beside the repository.
    let manifest: serde_json::Value =
        serde_json::from_slice(&get(&format!("{}{ABI}/latest/manifest.json", site.nginx.url())).unwrap()).unwrap();
    assert_eq!(manifest["packages"][0]["name"], "colibri");
    // The client side: repo conf and public key at the top of the site.
    assert_eq!(fs::read(site.dir.join("clawdie.pub")).unwrap(), fs::read(pubkey()).unwrap());
    let conf = fs::read_to_string(site.dir.join("clawdie.conf")).unwrap();
    assert!(conf.contains(&format!("  url: \"{}${{ABI}}/latest\",\n", site.nginx.url())), "{conf}");
    assert!(conf.contains("  pubkey: \"/usr/share/keys/pkg/clawdie.pub\",\n"), "{conf}");

    // A second release: a new version, linked where unchanged, and latest switched.
    let b = copy_sample("validation-pubkey", &p.scratch.path.join("b"));
    sign_repo(&p, &b);
    p.run(&["publish"]).success().stderr_has("copied 1 package");
    let v2 = latest(&site.dir);
    assert_ne!(v1, v2);
    assert_eq!(versions(&site.dir), [v1.clone(), v2.clone()]);
    assert_eq!(
        get(&format!("{}{ABI}/latest/data.pkg", site.nginx.url())).unwrap(),
        fs::read(b.join("data.pkg")).unwrap()
    );
    p.run(&["sign", "--verify-only", "--repo", abi_dir(&site.dir).join("latest").as_str()]).success();

    // Publishing the same release again changes nothing.
    p.run(&["publish"]).success().stderr_has("already serves this release");
    assert_eq!(latest(&site.dir), v2);

    // Rollback: to the one before, then forward again by name.
    p.run(&["publish", "--rollback"]).success().stderr_has(&format!("rolled back: latest -> {v1}"));
    assert_eq!(latest(&site.dir), v1);
    assert_eq!(
        get(&format!("{}{ABI}/latest/data.pkg", site.nginx.url())).unwrap(),
        fs::read(a.join("data.pkg")).unwrap()
    );
    p.run(&["publish", "--rollback"]).code_is(2).stderr_has("no version older than");
    p.run(&["publish", "--rollback", &v2]).success();
    assert_eq!(latest(&site.dir), v2);
    // A version that no longer verifies is never switched to.
    let damaged = abi_dir(&site.dir).join(&v1).join("All/colibri-0.9.0.pkg");
    let good = fs::read(&damaged).unwrap();
    let mut bytes = good.clone();
    bytes[10] ^= 1;
    fs::write(&damaged, &bytes).unwrap();
    p.run(&["publish", "--rollback", &v1])
        .code_is(2)
        .stderr_has(&format!("cannot roll back to {v1}: "))
        .stderr_has("All/colibri-0.9.0.pkg: does not match");
    assert_eq!(latest(&site.dir), v2);
    fs::write(&damaged, &good).unwrap();
    let before = p.state()["records"]["publish"].clone();
    p.run(&["publish", "--rollback", "no-such"]).code_is(2).stderr_has(&format!("the versions kept are: {v1}, {v2}"));
    // A refused rollback leaves publish's record as it was.
    assert_eq!(p.state()["records"]["publish"], before);
}

#[test]
fn a_rollback_with_nothing_published_says_so_and_suggests_no_publishing() {
    let s = scratch();
    let site = s.path.join("site");
    let p = project(&site, "http://127.0.0.1:9/", "");
    let run = p.run(&["publish", "--rollback"]);
    run.code_is(2).stderr_has(&format!(
        "nothing is published for {ABI} at {}: there is no version to roll back to",
        site.join(ABI)
    ));
    // Neither a publish nor a resume (which would publish) is offered.
    for text in [run.stderr(), run.stdout()] {
        assert!(!text.contains("--resume") && !text.contains("xtask publish\n"), "{text}");
        assert!(!text.contains("rerun"), "{text}");
    }
    // The run records nothing about it: status offers nothing to continue.
    let status = p.run(&["status"]);
    assert!(!status.stdout().contains("continue with"), "{}", status.stdout());
    assert!(!status.stdout().contains("failed"), "{}", status.stdout());
    p.run(&["publish", "--rollback", "20260101T000000.000Z-0000"])
        .code_is(2)
        .stderr_has("there is no version to roll back to");
}

#[test]
fn one_changed_package_is_copied_and_the_rest_linked() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "keep = 2\n");
    signed_repo(&p, "a", &synthetic(12, 4096, 1, |_| false));
    p.run(&["publish"]).success().stderr_has("copied 12 packages");
    let v1 = latest(&site.dir);

    signed_repo(&p, "b", &synthetic(12, 4096, 2, |i| i == 5));
    p.run(&["publish"])
        .success()
        .stderr_has("copied 1 package and 6 repository files (catalogues, meta.conf, SBOM, provenance)")
        .stderr_has(&format!("11 packages shared with {v1} in the pool generation {v1}"));
    let v2 = latest(&site.dir);
    let out = published_output(&p);
    assert_eq!((out["copied"].as_u64(), out["linked"].as_u64()), (Some(1), Some(11)));
    let ino = |v: &str, f: &str| fs::metadata(abi_dir(&site.dir).join(v).join(f)).unwrap().ino();
    assert_eq!(ino(&v1, "All/pkg000-1.0.pkg"), ino(&v2, "All/pkg000-1.0.pkg"), "unchanged: the same file");
    assert!(abi_dir(&site.dir).join(&v2).join("All/pkg005-1.2.pkg").exists());

    // keep = 2: a third release removes the first.
    signed_repo(&p, "c", &synthetic(12, 4096, 3, |i| i == 7));
    p.run(&["publish"]).success().stderr_has(&format!("removed the old version {v1}"));
    assert_eq!(versions(&site.dir).len(), 2);
    assert!(!versions(&site.dir).contains(&v1));
}

#[test]
fn the_check_fails_when_nginx_serves_a_tampered_copy() {
    // nginx serves the packages of `latest` from a tampered copy: the catalogue is the
    // new one, a package is not.
    let s = scratch();
    let tampered = s.path.join("tampered");
    copy_sample("production-pubkey", &s.path.join("src"));
    fs::create_dir_all(&tampered).unwrap();
    let mut bytes = fs::read(s.path.join("src/All/colibri-0.9.0.pkg")).unwrap();
    bytes[100] ^= 0xff;
    fs::write(tampered.join("colibri-0.9.0.pkg"), bytes).unwrap();
    let site = site(&format!("    location /{ABI}/latest/All/ {{ alias {tampered}/; }}"));
    let p = project(&site.dir, &site.nginx.url(), "");
    sign_repo(&p, &s.path.join("src"));
    let v = {
        let run = p.run(&["publish"]);
        run.code_is(2)
            .stderr_has(&format!(
                "{}{ABI}/latest/All/colibri-0.9.0.pkg does not match the catalogue's sum",
                site.nginx.url()
            ))
            .stderr_has("the new release (")
            .stderr_has("is being served, and clients cannot use it")
            .stderr_has("--rollback");
        latest(&site.dir)
    };
    // The repository itself was published correctly; only what is served is wrong.
    p.run(&["sign", "--verify-only", "--repo", abi_dir(&site.dir).join(&v).as_str()]).success();
}

#[test]
fn the_check_says_when_the_old_release_is_still_served() {
    // A stale mirror: nginx serves a snapshot of the site taken after the first release.
    let s = scratch();
    let real = s.path.join("real");
    let mirror = s.path.join("mirror");
    fs::create_dir_all(&real).unwrap();
    fs::create_dir_all(&mirror).unwrap();
    let nginx = Nginx::serve(&mirror, &s.path.join("nginx"), "");
    let p = project(&real, &nginx.url(), "check = false\n");
    sign_repo(&p, &copy_sample("production-pubkey", &p.scratch.path.join("a")));
    p.run(&["publish"]).success();
    let v1 = latest(&real);
    let out = std::process::Command::new("cp").args(["-a", &format!("{real}/."), mirror.as_str()]).status().unwrap();
    assert!(out.success());
    p.write_raw_config(&fs::read_to_string(p.config_path()).unwrap().replace("check = false\n", ""));
    sign_repo(&p, &copy_sample("validation-pubkey", &p.scratch.path.join("b")));
    p.run(&["publish"])
        .code_is(2)
        .stderr_has(&format!("{}{ABI}/latest/data.pkg is the old release ({v1})", nginx.url()))
        .stderr_has("the old release is still being served");
}

#[test]
fn a_copy_that_fails_verification_is_never_switched_to() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "");
    sign_repo(&p, &copy_sample("production-pubkey", &p.scratch.path.join("a")));
    p.run(&["publish"]).success();
    let v1 = latest(&site.dir);
    let b = copy_sample("validation-pubkey", &p.scratch.path.join("b"));
    sign_repo(&p, &b);
    // The source changes after sign verified it.
    let original = fs::read(b.join("All/colibri-0.9.0.pkg")).unwrap();
    let mut bytes = original.clone();
    bytes[10] ^= 1;
    fs::write(b.join("All/colibri-0.9.0.pkg"), bytes).unwrap();
    p.run(&["publish"])
        .code_is(2)
        .stderr_has("the new copy failed verification; nothing was switched and latest still serves")
        .stderr_has("All/colibri-0.9.0.pkg: does not match")
        .stderr_has(&format!(
            "changed after sign verified it: run `cargo xtask --config pipeline.toml sign --repo {b}`"
        ));
    assert_eq!(latest(&site.dir), v1);
    assert_eq!(versions(&site.dir), std::slice::from_ref(&v1));
    // Nothing of the refused copy is left in the pool.
    let pool = site.dir.join("FreeBSD:15:amd64/.pool");
    let names = |dir: &camino::Utf8Path| -> Vec<String> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
    };
    assert_eq!(names(&pool).len(), 1, "{:?}", names(&pool));
    // The repository made whole again, the hint as printed, and publish again.
    fs::write(b.join("All/colibri-0.9.0.pkg"), original).unwrap();
    p.run(&["sign", "--repo", b.as_str()]).success();
    p.run(&["publish"]).success();
    assert_ne!(latest(&site.dir), v1);
}

#[test]
fn an_sbom_changed_after_sign_wrote_it_is_refused() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "");
    let a = signed_repo(&p, "a", &synthetic(4, 4096, 1, |_| false));
    let sbom = p.state()["records"]["sign"]["last_success"]["outputs"]["sbom"]["name"].as_str().unwrap().to_owned();
    let mut text = fs::read_to_string(a.join(&sbom)).unwrap();
    text.push('\n');
    fs::write(a.join(&sbom), text).unwrap();
    p.run(&["publish"])
        .code_is(2)
        .stderr_has("the new copy failed verification; nothing was switched and latest still serves nothing")
        .stderr_has(&format!("{sbom}: is not the SBOM sign wrote"));
    assert!(versions(&site.dir).is_empty());
    assert!(!abi_dir(&site.dir).join("latest").exists());
}

#[test]
fn catalogues_the_served_version_has_over_a_changed_package_are_refused() {
    // After sign, b's catalogues are replaced by a's: signed, and byte for byte those of
    // the version `latest` serves, but one package under them is b's, another file.
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "");
    let a = signed_repo(&p, "a", &synthetic(12, 4096, 1, |_| false));
    p.run(&["publish"]).success();
    let v1 = latest(&site.dir);
    let b = signed_repo(&p, "b", &synthetic(12, 4096, 2, |i| i == 5));
    for archive in ["data.pkg", "packagesite.pkg"] {
        fs::copy(a.join(archive), b.join(archive)).unwrap();
    }
    p.run(&["publish"])
        .code_is(2)
        .stderr_has("the new copy failed verification; nothing was switched and latest still serves")
        .stderr_has("data.pkg: is not the catalogue sign verified");
    assert_eq!(latest(&site.dir), v1);
    assert_eq!(versions(&site.dir), [v1]);
}

#[test]
fn dry_run_shows_the_copies_and_the_switch_and_changes_nothing() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "");
    let a = copy_sample("production-pubkey", &p.scratch.path.join("a"));
    sign_repo(&p, &a);
    let run = p.run(&["publish", "--dry-run"]);
    run.success()
        .stdout_has(&format!("copy    {a}/All/colibri-0.9.0.pkg -> {}/.", abi_dir(&site.dir)))
        .stdout_has(&format!("-> {}/latest", abi_dir(&site.dir)))
        .stdout_has(&format!("fetch   {}{ABI}/latest/data.pkg", site.nginx.url()));
    assert!(!abi_dir(&site.dir).exists());
    assert!(!site.dir.join("clawdie.conf").exists());
}

#[test]
fn a_dry_run_before_sign_names_the_repository_under_poudriere_data() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "\n[poudriere]\ndata = \"relative/data\"\n");
    let repo = p.config_path().parent().unwrap().join("relative/data/packages/clawdie-amd64-clawdie/.latest");
    let run = p.run(&["publish", "--dry-run"]);
    run.success()
        .stdout_has("sign has not run in this run")
        .stdout_has(&format!("copy    {repo}/data.pkg -> {}/.", abi_dir(&site.dir)));
    assert!(!run.stdout().contains("/usr/local/poudriere/data"), "{}", run.stdout());
}

#[test]
fn fingerprints_mode_publishes_the_trust_file_and_its_repo_conf() {
    let site = site("");
    let p = signing_project(
        "fingerprints",
        &format!("url = \"{}\"\n\n[publish]\ntarget = \"{}\"\n", site.nginx.url(), site.dir),
    );
    sign_repo(&p, &copy_sample("production-fingerprints", &p.scratch.path.join("a")));
    p.run(&["publish"]).success();
    let conf = fs::read_to_string(site.dir.join("clawdie.conf")).unwrap();
    let expected = format!(
        "clawdie: {{\n  url: \"{}${{ABI}}/latest\",\n  signature_type: \"fingerprints\",\n  fingerprints: \"/usr/share/keys/pkg/clawdie\",\n  enabled: yes,\n  priority: 10\n}}\n",
        site.nginx.url()
    );
    assert!(conf.ends_with(&expected), "{conf}");
    assert_eq!(
        fs::read_to_string(site.dir.join("clawdie.fingerprint")).unwrap(),
        format!("function: \"sha256\"\nfingerprint: \"{TEST_FP}\"\n")
    );
}

#[test]
fn the_nginx_server_block_is_valid_nginx() {
    let s = scratch();
    let site = s.path.join("site");
    fs::create_dir_all(&site).unwrap();
    let cert = s.path.join("cert.pem");
    let key = s.path.join("key.pem");
    let ok = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pkg.example", "-days", "1"])
        .args(["-keyout", key.as_str(), "-out", cert.as_str()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let p = project(
        &site,
        "https://pkg.example/",
        &format!("check = false\ntls_certificate = \"{cert}\"\ntls_certificate_key = \"{key}\"\n"),
    );
    sign_repo(&p, &copy_sample("production-pubkey", &p.scratch.path.join("a")));
    p.run(&["publish"]).success();
    let block = p.state_dir().join(published_output(&p)["nginx"].as_str().unwrap());
    let text = fs::read_to_string(&block).unwrap();
    for needle in [
        "server_name pkg.example;",
        &format!("root {site};"),
        "autoindex on;",
        "disable_symlinks off;",
        &format!("ssl_certificate {cert};"),
        "return 301 https://$host$request_uri;",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    nginx_accepts(&s.path.join("nginx"), &block);

    // Without TLS: one plain HTTP server, on the URL's port.
    let config = fs::read_to_string(p.config_path()).unwrap();
    p.write_raw_config(
        &config.replace("https://pkg.example/", "http://pkg.example:8080/").replace(&format!("\"{cert}\""), "\"\""),
    );
    p.run(&["publish"]).success();
    let text = fs::read_to_string(&block).unwrap();
    assert!(text.contains("    listen 8080;\n    listen [::]:8080;\n    server_name pkg.example;\n"), "{text}");
    assert!(!text.contains("ssl"), "{text}");
    nginx_accepts(&s.path.join("nginx-plain"), &block);
}

#[test]
fn the_hosts_nginx_is_reloaded_when_the_server_block_changes_and_only_then() {
    let served = site("");
    let settings = |extra: &str| {
        format!(
            "[repository]\nurl = \"{}\"\n\n[publish]\ntarget = \"{}\"\ncheck_timeout_secs = 10\n{extra}",
            served.nginx.url(),
            served.dir
        )
    };
    let h = Host::fresh(&settings(""));
    h.provision();
    let installed = fs::read_to_string(h.nginx_block()).unwrap();
    let a = copy_sample("production-pubkey", &h.p.scratch.path.join("a"));
    h.run(&["sign", "--repo", a.as_str()]).success();
    h.forget_calls();
    h.run(&["publish"]).success();
    assert_eq!(fs::read_to_string(h.nginx_block()).unwrap(), installed);
    assert!(!h.calls().iter().any(|c| c.starts_with("service") || c.starts_with("nginx")), "{:?}", h.calls());

    // The block changes (a new server_name): nginx -t, then a reload.
    h.configure(&settings("server_name = \"pkg.example\"\n"));
    h.p.run(&["publish", "--dry-run"])
        .success()
        .stdout_has(&format!("write   {} (nginx server block: TLS with {})\n", h.nginx_block(), h.certificate()))
        .stdout_has(&format!("run     nginx -t -c {}\n", h.nginx_conf()))
        .stdout_has("run     service nginx reload\n");
    h.forget_calls();
    h.run(&["publish"]).success().stderr_has(&format!("nginx reloaded: the server block {} changed", h.nginx_block()));
    assert!(fs::read_to_string(h.nginx_block()).unwrap().contains("    server_name pkg.example;\n"));
    assert_eq!(h.nginx_reloads(), 1);
    assert_eq!(
        h.calls().iter().filter(|c| c.starts_with("nginx -t") || c.starts_with("service")).collect::<Vec<_>>(),
        [&format!("nginx -t -c {}", h.nginx_conf()), "service nginx reload", "nginx -t"]
    );
    // Again, unchanged: nothing.
    h.run(&["publish"]).success();
    assert_eq!(h.nginx_reloads(), 1);
    h.p.run(&["publish", "--dry-run"]).success().stdout_has("is current (TLS with");

    // A block nginx refuses (a certificate it cannot load): the old one is put back,
    // nginx is not reloaded, and `latest` does not move.
    let bad = h.p.scratch.path.join("bad.pem");
    fs::write(&bad, "not a certificate\n").unwrap();
    h.configure(&settings(&format!("server_name = \"pkg.example\"\ntls_certificate = \"{bad}\"\n")));
    let before = latest(&served.dir);
    let b = copy_sample("validation-pubkey", &h.p.scratch.path.join("b"));
    h.run(&["sign", "--repo", b.as_str()]).success();
    h.run(&["publish"])
        .code_is(2)
        .stderr_has("nginx refuses the new server block")
        .stderr_has("the old one is back and nginx was not reloaded")
        .stderr_has(&format!("cannot load certificate \"{bad}\""));
    assert!(fs::read_to_string(h.nginx_block()).unwrap().contains(&format!("ssl_certificate {};", h.certificate())));
    assert_eq!(h.nginx_reloads(), 1);
    assert_eq!(latest(&served.dir), before);

    // Not installed (setup installs it): publish leaves nginx alone and says so.
    h.configure(&settings(""));
    fs::remove_file(h.nginx_block()).unwrap();
    h.run(&["publish"]).success().stderr_has("is not installed (`cargo xtask setup` installs it): nginx is left alone");
    assert!(!h.nginx_block().exists());
}

/// `nginx -t` accepts `block` included in an http block.
fn nginx_accepts(prefix: &Utf8Path, block: &Utf8Path) {
    fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    fs::write(
        &conf,
        format!("error_log {prefix}/error.log;\npid {prefix}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  include {block};\n}}\n"),
    )
    .unwrap();
    let out =
        std::process::Command::new("nginx").args(["-t", "-p", prefix.as_str(), "-c", conf.as_str()]).output().unwrap();
    assert!(out.status.success(), "nginx -t rejects the block:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_remote_target_goes_through_rsync_and_ssh() {
    let s = scratch();
    let remote = s.path.join("remote-site");
    fs::create_dir_all(&remote).unwrap();
    let nginx = Nginx::serve(&remote, &s.path.join("nginx"), "");
    let ssh = simhost().join("publish/ssh");
    let calls = s.path.join("ssh.log");
    let mut p = project(&remote, &nginx.url(), &format!("keep = 2\n\n[tools]\nssh = \"{ssh}\"\n"));
    p.write_raw_config(
        &fs::read_to_string(p.config_path())
            .unwrap()
            .replace(&format!("target = \"{remote}\""), &format!("target = \"mother-build:{remote}\"")),
    );
    p.env.push(("SSH_STANDIN_LOG".into(), calls.to_string()));

    signed_repo(&p, "a", &synthetic(6, 2048, 1, |_| false));
    p.run(&["publish", "--dry-run"])
        .success()
        .stdout_has(&format!("rsync -e {ssh} -rlp --checksum --files-from"))
        .stdout_has(&format!("mother-build:{remote}/{ABI}/."))
        .stdout_has("--checksum --dry-run --itemize-changes");
    p.run(&["publish"]).success().stderr_has("latest -> ").stderr_has(&format!("{}{ABI}/latest serves", nginx.url()));
    let v1 = latest(&remote);
    assert!(fs::read_to_string(&calls).unwrap().contains("mother-build "));
    assert_eq!(fs::read(remote.join("clawdie.pub")).unwrap(), fs::read(pubkey()).unwrap());

    signed_repo(&p, "b", &synthetic(6, 2048, 2, |i| i == 0));
    p.run(&["publish", "--dry-run"]).success().stdout_has(&format!("--link-dest={}/{v1}", abi_dir(&remote)));
    p.run(&["publish"]).success();
    let v2 = latest(&remote);
    assert_ne!(v1, v2);
    let ino = |v: &str| fs::metadata(abi_dir(&remote).join(v).join("All/pkg003-1.0.pkg")).unwrap().ino();
    assert_eq!(ino(&v1), ino(&v2), "rsync --link-dest linked the unchanged package");
    p.run(&["sign", "--verify-only", "--repo", abi_dir(&remote).join("latest").as_str()]).success();

    // A rollback verifies the version it switches to, from a copy fetched from the host,
    // as a local rollback verifies its own: a damaged package is refused, latest stays.
    let damaged = abi_dir(&remote).join(&v1).join("All/pkg000-1.0.pkg");
    let good = fs::read(&damaged).unwrap();
    let mut bytes = good.clone();
    bytes[10] ^= 1;
    fs::write(&damaged, &bytes).unwrap();
    p.run(&["publish", "--rollback", "--dry-run"])
        .success()
        .stdout_has(&format!("rsync -e {ssh} -r --checksum --delete mother-build:{}/{v1}/ ", abi_dir(&remote)))
        .stdout_has(&format!("/publish/rollback/{v1}: verify it, as sign does"));
    p.run(&["publish", "--rollback"])
        .code_is(2)
        .stderr_has(&format!("cannot roll back to {v1} on mother-build: "))
        .stderr_has("All/pkg000-1.0.pkg: does not match")
        .stderr_has(&format!("nothing was switched; latest still serves {v2}"));
    assert_eq!(latest(&remote), v2);
    fs::write(&damaged, &good).unwrap();
    p.run(&["publish", "--rollback"])
        .success()
        .stderr_has(&format!("rolled back on mother-build: latest -> {v1} (was {v2})"))
        .stderr_has(&format!("serves {v1}: data.pkg, packagesite.pkg and meta.conf verify, and All/"));
    assert_eq!(latest(&remote), v1);
    let copies = p.state_dir().join("runs");
    assert!(
        !fs::read_dir(&copies).unwrap().any(|run| run.unwrap().path().join("publish/rollback").exists()),
        "the verified copy is removed after the rollback"
    );

    // An unreachable host is an infrastructure error (exit 2) naming the host and the
    // command, in ssh's own words; never "nothing published yet". latest stays.
    p.env.push(("SSH_STANDIN_FAIL".into(), "1".into()));
    let unreachable = |args: &[&str]| {
        let run = p.run(args);
        run.code_is(2)
            .stderr_has(&format!("cannot reach mother-build: `{ssh} mother-build -- ls -1a {remote}/{ABI}`"))
            .stderr_has("exited with status 255:\n")
            .stderr_has("ssh: connect to host mother-build port 22: Connection refused")
            .stderr_has(&format!("help: check that `{ssh} mother-build true` works from this machine"));
        assert!(!run.stderr().contains("nothing"), "{}", run.stderr());
    };
    unreachable(&["publish"]);
    unreachable(&["publish", "--rollback"]);
    unreachable(&["publish", "--dry-run"]);
    assert_eq!(latest(&remote), v1);
}

#[test]
fn a_remote_target_whose_host_looks_like_an_option_is_refused() {
    let s = scratch();
    let p = project(&s.path.join("site"), "http://127.0.0.1:9/", "");
    p.write_raw_config(
        &fs::read_to_string(p.config_path())
            .unwrap()
            .replace(&format!("target = \"{}\"", s.path.join("site")), "target = \"-oProxyCommand=touch x:/srv/site\""),
    );
    p.run(&["publish", "--dry-run"])
        .code_is(2)
        .stderr_has("`-oProxyCommand=touch x:/srv/site` names a host that ssh and rsync would take for an option");
}

#[test]
fn the_ssh_stand_in_fails_as_ssh_does() {
    let ssh = simhost().join("publish/ssh");
    let out = std::process::Command::new(&ssh)
        .args(["-p", "22", "-o", "BatchMode=yes", "-4", "pkg.example", "--", "echo", "a", "b"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a b\n");
    let out = std::process::Command::new(&ssh).args(["pkg.example", "--", "exit", "3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "the remote command's status");
    let out = std::process::Command::new(&ssh)
        .args(["pkg.example", "--", "true"])
        .env("SSH_STANDIN_FAIL", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "ssh: connect to host pkg.example port 22: Connection refused\n");
}

#[test]
fn a_custom_repo_conf_template_is_filled_in_and_a_value_that_would_break_a_file_is_refused() {
    let site = site("");
    let template = site.dir.parent().unwrap().join("custom.conf.in");
    fs::write(
        &template,
        "# {{NAME}}, our own words\n{{NAME}}: { url: \"{{PKG_URL}}\", signature_type: \"{{SIGNATURE_TYPE}}\", {{SIGNATURE_TYPE}}: \"{{TRUST_PATH}}\" }\n",
    )
    .unwrap();
    let p = project(&site.dir, &site.nginx.url(), &format!("repo_conf_template = \"{template}\"\n"));
    sign_repo(&p, &copy_sample("production-pubkey", &p.scratch.path.join("a")));
    p.run(&["publish"]).success();
    assert_eq!(
        fs::read_to_string(site.dir.join("clawdie.conf")).unwrap(),
        format!(
            "# clawdie, our own words\nclawdie: {{ url: \"{}${{ABI}}/latest\", signature_type: \"pubkey\", pubkey: \"/usr/share/keys/pkg/clawdie.pub\" }}\n",
            site.nginx.url()
        )
    );
    let config = fs::read_to_string(p.config_path()).unwrap();

    // A template in the old form is refused, saying what to write instead.
    fs::write(&template, "clawdie: { url: \"__PKG_URL__\", pubkey: \"__PUBKEY_PATH__\" }\n").unwrap();
    p.run(&["publish"])
        .code_is(2)
        .stderr_has("has the old placeholders __PKG_URL__ and __PUBKEY_PATH__")
        .stderr_has("help: write {{NAME}}, {{PKG_URL}}, {{SIGNATURE_TYPE}} and {{TRUST_PATH}}");
    // A placeholder the code does not fill.
    fs::write(
        &template,
        "{{NAME}}: { url: \"{{PKG_URL}}\", {{SIGNATURE_TYPE}}: \"{{TRUST_PATH}}\", x: \"{{MIRROR}}\" }\n",
    )
    .unwrap();
    p.run(&["publish"])
        .code_is(2)
        .stderr_has(&format!("{template}:1: {{{{MIRROR}}}} is not a placeholder of this file"));

    // A certificate path with a space would end nginx's word early: refused, naming the
    // setting and its line, before anything is written.
    let before = fs::read(site.dir.join("clawdie.conf")).unwrap();
    let v1 = latest(&site.dir);
    p.write_raw_config(&format!(
        "{}tls_certificate = \"/etc/ssl/pkg cert.pem\"\n",
        config.replace(&format!("repo_conf_template = \"{template}\"\n"), "")
    ));
    sign_repo(&p, &copy_sample("validation-pubkey", &p.scratch.path.join("b")));
    let line =
        fs::read_to_string(p.config_path()).unwrap().lines().position(|l| l.starts_with("tls_certificate")).unwrap();
    p.run(&["publish"])
        .code_is(2)
        .stderr_has(&format!(
            "pipeline.toml:{}:19: publish.tls_certificate \"/etc/ssl/pkg cert.pem\" cannot go into the nginx server block: it holds a space; nothing was written",
            line + 1
        ))
        .stderr_has("help: use a value without whitespace");
    assert_eq!(latest(&site.dir), v1);
    assert_eq!(fs::read(site.dir.join("clawdie.conf")).unwrap(), before);
}

/// Changes a word in both catalogues of a pubkey-signed copy and signs them again with
/// the test key (openssl), so the next release has a new catalogue and the same files.
fn recatalogue(repo: &Utf8Path, key: &Utf8Path, from: &str, to: &str) {
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        edit_archive(&repo.join(archive), |entries| {
            let body = &mut entries.iter_mut().find(|(n, _)| n == inner).unwrap().1;
            *body = String::from_utf8(body.clone()).unwrap().replace(from, to).into_bytes();
            let mut sig = openssl_sign(key, &sha256_hex(body));
            sig.push(0);
            entries.iter_mut().find(|(n, _)| n == "signature").unwrap().1 = sig;
        });
    }
}

/// Hashed names (`$` and `~` in them) are published under their literal names, served,
/// and hard-linked into the next version when unchanged, locally and through rsync; the
/// `--symlink` links are not published (clients never ask for them).
#[test]
fn hashed_names_are_published_and_linked_locally_and_through_rsync() {
    const HASHED: &str = "All/Hashed/colibri-0.9.0~2$f56x1t1g.pkg";
    for remote in [false, true] {
        let s = scratch();
        let dir = s.path.join("site");
        fs::create_dir_all(&dir).unwrap();
        let nginx = Nginx::serve(&dir, &s.path.join("nginx"), "");
        let ssh = simhost().join("publish/ssh");
        let p = project(&dir, &nginx.url(), &format!("\n[tools]\nssh = \"{ssh}\"\n"));
        if remote {
            p.write_raw_config(
                &fs::read_to_string(p.config_path())
                    .unwrap()
                    .replace(&format!("target = \"{dir}\""), &format!("target = \"mother-build:{dir}\"")),
            );
        }
        let a = p.scratch.path.join("a");
        test_support::copy_tree(&test_support::repo::sample2("hashed-symlink"), &a);
        sign_repo(&p, &a);
        p.run(&["publish"]).success().stderr_has(&format!("and {HASHED} matches its sum"));
        let v1 = latest(&dir);
        assert!(abi_dir(&dir).join(&v1).join(HASHED).is_file(), "remote {remote}");
        assert!(!abi_dir(&dir).join(&v1).join("All/colibri-0.9.0.pkg").exists(), "the symlink is not published");
        let served = get(&format!("{}{ABI}/latest/{HASHED}", nginx.url())).unwrap();
        assert_eq!(served, fs::read(a.join(HASHED)).unwrap());

        let key = p.scratch.path.join("keys/test-repo.key");
        recatalogue(&a, &key, "Agent runtime", "Agent Runtime");
        sign_repo(&p, &a);
        p.run(&["publish"]).success();
        let v2 = latest(&dir);
        assert_ne!(v1, v2);
        let ino = |v: &str| fs::metadata(abi_dir(&dir).join(v).join(HASHED)).unwrap().ino();
        assert_eq!(ino(&v1), ino(&v2), "remote {remote}: the unchanged Hashed package is linked");
        p.run(&["sign", "--verify-only", "--repo", abi_dir(&dir).join("latest").as_str()]).success();
    }
}
