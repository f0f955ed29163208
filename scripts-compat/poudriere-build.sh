#!/bin/sh
# poudriere-build.sh: build the colibri packages with poudriere bulk (plan 2.5).
# Now `cargo xtask bulk`: poudriere bulk with a fresh build name, judged from its
# status files (which port failed, in which phase, with its log). poudriere signs the
# repository with PKG_REPO_SIGNING_KEY from poudriere.conf (written by
# poudriere-setup.sh, now `cargo xtask setup`) as before; `cargo xtask sign` verifies it.
#
# usage: poudriere-build.sh [FLAGS] [ORIGIN]
#   e.g. poudriere-build.sh --jail clawdie-amd64 --ports clawdie sysutils/colibri
#   runs cargo xtask -o poudriere.jail=clawdie-amd64 -o poudriere.tree=clawdie
#                    -o port.origin=sysutils/colibri bulk
#
#   ORIGIN              -o port.origin=ORIGIN (the one port bulk builds)
#   --jail JAIL         -o poudriere.jail=JAIL
#   --ports TREE        -o poudriere.tree=TREE (the ports tree, poudriere's -p)
#   -z, --set SET       bulk --set SET (poudriere's -z, e.g. validation)
#   -n, --dry-run       bulk --dry-run (print the poudriere command lines, run none)
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

origin=
while [ $# -gt 0 ]; do
	SHIM_SHIFT=1
	case $1 in
	--jail | --jail=*)
		shim_take "$@"
		shim_setting poudriere.jail "$SHIM_VALUE"
		;;
	--ports | --ports=*)
		shim_take "$@"
		shim_setting poudriere.tree "$SHIM_VALUE"
		;;
	-z | --set | --set=*)
		shim_take "$@"
		shim_arg --set "$SHIM_VALUE"
		;;
	-n | --dry-run) shim_arg --dry-run ;;
	-*) shim_common "$@" ;;
	*)
		if [ -n "$origin" ]; then
			shim_fail "one ORIGIN only (got \`$origin\` and \`$1\`): bulk builds port.origin"
		fi
		origin=$1
		shim_setting port.origin "$origin"
		;;
	esac
	shift "$SHIM_SHIFT"
done
shim_exec bulk
