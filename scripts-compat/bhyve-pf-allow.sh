#!/bin/sh
# bhyve-pf-allow.sh: open the bhyve guest's network with pf.
# Now `cargo xtask gate --backend bhyve --pf-allow`: the network is opened for the boot
# gate's run only (a tap on gate.bhyve.bridge, the gate.bhyve.pf_rules loaded into the
# anchor gate.bhyve.pf_anchor) and removed again afterwards on every path, so it boots
# the image as bhyve-test.sh does. The main pf ruleset must reference the anchor, e.g.
# `anchor "mother-build/*"`.
#
# usage: bhyve-pf-allow.sh [FLAGS]
#   e.g. bhyve-pf-allow.sh --bridge bridge1
#   runs cargo xtask -o gate.bhyve.bridge=bridge1 gate --backend bhyve --pf-allow
#
#   --bridge IF         -o gate.bhyve.bridge=IF (the bridge the guest's tap joins)
#   --anchor NAME       -o gate.bhyve.pf_anchor=NAME (the pf anchor for the rules)
#   --image PATH        gate --image PATH (made absolute)
#   -n, --dry-run       gate --dry-run (print the ifconfig, pfctl and VM command lines)
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

shim_arg --backend bhyve --pf-allow
while [ $# -gt 0 ]; do
	SHIM_SHIFT=1
	case $1 in
	--bridge | --bridge=*)
		shim_take "$@"
		shim_setting gate.bhyve.bridge "$SHIM_VALUE"
		;;
	--anchor | --anchor=*)
		shim_take "$@"
		shim_setting gate.bhyve.pf_anchor "$SHIM_VALUE"
		;;
	--image | --image=*)
		shim_take "$@"
		shim_arg --image "$(shim_path "$SHIM_VALUE")"
		;;
	-n | --dry-run) shim_arg --dry-run ;;
	*) shim_common "$@" ;;
	esac
	shift "$SHIM_SHIFT"
done
shim_exec gate
