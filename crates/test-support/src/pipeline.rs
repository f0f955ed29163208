//! The whole pipeline on one scratch host, shared by the end-to-end test and the no-op
//! release benchmark: the example colibri, the poudriere stand-in host (provisioned by
//! `setup`), a publish target served by a real nginx on 127.0.0.1, the pkg stand-in for
//! the ISO root, a real image build, and the QEMU gate booting that image.

use std::fs;

use crate::host::Host;
use crate::initramfs;
use crate::nginx::Nginx;
use crate::{QEMU, Run, simhost};

pub const STAGES: [&str; 8] = ["port", "makesum", "audit", "bulk", "sign", "publish", "iso", "gate"];

pub struct Release {
    pub h: Host,
    _nginx: Nginx,
    pub image: camino::Utf8PathBuf,
    builder: camino::Utf8PathBuf,
    /// pipeline.toml's settings as `start` wrote them (after setup).
    settings: String,
}

impl Release {
    /// Provisions the scratch host with `setup`, starts nginx serving the publish target,
    /// and writes the pipeline's settings; nothing of the pipeline has run yet.
    pub fn start() -> Release {
        let h = Host::with_colibri("");
        let s = h.p.scratch.path.clone();
        let site = s.join("site");
        fs::create_dir_all(&site).unwrap();
        let nginx = Nginx::serve(&site, &s.join("nginx"), "");
        let image = s.join("iso/clawdie.img");
        let builder = simhost().join("gate/build-image");
        let settings = format!(
            "[repository]\nurl = \"{url}\"\n\n\
             [makesum]\noffline = true\nsource_from_checkout = true\n\n\
             [publish]\ntarget = \"{site}\"\ncheck_timeout_secs = 10\n\n\
             [iso]\nroot = \"{root}\"\nimage = \"{image}\"\nbuild_command = [\"{builder}\", \"{{root}}\", \"{{image}}\"]\n\
             enable_services = [\"colibri_daemon\"]\n\n\
             [gate]\nbackend = \"qemu\"\nmemory = \"128M\"\ncpus = 1\nsettle_secs = 1\ngrace_secs = 2\nretries = 0\n\
             timeout_secs = 240\nprobes = []\n\
             forbidden_extra = [{{ name = \"linux-panic\", regex = \"Kernel panic - not syncing\" }}]\n\n\
             [gate.qemu]\nkernel = \"{kernel}\"\ninitrd = \"{image}\"\n",
            url = nginx.url(),
            root = s.join("iso/root"),
            kernel = initramfs::kernel(),
        );
        // Provision the host first (setup uses the poudriere host's pkg), then point pkg
        // at the stand-in that installs packages into the ISO root.
        h.configure(&settings);
        h.provision();
        let settings = format!("{settings}\n[tools]\npkg = \"{}\"\n", simhost().join("iso/pkg"));
        h.configure(&settings);
        Release { h, _nginx: nginx, image, builder, settings }
    }

    /// Writes pipeline.toml again: the settings of `start`, then `extra`.
    pub fn configure(&self, extra: &str) {
        self.h.configure(&format!("{}\n{extra}", self.settings));
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let _one_qemu_at_a_time = QEMU.lock().unwrap_or_else(|e| e.into_inner());
        self.h.run(args)
    }

    pub fn status(&self, stage: &str) -> String {
        self.h.p.stage_status(stage)
    }

    pub fn attempts(&self) -> Vec<u64> {
        let state = self.h.p.state();
        STAGES.iter().map(|s| state["records"][s]["attempts"].as_u64().unwrap_or(0)).collect()
    }

    /// Rebuilds the image by hand, broken or not, as an operator fixing it would.
    pub fn build_image(&self, broken: bool) {
        let mut cmd = std::process::Command::new(&self.builder);
        cmd.arg(self.h.p.scratch.path.join("iso/root")).arg(&self.image);
        if broken {
            cmd.env("BREAK_IMAGE", "1");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "build-image failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}
