#!/bin/sh
# run-bhyve-test.sh: the boot gate: scan the booted image's serial console for the
# required markers and forbidden failures; exit non-zero on a critical miss.
# Now `cargo xtask gate` with the backend pipeline.toml names (gate.backend, bhyve by
# default): the markers in order with their deadlines, the forbidden patterns (panics,
# fatal traps, the debugger, the colibri permission-denied regression, ...), restart
# loops and a global timeout, judged as the console arrives; the VM is always torn down.
# Its report: gate/result.json, gate/junit.xml, gate/console.log in the run directory.
# Exit 1: the image failed (never retried); exit 2: the VM could not start.
#
# usage: run-bhyve-test.sh [FLAGS]
#   e.g. run-bhyve-test.sh --timeout 600
#   runs cargo xtask -o gate.timeout_secs=600 gate
#
#   --image PATH        gate --image PATH (made absolute)
#   --timeout SECS      -o gate.timeout_secs=SECS (the whole boot, start to last marker)
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

while [ $# -gt 0 ]; do
	SHIM_SHIFT=1
	case $1 in
	--image | --image=*)
		shim_take "$@"
		shim_arg --image "$(shim_path "$SHIM_VALUE")"
		;;
	--timeout | --timeout=*)
		shim_take "$@"
		shim_setting_raw gate.timeout_secs "$SHIM_VALUE"
		;;
	-n | --dry-run) shim_arg --dry-run ;;
	*) shim_common "$@" ;;
	esac
	shift "$SHIM_SHIFT"
done
shim_exec gate
