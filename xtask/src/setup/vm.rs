//! setup's bhyve items, for a host whose boot gate runs bhyve: the vmm kernel module,
//! loaded now and listed in kld_list for the next boot, and the UEFI firmware
//! (package edk2-bhyve) when the gate boots with it. The facts:
//! docs/reference/freebsd-host.md ("UEFI firmware", "vmm").

use anyhow::{Result, bail};
use camino::Utf8PathBuf;

use super::inspect::{package_item, probe};
use super::{Action, Custom, Item, State};
use crate::config::{Loaded, Tool};
use crate::failure;
use crate::gate::{Backend, BhyveBoot};
use crate::proc::CmdLine;
use crate::run::Log;
use crate::stage::{Cx, Plan};

/// The package whose files include the default gate.bhyve.firmware (`sysutils/edk2`,
/// flavor bhyve, in the ports tree).
const FIRMWARE_PACKAGE: &str = "edk2-bhyve";

/// Whether setup provisions bhyve here, and the setting that says so.
fn bhyve_here(loaded: &Loaded) -> (bool, String) {
    let cfg = &loaded.config;
    match cfg.setup.vmm {
        Some(v) => (v, format!("setup.vmm = {v}")),
        None => (
            cfg.gate.backend == Backend::Bhyve,
            format!("setup.vmm is unset and gate.backend is `{}`", cfg.gate.backend.as_str()),
        ),
    }
}

/// vmm, vmm at boot and the firmware; or one line saying bhyve is not provisioned here.
pub(super) fn inspect(loaded: &Loaded, log: &Log) -> Vec<Item> {
    let (here, why) = bhyve_here(loaded);
    if !here {
        return vec![Item::ok("bhyve", format!("not provisioned on this host ({why}): no vmm, no UEFI firmware"))];
    }
    let mut items = inspect_vmm(loaded, log);
    if loaded.config.gate.bhyve.boot == BhyveBoot::Uefi {
        items.push(inspect_firmware(loaded, log));
    }
    items
}

fn inspect_vmm(loaded: &Loaded, log: &Log) -> Vec<Item> {
    let tools = &loaded.config.tools;
    let stat = CmdLine::tool(tools, Tool::kldstat).args(["-q", "-m", "vmm"]);
    // -n: a module loaded meanwhile is a success, not "already loaded" (kldload(8)).
    let load = CmdLine::tool(tools, Tool::kldload).args(["-n", "vmm"]);
    let not_freebsd = "the bhyve gate needs a FreeBSD host; set setup.vmm = false when this host does not run it";
    let loaded_item = match probe(&stat, log) {
        Ok(out) if out.success() => Item::ok("vmm", "the bhyve kernel module is loaded"),
        Ok(_) => Item::fix(
            "vmm",
            State::Missing(format!("the bhyve kernel module is not loaded; setup runs: {load}")),
            vec![Action::Custom(std::sync::Arc::new(LoadVmm { load }))],
        ),
        Err(e) => Item::refuse("vmm", State::Missing(e), not_freebsd),
    };
    let query = CmdLine::tool(tools, Tool::sysrc).args(["-n", "-i", "kld_list"]);
    let add = CmdLine::tool(tools, Tool::sysrc).arg("kld_list+=vmm");
    let at_boot = match probe(&query, log) {
        Ok(out) if out.success() && out.stdout_str().split_whitespace().any(|m| m == "vmm") => {
            Item::ok("vmm at boot", "kld_list in rc.conf has vmm")
        }
        Ok(_) => Item::fix(
            "vmm at boot",
            State::Missing(format!("kld_list in rc.conf lacks vmm; setup runs: {add}")),
            vec![Action::Custom(std::sync::Arc::new(AddToKldList { stat, add }))],
        ),
        Err(e) => Item::refuse("vmm at boot", State::Missing(e), not_freebsd),
    };
    vec![loaded_item, at_boot]
}

/// `kldload -n vmm`, with what its failure means on a machine without VT-x or AMD-V.
#[derive(Debug)]
struct LoadVmm {
    load: CmdLine,
}

impl Custom for LoadVmm {
    fn steps(&self, steps: &mut Plan) {
        steps.run(&self.load);
    }

