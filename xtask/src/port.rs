//! port: stage sysutils/colibri from the colibri checkout into the overlay tree, after
//! checking that the checkout is the release tag and that CARGO_CRATES matches its
//! Cargo.lock exactly as the ports framework would generate it.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cargo_crates;
use crate::cli::Port;
use crate::failure;
use crate::failure::{Class, ResultExt};
use crate::fingerprint::{Fingerprint, sha256_bytes};
use crate::fsx;
use crate::git::{self, Checkout};
use crate::makevars::MakeVars;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};
use crate::ui::Ui;

settings! {
    /// port: where the colibri checkout is and where its port is staged.
    pub struct PortConfig {
        /// The colibri checkout, relative to pipeline.toml. `--colibri PATH` overrides it.
        pub colibri: Utf8PathBuf = "../colibri".into(),
        /// The port inside the checkout.
        pub source: Utf8PathBuf = "packaging/freebsd/port/sysutils/colibri".into(),
        /// The poudriere overlay tree in this repository; the port is staged at OVERLAY/ORIGIN.
        pub overlay: Utf8PathBuf = "ports".into(),
        /// The port's origin (category/name).
        pub origin: String = "sysutils/colibri".into(),
        /// The Cargo.lock CARGO_CRATES must match, relative to the checkout.
        pub lock: Utf8PathBuf = "Cargo.lock".into(),
        /// rc.d services the port must ship as files/NAME.in.
        pub services: Vec<String> = vec!["colibri_daemon".into(), "colibri_bridge".into()],
        /// Accept a checkout that is not exactly the release tag or has local changes
        /// (development only; the run records it).
        pub allow_dirty: bool = false,
    }
}

/// Files every port must have.
const REQUIRED: [&str; 4] = ["Makefile", "Makefile.crates", "pkg-descr", "pkg-plist"];

/// What `port` records for later stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortOutputs {
    pub origin: String,
    /// The staged port, relative to pipeline.toml's directory (or absolute).
    pub port_dir: Utf8PathBuf,
    /// The overlay tree holding it.
    pub overlay: Utf8PathBuf,
    /// The colibri checkout, relative to pipeline.toml's directory (so a run directory
    /// carried to another machine still finds it at the same relative place).
    pub checkout: Utf8PathBuf,
    pub portname: String,
    pub distversion: String,
    /// The release tag, `${DISTVERSIONPREFIX}${DISTVERSION}`.
    pub tag: String,
    /// The commit HEAD was at.
    pub commit: String,
    /// Whether the checkout had local changes or was not at the tag.
    pub dirty: bool,
    /// Whether --allow-dirty (or port.allow_dirty) permitted that.
    pub allow_dirty: bool,
    /// SHA-256 of the Cargo.lock.
    pub cargo_lock_sha256: String,
    /// Number of CARGO_CRATES entries.
    pub crates: usize,
    /// Digest of the staged tree, to notice it being changed or removed.
    pub tree: String,
    /// What the port names its services and programs (the gate's patterns use them).
    #[serde(default)]
    pub names: PortNames,
    /// The Cargo.lock as it was checked, copied into the run directory (relative to the
    /// state directory): what audit checks and sign's SBOM lists, without the checkout.
    #[serde(default)]
    pub lock: Option<Utf8PathBuf>,
    /// The workspace members the port builds (its CARGO_INSTALL_PATH).
    #[serde(default)]
    pub members: Vec<Member>,
    /// The checkout's `origin` remote, when it has one (the provenance names it).
    #[serde(default)]
    pub repository: Option<String>,
}

/// A workspace member a port builds and installs (an entry of CARGO_INSTALL_PATH).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its directory in the workspace (`crates/colibri-daemon`).
    pub path: String,
    /// Its package name (its Cargo.toml's `[package] name`, else the directory's name).
    pub name: String,
    /// The port option that adds it (`TESTAGENT` for `TESTAGENT_VARS=CARGO_INSTALL_PATH+=...`);
    /// none when every build has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option: Option<String>,
}

