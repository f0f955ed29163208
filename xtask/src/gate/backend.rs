//! The backends: the exact command lines for bhyve, QEMU or a console program, what runs
//! before and after them, and what their exit statuses mean (docs/reference/boot-gate.md).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Result, bail};
use camino::Utf8PathBuf;

use super::network::NetworkPlan;
use super::{Backend, BhyveBoot, BhyveConfig, QemuConfig, QemuDrive};
use crate::config::{Loaded, Tool, Tools};
use crate::failure;
use crate::proc::{CmdLine, Output, StreamOpts};
use crate::run::Log;
use crate::stage::{Cx, Plan};
use crate::ui::Ui;

/// What a console process is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// bhyveload: the loader runs first, on the same console, and must exit 0.
    Loader,
    /// The VM (or the console program) itself.
    Vm,
}

/// One console process of a boot.
#[derive(Debug, Clone)]
pub struct Phase {
    pub role: Role,
    pub cmd: CmdLine,
}

/// How a console process ended, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The loader finished; the VM comes next.
    Continue,
    /// The guest stopped: the image's fault. What happened, and the exit that shows it.
    Failure(String, String),
    /// The machinery failed: not the image's fault. A message and what to do.
    Infra(String, String),
}

/// Everything needed to boot one image, resolved from the settings.
#[derive(Debug, Clone)]
pub struct Vm {
    pub backend: Backend,
    pub image: Option<Utf8PathBuf>,
    pub name: String,
    memory: String,
    cpus: u32,
    tools: Tools,
    bhyve: BhyveConfig,
    qemu: QemuConfig,
    program: Vec<String>,
    infra_status: Vec<i32>,
}

impl Vm {
    /// Resolves the settings (paths against pipeline.toml) for `backend`.
    pub fn resolve(cx: &Cx, backend: Backend, image: Option<Utf8PathBuf>, command: &[String]) -> Result<Vm> {
        let cfg = &cx.config().gate;
        let mut qemu = cfg.qemu.clone();
        for path in [&mut qemu.kernel, &mut qemu.initrd, &mut qemu.firmware].into_iter().flatten() {
            *path = cx.resolve(path);
        }
        let mut bhyve = cfg.bhyve.clone();
        bhyve.firmware = cx.resolve(&bhyve.firmware);
        let program = if command.is_empty() { cfg.command.program.clone() } else { command.to_vec() };
        if backend == Backend::Command && program.is_empty() {
            bail!(
                failure!("the command backend needs a console program")
                    .help("cargo xtask gate --backend command -- PROGRAM ARGS..., or set gate.command.program")
            );
        }
        if backend == Backend::Qemu && qemu.kernel.is_none() && qemu.initrd.is_some() {
            bail!(
                failure!("gate.qemu.initrd is set without gate.qemu.kernel")
                    .help("set both, or neither to boot the image")
            );
        }
        Ok(Vm {
            backend,
            image,
            name: cfg.vm_name.clone(),
            memory: cfg.memory.clone(),
            cpus: cfg.cpus,
            tools: cx.config().tools.clone(),
            bhyve,
            qemu,
            program,
            infra_status: cfg.command.infra_status.clone(),
        })
    }

    /// Files the boot needs: (path, what it is, what to do when it is missing).
    fn needed_files(&self) -> Vec<(Utf8PathBuf, &'static str, String)> {
        let mut files = Vec::new();
        if let Some(image) = &self.image {
            files.push((
                image.clone(),
                "the image",
                "build it with `cargo xtask iso`, or pass another with --image PATH".to_owned(),
            ));
        }
        match self.backend {
            Backend::Bhyve if self.bhyve.boot == BhyveBoot::Uefi => files.push((
                self.bhyve.firmware.clone(),
                "the UEFI firmware",
                "install it (pkg install edk2-bhyve), or set gate.bhyve.firmware; or boot with gate.bhyve.boot = \"bhyveload\""
                    .to_owned(),
            )),
            Backend::Qemu => {
                let q = &self.qemu;
                for (path, what) in [(&q.kernel, "the kernel"), (&q.initrd, "the initrd"), (&q.firmware, "the firmware")] {
                    if let Some(p) = path {
                        files.push((p.clone(), what, "fix its path in [gate.qemu] of pipeline.toml".to_owned()));
                    }
                }
            }
            _ => {}
        }
        files
    }

