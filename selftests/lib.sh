# SPDX-License-Identifier: GPL-2.0
# Shared helpers of the dm-specmirror selftests. Sourced by each test.

DIR=$(dirname "$(readlink -f "$0")")
. "$DIR/../kselftest/ktap_helpers.sh"

export DM_DISABLE_UDEV=1
MODULE=${DMSM_MODULE:-}
PREFIX=smt
SM_LOOPS=()
SM_FILES=()

sm_require() {
	if [ "$(id -u)" -ne 0 ]; then
		ktap_skip_all "must run as root"; exit "$KSFT_SKIP"
	fi
	if [ -z "$MODULE" ] || [ ! -f "$MODULE" ]; then
		ktap_skip_all "set DMSM_MODULE to the path of dm-specmirror.ko"; exit "$KSFT_SKIP"
	fi
	for t in dmsetup losetup fio cmp blockdev; do
		command -v "$t" >/dev/null || { ktap_skip_all "$t not found"; exit "$KSFT_SKIP"; }
	done
}

sm_loaded() { grep -q '^dm_specmirror ' /proc/modules; }

sm_load() {
	sm_loaded || insmod "$MODULE"
}

sm_unload() {
	! sm_loaded || rmmod dm_specmirror
}

# sm_loop SIZE_MB: a loop device over a fresh file in /tmp; prints its path.
sm_loop() {
	local f dev
	f=$(mktemp /tmp/smt-img.XXXXXX)
	truncate -s "${1}M" "$f"
	dev=$(losetup -f --show "$f") || return 1
	SM_LOOPS+=("$dev"); SM_FILES+=("$f")
	echo "$dev"
}

sm_sectors() { blockdev --getsz "$1"; }

# sm_create NAME TABLE: dmsetup create, reporting its error.
sm_create() {
	dmsetup create "$1" --table "$2"
}

sm_cleanup() {
	local d
	for d in $(dmsetup ls 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1 {print $1}'); do
		dmsetup remove --retry "$d" >/dev/null 2>&1
	done
	for d in "${SM_LOOPS[@]}"; do losetup -d "$d" 2>/dev/null; done
	rm -f "${SM_FILES[@]}"
}

# sm_check DESCRIPTION CMD...: one KTAP result; the command's output is
# shown as diagnostics when it fails.
sm_check() {
	local desc=$1 out; shift
	if out=$("$@" 2>&1); then
		ktap_test_pass "$desc"
	else
		printf '%s\n' "$out" | sed 's/^/# /'
		ktap_test_fail "$desc"
	fi
}