/// The members a port installs: CARGO_INSTALL_PATH (the ports framework's default is the
/// workspace root, `.`), then those an option adds through `OPT_VARS`.
fn members(vars: &MakeVars, checkout: &Utf8Path) -> Result<Vec<Member>> {
    let name = |path: &str| -> String {
        let toml = checkout.join(path).join("Cargo.toml");
        let declared = fs::read_to_string(&toml).ok().and_then(|t| {
            let doc: toml::Table = toml::from_str(&t).ok()?;
            Some(doc.get("package")?.get("name")?.as_str()?.to_owned())
        });
        declared.unwrap_or_else(|| Utf8Path::new(path).file_name().unwrap_or(path).to_owned())
    };
    let mut out: Vec<Member> = Vec::new();
    for path in vars.get_or("CARGO_INSTALL_PATH", ".")?.split_whitespace() {
        out.push(Member { path: path.to_owned(), name: name(path), option: None });
    }
    for var in vars.names().filter(|n| n.ends_with("_VARS")) {
        let option = var.trim_end_matches("_VARS");
        for item in vars.raw(var).unwrap_or_default().split_whitespace() {
            if let Some(path) = item.strip_prefix("CARGO_INSTALL_PATH+=")
                && !out.iter().any(|m| m.path == path)
            {
                out.push(Member { path: path.to_owned(), name: name(path), option: Some(option.to_owned()) });
            }
        }
    }
    Ok(out)
}

/// The names a port gives what it installs, as the console shows them: rc names a
/// service by its rc name (`colibri_daemon`), the kernel a process by its executable's
/// basename (`colibri-daemon`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortNames {
    /// rc.d services: the Makefile's USE_RC_SUBR, then any of `port.services` it lacks.
    pub services: Vec<String>,
    /// Programs: the basenames of pkg-plist's `bin/`, `sbin/` and `libexec/` entries
    /// (optional ones too), cut to the 19 characters the kernel keeps (MAXCOMLEN,
    /// sys/sys/param.h).
    pub binaries: Vec<String>,
}

/// The longest process name the kernel prints (`p_comm`, MAXCOMLEN).
const MAXCOMLEN: usize = 19;

impl PortNames {
    /// Reads the names from the port in `dir` (its Makefile and pkg-plist); `services`
    /// are the configured ones, added when the Makefile does not list them.
    pub fn read(dir: &Utf8Path, services: &[String]) -> Result<PortNames> {
        let makefile = dir.join("Makefile");
        let text =
            fs::read_to_string(&makefile).with_context(|| format!("cannot read the port Makefile {makefile}"))?;
        let vars = MakeVars::parse(&text, makefile.as_str());
        // USE_RC_SUBR set in a way we cannot evaluate leaves only the configured names.
        let rc = if vars.is_set("USE_RC_SUBR") { vars.get("USE_RC_SUBR").unwrap_or_default() } else { String::new() };
        let mut names = PortNames::default();
        for name in rc.split_whitespace().map(str::to_owned).chain(services.iter().cloned()) {
            if !names.services.contains(&name) {
                names.services.push(name);
            }
        }
        let plist = dir.join("pkg-plist");
        let text = fs::read_to_string(&plist).with_context(|| format!("cannot read the port's {plist}"))?;
        for name in plist_programs(&text) {
            if !names.binaries.contains(&name) {
                names.binaries.push(name);
            }
        }
        Ok(names)
    }
}

/// The programs a pkg-plist installs: `bin/X`, `sbin/X`, `libexec/X`, behind any
/// `%%OPTION%%` prefixes or an `@(owner,group,mode)` keyword; other `@` lines are
/// keywords, not files.
fn plist_programs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut entry = line.trim();
        while let Some(rest) = entry.strip_prefix("%%") {
            let Some(end) = rest.find("%%") else { break };
            entry = &rest[end + 2..];
        }
        if let Some(attrs) = entry.strip_prefix("@(") {
            entry = attrs.split_once(')').map_or("", |(_, path)| path.trim_start());
        } else if entry.starts_with('@') {
            continue;
        }
        let program = ["bin/", "sbin/", "libexec/"].iter().find_map(|dir| entry.strip_prefix(dir));
        if let Some(name) = program.filter(|n| !n.is_empty() && !n.contains('/')) {
            let cut = (0..=name.len().min(MAXCOMLEN)).rev().find(|i| name.is_char_boundary(*i)).unwrap_or(0);
            out.push(name[..cut].to_owned());
        }
    }
    out
}

/// The port stage's plan: the checks' results and the copy to make.
pub struct PortPlan {
    steps: Plan,
    source: Utf8PathBuf,
    target: Utf8PathBuf,
    files: Vec<Utf8PathBuf>,
    outputs: PortOutputs,
    /// The Cargo.lock's text, copied into the run directory.
    lock_text: String,
}

impl StagePlan for PortPlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

