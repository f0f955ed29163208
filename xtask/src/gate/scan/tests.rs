//! The scanner's tests: markers, forbidden patterns, restart loops and heartbeats on
//! real and hostile consoles, split reads, cut lines, escape sequences.

use std::time::Duration;

use super::*;
use crate::config::{Config, Loaded};
use crate::port::PortNames;

/// The names the example port gives (its Makefile's USE_RC_SUBR, its pkg-plist).
fn names() -> PortNames {
    PortNames {
        services: vec!["colibri_daemon".into(), "colibri_bridge".into()],
        binaries: ["clawdie", "colibri", "colibri-daemon", "colibri-mcp", "colibri-test-agent", "colibri-tui"]
            .map(String::from)
            .to_vec(),
    }
}

fn checks(extra: &str) -> Checks {
    let config: Config = toml::from_str(&format!("[gate]\n{extra}\n")).unwrap();
    Checks::compile(&Loaded::from_parts(config, "pipeline.toml".into(), ".".into()), &names()).unwrap()
}

/// Feeds `chunks` (one read each, a millisecond apart) and returns the findings.
fn scan(checks: &Checks, chunks: &[&[u8]]) -> Vec<Found> {
    let t0 = Instant::now();
    let mut s = Scanner::new(checks);
    let mut found = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        s.push(c, t0 + Duration::from_millis(i as u64), &mut found);
        s.check(&mut found);
    }
    found
}

fn describe(checks: &Checks, found: &[Found]) -> Vec<String> {
    found
        .iter()
        .map(|f| match f {
            Found::Marker { index, .. } => format!("marker {index}"),
            Found::Forbidden { index, .. } => format!("forbidden {}", checks.forbidden[*index].name),
            Found::RestartLoop { count, .. } => format!("restart loop {count}"),
            Found::Heartbeat { .. } => "heartbeat".into(),
        })
        .collect()
}

const BOOT: &[u8] = b"\x1b[0mConsole: serial\r\nTrying to mount root from cd9660:/dev/iso9660/CLAWDIE [ro]...\r\n\
    Starting colibri_daemon.\r\ncolibri_daemon: started pid 812\r\n\r\nFreeBSD/amd64 (clawdie) (ttyu0)\r\n\r\nlogin: ";

#[test]
fn a_good_boot_finds_every_marker_at_every_split() {
    let c = checks("");
    for split in 0..BOOT.len() {
        let found = scan(&c, &[&BOOT[..split], &BOOT[split..]]);
        assert_eq!(describe(&c, &found), ["marker 0", "marker 1", "marker 2", "marker 3"], "split at {split}");
    }
    // One byte per read.
    let bytes: Vec<&[u8]> = BOOT.chunks(1).collect();
    assert_eq!(scan(&c, &bytes).len(), 4);
}

#[test]
fn the_start_line_counts_in_its_syslog_form_too() {
    let c = checks("");
    let found = scan(
        &c,
        &[b"Trying to mount root from x\nStarting colibri_daemon.\nJan  1 00:00:09 clawdie colibri_daemon[812]: started\nlogin: "],
    );
    assert_eq!(describe(&c, &found), ["marker 0", "marker 1", "marker 2", "marker 3"]);
}

#[test]
fn a_marker_is_timed_by_the_read_that_completed_it() {
    let c = checks("");
    let t0 = Instant::now();
    let mut s = Scanner::new(&c);
    let mut found = Vec::new();
    s.push(b"Trying to mount ", t0, &mut found);
    s.check(&mut found);
    s.push(b"root from x\n", t0 + Duration::from_secs(2), &mut found);
    let Found::Marker { hit, .. } = &found[0] else { panic!("{found:?}") };
    assert_eq!(hit.at, t0 + Duration::from_secs(2));
    assert_eq!(hit.line, "Trying to mount root from x");
}

#[test]
fn markers_count_only_in_order() {
    let c = checks("");
    let found = scan(&c, &[b"login: \nTrying to mount root from\n"]);
    assert_eq!(describe(&c, &found), ["marker 0"]);
}

