//! The remote target (`HOST:/path`): rsync with --link-dest into a hidden directory, a
//! checksum comparison against the verified repository, a rename, and rsync's atomic
//! symlink replacement for `latest`. Every command goes through ssh; what publish relies
//! on in ssh, rsync and test(1): docs/reference/publish-tools.md.

use std::fs;

use anyhow::{Context, Result, anyhow, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::check::{self, Served};
use super::client::{self, ClientFiles};
use super::release::{Release, release_trust};
use super::verified::{Index, verify_version};
use super::versions::{self, is_version, to_prune};
use super::{PublishOutputs, Work};
use crate::config::Tool;
use crate::failure;
use crate::failure::Failure;
use crate::fsx;
use crate::proc::{CmdLine, Output};
use crate::sign::plural;
use crate::stage::{Cx, Plan, StageName, Step};

pub fn ssh(cx: &Cx, host: &str) -> CmdLine {
    CmdLine::tool(&cx.config().tools, Tool::ssh).arg(host).arg("--")
}

pub fn rsync(cx: &Cx) -> CmdLine {
    let tools = &cx.config().tools;
    CmdLine::tool(tools, Tool::rsync).args(["-e", tools.get(Tool::ssh)])
}

/// ssh's exit status for an error of its own, such as a host it cannot connect to
/// (ssh(1), EXIT STATUS). rsync passes its remote shell's status on when it is higher
/// than its own (rsync's cleanup.c, `_exit_cleanup`), so an rsync whose ssh could not
/// connect exits 255 too.
const SSH_ERROR: i32 = 255;

/// Runs a command that reaches `host` (ssh, or rsync through ssh) and returns its
/// stdout. A failure is the infrastructure's, not the release's: exit status 2.
pub fn run(cx: &Cx, host: &str, cmd: &CmdLine) -> Result<String> {
    crate::proc::check_interrupted()?;
    let out = cmd.output(&cx.log)?;
    if !out.success() {
        return Err(failed(cx, host, cmd, &out));
    }
    Ok(out.stdout_str())
}

/// The error for a remote command that failed: it names the host and the command, and
/// ends the program with exit status 2 (infrastructure).
fn failed(cx: &Cx, host: &str, cmd: &CmdLine, out: &Output) -> anyhow::Error {
    let error = if out.status == Some(SSH_ERROR) {
        Failure::new(format!("cannot reach {host}: {}", cmd.failure(out)))
            .help(format!("check that `{} {host} true` works from this machine", cx.config().tools.get(Tool::ssh)))
    } else {
        Failure::new(format!("a command on {host} failed: {}", cmd.failure(out)))
    };
    error.infrastructure().into()
}

/// The remote ABI directory's entries and what `latest` names (read-only). A directory
/// that is not there is an empty one (nothing published yet); a host that cannot be
/// reached, or a directory that cannot be read, is an error.
pub fn state(cx: &Cx, host: &str, dir: &str) -> Result<(Vec<String>, Option<String>)> {
    crate::proc::check_interrupted()?;
    let ls = ssh(cx, host).args(["ls", "-1a", &crate::proc::quote(dir)]);
    let out = ls.output(&cx.log)?;
    if !out.success() {
        if out.status == Some(SSH_ERROR) {
            return Err(failed(cx, host, &ls, &out));
        }
        // ls fails alike for a directory that is not there and one it cannot read;
        // test(1) tells them apart: 1 for false, more than 1 for an error.
        let exists = ssh(cx, host).args(["test", "-e", &crate::proc::quote(dir)]);
        let test = exists.output(&cx.log)?;
        return match test.status {
            Some(1) => Ok((Vec::new(), None)),
            Some(0) => Err(failed(cx, host, &ls, &out)),
            _ => Err(failed(cx, host, &exists, &test)),
        };
    }
    let entries: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
    let link = ssh(cx, host).args(["readlink", &crate::proc::quote(&format!("{dir}/latest"))]);
    let latest = link.output(&cx.log)?;
    if latest.status == Some(SSH_ERROR) {
        return Err(failed(cx, host, &link, &latest));
    }
    // readlink fails when there is no `latest` (nothing switched to yet).
    let latest = latest
        .success()
        .then(|| latest.stdout_str().trim().trim_end_matches('/').to_owned())
        .filter(|v| is_version(v) && !v.contains('/'));
    Ok((entries, latest))
}

fn commands(cx: &Cx, host: &str, root: &str, abi: &str, r: &Release) -> Result<RemoteCommands> {
    let dir = format!("{root}/{abi}");
    let stage = cx.stage_dir(StageName::Publish)?;
    let list = stage.join("files-from.txt");
    let partial = format!("{dir}/.{}.partial", r.version);
    // Content decides, not modification times (-rlp --checksum, no -t): a package
    // equal to the previous version's is hard-linked to it (--link-dest, given as an
    // absolute path: rsync 3.2 mishandles a relative one into a new directory).
    let mut copy = rsync(cx).args(["-rlp", "--checksum", "--files-from", list.as_str()]);
    if let Some(prev) = &r.previous {
        copy = copy.arg(format!("--link-dest={dir}/{prev}"));
    }
    let source = format!("{}/", r.sign.repo);
    let copy = copy.arg(&source).arg(format!("{host}:{partial}/"));
    let manifest = rsync(cx).args(["-a", r.manifest.as_str(), &format!("{host}:{partial}/manifest.json")]);
    let compare = rsync(cx)
        .args(["-rlp", "--checksum", "--dry-run", "--itemize-changes", "--files-from", list.as_str()])
        .arg(&source)
        .arg(format!("{host}:{partial}/"));
    let mkdir = ssh(cx, host).args(["mkdir", "-p", &crate::proc::quote(&dir)]);
    let rename =
        ssh(cx, host).args(["mv", &crate::proc::quote(&partial), &crate::proc::quote(&format!("{dir}/{}", r.version))]);
    let (link_dir, switch) = switch(cx, host, &dir)?;
    Ok(RemoteCommands { list, link_dir, mkdir, copy, manifest, compare, rename, switch })
}

/// The command that switches `latest` in the host's ABI directory `dir` to the symlink
/// made in the returned directory. rsync replaces a symlink by creating it under a
/// temporary name and renaming it: the switch is atomic on the remote host too.
fn switch(cx: &Cx, host: &str, dir: &str) -> Result<(Utf8PathBuf, CmdLine)> {
    let link_dir = cx.stage_dir(StageName::Publish)?.join("latest-link");
    let cmd = rsync(cx).args(["-l", link_dir.join("latest").as_str(), &format!("{host}:{dir}/")]);
    Ok((link_dir, cmd))
}

/// Makes the symlink `latest -> version` that the switch copies to the host.
fn latest_link(link_dir: &Utf8Path, version: &str) -> Result<()> {
    let _ = fs::remove_dir_all(link_dir);
    fs::create_dir_all(link_dir).with_context(|| format!("cannot create {link_dir}"))?;
    std::os::unix::fs::symlink(version, link_dir.join("latest"))
        .with_context(|| format!("cannot create {}", link_dir.join("latest")))
}

/// The commands of a remote publish.
struct RemoteCommands {
    list: Utf8PathBuf,
    link_dir: Utf8PathBuf,
    mkdir: CmdLine,
    copy: CmdLine,
    manifest: CmdLine,
    compare: CmdLine,
    rename: CmdLine,
    switch: CmdLine,
}

/// The versions on the host a rollback may choose from, and the one `latest` names.
pub fn rollback_choice(
    cx: &Cx,
    host: &str,
    root: &str,
    abi: &str,
    steps: &mut Plan,
) -> Result<(Vec<String>, Option<String>)> {
    let dir = format!("{root}/{abi}");
    steps.run(&ssh(cx, host).args(["ls", "-1a", &crate::proc::quote(&dir)]));
    let (entries, latest) = state(cx, host, &dir)?;
    Ok((versions::among(entries), latest))
}

pub fn plan_steps(cx: &Cx, host: &str, root: &str, abi: &str, work: &Work, steps: &mut Plan) -> Result<()> {
    match work {
        Work::Publish(r) => {
            let c = commands(cx, host, root, abi, r)?;
            steps
                .push(Step::Write { path: c.list.clone(), what: format!("{} to copy", plural(r.files.len(), "file")) });
            for cmd in [&c.mkdir, &c.copy, &c.manifest, &c.compare, &c.rename] {
                steps.run(cmd);
            }
            steps.note("the comparison must list no file: the remote copy equals the verified repository");
            client::plan_steps(cx, root, steps);
            steps.run(&c.switch);
            steps.note(format!("latest -> {}", r.version));
        }
        Work::Rollback { to, .. } => {
            check_remote_name(host, to)?;
            let copy = RollbackCopy::dir(cx)?;
            steps.run(&fetch_version(cx, host, root, abi, to, &copy));
            steps.check(format!("{}: verify it, as sign does (the copy is removed after)", copy.join(to)));
            steps.run(&switch(cx, host, &format!("{root}/{abi}"))?.1);
            steps.note(format!("latest -> {to}"));
        }
    }
    Ok(())
}

pub fn publish(
    cx: &Cx,
    host: &str,
    root: &str,
    abi: &str,
    r: Release,
    client: &ClientFiles,
    outputs: &mut PublishOutputs,
) -> Result<Served> {
    let c = commands(cx, host, root, abi, &r)?;
    let dir = format!("{root}/{abi}");
    let list: String = r.files.iter().map(|f| format!("{}\n", f.rel)).collect();
    fsx::write_atomic(&c.list, list.as_bytes())?;
    run(cx, host, &c.mkdir)?;
    let (entries, latest) = state(cx, host, &dir)?;
    if latest != r.previous {
        bail!(
            failure!(
                "`latest` on {host}:{dir} changed while this publish was planned (now {})",
                latest.as_deref().unwrap_or("nothing")
            )
            .help(format!("run `{}` again", cx.loaded.xtask("publish")))
        );
    }
    // Leftovers of interrupted publishes.
    for e in entries.iter().filter(|e| e.starts_with('.') && e.ends_with(".partial")) {
        run(cx, host, &ssh(cx, host).args(["rm", "-rf", &crate::proc::quote(&format!("{dir}/{e}"))]))?;
    }
    cx.say(format!(
        "copying to {host}:{dir} (unchanged files linked against {})",
        r.previous.as_deref().unwrap_or("nothing")
    ));
    run(cx, host, &c.copy)?;
    run(cx, host, &c.manifest)?;
    let differences = run(cx, host, &c.compare)?;
    let changed: Vec<&str> =
        differences.lines().filter(|l| l.starts_with(['<', '>', 'c', '*']) || l.starts_with("deleting")).collect();
    if !changed.is_empty() {
        bail!(
            "the copy on {host} differs from the verified repository {}; nothing was switched:\n  {}",
            r.sign.repo,
            changed.join("\n  ")
        );
    }
    run(cx, host, &c.rename)?;
    let stage = cx.stage_dir(StageName::Publish)?;
    let client_dir = stage.join("client");
    let _ = fs::remove_dir_all(&client_dir);
    client::write_files(cx, &client_dir, client)?;
    run(cx, host, &rsync(cx).args(["-a", &format!("{client_dir}/"), &format!("{host}:{root}/")]))?;
    latest_link(&c.link_dir, &r.version)?;
    run(cx, host, &c.switch)?;
    cx.say(format!("latest -> {} on {host} (was {})", r.version, r.previous.as_deref().unwrap_or("nothing")));
    let kept = versions::among(entries.into_iter().chain([r.version.clone()]));
    for old in to_prune(&kept, cx.config().publish.keep, &r.version) {
        run(cx, host, &ssh(cx, host).args(["rm", "-rf", &crate::proc::quote(&format!("{dir}/{old}"))]))?;
        cx.say(format!("removed the old version {old}"));
    }
    outputs.version = r.version.clone();
    outputs.previous = r.previous.clone();
    outputs.copied = r.files.iter().filter(|f| f.rel.contains('/')).count();
    let trust = release_trust(cx, Some(&r.sign))?;
    let meta = fs::read(r.sign.repo.join("meta.conf")).context("cannot read meta.conf")?;
    // What the previous publish recorded tells the old release apart.
    let previous = r.previous.as_ref().and_then(|prev| {
        let last = cx.run.run()?.state.record(StageName::Publish)?.last_success.as_ref()?;
        let out: PublishOutputs = last.outputs.parse().ok()?;
        (out.version == *prev && !out.data_sha256.is_empty()).then(|| (prev.clone(), out.data_sha256))
    });
    Ok(Served {
        version: r.version.clone(),
        catalogues: r.sign.catalogues.clone(),
        previous,
        meta,
        fetch: r.sign.packages.first().cloned().into_iter().collect(),
        trust,
    })
}

/// A copy of a remote version on this host, verified before a rollback switches to it,
/// and removed again whatever happens (a run directory never keeps a repository).
struct RollbackCopy {
    dir: Utf8PathBuf,
}

impl RollbackCopy {
    fn dir(cx: &Cx) -> Result<Utf8PathBuf> {
        Ok(cx.stage_dir(StageName::Publish)?.join("rollback"))
    }
}

impl Drop for RollbackCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// rsync of version `to` on the host into `copy`: every regular file, compared by
/// content. Symlinks are not copied, so a package that is one fails verification.
fn fetch_version(cx: &Cx, host: &str, root: &str, abi: &str, to: &str, copy: &Utf8Path) -> CmdLine {
    rsync(cx).args(["-r", "--checksum", "--delete", &format!("{host}:{root}/{abi}/{to}/"), &format!("{copy}/{to}/")])
}

/// A version name that can go into a remote command line as it is.
fn check_remote_name(host: &str, to: &str) -> Result<()> {
    if to.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)) {
        return Ok(());
    }
    bail!(
        failure!("cannot roll back to `{to}` on {host}: the name has characters a remote shell would interpret")
            .help("roll back to a version publish made")
    )
}

