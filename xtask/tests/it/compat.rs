//! The old entry points in scripts-compat/: shellcheck-clean POSIX sh, each old flag
//! mapped exactly onto `cargo xtask`, run from anywhere, the xtask's exit status passed
//! through, and an unknown flag refused with the known ones.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use camino::Utf8PathBuf;

use test_support::{Project, Scratch, path_with, repo_root, scratch, write_script, xtask_bin};

/// Every shim, and the subcommand it runs.
pub const SHIMS: [(&str, &str); 6] = [
    ("poudriere-setup.sh", "setup"),
    ("poudriere-build.sh", "bulk"),
    ("bhyve-test.sh", "gate"),
    ("run-bhyve-test.sh", "gate"),
    ("bhyve-pf-allow.sh", "gate"),
    ("stage-colibri-iso.sh", "iso"),
];

/// The flags each shim's unknown-flag error must list.
const KNOWN: [(&str, &[&str]); 6] = [
    (
        "poudriere-setup.sh",
        &[
            "--jail JAIL",
            "--version RELEASE",
            "--arch ARCH",
            "--ports TREE",
            "--branch BRANCH",
            "--zpool POOL",
            "--key PATH",
            "--pubkey PATH",
            "--check",
            "--write",
            "-n, --dry-run",
        ],
    ),
    ("poudriere-build.sh", &["ORIGIN", "--jail JAIL", "--ports TREE", "-z, --set SET", "-n, --dry-run"]),
    (
        "bhyve-test.sh",
        &[
            "--image PATH",
            "--memory SIZE",
            "--cpus N",
            "--name VM",
            "--firmware PATH",
            "--console PORT",
            "--pf-allow",
            "-n, --dry-run",
        ],
    ),
    ("run-bhyve-test.sh", &["--image PATH", "--timeout SECS", "-n, --dry-run"]),
    ("bhyve-pf-allow.sh", &["--bridge IF", "--anchor NAME", "--image PATH", "-n, --dry-run"]),
    ("stage-colibri-iso.sh", &["--root DIR", "--profile NAME", "-n, --dry-run"]),
];

/// The flags every shim takes.
const COMMON: [&str; 3] = ["--config PATH", "-o, --option K=V", "-h, --help"];

pub fn shims_dir() -> Utf8PathBuf {
    repo_root().join("scripts-compat")
}

/// A stand-in xtask that records where it ran, MOTHER_BUILD_CONFIG and its arguments,
/// then exits with RECORDER_EXIT (0 by default).
pub struct Recorder {
    pub scratch: Scratch,
    pub bin: Utf8PathBuf,
    /// Where the shims run from: a directory that is not the repository.
    pub elsewhere: Utf8PathBuf,
}

/// What the recorder saw.
#[derive(Debug, PartialEq)]
pub struct Recorded {
    pub cwd: Utf8PathBuf,
    pub config: String,
    pub argv: Vec<String>,
}

impl Recorder {
    pub fn new() -> Recorder {
        let scratch = scratch();
        let bin = scratch.path.join("bin/xtask");
        let record = scratch.path.join("record");
        write_script(
            &bin,
            &format!(
                "#!/bin/sh\n{{ pwd; printf '%s\\n' \"${{MOTHER_BUILD_CONFIG-(unset)}}\"; \
                 for a; do printf '%s\\n' \"$a\"; done; }} > '{record}'\nexit \"${{RECORDER_EXIT:-0}}\"\n"
            ),
        );
        let elsewhere = scratch.path.join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        Recorder { scratch, bin, elsewhere }
    }

    /// A shim (a path, or a name in scripts-compat/) with its arguments, run from
    /// `elsewhere` with MOTHER_BUILD_XTASK naming the recorder.
    pub fn command(&self, shim: &str, args: &[&str]) -> Command {
        let path = if shim.contains('/') { Utf8PathBuf::from(shim) } else { shims_dir().join(shim) };
        let mut cmd = Command::new(path);
        cmd.args(args)
            .current_dir(&self.elsewhere)
            .env("MOTHER_BUILD_XTASK", &self.bin)
            .env_remove("MOTHER_BUILD_CONFIG")
            .env_remove("RECORDER_EXIT")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, shim: &str, args: &[&str]) -> Output {
        let _ = fs::remove_file(self.scratch.path.join("record"));
        self.command(shim, args).output().unwrap()
    }

