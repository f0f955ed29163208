//! setup's inspection: every host item looked at read-only (nothing is changed here), so
//! `--check` and `--dry-run` can show what is ok, missing or different and what setup
//! would do about it.

use super::*;

/// Inspects every item `role` needs, in the order setup puts them in place.
pub(super) fn inspect(cx: &Cx, write: bool, role: Role) -> Result<Vec<Item>> {
    let loaded = cx.loaded;
    let cfg = &loaded.config;
    let log = &cx.log;
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
    let poudriere_ready = if role.builds() {
        Some(inspect_build_host(loaded, log, &mut items))
    } else {
        items.push(Item::ok(
            "poudriere",
            "not on the signing host (--role signing): the builders build and hand their work over as bundles",
        ));
        None
    };
    if role.signs() {
        items.push(inspect_signing(loaded, log)?);
    } else {
        let name = match cfg.signing.trust {
            TrustMode::Pubkey => "signing key",
            TrustMode::Fingerprints => "signing command",
        };
        items.push(Item::ok(
            name,
            "not on a builder (--role builder): poudriere.conf names none, so bulk commits an unsigned repository that the signing host verifies and signs",
        ));
    }
    if let Some(poudriere_ready) = poudriere_ready {
        inspect_poudriere_files(cx, write, role, poudriere_ready, &mut items)?;
        items.extend(vm::inspect(loaded, log));
    } else {
        items.push(Item::ok("bhyve", "not on the signing host (--role signing): the gate boots on the builders"));
    }
    if role.signs() {
        items.extend(nginx::inspect(loaded, log)?);
    } else {
        items.push(Item::ok("nginx", "not on a builder (--role builder): the signing host publishes the repository"));
    }
    Ok(items)
}

/// The release, the pool, poudriere itself and the distfiles cache; returns whether
/// poudriere is installed.
fn inspect_build_host(loaded: &Loaded, log: &Log, items: &mut Vec<Item>) -> bool {
    let cfg = &loaded.config;
    let paths = Paths::new(loaded);
    items.push(inspect_release(cfg, log));
    if !cfg.poudriere.no_zfs {
        items.push(inspect_pool(cfg, log));
    }
    let installed = inspect_poudriere(cfg, log);
    let poudriere_ready = matches!(installed.state, State::Ok(_));
    items.push(installed);
    items.push(if paths.distfiles.is_dir() {
        Item::ok("distfiles cache", format!("{} exists", paths.distfiles))
    } else {
        Item::fix(
            "distfiles cache",
            State::Missing(format!("{} does not exist (poudriere requires DISTFILES_CACHE)", paths.distfiles)),
            vec![Action::Mkdir(paths.distfiles.clone())],
        )
    });
    poudriere_ready
}

/// poudriere's files (poudriere.conf naming the key or signing command only where this
/// machine signs), the jail and the trees.
fn inspect_poudriere_files(
    cx: &Cx,
    write: bool,
    role: Role,
    poudriere_ready: bool,
    items: &mut Vec<Item>,
) -> Result<()> {
    let loaded = cx.loaded;
    let cfg = &loaded.config;
    let paths = Paths::new(loaded);
    let signs = role.signs();
    let replace = super::command(loaded, role, "--write");
    let conf_exists = paths.conf().is_file();
    items.push(managed_file(
        "poudriere.conf",
        &paths.conf(),
        poudriere::render_conf(loaded, signs),
        if signs {
            "from pipeline.toml [poudriere] and [signing]"
        } else {
            "from pipeline.toml [poudriere]; on a builder it names no key"
        },
        write,
        &replace,
    )?);
    let set = &cfg.poudriere.validation_set;
    items.push(managed_file(
        &format!("{set} set make.conf"),
        &paths.set_make_conf(set),
        poudriere::render_set_make_conf(set, &cfg.port.origin, &cfg.poudriere.validation_options),
        &format!("{} for `bulk --set {set}`", poudriere::options_set_var(&cfg.port.origin)),
        write,
        &replace,
    )?);
    items.push(inspect_later_confs(loaded, &paths, signs)?);

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
    Ok(())
}

/// The files poudriere reads after poudriere.conf for bulk's jail and tree (and the
/// validation set): what they change of the settings setup writes. POUDRIERE_DATA may
/// differ (bulk follows poudriere); any other such change is the operator's to settle,
/// since setup edits only the files it writes.
fn inspect_later_confs(loaded: &Loaded, paths: &Paths, signs: bool) -> Result<Item> {
    use poudriere::conf::{Conf, Lookup, Names};
    let p = &loaded.config.poudriere;
    let name = "settings poudriere reads";
    let want = poudriere::render_conf(loaded, signs);
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
        for (key, value) in poudriere::conf_values(loaded, signs) {
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
pub(super) fn probe(cmd: &CmdLine, log: &Log) -> std::result::Result<crate::proc::Output, String> {
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
pub(super) fn package_item(cfg: &crate::config::Config, log: &Log, name: &str, package: &str) -> Item {
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
/// `replace`: the command that replaces it (`setup --write` for this host's role).
fn managed_file(name: &str, path: &Utf8Path, want: String, what: &str, write: bool, replace: &str) -> Result<Item> {
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
                "it is not overwritten without --write:\n{}\nreview the diff; `{replace}` replaces it and keeps the old one as {backup}",
                diff.trim_end()
            ),
        ))
    }
}

/// `FILE.YYYYMMDDTHHMMSS.mmmZ.bak`, beside the file.
pub(super) fn backup_path(path: &Utf8Path) -> Utf8PathBuf {
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