/// Every default forbidden pattern, with console lines in the format the source
/// that prints it writes (docs/reference/boot-gate.md names file and function).
/// Each line, fed alone, must fail the boot with that pattern, at that line.
const MUST_FAIL: &[(&str, &[u8])] = &[
    // edk2 PlatformBootManagerLibBhyve/BdsPlatform.c PlatformBootManagerUnableToBoot()
    ("uefi-no-bootable", b"BdsDxe: No bootable option or device was found.\r\n"),
    // edk2 PlatformBmPrintScLib/StatusCodeHandler.c HandleStatusCode()
    (
        "uefi-shell-boot",
        b"BdsDxe: loading Boot0002 \"EFI Internal Shell\" from Fv(64074AFE-340A-4BE6-94BA-91B5B4D0F71E)/FvFile(7C04A583-9E3E-4F1C-AD65-E05268D0B4D1)\r\n",
    ),
    (
        "uefi-shell-boot",
        b"BdsDxe: starting Boot0002 \"EFI Internal Shell\" from Fv(64074AFE-340A-4BE6-94BA-91B5B4D0F71E)/FvFile(7C04A583-9E3E-4F1C-AD65-E05268D0B4D1)\r\n",
    ),
    (
        "uefi-boot-failed",
        b"BdsDxe: failed to load Boot0001 \"UEFI BHYVE SATA DVD ROM BHYVE-0000\" from PciRoot(0x0)/Pci(0x3,0x0)/Sata(0x0,0xFFFF,0x0): Not Found\r\n",
    ),
    (
        "uefi-boot-failed",
        b"BdsDxe: failed to start Boot0001 \"UEFI BHYVE SATA DVD ROM BHYVE-0000\" from PciRoot(0x0)/Pci(0x3,0x0)/Sata(0x0,0xFFFF,0x0): Unsupported\r\n",
    ),
    // UEFI shell (observed)
    ("uefi-shell-startup", b"Press ESC in 5 seconds to skip startup.nsh or any other key to continue.\r\n"),
    ("uefi-shell", b"\x1b[1m\x1b[33mShell> "),
    // stand/lua/config.lua MSG_KERNFAIL, with the loader's spinner before it
    ("loader-kernel-failed", b"|/-\\|/-\\|/Failed to load kernel 'kernel'\r\n"),
    // stand/common/boot.c loadakernel()
    ("loader-no-kernel", b"-can't load 'kernel'\r\n"),
    // stand/lua/config.lua MSG_DEFAULTKERNFAIL
    ("loader-no-kernel-set", b"No kernel set, failed to load from module_path\r\n"),
    // stand/common/interp.c interact()
    ("loader-prompt", b"\r\nType '?' for a list of commands, 'help' for more detailed help.\r\nOK "),
    // sys/kern/kern_shutdown.c vpanic()
    ("kernel-panic", b"panic: page fault\ncpuid = 1\ntime = 1712345678\n"),
    // sys/amd64/amd64/trap.c trap_fatal() -> trap_diag()
    ("fatal-trap", b"\n\nFatal trap 12: page fault while in kernel mode\ncpuid = 1; apic id = 01\n"),
    // trap.c dblfault_handler()
    ("double-fault", b"\nFatal double fault\nrip 0xffffffff80b3c123 rsp 0xfffffe0000123f00 rbp 0xfffffe0000123f50\n"),
    // sys/kern/subr_kdb.c kdb_enter()
    ("debugger-enter", b"KDB: enter: panic\n"),
    // DDB
    ("debugger-stopped", b"[ thread pid 0 tid 100000 ]\nStopped at      kdb_enter+0x33: movq    $0,0x1234(%rip)\n"),
    ("debugger-prompt", b"db> "),
    // kern_shutdown.c shutdown_panic()
    ("panic-reboot", b"Automatic reboot in 15 seconds - press a key on the console to abort\r\n"),
    ("panic-wait", b"--> Press a key on the console to reboot,\n--> or switch off the system now.\n"),
    // sys/kern/vfs_mountroot.c parse_dir_ask()
    ("root-not-found", b"\nLoader variables:\n  vfs.root.mountfrom=cd9660:/dev/iso9660/CLAWDIE\n\nManual root filesystem specification:\n"),
    ("mountroot-prompt", b"\nmountroot> "),
    // sys/kern/kern_sig.c killproc(), reasons from sys/vm/vm_pageout.c vm_pageout_oom()
    ("kernel-kill", b"pid 862 (colibri-daemon), jid 0, uid 1001, was killed: failed to reclaim memory\n"),
    ("kernel-kill", b"Apr  4 23:02:43 clawdie kernel: pid 862 (ubench), jid 0, uid 0, was killed: failed to reclaim memory\n"),
    ("kernel-kill", b"pid 862 (colibri-daemon), jid 0, uid 1001, was killed: a thread waited too long to allocate a page\n"),
    ("kernel-kill", b"pid 862 (colibri-daemon), jid 0, uid 1001, was killed: out of swap space\n"),
    ("kernel-kill", b"pid 862 (colibri), jid 0, uid 1001, was killed: exceeded maximum CPU limit\n"),
    // sys/kern/kern_ucoredump.c sigexit() (kern_sig.c before 15): every signal of the set
    ("process-crash", b"pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 11 (no core dump - other error)\n"),
    ("process-crash", b"pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 6 (core dumped)\n"),
    ("process-crash", b"pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 4 (no core dump - coredumpsize limit is 0)\n"),
    ("process-crash", b"pid 812 (colibri-mcp), jid 0, uid 1001: exited on signal 8 (no core dump - denied by kern.coredump)\n"),
    ("process-crash", b"pid 812 (colibri-test-agent), jid 0, uid 0: exited on signal 12 (no core dump - too large)\n"),
    ("process-crash", b"pid 16023 (talkd), jid 0, uid 4: exited on signal 10 (no core dump - other error)\n"),
    // FreeBSD 14 and older: no reason, or ` (core dumped)`.
    ("process-crash", b"pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 11\n"),
    ("process-crash", b"pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 11 (core dumped)\n"),
    // Through syslogd (the validation flavour routes kern.info to the console).
    (
        "process-crash",
        b"Jan  1 00:00:05 clawdie kernel: pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 10 (no core dump - coredumpsize limit is 0)\n",
    ),
    // kern_shutdown.c print_uptime(), before the last marker
    ("shutdown", b"Uptime: 3m12s\n"),
    // libexec/rc/rc.subr run_rc_command (warn), $0 is /etc/rc at boot
    ("rc-failed-start", b"/etc/rc: WARNING: failed to start colibri_daemon\r\n"),
    ("rc-failed-start", b"/usr/local/etc/rc.d/colibri_bridge: WARNING: failed to start colibri_bridge\r\n"),
    ("rc-failed-precmd", b"/etc/rc: WARNING: failed precmd routine for colibri_daemon\r\n"),
    ("rc-failed-setup", b"/etc/rc: WARNING: failed to setup colibri_bridge\r\n"),
    ("rc-cannot-run", b"/etc/rc: WARNING: run_rc_command: cannot run /usr/local/bin/colibri-daemon\r\n"),
    // rc.subr stop_boot()
    ("rc-abort", b"ERROR: ABORTING BOOT (sending SIGTERM to parent)!\r\n"),
    // usr.sbin/daemon/daemon.c open_pid_files(), before it detaches (err/errx)
    ("daemon-refused", b"daemon: process already running, pid: 812\r\n"),
    ("daemon-refused", b"daemon: pidfile ``/var/run/colibri_daemon.pid'': Permission denied\r\n"),
    // sbin/fsck_ffs/fsutil.c pfatal(), and fsck_msdosfs's
    ("fsck-inconsistency", b"/dev/gpt/rootfs: UNEXPECTED SOFT UPDATE INCONSISTENCY; RUN fsck MANUALLY.\r\n"),
    ("fsck-inconsistency", b"/dev/ada1p1: UNEXPECTED INCONSISTENCY; RUN fsck_msdosfs MANUALLY.\r\n"),
    // sbin/fsck/fsck.c checkfstab()
    ("fsck-summary", b"THE FOLLOWING FILE SYSTEM HAD AN UNEXPECTED INCONSISTENCY:\r\n\tmsdosfs: /dev/ada1p1 (/boot/efi)\r\n"),
    ("fsck-summary", b"THE FOLLOWING FILE SYSTEMS HAD AN UNEXPECTED INCONSISTENCY:\r\n"),
    // libexec/rc/rc.d/fsck fsck_start
    ("fsck-help", b"Automatic file system check failed; help!\r\n"),
    ("fsck-help", b"Unknown error 3; help!\r\n"),
    ("fsck-help", b"Reboot failed; help!\r\n"),
    // libexec/rc/rc.d/mountcritlocal
    ("mount-aborted", b"Mounting /etc/fstab filesystems failed, startup aborted\r\n"),
    // sbin/init/init.c run_script(), before syslogd (LOG_CONS) and after it
    (
        "rc-terminated",
        b"2022-06-04T08:26:05.670175+00:00 - init 1 - - /bin/sh on /etc/rc terminated abnormally, going to single user mode\r\n",
    ),
    ("rc-terminated", b"Jun  4 08:26:05 clawdie init[1]: /bin/sh on /etc/rc terminated abnormally, going to single user mode\r\n"),
    // init.c single_user(): an insecure console asks for root's password first
    ("single-user-password", b"Enter root password, or ^D to go multi-user\nPassword:"),
    ("single-user-shell", b"Enter full pathname of shell or RETURN for /bin/sh: "),
    ("single-user-shell", b"Enter full pathname of shell or RETURN for /rescue/sh: "),
    // init.c start_getty()
    ("getty-loop", b"Jan  1 00:01:00 clawdie init[1]: getty repeating too quickly on port /dev/ttyu0, sleeping 30 secs\r\n"),
    // colibri's own regression: a program or service of the port
    ("service-permission-denied", b"colibri_daemon: /var/db/colibri: Permission denied\r\n"),
    ("service-permission-denied", b"colibri-mcp: cannot open socket: Permission denied\r\n"),
];