/// Resolved locations for one invocation.
struct Where {
    checkout: Utf8PathBuf,
    source: Utf8PathBuf,
    target: Utf8PathBuf,
    lock: Utf8PathBuf,
}

/// Checks `[port]` when pipeline.toml is loaded: an origin that can never name a port
/// (poudriere, the overlay and the set's make.conf all take `category/name`) is refused
/// there, with its location.
pub fn validate(loaded: &crate::config::Loaded) -> Result<()> {
    let origin = &loaded.config.port.origin;
    let parts: Vec<&str> = origin.split('/').collect();
    let plain = |p: &&str| !p.is_empty() && *p != "." && *p != ".." && !p.starts_with('-');
    if parts.len() != 2 || !parts.iter().all(plain) {
        return Err(loaded.error_at("port.origin", format!("`{origin}` is not a port origin (category/name)")));
    }
    Ok(())
}

impl Port {
    fn allow_dirty(&self, cx: &Cx) -> bool {
        self.allow_dirty || cx.config().port.allow_dirty
    }

    fn locate(&self, cx: &Cx) -> Result<Where> {
        let cfg = &cx.config().port;
        let checkout = cx.resolve(&cfg.colibri);
        git::require_checkout(&checkout, "port.colibri")?;
        crate::fsx::check_contained(Utf8Path::new(&cfg.origin))
            .with_context(|| format!("port.origin `{}` is not a category/name origin", cfg.origin))?;
        Ok(Where {
            source: checkout.join(&cfg.source),
            lock: checkout.join(&cfg.lock),
            target: cx.resolve(&cfg.overlay).join(&cfg.origin),
            checkout,
        })
    }

    /// `port --print-crates`: the Makefile.crates a Cargo.lock gives, to stdout.
    pub fn print_crates(&self, loaded: &crate::config::Loaded, ui: &Ui) -> Result<()> {
        let lock = match &self.lock {
            Some(p) => p.clone(),
            None => {
                let cfg = &loaded.config.port;
                loaded.resolve(&cfg.colibri).join(&cfg.lock)
            }
        };
        let text = fs::read_to_string(&lock).with_context(|| format!("cannot read the Cargo.lock {lock}"))?;
        ui.print_raw(&cargo_crates::parse(&text, lock.as_str())?.makefile());
        Ok(())
    }
}

