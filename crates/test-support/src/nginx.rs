//! A real nginx for one test: its own prefix and config, on a free port of 127.0.0.1,
//! run in the foreground as a child (`daemon off`, one process) and stopped on drop.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

pub struct Nginx {
    child: Child,
    pub port: u16,
    pub prefix: Utf8PathBuf,
}

impl Nginx {
    /// Serves `root` with autoindex; `extra` is added inside the server block.
    pub fn serve(root: &Utf8Path, prefix: &Utf8Path, extra: &str) -> Nginx {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match Nginx::start(root, prefix, port, extra) {
                Ok(n) => return n,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn start(root: &Utf8Path, prefix: &Utf8Path, port: u16, extra: &str) -> Result<Nginx, String> {
        fs::create_dir_all(prefix.join("tmp")).unwrap();
        let conf = prefix.join("nginx.conf");
        let p = prefix;
        fs::write(
            &conf,
            format!(
                "master_process off;\nerror_log {p}/error.log;\npid {p}/nginx.pid;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n  default_type application/octet-stream;\n  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n    autoindex on;\n{extra}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let mut child = Command::new("nginx")
            .args(["-p", prefix.as_str(), "-c", conf.as_str(), "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nginx (is it installed?): {e}"))?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited ({status}): {log}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Nginx { child, port, prefix: prefix.to_owned() });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("nginx did not listen within 10 s".into())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `url` with curl; the body, or None on an HTTP error.
pub fn get(url: &str) -> Option<Vec<u8>> {
    let out = Command::new("curl").args(["-fsS", "--max-time", "10", url]).output().unwrap();
    out.status.success().then_some(out.stdout)
}
