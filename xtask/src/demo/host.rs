//! The demo's host: what runs really here and what the simulated FreeBSD host
//! (`simhost/`) stands in for, decided per stage from what this machine has; the
//! demo's signing key; poudriere's configuration, jail and trees on the simulated host;
//! and a private nginx serving the publish target on 127.0.0.1.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::config::{Loaded, Tool};
use crate::failure;
use crate::proc::{CmdLine, Console, find_program};
use crate::run::Log;
use crate::stage::StageName;

/// How the gate boots in the demo.
#[derive(Debug, Clone)]
pub enum GateMode {
    /// A real QEMU boot of the image iso builds, with this kernel.
    Qemu { kernel: Utf8PathBuf },
    /// The command backend replaying a recorded console; why QEMU is not used.
    Replay { why: String },
}

/// What this machine can do for the demo.
#[derive(Debug, Clone)]
pub struct Host {
    pub dir: Utf8PathBuf,
    pub simhost: Utf8PathBuf,
    /// nginx, when installed.
    pub nginx: Option<Utf8PathBuf>,
    pub gate: GateMode,
}

impl Host {
    /// Looks at the machine: nginx; QEMU, the test kernel (`.ci/deps`), static busybox
    /// and cpio for the image.
    pub fn look(dir: &Utf8Path, no_qemu: bool) -> Host {
        let root = crate::project_root();
        let nginx = find_program("nginx").or_else(|| {
            ["/usr/sbin/nginx", "/usr/local/sbin/nginx"].into_iter().map(Utf8PathBuf::from).find(|p| p.is_file())
        });
        let kernel = match std::env::var("MOTHER_BUILD_TEST_KERNEL") {
            Ok(k) if !k.is_empty() => Utf8PathBuf::from(k),
            _ => root.join("target/test-assets/vmlinuz"),
        };
        let missing: Vec<String> = [
            (find_program("qemu-system-x86_64").is_none(), "qemu-system-x86_64 is not installed".to_owned()),
            (!kernel.is_file(), format!("no test kernel at {kernel} (`.ci/deps` puts one there)")),
            (!Utf8Path::new("/bin/busybox").is_file(), "no static busybox at /bin/busybox".to_owned()),
            (find_program("cpio").is_none(), "cpio is not installed".to_owned()),
        ]
        .into_iter()
        .filter_map(|(missing, why)| missing.then_some(why))
        .collect();
        let gate = if no_qemu {
            GateMode::Replay { why: "--no-qemu".into() }
        } else if missing.is_empty() {
            GateMode::Qemu { kernel }
        } else {
            GateMode::Replay { why: missing.join("; ") }
        };
        Host { dir: dir.to_owned(), simhost: root.join("simhost"), nginx, gate }
    }

    /// How each stage runs here, one sentence per stage (printed, and shown in the report).
    pub fn notes(&self, url: Option<&str>) -> Vec<(StageName, String)> {
        let sim = |p: &str| crate::fsx::relative_to(&self.simhost.join(p), &crate::project_root()).to_string();
        let publish = match url {
            Some(url) => format!("real: to a local target served by a private nginx at {url}, and checked over HTTP"),
            None => {
                "real: to a local target; the HTTP check was skipped: nginx is not installed (.ci/deps installs it)"
                    .into()
            }
        };
        let gate = match &self.gate {
            GateMode::Qemu { kernel } => {
                format!("real: QEMU boots the image iso built (kernel {kernel}); the verdict logic is real")
            }
            GateMode::Replay { why } => format!(
                "simulated: the command backend replays a recorded console ({}), because {why}; the verdict logic is real",
                sim("gate/console.txt")
            ),
        };
        vec![
            (StageName::Port, "real: stages sysutils/colibri from the example colibri checkout".into()),
            (StageName::Makesum, "real: every distfile from cargo's cache or the checkout, verified".into()),
            (
                StageName::Audit,
                format!("real: Cargo.lock against a two-advisory stand-in database ({})", sim("advisory-db")),
            ),
            (
                StageName::Bulk,
                format!(
                    "simulated: poudriere is {}, which commits the example colibri packages (real pkg packages) as poudriere lays them out",
                    sim("poudriere/poudriere")
                ),
            ),
            (StageName::Sign, "real: native signing with a key made for the demo (never the site key)".into()),
            (StageName::Publish, publish),
            (StageName::Iso, format!("simulated `pkg -r` ({}); the profile check is real", sim("iso/pkg"))),
            (StageName::Gate, gate),
        ]
    }

    pub fn key(&self) -> Utf8PathBuf {
        self.dir.join("ssl/demo-signing.key")
    }

    pub fn pubkey(&self) -> Utf8PathBuf {
        self.dir.join("ssl/demo-signing.pub")
    }

