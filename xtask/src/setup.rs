//! setup: provisions this host once for poudriere (not a release stage). Checks the host
//! (root, FreeBSD release, ZFS pool), installs poudriere, creates the signing key,
//! writes poudriere.conf and the validation set's make.conf, creates the jail, the ports
//! tree and the overlay tree when missing, loads vmm and installs the UEFI firmware for
//! the bhyve gate (`setup/vm.rs`), and sets nginx up to serve the repository
//! (`setup/nginx.rs`).
//!
//! Every item is first inspected (read-only), so `--check` and `--dry-run` show exactly
//! what is ok, missing or different, and a second `setup` changes nothing. A file that
//! differs from what pipeline.toml asks for is never silently overwritten.

mod nginx;
mod vm;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Setup;
use crate::config::{Loaded, Tool, TrustMode};
use crate::failure::{self, Class, Failure};
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
        let items = inspect(cx, self.write)?;
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
            return report_check(cx, &plan.items);
        }
        let refused: Vec<&Item> = plan.items.iter().filter(|i| i.refusal.is_some() && i.blocks).collect();
        if !refused.is_empty() {
            let msg =
                refusals("setup cannot provision this host as pipeline.toml asks; nothing was changed:", &refused);
            bail!(Failure::new(msg).help(
                "fix the items above (each says how), then rerun `cargo xtask setup`; `cargo xtask setup --check` lists every item"
            ));
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
                changed |=
                    perform(cx, action).with_context(|| format!("setup could not put `{}` in place", item.name))?;
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
            bail!(Failure::new(msg).help("do what each item says, then rerun `cargo xtask setup`").infrastructure());
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
fn report_check(cx: &Cx, items: &[Item]) -> Result<SetupOutputs> {
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
        "setup --check: {} of {} items need attention ({} that `cargo xtask setup` fixes, {} that need you)",
        not_ok.len(),
        items.len(),
        not_ok.len() - refused,
        refused
    ));
    Err(Failure::reported(Class::Product).into())
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

// ---------------------------------------------------------------------------------
// Inspection: read-only, so --check and --dry-run can show it

