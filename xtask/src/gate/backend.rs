//! The backends: the exact command lines for bhyve, QEMU or a console program, what runs
//! before and after them (the VM destroyed on every path, a panic included), and what
//! their exit statuses mean (docs/reference/boot-gate.md, docs/reference/freebsd-host.md).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Result, bail};
use camino::Utf8PathBuf;

use super::network::NetworkPlan;
use super::{Backend, BhyveBoot, BhyveConfig, QemuArch, QemuConfig, QemuDrive};
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
        if backend == Backend::Bhyve {
            let firmware = (bhyve.boot == BhyveBoot::Uefi).then_some(("the UEFI firmware", &bhyve.firmware));
            let image = image.as_ref().filter(|i| i.as_str() != "IMAGE").map(|i| ("the image", i));
            if let Some((what, path)) = image.into_iter().chain(firmware).find(|(_, p)| p.as_str().contains(',')) {
                bail!(comma_refusal(what, path.as_str()).usage());
            }
        }
        let program = if command.is_empty() { cfg.command.program.clone() } else { command.to_vec() };
        if backend == Backend::Command && program.is_empty() {
            bail!(
                failure!("the command backend needs a console program")
                    .help("cargo xtask gate --backend command -- PROGRAM ARGS..., or set gate.command.program")
            );
        }
        if backend == Backend::Qemu
            && qemu.arch == QemuArch::Aarch64
            && qemu.kernel.is_none()
            && qemu.firmware.is_none()
        {
            bail!(
                cx.loaded
                    .failure_at("gate.qemu.firmware", "QEMU's aarch64 virt board has no firmware of its own to boot the image with")
                    .help("set gate.qemu.firmware to the UEFI firmware for it (Debian's qemu-efi-aarch64: /usr/share/qemu-efi-aarch64/QEMU_EFI.fd)")
                    .usage()
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

    /// Run before the boot: a VM left by an earlier run (wired memory, stale state) is
    /// destroyed first.
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

    /// Runs [`Vm::before`] and returns the guard that runs [`Vm::after`]: when released,
    /// or when dropped, so a panic unwinding through the boot destroys the VM too.
    pub fn claim<'l>(&self, log: &'l Log) -> Result<VmGuard<'l>> {
        for cmd in self.before() {
            // Its status does not matter: no VM to destroy is the usual case.
            teardown(&cmd, log)?;
        }
        Ok(VmGuard { after: self.after(), log })
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

    /// `bhyve -c 2 -m 2G -H -P -u -s 0,hostbridge -s 3,ahci-cd,IMAGE -s 31,lpc -l com1,stdio
    /// -l bootrom,FIRMWARE NAME` (docs/reference/freebsd-host.md, "bhyve"): `-u` keeps
    /// the emulated RTC in UTC, as a FreeBSD guest reads it.
    fn bhyve_cmd(&self, tap: Option<&str>) -> CmdLine {
        let b = &self.bhyve;
        let mut cmd = CmdLine::tool(&self.tools, Tool::bhyve).args([
            "-c",
            &self.cpus.to_string(),
            "-m",
            &self.memory,
            "-H",
            "-P",
            "-u",
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
    /// stdio -monitor none -no-reboot -kernel K -initrd I -append '...'`; for aarch64
    /// `qemu-system-aarch64 -M virt -cpu cortex-a57 ...` the same way, the serial port
    /// being the board's PL011 (docs/reference/boot-gate.md, "QEMU as the test
    /// hypervisor", "QEMU for aarch64").
    fn qemu_cmd(&self) -> CmdLine {
        let q = &self.qemu;
        let (tool, machine, cpu) = match q.arch {
            QemuArch::X86_64 => (Tool::qemu, None, None),
            QemuArch::Aarch64 => (Tool::qemu_aarch64, Some("virt"), Some("cortex-a57")),
        };
        let mut cmd = CmdLine::tool(&self.tools, tool);
        if let Some(machine) = machine {
            cmd = cmd.args(["-M", machine]);
        }
        let cpu = if q.cpu.is_empty() { cpu } else { Some(q.cpu.as_str()) };
        if let Some(cpu) = cpu {
            cmd = cmd.args(["-cpu", cpu]);
        }
        cmd = cmd.args([
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
            let append = if q.append.is_empty() {
                format!("console={} panic=-1 quiet", q.arch.linux_console())
            } else {
                q.append.clone()
            };
            cmd = cmd.args(["-append", &append]);
        }
        if let Some(image) = &self.image {
            // QEMU's option syntax doubles commas inside a value.
            let file = image.as_str().replace(',', ",,");
            cmd = match (q.drive, q.arch) {
                (QemuDrive::Cdrom, QemuArch::X86_64) => cmd.args(["-cdrom", image.as_str()]),
                // The virt board has no IDE for -cdrom: a SCSI CD on virtio-scsi.
                (QemuDrive::Cdrom, QemuArch::Aarch64) => cmd.args([
                    "-device".to_owned(),
                    "virtio-scsi-pci,id=scsi0".to_owned(),
                    "-drive".to_owned(),
                    format!("file={file},format=raw,if=none,id=cd0,media=cdrom,readonly=on"),
                    "-device".to_owned(),
                    "scsi-cd,bus=scsi0.0,drive=cd0".to_owned(),
                ]),
                (QemuDrive::Disk, _) => cmd.args(["-drive".to_owned(), format!("file={file},format=raw,if=virtio")]),
            };
        }
        cmd.args(q.extra_args.iter().cloned())
    }

    /// What a console process's end means, before the verdict was in. `console_seen`:
    /// whether this process put anything on the console.
    pub fn judge_exit(&self, role: Role, status: ExitStatus, console_seen: bool) -> Ending {
        let how = describe(status);
        let code = status.code();
        let signal = status.signal();
        match (self.backend, role) {
            (Backend::Bhyve, Role::Loader) => match code {
                Some(0) => Ending::Continue,
                Some(64) => Ending::Infra(
                    format!("bhyveload could not open the image or its console, or refused the memory size (it {how})"),
                    "its own message (`Could not open ...`, `Invalid memsize ...`) is in the log above".into(),
                ),
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
                // bhyve_usage(1) also exits 1: an unknown option or a missing VM name, before
                // the VM exists and before any console byte.
                (Some(1), _) if !console_seen => Ending::Infra(
                    format!("bhyve {how} before the guest printed anything: bhyve refused its command line"),
                    "bhyve's own message (`Usage: bhyve ...`) is above: check gate.bhyve.extra_args against bhyve(8) on this release".into(),
                ),
                (Some(1), _) => Ending::Failure("the guest powered off".into(), format!("bhyve {how}")),
                (Some(2), _) => Ending::Failure("the guest halted".into(), format!("bhyve {how}")),
                (Some(3), _) => Ending::Failure("the guest triple-faulted".into(), format!("bhyve {how}")),
                (Some(4), _) => Ending::Infra(
                    format!("bhyve could not set up the VM (it {how})"),
                    format!(
                        "bhyve's own message is above: an image or firmware it cannot open, memory, a -s it cannot parse, vmm not loaded (kldload vmm), or another bhyve running the VM {}",
                        self.name
                    ),
                ),
                (Some(134), _) | (_, Some(libc::SIGABRT)) => Ending::Infra(
                    format!("bhyve aborted on an unhandled VM exit (it {how})"),
                    "bhyve's own message is above; try the run again, and check the bhyve release".into(),
                ),
                (Some(64), _) => Ending::Infra(
                    format!("bhyve refused the value of one of its options (it {how})"),
                    "bhyve's own message is above: check gate.memory, gate.cpus and gate.bhyve.extra_args against bhyve(8) on this release".into(),
                ),
                (Some(71), _) => Ending::Infra(
                    format!("bhyve failed in an operating-system call (it {how})"),
                    "bhyve's own message is above (vm_set_topology, capability mode): check vmm and the host's kernel".into(),
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
                // It failed before the console said anything: it could not run (a file it
                // reads is missing, it cannot reach what it connects to), so there was no
                // image to judge.
                _ if !status.success() && !console_seen => Ending::Infra(
                    format!("the console program {how} before printing anything: it could not provide a console"),
                    "its own message is above; check the program and what it needs (files, devices) before blaming the image".into(),
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

/// The VM of one boot: destroyed by [`VmGuard::release`], or when dropped.
pub struct VmGuard<'l> {
    /// What destroys it; emptied once run.
    after: Vec<CmdLine>,
    log: &'l Log,
}

impl VmGuard<'_> {
    /// Destroys the VM. Returns what could not be done; a VM that does not exist (bhyve
    /// never made it) is not a problem.
    pub fn release(mut self) -> Vec<String> {
        self.destroy()
    }

    fn destroy(&mut self) -> Vec<String> {
        std::mem::take(&mut self.after)
            .iter()
            .filter_map(|cmd| match teardown(cmd, self.log) {
                Ok(out) if out.success() || no_such_vm(&out) => None,
                Ok(out) => Some(cmd.failure(&out)),
                Err(e) => Some(e.to_string()),
            })
            .collect()
    }
}

impl Drop for VmGuard<'_> {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// `bhyvectl --vm=NAME --destroy` found no VM to destroy: it opens the VM first, and
/// prints `vm_open: NAME could not be opened: No such file or directory` and exits 1
/// when there is none (or when vmm is not loaded: nothing to destroy either;
/// `main()` in usr.sbin/bhyvectl/bhyvectl.c).
fn no_such_vm(out: &Output) -> bool {
    out.status == Some(1)
        && String::from_utf8_lossy(&out.stderr).contains("could not be opened: No such file or directory")
}

/// bhyve splits `-s` and `-l` values at commas and has no escape: an image path
/// `a,b.iso` opens `a`, and `-l bootrom,/fw,x` opens `x` as a writable EFI variables
/// file (docs/reference/freebsd-host.md, "Commas in -s and -l").
pub fn comma_refusal(what: &str, path: &str) -> failure::Failure {
    failure!("{what} {path} has a comma, which bhyve cannot take: it cuts the path at the comma and reads the rest as options")
        .help("move or link it to a path without commas")
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
    // The kernel makes /dev/vmm/NAME with a checked name: `prep_devname()` refuses the
    // path components `.` and `..` (docs/reference/freebsd-host.md, "The VM and its name").
    let name_ok = !cfg.vm_name.is_empty()
        && cfg.vm_name.len() <= 31
        && cfg.vm_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && cfg.vm_name != "."
        && cfg.vm_name != "..";
    if !name_ok {
        return Err(loaded
            .failure_at("gate.vm_name", format!("`{}` is not a usable VM name", cfg.vm_name))
            .help("up to 31 letters, digits, `-`, `_` and `.`, and neither `.` nor `..`")
            .into());
    }
    if cfg.bhyve.firmware.as_str().contains(',') {
        return Err(loaded
            .failure_at("gate.bhyve.firmware", comma_refusal("the UEFI firmware", cfg.bhyve.firmware.as_str()))
            .help("move or link it to a path without commas")
            .into());
    }
    if let Some(image) = &cfg.image
        && cfg.backend == Backend::Bhyve
        && image.as_str().contains(',')
    {
        return Err(loaded
            .failure_at("gate.image", comma_refusal("the image", image.as_str()))
            .help("move or link it to a path without commas")
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A bhyve Vm whose bhyvectl is `script` (sh), which records its arguments in `calls`.
    fn vm_with_bhyvectl(dir: &std::path::Path, script: &str) -> (Vm, std::path::PathBuf) {
        let calls = dir.join("calls");
        let bhyvectl = dir.join("bhyvectl");
        std::fs::write(&bhyvectl, format!("#!/bin/sh\necho \"$*\" >> '{}'\n{script}\n", calls.display())).unwrap();
        std::fs::set_permissions(&bhyvectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools { bhyvectl: bhyvectl.to_str().unwrap().to_owned(), ..Tools::default() };
        let vm = Vm {
            backend: Backend::Bhyve,
            image: Some("/images/clawdie.iso".into()),
            name: "gate-test".into(),
            memory: "2G".into(),
            cpus: 2,
            tools,
            bhyve: BhyveConfig::default(),
            qemu: QemuConfig::default(),
            program: Vec::new(),
            infra_status: Vec::new(),
        };
        (vm, calls)
    }

    #[test]
    fn a_panic_during_the_boot_still_destroys_the_vm() {
        let dir = tempfile::tempdir().unwrap();
        let (vm, calls) = vm_with_bhyvectl(dir.path(), "exit 0");
        let log = Log::sink();
        let boot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _vm = vm.claim(&log).unwrap();
            panic!("a bug while the VM runs");
        }));
        assert!(boot.is_err());
        let calls = std::fs::read_to_string(calls).unwrap();
        assert_eq!(calls, "--vm=gate-test --destroy\n--vm=gate-test --destroy\n", "destroyed before and after");
    }

    #[test]
    fn a_vm_that_was_never_made_is_no_cleanup_problem() {
        let dir = tempfile::tempdir().unwrap();
        // bhyvectl.c main(): the VM cannot be opened because it does not exist.
        let missing = "echo 'vm_open: gate-test could not be opened: No such file or directory' >&2; exit 1";
        let (vm, _) = vm_with_bhyvectl(dir.path(), missing);
        let log = Log::sink();
        assert_eq!(vm.claim(&log).unwrap().release(), Vec::<String>::new());
        // Any other failure is one.
        let (vm, _) = vm_with_bhyvectl(dir.path(), "echo 'vm_destroy: Device busy' >&2; exit 1");
        let problems = vm.claim(&log).unwrap().release();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("vm_destroy: Device busy"), "{problems:?}");
    }

    #[test]
    fn bhyve_exiting_1_is_a_power_off_only_after_the_guest_printed() {
        let dir = tempfile::tempdir().unwrap();
        let (vm, _) = vm_with_bhyvectl(dir.path(), "exit 0");
        let one = ExitStatus::from_raw(1 << 8);
        assert!(
            matches!(vm.judge_exit(Role::Vm, one, true), Ending::Failure(what, _) if what == "the guest powered off")
        );
        assert!(
            matches!(vm.judge_exit(Role::Vm, one, false), Ending::Infra(what, _) if what.contains("bhyve refused its command line"))
        );
        let usage = ExitStatus::from_raw(64 << 8);
        assert!(
            matches!(vm.judge_exit(Role::Vm, usage, true), Ending::Infra(what, _) if what.contains("refused the value"))
        );
    }
}