#[test]
fn every_default_pattern_fails_on_its_real_format_at_its_line() {
    let c = checks("markers = [{ text = 'never printed', within_secs = 5 }]");
    for (name, console) in MUST_FAIL {
        let t0 = Instant::now();
        let mut s = Scanner::new(&c);
        let mut found = Vec::new();
        s.push(b"Trying to mount root from cd9660\r\n", t0, &mut found);
        let at = t0 + Duration::from_millis(700);
        s.push(console, at, &mut found);
        s.check(&mut found);
        let text = String::from_utf8_lossy(console);
        assert_eq!(describe(&c, &found), [format!("forbidden {name}")], "console: {text:?}");
        // Decided by the bytes that showed it, not by a deadline.
        let Found::Forbidden { hit, .. } = &found[0] else { unreachable!() };
        assert_eq!(hit.at, at, "{text:?}");
    }
    // Every default has a line here.
    for f in &c.forbidden {
        assert!(MUST_FAIL.iter().any(|(n, _)| *n == f.name), "no console line tests `{}`", f.name);
    }
}

/// Lines a healthy FreeBSD boot prints that look like failures, each from the
/// source that prints it; none may fail the boot.
const MUST_PASS: &[&[u8]] = &[
    // sbin/savecore: the boot after a panic, through LOG_PERROR and syslogd
    b"savecore 880 - - reboot after panic: page fault\n",
    b"Sep 13 04:00:21 freebsd savecore[880]: reboot after panic: page fault\n",
    // libexec/rc/rc.d/savecore
    b"No core dumps found.\n",
    b"/etc/rc: WARNING: Dump device does not exist.  Savecore not run.\n",
    // rc.subr warn about other things, and a service that is not the port's
    b"/etc/rc: WARNING: $foo_enable is not set properly - see rc.conf(5).\n",
    b"/etc/rc: WARNING: failed to start sendmail\n",
    b"/etc/rc: WARNING: failed to start colibri_daemon_helper\n",
    // sbin/kldload: EEXIST has no quotes around the name
    b"kldload: can't load vmm: module already loaded or in kernel\n",
    // sys/kern/subr_bus.c _gone_in()
    b"Deprecated code (to be removed in FreeBSD 16): something\n",
    b"Obsolete code will removed soon: something\n",
    b"WARNING: Device driver \"foo\" has Giant locked\n",
    // ACPICA message prefixes (acoutput.h)
    b"ACPI Warning: FADT (revision 5) is longer than ACPI 2.0 version (20250404/tbfadt-637)\n",
    b"ACPI Error: No handler for Region [ECOR] (0xfffff8000311c180) [EmbeddedControl] (20250404/evregion-131)\n",
    b"ACPI BIOS Warning (bug): Optional FADT field Pm2ControlBlock has valid Length but zero Address (20250404/tbfadt-796)\n",
    // subr_kdb.c boot banner
    b"KDB: debugger backends: ddb\n",
    b"KDB: current backend: ddb\n",
    // vfs_mountroot.c parse_mount(): retries and a candidate that fails before the next
    b"Trying to mount root from cd9660:/dev/iso9660/CLAWDIE [ro]...\n",
    b"Mounting from cd9660:/dev/iso9660/CLAWDIE failed with error 19; retrying for 3 more seconds\n",
    b"Mounting from cd9660:/dev/iso9660/CLAWDIE failed with error 19.\n",
    b"Root mount waiting for: usbus0\n",
    // rc.d/mountcritlocal's retry
    b"Mounting /etc/fstab filesystems failed, will retry after root mount hold release\n",
    // edk2: normal progress; a network option tried first that fails before the disk
    b"BdsDxe: loading Boot0001 \"UEFI BHYVE SATA DVD ROM BHYVE-1234-5678-90AB\" from PciRoot(0x0)/Pci(0x3,0x0)/Sata(0x0,0xFFFF,0x0)\n",
    b"BdsDxe: starting Boot0001 \"UEFI BHYVE SATA DVD ROM BHYVE-1234-5678-90AB\" from PciRoot(0x0)/Pci(0x3,0x0)/Sata(0x0,0xFFFF,0x0)\n",
    b">>Start PXE over IPv4.\n",
    b"BdsDxe: failed to load Boot0003 \"UEFI PXEv4 (MAC:00A098123456)\" from PciRoot(0x0)/Pci(0x2,0x0)/MAC(00A098123456,0x1)/IPv4(0.0.0.0,0x0,DHCP,0.0.0.0,0.0.0.0,0.0.0.0): Not Found\n",
    b"BdsDxe: failed to load Boot0004 \"UEFI HTTPv6 (MAC:00A098123456)\" from PciRoot(0x0)/Pci(0x2,0x0): Not Found\n",
    // usr.bin/login after a probe logged in
    b"Jan  1 00:00:09 clawdie login[901]: ROOT LOGIN (root) ON ttyu0\n",
    b"Last login: Thu Jan  1 00:00:00 on ttyu0\n",
    // sigexit() logs only signals that dump core: never 9 or 15
    b"pid 1234 (sh), jid 0, uid 0: exited on signal 15\n",
    b"pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 9\n",
    b"pid 812 (colibri-daemon), jid 0, uid 1001: exited on signal 1\n",
    // a crash the operator expects (gate.expected_crashes)
    b"pid 77 (crashme), jid 0, uid 0: exited on signal 11 (no core dump - other error)\n",
    // trap.c trap_check_intr_kernel(): not fatal
    b"kernel trap 12 with interrupts disabled\n",
    // anchored patterns only count at the start of a line
    b"the service stopped at 12:00\n",
    b"mysql db> \n",
    b"UEFI Shell> is not a prompt here\n",
    // fsck's progress and repairs
    b"** /dev/gpt/rootfs\n",
    b"FILE SYSTEM CLEAN; SKIPPING CHECKS\n",
    b"***** FILE SYSTEM WAS MODIFIED *****\n",
    // another program's permission problem
    b"sshd: /etc/ssh/ssh_host_key: Permission denied\n",
];

