//! The Forgejo workflow, generated from pipeline.toml (`cargo xtask ci-workflow`,
//! checked by `ci-workflow --check` in a tidy test): the shape FreeBSD's own package
//! cluster uses, spread over runners by Forgejo Actions.
//!
//! - `test`: the test suite on Linux (`.ci/run`).
//! - `build-NAME`, one per target, on the runner labelled with the target's `runner`:
//!   `setup --check --role builder` (a builder holds no key: its poudriere.conf names
//!   none, so bulk commits an unsigned repository), the shared stages before bulk (port,
//!   makesum, audit: each builder makes its own; they are deterministic from the colibri
//!   tag and pipeline.toml), then that target's bulk, then `bundle --stage bulk`,
//!   uploaded as an artifact.
//! - `sign-publish`, on the runner labelled `signing` (the only machine with the key),
//!   after every build job: `setup --check --role signing`, each bundle downloaded and
//!   `unbundle`d (checked file by file, refused when it is of another release), then sign
//!   (verifying each repository and signing it) and publish (every target's `latest`
//!   switched together, or none).
//! - `image-NAME`, one per target with `image = true`, on the target's runner after
//!   the signing job: iso and gate for that target from the run the signing job left.
//!
//! Every job keeps its run directory as an artifact (`if: always()`), so a failed job's
//! artifact holds the full logs. Values from pipeline.toml (target names, runner
//! labels) are written as YAML double-quoted scalars (JSON strings are valid ones).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::config::Loaded;
use crate::failure;
use crate::stage::StageName;
use crate::targets::Target;

/// Where the workflow lives, relative to the repository.
pub const WORKFLOW: &str = ".forgejo/workflows/release.yml";

/// The runner label of the signing job.
pub const SIGNING_RUNNER: &str = "signing";

const CHECKOUT: &str = "https://code.forgejo.org/actions/checkout@v4";
const UPLOAD: &str = "https://code.forgejo.org/actions/upload-artifact@v3";
const DOWNLOAD: &str = "https://code.forgejo.org/actions/download-artifact@v3";
const RUN_DIR: &str = "target/mother-build";
/// colibri's repository when the `COLIBRI_REPO` variable is not set.
const COLIBRI_REPO: &str = "https://forge.clawdie.si/clawdie/colibri.git";

/// A YAML double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A job id for a target: GitHub-style ids allow letters, digits, `-` and `_`, and
/// start with a letter or `_`.
fn job_id(prefix: &str, target: &str) -> String {
    let name: String = target.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("{prefix}-{name}")
}

struct Jobs {
    out: String,
}

impl Jobs {
    fn line(&mut self, indent: usize, text: &str) {
        let _ = writeln!(self.out, "{:indent$}{text}", "");
    }

    fn job(&mut self, id: &str, name: &str, needs: &[String], runs_on: &str) {
        self.out.push('\n');
        self.line(2, &format!("{id}:"));
        self.line(4, &format!("name: {}", q(name)));
        match needs {
            [] => {}
            [one] => self.line(4, &format!("needs: {one}")),
            many => self.line(4, &format!("needs: [{}]", many.join(", "))),
        }
        self.line(4, "if: github.event_name == 'workflow_dispatch'");
        self.line(4, &format!("runs-on: {}", q(runs_on)));
        self.line(4, "steps:");
        self.line(6, &format!("- uses: {CHECKOUT}"));
    }

    fn step_run(&mut self, name: &str, run: &str) {
        self.line(6, &format!("- name: {}", q(name)));
        self.line(8, &format!("run: {run}"));
    }

    /// The tag and the clone URL reach the shell as environment variables, never
    /// pasted into the script: whoever starts a release types the tag, and a `${{ }}`
    /// inside `run:` is substituted into the script text before the shell reads it.
    fn colibri_checkout(&mut self) {
        self.line(6, "- name: colibri checkout at the release tag");
        self.line(8, "env:");
        self.line(10, "COLIBRI_TAG: ${{ inputs.colibri_tag }}");
        self.line(10, &format!("COLIBRI_REPO: ${{{{ vars.COLIBRI_REPO || '{COLIBRI_REPO}' }}}}"));
        self.line(8, "run: |");
        self.line(10, "rm -rf ../colibri");
        self.line(10, "git clone --quiet --branch \"$COLIBRI_TAG\" --depth 1 -- \"$COLIBRI_REPO\" ../colibri");
    }

