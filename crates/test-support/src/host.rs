//! A stand-in FreeBSD host for `setup`, `bulk` and `publish` (simhost/poudriere
//! first on PATH): its state directory and root (`host/root/`, where packages install
//! their files: nginx with its configuration, edk2-bhyve with the UEFI firmware),
//! poudriere's configuration root, POUDRIERE_DATA, the signing key's directory, the TLS
//! certificate nginx serves, and the record of every stand-in call.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use camino::{Utf8Path, Utf8PathBuf};

use crate::{Project, Run, base_config, data, path_with, simhost};

/// A scratch project and a stand-in FreeBSD host: its state (`host/`: pools, release,
/// installed packages and what they install into `host/root/`, kernel modules, rc.conf,
/// the running nginx), poudriere's configuration root (`etc/`), POUDRIERE_DATA, the
/// signing key's directory, and the record of every stand-in call.
pub struct Host {
    pub p: Project,
    pub host: Utf8PathBuf,
    pub etc: Utf8PathBuf,
    pub data: Utf8PathBuf,
    pub distfiles: Utf8PathBuf,
    pub ssl: Utf8PathBuf,
    pub calls: Utf8PathBuf,
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Merges TOML tables (`extra` wins).
fn merge(into: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

impl Host {
    /// A freshly installed FreeBSD 15.0 host with a pool `zroot`, vmm loadable and the
    /// repository's TLS certificate in place (acme.sh done), and nothing of poudriere or
    /// nginx yet.
    pub fn fresh(extra: &str) -> Host {
        Host::make(Project::new(""), extra)
    }

    /// The same, with the example colibri beside the project.
    pub fn with_colibri(extra: &str) -> Host {
        Host::make(Project::with_colibri(""), extra)
    }

    fn make(mut p: Project, extra: &str) -> Host {
        let s = p.scratch.path.clone();
        let (host, calls) = (s.join("host"), s.join("calls.log"));
        fs::create_dir_all(&host).unwrap();
        fs::write(host.join("pools"), "zroot\n").unwrap();
        fs::write(host.join("freebsd-version"), "15.0-RELEASE-p2\n").unwrap();
        fs::write(host.join("kmods-available"), "vmm\n").unwrap();
        package_files(&host);
        p.env.push(("PATH".into(), path_with(&[&simhost().join("poudriere")])));
        p.env.push(("STANDIN_HOST".into(), host.to_string()));
        p.env.push(("STANDIN_LOG".into(), calls.to_string()));
        let h = Host {
            p,
            host,
            calls,
            etc: s.join("etc"),
            data: s.join("poudriere/data"),
            distfiles: s.join("distfiles"),
            ssl: s.join("ssl"),
        };
        h.configure(extra);
        h.seed_certificate();
        h
    }

    /// Writes pipeline.toml: the project's base, this host's paths, then `extra`.
    pub fn configure(&self, extra: &str) {
        let mut table: toml::Table = toml::from_str(&base_config()).unwrap();
        let mine = format!(
            "[poudriere]\netc = \"{}\"\nbasefs = \"{}\"\ndata = \"{}\"\ndistfiles = \"{}\"\n\n\
             [signing]\nkey = \"{}\"\npubkey = \"{}\"\n\n[setup]\nrequire_root = {}\n\n\
             [bulk]\ngrace_secs = 10\n\n\
             [publish]\ntarget = \"{}\"\nnginx_block = \"{}\"\nnginx_conf = \"{}\"\n\
             tls_certificate = \"{}\"\ntls_certificate_key = \"{}\"\n\n\
             [gate.bhyve]\nfirmware = \"{}\"\n",
            self.etc,
            self.data.parent().unwrap(),
            self.data,
            self.distfiles,
            self.key(),
            self.pubkey(),
            is_root(),
            self.site(),
            self.nginx_block(),
            self.nginx_conf(),
            self.certificate(),
            self.certificate_key(),
            self.root().join("usr/local/share/uefi-firmware/BHYVE_UEFI.fd"),
        );
        merge(&mut table, toml::from_str(&mine).unwrap());
        merge(&mut table, toml::from_str(extra).unwrap());
        self.p.write_raw_config(&toml::to_string(&table).unwrap());
    }

    /// The host's `/`, where packages install their files.
    pub fn root(&self) -> Utf8PathBuf {
        self.host.join("root")
    }

    /// The local publish target nginx serves.
    pub fn site(&self) -> Utf8PathBuf {
        self.p.scratch.path.join("site")
    }

    pub fn nginx_conf(&self) -> Utf8PathBuf {
        self.root().join("usr/local/etc/nginx/nginx.conf")
    }

    pub fn nginx_block(&self) -> Utf8PathBuf {
        self.root().join("usr/local/etc/nginx/pkg.clawdie.si.conf")
    }

    pub fn certificate(&self) -> Utf8PathBuf {
        self.root().join("usr/local/etc/ssl/pkg.clawdie.si/fullchain.pem")
    }

    pub fn certificate_key(&self) -> Utf8PathBuf {
        self.root().join("usr/local/etc/ssl/pkg.clawdie.si/privkey.pem")
    }

    /// Makes the TLS certificate nginx serves (self-signed, as `acme.sh --install-cert`
    /// would leave a real one), so setup installs the TLS server block.
    pub fn seed_certificate(&self) {
        fs::create_dir_all(self.certificate().parent().unwrap()).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=pkg.clawdie.si"])
            .args(["-keyout", self.certificate_key().as_str(), "-out", self.certificate().as_str()])
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// How often the service stand-in reloaded nginx.
    pub fn nginx_reloads(&self) -> usize {
        fs::read_to_string(self.host.join("nginx-reloads")).unwrap_or_default().lines().count()
    }

    pub fn key(&self) -> Utf8PathBuf {
        self.ssl.join("clawdie-pkg.key")
    }

    pub fn pubkey(&self) -> Utf8PathBuf {
        self.ssl.join("clawdie-pkg.pub")
    }

    pub fn conf(&self) -> Utf8PathBuf {
        self.etc.join("poudriere.conf")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.p.run(args)
    }

    /// Installs the tests' throwaway key pair as the signing key (so setup need not
    /// generate one), with the given mode.
    pub fn seed_key(&self, mode: u32) {
        fs::create_dir_all(&self.ssl).unwrap();
        fs::copy(data().join("pkg-repo/keys/test-repo.key"), self.key()).unwrap();
        fs::set_permissions(self.key(), fs::Permissions::from_mode(mode)).unwrap();
        fs::copy(data().join("pkg-repo/keys/test-repo.pub"), self.pubkey()).unwrap();
    }

    /// Provisions the host with setup (seeding the key first).
    pub fn provision(&self) {
        self.seed_key(0o600);
        self.run(&["setup"]).success();
    }

    /// Every stand-in call so far, one `tool args...` per line.
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.calls).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    pub fn forget_calls(&self) {
        let _ = fs::remove_file(&self.calls);
    }

    /// Runs the poudriere stand-in directly, as an operator would run poudriere.
    pub fn poudriere(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new(simhost().join("poudriere/poudriere"));
        cmd.args(["-e", self.etc.as_str()]).args(args);
        for (k, v) in &self.p.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Every file, link and directory setup may touch, with its mode and contents.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for root in [&self.host, &self.etc, &self.ssl, &self.distfiles, &self.p.root.join("ports")] {
            walk(root, &mut out);
        }
        out
    }
}

/// The files the packages setup installs put on the host (pkg-plist of www/nginx and
/// sysutils/edk2@bhyve in the ports tree), under `host/packages-available/PKG/` for the
/// pkg stand-in.
fn package_files(host: &Utf8Path) {
    let nginx = host.join("packages-available/nginx");
    let etc = nginx.join("usr/local/etc");
    fs::create_dir_all(etc.join("nginx")).unwrap();
    fs::write(etc.join("nginx/nginx.conf"), NGINX_CONF).unwrap();
    fs::write(etc.join("nginx/mime.types"), "types {\n    text/html  html htm;\n    text/plain  txt;\n}\n").unwrap();
    fs::create_dir_all(etc.join("rc.d")).unwrap();
    fs::write(etc.join("rc.d/nginx"), "#!/bin/sh\n# PROVIDE: nginx\n").unwrap();
    let firmware = host.join("packages-available/edk2-bhyve/usr/local/share/uefi-firmware");
    fs::create_dir_all(&firmware).unwrap();
    fs::write(firmware.join("BHYVE_UEFI.fd"), "edk2 BHYVE_UEFI_CODE").unwrap();
}

/// nginx.conf as the www/nginx package installs it (nginx's conf/nginx.conf with the
/// port's files/patch-conf-nginx.conf), shortened: one server on port 80 in the http
/// block and a commented-out HTTPS server; no include directory.
const NGINX_CONF: &str = "
#user  nobody;
worker_processes  1;

#error_log  /var/log/nginx/error.log;

#pid        logs/nginx.pid;


events {
    worker_connections  1024;
}


http {
    include       mime.types;
    default_type  application/octet-stream;

    sendfile        on;
    keepalive_timeout  65;

    server {
        listen       80;
        server_name  localhost;

        location / {
            root   /usr/local/www/nginx;
            index  index.html index.htm;
        }

        error_page   500 502 503 504  /50x.html;
        location = /50x.html {
            root   /usr/local/www/nginx-dist;
        }
    }

    # HTTPS server
    #
    #server {
    #    listen       443 ssl;
    #    server_name  localhost;
    #
    #    ssl_certificate      cert.pem;
    #    ssl_certificate_key  cert.key;
    #}

}
";

fn walk(dir: &Utf8Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = dir.read_dir_utf8() else { return };
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = fs::symlink_metadata(path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            out.insert(path.to_string(), format!("link -> {}", fs::read_link(path).unwrap().display()));
        } else if meta.is_dir() {
            out.insert(path.to_string(), format!("dir {mode:o}"));
            walk(path, out);
        } else {
            use sha2::Digest;
            let digest: String =
                sha2::Sha256::digest(fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
            out.insert(path.to_string(), format!("file {mode:o} sha256 {digest}"));
        }
    }
}
