//! setup: provisions this host once for poudriere (not a release stage). Checks the host
//! (root, FreeBSD release, ZFS pool), installs poudriere, creates the signing key,
//! writes poudriere.conf and the validation set's make.conf, creates the jail, the ports
//! tree and the overlay tree when missing, loads vmm and installs the UEFI firmware for
//! the bhyve gate (`setup/vm.rs`), and sets nginx up to serve the repository
//! (`setup/nginx.rs`).
//!
//! `--role` says which machine this is ([`Role`]): one machine that does everything
//! (`all`, the default), a builder (everything but the key and nginx, and a
//! poudriere.conf that names no key: a builder never creates, checks or names one) or
//! the signing host (the key and nginx only).
//!
//! Every item is first inspected (read-only), so `--check` and `--dry-run` show exactly
//! what is ok, missing or different, and a second `setup` changes nothing. A file that
//! differs from what pipeline.toml asks for is never silently overwritten.

mod inspect;
mod nginx;
mod vm;

use inspect::inspect;
pub use inspect::release_number;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Setup;
use crate::config::{Loaded, Tool, TrustMode};
use crate::failure::{self, Class, Failure, ResultExt as _};
use crate::fingerprint::Fingerprint;
use crate::fsx;
use crate::poudriere::{self, Paths};
use crate::proc::{CmdLine, StreamOpts};
use crate::run::Log;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};

settings! {
    /// setup: provisioning the build host once (`cargo xtask setup`; not a release stage).
    /// The values it writes into poudriere.conf are in [poudriere] and [signing].
    pub struct SetupConfig {
        /// Refuse to provision unless running as root (poudriere, its jails and
        /// /usr/local/etc need root).
        pub require_root: bool = true,
        /// Install the packages setup needs when they are missing (`pkg install -y`):
        /// poudriere, nginx, and edk2-bhyve (the UEFI firmware) for a bhyve gate.
        pub install: bool = true,
        /// The package that provides poudriere (`poudriere` or `poudriere-devel`).
        pub package: String = "poudriere".into(),
        /// Provision bhyve for the boot gate: load vmm now and at boot (kld_list) and,
        /// with `gate.bhyve.boot = "uefi"`, install the UEFI firmware. Unset: when
        /// gate.backend is `bhyve`. Set it to false on a host that cannot run bhyve (a
        /// VPS without nested virtualisation) and boots the gate elsewhere or with
        /// another backend.
        pub vmm: Option<bool> = None,
    }
}

/// Which machine setup provisions, by what its jobs do (docs/runbook.md, "The runners").
/// The key is only ever on a machine that signs: a builder neither creates nor checks
/// one, and the poudriere.conf it gets names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// One machine that builds, signs and publishes: every item
    All,
    /// Builds and boots images (poudriere, its jail and trees, bhyve); holds no key: its
    /// poudriere.conf names none, so bulk's repository stays unsigned for the signing host
    Builder,
    /// Signs and publishes: the signing key (or command) and nginx; no poudriere, no bhyve
    Signing,
}

impl Role {
    /// Whether this machine runs poudriere (and the gate).
    pub fn builds(self) -> bool {
        self != Role::Signing
    }

    /// Whether this machine holds the key (or runs the signing command) and publishes.
    pub fn signs(self) -> bool {
        self != Role::Builder
    }

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Builder => "builder",
            Role::Signing => "signing",
        }
    }
}

/// Bits of the RSA signing key setup creates.
const KEY_BITS: &str = "4096";

/// What `setup` records (it runs outside any run, so nothing reads it yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupOutputs {
    /// Items that were already in place.
    pub ok: Vec<String>,
    /// Items setup created or changed.
    pub changed: Vec<String>,
}

/// Where one item stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Ok(String),
    Missing(String),
    Differs(String),
}

impl State {
    fn word(&self) -> &'static str {
        match self {
            State::Ok(_) => "ok",
            State::Missing(_) => "missing",
            State::Differs(_) => "differs",
        }
    }
    fn detail(&self) -> &str {
        match self {
            State::Ok(d) | State::Missing(d) | State::Differs(d) => d,
        }
    }
}