    fn download(&mut self, title: &str, artifact: &str, path: &str) {
        self.line(6, &format!("- name: {}", q(title)));
        self.line(8, &format!("uses: {DOWNLOAD}"));
        self.line(8, "with:");
        self.line(10, &format!("name: {}", q(artifact)));
        self.line(10, &format!("path: {path}"));
    }

    fn upload(&mut self, title: &str, artifact: &str, path: &str, always: bool) {
        self.line(6, &format!("- name: {}", q(title)));
        if always {
            self.line(8, "if: always()");
        }
        self.line(8, &format!("uses: {UPLOAD}"));
        self.line(8, "with:");
        self.line(10, &format!("name: {}", q(artifact)));
        self.line(10, &format!("path: {path}"));
    }

    /// Status on every outcome, then the run directory kept as `artifact`.
    fn keep_run(&mut self, artifact: &str) {
        self.line(6, "- name: Status");
        self.line(8, "if: always()");
        self.line(8, "run: cargo xtask status --json");
        self.upload("Keep the run directory (state, logs, outputs)", artifact, RUN_DIR, true);
    }
}

/// `cargo xtask --target NAME STAGE`, the target's name quoted for the shell when it
/// has to be (names are letters, digits, `.`, `_`, `-`: never).
fn for_target(t: &Target, rest: &str) -> String {
    format!("cargo xtask --target {} {rest}", crate::proc::quote(&t.name))
}