#[test]
fn look_alikes_pass() {
    let c = checks("markers = [{ text = 'never printed', within_secs = 5 }]\nexpected_crashes = ['crashme']");
    for line in MUST_PASS {
        let found = scan(&c, &[line]);
        assert!(found.is_empty(), "{:?}: {:?}", String::from_utf8_lossy(line), describe(&c, &found));
    }
    // All of them in one console, one byte at a time.
    let console: Vec<u8> = MUST_PASS.concat();
    let bytes: Vec<&[u8]> = console.chunks(1).collect();
    let found = scan(&c, &bytes);
    assert!(found.is_empty(), "{:?} {found:?}", describe(&c, &found));
}

#[test]
fn an_expected_crash_passes_and_the_others_still_fail() {
    let c = checks("expected_crashes = ['colibri-test-agent']");
    let agent = b"pid 90 (colibri-test-agent), jid 0, uid 0: exited on signal 6 (core dumped)\n";
    assert!(scan(&c, &[agent]).is_empty());
    let daemon = b"pid 91 (colibri-daemon), jid 0, uid 1001: exited on signal 6 (core dumped)\n";
    assert_eq!(describe(&c, &scan(&c, &[agent, daemon])), ["forbidden process-crash"]);
}

#[test]
fn end_of_line_patterns_wait_for_the_end_of_the_line() {
    let c = checks("");
    // `failed to start colibri_daemon` is the start of another service's line.
    assert!(scan(&c, &[b"/etc/rc: WARNING: failed to start colibri_daemon", b"_helper\n"]).is_empty());
    let found = scan(&c, &[b"/etc/rc: WARNING: failed to start colibri_daemon", b"\r\n"]);
    assert_eq!(describe(&c, &found), ["forbidden rc-failed-start"]);
    // The old kernel's crash line without a reason.
    let found = scan(&c, &[b"pid 1 (colibri), jid 0, uid 0: exited on signal 1", b"1\n"]);
    assert_eq!(describe(&c, &found), ["forbidden process-crash"]);
}

