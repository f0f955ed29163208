#!/bin/sh
# bhyve-test.sh: boot the built image in bhyve with its console on com1,stdio.
# Now `cargo xtask gate --backend bhyve`: boots the image (the one `cargo xtask iso`
# recorded, or --image), judges the serial console as it arrives (required markers,
# forbidden failures, restart loops, a global timeout), always destroys the VM, and
# writes gate/result.json, gate/junit.xml and gate/console.log in the run directory.
# Exit 1: the image failed; exit 2: the VM could not start.
#
# usage: bhyve-test.sh [FLAGS]
#   e.g. bhyve-test.sh --image target/iso/clawdie.iso --memory 4G
#   runs cargo xtask -o gate.memory=4G gate --backend bhyve
#                    --image /abs/path/target/iso/clawdie.iso
#
#   --image PATH        gate --image PATH (made absolute)
#   --memory SIZE       -o gate.memory=SIZE (e.g. 2G, 512M)
#   --cpus N            -o gate.cpus=N
#   --name VM           -o gate.vm_name=VM (/dev/vmm/VM)
#   --firmware PATH     -o gate.bhyve.firmware=PATH (made absolute; UEFI firmware)
#   --console PORT      -o gate.bhyve.console=PORT (the port on stdio, com1)
#   --pf-allow          gate --pf-allow (open the guest network with pf for the boot)
#   -n, --dry-run       gate --dry-run (print the VM command lines and checks)
#   --config PATH       --config PATH (made absolute): another pipeline.toml
#   -o, --option K=V    -o K=V: any pipeline.toml setting (a TOML value)
#   -h, --help          this text
#
# Settings go before the subcommand, in the order given. Runs from any directory: it
# changes to the repository root, then execs `cargo xtask` (or $MOTHER_BUILD_XTASK, an
# installed xtask), so its exit status is the xtask's. An unknown flag exits 2.

set -u
# shellcheck source=lib/shim.sh
. "$(dirname -- "$(realpath "$0")")/lib/shim.sh"

shim_arg --backend bhyve
while [ $# -gt 0 ]; do
	SHIM_SHIFT=1
	case $1 in
	--image | --image=*)
		shim_take "$@"
		shim_arg --image "$(shim_path "$SHIM_VALUE")"
		;;
	--memory | --memory=*)
		shim_take "$@"
		shim_setting gate.memory "$SHIM_VALUE"
		;;
	--cpus | --cpus=*)
		shim_take "$@"
		shim_setting_raw gate.cpus "$SHIM_VALUE"
		;;
	--name | --name=*)
		shim_take "$@"
		shim_setting gate.vm_name "$SHIM_VALUE"
		;;
	--firmware | --firmware=*)
		shim_take "$@"
		shim_setting_path gate.bhyve.firmware "$SHIM_VALUE"
		;;
	--console | --console=*)
		shim_take "$@"
		shim_setting gate.bhyve.console "$SHIM_VALUE"
		;;
	--pf-allow) shim_arg --pf-allow ;;
	-n | --dry-run) shim_arg --dry-run ;;
	*) shim_common "$@" ;;
	esac
	shift "$SHIM_SHIFT"
done
shim_exec gate
