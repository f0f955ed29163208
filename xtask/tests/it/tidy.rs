//! Tidy: the invariants docs/ARCHITECTURE.md states, kept true by tests.

use std::fs;
use std::process::Command;

use camino::Utf8Path;

use test_support::{Project, repo_root};

const STAGES: [&str; 9] = ["setup", "port", "makesum", "audit", "bulk", "sign", "publish", "iso", "gate"];

fn rust_files(dir: &Utf8Path, out: &mut Vec<camino::Utf8PathBuf>) {
    for entry in dir.read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            if entry.file_name() != "fixtures" && entry.file_name() != "target" {
                rust_files(path, out);
            }
        } else if path.extension() == Some("rs") {
            out.push(path.to_owned());
        }
    }
}

#[test]
fn every_stage_has_a_subcommand_a_module_and_a_docs_table() {
    let help = Project::new("").run(&["--help"]).success().stdout();
    let docs = fs::read_to_string(repo_root().join("docs/pipeline-toml.md")).unwrap();
    for stage in STAGES {
        assert!(help.contains(&format!("\n  {stage} ")), "--help lacks {stage}:\n{help}");
        assert!(repo_root().join(format!("xtask/src/{stage}.rs")).exists(), "no module xtask/src/{stage}.rs");
        assert!(docs.contains(&format!("## [{stage}]")), "docs/pipeline-toml.md lacks [{stage}]");
    }
    for cmd in ["release", "status"] {
        assert!(help.contains(&format!("\n  {cmd} ")), "--help lacks {cmd}");
    }
}

/// Every Rust file of the workspace: the xtask and the crates under crates/.
fn workspace_rust_files() -> Vec<camino::Utf8PathBuf> {
    let mut files = Vec::new();
    for dir in ["xtask", "crates"] {
        rust_files(&repo_root().join(dir), &mut files);
    }
    assert!(files.iter().any(|f| f.starts_with(repo_root().join("crates/pkgrepo/src"))), "crates/ was not searched");
    files
}

#[test]
fn every_source_file_says_what_it_is_for() {
    for f in workspace_rust_files() {
        let text = fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("//!"), "{f} does not start with a //! line saying what it is for");
    }
}

#[test]
fn no_test_is_ignored() {
    let needle = ["#[", "ignore"].concat();
    for f in workspace_rust_files() {
        assert!(!fs::read_to_string(&f).unwrap().contains(&needle), "{f} ignores a test");
    }
}

#[test]
fn the_staged_port_is_never_tracked() {
    let out = std::process::Command::new("git")
        .args(["-C", repo_root().as_str(), "ls-files", "--", "ports/sysutils/colibri", "ports/*/*"])
        .output()
        .unwrap();
    assert!(out.status.success(), "git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
    let tracked = String::from_utf8_lossy(&out.stdout);
    assert!(
        tracked.trim().is_empty(),
        "staged ports are tracked (the staged port is build output: docs/ARCHITECTURE.md, Invariants):\n{tracked}"
    );
    let ignore = fs::read_to_string(repo_root().join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "/ports/*"), ".gitignore must ignore the staged overlay");
}

#[test]
fn the_generated_docs_are_current() {
    Project::new("").run(&["docs", "--check"]).success();
}

#[test]
fn the_example_colibri_uses_only_crates_the_xtask_depends_on() {
    let ours = fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let fixture = fs::read_to_string(test_support::colibri_fixture().join("Cargo.lock")).unwrap();
    for block in fixture.split("[[package]]").skip(1) {
        if let Some(checksum) = block.lines().find(|l| l.starts_with("checksum = ")) {
            assert!(ours.contains(checksum), "the example colibri uses a crate the xtask does not:\n{block}");
        }
    }
}

#[test]
fn the_default_pipeline_loads() {
    let run = std::process::Command::new(test_support::xtask_bin())
        .args(["--config", repo_root().join("pipeline.toml").as_str(), "release", "--dry-run", "--to", "port"])
        .env("CI", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "the default pipeline.toml does not load ({}):\n{stderr}", run.status);
    assert!(!stderr.contains("pipeline.toml:"), "the default pipeline.toml does not load:\n{stderr}");
    assert!(stdout.contains("port"), "the dry run shows no `port` stage:\n{stdout}");
}

#[test]
fn the_workflow_is_generated_from_the_pipeline_and_current() {
    let run = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--config", repo_root().join("pipeline.toml").as_str(), "ci-workflow", "--check"])
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        ".forgejo/workflows/release.yml is stale; run `cargo xtask ci-workflow`:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let workflow = fs::read_to_string(repo_root().join(".forgejo/workflows/release.yml")).unwrap();
    assert!(workflow.contains("run: .ci/run"), "a Linux job runs the tests");
}

#[test]
fn the_committed_workflow_passes_actionlint() {
    // Its self-hosted runners: each target's `runner` (`freebsd` when pipeline.toml
    // declares no targets) and the signing runner.
    let pipeline: toml::Table =
        toml::from_str(&fs::read_to_string(repo_root().join("pipeline.toml")).unwrap()).unwrap();
    let mut labels: Vec<&str> = pipeline
        .get("targets")
        .and_then(|t| t.as_array())
        .map(|targets| targets.iter().map(|t| t.get("runner").and_then(|r| r.as_str()).unwrap_or("freebsd")).collect())
        .unwrap_or_else(|| vec!["freebsd"]);
    labels.push("signing");
    test_support::workflow::actionlint(&repo_root().join(".forgejo/workflows/release.yml"), &labels);
}

