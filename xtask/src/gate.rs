//! gate: boot the image and judge its serial console. Required markers in order, each
//! with a deadline; forbidden patterns that fail the boot the moment they appear; a
//! restart-loop rule; a global timeout. After the last marker, probes log in on the
//! console and ask the guest whether its services run, and a heartbeat may be required
//! to keep coming. The VM is torn down on every path, and the whole console, a JUnit
//! file and a JSON result are left in the run directory.
//!
//! Exit status: 0 the image passed, 1 the image failed (never retried), 2 the gate
//! could not judge it (an infrastructure error: the VM did not start, firmware missing;
//! retried `gate.retries` times first).

mod backend;
mod checks;
mod network;
mod probe;
mod results;
mod scan;
mod session;

pub use results::printable;

use std::time::Duration;

use anyhow::{Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::cli::Gate;
use crate::config::Loaded;
use crate::failure;
use crate::failure::{Class, ResultExt};
use crate::fingerprint::Fingerprint;
use crate::settings;
use crate::stage::{Cx, Plan, Stage, StageName, StagePlan, Step};

pub use checks::{Forbidden, Heartbeat, Marker, RestartLoop};
pub use probe::Probe;

/// The hypervisor (or program) that provides the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// bhyve on FreeBSD: UEFI firmware or bhyveload, console on stdio.
    Bhyve,
    /// QEMU, wherever it runs: an image, or a kernel and initrd.
    Qemu,
    /// Any program whose stdout is the serial console (other hypervisors, tests).
    Command,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Bhyve => "bhyve",
            Backend::Qemu => "qemu",
            Backend::Command => "command",
        }
    }
}

/// How bhyve boots the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BhyveBoot {
    /// UEFI firmware (`-l bootrom,FIRMWARE`).
    Uefi,
    /// The FreeBSD loader in userland (`bhyveload`), then bhyve without firmware.
    Bhyveload,
}

/// How QEMU attaches the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QemuDrive {
    /// `-cdrom IMAGE` (an ISO).
    Cdrom,
    /// `-drive file=IMAGE,format=raw,if=virtio` (a disk image).
    Disk,
}

/// The machine QEMU emulates (docs/reference/boot-gate.md, "QEMU for aarch64").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QemuArch {
    /// A PC: `[tools] qemu` (qemu-system-x86_64), its default machine, the serial port
    /// `ttyS0`.
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    /// The `virt` board: `[tools] qemu_aarch64` (qemu-system-aarch64) `-M virt`, a
    /// PL011 serial port (`ttyAMA0` to Linux, `uart0` to FreeBSD), UEFI firmware
    /// (`gate.qemu.firmware`) to boot an image.
    Aarch64,
}

impl QemuArch {
    pub fn as_str(self) -> &'static str {
        match self {
            QemuArch::X86_64 => "x86_64",
            QemuArch::Aarch64 => "aarch64",
        }
    }

    /// The QEMU arch of a FreeBSD `MACHINE_ARCH` / poudriere arch (`amd64`,
    /// `aarch64`, `arm64.aarch64`), for a target's gate.
    pub fn of_freebsd_arch(arch: &str) -> Option<QemuArch> {
        match arch {
            "amd64" | "x86_64" => Some(QemuArch::X86_64),
            "aarch64" | "arm64" | "arm64.aarch64" => Some(QemuArch::Aarch64),
            _ => None,
        }
    }

    /// The kernel command line's console, with a direct kernel.
    pub fn linux_console(self) -> &'static str {
        match self {
            QemuArch::X86_64 => "ttyS0",
            QemuArch::Aarch64 => "ttyAMA0",
        }
    }
}

