#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Replication onto block drivers that do sector arithmetic per bio segment
# (null_blk, memory-backed, like brd and zram): both data devices with
# 4096-byte, then with 512-byte logical blocks; then a target with larger
# blocks than its source, which the handshake must refuse (see Limits in
# Documentation/dm-specmirror.rst). A target that handed such a
# driver segments of its commit log (payloads right after a 40-byte
# header, at any offset) corrupted data and memory (KASAN: use-after-free
# in null_blk's copy); the commit log now stores each payload at a
# block-aligned place, and the target's bios write from there. fio
# writes with --verify=crc32c through the source, then quiesce and cmp.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
NB=/sys/kernel/config/nullb
nb_del() {
	local d
	for d in smtnb0 smtnb1; do
		[ -d $NB/$d ] || continue
		echo 0 >$NB/$d/power; rmdir $NB/$d
	done
}
cleanup() { sm_cleanup; nb_del; sm_netns_down; }
trap cleanup EXIT
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
[ -d $NB ] || modprobe null_blk nr_devices=0 2>/dev/null
[ -d $NB ] || { ktap_skip_all "null_blk configfs not available"; exit "$KSFT_SKIP"; }
ktap_print_header
SIZES=${DMSM_BLK_SIZES:-4096 512}
# DMSM_BLK_MB: MiB written per pattern (random, then sequential).
MB=${DMSM_BLK_MB:-16}
set -- $SIZES
ktap_set_plan $((2 + 5 * $# + 3))
sm_check "load the module" sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
# nb NAME BLOCKSIZE: a 64 MiB memory-backed null_blk device; its path.
nb() {
	mkdir $NB/$1 && echo 64 >$NB/$1/size && echo 1 >$NB/$1/memory_backed &&
	echo "$2" >$NB/$1/blocksize && echo 1 >$NB/$1/power && echo /dev/$1
}
S=$PREFIX-src D=$PREFIX-dst
# pair SRC DST: target on DST (namespace D), source on SRC (namespace S).
pair() {
	local n
	n=$(sm_sectors "$1") &&
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $2 $(sm_meta $2) $SM_IP_DST:7880" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $1 $(sm_meta $1) $SM_IP_DST:7880"
}
connected_pair() { pair "$1" "$2" && sm_state $S connected; }
round() {
	local bs=$1 src dst out
	nb_del
	src=$(nb smtnb0 "$bs") && dst=$(nb smtnb1 "$bs") || { sm_check "null_blk devices ($bs)" false; return; }
	sm_check "target on null_blk with $bs-byte blocks: create, connected" connected_pair "$src" "$dst"
	write() {
		fio --name=rnd --filename=/dev/mapper/$S --direct=1 --ioengine=libaio --iodepth=8 \
			--rw=randwrite --bsrange=4k-64k --size=${MB}M --verify=crc32c --verify_fatal=1 \
			--verify_state_save=0 --randrepeat=0 --fsync=32 --output-format=terse >/dev/null &&
		fio --name=seq --filename=/dev/mapper/$S --direct=1 --ioengine=libaio --iodepth=4 \
			--rw=write --bs=1M --offset=32M --size=${MB}M --verify=crc32c --verify_fatal=1 \
			--verify_state_save=0 --output-format=terse >/dev/null
	}
	sm_check "$bs: fio $MB MiB random 4k-64k + $MB MiB sequential 1M, verified" write
	sm_check "$bs: quiesce (ring empty)" sm_quiesce $S 180
	sm_check "$bs: data devices equal (cmp)" sm_equal "$src" "$dst"
	echo "# $bs: target: $(dmsetup status $D)"
	sm_check "$bs: remove" bash -c "dmsetup remove $S && dmsetup remove $D"
}
for bs in $SIZES; do round $bs; done

# Source on 512-byte blocks, target on 4096: the target could not apply a
# 512-byte write, so it refuses the stream at the handshake and nothing is
# sent; the source says why in its status.
nb_del
mixed() {
	src=$(nb smtnb0 512) && dst=$(nb smtnb1 4096) && pair "$src" "$dst"
}
sm_check "source on 512-byte blocks, target on 4096: both tables load" mixed
sm_check "the source shows refused:block-size" sm_state $S refused:block-size
echo "# source: $(dmsetup status $S)"
echo "# target: $(dmsetup status $D)"
dmesg | grep 'refused a source' | tail -1 | sed 's/^/# /'
sm_check "remove" bash -c "dmsetup remove $S && dmsetup remove $D"
echo "# $(basename "$0"): $SECONDS s"
ktap_finished