#[test]
fn anchored_patterns_match_only_at_the_start_of_a_line() {
    let c = checks("");
    assert!(scan(&c, &[b"savecore: reboot after panic: page fault\n"]).is_empty());
    let found = scan(&c, &[b"foo\r\npanic: page fault\n"]);
    assert_eq!(describe(&c, &found), ["forbidden kernel-panic"]);
    // A prompt without a newline, behind colour codes.
    let found = scan(&c, &[b"\x1b[1m\x1b[33mShell> "]);
    assert_eq!(describe(&c, &found), ["forbidden uefi-shell"]);
}

#[test]
fn permission_denied_counts_only_on_the_ports_lines() {
    let c = checks("");
    assert!(scan(&c, &[b"sshd: /etc/ssh/x: Permission denied\n"]).is_empty());
    let found = scan(&c, &[b"colibri_daemon: /var/db/colibri: Permission denied\n"]);
    assert_eq!(describe(&c, &found), ["forbidden service-permission-denied"]);
}

#[test]
fn uptime_is_forbidden_only_before_the_last_marker() {
    let c = checks("markers = [{ text = \"login: \", within_secs = 5 }]");
    assert_eq!(describe(&c, &scan(&c, &[b"Uptime: 3s\n"])), ["forbidden shutdown"]);
    assert_eq!(describe(&c, &scan(&c, &[b"login: \nUptime: 3s\n"])), ["marker 0"]);
    // In the same read, the order of the bytes decides.
    assert_eq!(describe(&c, &scan(&c, &[b"Uptime: 3s login: "])), ["forbidden shutdown"]);
}

