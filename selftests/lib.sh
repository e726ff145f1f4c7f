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
	# A mark in the kernel log: the console shows when each test began.
	echo "dmsm-test: $(basename "$0") starts" >/dev/kmsg 2>/dev/null
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

# sm_load_faults: the module with dmsm_fault_injection=1 (the developer
# messages `fault corrupt` / `fault drop`); unloaded first if it was loaded
# without it.
sm_load_faults() {
	local p=/sys/module/dm_specmirror/parameters/dmsm_fault_injection
	if sm_loaded && [ "$(cat $p 2>/dev/null)" != Y ]; then
		rmmod dm_specmirror || return 1
	fi
	sm_loaded || insmod "$MODULE" dmsm_fault_injection=1
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

# sm_meta DATA_DEV: the metadata device for a table over DATA_DEV: a 4 MiB
# loop device over a zeroed file named after it, created on first use and
# the same one on every later call (a reload finds its metadata again), so
# it also works from a command substitution's subshell. sm_cleanup and
# sm_clear_stale detach it. 4 MiB holds the metadata of a data device of
# up to about 1.9 TiB with the default 64 KiB chunks.
sm_meta() {
	local f dev
	f=/tmp/smt-img.meta-$(basename "$1")
	dev=$(losetup -j "$f" 2>/dev/null | cut -d: -f1 | head -n 1)
	if [ -z "$dev" ]; then
		[ -e "$f" ] || truncate -s 4M "$f"
		dev=$(losetup -f --show "$f") || return 1
	fi
	echo "$dev"
}

# sm_try_tables DEV SECTORS ARGS...: loads "0 SECTORS specmirror ARGS" for
# each ARGS, in turn, into the inactive table of DEV (a device without a
# table) through one process (dm_load.py; a dmsetup process per line costs
# about a second under TCG). One line out per ARGS: "<errno> <targets left
# in the inactive table>", errno 0 when accepted (cleared again at once).
sm_try_tables() {
	local dev=$1 n=$2 a
	shift 2
	for a in "$@"; do printf '0 %s specmirror %s\0' "$n" "$a"; done | python3 "$DIR/dm_load.py" "$dev"
}

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
	sm_load_stop >/dev/null 2>&1
	# Stacked devices (a source over dm-flakey) go in several passes.
	for _ in 1 2 3; do
		for d in $(dmsetup ls 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1 {print $1}'); do
			dmsetup remove --retry "$d" >/dev/null 2>&1
		done
	done
	for d in "${SM_LOOPS[@]}"; do losetup -d "$d" 2>/dev/null; done
	rm -f "${SM_FILES[@]}"
	sm_meta_cleanup
}

# sm_meta_cleanup: detaches and deletes every sm_meta device.
sm_meta_cleanup() {
	local d
	for d in $(losetup -a 2>/dev/null | awk -F: '/\/tmp\/smt-img\.meta-/ {print $1}'); do
		losetup -d "$d" 2>/dev/null
	done
	rm -f /tmp/smt-img.meta-*
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
	sm_fields "$1" && sm_f "$2"
}

# sm_quiesce SRC TIMEOUT_S: waits until the source's ring is empty, no
# host write is in flight and no chunk is dirty (everything applied on the
# target; a source that went degraded during a fault has resynced).
sm_quiesce() {
	sm_until_f "$2" "$1" '[ "${SM_F[ring]%/*}" = 0 ] && [ "${SM_F[inflight]}" = 0 ] && [ "${SM_F[dirty]:-0}" = 0 ]' && return 0
	echo "not quiet after $2 s: $(dmsetup status "$1")"
	return 1
}

# sm_synced SRC TIMEOUT_S: waits until the source has no dirty chunk left
# and its ring and in-flight writes are empty (a resync ended and the
# stream quiesced).
sm_synced() {
	sm_until_f "$2" "$1" '[ "${SM_F[dirty]}" = 0 ] && [ "${SM_F[ring]%/*}" = 0 ] && [ "${SM_F[inflight]}" = 0 ]' && return 0
	echo "not synced after $2 s: $(dmsetup status "$1")"
	return 1
}

# sm_equal A B: byte-for-byte equality of two block devices.
sm_equal() {
	cmp <(dd if="$1" bs=1M iflag=direct status=none) <(dd if="$2" bs=1M iflag=direct status=none)
}

# Under TCG with the debug kernel every process started costs about a
# second, so the polling helpers below start one per poll at most.

# sm_nap SECONDS: sleeps without starting a process (a read that times out
# on a pipe nobody writes to).
exec {SM_NAP_FD}<> <(:)
sm_nap() { read -rt "$1" -u "$SM_NAP_FD" || true; }

# sm_until TIMEOUT_S CMD...: polls CMD every 0.1 s until it succeeds; fails
# after TIMEOUT_S seconds.
sm_until() {
	local end=$((EPOCHSECONDS + $1)); shift
	until "$@"; do
		[ "$EPOCHSECONDS" -lt "$end" ] || return 1
		sm_nap 0.1
	done
}

# The one status reader: sm_parse_status LINE puts a status line into the
# associative array SM_F (SM_F[state], SM_F[ring], SM_F[reconnects]...)
# without starting a process; sm_fields DEV reads DEV's line into it.
declare -A SM_F
sm_parse_status() {
	local w a
	read -ra a <<<"$1"
	SM_F=([state]=${a[5]-})
	for w in "${a[@]:6}"; do SM_F[${w%%=*}]=${w#*=}; done
}

sm_fields() {
	local line
	line=$(dmsetup status "$1") || return 1
	sm_parse_status "$line"
}

# sm_until_f TIMEOUT_S DEV TEST: reads DEV's status (sm_fields) every 0.1 s
# until the shell test TEST, evaluated over SM_F, holds.
sm_until_f() {
	local end=$((EPOCHSECONDS + $1))
	until sm_fields "$2" && eval "$3"; do
		[ "$EPOCHSECONDS" -lt "$end" ] || return 1
		sm_nap 0.1
	done
}

# sm_state DEV WORD [TIMEOUT_S]: waits (20 s by default) for DEV's status to
# show WORD as its state.
sm_state() {
	sm_until_f "${3:-20}" "$1" "[ \"\${SM_F[state]}\" = $(printf %q "$2") ]" && return 0
	echo "state of $1 is not $2: $(dmsetup status "$1")"
	return 1
}

# sm_field LINE KEY: the value of KEY=value in a status line already read.
sm_field() {
	sm_parse_status "$1" && sm_f "$2"
}

# sm_f KEY: KEY's value in the status line read last; fails if it has none.
sm_f() {
	[ -n "${SM_F[$1]+set}" ] && echo "${SM_F[$1]}"
}

# --- a write load in the background ----------------------------------------

SM_LOAD_PID=
SM_LOAD_OUT=

# sm_load_start DEV [FIO_ARGS...]: random 4k-64k direct writes through DEV
# in the background, one fio run (started once: fio's start-up costs
# seconds under TCG) until sm_load_stop; the arguments are added to (and
# override) these defaults.
sm_load_start() {
	local dev=$1; shift
	SM_LOAD_OUT=$(mktemp /tmp/smt-load.XXXXXX)
	fio --name=load --filename="$dev" --rw=randwrite --bsrange=4k-64k \
		--direct=1 --ioengine=libaio --iodepth=8 --time_based --runtime=3600 \
		--randrepeat=0 --output-format=terse "$@" >"$SM_LOAD_OUT" 2>&1 &
	SM_LOAD_PID=$!
}

# sm_load_stop: ends the load (SIGTERM); fails, showing fio's output, if
# fio had stopped on its own or reports an error (terse field 5).
sm_load_stop() {
	local rc=0 err
	[ -n "$SM_LOAD_PID" ] || return 0
	if ! kill -0 "$SM_LOAD_PID" 2>/dev/null; then
		echo "fio stopped before the end of the load"
		rc=1
	fi
	kill -TERM "$SM_LOAD_PID" 2>/dev/null
	wait "$SM_LOAD_PID"
	case $? in 0|128) ;; *) rc=1 ;; esac
	err=$(grep -m1 '^3;' "$SM_LOAD_OUT" | cut -d';' -f5)
	echo "load: fio error=${err:-none} written=$(grep -m1 '^3;' "$SM_LOAD_OUT" | cut -d';' -f47) KiB"
	if [ "$err" != 0 ] || grep -q 'error' "$SM_LOAD_OUT"; then
		rc=1
	fi
	[ $rc -eq 0 ] || cat "$SM_LOAD_OUT"
	rm -f "$SM_LOAD_OUT"
	SM_LOAD_PID= SM_LOAD_OUT=
	return $rc
}

# sm_check_load DESCRIPTION: sm_load_stop as one KTAP result (not through
# sm_check: the load is a child of this shell, not of a subshell).
sm_check_load() {
	local out rc
	out=$(mktemp /tmp/smt-out.XXXXXX)
	sm_load_stop >"$out" 2>&1
	rc=$?
	sed 's/^/# /' "$out"
	rm -f "$out"
	if [ $rc -eq 0 ]; then ktap_test_pass "$1"; else ktap_test_fail "$1"; fi
}
