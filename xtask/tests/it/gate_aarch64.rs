//! The gate's QEMU backend for aarch64 (`gate.qemu.arch = "aarch64"`): a real arm64
//! guest (Debian's cloud kernel, the test initramfs with arm64 busybox) booted under
//! TCG on QEMU's virt board, its PL011 serial port as the console; one boot that passes
//! and one that panics. The command lines, without booting.

use test_support::initramfs::{self, Arch};
use test_support::{Project, Run};

use crate::gate::{assert_decided, assert_no_process_left, gate_table};

/// Boots the aarch64 test guest in `scenario`.
fn boot(scenario: &str) -> (Project, Run) {
    let kernel = initramfs::kernel_for(Arch::Aarch64);
    let p = Project::new("");
    let initrd = p.scratch.path.join("initramfs.cpio.gz");
    initramfs::write_for(&initrd, Arch::Aarch64);
    // TCG emulates every arm64 instruction: the kernel takes seconds to reach /init on a
    // busy host, so the first marker gets a generous (but bounded) deadline.
    let markers = "[\n  { text = \"Trying to mount root from\", within_secs = 180 },\n  { text = \"Starting colibri_daemon.\", within_secs = 20 },\n  { text = \"colibri_daemon: started\", within_secs = 20 },\n  { text = \"login: \", within_secs = 20 },\n]";
    let defaults = [
        ("backend", "\"qemu\""),
        ("memory", "\"256M\""),
        ("cpus", "1"),
        ("settle_secs", "1"),
        ("grace_secs", "2"),
        ("retries", "0"),
        ("timeout_secs", "240"),
        ("markers", markers),
        ("forbidden_extra", "[{ name = \"linux-panic\", regex = \"Kernel panic - not syncing\" }]"),
        ("probes", "[]"),
    ];
    p.write_config(&format!(
        "{}[gate.qemu]\narch = \"aarch64\"\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\nappend = \"console=ttyAMA0 panic=-1 quiet gate={scenario}\"\n",
        gate_table(&defaults, "")
    ));
    let _one_at_a_time = test_support::QEMU.lock().unwrap_or_else(|e| e.into_inner());
    let run = p.run(&["gate"]);
    (p, run)
}

#[test]
fn an_aarch64_guest_boots_under_tcg_and_passes() {
    let (p, run) = boot("ok");
    run.success();
    let r = assert_decided(&p, "pass", "marker", Some("login: "));
    let args: Vec<&str> =
        r["final_attempt"]["commands"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.windows(2).any(|w| w == ["-M", "virt"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["-cpu", "cortex-a57"]), "{args:?}");
    assert_no_process_left(&p);
}

#[test]
fn an_aarch64_kernel_panic_fails() {
    let (p, run) = boot("panic");
    run.code_is(1).stderr_has("forbidden pattern `linux-panic`");
    assert_decided(&p, "fail", "forbidden", Some("linux-panic"));
    assert_no_process_left(&p);
}

#[test]
fn the_aarch64_command_lines_use_the_virt_board_its_serial_port_and_uefi_for_an_image() {
    let p = Project::new("");
    let dry = |extra: &str| {
        p.write_config(&format!(
            "[gate]\nbackend = \"qemu\"\nmemory = \"256M\"\ncpus = 1\n[gate.qemu]\narch = \"aarch64\"\n{extra}"
        ));
        p.run(&["gate", "--dry-run", "--image", "clawdie.iso"])
    };
    dry("kernel = \"k\"\n").success().stdout_has(
        "run     qemu-system-aarch64 -M virt -cpu cortex-a57 -accel tcg -m 256M -smp 1 -nodefaults -display none -serial stdio -monitor none -no-reboot -kernel ",
    ).stdout_has("-append 'console=ttyAMA0 panic=-1 quiet'");
    dry("firmware = \"/usr/share/qemu-efi-aarch64/QEMU_EFI.fd\"\ncpu = \"max\"\n")
        .success()
        .stdout_has("qemu-system-aarch64 -M virt -cpu max -accel tcg")
        .stdout_has("-bios /usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
        .stdout_has("-device virtio-scsi-pci,id=scsi0 -drive file=")
        .stdout_has(
            "clawdie.iso,format=raw,if=none,id=cd0,media=cdrom,readonly=on -device scsi-cd,bus=scsi0.0,drive=cd0",
        );
    dry("").code_is(2).stderr_has("has no firmware of its own").stderr_has("QEMU_EFI.fd");
}

#[test]
fn an_image_the_aarch64_uefi_firmware_cannot_boot_fails_on_the_firmwares_words() {
    // Debian's qemu-efi-aarch64 (`.ci/deps` installs it): edk2 for QEMU's virt board.
    let firmware = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
    assert!(std::path::Path::new(firmware).is_file(), "{firmware} is missing: run `.ci/deps` (qemu-efi-aarch64)");
    let p = Project::new("");
    let image = p.scratch.path.join("clawdie.iso");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let defaults = [
        ("backend", "\"qemu\""),
        ("memory", "\"256M\""),
        ("cpus", "1"),
        ("settle_secs", "1"),
        ("grace_secs", "2"),
        ("retries", "0"),
        ("timeout_secs", "120"),
        ("markers", "[{ text = \"Trying to mount root from\", within_secs = 100 }]"),
        ("probes", "[]"),
    ];
    p.write_config(&format!(
        "{}[gate.qemu]\narch = \"aarch64\"\nfirmware = \"{firmware}\"\n",
        gate_table(&defaults, "")
    ));
    let _one_at_a_time = test_support::QEMU.lock().unwrap_or_else(|e| e.into_inner());
    // The disc has no boot loader: the firmware finds the CD-ROM on virtio-scsi, fails to
    // load it, and says so on the PL011 console.
    p.run(&["gate", "--image", image.as_str()])
        .code_is(1)
        .stderr_has("forbidden pattern `uefi-boot-failed`")
        .stderr_has("UEFI QEMU QEMU CD-ROM");
    assert_decided(&p, "fail", "forbidden", Some("uefi-boot-failed"));
    assert_no_process_left(&p);
}
