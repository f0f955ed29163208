#!/bin/sh
# stage-colibri-iso.sh: put colibri into the ISO staging root. It copied raw
# `cargo build --release` binaries; now the ISO gets the signed packages (plan Phase 4).
# Now `cargo xtask iso`: `pkg -r ROOT install colibri` from the release's repository
# (its signature checked), then the root is checked against the profile (production has
# no colibri-test-agent; validation has it), then the image is built when
# iso.build_command is set.
#
# usage: stage-colibri-iso.sh [FLAGS]
#   e.g. stage-colibri-iso.sh --root /mnt/iso --profile validation
#   runs cargo xtask -o iso.root=/mnt/iso iso --profile validation
#
#   --root DIR          -o iso.root=DIR (made absolute; the ISO staging root)
#   --profile NAME      iso --profile NAME (production or validation)
#   -n, --dry-run       iso --dry-run (print the pkg commands and checks)
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
	--root | --root=*)
		shim_take "$@"
		shim_setting_path iso.root "$SHIM_VALUE"
		;;
	--profile | --profile=*)
		shim_take "$@"
		shim_arg --profile "$SHIM_VALUE"
		;;
	-n | --dry-run) shim_arg --dry-run ;;
	*) shim_common "$@" ;;
	esac
	shift "$SHIM_SHIFT"
done
shim_exec iso