/// Where an error's help may be written as `help:` text: where errors are rendered.
const RENDERERS: [&str; 2] = ["xtask/src/failure.rs", "xtask/src/ui.rs"];

#[test]
fn errors_carry_help_as_data_not_as_text() {
    let root = repo_root();
    let files = product_sources();
    assert!(files.iter().any(|f| f.ends_with("engine.rs")), "no source files found under {root}");
    // `\n` then `help:` inside a string: help glued onto a message instead of `.help(...)`.
    let needle = ["\\n", "help:"].concat();
    let mut glued = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f).as_str();
        if RENDERERS.contains(&rel) {
            continue;
        }
        for (n, line) in fs::read_to_string(f).unwrap().lines().enumerate() {
            if line.contains(&needle) {
                glued.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        glued.is_empty(),
        "help written into error text (give it with failure!(...).help(...) or ResultExt::help; ui renders it):\n{}",
        glued.join("\n")
    );
}

/// The product's sources: the xtask and every crate but the tests' own helpers.
fn product_sources() -> Vec<camino::Utf8PathBuf> {
    let mut files = Vec::new();
    rust_files(&repo_root().join("xtask/src"), &mut files);
    if let Ok(crates) = repo_root().join("crates").read_dir_utf8() {
        for krate in crates {
            let krate = krate.unwrap();
            if krate.file_name() != "test-support" && krate.path().join("src").is_dir() {
                rust_files(&krate.path().join("src"), &mut files);
            }
        }
    }
    files
}

/// Clippy holds these (clippy.toml); this second guard names the file when someone
/// silences it.
#[test]
fn only_proc_starts_processes_and_only_ui_opens_the_terminal() {
    let proc_dir = repo_root().join("xtask/src/proc");
    let ui = repo_root().join("xtask/src/ui.rs");
    let files = product_sources();
    assert!(files.iter().any(|f| f.starts_with(&proc_dir)), "no sources under {proc_dir}");
    for f in files.iter().filter(|f| !f.starts_with(&proc_dir)) {
        let text = fs::read_to_string(f).unwrap();
        for needle in ["Command::new", "duct::cmd", "xshell::cmd", "Shell::cmd"] {
            assert!(!text.contains(needle), "{f} contains `{needle}`: only xtask/src/proc/ starts processes");
        }
        if *f != ui {
            let needle = "allow(clippy::disallowed_m";
            assert!(!text.contains(needle), "{f} allows what clippy.toml disallows (`{needle}...`)");
        }
    }
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        for needle in ["allow(clippy::print_", "allow(clippy::dbg_macro"] {
            assert!(!text.contains(needle), "{f} allows `{needle}`: only xtask/src/ui.rs writes to the terminal");
        }
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let p = Project::new("");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = p.run(&["completions", shell]);
        run.success();
        for word in ["release", "resume", "makesum"] {
            assert!(run.stdout().contains(word), "the {shell} completions lack {word}:\n{}", run.stdout());
        }
    }
    p.run(&["completions", "tcsh"]).code_is(2).stderr_has("possible values");
}

/// The suite's output stays quiet: a process a test spawns writes nowhere the test's
/// harness does not capture. (libtest captures what the tests print, not what their
/// children write to the inherited stderr.) Each `.spawn()` in the tests and their
/// helpers sets the child's stderr within the statement that spawns it.
#[test]
fn processes_the_tests_spawn_do_not_write_into_the_suites_output() {
    let mut files = Vec::new();
    rust_files(&repo_root().join("xtask/tests"), &mut files);
    rust_files(&repo_root().join("crates/test-support/src"), &mut files);
    let needle = [".spawn", "()"].concat();
    let mut loud = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if !line.contains(&needle) || line.trim_start().starts_with("//") {
                continue;
            }
            // The statement: back to the line after the previous `;`, `{` or `}`.
            let start = (0..n)
                .rev()
                .find(|i| {
                    let l = lines[*i].trim_end();
                    l.ends_with(';') || l.ends_with('{') || l.ends_with('}')
                })
                .map_or(0, |i| i + 1);
            let statement = lines[start..=n].join("\n");
            // A command made by a helper that sets stderr itself: `cmd.stderr(...)` on
            // an earlier line of the same function counts too.
            let earlier = lines[..n]
                .iter()
                .rev()
                .take_while(|l| !l.trim_start().starts_with("fn "))
                .any(|l| l.contains(".stderr("));
            if !statement.contains(".stderr(") && !earlier {
                loud.push(format!("{}:{}: {}", f.strip_prefix(repo_root()).unwrap_or(f), n + 1, line.trim()));
            }
        }
    }
    assert!(loud.is_empty(), "spawned with an inherited stderr (set .stderr(...)):\n{}", loud.join("\n"));
}
