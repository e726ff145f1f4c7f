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
	sm_clear_stale
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

# sm_clear_stale: removes devices, namespaces and loop files a killed
# earlier test left behind (kselftest's timeout does not run EXIT traps).
sm_clear_stale() {
	local d
	for d in $(dmsetup ls 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1 {print $1}'); do
		dmsetup remove --force --retry "$d" >/dev/null 2>&1
	done
	ip netns del smt-src 2>/dev/null
	ip netns del smt-dst 2>/dev/null
	for d in $(losetup -a 2>/dev/null | awk -F: '/\/tmp\/smt-img/ {print $1}'); do
		losetup -d "$d" 2>/dev/null
	done
	rm -f /tmp/smt-img.* /tmp/smt-pat.*
	true
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

# --- two hosts: network namespaces joined by veth --------------------------

SM_NS_SRC=smt-src
SM_NS_DST=smt-dst
SM_IP_SRC=10.78.0.1
SM_IP_DST=10.78.0.2

# sm_netns_up: the two namespaces, addresses and links.
sm_netns_up() {
	ip netns add $SM_NS_SRC && ip netns add $SM_NS_DST &&
	ip link add smt-veth-s netns $SM_NS_SRC type veth peer name smt-veth-d netns $SM_NS_DST &&
	ip -n $SM_NS_SRC addr add $SM_IP_SRC/24 dev smt-veth-s &&
	ip -n $SM_NS_DST addr add $SM_IP_DST/24 dev smt-veth-d &&
	ip -n $SM_NS_SRC link set smt-veth-s up && ip -n $SM_NS_SRC link set lo up &&
	ip -n $SM_NS_DST link set smt-veth-d up && ip -n $SM_NS_DST link set lo up
}

sm_netns_down() {
	ip netns del $SM_NS_SRC 2>/dev/null
	ip netns del $SM_NS_DST 2>/dev/null
	true
}

# sm_netem DELAY_MS: delay each direction by DELAY_MS/2 (RTT = DELAY_MS);
# 0 removes it.
sm_netem() {
	local half=$(( $1 / 2 ))
	tc -n $SM_NS_SRC qdisc del dev smt-veth-s root 2>/dev/null
	tc -n $SM_NS_DST qdisc del dev smt-veth-d root 2>/dev/null
	[ "$1" -eq 0 ] && return 0
	tc -n $SM_NS_SRC qdisc add dev smt-veth-s root netem delay ${half}ms &&
	tc -n $SM_NS_DST qdisc add dev smt-veth-d root netem delay ${half}ms
}

# sm_status_field DEV KEY: the value of KEY=value in DEV's status line.
sm_status_field() {
	dmsetup status "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# sm_quiesce SRC TIMEOUT_S: waits until the source's ring is empty and no
# host write is in flight (everything applied on the target).
sm_quiesce() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		if [ "$(sm_status_field "$1" ring | cut -d/ -f1)" = 0 ] &&
		   [ "$(sm_status_field "$1" inflight)" = 0 ]; then
			return 0
		fi
		sleep 0.1
	done
	echo "not quiet after $2 s: $(dmsetup status "$1")"
	return 1
}

# sm_equal A B: byte-for-byte equality of two block devices.
sm_equal() {
	cmp <(dd if="$1" bs=1M iflag=direct status=none) <(dd if="$2" bs=1M iflag=direct status=none)
}
