//! Every command-line flag, in one place. Each subcommand is a struct; the stage
//! structs are the stages themselves (`impl Stage for Port` lives in `port.rs`), so
//! `release` builds them by parsing an empty argument list (`engine::default_stage`):
//! their defaults are clap's, in one place. They deliberately do not derive `Default`.

use camino::Utf8PathBuf;
use clap::{Args, Parser, Subcommand};

use crate::stage::StageName;

/// mother-build: colibri -> signed FreeBSD packages -> pkg.clawdie.si -> clawdie ISO -> boot gate.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// The pipeline file [default: pipeline.toml at the top of this repository]
    #[arg(long, global = true, value_name = "PATH", env = "MOTHER_BUILD_CONFIG")]
    pub config: Option<Utf8PathBuf>,

    /// The colibri checkout to build (overrides port.colibri)
    #[arg(long, global = true, value_name = "PATH")]
    pub colibri: Option<Utf8PathBuf>,

    /// Where runs live (overrides pipeline.state_dir)
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<Utf8PathBuf>,

    /// Override any setting for this invocation, e.g. -o gate.backend=qemu (repeatable)
    #[arg(short = 'o', long = "option", global = true, value_name = "KEY=VALUE")]
    pub options: Vec<String>,

    /// In plain output, also print every line the commands print
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Run the per-target stages (bulk, sign, publish, iso, gate) for this target only
    /// ([[targets]] in pipeline.toml) [default: every target, in order]
    #[arg(long, global = true, value_name = "NAME")]
    pub target: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Provision this host once for poudriere (config, signing key, jail, ports tree, overlay)
    Setup(Setup),
    /// Stage sysutils/colibri from the colibri checkout into ports/ and check CARGO_CRATES
    Port(Port),
    /// Fetch and verify every distfile into the distfiles cache and write distinfo
    Makesum(Makesum),
    /// Check Cargo.lock against the RustSec advisory database and the package against VuXML, under the policy in [audit]
    Audit(Audit),
    /// Build the packages with poudriere bulk and judge the build from its status files
    Bulk(Bulk),
    /// Verify the repository, sign its catalogue with the release key, write the manifest
    Sign(Sign),
    /// Publish the repository as a new version and switch `latest` to it atomically
    Publish(Publish),
    /// Install the packages into the ISO root with pkg -r, check the profile, build the image
    Iso(Iso),
    /// Boot the image and judge its serial console (markers, forbidden patterns, timeouts)
    Gate(Gate),
    /// Run the pipeline's stages in order, skipping those whose inputs are unchanged
    Release(Release),
    /// Pack what a stage produced in the current run (outputs, files, run identity) into one file for another machine
    Bundle(Bundle),
    /// Add a bundle to this machine's run after checking every file against its digest
    Unbundle(Unbundle),
    /// Show the current run: each stage's status, times and log
    Status(Status),
    /// Check a published release: its signed provenance, every file it lists, the catalogue, the SBOM
    VerifyRelease(VerifyRelease),
    /// Write a run's report (report.html in its run directory) and print its path
    Report(Report),
    /// What changed between two runs: packages, crates, failing ports, stage durations
    Diff(Diff),
    /// Run the whole pipeline on the example colibri, against a simulated FreeBSD host where Linux cannot do the work
    Demo(Demo),
    /// Regenerate docs/pipeline-toml.md and the man page docs/cargo-xtask.1 from the code
    Docs(Docs),
    /// Write the Forgejo workflow (.forgejo/workflows/release.yml) from pipeline.toml: a build job per target, one signing job, iso and gate per image target
    CiWorkflow(CiWorkflow),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) to stdout
    Completions(Completions),
}

impl Command {
    /// Whether the command continues the current run (so it reuses how the run was
    /// started: `--config`, `--state-dir`, `--colibri`, `-o`). The stages' variants that
    /// work outside the run (`makesum --port`, `sign --verify-only`, `bulk --judge`,
    /// `port --print-crates`, `setup`) do not.
    pub fn continues_the_run(&self) -> bool {
        match self {
            Command::Port(c) => !c.print_crates,
            Command::Makesum(c) => c.port.is_none(),
            Command::Audit(c) => !c.json,
            Command::Bulk(c) => c.judge.is_none(),
            Command::Sign(c) => !c.verify_only,
            Command::Publish(_) | Command::Iso(_) | Command::Gate(_) => true,
            Command::Release(r) => r.resume,
            Command::Bundle(_) => true,
            Command::Setup(_)
            | Command::Unbundle(_)
            | Command::Status(_)
            | Command::VerifyRelease(_)
            | Command::Report(_)
            | Command::Diff(_)
            | Command::Demo(_)
            | Command::Docs(_)
            | Command::CiWorkflow(_)
            | Command::Completions(_) => false,
        }
    }
}