/// Something setup does to put an item in place.
#[derive(Debug, Clone)]
enum Action {
    /// A short command.
    Run(CmdLine),
    /// A long command (downloads, builds), streamed.
    Stream(CmdLine),
    Mkdir(Utf8PathBuf),
    /// Write a file (after copying the old one to `backup`).
    Write {
        path: Utf8PathBuf,
        text: String,
        backup: Option<Utf8PathBuf>,
        what: String,
    },
    /// Generate the key pair.
    GenerateKey {
        openssl: String,
        key: Utf8PathBuf,
        pubkey: Utf8PathBuf,
    },
    /// Write the public key of an existing private key.
    DerivePubkey {
        openssl: String,
        key: Utf8PathBuf,
        pubkey: Utf8PathBuf,
    },
    /// List (`list`) and create (`create`) unless `name` is listed: a jail or a tree.
    Ensure {
        list: CmdLine,
        create: CmdLine,
        name: String,
    },
    /// An action an item module defines (`setup/vm.rs`, `setup/nginx.rs`).
    Custom(Arc<dyn Custom>),
}

/// An action that decides at execute time (what a file holds then, whether a command
/// fails and what that means), for the items of `setup/vm.rs` and `setup/nginx.rs`.
trait Custom: std::fmt::Debug + Send + Sync {
    /// The steps `--dry-run` shows.
    fn steps(&self, steps: &mut Plan);
    /// Does it; returns whether anything changed.
    fn perform(&self, cx: &Cx) -> Result<bool>;
}

/// One thing setup looks after.
#[derive(Debug, Clone)]
struct Item {
    name: String,
    state: State,
    actions: Vec<Action>,
    /// Why setup will not fix it itself, and what the operator should do.
    refusal: Option<String>,
    /// Whether the refusal stops setup before it changes anything (else setup puts the
    /// other items in place first, then fails with this one).
    blocks: bool,
}

impl Item {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Item {
        Item { name: name.into(), state: State::Ok(detail.into()), actions: Vec::new(), refusal: None, blocks: true }
    }
    fn fix(name: impl Into<String>, state: State, actions: Vec<Action>) -> Item {
        Item { name: name.into(), state, actions, refusal: None, blocks: true }
    }
    fn refuse(name: impl Into<String>, state: State, help: impl Into<String>) -> Item {
        Item { name: name.into(), state, actions: Vec::new(), refusal: Some(help.into()), blocks: true }
    }
    /// A refusal that needs the other items in place first (a TLS certificate needs
    /// nginx serving the ACME challenge): setup does them, then fails with this one.
    fn refuse_after_the_rest(name: impl Into<String>, state: State, help: impl Into<String>) -> Item {
        Item { blocks: false, ..Item::refuse(name, state, help) }
    }
    /// `ok       NAME: DETAIL`, as `--check` prints it.
    fn line(&self) -> String {
        format!("{:<8} {}: {}", self.state.word(), self.name, self.state.detail())
    }
}

/// The inspected host and what setup will do about it.
pub struct SetupPlan {
    steps: Plan,
    items: Vec<Item>,
}

impl StagePlan for SetupPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

