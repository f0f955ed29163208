//! The helpers xtask's tests and benchmarks share (a dev-only crate, never published).
//!
//! At the top: a scratch project with its own pipeline.toml and state ([`Project`]), the
//! example colibri as a real git checkout, running the built xtask binary ([`Run`]),
//! and the repository's paths. Then, by area:
//! - [`repo`]: copies of the real pkg samples, catalogue archives taken apart and put
//!   back together, the test key, synthetic repositories, signatures made by openssl;
//! - [`host`]: a stand-in FreeBSD host that `setup` provisions;
//! - [`nginx`]: a real nginx on 127.0.0.1 for one test;
//! - [`httpd`]: a small HTTP server on 127.0.0.1 that misbehaves on purpose;
//! - [`initramfs`]: the tiny Linux guest the QEMU gate tests boot, and its kernel;
//! - [`scale`]: repositories and poudriere builds the size of a full ports tree;
//! - [`pipeline`]: the whole pipeline on one scratch host (the end-to-end test and the
//!   no-op release benchmark);
//! - [`terminal`]: commands run on a pseudo-terminal, and the screen they leave;
//! - [`workflow`]: actionlint on a generated Forgejo workflow.
//!
//! Paths are computed from this crate's place in the repository (`crates/test-support`),
//! and the xtask binary from where cargo put the running test or benchmark.

// Test helpers start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

pub mod dsse;
pub mod host;
pub mod httpd;
pub mod initramfs;
pub mod nginx;
pub mod pipeline;
pub mod repo;
pub mod scale;
pub mod terminal;
pub mod workflow;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use camino::{Utf8Path, Utf8PathBuf};

/// One QEMU guest at a time across the tests: TCG takes a core, and these machines
/// have two.
pub static QEMU: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The built xtask binary: `CARGO_BIN_EXE_xtask` when cargo sets it while running a
/// test, else `xtask` in the directory above the running test's or benchmark's own
/// (cargo builds them into `target/PROFILE/deps/`, and the package's binary, which it
/// builds first for integration tests and benchmarks, into `target/PROFILE/`).
pub fn xtask_bin() -> Utf8PathBuf {
    static BIN: std::sync::OnceLock<Utf8PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_xtask") {
            return Utf8PathBuf::from_path_buf(bin.into()).expect("CARGO_BIN_EXE_xtask is not UTF-8");
        }
        let me = std::env::current_exe().expect("the running test's path");
        let bin = me.parent().and_then(|deps| deps.parent()).map(|profile| profile.join("xtask"));
        match bin.and_then(|b| Utf8PathBuf::from_path_buf(b).ok()) {
            Some(bin) if bin.is_file() => bin,
            _ => panic!(
                "no xtask binary beside the directory of {}: run the tests and benchmarks through cargo (cargo test -p xtask, cargo bench -p xtask)",
                me.display()
            ),
        }
    })
    .clone()
}

/// This repository's top directory.
pub fn repo_root() -> Utf8PathBuf {
    // This crate is crates/test-support.
    Utf8Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Utf8Path::parent).unwrap().to_owned()
}

/// `xtask/tests/data`: real files made by the real tools.
pub fn data() -> Utf8PathBuf {
    repo_root().join("xtask/tests/data")
}

/// `xtask/tests/fixtures/colibri`: the example colibri.
pub fn colibri_fixture() -> Utf8PathBuf {
    repo_root().join("xtask/tests/fixtures/colibri")
}

/// `simhost/`: the simulated FreeBSD host, stand-ins for the FreeBSD tools (shared with `cargo xtask demo`).
pub fn simhost() -> Utf8PathBuf {
    repo_root().join("simhost")
}

/// A temporary directory as a UTF-8 path (removed when dropped).
pub struct Scratch {
    _dir: tempfile::TempDir,
    /// The directory, canonical.
    pub path: Utf8PathBuf,
}

/// A new scratch directory.
pub fn scratch() -> Scratch {
    let dir = tempfile::Builder::new().prefix("mb-test-").tempdir().unwrap();
    let path = Utf8PathBuf::from_path_buf(dir.path().canonicalize().unwrap()).unwrap();
    Scratch { _dir: dir, path }
}

/// Copies a directory tree (regular files and directories; symlinks stay symlinks, as
/// `pkg repo --symlink` made them).
pub fn copy_tree(from: &Utf8Path, to: &Utf8Path) {
    fs::create_dir_all(to).unwrap();
    for entry in from.read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &dst).unwrap();
        } else if entry.file_type().unwrap().is_dir() {
            if entry.file_name() == "target" {
                continue;
            }
            copy_tree(entry.path(), &dst);
        } else {
            fs::copy(entry.path(), &dst).unwrap();
        }
    }
}

/// Runs git with fixed identity and dates, so commits and archives are reproducible.
pub fn git(dir: &Utf8Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=mother-build tests",
            "-c",
            "user.email=tests@clawdie.si",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
        .args(args)
        .env("GIT_AUTHOR_DATE", "1781913600 +0000")
        .env("GIT_COMMITTER_DATE", "1781913600 +0000")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?} in {dir} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Makes a git checkout of the example colibri at `dir`, committed and tagged v0.9.0.