    /// Makes the demo's own RSA signing key (mode 0600 in a 0700 directory) and its public
    /// half, once.
    pub fn make_key(&self, loaded: &Loaded, log: &Log) -> Result<()> {
        let (key, pubkey) = (self.key(), self.pubkey());
        if key.is_file() && pubkey.is_file() {
            return Ok(());
        }
        let dir = key.parent().unwrap_or(&self.dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {dir}"))?;
        let openssl = loaded.config.tools.get(Tool::openssl);
        let tmp = crate::fsx::temp_beside(&key);
        CmdLine::new(openssl).args(["genrsa", "-out", tmp.as_str(), "2048"]).run(log)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set the mode of {tmp}"))?;
        CmdLine::new(openssl).args(["rsa", "-in", tmp.as_str(), "-pubout", "-out", pubkey.as_str()]).run(log)?;
        std::fs::rename(&tmp, &key).with_context(|| format!("cannot rename {tmp} to {key}"))?;
        Ok(())
    }

    /// poudriere on the simulated host as `setup` leaves it: poudriere.conf, the jail,
    /// the ports tree and the overlay, made with poudriere's own commands.
    pub fn provision_poudriere(&self, loaded: &Loaded, log: &Log) -> Result<()> {
        let cfg = &loaded.config;
        let p = &cfg.poudriere;
        for dir in [&p.etc, &p.basefs, &p.data, &p.distfiles] {
            let dir = loaded.resolve(dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
        }
        let conf = loaded.resolve(&p.etc).join("poudriere.conf");
        crate::fsx::write_atomic(
            &conf,
            crate::poudriere::render_conf(loaded, crate::setup::Role::All.signs()).as_bytes(),
        )?;
        let base = crate::poudriere::command(loaded);
        let listed = |what: &str, name: &str| -> Result<bool> {
            let out = base.clone().args([what, "-l", "-q", "-n"]).read(log)?;
            Ok(out.lines().any(|l| l.trim() == name))
        };
        if !listed("jail", &p.jail)? {
            base.clone().args(["jail", "-c", "-j", &p.jail, "-v", &p.version, "-a", &p.arch]).run(log)?;
        }
        if !listed("ports", &p.tree)? {
            base.clone().args(crate::poudriere::tree_create_args(p)).run(log)?;
        }
        let overlay = loaded.resolve(&cfg.port.overlay);
        std::fs::create_dir_all(&overlay).with_context(|| format!("cannot create {overlay}"))?;
        if !listed("ports", &p.overlay)? {
            base.args(["ports", "-c", "-p", &p.overlay, "-m", "null", "-M", overlay.as_str()]).run(log)?;
        }
        Ok(())
    }
}

/// A private nginx serving a directory on 127.0.0.1: its configuration and files in its
/// own prefix, one process in the foreground, stopped when dropped.
pub struct Nginx {
    console: Console,
    pub url: String,
}

impl Nginx {
    /// Starts nginx on a free port (trying a few, in case another program takes the
    /// port between our look and nginx's bind); it answers before this returns.
    pub fn start(nginx: &Utf8Path, root: &Utf8Path, prefix: &Utf8Path, log: &Log) -> Result<Nginx> {
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("cannot find a free port on 127.0.0.1")?
                .port();
            match Nginx::start_on(nginx, root, prefix, port, log) {
                Ok(n) => return Ok(n),
                Err(e) => last = crate::ui::render_error(&e),
            }
        }
        bail!(failure!("nginx did not start: {last}").help(format!("see {}", prefix.join("error.log"))))
    }

    fn start_on(nginx: &Utf8Path, root: &Utf8Path, prefix: &Utf8Path, port: u16, log: &Log) -> Result<Nginx> {
        std::fs::create_dir_all(prefix.join("tmp")).with_context(|| format!("cannot create {prefix}"))?;
        let conf = prefix.join("nginx.conf");
        let p = prefix;
        let text = format!(
            "# The demo's private nginx (cargo xtask demo): serves {root} on 127.0.0.1:{port}.\n\
             master_process off;\ndaemon off;\nerror_log {p}/error.log;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 64; }}\nhttp {{\n  access_log {p}/access.log;\n\
               client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n\
               fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n\
               default_type application/octet-stream;\n  server {{\n    listen 127.0.0.1:{port};\n\
                 root {root};\n    autoindex on;\n  }}\n}}\n"
        );
        crate::fsx::write_atomic(&conf, text.as_bytes())?;
        let cmd = CmdLine::new(nginx.as_str()).args(["-p", prefix.as_str(), "-c", conf.as_str()]);
        let mut console = cmd.console(log, Duration::from_secs(5), false, &mut |_| Ok(()))?;
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            while console.try_recv().is_some() {}
            if console.status().is_some() {
                let err = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
                bail!("nginx exited at once: {}", crate::proc::tail_lines(err.as_bytes(), 3));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Nginx { console, url: format!("http://127.0.0.1:{port}/") });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        console.stop();
        bail!("nginx did not listen on 127.0.0.1:{port} within 10 s")
    }

    /// Stops it (and everything in its process group).
    pub fn stop(mut self) {
        self.console.stop();
    }
}