/// setup
#[derive(Debug, Clone, Args)]
pub struct Setup {
    /// Change nothing; print one line per item (ok, missing, differs); exit 0 only when all are ok
    #[arg(long, conflicts_with_all = ["write", "dry_run"])]
    pub check: bool,
    /// Overwrite an existing poudriere.conf that differs (a backup is kept)
    #[arg(long)]
    pub write: bool,
    /// Print the commands and file operations; perform none
    #[arg(long)]
    pub dry_run: bool,
    /// Which machine this is, and so which items it gets (the key only where it signs)
    #[arg(long, value_enum, default_value_t = crate::setup::Role::All)]
    pub role: crate::setup::Role,
}

/// port
#[derive(Debug, Clone, Args)]
pub struct Port {
    /// Print the commands and file operations; perform none
    #[arg(long)]
    pub dry_run: bool,
    /// Accept a checkout that is not exactly the release tag, or has local changes (recorded in the run)
    #[arg(long)]
    pub allow_dirty: bool,
    /// Print the Makefile.crates that a Cargo.lock gives, to stdout, and stop
    #[arg(long)]
    pub print_crates: bool,
    /// Cargo.lock for --print-crates [default: the colibri checkout's]
    #[arg(long, value_name = "PATH", requires = "print_crates")]
    pub lock: Option<Utf8PathBuf>,
}

/// makesum
#[derive(Debug, Clone, Args)]
pub struct Makesum {
    /// Print what would be fetched from where; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Any USES=cargo port directory [default: the staged port]
    #[arg(long, value_name = "DIR")]
    pub port: Option<Utf8PathBuf>,
    /// Distfiles directory [default: poudriere.distfiles]
    #[arg(long, value_name = "DIR")]
    pub distdir: Option<Utf8PathBuf>,
    /// Use only the distfiles directory and cargo's cache; no network
    #[arg(long)]
    pub offline: bool,
    /// Change nothing; fail with a diff when distinfo is stale
    #[arg(long)]
    pub check: bool,
    /// With --port: the Cargo.lock to verify crates against [default: DIR/Cargo.lock, else DIR/distinfo]
    #[arg(long, value_name = "PATH", requires = "port")]
    pub lock: Option<Utf8PathBuf>,
}

/// audit
#[derive(Debug, Clone, Args)]
pub struct Audit {
    /// Print what would be checked against what; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Check now and print the report as JSON on stdout (records nothing in the run)
    #[arg(long)]
    pub json: bool,
}

/// bulk
#[derive(Debug, Clone, Args)]
pub struct Bulk {
    /// Print the poudriere command lines; run none
    #[arg(long)]
    pub dry_run: bool,
    /// poudriere set (-z), e.g. `validation` for the build with the test agent
    #[arg(long = "set", value_name = "SET")]
    pub set: Option<String>,
    /// Judge an existing build from its status files and report it; build nothing
    /// (DIR: POUDRIERE_DATA/logs/bulk/MASTERNAME/BUILDNAME)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["dry_run", "set", "reproduce"])]
    pub judge: Option<Utf8PathBuf>,
    /// Build a second time, fresh, and compare every package byte for byte (as bulk.reproduce = true)
    #[arg(long)]
    pub reproduce: bool,
}