#[test]
fn a_forbidden_pattern_stops_the_scan() {
    let c = checks("");
    let found = scan(&c, &[b"Fatal trap 12: page fault while in kernel mode\nTrying to mount root from\n"]);
    assert_eq!(describe(&c, &found), ["forbidden fatal-trap"]);
}

#[test]
fn restart_loops_count_within_the_window() {
    let c = checks("restart_loop = { regex = 'Starting x\\.', count = 3, within_secs = 10 }");
    let t0 = Instant::now();
    let mut s = Scanner::new(&c);
    let mut found = Vec::new();
    for secs in [0, 11, 22, 30] {
        s.push(b"Starting x.\n", t0 + Duration::from_secs(secs), &mut found);
    }
    assert!(found.is_empty(), "{found:?}");
    s.push(b"Starting x.\n", t0 + Duration::from_secs(31), &mut found);
    assert_eq!(describe(&c, &found), ["restart loop 3"]);
    // Twice on one line counts twice.
    let found = scan(&c, &[b"Starting x. Starting x.\nStarting x.\n"]);
    assert_eq!(describe(&c, &found), ["restart loop 3"]);
}

#[test]
fn the_default_restart_rule_counts_each_service_and_allows_one_restart() {
    let c = checks("markers = [{ text = 'never printed', within_secs = 5 }]");
    // A single deliberate restart, and the other service starting too.
    let calm = b"colibri_daemon: started\nJan  1 00:00:09 clawdie colibri_daemon[900]: started\n\
                 colibri_bridge: started\nJan  1 00:00:10 clawdie colibri_bridge[901]: started\n";
    assert!(scan(&c, &[calm]).is_empty());
    // The same service a third time within the minute: daemon(8) -r restarting it.
    let found = scan(&c, &[calm, b"Jan  1 00:00:11 clawdie colibri_daemon[902]: started\n"]);
    assert_eq!(describe(&c, &found), ["restart loop 3"]);
    // rc's `Starting NAME.` is printed once per boot, whatever daemon(8) does.
    let rc = b"Starting colibri_daemon.\nStarting colibri_daemon.\nStarting colibri_daemon.\n";
    assert!(scan(&c, &[rc]).is_empty());
}