    /// Checks that everything the boot needs is there: an infrastructure error when not.
    pub fn preflight(&self) -> std::result::Result<(), (String, String)> {
        for (path, what, help) in self.needed_files() {
            if !path.is_file() {
                return Err((format!("{what} {path} does not exist"), help));
            }
        }
        Ok(())
    }

    /// The plan's steps: checks, and every command in order.
    pub fn plan(&self, cx: &Cx, network: Option<&NetworkPlan>, steps: &mut Plan) -> Result<()> {
        for (path, what, help) in self.needed_files() {
            if path.is_file() || path == "IMAGE" {
                steps.check(format!("{what} {path} exists"));
            } else if cx.dry_run {
                steps.note(format!("{what} {path} does not exist: the run would stop here ({help})"));
            } else {
                bail!(failure!("{what} {path} does not exist").help(help));
            }
        }
        for cmd in self.before() {
            steps.run(&cmd);
        }
        if let Some(net) = network {
            net.plan(steps);
        }
        let tap = network.map(|_| "TAP");
        for phase in self.phases(tap) {
            steps.run(&phase.cmd);
        }
        if self.backend == Backend::Command {
            steps.note("its stdout is the console; it is stopped by process group when the verdict is in");
        }
        if let Some(net) = network {
            net.plan_close(steps);
        }
        for cmd in self.after() {
            steps.run(&cmd);
        }
        Ok(())
    }

    /// Run before the boot: a VM left by an earlier run would make bhyve fail.
    pub fn before(&self) -> Vec<CmdLine> {
        match self.backend {
            Backend::Bhyve => vec![self.destroy()],
            _ => Vec::new(),
        }
    }

    /// Run after the boot, on every path: the VM outlives the bhyve process.
    pub fn after(&self) -> Vec<CmdLine> {
        self.before()
    }

    fn destroy(&self) -> CmdLine {
        CmdLine::tool(&self.tools, Tool::bhyvectl).args([format!("--vm={}", self.name), "--destroy".into()])
    }

    /// The console processes, in order. `tap` is the guest's network interface.
    pub fn phases(&self, tap: Option<&str>) -> Vec<Phase> {
        let vm = |cmd| Phase { role: Role::Vm, cmd };
        match self.backend {
            Backend::Bhyve => {
                let mut phases = Vec::new();
                if self.bhyve.boot == BhyveBoot::Bhyveload {
                    let load = CmdLine::tool(&self.tools, Tool::bhyveload).args([
                        "-c",
                        "stdio",
                        "-m",
                        &self.memory,
                        "-d",
                        self.image_str(),
                        &self.name,
                    ]);
                    phases.push(Phase { role: Role::Loader, cmd: load });
                }
                phases.push(vm(self.bhyve_cmd(tap)));
                phases
            }
            Backend::Qemu => vec![vm(self.qemu_cmd())],
            Backend::Command => {
                let (program, args) = self.program.split_first().map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
                vec![vm(CmdLine::new(program).args(args.iter().cloned()))]
            }
        }
    }

    fn image_str(&self) -> &str {
        self.image.as_ref().map_or("IMAGE", |p| p.as_str())
    }

    /// `bhyve -c 2 -m 2G -H -P -s 0,hostbridge -s 3,ahci-cd,IMAGE -s 31,lpc -l com1,stdio
    /// -l bootrom,FIRMWARE NAME` (docs/reference/boot-gate.md, "bhyve").
    fn bhyve_cmd(&self, tap: Option<&str>) -> CmdLine {
        let b = &self.bhyve;
        let mut cmd = CmdLine::tool(&self.tools, Tool::bhyve).args([
            "-c",
            &self.cpus.to_string(),
            "-m",
            &self.memory,
            "-H",
            "-P",
            "-s",
            "0,hostbridge",
        ]);
        if let Some(tap) = tap {
            cmd = cmd.args(["-s".to_owned(), format!("2,virtio-net,{tap}")]);
        }
        cmd = cmd.args([
            "-s".to_owned(),
            format!("3,{},{}", b.device, self.image_str()),
            "-s".to_owned(),
            "31,lpc".to_owned(),
            "-l".to_owned(),
            format!("{},stdio", b.console),
        ]);
        if b.boot == BhyveBoot::Uefi {
            cmd = cmd.args(["-l".to_owned(), format!("bootrom,{}", b.firmware)]);
        }
        cmd.args(b.extra_args.iter().cloned()).arg(&self.name)
    }