    /// What the recorder saw last, if it ran.
    pub fn recorded(&self) -> Option<Recorded> {
        let text = fs::read_to_string(self.scratch.path.join("record")).ok()?;
        let mut lines = text.lines();
        let cwd = lines.next().unwrap().into();
        let config = lines.next().unwrap().to_owned();
        Some(Recorded { cwd, config, argv: lines.map(str::to_owned).collect() })
    }

    /// Runs a shim and checks the exact argument vector it gave the xtask, that the
    /// xtask ran at the repository root, and the one line the shim printed.
    #[track_caller]
    pub fn check(&self, shim: &str, args: &[&str], argv: &[&str], line: &str) {
        let out = self.run(shim, args);
        let report = describe(shim, args, &out);
        assert!(out.status.success(), "the shim failed\n{report}");
        let seen = self.recorded().unwrap_or_else(|| panic!("the xtask did not run\n{report}"));
        assert_eq!(seen.argv, argv, "the xtask's arguments\n{report}");
        assert_eq!(seen.cwd, repo_root(), "the xtask must run at the repository root\n{report}");
        // The shim's own name, also when run through a link.
        let path = if shim.contains('/') { Utf8PathBuf::from(shim) } else { shims_dir().join(shim) };
        let real = Utf8PathBuf::from_path_buf(fs::canonicalize(&path).unwrap()).unwrap();
        let name = real.file_name().unwrap();
        let want = format!("{name}: now `cargo xtask {line}`\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), want, "the shim's one line on stderr\n{report}");
        assert!(out.stdout.is_empty(), "the shim printed on stdout\n{report}");
    }
}

pub fn describe(shim: &str, args: &[&str], out: &Output) -> String {
    format!(
        "command: {shim} {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn shell_files() -> Vec<Utf8PathBuf> {
    let mut files: Vec<Utf8PathBuf> = shims_dir()
        .read_dir_utf8()
        .unwrap()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension() == Some("sh"))
        .collect();
    files.sort();
    let mut want: Vec<Utf8PathBuf> = SHIMS.iter().map(|(s, _)| shims_dir().join(s)).collect();
    want.sort();
    assert_eq!(files, want, "scripts-compat/ holds exactly the shims this test knows");
    files.push(shims_dir().join("lib/shim.sh"));
    files
}

#[test]
fn every_shim_is_shellcheck_clean_posix_sh() {
    let files = shell_files();
    for f in &files[..SHIMS.len()] {
        let text = fs::read_to_string(f).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{f} must start with #!/bin/sh");
        let mode = fs::metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{f} must be executable");
    }
    // From elsewhere: scripts-compat/.shellcheckrc is found beside the files.
    let dir = scratch();
    let out = Command::new("shellcheck")
        .arg("-s")
        .arg("sh")
        .args(&files)
        .current_dir(&dir.path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run shellcheck ({e}); .ci/deps installs it"));
    assert!(
        out.status.success(),
        "shellcheck -s sh finds problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn poudriere_build_maps_the_plans_invocation_onto_bulk() {
    let r = Recorder::new();
    r.check(
        "poudriere-build.sh",
        &["--jail", "clawdie-amd64", "--ports", "clawdie", "sysutils/colibri"],
        &[
            "-o",
            "poudriere.jail=clawdie-amd64",
            "-o",
            "poudriere.tree=clawdie",
            "-o",
            "port.origin=sysutils/colibri",
            "bulk",
        ],
        "-o poudriere.jail=clawdie-amd64 -o poudriere.tree=clawdie -o port.origin=sysutils/colibri bulk",
    );
    r.check(
        "poudriere-build.sh",
        &["-z", "validation", "sysutils/colibri", "-n", "--jail=j2"],
        &["-o", "port.origin=sysutils/colibri", "-o", "poudriere.jail=j2", "bulk", "--set", "validation", "--dry-run"],
        "-o port.origin=sysutils/colibri -o poudriere.jail=j2 bulk --set validation --dry-run",
    );
    r.check(
        "poudriere-build.sh",
        &["--set=validation", "--dry-run"],
        &["bulk", "--set", "validation", "--dry-run"],
        "bulk --set validation --dry-run",
    );
    r.check("poudriere-build.sh", &[], &["bulk"], "bulk");
}

#[test]
fn poudriere_setup_maps_onto_setup() {
    let r = Recorder::new();
    let key = r.elsewhere.join("keys/new.key");
    r.check(
        "poudriere-setup.sh",
        &[
            "--jail",
            "j",
            "--version",
            "15.0-RELEASE",
            "--arch",
            "aarch64",
            "--ports",
            "t",
            "--branch",
            "2026Q4",
            "--zpool",
            "tank",
            "--key",
            "keys/new.key",
            "--pubkey",
            "/etc/k.pub",
            "--check",
        ],
        &[
            "-o",
            "poudriere.jail=j",
            "-o",
            "poudriere.version=15.0-RELEASE",
            "-o",
            "poudriere.arch=aarch64",
            "-o",
            "poudriere.tree=t",
            "-o",
            "poudriere.tree_branch=2026Q4",
            "-o",
            "poudriere.zpool=tank",
            "-o",
            &format!("signing.key={key}"),
            "-o",
            "signing.pubkey=/etc/k.pub",
            "setup",
            "--check",
        ],
        &format!(
            "-o poudriere.jail=j -o poudriere.version=15.0-RELEASE -o poudriere.arch=aarch64 -o poudriere.tree=t \
             -o poudriere.tree_branch=2026Q4 -o poudriere.zpool=tank -o signing.key={key} \
             -o signing.pubkey=/etc/k.pub setup --check"
        ),
    );
    r.check("poudriere-setup.sh", &["--write", "-n"], &["setup", "--write", "--dry-run"], "setup --write --dry-run");
    r.check("poudriere-setup.sh", &["--dry-run"], &["setup", "--dry-run"], "setup --dry-run");
}

#[test]
fn bhyve_test_maps_onto_the_bhyve_gate() {
    let r = Recorder::new();
    let image = r.elsewhere.join("out/clawdie.iso");
    let fw = r.elsewhere.join("BHYVE_UEFI.fd");
    r.check(
        "bhyve-test.sh",
        &[
            "--image",
            "./out/clawdie.iso",
            "--memory",
            "4G",
            "--cpus",
            "4",
            "--name",
            "iso-test",
            "--firmware=BHYVE_UEFI.fd",
            "--console",
            "com2",
            "--pf-allow",
            "-n",
        ],
        &[
            "-o",
            "gate.memory=4G",
            "-o",
            "gate.cpus=4",
            "-o",
            "gate.vm_name=iso-test",
            "-o",
            &format!("gate.bhyve.firmware={fw}"),
            "-o",
            "gate.bhyve.console=com2",
            "gate",
            "--backend",
            "bhyve",
            "--image",
            image.as_str(),
            "--pf-allow",
            "--dry-run",
        ],
        &format!(
            "-o gate.memory=4G -o gate.cpus=4 -o gate.vm_name=iso-test -o gate.bhyve.firmware={fw} \
             -o gate.bhyve.console=com2 gate --backend bhyve --image {image} --pf-allow --dry-run"
        ),
    );
    r.check("bhyve-test.sh", &[], &["gate", "--backend", "bhyve"], "gate --backend bhyve");
}

#[test]
fn run_bhyve_test_maps_onto_the_gate() {
    let r = Recorder::new();
    r.check(
        "run-bhyve-test.sh",
        &["--timeout", "600", "--image", "/srv/clawdie.iso", "--dry-run"],
        &["-o", "gate.timeout_secs=600", "gate", "--image", "/srv/clawdie.iso", "--dry-run"],
        "-o gate.timeout_secs=600 gate --image /srv/clawdie.iso --dry-run",
    );
    r.check("run-bhyve-test.sh", &[], &["gate"], "gate");
}

#[test]
fn bhyve_pf_allow_maps_onto_the_gate_with_pf() {
    let r = Recorder::new();
    r.check(
        "bhyve-pf-allow.sh",
        &["--bridge", "bridge1", "--anchor", "mother-build/iso", "--image", "a.iso", "-n"],
        &[
            "-o",
            "gate.bhyve.bridge=bridge1",
            "-o",
            "gate.bhyve.pf_anchor=mother-build/iso",
            "gate",
            "--backend",
            "bhyve",
            "--pf-allow",
            "--image",
            r.elsewhere.join("a.iso").as_str(),
            "--dry-run",
        ],
        &format!(
            "-o gate.bhyve.bridge=bridge1 -o gate.bhyve.pf_anchor=mother-build/iso gate --backend bhyve --pf-allow \
             --image {} --dry-run",
            r.elsewhere.join("a.iso")
        ),
    );
}

#[test]
fn stage_colibri_iso_maps_onto_iso() {
    let r = Recorder::new();
    r.check(
        "stage-colibri-iso.sh",
        &["--root", "iso/root", "--profile", "validation", "--dry-run"],
        &["-o", &format!("iso.root={}/iso/root", r.elsewhere), "iso", "--profile", "validation", "--dry-run"],
        &format!("-o iso.root={}/iso/root iso --profile validation --dry-run", r.elsewhere),
    );
    r.check(
        "stage-colibri-iso.sh",
        &["--root", "."],
        &["-o", &format!("iso.root={}", r.elsewhere), "iso"],
        &format!("-o iso.root={} iso", r.elsewhere),
    );
}

#[test]
fn every_shim_passes_config_and_settings_on_and_quotes_what_needs_it() {
    let r = Recorder::new();
    for (shim, sub) in SHIMS {
        let out =
            r.run(shim, &["--config", "my pipeline.toml", "-o", "gate.timeout_secs=60", "--option=bulk.prebuilt=\"\""]);
        assert!(out.status.success(), "{}", describe(shim, &[], &out));
        let argv = &r.recorded().unwrap().argv;
        let config = r.elsewhere.join("my pipeline.toml");
        assert_eq!(
            &argv[..6],
            ["--config", config.as_str(), "-o", "gate.timeout_secs=60", "-o", "bulk.prebuilt=\"\""],
            "{shim}"
        );
        assert_eq!(argv[6], sub, "{shim}");
        let line = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            line.starts_with(&format!(
                "{shim}: now `cargo xtask --config '{config}' -o gate.timeout_secs=60 -o 'bulk.prebuilt=\"\"' {sub}"
            )),
            "{line}"
        );
    }
    // Values the xtask would read as something other than a string are quoted as TOML
    // strings; the line on stderr quotes words for sh.
    r.check(
        "poudriere-build.sh",
        &["--jail", "2026", "--ports", "it's \"x\"", "--set", "a b"],
        &["-o", "poudriere.jail=\"2026\"", "-o", "poudriere.tree=\"it's \\\"x\\\"\"", "bulk", "--set", "a b"],
        "-o 'poudriere.jail=\"2026\"' -o 'poudriere.tree=\"it'\\''s \\\"x\\\"\"' bulk --set 'a b'",
    );
    r.check(
        "poudriere-setup.sh",
        &["--jail", "true", "--zpool", "inf", "--arch", "1.5"],
        &["-o", "poudriere.jail=\"true\"", "-o", "poudriere.zpool=\"inf\"", "-o", "poudriere.arch=\"1.5\"", "setup"],
        "-o 'poudriere.jail=\"true\"' -o 'poudriere.zpool=\"inf\"' -o 'poudriere.arch=\"1.5\"' setup",
    );
}

#[test]
fn a_relative_mother_build_config_is_made_absolute() {
    let r = Recorder::new();
    let out = r.command("run-bhyve-test.sh", &[]).env("MOTHER_BUILD_CONFIG", "conf/p.toml").output().unwrap();
    assert!(out.status.success(), "{}", describe("run-bhyve-test.sh", &[], &out));
    assert_eq!(r.recorded().unwrap().config, r.elsewhere.join("conf/p.toml").as_str());
    r.run("run-bhyve-test.sh", &[]);
    assert_eq!(r.recorded().unwrap().config, "(unset)");
}

#[test]
fn a_shim_works_through_a_symlink_from_anywhere() {
    let r = Recorder::new();
    let link = r.scratch.path.join("bin/poudriere-build");
    std::os::unix::fs::symlink(shims_dir().join("poudriere-build.sh"), &link).unwrap();
    r.check(link.as_str(), &["-n"], &["bulk", "--dry-run"], "bulk --dry-run");
    // Run by sh with a relative path, as `sh scripts-compat/x.sh` would be.
    let out = Command::new("sh")
        .args(["scripts-compat/poudriere-setup.sh", "--check"])
        .current_dir(repo_root())
        .env("MOTHER_BUILD_XTASK", &r.bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe("sh scripts-compat/poudriere-setup.sh", &["--check"], &out));
    assert_eq!(r.recorded().unwrap().argv, ["setup", "--check"]);
}

#[test]
fn without_mother_build_xtask_a_shim_runs_cargo_xtask_at_the_root() {
    let r = Recorder::new();
    // A cargo that records: the real one inside `cargo test` would wait for the build lock.
    let bin = r.scratch.path.join("cargo-bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&r.bin, bin.join("cargo")).unwrap();
    let out = r
        .command("bhyve-test.sh", &["-n"])
        .env_remove("MOTHER_BUILD_XTASK")
        .env("PATH", path_with(&[&bin]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe("bhyve-test.sh", &["-n"], &out));
    let seen = r.recorded().unwrap();
    assert_eq!(seen.argv, ["xtask", "gate", "--backend", "bhyve", "--dry-run"]);
    assert_eq!(seen.cwd, repo_root());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "bhyve-test.sh: now `cargo xtask gate --backend bhyve --dry-run`\n"
    );
}

#[test]
fn a_missing_cargo_or_xtask_is_an_error_naming_it() {
    let r = Recorder::new();
    let out =
        r.command("bhyve-test.sh", &[]).env_remove("MOTHER_BUILD_XTASK").env("PATH", "/usr/bin:/bin").output().unwrap();
    let report = describe("bhyve-test.sh", &[], &out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bhyve-test.sh: error: cargo is not on PATH"), "{report}");
    let out =
        r.command("bhyve-test.sh", &[]).env("MOTHER_BUILD_XTASK", r.scratch.path.join("nothing")).output().unwrap();
    let report = describe("bhyve-test.sh", &[], &out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an executable file"), "{report}");
    assert!(r.recorded().is_none());
}

#[test]
fn the_exit_status_is_the_xtasks() {
    let r = Recorder::new();
    for code in ["0", "1", "3", "130"] {
        let out = r.command("stage-colibri-iso.sh", &[]).env("RECORDER_EXIT", code).output().unwrap();
        assert_eq!(out.status.code().unwrap().to_string(), code, "{}", describe("stage-colibri-iso.sh", &[], &out));
    }
}

/// The real xtask behind a shim, on a scratch project.
fn real(p: &Project, shim: &str, args: &[&str]) -> Output {
    Command::new(shims_dir().join(shim))
        .args(args)
        .current_dir(&p.root)
        .env("MOTHER_BUILD_XTASK", xtask_bin())
        .env("MOTHER_BUILD_CONFIG", p.config_path())
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_real_xtask_behind_a_shim_keeps_its_exit_status() {
    let p = Project::new("");
    let args = ["--dry-run", "--jail", "clawdie-amd64", "--ports", "clawdie", "sysutils/colibri"];
    let out = real(&p, "poudriere-build.sh", &args);
    let report = describe("poudriere-build.sh", &args, &out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "poudriere bulk -j clawdie-amd64 -p clawdie -O clawdie_overlay -B dry-run -b latest sysutils/colibri"
        ),
        "{report}"
    );

    // A setting the xtask refuses: its usage status, 2, and its message.
    let args = ["--jail", "a.b", "sysutils/colibri"];
    let out = real(&p, "poudriere-build.sh", &args);
    let report = describe("poudriere-build.sh", &args, &out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("jail name `a.b`"), "{report}");

    // A boot that fails: the gate's 1 (the image failed), through --config given to the
    // shim relative to where it runs.
    let args = [
        "--config",
        "pipeline.toml",
        "-o",
        "gate.backend=command",
        "-o",
        "gate.command.program=[\"false\"]",
        "--timeout",
        "30",
    ];
    let mut cmd = Command::new(shims_dir().join("run-bhyve-test.sh"));
    cmd.args(args).current_dir(&p.root).env("MOTHER_BUILD_XTASK", xtask_bin()).env("CI", "1");
    let out = cmd.env_remove("MOTHER_BUILD_CONFIG").stdin(Stdio::null()).output().unwrap();
    let report = describe("run-bhyve-test.sh", &args, &out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the console program exited with status 1 before printing anything"),
        "{report}"
    );
    assert!(p.state_dir().join("current").exists(), "the run lives in the scratch project\n{report}");
}

#[test]
fn an_unknown_flag_exits_2_listing_the_known_ones() {
    let r = Recorder::new();
    for (shim, known) in KNOWN {
        let out = r.run(shim, &["--no-such-flag"]);
        let report = describe(shim, &["--no-such-flag"], &out);
        assert_eq!(out.status.code(), Some(2), "{report}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("{shim}: error: unknown flag `--no-such-flag`\n{shim}: known flags:\n")),
            "{report}"
        );
        let listed: Vec<&str> = stderr.lines().filter_map(|l| l.strip_prefix("  ")).collect();
        let want: Vec<&str> = known.iter().chain(COMMON.iter()).copied().collect();
        assert_eq!(listed, want, "the known flags, in the header's order\n{report}");
        assert!(r.recorded().is_none(), "the xtask ran\n{report}");
    }
}

#[test]
fn other_usage_errors_exit_2_and_run_nothing() {
    let r = Recorder::new();
    let cases: [(&str, &[&str], &str); 6] = [
        ("poudriere-build.sh", &["--jail"], "error: --jail needs a value"),
        ("poudriere-build.sh", &["--jail", "--ports", "p"], "error: --jail needs a value (got the flag `--ports`)"),
        ("poudriere-build.sh", &["--ports="], "error: --ports needs a value"),
        ("poudriere-build.sh", &["a/b", "c/d"], "error: one ORIGIN only (got `a/b` and `c/d`)"),
        ("run-bhyve-test.sh", &["clawdie.iso"], "error: unexpected argument `clawdie.iso`"),
        ("stage-colibri-iso.sh", &["-o", "iso.root"], "error: -o takes KEY=VALUE"),
    ];
    for (shim, args, want) in cases {
        let out = r.run(shim, args);
        let report = describe(shim, args, &out);
        assert_eq!(out.status.code(), Some(2), "{report}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(want), "{report}");
        assert!(r.recorded().is_none(), "the xtask ran\n{report}");
    }
}

#[test]
fn help_shows_the_usage_and_what_it_became() {
    let r = Recorder::new();
    for ((shim, sub), (_, known)) in SHIMS.iter().zip(KNOWN) {
        for args in [&["-h"][..], &["--help", "--no-such-flag"]] {
            let out = r.run(shim, args);
            let report = describe(shim, args, &out);
            assert_eq!(out.status.code(), Some(0), "{report}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.starts_with(&format!("{shim}: ")), "{report}");
            assert!(stdout.contains(&format!("Now `cargo xtask {sub}")), "{report}");
            for k in known.iter().chain(COMMON.iter()) {
                assert!(stdout.contains(&format!("\n  {k}  ")), "help lacks {k}\n{report}");
            }
            assert!(
                !stdout.contains("shellcheck") && !stdout.contains("set -u"),
                "help shows only the header\n{report}"
            );
            assert!(out.stderr.is_empty() && r.recorded().is_none(), "{report}");
        }
    }
}
