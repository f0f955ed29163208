//! makesum: distinfo for the ripgrep sample and the example colibri, checksum
//! verification and quarantine, downloads from a local HTTP server and their failures,
//! the TIMESTAMP rule, --check, --dry-run, and the ports method through a `make`
//! stand-in.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};

use test_support::httpd::{Reply, Server};
use test_support::{Project, data, git, repo_root, scratch, simhost};

const RIPGREP_MAKEFILE: &str = "PORTNAME=\tripgrep\nDISTVERSION=\t15.1.0\nCATEGORIES=\ttextproc\n\nMAINTAINER=\tports@example.org\nCOMMENT=\tCommand line search tool\nWWW=\t\thttps://github.com/BurntSushi/ripgrep\n\nLICENSE=\tMIT UNLICENSE\n\nUSES=\t\tcargo\nUSE_GITHUB=\tyes\nGH_ACCOUNT=\tBurntSushi\n\nPLIST_FILES=\tbin/rg\n\n.include <bsd.port.mk>\n";

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The ripgrep sample's 51 crates in cargo's cache layout, put there by `.ci/deps`.
fn ripgrep_cargo_home() -> Utf8PathBuf {
    let dir = repo_root().join("target/test-assets/ripgrep-cargo-home");
    let cache = dir.join("registry/cache");
    let count = fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| fs::read_dir(e.path()).map_or(0, |f| f.count())).sum::<usize>())
        .unwrap_or(0);
    assert!(
        count >= 51,
        "{cache} holds {count} crates, not the ripgrep sample's 51: run .ci/deps (it fetches them there)"
    );
    dir
}

/// Cargo's own CARGO_HOME (where building the xtask put its dependencies).
fn real_cargo_home() -> Utf8PathBuf {
    match std::env::var("CARGO_HOME") {
        Ok(h) if !h.is_empty() => Utf8PathBuf::from(h),
        _ => Utf8PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"),
    }
}

/// `(name, version, checksum)` of each registry crate of a Cargo.lock, in its order.
fn lock_crates(lock: &Utf8Path) -> Vec<(String, String, String)> {
    let text = fs::read_to_string(lock).unwrap();
    let mut out = Vec::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")).map(|v| v.trim_end_matches('"').to_owned()))
        };
        if let (Some(n), Some(v), Some(c)) = (field("name"), field("version"), field("checksum")) {
            out.push((n, v, c));
        }
    }
    out
}

/// A CARGO_HOME under `at` holding the example colibri's crates, copied from cargo's own
/// cache: they are dependencies of the xtask, so building it put them there.
fn colibri_cargo_home(at: &Utf8Path) -> Utf8PathBuf {
    let home = at.join("cargo-home");
    let dest = home.join("registry/cache/index.crates.io-test");
    fs::create_dir_all(&dest).unwrap();
    let caches: Vec<_> = fs::read_dir(real_cargo_home().join("registry/cache")).unwrap().flatten().collect();
    for (name, version, _) in lock_crates(&test_support::colibri_fixture().join("Cargo.lock")) {
        let file = format!("{name}-{version}.crate");
        let found = caches.iter().map(|d| d.path().join(&file)).find(|p| p.is_file());
        let found = found.unwrap_or_else(|| {
            panic!(
                "{file} is not in cargo's cache ({}); it is a dependency of the xtask: run `cargo fetch`",
                real_cargo_home()
            )
        });
        fs::copy(found, dest.join(&file)).unwrap();
    }
    home
}

/// A made-up crate with deterministic contents.
#[derive(Clone)]
struct FakeCrate {
    name: String,
    version: String,
    bytes: Vec<u8>,
}

impl FakeCrate {
    fn new(name: &str, version: &str, size: usize) -> FakeCrate {
        let mut x: u32 = name.bytes().fold(2166136261, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
        let bytes = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        FakeCrate { name: name.into(), version: version.into(), bytes }
    }
    fn file(&self) -> String {
        format!("{}-{}.crate", self.name, self.version)
    }
    fn distname(&self) -> String {
        format!("rust/crates/{}", self.file())
    }
    fn path(&self) -> String {
        format!("/{}/{}", self.name, self.version)
    }
}

/// A USES=cargo port with only crates (no source of its own): Makefile, Makefile.crates
/// and the Cargo.lock pinning them.
fn fake_port(dir: &Utf8Path, crates: &[FakeCrate]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("Makefile"),
        "PORTNAME=\tdemo\nDISTVERSION=\t1.0\nCATEGORIES=\tmisc\n\nUSES=\t\tcargo\nDISTFILES=\n\n.include <bsd.port.mk>\n",
    )
    .unwrap();
    let entries: Vec<String> = crates.iter().map(|c| format!("{}-{}", c.name, c.version)).collect();
    fs::write(dir.join("Makefile.crates"), format!("CARGO_CRATES=\t{}\n", entries.join(" \\\n\t\t"))).unwrap();
    let mut lock = String::from("version = 4\n\n[[package]]\nname = \"demo\"\nversion = \"1.0.0\"\n");
    for c in crates {
        lock.push_str(&format!(
            "\n[[package]]\nname = \"{}\"\nversion = \"{}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{}\"\n",
            c.name,
            c.version,
            sha256(&c.bytes)
        ));
    }
    fs::write(dir.join("Cargo.lock"), lock).unwrap();
}

