//! The colibri checkout through git: what HEAD is, whether it is the release tag, and
//! whether it is clean. Fingerprints read HEAD from the files directly (no process, so
//! a no-op release stays fast); checks run git itself.

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::config::{Tool, Tools};
use crate::failure;
use crate::proc::CmdLine;
use crate::run::Log;

/// A git command in `dir`.
pub fn git(tools: &Tools, dir: &Utf8Path) -> CmdLine {
    CmdLine::tool(tools, Tool::git).arg("-C").arg(dir.as_str())
}

/// The commit HEAD points at, read from the repository files (no git process).
/// `None` when the layout is not one we read (the caller then falls back to git).
pub fn head_commit(checkout: &Utf8Path) -> Option<String> {
    let gitdir = git_dir(checkout)?;
    let head = std::fs::read_to_string(gitdir.join("HEAD")).ok()?;
    let head = head.trim();
    match head.strip_prefix("ref: ") {
        Some(reference) => resolve_ref(&gitdir, reference),
        None => is_sha(head).then(|| head.to_owned()),
    }
}

/// The URL of the checkout's `origin` remote, read from its git configuration (no git
/// process): the `url` of the `[remote "origin"]` section. `None` when there is none.
pub fn origin_url(checkout: &Utf8Path) -> Option<String> {
    let config = std::fs::read_to_string(common_dir(&git_dir(checkout)?).join("config")).ok()?;
    let mut in_origin = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_origin = line.trim_end_matches(']').trim_start_matches('[').trim() == "remote \"origin\"";
        } else if in_origin
            && let Some((key, value)) = line.split_once('=')
            && key.trim().eq_ignore_ascii_case("url")
        {
            return Some(value.trim().trim_matches('"').to_owned()).filter(|u| !u.is_empty());
        }
    }
    None
}

fn git_dir(checkout: &Utf8Path) -> Option<Utf8PathBuf> {
    let dotgit = checkout.join(".git");
    if dotgit.is_dir() {
        return Some(dotgit);
    }
    // A worktree or submodule: `.git` is a file naming the real directory.
    let text = std::fs::read_to_string(&dotgit).ok()?;
    let dir = Utf8PathBuf::from(text.trim().strip_prefix("gitdir: ")?);
    Some(if dir.is_absolute() { dir } else { checkout.join(dir) })
}

fn common_dir(gitdir: &Utf8Path) -> Utf8PathBuf {
    match std::fs::read_to_string(gitdir.join("commondir")) {
        Ok(text) => {
            let dir = Utf8PathBuf::from(text.trim());
            if dir.is_absolute() { dir } else { gitdir.join(dir) }
        }
        Err(_) => gitdir.to_owned(),
    }
}

fn resolve_ref(gitdir: &Utf8Path, reference: &str) -> Option<String> {
    for dir in [gitdir.to_owned(), common_dir(gitdir)] {
        if let Ok(text) = std::fs::read_to_string(dir.join(reference)) {
            let sha = text.trim();
            return is_sha(sha).then(|| sha.to_owned());
        }
        if let Ok(packed) = std::fs::read_to_string(dir.join("packed-refs")) {
            for line in packed.lines() {
                if let Some((sha, name)) = line.split_once(' ')
                    && name == reference
                    && is_sha(sha)
                {
                    return Some(sha.to_owned());
                }
            }
        }
    }
    None
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where the checkout stands relative to its release tag.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub head: String,
    /// The commit the tag names, if the tag exists.
    pub tag_commit: Option<String>,
    /// `git status --porcelain` lines (local changes, untracked files).
    pub changes: Vec<String>,
}

impl Checkout {
    /// Asks git about HEAD, the tag and local changes.
    pub fn inspect(tools: &Tools, dir: &Utf8Path, tag: &str, log: &Log) -> Result<Checkout> {
        let head = git(tools, dir)
            .args(["rev-parse", "--verify", "HEAD^{commit}"])
            .read(log)
            .with_context(|| format!("{dir} is not a git checkout with a commit"))?;
        let tag_ref = format!("refs/tags/{tag}^{{commit}}");
        let out = git(tools, dir).args(["rev-parse", "--verify", "--quiet", &tag_ref]).output(log)?;
        let tag_commit = out.success().then(|| out.stdout_str().trim().to_owned());
        let status = git(tools, dir).args(["status", "--porcelain", "--untracked-files=normal"]).read(log)?;
        let changes = status.lines().map(str::to_owned).collect();
        Ok(Checkout { head, tag_commit, changes })
    }

    /// Problems that make this checkout not a release checkout.
    pub fn problems(&self, tag: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.tag_commit {
            None => problems.push(format!("the tag {tag} does not exist")),
            Some(c) if *c != self.head => {
                problems.push(format!("HEAD is {} but the tag {tag} is {}", short(&self.head), short(c)))
            }
            _ => {}
        }
        if !self.changes.is_empty() {
            let shown: Vec<_> = self.changes.iter().take(5).map(|l| format!("    {l}")).collect();
            let more = if self.changes.len() > 5 {
                format!("\n    ... {} more", self.changes.len() - 5)
            } else {
                String::new()
            };
            problems.push(format!("the checkout has local changes:\n{}{more}", shown.join("\n")));
        }
        problems
    }
}

/// The first 12 characters of a commit id.
pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Fails unless `dir` looks like a checkout at all.
pub fn require_checkout(dir: &Utf8Path, what: &str) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            failure!("the colibri checkout {dir} does not exist")
                .help(format!("set {what} in pipeline.toml or pass --colibri PATH"))
        );
    }
    Ok(())
}