impl Stage for Port {
    const NAME: StageName = StageName::Port;
    type Outputs = PortOutputs;
    type Plan = PortPlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let w = self.locate(cx)?;
        let mut fp = Fingerprint::new();
        fp.str("head", git::head_commit(&w.checkout).as_deref().unwrap_or("unknown"))
            .str("allow_dirty", &self.allow_dirty(cx).to_string())
            .str("target", w.target.as_str());
        fp.tree("source", &w.source)?;
        fp.file("lock", &w.lock)?;
        Ok(fp)
    }

    fn outputs_intact(&self, cx: &Cx, outputs: &PortOutputs) -> bool {
        staged_digest(&cx.resolve(&outputs.port_dir)).is_ok_and(|d| d == outputs.tree)
            // A record without the copy (made before port kept one) is not enough for
            // audit and sign's SBOM: port runs again.
            && outputs.lock.as_ref().is_some_and(|l| {
                crate::fingerprint::sha256_file(&cx.run.abs(l)).is_ok_and(|s| s == outputs.cargo_lock_sha256)
            })
    }

    fn plan(&self, cx: &Cx) -> Result<PortPlan> {
        let w = self.locate(cx)?;
        let cfg = &cx.config().port;
        let mut steps = Plan::default();

        // The version the port builds, and the tag it must come from.
        let makefile = w.source.join("Makefile");
        let text = fs::read_to_string(&makefile)
            .with_context(|| format!("cannot read the port Makefile {makefile}"))
            .help("is port.source right for this checkout?")?;
        let vars = MakeVars::parse(&text, makefile.as_str());
        let portname = vars.get("PORTNAME")?;
        let distversion = vars.get("DISTVERSION")?;
        let tag = format!("{}{distversion}", vars.get_or("DISTVERSIONPREFIX", "")?);

        // The checkout must be the release tag, clean.
        steps.run(&git::git(&cx.config().tools, &w.checkout).args(["rev-parse", "--verify", "HEAD^{commit}"]));
        steps.run(&git::git(&cx.config().tools, &w.checkout).args([
            "status",
            "--porcelain",
            "--untracked-files=normal",
        ]));
        let state = Checkout::inspect(&cx.config().tools, &w.checkout, &tag, &cx.log)?;
        let problems = state.problems(&tag);
        let allow_dirty = self.allow_dirty(cx);
        if !problems.is_empty() && !allow_dirty {
            bail!(
                failure!(
                    "the colibri checkout {} is not a release checkout of {portname} {tag}:\n  {}",
                    w.checkout,
                    problems.join("\n  ")
                )
                .help(format!(
                    "check out the tag (git -C {} checkout {tag}), or pass --allow-dirty for a development build",
                    w.checkout
                ))
            );
        }
        for p in &problems {
            steps.note(format!("allowed by --allow-dirty: {p}"));
        }

        // What gets copied: regular files only, nothing that escapes.
        let files = port_files(&w.source)?;
        let mut missing: Vec<String> = REQUIRED
            .iter()
            .map(|f| Utf8PathBuf::from(*f))
            .chain(cfg.services.iter().map(|s| Utf8PathBuf::from(format!("files/{s}.in"))))
            .filter(|f| !files.contains(f))
            .map(|f| f.to_string())
            .collect();
        missing.sort();
        if !missing.is_empty() {
            bail!(
                failure!("the port {} lacks {}", w.source, missing.join(", "))
                    .help("the port must ship Makefile, Makefile.crates, pkg-descr, pkg-plist and files/NAME.in for each of port.services")
                    .product()
            );
        }
        steps.check(format!("{} files in {}: regular files only, none escaping", files.len(), w.source));

        // CARGO_CRATES must be what the framework generates from the lock.
        let lock_text = fs::read_to_string(&w.lock).with_context(|| format!("cannot read {}", w.lock))?;
        // A lock the ports framework cannot read is colibri's to fix.
        let crates = cargo_crates::parse(&lock_text, w.lock.as_str()).class(Class::Product)?;
        let expected = crates.makefile();
        let committed_path = w.source.join("Makefile.crates");
        let committed = fs::read_to_string(&committed_path).with_context(|| format!("cannot read {committed_path}"))?;
        if committed != expected {
            let diff = similar::TextDiff::from_lines(&committed, &expected)
                .unified_diff()
                .context_radius(2)
                .header(committed_path.as_str(), &format!("generated from {}", w.lock))
                .to_string();
            // One help line that goes on: the command to run, indented below it.
            bail!(
                failure!("CARGO_CRATES in {committed_path} does not match {}:\n{}", w.lock, diff.trim_end_matches('\n'))
                    .help(format!(
                        "regenerate it in colibri and commit it:\n  cargo xtask port --print-crates --lock {} > {committed_path}",
                        w.lock
                    ))
                    .product()
            );
        }
        steps.check(format!("CARGO_CRATES ({} entries) matches {}", crates.entries().len(), w.lock));

        let staging = w.target.with_file_name(format!(".{}.tmp.PID.N", w.target.file_name().unwrap_or("port")));
        steps.push(Step::Copy { from: w.source.clone(), to: staging.clone() });
        steps.push(Step::Rename { from: staging, to: w.target.clone() });

        let outputs = PortOutputs {
            origin: cfg.origin.clone(),
            port_dir: crate::fsx::relative_path(&w.target, &cx.loaded.base),
            overlay: crate::fsx::relative_path(&cx.resolve(&cfg.overlay), &cx.loaded.base),
            checkout: crate::fsx::relative_path(&w.checkout, &cx.loaded.base),
            portname,
            distversion,
            tag,
            commit: state.head.clone(),
            dirty: !problems.is_empty(),
            allow_dirty,
            cargo_lock_sha256: sha256_bytes(lock_text.as_bytes()),
            crates: crates.entries().len(),
            tree: String::new(), // digest of the staged copy, set once it exists
            names: PortNames::read(&w.source, &cfg.services)?,
            lock: None, // the copy in the run directory, set once it is written
            members: members(&vars, &w.checkout)?,
            repository: git::origin_url(&w.checkout),
        };
        steps.push(Step::Write {
            path: cx.stage_dir(StageName::Port)?.join("Cargo.lock"),
            what: format!("copy of {} for audit and the SBOM", w.lock),
        });
        Ok(PortPlan { steps, source: w.source, target: w.target, files, outputs, lock_text })
    }

    fn execute(&self, cx: &mut Cx, plan: PortPlan) -> Result<PortOutputs> {
        let parent = plan.target.parent().context("the staged port has no parent directory")?;
        fs::create_dir_all(parent).with_context(|| format!("cannot create {parent}"))?;
        fsx::remove_stale_temps(parent);
        let staging = fsx::temp_beside(&plan.target);
        let copied = copy_files(&plan.source, &staging, &plan.files);
        if let Err(e) = copied {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        fsx::replace_dir(&staging, &plan.target)?;
        let mut outputs = plan.outputs;
        outputs.tree = staged_digest(&plan.target)?;
        let lock = cx.stage_dir(StageName::Port)?.join("Cargo.lock");
        fsx::write_atomic(&lock, plan.lock_text.as_bytes())?;
        outputs.lock = Some(cx.run.rel(&lock));
        if outputs.dirty {
            cx.say(format!("staged {} from a checkout that is not a clean release tag (allowed)", outputs.origin));
        }
        cx.say(format!(
            "staged {} {} ({} files) at {}",
            outputs.portname,
            outputs.distversion,
            plan.files.len(),
            outputs.port_dir
        ));
        Ok(outputs)
    }
}