/// sign
#[derive(Debug, Clone, Args)]
pub struct Sign {
    /// Print what would be verified and signed; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Repository directory to work on [default: what bulk recorded]
    #[arg(long, value_name = "DIR")]
    pub repo: Option<Utf8PathBuf>,
    /// Only verify; exit 0 when good, 1 with one line per problem when not
    #[arg(long)]
    pub verify_only: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// Whom a repository's signatures are checked against, and the ABI its packages carry:
/// `sign` and `verify-release` take the same flags.
#[derive(Debug, Clone, Default, Args)]
pub struct TrustArgs {
    /// Trust this public key (pubkey mode) [default: signing.pubkey]
    #[arg(long, value_name = "FILE", conflicts_with = "fingerprints")]
    pub pubkey: Option<Utf8PathBuf>,
    /// Trust this fingerprints directory, with trusted/ and revoked/ (fingerprints mode)
    #[arg(long, value_name = "DIR")]
    pub fingerprints: Option<Utf8PathBuf>,
    /// ABI every package must carry [default: repository.abi]
    #[arg(long, value_name = "ABI")]
    pub abi: Option<String>,
}

impl TrustArgs {
    /// --abi, else repository.abi.
    pub fn abi(&self, loaded: &crate::config::Loaded) -> String {
        self.abi.clone().unwrap_or_else(|| loaded.config.repository.abi.clone())
    }
}

/// publish
#[derive(Debug, Clone, Args)]
pub struct Publish {
    /// Print the copies, links and switch; perform none
    #[arg(long)]
    pub dry_run: bool,
    /// Switch `latest` back to VERSION [default: the version before the current one]
    #[arg(long, value_name = "VERSION", num_args = 0..=1, default_missing_value = "")]
    pub rollback: Option<String>,
}

/// iso
#[derive(Debug, Clone, Args)]
pub struct Iso {
    /// Print the pkg commands and checks; perform none
    #[arg(long)]
    pub dry_run: bool,
    /// Profile to check the ISO root against [default: iso.profile]
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
}

/// gate
#[derive(Debug, Clone, Args)]
pub struct Gate {
    /// Print the VM command lines and checks; start nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Hypervisor backend [default: gate.backend]
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<crate::gate::Backend>,
    /// Image to boot [default: gate.image, else what iso recorded]
    #[arg(long, value_name = "PATH")]
    pub image: Option<Utf8PathBuf>,
    /// Open the guest network with pf (tap on a bridge and a pass rule) for the run
    #[arg(long)]
    pub pf_allow: bool,
    /// With --backend command: the program whose stdout is the console, and its arguments
    #[arg(last = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
}

/// release
#[derive(Debug, Clone, Default, Args)]
pub struct Release {
    /// Start at this stage
    #[arg(long, value_name = "STAGE")]
    pub from: Option<StageName>,
    /// Stop after this stage
    #[arg(long, value_name = "STAGE")]
    pub to: Option<StageName>,
    /// Continue the last run at the stage that failed or was interrupted
    #[arg(long)]
    pub resume: bool,
    /// Rerun stages even when their inputs are unchanged
    #[arg(long)]
    pub force: bool,
    /// Print every stage's plan; perform nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// bundle
#[derive(Debug, Clone, Args)]
pub struct Bundle {
    /// The stage whose work to pack (bulk)
    #[arg(long, value_name = "STAGE")]
    pub stage: StageName,
    /// The bundle file to write (replaced atomically)
    #[arg(long, value_name = "FILE")]
    pub output: Utf8PathBuf,
}

/// unbundle
#[derive(Debug, Clone, Args)]
pub struct Unbundle {
    /// The bundle `cargo xtask bundle` wrote
    #[arg(value_name = "FILE")]
    pub file: Utf8PathBuf,
    /// Receive it in a new run, even when the current run is of another release
    #[arg(long)]
    pub new_run: bool,
}

/// status
#[derive(Debug, Clone, Default, Args)]
pub struct Status {
    /// Machine-readable output (schema documented in docs/runbook.md)
    #[arg(long)]
    pub json: bool,
}

/// verify-release
#[derive(Debug, Clone, Args)]
pub struct VerifyRelease {
    /// The repository: its URL (the repo conf's url with ${ABI} expanded, e.g.
    /// https://pkg.clawdie.si/FreeBSD:15:amd64/latest) or its directory
    #[arg(value_name = "URL|DIR")]
    pub location: String,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Seconds to connect and to get each answer over HTTP (a whole download gets ten times as long)
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout_secs: u64,
}

/// report
#[derive(Debug, Clone, Default, Args)]
pub struct Report {
    /// The run (its id, or the start of it) [default: the current run]
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// Open the report in the browser (xdg-open; open on macOS)
    #[arg(long)]
    pub open: bool,
}

/// diff
#[derive(Debug, Clone, Default, Args)]
pub struct Diff {
    /// The older run [default: the last successful release before the newer one]
    #[arg(value_name = "A")]
    pub a: Option<String>,
    /// The newer run [default: the current run]
    #[arg(value_name = "B")]
    pub b: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

/// demo
#[derive(Debug, Clone, Default, Args)]
pub struct Demo {
    /// Working directory for the demo [default: target/mother-build-demo]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<Utf8PathBuf>,
    /// Replay the recorded console in the gate even where QEMU could boot the image
    #[arg(long)]
    pub no_qemu: bool,
}

/// docs
#[derive(Debug, Clone, Default, Args)]
pub struct Docs {
    /// Change nothing; fail when the file is stale
    #[arg(long)]
    pub check: bool,
}

/// ci-workflow
#[derive(Debug, Clone, Args)]
pub struct CiWorkflow {
    /// Change nothing; fail when the file is stale
    #[arg(long)]
    pub check: bool,
    /// Write it here instead [default: .forgejo/workflows/release.yml in this repository]
    #[arg(long, value_name = "FILE")]
    pub output: Option<Utf8PathBuf>,
}

/// completions
#[derive(Debug, Clone, Args)]
pub struct Completions {
    /// The shell. The script completes the command `xtask`: the built program
    /// (target/debug/xtask), or a shell alias such as `alias xtask='cargo xtask'`
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}
