#!/bin/sh
# poudriere-setup.sh: provision this host for poudriere once (plan 2.1-2.3).
# Now `cargo xtask setup`: checks root, the FreeBSD release and the pool, installs
# poudriere, writes poudriere.conf (with PKG_REPO_SIGNING_KEY) and the validation
# make.conf, creates the signing key (mode 0600) and its public key, and creates the
# jail, the ports tree and the overlay tree when they are missing. Idempotent; an
# existing poudriere.conf that differs is shown as a diff and kept (--write replaces it).
#
# usage: poudriere-setup.sh [FLAGS]
#   e.g. poudriere-setup.sh --jail clawdie-amd64 --version 15.0-RELEASE --arch amd64
#   runs cargo xtask -o poudriere.jail=clawdie-amd64 -o poudriere.version=15.0-RELEASE
#                    -o poudriere.arch=amd64 setup
#
#   --jail JAIL         -o poudriere.jail=JAIL
#   --version RELEASE   -o poudriere.version=RELEASE (the jail's release, poudriere's -v)
#   --arch ARCH         -o poudriere.arch=ARCH
#   --ports TREE        -o poudriere.tree=TREE (the ports tree, poudriere's -p)
#   --branch BRANCH     -o poudriere.tree_branch=BRANCH (the ports tree's branch, -B)
#   --zpool POOL        -o poudriere.zpool=POOL
#   --key PATH          -o signing.key=PATH (made absolute)
#   --pubkey PATH       -o signing.pubkey=PATH (made absolute)
#   --check             setup --check (change nothing; one line per item)
#   --write             setup --write (replace a poudriere.conf that differs)
#   -n, --dry-run       setup --dry-run (print the commands and file operations)
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
	--jail | --jail=*)
		shim_take "$@"
		shim_setting poudriere.jail "$SHIM_VALUE"
		;;
	--version | --version=*)
		shim_take "$@"
		shim_setting poudriere.version "$SHIM_VALUE"
		;;
	--arch | --arch=*)
		shim_take "$@"
		shim_setting poudriere.arch "$SHIM_VALUE"
		;;
	--ports | --ports=*)
		shim_take "$@"
		shim_setting poudriere.tree "$SHIM_VALUE"
		;;
	--branch | --branch=*)
		shim_take "$@"
		shim_setting poudriere.tree_branch "$SHIM_VALUE"
		;;
	--zpool | --zpool=*)
		shim_take "$@"
		shim_setting poudriere.zpool "$SHIM_VALUE"
		;;
	--key | --key=*)
		shim_take "$@"
		shim_setting_path signing.key "$SHIM_VALUE"
		;;
	--pubkey | --pubkey=*)
		shim_take "$@"
		shim_setting_path signing.pubkey "$SHIM_VALUE"
		;;
	--check) shim_arg --check ;;
	--write) shim_arg --write ;;
	-n | --dry-run) shim_arg --dry-run ;;
	*) shim_common "$@" ;;
	esac
	shift "$SHIM_SHIFT"
done
shim_exec setup