settings! {
    /// gate: boot the image and judge its serial console. The checks: `markers` must
    /// appear in order, each within its deadline; any of `forbidden` (and
    /// `forbidden_extra`) fails the boot the moment it appears; `restart_loop` fails a
    /// service that keeps restarting; `timeout_secs` bounds the whole boot. After the
    /// last marker, `probes` log in on the console ([gate.login]) and run commands that
    /// must give an exit status or output, and `heartbeat` may require a line to keep
    /// coming; the verdict comes when both the settle period and the probes are over.
    /// Patterns are regular expressions (Rust `regex`, bytes, Unicode off) matched
    /// within one console line; `^` is the start of a line, `$` its end. Escape
    /// sequences are ignored. In patterns, `{rc}` stands for the port's rc.d services,
    /// `{bin}` for its programs (both read from the port), `{kernel}` and `{syslog}` for
    /// the optional prefix syslogd writes before a kernel or program line.
    pub struct GateConfig {
        /// `bhyve`, `qemu` or `command` (any program whose stdout is the console; see
        /// [gate.command]). `--backend` overrides it.
        pub backend: Backend = Backend::Bhyve,
        /// The image to boot instead of the one `iso` recorded (relative to
        /// pipeline.toml). `--image` overrides both. With bhyve, no commas (bhyve cuts
        /// `-s` values at them).
        pub image: Option<Utf8PathBuf> = None,
        /// Guest memory, e.g. `2G` or `512M` (bhyve `-m`, QEMU `-m`).
        pub memory: String = "2G".into(),
        /// Guest CPUs (bhyve `-c`, QEMU `-smp`).
        pub cpus: u32 = 2,
        /// The VM's name (bhyve: /dev/vmm/NAME; letters, digits, `-`, `_`, `.`; not `.`
        /// or `..`).
        pub vm_name: String = "clawdie-gate".into(),
        /// The longest the whole boot may take, start to last marker, in seconds.
        pub timeout_secs: u64 = 900,
        /// After the last marker, how long to keep watching for forbidden patterns, in
        /// seconds; the guest must still be running at the end. 0 passes at the marker.
        pub settle_secs: u64 = 10,
        /// Seconds between SIGTERM and SIGKILL when the VM is stopped.
        pub grace_secs: u64 = 10,
        /// Retries after an infrastructure error (the VM could not start). A failure of
        /// the image is never retried.
        pub retries: u32 = 1,
        /// The most console.log keeps, in MiB (1 to 65536, that is 64 GiB). A console that goes on past it
        /// is still read and judged to the end; the file says where it was cut and how
        /// much it left out, and the stage log's copy of the console stops there too.
        pub console_log_max_mib: u64 = 64,
        /// Required markers, in order. Each is `{ text = "..." }` (literal) or
        /// `{ regex = "..." }`, with `within_secs`: its deadline, counted from the
        /// previous marker (the first: from the start).
        pub markers: Vec<Marker> = checks::default_markers(),
        /// Forbidden patterns: `{ name = "...", regex = "..." }`, optionally
        /// `except = "..."` (a line that also matches it is harmless) and
        /// `before_last_marker = true` (only forbidden until the last marker). Replacing
        /// the list replaces the FreeBSD defaults (docs/reference/boot-gate.md lists each
        /// with its source); add to them with `forbidden_extra`.
        pub forbidden: Vec<Forbidden> = checks::default_forbidden(),
        /// More forbidden patterns, checked as well as `forbidden`.
        pub forbidden_extra: Vec<Forbidden> = Vec::new(),
        /// Processes, as the kernel names them (the executable's basename, at most 19
        /// characters), that may crash during the boot: a pattern with a `process` group
        /// (the default `process-crash`) does not fail on them.
        pub expected_crashes: Vec<String> = Vec::new(),
        /// A restart loop: `regex` seen `count` times within `within_secs` fails the
        /// boot. `count = 0` turns the rule off.
        pub restart_loop: RestartLoop = RestartLoop::default(),
        /// Commands run on the guest after the last marker, each `{ name = "...", run =
        /// "...", status = 0, output = "regex", within_secs = 30 }` (`status` and/or
        /// `output`: the exit status it must give, a regex some line of its output must
        /// match). Each is a JUnit test case. An empty list: no login, no probes.
        pub probes: Vec<Probe> = probe::default_probes(),
        /// How the probes log in; see [gate.login].
        pub login: LoginConfig = LoginConfig::default(),
        /// A line that must keep coming after the last marker (for images without a
        /// login): `{ regex = "...", max_gap_secs = 5 }`; its absence for longer than
        /// the gap fails the boot at that moment. Unset: none.
        pub heartbeat: Option<Heartbeat> = None,
        /// bhyve settings; see [gate.bhyve].
        pub bhyve: BhyveConfig = BhyveConfig::default(),
        /// QEMU settings; see [gate.qemu].
        pub qemu: QemuConfig = QemuConfig::default(),
        /// `command` backend settings; see [gate.command].
        pub command: CommandConfig = CommandConfig::default(),
    }
}

