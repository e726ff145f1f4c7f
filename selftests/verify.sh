#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Digests (Documentation/dm-specmirror.rst, "Verify and the checksum
# sync"): a new target holding an old copy of the source's data, 1% of its
# chunks different, is synced with `initial_sync checksum` and at most 2%
# of the device crosses; then 10 chunks corrupted directly on the target's
# backing device are all found by `verify` (oos=10) and repaired by the
# resync it starts. Every data check ends with cmp.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
ktap_print_header
ktap_set_plan 9
sm_load
MB=${DMSM_VERIFY_MB:-32}
src=$(sm_loop "$MB"); dst=$(sm_loop "$MB")
dstf=$(losetup -nO BACK-FILE "$dst")
n=$(sm_sectors "$src")
chunks=$(((n + 127) / 128))
S=$PREFIX-vsrc D=$PREFIX-vdst
sbase="source $src $(sm_meta "$src") 127.0.0.1:7804"
ttable="target $dst $(sm_meta "$dst") 127.0.0.1:7804"
notes=$(mktemp /tmp/smt-out.XXXXXX); SM_FILES+=("$notes")

# flip_chunks FILE FIRST STEP COUNT: changes one byte (all its bits, so it
# always differs) in COUNT chunks of 64 KiB of FILE, every STEP chunks from
# FIRST.
flip_chunks() {
	local f=$1 c=$2 step=$3 k off b
	for ((k = 0; k < $4; k++, c += step)); do
		off=$((c * 65536 + 4096 + k))
		b=$(dd if="$f" bs=1 skip=$off count=1 status=none | od -An -tu1 | tr -d ' ')
		printf "\\x$(printf %02x $(((b ^ 0xff) & 0xff)))" | dd of="$f" bs=1 seek=$off conv=notrunc status=none
	done
	sync "$f"
}

# The source's data, and an old copy of it on the target with 1% of the
# chunks (5 of 512) different.
dd if=/dev/urandom of="$src" bs=1M count="$MB" oflag=direct status=none
dd if="$src" of="$dst" bs=1M iflag=direct oflag=direct status=none
diffs=$(((chunks + 99) / 100))
flip_chunks "$dstf" 7 97 "$diffs"
sm_check "the target's old copy differs in $diffs chunks" bash -c "! cmp -s $src $dst"

checksum_sync() {
	local line kib
	sm_create "$D" "0 $n specmirror $ttable" &&
		sm_create "$S" "0 $n specmirror $sbase 2 initial_sync checksum" &&
		sm_state "$S" connected && sm_synced "$S" 300 &&
		sm_until_f 60 "$S" '[ -z "${SM_F[verify]+set}" ] && [ "${SM_F[dirty]}" = 0 ]' &&
		sm_until_f 30 "$D" '[ "${SM_F[image]}" = consistent ]' || { dmsetup status "$S"; dmsetup status "$D"; return 1; }
	line=$(dmsetup status "$S") && sm_parse_status "$line" && echo "# $line"
	kib=${SM_F[resync_kib]}
	echo "# checksum sync: ${SM_F[oos]} chunks differed, $kib KiB of $((MB * 1024)) KiB crossed (rule ${SM_F[rule]})" | tee -a "$notes"
	[ "${SM_F[rule]}" = initial ] && [ "${SM_F[oos]}" = "$diffs" ] && [ "$kib" -le $((MB * 1024 * 2 / 100)) ]
}
sm_check "initial_sync checksum: only the differing chunks cross (at most 2% of the device)" checksum_sync
sm_check "data devices equal after the checksum sync (cmp)" sm_equal "$src" "$dst"

# Verify: ten chunks corrupted on the target's backing device, behind the
# target's back.
flip_chunks "$dstf" 3 50 10
sm_check "10 chunks corrupted on the target's backing device" bash -c "! cmp -s $src $dst"
kib0=$(sm_fields "$S" && echo "${SM_F[resync_kib]}")
verify_all() {
	local line
	dmsetup message "$S" 0 verify &&
		sm_until_f 120 "$S" '[ -z "${SM_F[verify]+set}" ]' &&
		line=$(dmsetup status "$S") && sm_parse_status "$line" && echo "# $line" &&
		echo "# verify found ${SM_F[oos]} differing chunks" | tee -a "$notes" &&
		[ "${SM_F[oos]}" = 10 ]
}
sm_check "verify finds the 10 chunks (oos=10)" verify_all
repaired() {
	sm_synced "$S" 300 && sm_until_f 30 "$D" '[ "${SM_F[image]}" = consistent ]' || return 1
	sm_fields "$S"
	echo "# the resync after verify sent $((SM_F[resync_kib] - kib0)) KiB" | tee -a "$notes"
	[ $((SM_F[resync_kib] - kib0)) -le $((10 * 64 + 64)) ]
}
sm_check "the resync that verify started repairs them, and only them" repaired
sm_check "data devices equal after verify and resync (cmp)" sm_equal "$src" "$dst"
sm_check "a second verify finds nothing (oos=0)" bash -c "
	dmsetup message $S 0 verify && sleep 1 &&
	until ! dmsetup status $S | grep -q ' verify='; do sleep 0.2; done &&
	dmsetup status $S | grep -q ' oos=0 '"
sm_check "bad verify ranges are refused" bash -c "
	! dmsetup message $S 0 verify $n 8 2>/dev/null && ! dmsetup message $S 0 verify 0 0 2>/dev/null"
cat "$notes"
dmsetup remove "$S"; dmsetup remove "$D"
ktap_finished
