# shellcheck shell=sh
# What every shim in scripts-compat/ shares; sourced by them, never run.
#
# A shim turns its old flags into a `cargo xtask` command line and execs it:
#
#   shim_setting KEY VALUE       -o KEY=VALUE before the subcommand (VALUE a string)
#   shim_setting_path KEY PATH   the same with PATH made absolute
#   shim_setting_raw KEY VALUE   the same with VALUE a TOML value as given (a number)
#   shim_arg WORD...             words after the subcommand (its own flags)
#   shim_path PATH               PATH made absolute (relative to the start directory)
#   shim_take "$@"               the value of the flag in $1 (`--flag VALUE` or
#                                `--flag=VALUE`) in SHIM_VALUE; SHIM_SHIFT: words used
#   shim_common "$@"             the flags every shim takes (--config, -o, -h); any
#                                other word is unknown: exit 2, listing the known flags
#   shim_fail MESSAGE            any other usage error: exit 2
#   shim_exec SUBCOMMAND         print the one line naming the command, change to the
#                                repository root and exec it: its status is the shim's
#
# The flags a shim takes are the lines `#   -F, --flag ARG    what it becomes` of its
# header comment (and `#   ARG    ...` for an argument): `--help` prints that header,
# and an unknown flag lists those lines. MOTHER_BUILD_XTASK, when set, names an xtask
# binary to exec instead of `cargo xtask` (an installed one; the tests' recorder).
#
# The xtask's words are kept shell-quoted in two strings (the settings, and the
# subcommand's flags) and become "$@" again with `eval "set -- ..."`: POSIX sh has no
# arrays. Only shim_quote's output is ever evaluated.

SHIM_SELF=$(realpath "$0") || exit 2
SHIM_NAME=${SHIM_SELF##*/}
SHIM_ROOT=${SHIM_SELF%/*}
SHIM_ROOT=${SHIM_ROOT%/*}
SHIM_SETTINGS=
SHIM_ARGS=
SHIM_VALUE=
SHIM_SHIFT=1
SHIM_NL='
'

# The start directory, for relative paths: the shim changes to SHIM_ROOT before exec.
SHIM_START=$(pwd) || exit 2

# shim_quote WORD: WORD as sh reads it back (bare when that is safe, else in '...').
shim_quote() {
	case $1 in
	'' | *[!A-Za-z0-9_./:=@%+,-]*) ;;
	*)
		printf '%s' "$1"
		return
		;;
	esac
	shim_rest=$1
	shim_out=
	while :; do
		case $shim_rest in
		*\'*)
			shim_out="$shim_out${shim_rest%%\'*}'\\''"
			shim_rest=${shim_rest#*\'}
			;;
		*) break ;;
		esac
	done
	printf "'%s'" "$shim_out$shim_rest"
}

# shim_fail MESSAGE: a usage error (exit 2).
shim_fail() {
	printf '%s: error: %s\n' "$SHIM_NAME" "$1" >&2
	printf "%s: help: \`%s --help\` shows its flags and what each becomes\n" "$SHIM_NAME" "$SHIM_NAME" >&2
	exit 2
}

# shim_unknown MESSAGE: a word the shim does not know (exit 2), with the flags and
# arguments it does know: its header's lines `#   -F, --flag ARG  ...`, `#   ARG  ...`.
shim_unknown() {
	printf '%s: error: %s\n' "$SHIM_NAME" "$1" >&2
	printf '%s: known flags:\n' "$SHIM_NAME" >&2
	awk 'NR > 1 && !/^#/ { exit } /^#   [-A-Z]/ { f = substr($0, 5); sub(/  .*/, "", f); print "  " f }' "$SHIM_SELF" >&2
	printf "%s: help: \`%s --help\` says what each becomes\n" "$SHIM_NAME" "$SHIM_NAME" >&2
	exit 2
}

# shim_help: the shim's header comment (its usage and what it became), on stdout.
shim_help() {
	awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$SHIM_SELF"
	exit 0
}