/// A project for `makesum --port` on made-up crates: its own empty cargo home, short
/// retry delays and timeouts, crates downloaded from `crate_base`.
struct Fake {
    p: Project,
    port: Utf8PathBuf,
    distdir: Utf8PathBuf,
    cache: Utf8PathBuf,
    crates: Vec<FakeCrate>,
}

impl Fake {
    fn new(crate_base: &str, crates: &[(&str, &str)]) -> Fake {
        let mut p = Project::new(&format!(
            "[makesum]\ncrate_url = \"{crate_base}/{{name}}/{{version}}\"\nretries = 2\nretry_delay_ms = 10\ntimeout_secs = 5\n"
        ));
        let crates: Vec<FakeCrate> =
            crates.iter().enumerate().map(|(i, (n, v))| FakeCrate::new(n, v, 3000 + 1000 * i)).collect();
        let port = p.scratch.path.join("port");
        fake_port(&port, &crates);
        let home = p.scratch.path.join("cargo-home");
        let cache = home.join("registry/cache/index.crates.io-test");
        fs::create_dir_all(&cache).unwrap();
        p.env.push(("CARGO_HOME".into(), home.to_string()));
        let distdir = p.scratch.path.join("distfiles");
        Fake { p, port, distdir, cache, crates }
    }

    fn makesum(&self, extra: &[&str]) -> test_support::Run {
        let mut args = vec!["makesum", "--port", self.port.as_str(), "--distdir", self.distdir.as_str()];
        args.extend_from_slice(extra);
        self.p.run(&args)
    }

    fn in_distdir(&self, c: &FakeCrate) -> Utf8PathBuf {
        self.distdir.join(c.distname())
    }