impl Stage for Setup {
    const NAME: StageName = StageName::Setup;
    type Outputs = SetupOutputs;
    type Plan = SetupPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        // Never skipped (it runs detached), but a digest of what it writes is cheap.
        let mut fp = Fingerprint::new();
        fp.json("poudriere", &cx.config().poudriere).json("signing", &cx.config().signing);
        Ok(fp)
    }

    fn plan(&self, cx: &Cx) -> Result<SetupPlan> {
        let items = inspect(cx, self.write, self.role)?;
        let mut steps = Plan::default();
        for item in &items {
            steps.check(item.line());
            if let Some(help) = &item.refusal {
                steps.note(format!("setup will not change this itself: {}", first_line(help)));
            }
            for action in &item.actions {
                action_steps(action, &mut steps);
            }
        }
        Ok(SetupPlan { steps, items })
    }

    fn execute(&self, cx: &mut Cx, plan: SetupPlan) -> Result<SetupOutputs> {
        if self.check {
            return report_check(cx, &plan.items, self.role);
        }
        let refused: Vec<&Item> = plan.items.iter().filter(|i| i.refusal.is_some() && i.blocks).collect();
        if !refused.is_empty() {
            let msg =
                refusals("setup cannot provision this host as pipeline.toml asks; nothing was changed:", &refused);
            bail!(Failure::new(msg).help(format!(
                "fix the items above (each says how), then rerun `{}`; `{}` lists every item",
                command(cx.loaded, self.role, ""),
                command(cx.loaded, self.role, "--check")
            )));
        }
        let mut outputs = SetupOutputs { ok: Vec::new(), changed: Vec::new() };
        for item in &plan.items {
            if item.actions.is_empty() {
                cx.note(item.line());
                outputs.ok.push(item.name.clone());
                continue;
            }
            cx.say(format!("{}: {}", item.name, item.state.detail()));
            let mut changed = false;
            for action in &item.actions {
                changed |= perform(cx, action)
                    .with_context(|| format!("setup could not put `{}` in place", item.name))
                    .with_help(|| format!("once that is fixed, rerun `{}`", command(cx.loaded, self.role, "")))?;
            }
            if changed {
                outputs.changed.push(item.name.clone());
            } else {
                outputs.ok.push(item.name.clone());
            }
        }
        let later: Vec<&Item> = plan.items.iter().filter(|i| i.refusal.is_some() && !i.blocks).collect();
        if !later.is_empty() {
            let msg = refusals(
                &format!(
                    "setup put the other {} items in place ({} created or changed), but needs you for the rest:",
                    outputs.ok.len() + outputs.changed.len(),
                    outputs.changed.len()
                ),
                &later,
            );
            bail!(
                Failure::new(msg)
                    .help(format!("do what each item says, then rerun `{}`", command(cx.loaded, self.role, "")))
                    .infrastructure()
            );
        }
        if outputs.changed.is_empty() {
            cx.say(format!("all {} items were already in place; nothing changed", outputs.ok.len()));
        } else {
            cx.say(format!(
                "{} items in place, {} created or changed: {}",
                outputs.ok.len() + outputs.changed.len(),
                outputs.changed.len(),
                outputs.changed.join(", ")
            ));
        }
        Ok(outputs)
    }
}

impl Setup {
    /// `cargo xtask setup`: provisions the host; not part of any run.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_detached(&self, self.dry_run).map(|_| ())
    }
}

/// `setup --check`: one line per item on stdout; exit 0 only when every item is ok.
fn report_check(cx: &Cx, items: &[Item], role: Role) -> Result<SetupOutputs> {
    for item in items {
        cx.note(item.line());
        cx.ui.println(&item.line());
    }
    let not_ok: Vec<&Item> = items.iter().filter(|i| !matches!(i.state, State::Ok(_))).collect();
    if not_ok.is_empty() {
        return Ok(SetupOutputs { ok: items.iter().map(|i| i.name.clone()).collect(), changed: Vec::new() });
    }
    let refused = not_ok.iter().filter(|i| i.refusal.is_some()).count();
    cx.ui.eprintln(&format!(
        "setup --check: {} of {} items need attention ({} that `{}` fixes, {} that need you)",
        not_ok.len(),
        items.len(),
        not_ok.len() - refused,
        command(cx.loaded, role, ""),
        refused
    ));
    Err(Failure::reported(Class::Infrastructure).into())
}