settings! {
    /// gate.login: how the probes log in on the serial console: wait for getty's login
    /// prompt, send the account name (and the password when asked), wait for the shell
    /// prompt. A login that does not come within `within_secs` fails the image (every
    /// marker was seen, so the machine works).
    pub struct LoginConfig {
        /// The account. Probe as root: `service NAME status` reads a pidfile only root
        /// can read, and answers "not running" to anyone else.
        pub user: String = "root".into(),
        /// A file holding the account's password on its first line, kept like the
        /// signing key: mode 0600, never printed, logged or copied. Unset: the account
        /// has none (FreeBSD lets root in on a console marked `secure` in /etc/ttys).
        pub password_file: Option<Utf8PathBuf> = None,
        /// getty's login prompt: a regex matched at the end of the unfinished console line.
        pub login_prompt: String = "login: $".into(),
        /// The shell prompt: a regex matched at the end of the unfinished console line
        /// (root's sh on FreeBSD prompts `root@HOST:~ # `).
        pub prompt: String = r"[#$] $".into(),
        /// Seconds from the last marker to the shell's first answer.
        pub within_secs: u64 = 60,
    }
}

settings! {
    /// gate.bhyve: the bhyve backend (FreeBSD). The VM is destroyed with
    /// `bhyvectl --vm=NAME --destroy` before and after every run; stopping it is SIGTERM
    /// (an ACPI power button), `grace_secs`, SIGKILL.
    pub struct BhyveConfig {
        /// `uefi` (firmware, `-l bootrom,FIRMWARE`) or `bhyveload` (the FreeBSD loader
        /// in userland first, then bhyve without firmware).
        pub boot: BhyveBoot = BhyveBoot::Uefi,
        /// UEFI firmware for `boot = "uefi"` (package edk2-bhyve, which `cargo xtask
        /// setup` installs). No commas: bhyve cannot take one in `-l bootrom,PATH`.
        pub firmware: Utf8PathBuf = "/usr/local/share/uefi-firmware/BHYVE_UEFI.fd".into(),
        /// The LPC serial port whose console is on stdio (`-l com1,stdio`).
        pub console: String = "com1".into(),
        /// The emulated device holding the image: `ahci-cd` (ISO), `ahci-hd` or
        /// `virtio-blk` (disk images).
        pub device: String = "ahci-cd".into(),
        /// More bhyve arguments, placed before the VM name.
        pub extra_args: Vec<String> = Vec::new(),
        /// `--pf-allow`: the bridge the guest's tap joins.
        pub bridge: String = "bridge0".into(),
        /// `--pf-allow`: the pf anchor the pass rules are loaded into. The main ruleset
        /// (/etc/pf.conf) must reference it, e.g. `anchor "mother-build/*"`, or its rules
        /// never apply: the gate checks `pfctl -s rules` before it loads them.
        pub pf_anchor: String = "mother-build/gate".into(),
        /// `--pf-allow`: the rules, one a line; `{tap}` and `{bridge}` are replaced by
        /// the interfaces. The default passes the guest's tap only: a rule on the bridge
        /// would open everything that crosses it. NAT for the guest belongs to the main
        /// ruleset.
        pub pf_rules: Vec<String> = vec!["pass quick on {tap} all keep state".into()],
    }
}

settings! {
    /// gate.qemu: the QEMU backend. QEMU exits 0 for power-off, panic, triple fault and
    /// SIGTERM alike, so its verdict comes from the console; a non-zero exit is an
    /// infrastructure error. Boots `kernel` + `initrd` when `kernel` is set (a Linux
    /// test guest), otherwise the image. `arch = "aarch64"` runs qemu-system-aarch64 on
    /// the `virt` board (an image needs `firmware`).
    pub struct QemuConfig {
        /// The machine to emulate: `x86_64` (a PC) or `aarch64` (the `virt` board). A
        /// per-target gate sets it from the target's arch.
        pub arch: QemuArch = QemuArch::X86_64,
        /// Accelerator (`-accel`): `tcg` is dependable everywhere; `kvm` where it is fast.
        pub accel: String = "tcg".into(),
        /// The CPU model (`-cpu`). Empty: QEMU's default on x86_64, `cortex-a57` on
        /// aarch64 (the virt board has no default CPU that boots a 64-bit guest).
        pub cpu: String = String::new(),
        /// A kernel to boot directly (`-kernel`), relative to pipeline.toml.
        pub kernel: Option<Utf8PathBuf> = None,
        /// Its initrd (`-initrd`).
        pub initrd: Option<Utf8PathBuf> = None,
        /// The kernel command line (`-append`), with a direct kernel. Empty: `console=`
        /// the arch's serial port (`ttyS0`, `ttyAMA0`) `panic=-1 quiet`.
        pub append: String = String::new(),
        /// Firmware (`-bios`). x86_64: unset is QEMU's BIOS; OVMF boots a UEFI image.
        /// aarch64: required to boot an image: the UEFI firmware built for QEMU's virt
        /// board (Debian's qemu-efi-aarch64: /usr/share/qemu-efi-aarch64/QEMU_EFI.fd).
        pub firmware: Option<Utf8PathBuf> = None,
        /// How the image is attached: `cdrom` or `disk`.
        pub drive: QemuDrive = QemuDrive::Cdrom,
        /// More QEMU arguments, placed last.
        pub extra_args: Vec<String> = Vec::new(),
    }
}