/// The workflow for `loaded`'s pipeline.
pub fn render(loaded: &Loaded) -> Result<String> {
    let stages = &loaded.config.pipeline.stages;
    let targets = loaded.targets();
    let mut ids = BTreeSet::new();
    for t in &targets {
        if !ids.insert(job_id("build", &t.name)) {
            bail!(
                failure!(
                    "targets give two build jobs the id {}: target names that differ only in `.`",
                    job_id("build", &t.name)
                )
                .help("rename one of them in [[targets]]")
                .usage()
            );
        }
    }
    let before_bulk: Vec<StageName> = stages.iter().copied().take_while(|s| *s != StageName::Bulk).collect();
    let has = |s: StageName| stages.contains(&s);

    let mut w = Jobs { out: String::new() };
    w.out.push_str(&format!(
        "# mother-build in Forgejo Actions. Generated from pipeline.toml by `cargo xtask ci-workflow`;\n\
         # do not edit (a tidy test fails when it is stale).\n\
         #\n\
         # `test` runs the test suite on Linux. A release (workflow_dispatch with the colibri tag)\n\
         # builds each target on a runner labelled with its `runner` ([[targets]] in pipeline.toml):\n\
         # the shared stages ({shared}) and its bulk, then bundles bulk's work. A builder holds\n\
         # no key (`setup --role builder`): its bulk commits an unsigned repository.\n\
         # Each builder runs the shared stages itself rather than receiving them: they are\n\
         # deterministic from the colibri tag and pipeline.toml, cheap next to bulk, and each\n\
         # bundle names the colibri commit and pipeline digest they came from, so the signing job\n\
         # refuses builders that disagree. One job on the `{SIGNING_RUNNER}` runner, the only\n\
         # machine holding the key, unbundles every target's work (each file checked against the\n\
         # bundle's digests; another release's bundle is refused), verifies and signs each\n\
         # repository, and publishes. Then iso and gate run per target with `image = true`. Each\n\
         # job keeps its run directory ({RUN_DIR}: state.json, logs, outputs) as an artifact, also\n\
         # when it fails. Setting up the runners: docs/runbook.md, \"Several targets\".\n\
         #\n\
         # Settings (repository or organisation variables):\n\
         #   LINUX_RUNS_ON    JSON list of runner labels for the test job   (default [\"docker\"])\n\
         #   COLIBRI_REPO     clone URL of colibri      (default {COLIBRI_REPO})\n\
         \n\
         name: release\n\
         \n\
         on:\n\
         \x20 workflow_dispatch:\n\
         \x20   inputs:\n\
         \x20     colibri_tag:\n\
         \x20       description: \"colibri tag to release (e.g. v0.9.0)\"\n\
         \x20       required: true\n\
         \x20 push:\n\
         \x20   branches: [main]\n\
         \n\
         env:\n\
         \x20 CI: \"true\"\n\
         \x20 NO_COLOR: \"1\"\n\
         \n\
         jobs:\n\
         \x20 test:\n\
         \x20   runs-on: ${{{{ fromJSON(vars.LINUX_RUNS_ON || '[\"docker\"]') }}}}\n\
         \x20   steps:\n\
         \x20     - uses: {CHECKOUT}\n\
         \x20     - name: Tests (installs nginx, QEMU, a kernel and the test crates first)\n\
         \x20       run: .ci/run\n",
        shared = before_bulk.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
    ));

    let mut build_jobs = Vec::new();
    for t in &targets {
        let id = job_id("build", &t.name);
        let mut what: Vec<&str> = before_bulk.iter().map(|s| s.as_str()).collect();
        if has(StageName::Bulk) {
            what.push("bulk");
        }
        w.job(&id, &format!("build {}: {}", t.name, what.join(", ")), &["test".into()], &t.runner);
        w.colibri_checkout();
        w.step_run("The builder is provisioned (it holds no key)", &for_target(t, "setup --check --role builder"));
        for s in &before_bulk {
            w.step_run(&format!("cargo xtask {s}"), &format!("cargo xtask {s}"));
        }
        if has(StageName::Bulk) {
            let bundle = format!("bulk-{}.bundle", t.name);
            w.step_run(&format!("bulk ({})", t.name), &for_target(t, "bulk"));
            w.step_run(
                "Bundle bulk's work for the signing host",
                &for_target(t, &format!("bundle --stage bulk --output {bundle}")),
            );
            w.upload("Hand the bundle to the signing host", &format!("bundle-{}", t.name), &bundle, false);
        }
        w.keep_run(&format!("run-{id}"));
        build_jobs.push(id);
    }

    let signing: Vec<StageName> =
        stages.iter().copied().filter(|s| matches!(s, StageName::Sign | StageName::Publish)).collect();
    let mut after_signing = build_jobs.clone();
    if !signing.is_empty() {
        let id = "sign-publish".to_owned();
        let what: Vec<&str> = signing.iter().map(|s| s.as_str()).collect();
        w.job(&id, &format!("{} (the signing host)", what.join(", ")), &build_jobs, SIGNING_RUNNER);
        w.step_run("The signing host is provisioned (the key, nginx)", "cargo xtask setup --check --role signing");
        if has(StageName::Bulk) {
            for (i, t) in targets.iter().enumerate() {
                let bundle = format!("bulk-{}.bundle", t.name);
                w.download(&format!("The bundle of {}", t.name), &format!("bundle-{}", t.name), ".");
                // The first starts this release's run (whatever run an earlier release
                // left here); the others join it (same colibri commit, same pipeline).
                let new_run = if i == 0 { " --new-run" } else { "" };
                w.step_run(
                    &format!("Unbundle {} (every file checked)", t.name),
                    &format!("cargo xtask unbundle{new_run} {bundle}"),
                );
            }
        }
        for s in &signing {
            w.step_run(&format!("cargo xtask {s}"), &format!("cargo xtask {s}"));
        }
        w.keep_run("run-sign-publish");
        after_signing = vec![id];
    }

    let image: Vec<StageName> =
        stages.iter().copied().filter(|s| matches!(s, StageName::Iso | StageName::Gate)).collect();
    if !image.is_empty() {
        for t in targets.iter().filter(|t| t.image) {
            let id = job_id("image", &t.name);
            let what: Vec<&str> = image.iter().map(|s| s.as_str()).collect();
            w.job(&id, &format!("{} ({})", what.join(", "), t.name), &after_signing, &t.runner);
            if after_signing.first().is_some_and(|j| j == "sign-publish") {
                w.download("The run so far", "run-sign-publish", RUN_DIR);
            }
            for s in &image {
                w.step_run(&format!("{s} ({})", t.name), &for_target(t, s.as_str()));
            }
            w.keep_run(&format!("run-{id}"));
        }
    }
    Ok(w.out)
}

/// `cargo xtask ci-workflow [--check] [--output FILE]`: writes the workflow, or checks
/// it is current.
pub fn run(loaded: &Loaded, opts: &crate::cli::CiWorkflow, ui: &crate::ui::Ui) -> Result<()> {
    let check = opts.check;
    let path = match &opts.output {
        Some(p) => crate::config::absolute(p)?,
        None => crate::project_root().join(WORKFLOW),
    };
    let text = render(loaded)?;
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current == text {
        ui.eprintln(&format!("{path} is current"));
        return Ok(());
    }
    if check {
        bail!(
            failure!("{path} is stale: pipeline.toml or mother-build changed since it was generated")
                .help(format!("regenerate it: {}", loaded.xtask("ci-workflow")))
                .usage()
        );
    }
    crate::fsx::write_atomic(&path, text.as_bytes())?;
    ui.eprintln(&format!("wrote {path}"));
    Ok(())
}
