//! A tiny Linux guest for the gate's QEMU tests: an initramfs (cpio newc, gzip) with
//! static busybox and an `/init` that prints the console of a scenario picked on the
//! kernel command line (`gate=NAME`), and the kernel `.ci/deps` puts in place; for
//! each [`Arch`] (amd64 under qemu-system-x86_64, aarch64 under qemu-system-aarch64).
//!
//! The `login-*` scenarios log in like a FreeBSD image: a real getty and login
//! (busybox's) on the serial port, root with the password [`ROOT_PASSWORD`], a shell
//! whose profile throws away typed-ahead input and asks the terminal for its size (as
//! root's .profile on FreeBSD runs resizewin), the prompt `root@clawdie:~ # `, a
//! colibri-daemon that stays up or crashes without a word, and a `service` that answers
//! `status` as rc.subr does.

use std::io::Write;
use std::sync::OnceLock;

use camino::{Utf8Path, Utf8PathBuf};

/// Root's password on the guest.
pub const ROOT_PASSWORD: &str = "gate-secret";
/// Its hash in /etc/shadow: `busybox mkpasswd -m sha512 gate-secret Mb5alt5alt`.
const ROOT_HASH: &str =
    "$6$Mb5alt5alt$yjZ1BqRoOCdajLxy7u9IIPZN5rOkQcdAyZnnfUybuxY4bCAV5rwU/INtB9xSmK0C/8acSeoYxuKpsbsQOl/dy/";

/// The scenarios `/init` knows; each prints what a FreeBSD image of ours would.
pub const INIT: &str = r#"#!/bin/busybox sh
# The boot gate's test guest: prints the console of the scenario named by gate=NAME.
export PATH=/bin:/usr/sbin:/usr/local/bin
busybox mount -t proc proc /proc
scenario=$(busybox sed -n 's/.*gate=\([a-z-]*\).*/\1/p' /proc/cmdline)
forever() { while :; do busybox sleep 3600; done; }
mounted() { echo "Trying to mount root from cd9660:/dev/iso9660/CLAWDIE [ro]..."; }
starting() { echo "Starting colibri_daemon."; }
started() { echo "colibri_daemon: started (pid 812)"; }
prompt() { printf '\nFreeBSD/amd64 (clawdie) (ttyu0)\n\nlogin: '; }
# The serial port as a device, every applet by name, and a host name.
login_setup() {
    busybox mount -t devtmpfs dev /dev
    busybox --install -s /bin
    hostname clawdie
}
# getty on the serial port, started again whenever the session ends (as init does).
# The serial port is the kernel's console (ttyS0 on a PC, ttyAMA0 on aarch64's virt).
tty=$(busybox sed -n 's/.*console=\([a-zA-Z0-9]*\).*/\1/p' /proc/cmdline)
gettys() { while :; do setsid getty -L 115200 "${tty:-ttyS0}" vt100; done; }
# colibri-daemon as daemon(8) -p starts it: in the background, its pid in the pidfile.
daemon_up() { colibri-daemon & started; }
beats() { i=0; while [ "$i" -lt "$1" ]; do i=$((i + 1)); echo "colibri_daemon: heartbeat $i"; sleep 0.5; done; }
case $scenario in
    ok) mounted; starting; started; prompt; forever ;;
    panic) mounted; starting; echo c > /proc/sysrq-trigger; forever ;;
    trap)
        mounted
        echo "Fatal trap 12: page fault while in kernel mode"
        echo "cpuid = 0; apic id = 00"
        forever ;;
    restart-loop)
        # daemon(8) -r restarting a crashing colibri-daemon whose start line reaches
        # the console through syslogd.
        mounted; starting
        for i in 1 2 3 4 5; do
            echo "Jan  1 00:00:0$i clawdie colibri_daemon[81$i]: started"
            busybox sleep 0.2
        done
        forever ;;
    denied)
        mounted; starting
        echo "/usr/local/etc/rc.d/colibri_daemon: colibri_daemon: /var/db/colibri/state.db: Permission denied"
        forever ;;
    crash-line)
        # The validation flavour routes kern.info to the console: the crash is seen.
        mounted; starting; started
        echo "Jan  1 00:00:05 clawdie kernel: pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 11 (no core dump - other error)"
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
    login-ok) login_setup; mounted; starting; daemon_up; gettys ;;
    login-crash)
        # colibri-daemon prints its start line and dies of SIGSEGV; nothing tells the
        # console (daemon(8) says nothing, syslogd keeps kern.info off the console).
        login_setup; mounted; starting; colibri-daemon crash; gettys ;;
    login-none) login_setup; mounted; starting; daemon_up; forever ;;
    heartbeat) mounted; starting; started; prompt; beats 1000000; forever ;;
    heartbeat-stops) mounted; starting; started; prompt; beats 3; forever ;;
    *) echo "unknown scenario '$scenario'"; busybox poweroff -f ;;