settings! {
    /// gate.command: the `command` backend, any program whose stdout is the serial
    /// console: `cargo xtask gate --backend command -- PROGRAM ARGS...`.
    pub struct CommandConfig {
        /// The program and its arguments, when none follow `--` on the command line.
        pub program: Vec<String> = Vec::new(),
        /// Exit statuses that mean the program could not provide a console (an
        /// infrastructure error, retried); any other end before the last marker is a
        /// failure of the image.
        pub infra_status: Vec<i32> = Vec::new(),
    }
}

/// The largest `gate.console_log_max_mib` (64 GiB).
const MAX_CONSOLE_LOG_MIB: u64 = 1 << 16;

/// Checks the gate settings when pipeline.toml is loaded, so a bad pattern stops every
/// command at once, pointing at its line, not after an hour of building.
pub fn validate(loaded: &Loaded) -> Result<()> {
    let mib = loaded.config.gate.console_log_max_mib;
    if !(1..=MAX_CONSOLE_LOG_MIB).contains(&mib) {
        return Err(loaded.error_at(
            "gate.console_log_max_mib",
            format!("console_log_max_mib must be from 1 to {MAX_CONSOLE_LOG_MIB} (MiB), not {mib}"),
        ));
    }
    checks::Checks::validate(loaded)?;
    probe::Probes::validate(loaded)?;
    backend::validate(loaded)
}

/// Refuses, before its first stage, a release that would end in a gate with nothing to
/// boot: the gate's backend needs an image, gate.image is unset and iso.build_command is
/// empty (so iso records none), which would otherwise fail only after every stage before.
pub fn check_release(loaded: &Loaded, stages: &[StageName]) -> Result<()> {
    let cfg = &loaded.config;
    if !stages.contains(&StageName::Gate) || cfg.gate.image.is_some() || !cfg.iso.build_command.is_empty() {
        return Ok(());
    }
    let needs_image = match cfg.gate.backend {
        Backend::Bhyve => true,
        Backend::Qemu => cfg.gate.qemu.kernel.is_none(),
        Backend::Command => false,
    };
    if !needs_image {
        return Ok(());
    }
    let mut refusal = loaded
        .failure_at(
            "iso.build_command",
            format!(
                "this release ends in gate, which boots an image with {}, but nothing makes one: iso.build_command is empty (iso builds no image) and gate.image is unset",
                cfg.gate.backend.as_str()
            ),
        )
    .help("set iso.build_command to the ISO build script, with `{root}` and `{image}` where it takes the staging root and the image (docs/runbook.md, \"The image the gate boots\"), or gate.image to an image to boot")
    .usage();
    let all = &cfg.pipeline.stages;
    if let Some(before) = all.iter().position(|s| *s == StageName::Gate).and_then(|i| i.checked_sub(1)) {
        refusal = refusal
            .help(format!("or stop before the gate: {}", loaded.xtask(&format!("release --to {}", all[before]))));
    }
    Err(refusal.into())
}

/// What `gate` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateOutputs {
    /// `pass` (a failure is an error, not an output).
    pub verdict: String,
    /// The JSON result, JUnit file and timestamped console, relative to the state directory.
    pub result: camino::Utf8PathBuf,
    pub junit: camino::Utf8PathBuf,
    pub console: camino::Utf8PathBuf,
    /// The backend that booted it.
    #[serde(default)]
    pub backend: String,
    /// The image booted (absolute), if the backend booted one.
    #[serde(default)]
    pub image: Option<camino::Utf8PathBuf>,
    /// The last marker, which decided the pass.
    #[serde(default)]
    pub decided_by: String,
    /// Seconds from the start of the boot to the last marker.
    #[serde(default)]
    pub seconds: f64,
    /// Attempts it took (more than one after infrastructure errors).
    #[serde(default)]
    pub attempts: u32,
    /// The identity of result.json, junit.xml and console.log (by their paths above)
    /// when the gate ended: one rewritten or replaced since makes the gate run again.
    #[serde(default)]
    pub produced: crate::identity::Produced,
}