    /// `qemu-system-x86_64 -accel tcg -m 128M -smp 1 -nodefaults -display none -serial
    /// stdio -monitor none -no-reboot -kernel K -initrd I -append '...'`
    /// (docs/reference/boot-gate.md, "QEMU as the test hypervisor").
    fn qemu_cmd(&self) -> CmdLine {
        let q = &self.qemu;
        let mut cmd = CmdLine::tool(&self.tools, Tool::qemu).args([
            "-accel",
            &q.accel,
            "-m",
            &self.memory,
            "-smp",
            &self.cpus.to_string(),
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ]);
        if let Some(fw) = &q.firmware {
            cmd = cmd.args(["-bios", fw.as_str()]);
        }
        if let Some(kernel) = &q.kernel {
            cmd = cmd.args(["-kernel", kernel.as_str()]);
            if let Some(initrd) = &q.initrd {
                cmd = cmd.args(["-initrd", initrd.as_str()]);
            }
            cmd = cmd.args(["-append", &q.append]);
        }
        if let Some(image) = &self.image {
            cmd = match q.drive {
                QemuDrive::Cdrom => cmd.args(["-cdrom", image.as_str()]),
                QemuDrive::Disk => {
                    // QEMU's option syntax doubles commas inside a value.
                    cmd.args([
                        "-drive".to_owned(),
                        format!("file={},format=raw,if=virtio", image.as_str().replace(',', ",,")),
                    ])
                }
            };
        }
        cmd.args(q.extra_args.iter().cloned())
    }

    /// What a console process's end means, before the verdict was in.
    pub fn judge_exit(&self, role: Role, status: ExitStatus) -> Ending {
        let how = describe(status);
        let code = status.code();
        let signal = status.signal();
        match (self.backend, role) {
            (Backend::Bhyve, Role::Loader) => match code {
                Some(0) => Ending::Continue,
                _ => Ending::Infra(
                    format!("bhyveload could not load the guest (it {how})"),
                    "its own message is in the log above; is vmm loaded (kldload vmm)?".into(),
                ),
            },
            (Backend::Bhyve, Role::Vm) => match (code, signal) {
                (Some(0), _) => Ending::Failure(
                    "the guest reset".into(),
                    format!("bhyve {how}: an unexpected reboot, usually a panic with automatic reboot"),
                ),
                (Some(1), _) => Ending::Failure("the guest powered off".into(), format!("bhyve {how}")),
                (Some(2), _) => Ending::Failure("the guest halted".into(), format!("bhyve {how}")),
                (Some(3), _) => Ending::Failure("the guest triple-faulted".into(), format!("bhyve {how}")),
                (Some(4), _) => Ending::Infra(
                    format!("bhyve could not set up the VM (it {how})"),
                    format!(
                        "bhyve's own message is above; is vmm loaded (kldload vmm)? does another VM called {} run?",
                        self.name
                    ),
                ),
                (Some(134), _) | (_, Some(libc::SIGABRT)) => Ending::Infra(
                    format!("bhyve aborted on an unhandled VM exit (it {how})"),
                    "bhyve's own message is above; try the run again, and check the bhyve release".into(),
                ),
                (Some(64 | 71), _) => Ending::Infra(
                    format!("bhyve refused its arguments (it {how})"),
                    "check [gate.bhyve] in pipeline.toml against bhyve(8) on this release".into(),
                ),
                (Some(143), _) | (_, Some(libc::SIGTERM)) => Ending::Infra(
                    format!("bhyve was stopped by SIGTERM from outside the gate (it {how})"),
                    "something else on the host stops VMs; find it".into(),
                ),
                _ => Ending::Infra(format!("bhyve ended unexpectedly ({how})"), "bhyve's own message is above".into()),
            },
            (Backend::Qemu, _) => match code {
                Some(0) => Ending::Failure(
                    "the guest stopped".into(),
                    format!("QEMU {how}: a power-off, a reset under -no-reboot, or a panic"),
                ),
                _ => Ending::Infra(
                    format!("QEMU failed (it {how})"),
                    "QEMU's own message is above; check [gate.qemu] in pipeline.toml".into(),
                ),
            },
            (Backend::Command, _) => match code {
                Some(c) if self.infra_status.contains(&c) => Ending::Infra(
                    format!(
                        "the console program {how}, which gate.command.infra_status counts as an infrastructure error"
                    ),
                    "its own message is above".into(),
                ),
                _ => Ending::Failure("the console program ended".into(), format!("it {how}")),
            },
        }
    }
}