esac
"#;

/// colibri-daemon on the guest: its pid where daemon(8) -p writes it, then it serves
/// (sleeps); `crash`: it prints its start line and dies of SIGSEGV.
const DAEMON: &str = r#"#!/bin/sh
# Stand-in colibri-daemon for the gate's test guest.
echo $$ > /var/run/colibri_daemon.pid
if [ "$1" = crash ]; then
    echo "colibri_daemon: started"
    kill -SEGV $$
fi
while :; do sleep 3600; done
"#;

/// service(8) running an rc.d script's `status`, as libexec/rc/rc.subr answers it:
/// `run_rc_command` status prints `${name} is running as pid ${rc_pid}.` (exit 0) or
/// `${name} is not running.` (exit 1); `check_pidfile` takes the pid from
/// /var/run/NAME.pid and accepts it only if that process is `procname`
/// (`_find_processes`); the port's procname for colibri_daemon is colibri-daemon.
const SERVICE: &str = r#"#!/bin/sh
# Stand-in for service(8) NAME status on the gate's test guest (rc.subr run_rc_command).
name=$1
if [ "$2" != status ]; then echo "usage: service NAME status" >&2; exit 64; fi
procname=$(echo "$name" | tr _ -)
rc_pid=
if read pid junk < "/var/run/$name.pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$procname" ]; then
    rc_pid=$pid
fi
if [ -n "$rc_pid" ]; then
    echo "$name is running as pid $rc_pid."
    exit 0
fi
echo "$name is not running."
exit 1
"#;

/// root's profile: bin/sh/dot.profile runs `resizewin -z`, which throws away what was
/// typed before it ran (tcflush), asks the terminal for its size (ESC [ 6 n) and waits up
/// to 2 s for the answer (usr.bin/resizewin/resizewin.c); dot.shrc sets the prompt.
const PROFILE: &str = r#"# root's profile on the gate's test guest, imitating FreeBSD's.
export PATH=/bin:/usr/sbin:/usr/local/bin
while read -t 0.2 -s junk; do :; done
printf '\033%s\033[r\033[999;999H\033[6n\033%s' 7 8
read -t 2 -s -d R size || echo "resizewin: timeout reading from terminal"
PS1='root@clawdie:~ # '
"#;

/// The guest's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64, booted by qemu-system-x86_64.
    Amd64,
    /// 64-bit ARM, booted by qemu-system-aarch64 on the virt board.
    Aarch64,
}