/// Switches `latest` on the host back to `to`, once a copy of `to` fetched from the host
/// verifies as sign verifies (signatures, every package's size and sum), as a local
/// rollback does.
pub fn rollback(
    cx: &Cx,
    host: &str,
    root: &str,
    abi: &str,
    to: &str,
    from: Option<&str>,
    outputs: &mut PublishOutputs,
) -> Result<Served> {
    check_remote_name(host, to)?;
    let copy = RollbackCopy { dir: RollbackCopy::dir(cx)? };
    let _ = fs::remove_dir_all(&copy.dir);
    fs::create_dir_all(&copy.dir).with_context(|| format!("cannot create {}", copy.dir))?;
    cx.say(format!("fetching {to} from {host} to verify it"));
    run(cx, host, &fetch_version(cx, host, root, abi, to, &copy.dir))?;
    let vdir = copy.dir.join(to);
    let trust = release_trust(cx, None)?;
    verify_version(&cx.config().repository.abi, &vdir, &trust, "", &Index::default()).map_err(|e| {
        anyhow!(
            "cannot roll back to {to} on {host}: {e:#}\nnothing was switched; latest still serves {}",
            from.unwrap_or("nothing")
        )
    })?;
    let served = Served::from_dir(&vdir, to, None, check::first_package(&vdir), trust)?;
    drop(copy);

    let (link_dir, switch) = switch(cx, host, &format!("{root}/{abi}"))?;
    latest_link(&link_dir, to)?;
    run(cx, host, &switch)?;
    cx.say(format!("rolled back on {host}: latest -> {to} (was {})", from.unwrap_or("nothing")));
    outputs.version = to.to_owned();
    outputs.previous = from.map(str::to_owned);
    Ok(served)
}