/// Inspects every item, in the order setup puts them in place.
fn inspect(cx: &Cx, write: bool) -> Result<Vec<Item>> {
    let loaded = cx.loaded;
    let cfg = &loaded.config;
    let log = &cx.log;
    let paths = Paths::new(loaded);
    let mut items = Vec::new();

    // The host.
    if cfg.setup.require_root {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        items.push(if uid == 0 {
            Item::ok("root", "running as root")
        } else {
            Item::refuse(
                "root",
                State::Missing(format!("running as uid {uid}")),
                "poudriere, its jails and /usr/local/etc need root: run setup as root",
            )
        });
    }
    items.push(inspect_release(cfg, log));
    if !cfg.poudriere.no_zfs {
        items.push(inspect_pool(cfg, log));
    }
    let installed = inspect_poudriere(cfg, log);
    let poudriere_ready = matches!(installed.state, State::Ok(_));
    items.push(installed);

    // Files.
    items.push(if paths.distfiles.is_dir() {
        Item::ok("distfiles cache", format!("{} exists", paths.distfiles))
    } else {
        Item::fix(
            "distfiles cache",
            State::Missing(format!("{} does not exist (poudriere requires DISTFILES_CACHE)", paths.distfiles)),
            vec![Action::Mkdir(paths.distfiles.clone())],
        )
    });
    items.push(inspect_signing(loaded, log)?);
    let conf_exists = paths.conf().is_file();
    items.push(managed_file(
        "poudriere.conf",
        &paths.conf(),
        poudriere::render_conf(loaded),
        "from pipeline.toml [poudriere] and [signing]",
        write,
    )?);
    let set = &cfg.poudriere.validation_set;
    items.push(managed_file(
        &format!("{set} set make.conf"),
        &paths.set_make_conf(set),
        poudriere::render_set_make_conf(set, &cfg.port.origin, &cfg.poudriere.validation_options),
        &format!("{} for `bulk --set {set}`", poudriere::options_set_var(&cfg.port.origin)),
        write,
    )?);
    items.push(inspect_later_confs(loaded, &paths)?);

    // poudriere's jail and trees: listed when poudriere can answer, else created after
    // the steps above (listing again first).
    let why_unknown = if !poudriere_ready {
        Some("poudriere is not installed yet")
    } else if !conf_exists {
        Some("poudriere.conf does not exist yet")
    } else {
        None
    };
    let p = &cfg.poudriere;
    let base = poudriere::command(loaded);
    let mut jail_create = base.clone().args(["jail", "-c", "-j", &p.jail, "-v", &p.version, "-a", &p.arch]);
    if !p.jail_method.is_empty() {
        jail_create = jail_create.args(["-m", &p.jail_method]);
    }
    let jails = base.clone().args(["jail", "-l", "-q", "-n"]);
    items.push(ensure_item(cx, format!("jail {}", p.jail), &p.jail, jails, jail_create, why_unknown));
    let trees = base.clone().args(["ports", "-l", "-q", "-n"]);
    let tree_create = base.clone().args(poudriere::tree_create_args(p));
    items.push(ensure_item(cx, format!("ports tree {}", p.tree), &p.tree, trees.clone(), tree_create, why_unknown));
    let overlay_dir = loaded.resolve(&cfg.port.overlay);
    let overlay_create = base.args(["ports", "-c", "-p", &p.overlay, "-m", "null", "-M", overlay_dir.as_str()]);
    let mut overlay =
        ensure_item(cx, format!("overlay tree {}", p.overlay), &p.overlay, trees, overlay_create, why_unknown);
    if !overlay_dir.is_dir() {
        overlay.actions.insert(0, Action::Mkdir(overlay_dir.clone()));
    }
    if let State::Ok(detail) = &mut overlay.state {
        detail.push_str(&format!(" (bulk -O {}; registered for {overlay_dir})", p.overlay));
    }
    items.push(overlay);

    items.extend(vm::inspect(loaded, log));
    items.extend(nginx::inspect(loaded, log)?);
    Ok(items)
}