    fn perform(&self, cx: &Cx) -> Result<bool> {
        let out = self.load.output(&cx.log)?;
        if out.success() {
            cx.say(format!("ran {}", self.load));
            return Ok(true);
        }
        // kldload(8) prints this when the kernel refused to initialise every module of
        // the file (ENOEXEC from linker_load_file()): vmm's MOD_LOAD fails without VT-x
        // or AMD-V (vmm_handler() in sys/amd64/vmm/vmm.c).
        let text = String::from_utf8_lossy(&out.stderr);
        let why = if text.contains("an error occurred while loading module") {
            "the kernel refused vmm: this CPU offers no usable VT-x or AMD-V, as on a virtual server without nested virtualisation (dmesg says why: `vmx_init: ...` or `SVM: ...`)"
        } else {
            "vmm could not be loaded"
        };
        bail!(
            failure!("{why}; {}", self.load.failure(&out))
                .help("vmm is not added to kld_list, so the next boot does not try again")
                .help("if this host cannot run bhyve, set setup.vmm = false in pipeline.toml and boot the gate elsewhere or with another gate.backend (`qemu`, `command`); otherwise enable VT-x/AMD-V (nested virtualisation) for this machine")
                .infrastructure()
        );
    }
}

/// `sysrc kld_list+=vmm`, only once vmm is loaded: a module this host cannot load would
/// fail again at every boot.
#[derive(Debug)]
struct AddToKldList {
    stat: CmdLine,
    add: CmdLine,
}

impl Custom for AddToKldList {
    fn steps(&self, steps: &mut Plan) {
        steps.run(&self.stat);
        steps.run(&self.add);
    }

    fn perform(&self, cx: &Cx) -> Result<bool> {
        if !self.stat.output(&cx.log)?.success() {
            bail!(
                failure!("vmm is not loaded, so setup does not add it to kld_list (`{}` failed)", self.stat)
                    .help("load it first (kldload vmm), or set setup.vmm = false when this host cannot run bhyve")
                    .infrastructure()
            );
        }
        self.add.run(&cx.log)?;
        cx.say(format!("ran {}", self.add));
        Ok(true)
    }
}

fn inspect_firmware(loaded: &Loaded, log: &Log) -> Item {
    let cfg = &loaded.config;
    let firmware = loaded.resolve(&cfg.gate.bhyve.firmware);
    let name = "UEFI firmware";
    if firmware.is_file() {
        return Item::ok(name, format!("{firmware} (gate.bhyve.firmware) exists"));
    }
    let package = package_item(cfg, log, name, FIRMWARE_PACKAGE);
    match package.state {
        State::Ok(_) => Item::refuse(
            name,
            State::Missing(format!(
                "{firmware} (gate.bhyve.firmware) does not exist, though {FIRMWARE_PACKAGE} is installed"
            )),
            format!(
                "set gate.bhyve.firmware to the BHYVE_UEFI.fd it installed (`pkg info -l {FIRMWARE_PACKAGE}` lists its files), or reinstall it: pkg install -f -y {FIRMWARE_PACKAGE}"
            ),
        ),
        State::Missing(detail) | State::Differs(detail) => {
            let mut item = Item { state: State::Missing(format!("{firmware} does not exist; {detail}")), ..package };
            if !item.actions.is_empty() {
                item.actions.push(Action::Custom(std::sync::Arc::new(ExpectFile { path: firmware })));
            }
            item
        }
    }
}

/// After installing the firmware package: the file gate.bhyve.firmware names is there.
#[derive(Debug)]
struct ExpectFile {
    path: Utf8PathBuf,
}

impl Custom for ExpectFile {
    fn steps(&self, steps: &mut Plan) {
        steps.check(format!("{} exists", self.path));
    }

    fn perform(&self, _cx: &Cx) -> Result<bool> {
        if !self.path.is_file() {
            bail!(
                failure!("{FIRMWARE_PACKAGE} is installed but {} still does not exist: gate.bhyve.firmware names a file it does not install", self.path)
                    .help(format!("set gate.bhyve.firmware to the BHYVE_UEFI.fd it installed (`pkg info -l {FIRMWARE_PACKAGE}` lists its files)"))
                    .infrastructure()
            );
        }
        Ok(false)
    }
}