/// The gate's plan: what `--dry-run` prints, and everything the run needs.
pub struct GatePlan {
    steps: Plan,
    vm: backend::Vm,
    checks: checks::Checks,
    probes: Option<probe::Probes>,
    network: Option<network::NetworkPlan>,
    timing: Timing,
}

impl StagePlan for GatePlan {
    fn steps(&self) -> &Plan {
        &self.steps
    }
}

/// The times the gate works with.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub timeout: Duration,
    pub settle: Duration,
    pub grace: Duration,
    pub retries: u32,
    /// The most console.log keeps, in bytes.
    pub console_log_max: u64,
}

impl Timing {
    fn from(cfg: &GateConfig) -> Timing {
        Timing {
            timeout: Duration::from_secs(cfg.timeout_secs),
            settle: Duration::from_secs(cfg.settle_secs),
            grace: Duration::from_secs(cfg.grace_secs),
            retries: cfg.retries,
            console_log_max: cfg.console_log_max_mib << 20,
        }
    }
}

impl Gate {
    fn backend(&self, cx: &Cx) -> Backend {
        self.backend.unwrap_or(cx.config().gate.backend)
    }

    /// The image to boot: `--image`, then `gate.image`, then what `iso` recorded; `None`
    /// when the backend needs none (the command backend, QEMU with a kernel). A dry run
    /// without iso's outputs shows `IMAGE`.
    fn image(&self, cx: &Cx, backend: Backend, steps: &mut Plan) -> Result<Option<Utf8PathBuf>> {
        let cfg = &cx.config().gate;
        let needed = match backend {
            Backend::Command => false,
            Backend::Qemu => cfg.qemu.kernel.is_none(),
            Backend::Bhyve => true,
        };
        if let Some(image) = &self.image {
            let image = crate::config::absolute(image)?;
            if backend == Backend::Bhyve && image.as_str().contains(',') {
                bail!(backend::comma_refusal("--image", image.as_str()).usage());
            }
            return Ok(Some(image));
        }
        if let Some(image) = &cfg.image {
            steps.note(format!("image from gate.image: {}", cx.resolve(image)));
            return Ok(Some(cx.resolve(image)));
        }
        if !needed {
            return Ok(None);
        }
        if !cx.has_output(StageName::Iso) && cx.dry_run {
            steps.note(
                "iso has not recorded an image in this run and gate.image is unset: IMAGE stands for the image iso will build",
            );
            return Ok(Some("IMAGE".into()));
        }
        let iso: crate::iso::IsoOutputs = cx.output(StageName::Iso)?;
        match iso.image {
            Some(image) => {
                steps.note(format!("image from iso: {image}"));
                Ok(Some(image))
            }
            None => bail!(
                failure!(
                    "iso recorded no image (it has no image build command configured), so there is nothing to boot"
                )
                .help("pass --image PATH, or set gate.image in pipeline.toml")
            ),
        }
    }

    fn plan_inner(&self, cx: &Cx) -> Result<GatePlan> {
        let cfg = &cx.config().gate;
        let backend = self.backend(cx);
        let mut steps = Plan::default();
        if !self.command.is_empty() && backend != Backend::Command {
            bail!(
                failure!(
                    "a console program after `--` needs the command backend (the backend is `{}`)",
                    backend.as_str()
                )
                .help("add --backend command")
            );
        }
        if self.pf_allow && backend != Backend::Bhyve {
            bail!(
                "--pf-allow opens the guest network with a tap, a bridge and pf, which only the bhyve backend uses (the backend is `{}`)",
                backend.as_str()
            );
        }
        let names = port_names(cx, &mut steps);
        let checks = checks::Checks::compile(cx.loaded, &names)?;
        let probes = probe::Probes::compile(cx.loaded)?;
        let image = self.image(cx, backend, &mut steps)?;
        let vm = backend::Vm::resolve(cx, backend, image, &self.command)?;
        let network = self.pf_allow.then(|| network::NetworkPlan::new(cx));
        vm.plan(cx, network.as_ref(), &mut steps)?;
        checks.plan(&mut steps);
        match &probes {
            Some(p) => p.plan(&mut steps)?,
            None => steps.note("no probes (gate.probes is empty): nothing asks the guest whether its services run"),
        }
        let t = Timing::from(cfg);
        steps.check(format!(
            "the whole boot within {}s; after the last marker, {}s more with nothing forbidden; stopping takes SIGTERM, {}s, SIGKILL",
            cfg.timeout_secs, cfg.settle_secs, cfg.grace_secs
        ));
        // Where the results go (the directory is made when the gate runs, not here).
        let dir = match cx.run.run() {
            Some(run) => run.dir.join(StageName::Gate.as_str()),
            None => "RUN_DIR/gate".into(),
        };
        for (file, what) in [
            ("console.log", "the whole console, each line with its time"),
            ("result.json", "the verdict, what decided it and when"),
            ("junit.xml", "one test case per marker and check"),
        ] {
            steps.push(Step::Write { path: dir.join(file), what: what.into() });
        }
        Ok(GatePlan { steps, vm, checks, probes, network, timing: t })
    }
}

