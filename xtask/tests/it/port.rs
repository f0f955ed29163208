//! The port stage on the example colibri, and CARGO_CRATES generation on real and
//! synthetic lock files.

use std::fs;

use test_support::{Project, data, git};

const PORT: &str = "packaging/freebsd/port/sysutils/colibri";

#[test]
fn stages_the_port_from_a_clean_tag() {
    let p = Project::with_colibri("");
    p.run(&["port"]).success().stderr_has("staged colibri 0.9.0");
    let staged = p.root.join("ports/sysutils/colibri");
    for f in [
        "Makefile",
        "Makefile.crates",
        "pkg-descr",
        "pkg-plist",
        "distinfo",
        "files/colibri_daemon.in",
        "files/colibri_bridge.in",
    ] {
        assert_eq!(fs::read(staged.join(f)).unwrap(), fs::read(p.colibri().join(PORT).join(f)).unwrap(), "{f}");
    }
    let out = &p.state()["records"]["port"]["last_success"]["outputs"];
    assert_eq!(out["tag"], "v0.9.0");
    assert_eq!(out["dirty"], false);
    assert_eq!(out["crates"], 6);
    assert_eq!(out["port_dir"], "ports/sysutils/colibri");
    assert_eq!(out["commit"].as_str().unwrap(), git(&p.colibri(), &["rev-parse", "HEAD"]));
    // No temporary copies are left beside it.
    let names: Vec<_> = fs::read_dir(p.root.join("ports/sysutils")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec!["colibri"]);
}

#[test]
fn restaging_replaces_the_whole_port() {
    let p = Project::with_colibri("");
    p.run(&["port"]).success();
    let stray = p.root.join("ports/sysutils/colibri/files/stray.patch");
    fs::write(&stray, "left over").unwrap();
    p.run(&["port"]).success();
    assert!(!stray.exists(), "a restaged port holds exactly the checkout's files");
}

#[test]
fn a_dirty_checkout_is_refused_unless_allowed_and_recorded() {
    let p = Project::with_colibri("");
    fs::write(p.colibri().join("crates/colibri/src/main.rs"), "fn main() {}\n").unwrap();
    p.run(&["port"])
        .code_is(2)
        .stderr_has("local changes")
        .stderr_has("crates/colibri/src/main.rs")
        .stderr_has("--allow-dirty");
    assert!(!p.root.join("ports/sysutils/colibri").exists());
    p.run(&["port", "--allow-dirty"]).success().stderr_has("not a clean release tag");
    let out = &p.state()["records"]["port"]["last_success"]["outputs"];
    assert_eq!(out["dirty"], true);
    assert_eq!(out["allow_dirty"], true);
}

#[test]
fn head_must_be_the_tag() {
    let p = Project::with_colibri("");
    git(&p.colibri(), &["commit", "-q", "--allow-empty", "-m", "after the tag"]);
    p.run(&["port"]).code_is(2).stderr_has("but the tag v0.9.0 is");
    git(&p.colibri(), &["tag", "-d", "v0.9.0"]);
    p.run(&["port"]).code_is(2).stderr_has("the tag v0.9.0 does not exist");
}