/// The files poudriere reads after poudriere.conf for bulk's jail and tree (and the
/// validation set): what they change of the settings setup writes. POUDRIERE_DATA may
/// differ (bulk follows poudriere); any other such change is the operator's to settle,
/// since setup edits only the files it writes.
fn inspect_later_confs(loaded: &Loaded, paths: &Paths) -> Result<Item> {
    use poudriere::conf::{Conf, Lookup, Names};
    let p = &loaded.config.poudriere;
    let name = "settings poudriere reads";
    let want = poudriere::render_conf(loaded);
    let mut later: Vec<Utf8PathBuf> = Vec::new();
    let mut data_note = None;
    let mut problems: Vec<String> = Vec::new();
    for set in [None, Some(p.validation_set.as_str())] {
        let names = Names { jail: Some(&p.jail), tree: Some(&p.tree), set };
        let conf = Conf::load_with(&paths.etc, names, Some(&want))?;
        for file in conf.files_read().iter().skip(1) {
            if !later.contains(file) {
                later.push(file.clone());
            }
        }
        for (key, value) in poudriere::conf_values(loaded) {
            let problem = match conf.lookup(key) {
                Lookup::Known { value: have, .. } if have == value => continue,
                Lookup::Known { value: have, at } if key == "POUDRIERE_DATA" => {
                    data_note = Some(format!(
                        "POUDRIERE_DATA is {have} ({at}), not pipeline.toml's poudriere.data {value}: bulk follows poudriere"
                    ));
                    continue;
                }
                Lookup::Known { value: have, at } => {
                    format!(
                        "{at} sets {key}={}, not pipeline.toml's {}",
                        poudriere::sh_quote(&have),
                        poudriere::sh_quote(&value)
                    )
                }
                Lookup::Unset => {
                    format!("{key} is unset by a later file, not pipeline.toml's {}", poudriere::sh_quote(&value))
                }
                Lookup::Unknown { why, at } => format!("{at} may change {key} ({why})"),
            };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    }
    if !problems.is_empty() {
        return Ok(Item::refuse(
            name,
            State::Differs(problems.join("; ")),
            "poudriere reads those files after poudriere.conf and setup does not edit files it did not write: remove the setting from the file, or make pipeline.toml agree with it",
        ));
    }
    let files = if later.is_empty() {
        "poudriere.conf alone (no poudriere.d/poudriere.conf or *-poudriere.conf for this jail, tree and set)"
            .to_owned()
    } else {
        let names: Vec<&str> = later.iter().map(|f| f.as_str()).collect();
        format!("poudriere.conf, then {}", names.join(", "))
    };
    Ok(Item::ok(
        name,
        match data_note {
            Some(note) => format!("{files}; {note}"),
            None => format!("{files}; as pipeline.toml asks"),
        },
    ))
}

/// Runs a read-only probe; a program that cannot run becomes a message.
fn probe(cmd: &CmdLine, log: &Log) -> std::result::Result<crate::proc::Output, String> {
    cmd.output(log).map_err(|e| first_line(&crate::ui::render_message(&e)).to_owned())
}

fn inspect_release(cfg: &crate::config::Config, log: &Log) -> Item {
    let want = &cfg.poudriere.version;
    let name = "FreeBSD release";
    let cmd = CmdLine::tool(&cfg.tools, Tool::freebsd_version).arg("-r");
    let out = match probe(&cmd, log) {
        Ok(out) if out.success() => out,
        Ok(out) => return Item::refuse(name, State::Missing(cmd.failure(&out)), "is this a FreeBSD host?"),
        Err(e) => return Item::refuse(name, State::Missing(e), "setup provisions a FreeBSD host"),
    };
    let have = out.stdout_str().trim().to_owned();
    match (release_number(&have), release_number(want)) {
        (Some(h), Some(w)) if h >= w => {
            Item::ok(name, format!("the host runs {have}; the jail's {want} needs that release or a later one"))
        }
        (Some(_), Some(_)) => Item::refuse(
            name,
            State::Differs(format!("the host runs {have}, older than the jail's {want}")),
            format!(
                "a jail cannot run a newer release than the host's kernel: upgrade the host to {want} or later, or set poudriere.version to the host's release"
            ),
        ),
        (None, _) => Item::refuse(
            name,
            State::Differs(format!("`{cmd}` printed `{have}`, not a release")),
            "is this a FreeBSD host?",
        ),
        (_, None) => Item::refuse(
            name,
            State::Differs(format!("poudriere.version `{want}` is not a release such as 15.0-RELEASE")),
            "fix poudriere.version in pipeline.toml",
        ),
    }
}

/// `15.0-RELEASE-p2` gives (15, 0).
pub fn release_number(text: &str) -> Option<(u32, u32)> {
    let number = text.split('-').next()?;
    let (major, minor) = number.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn inspect_pool(cfg: &crate::config::Config, log: &Log) -> Item {
    let pool = &cfg.poudriere.zpool;
    let name = format!("ZFS pool {pool}");
    let cmd = CmdLine::tool(&cfg.tools, Tool::zpool).args(["list", "-H", "-o", "name", pool.as_str()]);
    match probe(&cmd, log) {
        Ok(out) if out.success() && out.stdout_str().lines().any(|l| l.trim() == pool) => {
            Item::ok(name, format!("`{cmd}` lists it"))
        }
        Ok(out) => Item::refuse(
            name,
            State::Missing(cmd.failure(&out).lines().map(str::trim).collect::<Vec<_>>().join(" ")),
            "create the pool (plan Phase 1.2), or set poudriere.zpool to an existing one, or poudriere.no_zfs = true to build without ZFS",
        ),
        Err(e) => Item::refuse(name, State::Missing(e), "setup provisions a FreeBSD host with ZFS"),
    }
}

fn inspect_poudriere(cfg: &crate::config::Config, log: &Log) -> Item {
    package_item(cfg, log, "poudriere", &cfg.setup.package)
}

/// A package setup installs (`pkg install -y`) when it is missing and setup.install allows.
fn package_item(cfg: &crate::config::Config, log: &Log, name: &str, package: &str) -> Item {
    let cmd = CmdLine::tool(&cfg.tools, Tool::pkg).args(["info", "-e", package]);
    let install = CmdLine::tool(&cfg.tools, Tool::pkg).args(["install", "-y", package]);
    match probe(&cmd, log) {
        Ok(out) if out.success() => Item::ok(name, format!("package {package} is installed")),
        Ok(_) if cfg.setup.install => Item::fix(
            name,
            State::Missing(format!("package {package} is not installed; setup runs: {install}")),
            vec![Action::Stream(install)],
        ),
        Ok(_) => Item::refuse(
            name,
            State::Missing(format!("package {package} is not installed")),
            format!("install it (`{install}`), or set setup.install = true"),
        ),
        Err(e) => Item::refuse(name, State::Missing(e), "setup provisions a FreeBSD host with pkg(8)"),
    }
}

fn inspect_signing(loaded: &Loaded, log: &Log) -> Result<Item> {
    let s = &loaded.config.signing;
    if s.trust == TrustMode::Fingerprints {
        let name = "signing command";
        let Some(program) = s.command.first() else {
            return Err(loaded.error_at(
                "signing.command",
                "signing.trust = \"fingerprints\" needs signing.command (the program poudriere runs as SIGNING_COMMAND)",
            ));
        };
        return Ok(match crate::proc::find_program(program) {
            Some(path) => Item::ok(
                name,
                format!("{path} signs (fingerprints mode: SIGNING_COMMAND with PKG_REPO_FROM_HOST; no key file)"),
            ),
            None => Item::refuse(
                name,
                State::Missing(format!("`{program}` (signing.command) is not an executable program")),
                "install the signing command, or fix signing.command in pipeline.toml",
            ),
        });
    }
    let key = loaded.resolve(&s.key);
    let pubkey = loaded.resolve(&s.pubkey);
    let openssl = loaded.config.tools.get(Tool::openssl);
    let name = "signing key";
    let key_exists = fs::symlink_metadata(&key).is_ok();
    let pub_exists = pubkey.is_file();
    if !key_exists {
        if pub_exists {
            return Ok(Item::refuse(
                name,
                State::Differs(format!("the public key {pubkey} exists but its private key {key} does not")),
                format!(
                    "a new key would not match the public key clients may already trust: restore {key}, or move {pubkey} aside to create a new pair"
                ),
            ));
        }
        return Ok(Item::fix(
            name,
            State::Missing(format!(
                "{key} does not exist; setup creates an RSA {KEY_BITS} key (mode 0600) and {pubkey}"
            )),
            vec![Action::GenerateKey { openssl: openssl.to_owned(), key, pubkey }],
        ));
    }
    if let Err(e) = pkgrepo::key::check_private_key(&key).map_err(anyhow::Error::from) {
        let help = failure::help_lines(&e);
        let help = if help.is_empty() { "fix the key file".to_owned() } else { help.join("\n") };
        return Ok(Item::refuse(name, State::Differs(crate::ui::render_message(&e)), help));
    }
    if !pub_exists {
        return Ok(Item::fix(
            name,
            State::Missing(format!("{key} exists but its public key {pubkey} does not; setup writes it")),
            vec![Action::DerivePubkey { openssl: openssl.to_owned(), key, pubkey }],
        ));
    }
    // The public key must be the private key's: clients verify with it.
    let derive = CmdLine::tool(&loaded.config.tools, Tool::openssl).args(["pkey", "-in", key.as_str(), "-pubout"]);
    let out = derive.run(log).with_context(|| format!("cannot read the public half of the signing key {key}"))?;
    let have = fs::read_to_string(&pubkey).with_context(|| format!("cannot read {pubkey}"))?;
    if have.trim() != out.stdout_str().trim() {
        return Ok(Item::refuse(
            name,
            State::Differs(format!("the public key {pubkey} is not the public half of {key}")),
            format!("restore the matching pair, or remove {pubkey} so setup writes it from {key}"),
        ));
    }
    Ok(Item::ok(name, format!("{key} (mode 0600) and its public key {pubkey}")))
}

/// A file setup owns: written when missing; when it differs, shown as a diff and
/// replaced (keeping a backup) only with `--write`.
fn managed_file(name: &str, path: &Utf8Path, want: String, what: &str, write: bool) -> Result<Item> {
    let name = format!("{name} {path}");
    let have = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Item::fix(
                name,
                State::Missing(format!("setup writes it ({what})")),
                vec![Action::Write { path: path.to_owned(), text: want, backup: None, what: what.to_owned() }],
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
    };
    if have == want {
        return Ok(Item::ok(name, "as pipeline.toml asks"));
    }
    let mut what_differs = poudriere::assignment_differences(&have, &want);
    if what_differs.is_empty() {
        what_differs.push("same settings, other text (comments or layout)".into());
    }
    let summary = what_differs.join("; ");
    let diff = similar::TextDiff::from_lines(&have, &want)
        .unified_diff()
        .context_radius(2)
        .header(path.as_str(), "as pipeline.toml asks")
        .to_string();
    let backup = backup_path(path);
    if write {
        Ok(Item::fix(
            name,
            State::Differs(format!("{summary}; --write replaces it, keeping {backup}")),
            vec![Action::Write {
                path: path.to_owned(),
                text: want,
                backup: Some(backup),
                what: format!("{what}; replaces the old one"),
            }],
        ))
    } else {
        Ok(Item::refuse(
            name,
            State::Differs(summary),
            format!(
                "it is not overwritten without --write:\n{}\nreview the diff; `cargo xtask setup --write` replaces it and keeps the old one as {backup}",
                diff.trim_end()
            ),
        ))
    }
}

/// `FILE.YYYYMMDDTHHMMSS.mmmZ.bak`, beside the file.
fn backup_path(path: &Utf8Path) -> Utf8PathBuf {
    let stamp: String = crate::run::now_rfc3339().chars().filter(|c| !matches!(c, '-' | ':')).collect();
    let mut backup = path.with_file_name(format!("{}.{stamp}.bak", path.file_name().unwrap_or("file")));
    let mut n = 1;
    while backup.exists() {
        backup = path.with_file_name(format!("{}.{stamp}.{n}.bak", path.file_name().unwrap_or("file")));
        n += 1;
    }
    backup
}

/// A jail or tree: listed now when poudriere can answer, else left to execute time.
fn ensure_item(cx: &Cx, name: String, wanted: &str, list: CmdLine, create: CmdLine, why_unknown: Option<&str>) -> Item {
    let ensure = || vec![Action::Ensure { list: list.clone(), create: create.clone(), name: wanted.to_owned() }];
    if let Some(why) = why_unknown {
        return Item::fix(name, State::Missing(format!("{why}; setup runs: {create}")), ensure());
    }
    match probe(&list, &cx.log) {
        Ok(out) if out.success() => {
            if out.stdout_str().lines().any(|l| l.trim() == wanted) {
                Item::ok(name, format!("`{list}` lists it"))
            } else {
                Item::fix(name, State::Missing(format!("`{list}` does not list it; setup runs: {create}")), ensure())
            }
        }
        Ok(out) => Item::fix(
            name,
            State::Missing(format!(
                "cannot tell: {}; setup lists again, then runs: {create}",
                first_line(&cmd_failure_one_line(&list, &out))
            )),
            ensure(),
        ),
        Err(e) => Item::fix(name, State::Missing(format!("cannot tell: {e}; setup runs: {create}")), ensure()),
    }
}

fn cmd_failure_one_line(cmd: &CmdLine, out: &crate::proc::Output) -> String {
    let text = String::from_utf8_lossy(&[&out.stderr[..], &out.stdout[..]].concat()).into_owned();
    let last = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default().to_owned();
    format!("`{cmd}` {} ({last})", out.describe_status())
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