impl Stage for Gate {
    const NAME: StageName = StageName::Gate;
    type Outputs = GateOutputs;
    type Plan = GatePlan;

    fn fingerprint(&self, cx: &Cx) -> Result<Fingerprint> {
        let cfg = &cx.config().gate;
        let mut fp = Fingerprint::new();
        fp.str("backend", self.backend(cx).as_str())
            .json("command", &self.command)
            .str("pf_allow", &self.pf_allow.to_string());
        if let Some(image) = &self.image {
            fp.str("image", image.as_str()).identity("image-file", &crate::config::absolute(image)?)?;
        }
        let files =
            [cfg.image.as_ref(), cfg.qemu.kernel.as_ref(), cfg.qemu.initrd.as_ref(), cfg.login.password_file.as_ref()];
        for path in files.into_iter().flatten() {
            fp.identity(path.as_str(), &cx.resolve(path))?;
        }
        if let Some(Ok(iso)) = cx.run.outputs(StageName::Iso).map(|o| o.parse::<crate::iso::IsoOutputs>())
            && let Some(image) = &iso.image
        {
            fp.identity("iso-image", image)?;
        }
        Ok(fp)
    }

    fn outputs_intact(&self, cx: &Cx, outputs: &GateOutputs) -> bool {
        [&outputs.result, &outputs.junit, &outputs.console].iter().all(|p| cx.run.abs(p).is_file())
            && outputs.produced.intact(|p| cx.run.abs(p))
    }

    fn plan(&self, cx: &Cx) -> Result<GatePlan> {
        // Whatever keeps the gate from judging the image is not the image's fault.
        self.plan_inner(cx).map_err(infrastructure)
    }

    fn execute(&self, cx: &mut Cx, plan: GatePlan) -> Result<GateOutputs> {
        session::run(cx, plan)
    }
}

/// The names the port gives its services and programs, for `{rc}` and `{bin}`: what
/// `port` recorded in this run, else the port as configured (`port.colibri` and
/// `port.source`), else only `port.services` (no programs), which the plan says.
fn port_names(cx: &Cx, steps: &mut Plan) -> crate::port::PortNames {
    let cfg = &cx.config().port;
    if let Ok(port) = cx.output::<crate::port::PortOutputs>(StageName::Port)
        && (!port.names.services.is_empty() || !port.names.binaries.is_empty())
    {
        return port.names;
    }
    let dir = cx.resolve(&cfg.colibri).join(&cfg.source);
    match crate::port::PortNames::read(&dir, &cfg.services) {
        Ok(names) => {
            steps.note(format!("the port's names from {dir} (port has not run in this run)"));
            names
        }
        Err(_) => {
            steps.note(format!(
                "the port at {dir} cannot be read and port has not run in this run: {{rc}} is port.services, and {{bin}} matches nothing"
            ));
            crate::port::PortNames { services: cfg.services.clone(), binaries: Vec::new() }
        }
    }
}

/// Marks an error as an infrastructure error (exit status 2), unless it has a class
/// already (an interruption stays one).
fn infrastructure(error: anyhow::Error) -> anyhow::Error {
    Err::<(), _>(error).class(Class::Infrastructure).unwrap_err()
}

/// A path for messages: relative to the working directory when below it.
fn shown(path: &Utf8Path) -> Utf8PathBuf {
    crate::engine::display_path(path)
}

impl Gate {
    /// `cargo xtask gate`.
    pub fn invoke(self, engine: &crate::engine::Engine) -> Result<()> {
        engine.run_one(&self, self.dry_run)
    }
}
