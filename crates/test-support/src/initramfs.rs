//! A tiny Linux guest for the gate's QEMU tests: an initramfs (cpio newc, gzip) with
//! static busybox and an `/init` that prints the console of a scenario picked on the
//! kernel command line (`gate=NAME`), and the kernel `.ci/deps` puts in place.

use std::io::Write;
use std::sync::OnceLock;

use camino::{Utf8Path, Utf8PathBuf};

/// The scenarios `/init` knows; each prints what a FreeBSD image of ours would.
pub const INIT: &str = r#"#!/bin/busybox sh
# The boot gate's test guest: prints the console of the scenario named by gate=NAME.
export PATH=/bin
busybox mount -t proc proc /proc
scenario=$(busybox sed -n 's/.*gate=\([a-z-]*\).*/\1/p' /proc/cmdline)
forever() { while :; do busybox sleep 3600; done; }
mounted() { echo "Trying to mount root from cd9660:/dev/iso9660/CLAWDIE [ro]..."; }
starting() { echo "Starting colibri_daemon."; }
started() { echo "colibri_daemon: started (pid 812)"; }
prompt() { printf '\nFreeBSD/amd64 (clawdie) (ttyu0)\n\nlogin: '; }
case $scenario in
    ok) mounted; starting; started; prompt; forever ;;
    panic) mounted; starting; echo c > /proc/sysrq-trigger; forever ;;
    trap)
        mounted
        echo "Fatal trap 12: page fault while in kernel mode"
        echo "cpuid = 0; apic id = 00"
        forever ;;
    restart-loop)
        mounted
        for i in 1 2 3 4 5; do
            starting
            echo "colibri_daemon: exited on signal 11 (core dumped), restart $i"
            busybox sleep 0.2
        done
        forever ;;
    denied)
        mounted; starting
        echo "/usr/local/etc/rc.d/colibri_daemon: colibri_daemon: /var/db/colibri/state.db: Permission denied"
        forever ;;
    hang) mounted; starting; forever ;;
    poweroff) mounted; starting; busybox poweroff -f ;;
    prompt)
        mounted; starting; started
        printf '\nFreeBSD/amd64 (clawdie) (ttyu0)\n\nlo'
        busybox sleep 0.3
        printf 'gin'
        busybox sleep 0.3
        printf ': '
        forever ;;
    *) echo "unknown scenario '$scenario'"; busybox poweroff -f ;;
esac
"#;

/// The kernel: MOTHER_BUILD_TEST_KERNEL, or target/test-assets/vmlinuz (from `.ci/deps`).
pub fn kernel() -> Utf8PathBuf {
    let path = match std::env::var("MOTHER_BUILD_TEST_KERNEL") {
        Ok(p) if !p.is_empty() => Utf8PathBuf::from(p),
        _ => crate::repo_root().join("target/test-assets/vmlinuz"),
    };
    assert!(
        path.is_file(),
        "the QEMU gate tests need a Linux kernel at {path}: run `.ci/deps` (it extracts Debian's cloud kernel there), or point MOTHER_BUILD_TEST_KERNEL at one"
    );
    path
}

/// Writes the initramfs to `path` (built once per test process).
pub fn write(path: &Utf8Path) {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = IMAGE.get_or_init(build);
    std::fs::write(path, bytes).unwrap();
}

fn build() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("the QEMU gate tests need static busybox at /bin/busybox: run `.ci/deps` (package busybox-static)");
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        cpio.entry(dir, 0o040755, 0, &[]);
    }
    // The console, in case the kernel's built-in initramfs lacks it.
    cpio.entry("dev/console", 0o020600, (5 << 8) | 1, &[]);
    cpio.entry("bin/busybox", 0o100755, 0, &busybox);
    cpio.entry("bin/sh", 0o120777, 0, b"busybox");
    cpio.entry("init", 0o100755, 0, INIT.as_bytes());
    let archive = cpio.finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&archive).unwrap();
    gz.finish().unwrap()
}

/// A cpio archive in the `newc` format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    /// An entry; `dev` is the device number (major << 8 | minor) of a device node.
    fn entry(&mut self, name: &str, mode: u32, dev: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            dev >> 8,
            dev & 0xff,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.out
    }
}