impl Arch {
    /// The kernel's serial console.
    pub fn console(self) -> &'static str {
        match self {
            Arch::Amd64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

/// The amd64 kernel: [`kernel_for`] amd64.
pub fn kernel() -> Utf8PathBuf {
    kernel_for(Arch::Amd64)
}

/// The kernel for `arch`: MOTHER_BUILD_TEST_KERNEL (amd64) or
/// MOTHER_BUILD_TEST_KERNEL_AARCH64, else what `.ci/deps` extracted (Debian's cloud
/// kernel): target/test-assets/vmlinuz, target/test-assets/aarch64/vmlinuz.
pub fn kernel_for(arch: Arch) -> Utf8PathBuf {
    let (var, default) = match arch {
        Arch::Amd64 => ("MOTHER_BUILD_TEST_KERNEL", "target/test-assets/vmlinuz"),
        Arch::Aarch64 => ("MOTHER_BUILD_TEST_KERNEL_AARCH64", "target/test-assets/aarch64/vmlinuz"),
    };
    let path = match std::env::var(var) {
        Ok(p) if !p.is_empty() => Utf8PathBuf::from(p),
        _ => crate::repo_root().join(default),
    };
    assert!(
        path.is_file(),
        "the QEMU gate tests need a Linux kernel for {arch:?} at {path}: run `.ci/deps` (it extracts Debian's cloud kernel there), or point {var} at one"
    );
    path
}

/// Static busybox for `arch`: the host's /bin/busybox (package busybox-static) on
/// amd64; target/test-assets/aarch64/busybox (busybox-static:arm64, from `.ci/deps`).
fn busybox(arch: Arch) -> Vec<u8> {
    let path = match arch {
        Arch::Amd64 => Utf8PathBuf::from("/bin/busybox"),
        Arch::Aarch64 => crate::repo_root().join("target/test-assets/aarch64/busybox"),
    };
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("the QEMU gate tests need static busybox for {arch:?} at {path} ({e}): run `.ci/deps` (package busybox-static)")
    })
}

/// Writes the amd64 initramfs to `path` (built once per test process).
pub fn write(path: &Utf8Path) {
    write_for(path, Arch::Amd64);
}

/// Writes the initramfs for `arch` to `path` (built once per test process and arch).
pub fn write_for(path: &Utf8Path, arch: Arch) {
    static AMD64: OnceLock<Vec<u8>> = OnceLock::new();
    static AARCH64: OnceLock<Vec<u8>> = OnceLock::new();
    let image = match arch {
        Arch::Amd64 => &AMD64,
        Arch::Aarch64 => &AARCH64,
    };
    std::fs::write(path, image.get_or_init(|| build(arch))).unwrap();
}

fn build(arch: Arch) -> Vec<u8> {
    let busybox = busybox(arch);
    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "root",
        "usr",
        "usr/sbin",
        "usr/local",
        "usr/local/bin",
        "var",
        "var/run",
    ] {
        cpio.entry(dir, 0o040755, 0, &[]);
    }
    // The console, in case the kernel's built-in initramfs lacks it.
    cpio.entry("dev/console", 0o020600, (5 << 8) | 1, &[]);
    cpio.entry("bin/busybox", 0o100755, 0, &busybox);
    cpio.entry("bin/sh", 0o120777, 0, b"busybox");
    cpio.entry("init", 0o100755, 0, INIT.as_bytes());
    cpio.entry("etc/passwd", 0o100644, 0, b"root:x:0:0:Charlie &:/root:/bin/sh\n");
    cpio.entry("etc/shadow", 0o100600, 0, format!("root:{ROOT_HASH}:19000:0:99999:7:::\n").as_bytes());
    cpio.entry("etc/group", 0o100644, 0, b"wheel:x:0:root\n");
    // getty's banner, as FreeBSD's gettytab `im` prints it.
    cpio.entry("etc/issue", 0o100644, 0, b"\nFreeBSD/amd64 (clawdie) (ttyu0)\n\n");
    cpio.entry("root/.profile", 0o100644, 0, PROFILE.as_bytes());
    cpio.entry("usr/sbin/service", 0o100755, 0, SERVICE.as_bytes());
    cpio.entry("usr/local/bin/colibri-daemon", 0o100755, 0, DAEMON.as_bytes());
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