/// Digest of the staged port, leaving out `distinfo`: makesum writes that file into
/// the staged port, and doing so must not make the port look changed.
fn staged_digest(dir: &Utf8Path) -> Result<String> {
    let mut tree = Fingerprint::new();
    tree.tree_except("staged", dir, &["distinfo"])?;
    Ok(tree.finish())
}

/// Lists a port's files (relative paths, sorted), refusing symlinks, special files and
/// anything whose name could escape the directory.
fn port_files(root: &Utf8Path) -> Result<Vec<Utf8PathBuf>> {
    if !root.is_dir() {
        bail!(failure!("the port directory {root} does not exist").help("is port.source right for this checkout?"));
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Utf8Path, dir: &Utf8Path, out: &mut Vec<Utf8PathBuf>) -> Result<()> {
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot read {dir}"))? {
        let entry = entry.with_context(|| format!("cannot read {dir}"))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(path).with_context(|| format!("cannot stat {path}"))?;
        let rel = path.strip_prefix(root).unwrap_or(path).to_owned();
        fsx::check_contained(&rel)?;
        if meta.file_type().is_symlink() {
            bail!(
                failure!("the port contains a symlink, {path}; ports are copied as regular files only")
                    .help("replace it with the file it points to")
                    .product()
            );
        } else if meta.is_dir() {
            walk(root, path, out)?;
        } else if meta.is_file() {
            out.push(rel);
        } else {
            bail!(failure!("the port contains {path}, which is not a regular file").product());
        }
    }
    Ok(())
}

fn copy_files(from: &Utf8Path, to: &Utf8Path, files: &[Utf8PathBuf]) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {to}"))?;
    for rel in files {
        let (src, dst) = (from.join(rel), to.join(rel));
        if let Some(dir) = dst.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
        }
        fs::copy(&src, &dst).with_context(|| format!("cannot copy {src} to {dst}"))?;
        let mode = fs::metadata(&src)?.permissions().mode() & 0o755;
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode | 0o644))?;
        fs::File::open(&dst).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {dst}"))?;
    }
    Ok(())
}

impl Port {
    /// `cargo xtask port`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        if self.print_crates {
            return self.print_crates(engine.loaded, engine.ui);
        }
        engine.run_one(&self, self.dry_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_come_from_the_plist() {
        let plist = "bin/clawdie\n%%TESTAGENT%%bin/colibri-test-agent\n%%A%%%%B%%sbin/x\n@(root,wheel,4555) libexec/helper\n\
                     @dir share/colibri\n@sample etc/colibri.conf.sample\nshare/doc/colibri/README\nbin/sub/dir\n\
                     bin/a-very-long-program-name-indeed\n";
        assert_eq!(plist_programs(plist), ["clawdie", "colibri-test-agent", "x", "helper", "a-very-long-program"]);
    }

    #[test]
    fn names_come_from_the_port() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        fs::write(dir.join("Makefile"), "PORTNAME=x\nUSE_RC_SUBR=\tcolibri_daemon \\\n\t\tcolibri_bridge\n").unwrap();
        fs::write(dir.join("pkg-plist"), "bin/colibri-daemon\n").unwrap();
        let names = PortNames::read(dir, &["colibri_daemon".into(), "extra".into()]).unwrap();
        assert_eq!(names.services, ["colibri_daemon", "colibri_bridge", "extra"]);
        assert_eq!(names.binaries, ["colibri-daemon"]);
    }
}