#[test]
fn symlinks_and_missing_files_are_refused() {
    let p = Project::with_colibri("");
    let port = p.colibri().join(PORT);
    std::os::unix::fs::symlink("/etc/passwd", port.join("files/evil")).unwrap();
    git(&p.colibri(), &["add", "-A"]);
    git(&p.colibri(), &["commit", "-qm", "symlink"]);
    git(&p.colibri(), &["tag", "-f", "v0.9.0"]);
    p.run(&["port"]).code_is(1).stderr_has("symlink").stderr_has("files/evil");

    git(
        &p.colibri(),
        &["rm", "-q", "files/evil", "pkg-plist", "files/colibri_bridge.in"]
            .map(|f| if f.starts_with('-') || f == "rm" { f.to_owned() } else { format!("{PORT}/{f}") })
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    git(&p.colibri(), &["commit", "-qm", "remove"]);
    git(&p.colibri(), &["tag", "-f", "v0.9.0"]);
    p.run(&["port"]).code_is(1).stderr_has("lacks files/colibri_bridge.in, pkg-plist");
}

#[test]
fn cargo_crates_drift_shows_a_diff_and_the_fix() {
    let p = Project::with_colibri("");
    let crates = p.colibri().join(PORT).join("Makefile.crates");
    let text = fs::read_to_string(&crates).unwrap().replace("\t\tmemchr-2.8.3\n", "\t\tmemchr-2.7.0\n");
    fs::write(&crates, text).unwrap();
    git(&p.colibri(), &["commit", "-qam", "drift"]);
    git(&p.colibri(), &["tag", "-f", "v0.9.0"]);
    let run = p.run(&["port"]);
    run.code_is(1).stderr_has("does not match").stderr_has("-\t\tmemchr-2.7.0").stderr_has("+\t\tmemchr-2.8.3");
    run.stderr_has("cargo xtask port --print-crates --lock");
}

#[test]
fn print_crates_reproduces_the_ripgrep_port_byte_for_byte() {
    let p = Project::new("");
    let dir = data().join("ports/ripgrep-15.1.0");
    let lock = dir.join("Cargo.lock");
    let run = p.run(&["port", "--print-crates", "--lock", lock.as_str()]);
    run.success();
    assert_eq!(run.output.stdout, fs::read(dir.join("Makefile.crates")).unwrap());
}

#[test]
fn print_crates_handles_git_path_workspace_and_several_versions() {
    let p = Project::new("");
    let lock = p.scratch.path.join("Cargo.lock");
    fs::write(
        &lock,
        r#"version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["base64 0.9.3", "base64 0.10.1", "member", "vendored"]

[[package]]
name = "base64"
version = "0.9.3"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "489d6c0ed21b11d038c31b6ceccca973e65d73ba3bd8ecb9a2babf5546164643"

[[package]]
name = "base64"
version = "0.10.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "0b25d992356d2eb0ed82172f5248873db5560c4721f564b13cb5193bda5e668e"

[[package]]
name = "member"
version = "0.1.0"

[[package]]
name = "tokio-macros"
version = "2.0.0"
source = "git+https://github.com/tokio-rs/tokio?rev=abc#c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"

[[package]]
name = "tokio"
version = "1.0.0"
source = "git+https://github.com/tokio-rs/tokio?rev=abc#c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"

[[package]]
name = "vendored"
version = "1.0.0"
source = "registry+https://my.mirror/index"
"#,
    )
    .unwrap();
    let run = p.run(&["port", "--print-crates", "--lock", lock.as_str()]);
    assert_eq!(
        run.success().stdout(),
        "CARGO_CRATES=\tbase64-0.9.3 \\\n\t\tbase64-0.10.1 \\\n\t\ttokio-macros,tokio@git+https://github.com/tokio-rs/tokio?rev=abc\\#c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00\n"
    );
    // The example colibri: a workspace with path dependencies gives only registry crates.
    let lock = test_support::colibri_fixture().join("Cargo.lock");
    let run = p.run(&["port", "--print-crates", "--lock", lock.as_str()]);
    assert_eq!(
        run.success().output.stdout,
        fs::read(test_support::colibri_fixture().join(PORT).join("Makefile.crates")).unwrap()
    );
}

#[test]
fn print_crates_refuses_what_the_framework_mishandles() {
    let p = Project::new("");
    let lock = p.scratch.path.join("Cargo.lock");
    fs::write(&lock, "[[package]]\r\nname = \"a\"\r\n").unwrap();
    p.run(&["port", "--print-crates", "--lock", lock.as_str()]).code_is(2).stderr_has("CRLF");
    fs::write(&lock, "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n[[patch.unused]]\nname = \"b\"\nversion = \"2.0.0\"\n").unwrap();
    p.run(&["port", "--print-crates", "--lock", lock.as_str()])
        .code_is(2)
        .stderr_has("Cargo.lock:6: a [[patch.unused]]");
}

#[test]
fn a_missing_checkout_says_how_to_point_at_one() {
    let p = Project::new("");
    p.run(&["port"]).code_is(2).stderr_has("does not exist").stderr_has("--colibri PATH");
    let elsewhere = p.scratch.path.join("elsewhere");
    test_support::make_colibri(&elsewhere);
    p.run(&["--colibri", elsewhere.as_str(), "port"]).success();
}

#[test]
fn dry_run_prints_the_plan_and_stages_nothing() {
    let p = Project::with_colibri("");
    let run = p.run(&["port", "--dry-run"]);
    run.success().stdout_has("run     git -C").stdout_has("check   CARGO_CRATES (6 entries)").stdout_has("rename");
    assert!(!p.root.join("ports/sysutils/colibri").exists());
    assert!(!p.state_dir().join("current").exists());
}