#[test]
fn restart_keys_stay_bounded() {
    let c = checks(
        "markers = [{ text = 'never printed', within_secs = 5 }]\nrestart_loop = { regex = '(?P<service>svc[0-9]+) up', count = 2, within_secs = 60 }",
    );
    let mut console = Vec::new();
    for i in 0..10_000 {
        console.extend_from_slice(format!("svc{i} up\n").as_bytes());
    }
    let t0 = Instant::now();
    let mut s = Scanner::new(&c);
    let mut found = Vec::new();
    s.push(&console, t0, &mut found);
    assert!(found.is_empty());
    assert!(s.restarts.len() <= RESTART_KEYS);
}

#[test]
fn the_same_line_can_be_a_marker_and_a_restart() {
    let c = checks("");
    let found = scan(&c, &[b"Trying to mount root from\nStarting colibri_daemon.\ncolibri_daemon: started\n"]);
    assert_eq!(describe(&c, &found), ["marker 0", "marker 1", "marker 2"]);
}

#[test]
fn heartbeats_count_after_the_last_marker() {
    let c = checks(
        "markers = [{ text = 'login: ', within_secs = 5 }]\nsettle_secs = 10\nheartbeat = { regex = 'beat [0-9]+', max_gap_secs = 2 }",
    );
    let found = scan(&c, &[b"beat 1\nlogin: \nbeat 2\nbeat 3 beat 4\n"]);
    assert_eq!(describe(&c, &found), ["marker 0", "heartbeat", "heartbeat", "heartbeat"]);
}

#[test]
fn long_lines_are_cut_without_losing_matches() {
    let c = checks("markers = [{ text = \"login: \", within_secs = 5 }]");
    let mut console = vec![b'x'; MAX_LINE * 3 - 3];
    console.extend_from_slice(b"login: ");
    for piece in [1, 7, 4096, 65536] {
        let chunks: Vec<&[u8]> = console.chunks(piece).collect();
        assert_eq!(describe(&c, &scan(&c, &chunks)), ["marker 0"], "reads of {piece}");
    }
    // `^` does not match at a cut.
    let mut console = vec![b'x'; MAX_LINE];
    console.extend_from_slice(b"panic: \n");
    assert!(scan(&c, &[&console]).is_empty());
}

#[test]
fn a_flood_without_newlines_is_scanned_in_linear_time() {
    // 4 MiB in one line: a scanner that searched the whole line at every read
    // would do 2^22 * 64 steps here and not finish.
    let c = checks("");
    let block = vec![b'y'; 64 * 1024];
    let mut s = Scanner::new(&c);
    let mut found = Vec::new();
    let t0 = Instant::now();
    for _ in 0..64 {
        s.push(&block, t0, &mut found);
        s.check(&mut found);
    }
    s.push(b"\npanic: x", t0, &mut found);
    s.check(&mut found);
    assert_eq!(describe(&c, &found), ["forbidden kernel-panic"]);
}

#[test]
fn a_cursor_position_request_is_noticed() {
    let mut e = Escapes::default();
    let text: Vec<u8> = b"a\x1b7\x1b[r\x1b[999;999H\x1b[6nb".iter().filter_map(|b| e.byte(*b)).collect();
    assert_eq!(text, b"ab");
    assert!(e.take_query());
    assert!(!e.take_query());
    // Other reports are not that request.
    let mut e = Escapes::default();
    let _: Vec<u8> = b"\x1b[5n\x1b[16n\x1b[6m".iter().filter_map(|b| e.byte(*b)).collect();
    assert!(!e.take_query());
}