pub fn make_colibri(dir: &Utf8Path) {
    copy_tree(&colibri_fixture(), dir);
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "colibri 0.9.0"]);
    git(dir, &["tag", "v0.9.0"]);
}

/// A scratch project: a directory with a pipeline.toml, its own state directory and
/// overlay, and (optionally) the example colibri beside it.
pub struct Project {
    pub scratch: Scratch,
    pub root: Utf8PathBuf,
    /// Extra environment for every command.
    pub env: Vec<(String, String)>,
}

impl Project {
    /// A project whose pipeline.toml is the repository's default with `extra` appended
    /// (TOML tables that add or replace settings).
    pub fn new(extra: &str) -> Project {
        let scratch = scratch();
        let root = scratch.path.join("mother-build");
        fs::create_dir_all(&root).unwrap();
        let p = Project { scratch, root, env: Vec::new() };
        p.write_config(extra);
        p
    }

    /// A project with the example colibri checked out at `../colibri`.
    pub fn with_colibri(extra: &str) -> Project {
        let p = Project::new(extra);
        make_colibri(&p.colibri());
        p
    }

    pub fn colibri(&self) -> Utf8PathBuf {
        self.scratch.path.join("colibri")
    }

    pub fn config_path(&self) -> Utf8PathBuf {
        self.root.join("pipeline.toml")
    }

    pub fn state_dir(&self) -> Utf8PathBuf {
        self.root.join("target/mother-build")
    }

    /// Writes pipeline.toml: `[pipeline]` pointing at this project's state, then `extra`.
    pub fn write_config(&self, extra: &str) {
        let text = format!("{}\n{extra}\n", base_config());
        fs::write(self.config_path(), text).unwrap();
    }

    /// Writes pipeline.toml exactly as given.
    pub fn write_raw_config(&self, text: &str) {
        fs::write(self.config_path(), text).unwrap();
    }

    /// A command running xtask in this project (plain output, no colour). Spawned
    /// rather than run with `output()`, it needs its stdout and stderr set: inherited,
    /// they print into the test suite's output, which libtest does not capture.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(xtask_bin());
        cmd.arg("--config").arg(self.config_path()).args(args);
        cmd.current_dir(&self.root);
        cmd.env("CI", "1").env("NO_COLOR", "1").env_remove("MOTHER_BUILD_CONFIG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs xtask and returns what it did.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.command(args);
        let output = cmd.output().unwrap();
        Run { desc: format!("xtask {}", args.join(" ")), dir: self.root.clone(), output }
    }

    /// The current run's state.json, with the outputs it names by digest (large ones,
    /// kept in `STATE_DIR/outputs/SHA256.json`) read into their records' `outputs`.
    pub fn state(&self) -> serde_json::Value {
        let id = fs::read_to_string(self.state_dir().join("current")).unwrap();
        let text = fs::read_to_string(self.state_dir().join("runs").join(id.trim()).join("state.json")).unwrap();
        let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(records) = state["records"].as_object_mut() {
            for rec in records.values_mut() {
                let Some(success) = rec.get_mut("last_success").and_then(|s| s.as_object_mut()) else { continue };
                let Some(file) = success.remove("outputs_file") else { continue };
                let path = self.state_dir().join("outputs").join(format!("{}.json", file["sha256"].as_str().unwrap()));
                let outputs = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
                success.insert("outputs".into(), outputs);
            }
        }
        state
    }

    /// A stage's status in the current run.
    pub fn stage_status(&self, stage: &str) -> String {
        self.state()["records"][stage]["status"].as_str().unwrap_or("absent").to_owned()
    }
}

/// The `[pipeline]` table every test project starts from.
pub fn base_config() -> String {
    "[pipeline]\nstate_dir = \"target/mother-build\"\n\n[port]\ncolibri = \"../colibri\"\n".to_owned()
}

/// What a command did; the assertions print everything on failure.
pub struct Run {
    pub desc: String,
    pub dir: Utf8PathBuf,
    pub output: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn report(&self) -> String {
        format!(
            "command: {}\ndirectory: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.desc,
            self.dir,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }

    #[track_caller]
    pub fn success(&self) -> &Run {
        assert!(self.output.status.success(), "expected success\n{}", self.report());
        self
    }

    #[track_caller]
    pub fn code_is(&self, code: i32) -> &Run {
        assert_eq!(self.code(), code, "unexpected exit status\n{}", self.report());
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(self.stderr().contains(needle), "stderr lacks {needle:?}\n{}", self.report());
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(self.stdout().contains(needle), "stdout lacks {needle:?}\n{}", self.report());
        self
    }
}

/// Writes an executable script.
pub fn write_script(path: &Utf8Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// PATH with `dirs` first.
pub fn path_with(dirs: &[&Utf8Path]) -> String {
    let mut parts: Vec<String> = dirs.iter().map(|d| d.to_string()).collect();
    parts.push(std::env::var("PATH").unwrap_or_default());
    parts.join(":")
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Waits until `f` holds, failing the test after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The process ids a stand-in appended to `file`, one a line.
pub fn pids(file: &Utf8Path) -> Vec<i32> {
    fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}
