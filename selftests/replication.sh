#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Replication between two "hosts" (network namespaces joined by veth):
# fio writes random and sequential data with fsyncs through the source,
# verifying it (crc32c); after quiesce the two data devices are equal
# (invariant I1 in Documentation/dm-specmirror.rst). Variants: plain,
# netem RTT 10 ms, completion sync, mode lock-sync. DMSM_REPL_MB sets the amount written (default 256);
# DMSM_REPL_VARIANTS picks variants by name (default all: async netem
# sync lock-sync). Under User-Mode Linux (one CPU, no preemption) the
# sync and netem variants at 256 MiB are the regression tests of the
# lost-final-ACK hang: before the fix they stopped for good at a target
# with applied > acked (6090/6056 and 397/391).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null && command -v tc >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
MB=${DMSM_REPL_MB:-256}
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
VARIANTS=${DMSM_REPL_VARIANTS:-async netem sync lock-sync}
ktap_set_plan $((1 + 5 * $(wc -w <<<"$VARIANTS")))
sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop $((MB + 32))); dst=$(sm_loop $((MB + 32)))
n=$(sm_sectors "$src")

# run NAME RTT_MS SOURCE_OPTS: one variant, five results.
run() {
	local name=$1 rtt=$2 opts=$3 s=$PREFIX-src d=$PREFIX-dst half=$((MB / 2)) t0=$EPOCHSECONDS
	sm_netem "$rtt"
	sm_check "$name: create target and source" bash -c "
		ip netns exec $SM_NS_DST dmsetup create $d --table '0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7800' &&
		ip netns exec $SM_NS_SRC dmsetup create $s --table '0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7800 $opts'"
	sm_check "$name: fio ${MB} MiB random+sequential, fsync, verify=crc32c" \
		fio --filename=/dev/mapper/$s --direct=1 --ioengine=libaio --verify=crc32c \
			--verify_fatal=1 --verify_state_save=0 --randrepeat=0 --output-format=terse \
			--name=rand --rw=randwrite --bsrange=4k-64k --iodepth=16 --offset=0 --size=${half}M --fsync=256 \
			--name=seq --rw=write --bs=1M --iodepth=4 --offset=${half}M --size=${half}M --fsync=16
	sm_check "$name: quiesce (ring empty)" sm_quiesce $s 300
	sm_check "$name: data devices equal (cmp)" sm_equal "$src" "$dst"
	echo "# $name: source: $(dmsetup status $s)"
	echo "# $name: target: $(dmsetup status $d)"
	sm_check "$name: remove" bash -c "dmsetup remove $s && dmsetup remove $d"
	echo "# $name: $((EPOCHSECONDS - t0)) s"
}

for v in $VARIANTS; do
	case $v in
	async) run "async" 0 "" ;;
	netem) run "netem 10ms" 10 "" ;;
	sync) run "completion sync" 0 "2 completion sync" ;;
	lock-sync) run "lock-sync" 0 "2 mode lock-sync" ;;
	*) ktap_test_fail "unknown variant $v (DMSM_REPL_VARIANTS)" ;;
	esac
done
ktap_finished