/// How long a short command (bhyvectl, ifconfig, pfctl) may take before it is stopped:
/// the gate never hangs on one.
const SHORT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a short command with a time limit, in its own process group; its output goes to
/// the log. The status is the caller's to judge.
pub fn short(cmd: &CmdLine, log: &Log, ui: &Ui) -> Result<Output> {
    cmd.stream(log, ui, &StreamOpts { timeout: Some(SHORT_TIMEOUT), grace: Duration::from_secs(5) })
}

/// Runs a teardown command: like [`short`], but it runs even after Ctrl-C.
pub fn teardown(cmd: &CmdLine, log: &Log) -> Result<Output> {
    cmd.cleanup(log, SHORT_TIMEOUT)
}

/// `exited with status 1`, `was killed by SIGKILL`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by {}", signal_word(s)),
        _ => "ended".into(),
    }
}

fn signal_word(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        s => format!("signal {s}"),
    }
}

/// Checks the settings that no command could use, at load time.
pub fn validate(loaded: &Loaded) -> Result<()> {
    let cfg = &loaded.config.gate;
    let memory_ok = {
        let digits = cfg.memory.trim_end_matches(['K', 'k', 'M', 'm', 'G', 'g', 'T', 't']);
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && cfg.memory.len() - digits.len() <= 1
            && digits.parse::<u64>().is_ok_and(|n| n > 0)
    };
    if !memory_ok {
        return Err(loaded
            .failure_at("gate.memory", format!("`{}` is not a memory size", cfg.memory))
            .help("a number with an optional unit: 2G, 512M")
            .into());
    }
    if cfg.cpus == 0 {
        return Err(loaded.error_at("gate.cpus", "the guest needs at least one CPU"));
    }
    let name_ok = !cfg.vm_name.is_empty()
        && cfg.vm_name.len() <= 31
        && cfg.vm_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(loaded
            .failure_at("gate.vm_name", format!("`{}` is not a usable VM name", cfg.vm_name))
            .help("up to 31 letters, digits, `-`, `_` and `.`")
            .into());
    }
    if cfg.timeout_secs == 0 {
        return Err(loaded.error_at("gate.timeout_secs", "the boot timeout is 0 seconds"));
    }
    if !["com1", "com2", "com3", "com4"].contains(&cfg.bhyve.console.as_str()) {
        return Err(loaded
            .failure_at("gate.bhyve.console", format!("`{}` is not an LPC serial port", cfg.bhyve.console))
            .help("com1, com2, com3 or com4")
            .into());
    }
    if cfg.bhyve.device.is_empty() || cfg.bhyve.device.contains(',') {
        return Err(loaded
            .failure_at("gate.bhyve.device", format!("`{}` is not a bhyve device", cfg.bhyve.device))
            .help("ahci-cd, ahci-hd or virtio-blk")
            .into());
    }
    // `{name}` is a placeholder; pf's own lists (`{ tap0 bridge0 }`) are left alone.
    let placeholder = regex::Regex::new(r"\{([a-z_]+)\}").expect("a valid pattern");
    for (i, rule) in cfg.bhyve.pf_rules.iter().enumerate() {
        if let Some(c) = placeholder.captures_iter(rule).find(|c| !["tap", "bridge"].contains(&&c[1])) {
            return Err(loaded.error_at(
                &format!("gate.bhyve.pf_rules.{i}"),
                format!("`{rule}` has the placeholder {}; only {{tap}} and {{bridge}} are known", &c[0]),
            ));
        }
    }
    if cfg.qemu.accel.is_empty() {
        return Err(loaded.failure_at("gate.qemu.accel", "the QEMU accelerator is empty").help("tcg, or kvm").into());
    }
    Ok(())
}