/// `cargo xtask setup` for this host's role (`--role` unless `all`), then `args`, as it
/// works when printed: the invocation's `--config`, `--state-dir`, `-o`, and its
/// `--target` (which jail setup provisions).
fn command(loaded: &Loaded, role: Role, args: &str) -> String {
    let mut line = String::from("setup");
    if role != Role::All {
        line.push_str(&format!(" --role {}", role.as_str()));
    }
    if let Some(t) = &loaded.target
        && loaded.several_targets()
    {
        line.push_str(&format!(" --target {}", crate::proc::quote(&t.name)));
    }
    if !args.is_empty() {
        line.push(' ');
        line.push_str(args);
    }
    loaded.xtask(&line)
}

/// `HEADLINE`, then each item's line and its refusal, indented.
fn refusals(headline: &str, items: &[&Item]) -> String {
    let mut msg = headline.to_owned();
    for item in items {
        msg.push_str(&format!("\n  {}", item.line()));
        for line in item.refusal.as_deref().unwrap_or_default().lines() {
            msg.push_str(&format!("\n    {line}"));
        }
    }
    msg
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The plan steps an action shows in `--dry-run`.
fn action_steps(action: &Action, steps: &mut Plan) {
    match action {
        Action::Run(cmd) | Action::Stream(cmd) => steps.run(cmd),
        Action::Mkdir(path) => steps.push(Step::Mkdir { path: path.clone() }),
        Action::Write { path, backup, what, .. } => {
            if let Some(backup) = backup {
                steps.push(Step::Copy { from: path.clone(), to: backup.clone() });
            }
            steps.push(Step::Write { path: path.clone(), what: what.clone() });
        }
        Action::GenerateKey { openssl, key, pubkey } => {
            let dir = key_temp_dir(key);
            steps.push(Step::Mkdir { path: dir.clone() });
            steps
                .note(format!("{dir} is mode 0700: the key is never readable by others, not even while it is written"));
            steps.run(&genrsa(openssl, &dir.join("key")));
            steps.run(&pubout(openssl, &dir.join("key"), &dir.join("pub")));
            steps.push(Step::Rename { from: dir.join("key"), to: key.clone() });
            steps.push(Step::Rename { from: dir.join("pub"), to: pubkey.clone() });
        }
        Action::DerivePubkey { openssl, key, pubkey } => {
            let tmp = fsx::temp_beside(pubkey);
            steps.run(&pubout(openssl, key, &tmp));
            steps.push(Step::Rename { from: tmp, to: pubkey.clone() });
        }
        Action::Ensure { list, create, .. } => {
            steps.run(list);
            steps.run(create);
        }
        Action::Custom(custom) => custom.steps(steps),
    }
}

/// Carries out one action. Returns whether it changed anything.
fn perform(cx: &Cx, action: &Action) -> Result<bool> {
    crate::proc::check_interrupted()?;
    match action {
        Action::Run(cmd) => {
            cmd.run(&cx.log)?;
            cx.say(format!("ran {cmd}"));
        }
        Action::Stream(cmd) => {
            stream(cx, cmd)?;
            cx.say(format!("ran {cmd}"));
        }
        Action::Mkdir(path) => {
            fs::create_dir_all(path).with_context(|| format!("cannot create {path}"))?;
            cx.say(format!("created {path}"));
        }
        Action::Write { path, text, backup, what } => {
            if let Some(backup) = backup {
                let old = fs::read(path).with_context(|| format!("cannot read {path}"))?;
                let mode = fs::metadata(path)?.permissions().mode() & 0o777;
                fsx::write_atomic_mode(backup, &old, mode)?;
                cx.say(format!("kept the old {path} as {backup}"));
            }
            fsx::write_atomic(path, text.as_bytes())?;
            cx.say(format!("wrote {path} ({what})"));
        }
        Action::GenerateKey { openssl, key, pubkey } => generate_key(cx, openssl, key, pubkey)?,
        Action::DerivePubkey { openssl, key, pubkey } => {
            pkgrepo::key::check_private_key(key)?;
            let tmp = fsx::temp_beside(pubkey);
            let result = pubout(openssl, key, &tmp).run(&cx.log).and_then(|_| {
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
                fs::rename(&tmp, pubkey).with_context(|| format!("cannot rename {tmp} to {pubkey}"))
            });
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result?;
            cx.say(format!("wrote the public key {pubkey} from {key}"));
        }
        Action::Ensure { list, create, name } => {
            // List first, at the moment of creating: creating what exists exits 2.
            if listed(cx, list)?.iter().any(|n| n == name) {
                cx.say(format!("{name} exists already"));
                return Ok(false);
            }
            stream(cx, create)?;
            if !listed(cx, list)?.iter().any(|n| n == name) {
                bail!("`{create}` succeeded but `{list}` does not list {name}");
            }
            cx.say(format!("created {name}"));
        }
        Action::Custom(custom) => return custom.perform(cx),
    }
    Ok(true)
}

fn stream(cx: &Cx, cmd: &CmdLine) -> Result<()> {
    let out = cmd.stream(&cx.log, cx.ui, &StreamOpts::default())?;
    if !out.success() {
        bail!("{}", cmd.failure(&out));
    }
    Ok(())
}

/// The names a `-l -q -n` listing prints.
fn listed(cx: &Cx, list: &CmdLine) -> Result<Vec<String>> {
    let out = list.run(&cx.log)?;
    Ok(out.stdout_str().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// A private directory beside the key, where the pair is made before it is renamed into place.
fn key_temp_dir(key: &Utf8Path) -> Utf8PathBuf {
    key.with_file_name(format!(".{}.new", key.file_name().unwrap_or("key")))
}

fn genrsa(openssl: &str, out: &Utf8Path) -> CmdLine {
    CmdLine::new(openssl).args(["genrsa", "-out", out.as_str(), KEY_BITS])
}

fn pubout(openssl: &str, key: &Utf8Path, out: &Utf8Path) -> CmdLine {
    CmdLine::new(openssl).args(["pkey", "-in", key.as_str(), "-pubout", "-out", out.as_str()])
}

/// Creates the key pair: generated in a 0700 directory beside the key (so the private
/// key is never readable by others, however openssl creates it), made 0600, then
/// renamed into place; the public key follows.
fn generate_key(cx: &Cx, openssl: &str, key: &Utf8Path, pubkey: &Utf8Path) -> Result<()> {
    let parent = key.parent().context("the signing key has no directory")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {parent}"))?;
    if let Some(dir) = pubkey.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    }
    let dir = key_temp_dir(key);
    if dir.exists() {
        // What an interrupted earlier attempt left; never a key in use.
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove the leftover {dir}"))?;
    }
    fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("cannot create {dir}"))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let result = (|| -> Result<()> {
        let (tmp_key, tmp_pub) = (dir.join("key"), dir.join("pub"));
        genrsa(openssl, &tmp_key).run(&cx.log)?;
        fs::set_permissions(&tmp_key, fs::Permissions::from_mode(0o600))?;
        pkgrepo::key::check_private_key(&tmp_key)?;
        pubout(openssl, &tmp_key, &tmp_pub).run(&cx.log)?;
        fs::set_permissions(&tmp_pub, fs::Permissions::from_mode(0o644))?;
        fs::File::open(&tmp_key).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {tmp_key}"))?;
        fs::rename(&tmp_key, key).with_context(|| format!("cannot rename the new key to {key}"))?;
        fs::rename(&tmp_pub, pubkey).with_context(|| format!("cannot rename the new public key to {pubkey}"))?;
        fsx::sync_dir(parent)?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&dir);
    result?;
    cx.say(format!("created the RSA {KEY_BITS} signing key {key} (mode 0600) and its public key {pubkey}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_numbers() {
        assert_eq!(release_number("15.0-RELEASE-p2"), Some((15, 0)));
        assert_eq!(release_number("14.3-STABLE"), Some((14, 3)));
        assert_eq!(release_number("15.0-RELEASE"), Some((15, 0)));
        assert!(release_number("15.1-RELEASE") > release_number("15.0-RELEASE-p9"));
        assert_eq!(release_number("Linux"), None);
    }
}