    fn temps(&self) -> Vec<String> {
        fs::read_dir(self.distdir.join("rust/crates"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp."))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn body(distinfo: &str) -> Vec<&str> {
    distinfo.lines().filter(|l| !l.starts_with("TIMESTAMP = ")).collect()
}

fn ripgrep_port(p: &Project, with_lock: bool, with_distinfo: bool) -> Utf8PathBuf {
    let sample = data().join("ports/ripgrep-15.1.0");
    let port = p.scratch.path.join("ripgrep");
    fs::create_dir_all(&port).unwrap();
    fs::write(port.join("Makefile"), RIPGREP_MAKEFILE).unwrap();
    fs::copy(sample.join("Makefile.crates"), port.join("Makefile.crates")).unwrap();
    if with_lock {
        fs::copy(sample.join("Cargo.lock"), port.join("Cargo.lock")).unwrap();
    }
    if with_distinfo {
        fs::copy(sample.join("distinfo"), port.join("distinfo")).unwrap();
    }
    port
}

fn sample_crate_lines() -> Vec<String> {
    let text = fs::read_to_string(data().join("ports/ripgrep-15.1.0/distinfo")).unwrap();
    body(&text).into_iter().filter(|l| l.contains("(rust/crates/")).map(str::to_owned).collect()
}

#[test]
fn ripgrep_sample_offline_reproduces_every_crate_line() {
    for (with_lock, with_distinfo) in [(true, false), (false, true)] {
        let mut p = Project::new("");
        p.env.push(("CARGO_HOME".into(), ripgrep_cargo_home().to_string()));
        let port = ripgrep_port(&p, with_lock, with_distinfo);
        let distdir = p.scratch.path.join("distfiles");
        let run = p.run(&["makesum", "--port", port.as_str(), "--distdir", distdir.as_str(), "--offline"]);
        run.code_is(2)
            .stderr_has("1 of 52 distfiles could not be had")
            .stderr_has("BurntSushi-ripgrep-15.1.0_GH0.tar.gz (the port's source, GitHub tag 15.1.0)")
            .stderr_has(
                "--offline forbids downloading it from https://codeload.github.com/BurntSushi/ripgrep/tar.gz/15.1.0",
            )
            .stderr_has("help: run without --offline");
        // Nothing is invented: no tarball, and the port's distinfo is as it was.
        assert!(!distdir.join("BurntSushi-ripgrep-15.1.0_GH0.tar.gz").exists());
        let original = fs::read(data().join("ports/ripgrep-15.1.0/distinfo")).unwrap();
        assert_eq!(fs::read(port.join("distinfo")).ok(), with_distinfo.then_some(original));
        // Every crate line of the sample, in its order, from the crates that were had.
        let partial = fs::read_to_string(p.state_dir().join("detached/makesum/distinfo.partial")).unwrap();
        assert_eq!(body(&partial), sample_crate_lines(), "verified against Cargo.lock: {with_lock}");
        let crates = fs::read_dir(distdir.join("rust/crates")).unwrap().count();
        assert_eq!(crates, 51);
    }
}

#[test]
fn ripgrep_tag_tarball_downloaded_comes_last() {
    let server = Server::start(Duration::ZERO);
    let tarball = FakeCrate::new("ripgrep-tarball", "15.1.0", 20_000).bytes;
    server.route("/BurntSushi/ripgrep/tar.gz/15.1.0", vec![Reply::Body(tarball.clone())]);
    let mut p =
        Project::new(&format!("[makesum]\ngithub_url = \"{}/{{account}}/{{project}}/tar.gz/{{tag}}\"\n", server.url()));
    p.env.push(("CARGO_HOME".into(), ripgrep_cargo_home().to_string()));
    let port = ripgrep_port(&p, true, false);
    let distdir = p.scratch.path.join("distfiles");
    p.run(&["makesum", "--port", port.as_str(), "--distdir", distdir.as_str()])
        .success()
        .stderr_has("warning: BurntSushi-ripgrep-15.1.0_GH0.tar.gz: nothing pins its checksum")
        .stderr_has("51 from cargo's cache, 1 downloaded");
    let distinfo = fs::read_to_string(port.join("distinfo")).unwrap();
    let mut expected = sample_crate_lines();
    expected.push(format!("SHA256 (BurntSushi-ripgrep-15.1.0_GH0.tar.gz) = {}", sha256(&tarball)));
    expected.push(format!("SIZE (BurntSushi-ripgrep-15.1.0_GH0.tar.gz) = {}", tarball.len()));
    assert_eq!(body(&distinfo), expected);
    assert_eq!(fs::read(distdir.join("BurntSushi-ripgrep-15.1.0_GH0.tar.gz")).unwrap(), tarball);
}

/// The example colibri with its port staged, distfiles in `distfiles/`, its crates in a
/// private cargo cache and the source archive made from the checkout.
fn colibri_project(makesum_extra: &str) -> Project {
    let mut p = Project::with_colibri(&format!(
        "[poudriere]\ndistfiles = \"distfiles\"\n\n[makesum]\nsource_from_checkout = true\noffline = true\n{makesum_extra}"
    ));
    let home = colibri_cargo_home(&p.scratch.path);
    p.env.push(("CARGO_HOME".into(), home.to_string()));
    p
}

/// `git archive --prefix=colibri/ v0.9.0 | gzip -n`, made here without the product.
fn colibri_archive(checkout: &Utf8Path, at: &Utf8Path) -> Vec<u8> {
    let tar = at.join("expected.tar");
    let out = Command::new("git")
        .args(["-C", checkout.as_str(), "archive", "--format=tar", "--prefix=colibri/", "-o", tar.as_str(), "v0.9.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("gzip").args(["-c", "-n", tar.as_str()]).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The distinfo lines the example colibri must get: its tag tarball first, then its
/// crates with their Cargo.lock checksums and the sizes cargo's cache has.
fn colibri_expected(p: &Project) -> (Vec<u8>, Vec<String>) {
    let archive = colibri_archive(&p.colibri(), &p.scratch.path);
    let mut lines = vec![
        format!("SHA256 (colibri-v0.9.0.tar.gz) = {}", sha256(&archive)),
        format!("SIZE (colibri-v0.9.0.tar.gz) = {}", archive.len()),
    ];
    let cache = p.scratch.path.join("cargo-home/registry/cache/index.crates.io-test");
    for (name, version, checksum) in lock_crates(&p.colibri().join("Cargo.lock")) {
        let file = format!("{name}-{version}.crate");
        let size = fs::metadata(cache.join(&file)).unwrap().len();
        lines.push(format!("SHA256 (rust/crates/{file}) = {checksum}"));
        lines.push(format!("SIZE (rust/crates/{file}) = {size}"));
    }
    (archive, lines)
}

#[test]
fn colibri_tag_tarball_is_made_from_the_checkout_and_listed_first() {
    let p = colibri_project("");
    p.run(&["port"]).success();
    p.run(&["makesum"])
        .success()
        .stderr_has("7 distfiles")
        .stderr_has("6 from cargo's cache, 0 downloaded, 1 made from the checkout");
    let (archive, expected) = colibri_expected(&p);
    let distinfo = fs::read_to_string(p.root.join("ports/sysutils/colibri/distinfo")).unwrap();
    assert!(distinfo.starts_with("TIMESTAMP = "), "{distinfo}");
    assert_eq!(body(&distinfo), expected);
    assert_eq!(fs::read(p.root.join("distfiles/colibri-v0.9.0.tar.gz")).unwrap(), archive);
    // What bulk reads.
    let out = &p.state()["records"]["makesum"]["last_success"]["outputs"];
    assert_eq!(out["distinfo"], "ports/sysutils/colibri/distinfo");
    assert_eq!(out["distdir"], p.root.join("distfiles").as_str());
    assert_eq!(out["distfiles"][0]["name"], "colibri-v0.9.0.tar.gz");
    assert_eq!(out["distfiles"][0]["size"], archive.len());
    assert_eq!(out["distfiles"][0]["sha256"], sha256(&archive));
    assert_eq!(out["distfiles"].as_array().unwrap().len(), 7);
    // Nothing half-made is left beside the distfiles.
    let names: Vec<String> = fs::read_dir(p.root.join("distfiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
}

#[test]
fn unchanged_input_leaves_distinfo_byte_identical() {
    let p = colibri_project("");
    p.run(&["port"]).success();
    p.run(&["makesum"]).success();
    let distinfo = p.root.join("ports/sysutils/colibri/distinfo");
    let before = fs::read(&distinfo).unwrap();
    let inode = fs::metadata(&distinfo).unwrap().ino();
    p.run(&["makesum"]).success().stderr_has("is unchanged (TIMESTAMP kept)");
    assert_eq!(fs::read(&distinfo).unwrap(), before);
    assert_eq!(fs::metadata(&distinfo).unwrap().ino(), inode, "distinfo was rewritten");

    // An old TIMESTAMP with the same lines stays, too.
    let text = String::from_utf8(before).unwrap();
    let old = format!("TIMESTAMP = 1700000000\n{}", text.split_once('\n').unwrap().1);
    fs::write(&distinfo, &old).unwrap();
    p.run(&["makesum"]).success();
    assert_eq!(fs::read_to_string(&distinfo).unwrap(), old);

    // And the pipeline sees nothing to do: writing distinfo does not make `port` stale.
    p.run(&["release", "--to", "makesum"]).success();
    p.run(&["release", "--to", "makesum"]).success().stderr_has("every stage is up to date");
}

#[test]
fn a_distfile_overwritten_at_the_same_size_makes_makesum_run_again() {
    let p = colibri_project("");
    p.run(&["release", "--to", "makesum"]).success();
    p.run(&["release", "--to", "makesum"]).success().stderr_has("every stage is up to date");
    // One crate overwritten in place in the distfiles directory: same size, same inode.
    let crates = p.root.join("distfiles/rust/crates");
    let mut names: Vec<_> = fs::read_dir(&crates).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let file = &names[0];
    let good = fs::read(file).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0xff;
    fs::OpenOptions::new().write(true).open(file).unwrap().write_all(&bad).unwrap();
    assert_eq!(fs::metadata(file).unwrap().len(), good.len() as u64);

    let run = p.run(&["release", "--to", "makesum"]);
    run.success().stderr_has("moved aside to");
    assert!(!run.stderr().contains("every stage is up to date"), "{}", run.stderr());
    assert_eq!(fs::read(file).unwrap(), good, "the damaged distfile was not replaced");
    p.run(&["release", "--to", "makesum"]).success().stderr_has("every stage is up to date");
}

/// The `cargo xtask ...` command a report printed after `label`, run as printed (by sh,
/// in the project, `cargo xtask` being the built binary).
fn run_printed(p: &Project, stderr: &str, label: &str) -> test_support::Run {
    let line = stderr
        .lines()
        .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{stderr}"));
    assert!(line.starts_with("cargo xtask "), "{line}");
    let script = line.replacen("cargo xtask", test_support::xtask_bin().as_str(), 1);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).current_dir(&p.root).env("CI", "1").env("NO_COLOR", "1");
    for (k, v) in &p.env {
        cmd.env(k, v);
    }
    let output = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    test_support::Run { desc: line, dir: p.root.clone(), output }
}

#[test]
fn garbage_in_the_staged_distinfo_names_the_commands_that_fix_it() {
    let p = colibri_project("");
    p.run(&["port"]).success();
    let staged = p.root.join("ports/sysutils/colibri/distinfo");
    let mut text = fs::read_to_string(&staged).unwrap();
    text.push_str("SHA256 (x.crate) = not-a-digest\n");
    fs::write(&staged, &text).unwrap();
    let run = p.run(&["makesum"]);
    run.code_is(2)
        .stderr_has(&format!("{staged}:"))
        .stderr_has("`not-a-digest` is not a SHA-256")
        .stderr_has("the staged copy is damaged; stage the port again from colibri: cargo xtask --config");
    // The commands work as printed, in their order.
    run_printed(&p, &run.stderr(), "stage the port again from colibri:").success();
    run_printed(&p, &run.stderr(), "then write its distinfo:").success().stderr_has("7 distfiles");

    // colibri's own distinfo damaged: the product's port is at fault.
    let source = p.colibri().join("packaging/freebsd/port/sysutils/colibri/distinfo");
    fs::write(&source, "garbage\n").unwrap();
    git(&p.colibri(), &["commit", "-qam", "a damaged distinfo"]);
    git(&p.colibri(), &["tag", "-f", "v0.9.0"]);
    p.run(&["port"]).success();
    p.run(&["makesum"]).code_is(1).stderr_has(&format!("colibri's own copy, {source}, is damaged too"));
}

#[test]
fn check_fails_with_a_diff_and_changes_nothing() {
    let p = colibri_project("");
    p.run(&["port"]).success();
    p.run(&["makesum"]).success();
    p.run(&["makesum", "--check"]).success().stderr_has("is current");
    let distinfo = p.root.join("ports/sysutils/colibri/distinfo");
    let good = fs::read_to_string(&distinfo).unwrap();
    let stale = good.replace("SIZE (rust/crates/memchr-2.8.3.crate) = ", "SIZE (rust/crates/memchr-2.8.3.crate) = 1");
    fs::write(&distinfo, &stale).unwrap();
    let state =
        fs::read(p.state_dir().join("runs").join(p.state()["id"].as_str().unwrap()).join("state.json")).unwrap();
    let run = p.run(&["makesum", "--check"]);
    run.code_is(1)
        .stderr_has("is stale")
        .stdout_has("-SIZE (rust/crates/memchr-2.8.3.crate) = 1")
        .stdout_has("+SIZE (rust/crates/memchr-2.8.3.crate) = ");
    assert_eq!(fs::read_to_string(&distinfo).unwrap(), stale, "--check changed distinfo");
    let after =
        fs::read(p.state_dir().join("runs").join(p.state()["id"].as_str().unwrap()).join("state.json")).unwrap();
    assert_eq!(state, after, "--check recorded something in the run");
    // The stage notices its distinfo was changed and puts it right.
    p.run(&["release", "--to", "makesum"]).success().stderr_has("[makesum] ok");
    assert_eq!(body(&fs::read_to_string(&distinfo).unwrap()), body(&good));
}

#[test]
fn without_a_port_run_it_says_which_stage_comes_first() {
    let p = Project::new("");
    p.run(&["makesum"]).code_is(2).stderr_has("run it first: cargo xtask --config pipeline.toml port");
    let p = colibri_project("");
    p.run(&["port"]).success();
    fs::remove_dir_all(p.root.join("ports/sysutils/colibri")).unwrap();
    p.run(&["makesum"])
        .code_is(2)
        .stderr_has("is gone")
        .stderr_has("stage it again: cargo xtask --config pipeline.toml port");
}

#[test]
fn dry_run_before_port_plans_from_the_checkout() {
    let p = colibri_project("");
    let run = p.run(&["makesum", "--dry-run"]);
    run.success()
        .stdout_has("planning from")
        .stdout_has(&format!("run     git -C {} archive --format=tar --prefix=colibri/", p.colibri()))
        .stdout_has(" v0.9.0\n")
        .stdout_has("run     gzip -n -f")
        .stdout_has("copy    ")
        .stdout_has("write   ");
    assert!(!p.root.join("distfiles").exists());
    assert!(!p.state_dir().join("current").exists());
}

#[test]
fn dry_run_says_what_comes_from_where_and_changes_nothing() {
    let f = Fake::new("http://127.0.0.1:9", &[("alpha", "1.0.0"), ("beta", "2.0.0"), ("gamma", "3.0.0")]);
    let [alpha, beta, _] = &f.crates[..] else { unreachable!() };
    fs::create_dir_all(f.distdir.join("rust/crates")).unwrap();
    fs::write(f.in_distdir(alpha), &alpha.bytes).unwrap();
    fs::write(f.cache.join(beta.file()), &beta.bytes).unwrap();
    let run = f.makesum(&["--dry-run"]);
    run.success()
        .stdout_has(&format!("check   1 distfiles already in {}", f.distdir))
        .stdout_has(&format!(
            "copy    {} -> {}/rust/crates/.beta-2.0.0.crate.tmp.PID.N",
            f.cache.join("beta-2.0.0.crate"),
            f.distdir
        ))
        .stdout_has(&format!(
            "fetch   http://127.0.0.1:9/gamma/3.0.0 -> {}/rust/crates/.gamma-3.0.0.crate.tmp.PID.N",
            f.distdir
        ))
        .stdout_has(&format!("write   {}/distinfo", f.port));
    assert_eq!(fs::read_dir(f.distdir.join("rust/crates")).unwrap().count(), 1);
    assert!(!f.port.join("distinfo").exists());
    // Offline, what cannot be had is named in the plan.
    f.makesum(&["--dry-run", "--offline"])
        .success()
        .stdout_has("rust/crates/gamma-3.0.0.crate (crate gamma 3.0.0) cannot be had");
}

#[test]
fn a_corrupted_crate_is_refused_and_quarantined() {
    let f = Fake::new("http://127.0.0.1:9", &[("alpha", "1.0.0"), ("beta", "2.0.0")]);
    let [alpha, beta] = &f.crates[..] else { unreachable!() };
    let mut bad = alpha.bytes.clone();
    bad[100] ^= 0xff;
    fs::create_dir_all(f.distdir.join("rust/crates")).unwrap();
    fs::write(f.in_distdir(alpha), &bad).unwrap();
    fs::write(f.cache.join(alpha.file()), &alpha.bytes).unwrap();
    fs::write(f.cache.join(beta.file()), &beta.bytes).unwrap();

    // A damaged copy in the distfiles directory is moved aside and replaced by a good one.
    f.makesum(&["--offline"])
        .success()
        .stderr_has("warning: rust/crates/alpha-1.0.0.crate:")
        .stderr_has(&format!(
            "has SHA-256 {}, but {} says {}",
            sha256(&bad),
            f.port.join("Cargo.lock"),
            sha256(&alpha.bytes)
        ))
        .stderr_has("moved aside to");
    assert_eq!(fs::read(f.in_distdir(alpha)).unwrap(), alpha.bytes);
    let quarantined = f.distdir.join(format!(".quarantine/alpha-1.0.0.crate.{}", &sha256(&bad)[..16]));
    assert_eq!(fs::read(&quarantined).unwrap(), bad);

    // When every copy is bad, nothing is kept under the distfile's name.
    fs::remove_file(f.in_distdir(alpha)).unwrap();
    let mut bad2 = alpha.bytes.clone();
    bad2[7] ^= 0x01;
    fs::write(f.cache.join(alpha.file()), &bad2).unwrap();
    f.makesum(&["--offline"])
        .code_is(1)
        .stderr_has("1 of 2 distfiles could not be had")
        .stderr_has("rust/crates/alpha-1.0.0.crate (crate alpha 1.0.0)")
        .stderr_has("cargo's cache holds a damaged copy")
        .stderr_has(&format!(
            "has SHA-256 {}, but {} says {}",
            sha256(&bad2),
            f.port.join("Cargo.lock"),
            sha256(&alpha.bytes)
        ))
        .stderr_has("a checksum mismatch means");
    assert!(!f.in_distdir(alpha).exists());
    assert!(f.distdir.join(format!(".quarantine/alpha-1.0.0.crate.{}", &sha256(&bad2)[..16])).exists());
    assert!(f.temps().is_empty(), "{:?}", f.temps());
}

#[test]
fn a_crate_missing_everywhere_is_listed_with_every_place_tried() {
    let f = Fake::new("http://127.0.0.1:9", &[("alpha", "1.0.0"), ("beta", "2.0.0"), ("gamma", "3.0.0")]);
    let beta = &f.crates[1];
    fs::write(f.cache.join(beta.file()), &beta.bytes).unwrap();
    let run = f.makesum(&["--offline"]);
    run.code_is(2)
        .stderr_has("2 of 3 distfiles could not be had")
        .stderr_has("rust/crates/alpha-1.0.0.crate (crate alpha 1.0.0)")
        .stderr_has("rust/crates/gamma-3.0.0.crate (crate gamma 3.0.0)")
        .stderr_has(&format!("- not in {}", f.distdir))
        .stderr_has("- not in cargo's cache (")
        .stderr_has("- --offline forbids downloading it from http://127.0.0.1:9/gamma/3.0.0");
    assert!(!run.stderr().contains("rust/crates/beta-2.0.0.crate (crate"), "beta was had");
    assert_eq!(fs::read(f.in_distdir(beta)).unwrap(), beta.bytes);
    assert!(!f.port.join("distinfo").exists());
}

#[test]
fn downloads_from_a_local_server_are_verified_and_placed() {
    let server = Server::start(Duration::from_millis(5));
    let f = Fake::new(&server.url(), &[("alpha", "1.0.0"), ("beta", "2.0.0"), ("gamma", "3.0.0")]);
    for c in &f.crates {
        server.route(&c.path(), vec![Reply::Body(c.bytes.clone())]);
    }
    // beta's first answer is cut off; the retry gets it whole.
    let beta = &f.crates[1];
    server.route(
        &beta.path(),
        vec![Reply::Truncated { body: beta.bytes.clone(), sent: 1000 }, Reply::Body(beta.bytes.clone())],
    );
    f.makesum(&[]).success().stderr_has("3 downloaded");
    for c in &f.crates {
        assert_eq!(fs::read(f.in_distdir(c)).unwrap(), c.bytes, "{}", c.name);
    }
    assert_eq!(server.hits(&beta.path()), 2);
    assert_eq!(server.hits(&f.crates[0].path()), 1);
    let distinfo = fs::read_to_string(f.port.join("distinfo")).unwrap();
    let expected: Vec<String> = f
        .crates
        .iter()
        .flat_map(|c| {
            [
                format!("SHA256 ({}) = {}", c.distname(), sha256(&c.bytes)),
                format!("SIZE ({}) = {}", c.distname(), c.bytes.len()),
            ]
        })
        .collect();
    assert_eq!(body(&distinfo), expected);
    assert!(f.temps().is_empty(), "{:?}", f.temps());
    // All present now: nothing is fetched again.
    f.makesum(&[]).success().stderr_has("3 already in place");
    assert_eq!(server.hits(&f.crates[0].path()), 1);
}

#[test]
fn download_failures_404_truncated_tampered_and_server_gone_are_listed() {
    let server = Server::start(Duration::ZERO);
    let f = Fake::new(&server.url(), &[("alpha", "1.0.0"), ("beta", "2.0.0"), ("gamma", "3.0.0"), ("delta", "4.0.0")]);
    let [alpha, beta, gamma, delta] = &f.crates[..] else { unreachable!() };
    server.route(&alpha.path(), vec![Reply::NotFound]);
    server.route(&beta.path(), vec![Reply::Truncated { body: beta.bytes.clone(), sent: 1500 }]);
    let mut tampered = gamma.bytes.clone();
    tampered[0] ^= 0x20;
    server.route(&gamma.path(), vec![Reply::Body(tampered.clone())]);
    server.route(&delta.path(), vec![Reply::Body(delta.bytes.clone())]);
    let run = f.makesum(&[]);
    run.code_is(1)
        .stderr_has("3 of 4 distfiles could not be had")
        .stderr_has(&format!("download {}/alpha/1.0.0: HTTP 404 Not Found", server.url()))
        .stderr_has(&format!(
            "download {}/beta/2.0.0: the body broke off after 1500 of {} bytes",
            server.url(),
            beta.bytes.len()
        ))
        .stderr_has("(tried 3 times)")
        .stderr_has(&format!(
            "the download from {}/gamma/3.0.0 has SHA-256 {}, but {} says {}",
            server.url(),
            sha256(&tampered),
            f.port.join("Cargo.lock"),
            sha256(&gamma.bytes)
        ));
    // A 404 is final; a cut-off body is tried again.
    assert_eq!(server.hits(&alpha.path()), 1);
    assert_eq!(server.hits(&beta.path()), 3);
    for c in [alpha, beta, gamma] {
        assert!(!f.in_distdir(c).exists(), "{} is under its final name", c.name);
    }
    assert_eq!(fs::read(f.in_distdir(delta)).unwrap(), delta.bytes);
    assert_eq!(
        fs::read(f.distdir.join(format!(".quarantine/gamma-3.0.0.crate.{}", &sha256(&tampered)[..16]))).unwrap(),
        tampered
    );
    assert!(f.temps().is_empty(), "{:?}", f.temps());

    // The server goes away: every missing crate is listed with the connection failure.
    let url = server.url();
    drop(server);
    let run = f.makesum(&[]);
    run.code_is(2).stderr_has("3 of 4 distfiles could not be had").stderr_has(&format!("download {url}/alpha/1.0.0: "));
    assert!(run.stderr().to_lowercase().contains("refused"), "{}", run.stderr());
    assert!(f.temps().is_empty(), "{:?}", f.temps());
}

#[test]
fn a_killed_download_never_leaves_a_file_under_the_final_name() {
    let server = Server::start(Duration::ZERO);
    let f = Fake::new(&server.url(), &[("alpha", "1.0.0")]);
    let alpha = &f.crates[0];
    server.route(&alpha.path(), vec![Reply::Stall { body: alpha.bytes.clone(), sent: 1000 }]);
    let mut child =
        f.p.command(&["makesum", "--port", f.port.as_str(), "--distdir", f.distdir.as_str()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    let start = Instant::now();
    while f.temps().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "no download started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!f.in_distdir(alpha).exists(), "a killed download left a file under the final name");

    // The next run cleans up what the killed one left and gets the file whole.
    server.route(&alpha.path(), vec![Reply::Body(alpha.bytes.clone())]);
    f.makesum(&[]).success();
    assert_eq!(fs::read(f.in_distdir(alpha)).unwrap(), alpha.bytes);
    assert!(f.temps().is_empty(), "{:?}", f.temps());
}

#[test]
fn crates_nothing_pins_are_refused_until_a_lock_is_given() {
    let f = Fake::new("http://127.0.0.1:9", &[("alpha", "1.0.0"), ("beta", "2.0.0")]);
    for c in &f.crates {
        fs::write(f.cache.join(c.file()), &c.bytes).unwrap();
    }
    let lock = f.p.scratch.path.join("elsewhere.lock");
    fs::rename(f.port.join("Cargo.lock"), &lock).unwrap();
    f.makesum(&["--offline"])
        .code_is(2)
        .stderr_has("2 crate(s) cannot be verified")
        .stderr_has("rust/crates/alpha-1.0.0.crate")
        .stderr_has("--lock PATH");
    assert!(!f.distdir.exists());
    f.makesum(&["--offline", "--lock", lock.as_str()]).success();
    assert!(f.port.join("distinfo").exists());
}

#[test]
fn an_unreadable_ca_file_is_named() {
    let server = Server::start(Duration::ZERO);
    let f = Fake::new(&server.url(), &[("alpha", "1.0.0")]);
    let pem = f.p.scratch.path.join("roots.pem");
    fs::write(&pem, "not a certificate\n").unwrap();
    let mut p = Project::new(&format!("[makesum]\ncrate_url = \"{}/{{name}}/{{version}}\"\n", server.url()));
    p.env = f.p.env.clone();
    p.env.push(("SSL_CERT_FILE".into(), pem.to_string()));
    let args = ["makesum", "--port", f.port.as_str(), "--distdir", f.distdir.as_str()];
    p.run(&args).code_is(2).stderr_has(&format!("{pem} (SSL_CERT_FILE) holds no certificates"));
    // Offline, no download needs it.
    let alpha = &f.crates[0];
    fs::write(f.cache.join(alpha.file()), &alpha.bytes).unwrap();
    p.run(&[&args[..], &["--offline"]].concat()).success();
}

#[test]
fn a_makefile_it_cannot_evaluate_names_the_variable_and_the_way_out() {
    let f = Fake::new("http://127.0.0.1:9", &[("alpha", "1.0.0")]);
    let makefile = f.port.join("Makefile");
    let text = fs::read_to_string(&makefile).unwrap();
    fs::write(&makefile, text.replace("DISTVERSION=\t1.0", "PORTVERSION=\t1.0\nDISTVERSION=\t${PORTVERSION:S/./-/}"))
        .unwrap();
    f.makesum(&["--offline"])
        .code_is(2)
        .stderr_has("cannot evaluate DISTVERSION")
        .stderr_has("${PORTVERSION:S/./-/}")
        .stderr_has("makesum.method = \"ports\"");
    fs::write(&makefile, text.replace("DISTFILES=\n", ".if defined(WITH_X)\nDISTFILES=\tx.tgz\n.endif\n")).unwrap();
    f.makesum(&["--offline"]).code_is(2).stderr_has("cannot evaluate DISTFILES: it is set inside a .if block");
}

#[test]
fn ports_method_runs_the_frameworks_makesum() {
    let mut p =
        colibri_project(&format!("method = \"ports\"\n\n[tools]\nmake = \"{}\"\n", simhost().join("makesum/make")));
    let site = p.scratch.path.join("site");
    let cache = p.scratch.path.join("cargo-home/registry/cache/index.crates.io-test");
    fs::create_dir_all(site.join("rust/crates")).unwrap();
    for e in fs::read_dir(&cache).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), site.join("rust/crates").as_std_path().join(e.file_name())).unwrap();
    }
    fs::write(site.join("colibri-v0.9.0.tar.gz"), b"the forge's archive").unwrap();
    let log = p.scratch.path.join("make.log");
    p.env.push(("STANDIN_MASTER_SITE".into(), site.to_string()));
    p.env.push(("STANDIN_LOG".into(), log.to_string()));
    p.run(&["port"]).success();
    let port = p.root.join("ports/sysutils/colibri");
    let distdir = p.root.join("distfiles");
    p.run(&["makesum", "--dry-run"]).success().stdout_has(&format!("makesum DISTDIR={distdir}"));
    p.run(&["makesum"]).success().stderr_has("7 distfiles");
    assert_eq!(fs::read_to_string(&log).unwrap(), format!("make -C {port} makesum DISTDIR={distdir}\n"));
    let out = &p.state()["records"]["makesum"]["last_success"]["outputs"];
    assert_eq!(out["method"], "ports");
    assert_eq!(out["distfiles"][0]["name"], "colibri-v0.9.0.tar.gz");
    assert_eq!(out["distfiles"][0]["sha256"], sha256(b"the forge's archive"));
    assert_eq!(out["distfiles"].as_array().unwrap().len(), 7);

    // make's failure shows with its own words.
    fs::remove_file(site.join("rust/crates/memchr-2.8.3.crate")).unwrap();
    fs::remove_file(distdir.join("rust/crates/memchr-2.8.3.crate")).unwrap();
    p.run(&["makesum"]).code_is(2).stderr_has("exited with status 1").stderr_has("Couldn't fetch it");
}

#[test]
fn demo_runs_makesum_for_real_on_the_example_colibri() {
    let s = scratch();
    let home = colibri_cargo_home(&s.path);
    let dir = s.path.join("demo");
    let out = Command::new(test_support::xtask_bin())
        .args(["demo", "--dir", dir.as_str(), "--no-qemu"])
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .env("CARGO_HOME", &home)
        .env_remove("MOTHER_BUILD_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}");
    assert!(stderr.contains("makesum  real: ") && stderr.contains("[makesum] ok"), "{stderr}");
    let distinfo = fs::read_to_string(dir.join("ports/sysutils/colibri/distinfo")).unwrap();
    assert_eq!(body(&distinfo).len(), 14, "{distinfo}");
    assert!(body(&distinfo)[0].starts_with("SHA256 (colibri-v0.9.0.tar.gz) = "), "{distinfo}");
    assert!(dir.join("distfiles/colibri-v0.9.0.tar.gz").is_file());
}