# shim_path PATH: PATH, absolute (relative ones are relative to the start directory).
shim_path() {
	case $1 in
	/*) printf '%s' "$1" ;;
	.) printf '%s' "$SHIM_START" ;;
	*)
		shim_rel=$1
		while :; do
			case $shim_rel in
			./*) shim_rel=${shim_rel#./} ;;
			*) break ;;
			esac
		done
		printf '%s/%s' "${SHIM_START%/}" "$shim_rel"
		;;
	esac
}

# shim_toml_string VALUE: VALUE as a TOML string for -o. Bare when the xtask reads it
# back as that very string: a word no TOML value looks like (a number, a date, true,
# inf, a quoted string, an array). Else "quoted": a jail named 2026 stays a string.
shim_toml_string() {
	case $1 in
	*[!A-Za-z0-9_./:@+-]* | true* | false* | inf* | nan*) ;;
	[A-Za-z/_]*)
		printf '%s' "$1"
		return
		;;
	[0-9]*)
		case $1 in
		*[!0-9a-fA-FoObBxXtTzZ_.:+-]*)
			# A letter no number or date has (15.0-RELEASE, 4G, 2026Q4).
			printf '%s' "$1"
			return
			;;
		esac
		;;
	esac
	printf '"%s"' "$(printf '%s\n' "$1" | sed 's/[\\"]/\\&/g')"
}

shim_setting_raw() {
	SHIM_SETTINGS="$SHIM_SETTINGS -o $(shim_quote "$1=$2")"
}

shim_setting() {
	case $2 in
	*"$SHIM_NL"*) shim_fail "the value of $1 may not contain a newline" ;;
	esac
	shim_setting_raw "$1" "$(shim_toml_string "$2")"
}

shim_setting_path() {
	shim_setting "$1" "$(shim_path "$2")"
}

shim_arg() {
	for shim_word; do
		SHIM_ARGS="$SHIM_ARGS $(shim_quote "$shim_word")"
	done
}

shim_take() {
	case $1 in
	--*=*)
		SHIM_VALUE=${1#*=}
		SHIM_SHIFT=1
		[ -n "$SHIM_VALUE" ] || shim_fail "${1%%=*} needs a value"
		;;
	*)
		if [ $# -lt 2 ] || [ -z "$2" ]; then
			shim_fail "$1 needs a value"
		fi
		case $2 in
		-*) shim_fail "$1 needs a value (got the flag \`$2\`)" ;;
		esac
		SHIM_VALUE=$2
		# shellcheck disable=SC2034 # the shim shifts by it
		SHIM_SHIFT=2
		;;
	esac
}

shim_common() {
	case $1 in
	--config | --config=*)
		shim_take "$@"
		SHIM_SETTINGS="$SHIM_SETTINGS --config $(shim_quote "$(shim_path "$SHIM_VALUE")")"
		;;
	-o | --option | --option=*)
		shim_take "$@"
		case $SHIM_VALUE in
		*=*) shim_setting_raw "${SHIM_VALUE%%=*}" "${SHIM_VALUE#*=}" ;;
		*) shim_fail "-o takes KEY=VALUE, e.g. -o gate.timeout_secs=600 (got \`$SHIM_VALUE\`)" ;;
		esac
		;;
	-h | --help) shim_help ;;
	-*) shim_unknown "unknown flag \`$1\`" ;;
	*) shim_unknown "unexpected argument \`$1\`" ;;
	esac
}

shim_exec() {
	eval "set -- $SHIM_SETTINGS $(shim_quote "$1") $SHIM_ARGS"
	shim_xtask=
	if [ -n "${MOTHER_BUILD_XTASK:-}" ]; then
		case $MOTHER_BUILD_XTASK in
		*/*) shim_xtask=$(shim_path "$MOTHER_BUILD_XTASK") ;;
		*) shim_xtask=$(command -v "$MOTHER_BUILD_XTASK") || shim_xtask= ;;
		esac
		if [ -z "$shim_xtask" ] || [ -d "$shim_xtask" ] || [ ! -x "$shim_xtask" ]; then
			printf '%s: error: MOTHER_BUILD_XTASK=%s is not an executable file\n' "$SHIM_NAME" "$MOTHER_BUILD_XTASK" >&2
			exit 2
		fi
	elif ! command -v cargo >/dev/null 2>&1; then
		printf '%s: error: cargo is not on PATH\n' "$SHIM_NAME" >&2
		printf '%s: help: install Rust (rustup), or set MOTHER_BUILD_XTASK to an installed xtask\n' "$SHIM_NAME" >&2
		exit 2
	fi
	shim_line=
	for shim_word; do
		shim_line="$shim_line $(shim_quote "$shim_word")"
	done
	printf "%s: now \`cargo xtask%s\`\n" "$SHIM_NAME" "$shim_line" >&2
	if [ -n "${MOTHER_BUILD_CONFIG:-}" ]; then
		MOTHER_BUILD_CONFIG=$(shim_path "$MOTHER_BUILD_CONFIG")
		export MOTHER_BUILD_CONFIG
	fi
	cd "$SHIM_ROOT" || exit 2
	if [ -n "$shim_xtask" ]; then
		exec "$shim_xtask" "$@"
	fi
	exec cargo xtask "$@"
}
